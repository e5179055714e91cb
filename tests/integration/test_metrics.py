"""metrics_file: the Prometheus textfile `sync` writes at its end and `run`
after its passes, parsed back: HELP/TYPE lines, pop3bridge_ names, one
sample per account, every value equal to what `status --json` says."""

import calendar
import json
import os
import re
import time

import harness as h
from common import config, servers, sync

SAMPLE = re.compile(r'^(pop3bridge_[a-z_]+)(?:\{account="((?:[^"\\]|\\.)*)"\})? (\S+)$')

# metric -> the status --json key it mirrors (timestamps as unix time)
MIRROR = {
    'pop3bridge_imported_messages_total': 'imported',
    'pop3bridge_imported_bytes_total': 'imported_bytes',
    'pop3bridge_deleted_messages_total': 'deleted',
    'pop3bridge_pending_messages': 'pending',
    'pop3bridge_on_server_messages': 'on_server',
    'pop3bridge_seen_elsewhere_messages': 'seen_elsewhere',
    'pop3bridge_duplicates_total': 'duplicates',
    'pop3bridge_uidl_resets_total': 'uidl_resets',
    'pop3bridge_last_poll_timestamp_seconds': 'last_poll',
    'pop3bridge_last_success_timestamp_seconds': 'last_ok',
    'pop3bridge_last_poll_ok': 'last_result',
    'pop3bridge_queue_messages': 'queued',
    'pop3bridge_relay_accepted_total': 'relay_accepted',
    'pop3bridge_relay_delivered_total': 'relay_delivered',
    'pop3bridge_relay_bounced_total': 'relay_bounced',
    'pop3bridge_skipped_messages': 'skipped',
    'pop3bridge_consecutive_failures': 'failures',
    'pop3bridge_next_poll_timestamp_seconds': 'next_poll',
}


def parse(text):
    """{metric: {account: value}}, {metric: type}, with every HELP/TYPE
    line checked to come before its samples."""
    samples, types, helps = {}, {}, set()
    for line in text.splitlines():
        if line.startswith('# HELP '):
            helps.add(line.split()[2])
            continue
        if line.startswith('# TYPE '):
            _, _, name, typ = line.split()
            types[name] = typ
            continue
        m = SAMPLE.match(line)
        assert m, 'not a sample line: %r' % line
        name, acct, val = m.group(1), m.group(2), float(m.group(3))
        assert name in types and name in helps, '%s before its HELP/TYPE' % name
        samples.setdefault(name, {})[acct] = val
    return samples, types


def json_value(key, v):
    if key in ('last_poll', 'last_ok', 'next_poll'):
        return 0 if v is None else calendar.timegm(time.strptime(v, '%Y-%m-%dT%H:%M:%SZ'))
    if key == 'last_result':
        return 1 if v == 'ok' else 0
    return v


def check_equal(t, conf, path):
    with open(path) as f:
        samples, types = parse(f.read())
    status = {a['name']: a for a in json.loads(t.run_bridge(conf, 'status', '--json').stdout)
              ['accounts']}
    for metric, key in MIRROR.items():
        t.check(metric in samples, '%s written' % metric)
        for name, a in status.items():
            got = samples.get(metric, {}).get(name)
            want = json_value(key, a[key])
            t.check(got == want, '%s{account="%s"} = %r, status --json %s = %r'
                    % (metric, name, got, key, a[key]))
    for metric, typ in types.items():
        t.check(typ == ('counter' if metric.endswith('_total') else 'gauge'),
                '%s is a %s' % (metric, typ))
    return samples


def test_sync_writes_metrics_equal_to_status(t):
    src, dst = servers(t, users={'alice': 'secret', 'bob': 'pw2'})
    h.seed(src, 'alice', [h.make_message(i, tag='m') for i in range(5)])
    h.seed(src, 'bob', [h.make_message(i, tag='b') for i in range(2)])
    metrics = t.path('prom', 'pop3bridge.prom')
    os.makedirs(t.path('prom'))
    smtp = ('smtp {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "x"\n    password = "y"\n    allow_plaintext = true\n  }\n'
            '  addresses = { "alice@example.com" }' % h.free_port())
    conf = config(t, [
        h.account_block('alice@work+x', src, extra='leave_on_server = false\n' + smtp),
        h.account_block('bob', src, user='bob', password='pw2', local_user='bob'),
        h.account_block('idle', src, user='nobody', password='x', folder='Idle')],
        extra='metrics_file = "%s"\n' % metrics)
    p = t.run_bridge(conf, 'sync', 'alice@work+x', 'bob')
    t.require(p.returncode == 0, 'sync: %s' % p.stderr)
    t.require(os.path.exists(metrics), 'sync wrote %s' % metrics)
    t.check(os.stat(metrics).st_mode & 0o777 == 0o644, 'the collector can read it (0644)')
    t.check(os.listdir(t.path('prom')) == ['pop3bridge.prom'], 'no temp file left: %r'
            % os.listdir(t.path('prom')))
    s = check_equal(t, conf, metrics)
    t.check(s['pop3bridge_imported_messages_total'].get('alice@work+x') == 5 and
            s['pop3bridge_deleted_messages_total'].get('alice@work+x') == 5,
            'values read back: %r' % s['pop3bridge_imported_messages_total'])
    # More figures: a queued outbound message, a failed pass, seen elsewhere.
    msg = b'From: alice@example.com\nTo: carol@example.org\nSubject: q\n\nhi\n'
    p = t.run_bridge(conf, 'sendmail', '-t', input=msg)
    t.require(p.returncode == 0, 'sendmail: %s' % p.stderr)
    ids = t.path('fetchids')
    with open(ids, 'w') as f:
        f.write('bob@localhost elsewhere-1\nbob@localhost elsewhere-2\n')
    t.require(t.run_bridge(conf, 'import-state', '--from', 'fetchmail', ids, 'bob')
              .returncode == 0, 'import-state')
    h.seed(src, 'bob', [h.make_message(9, tag='b2')])
    sync(t, conf, expect=69)    # "idle" has a wrong password
    s = check_equal(t, conf, metrics)
    t.check(s['pop3bridge_queue_messages'].get('alice@work+x') == 1 and
            s['pop3bridge_relay_accepted_total'].get('alice@work+x') == 1,
            'the queued message counted: %r' % s['pop3bridge_queue_messages'])
    t.check(s['pop3bridge_seen_elsewhere_messages'].get('bob') == 2 and
            s['pop3bridge_imported_messages_total'].get('bob') == 3, 'bob: %r'
            % {k: v.get('bob') for k, v in s.items()})
    t.check(s['pop3bridge_last_poll_ok'].get('idle') == 0 and
            s['pop3bridge_last_success_timestamp_seconds'].get('idle') == 0 and
            s['pop3bridge_consecutive_failures'].get('idle') == 1,
            'the failing account shows it: %r' % s['pop3bridge_consecutive_failures'])


def test_run_writes_metrics_after_passes(t):
    src, dst = servers(t)
    h.seed(src, 'alice', [h.make_message(i, tag='r') for i in range(3)])
    metrics = t.path('m.prom')
    conf = config(t, [h.account_block('acct', src, extra='poll_interval = 1')],
                  extra='metrics_file = "%s"\n' % metrics)
    t.start_bridge(conf, 'run')

    def imported():
        try:
            with open(metrics) as f:
                return parse(f.read())[0]['pop3bridge_imported_messages_total'].get('acct')
        except (OSError, KeyError):
            return None
    h.wait_for(lambda: imported() == 3, timeout=30, what='run writes the metrics: 3 imported')
    h.seed(src, 'alice', [h.make_message(9, tag='r2')])
    h.wait_for(lambda: imported() == 4, timeout=30, what='and again after a later pass')


if __name__ == '__main__':
    h.main()
