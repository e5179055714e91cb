"""The command-line contract: check-config, status [--json], run (daemon)
with SIGTERM and SIGHUP, exit codes."""

import json
import os
import signal
import time

import harness as h
from common import config, servers, sync

EX_USAGE, EX_CONFIG = 64, 78


def test_check_config_summary_and_errors(t):
    src, dst = servers(t)
    conf = config(t, [h.account_block('work', src), h.account_block(
        'old', src, folder='Old/Mail', extra='leave_on_server = false')])
    p = t.run_bridge(conf, 'check-config')
    t.check(p.returncode == 0, 'valid config exits 0: %s' % p.stderr)
    t.check('2 accounts' in p.stdout and 'work:' in p.stdout and 'delete after import' in p.stdout,
            'summary names the accounts and policies: %r' % p.stdout)
    bad = h.write_config(t.path('bad.conf'), 'poll_interval = 0\naccount "x" {\n  pop3 {\n'
                         '    port = 99999\n    tls = "maybe"\n  }\n}\n')
    p = t.run_bridge(bad, 'check-config')
    t.check(p.returncode == EX_CONFIG, 'bad config exits 78, got %d' % p.returncode)
    lines = p.stderr.strip().splitlines()
    t.check(len(lines) >= 3 and all(l.startswith(bad + ':') for l in lines),
            'every error as FILE:LINE: %r' % lines)
    p = t.run_bridge(t.path('missing.conf'), 'check-config')
    t.check(p.returncode == 66, 'a missing file exits 66 (EX_NOINPUT), got %d' % p.returncode)


def test_example_config_is_valid(t):
    p = t.run_bridge(os.path.join(h.REPO, 'conf', 'pop3bridge.conf.example'), 'check-config')
    t.check(p.returncode == 0, 'the example passes check-config: %s' % p.stderr)


def test_usage_errors(t):
    src, dst = servers(t)
    conf = config(t, [h.account_block('acct', src)])
    for args in (['frobnicate'], ['sync', 'no-such-account'], ['status', '--xml'], []):
        p = t.run_bridge(conf, *args)
        t.check(p.returncode == EX_USAGE, '%r exits 64, got %d' % (args, p.returncode))


def test_status_json(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(12))
    conf = config(t, [h.account_block('acct', src), h.account_block(
        'never', src, folder='Never')])
    p = t.run_bridge(conf, 'status', '--json')
    t.check(p.returncode == 0, 'status before any pass: %s' % p.stderr)
    t.check(json.loads(p.stdout)['accounts'][0]['last_poll'] is None, 'never polled yet')
    sync(t, conf, 'acct')
    s = json.loads(t.run_bridge(conf, 'status', '--json').stdout)
    a = {x['name']: x for x in s['accounts']}
    t.check(a['acct']['imported'] == 12 and a['acct']['pending'] == 0 and
            a['acct']['last_result'] == 'ok' and a['acct']['last_error'] is None,
            'acct after a pass: %r' % a['acct'])
    t.check(a['acct']['store'] == 'maildir' and a['acct']['folder'] == 'INBOX',
            'store and folder shown')
    t.check(a['never']['last_poll'] is None and a['never']['imported'] == 0, 'never: %r' % a['never'])
    src.stop()
    p = sync(t, conf, 'acct', expect=75)
    s = json.loads(t.run_bridge(conf, 'status', '--json').stdout)
    a = s['accounts'][0]
    t.check(a['last_result'] == 'error' and a['last_error'] and a['imported'] == 12,
            'a failed pass is shown with its error: %r' % a)


def test_run_polls_and_stops_on_sigterm(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(5))
    conf = config(t, [h.account_block('acct', src, extra='poll_interval = 1')])
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: os.path.exists(dst.maildir('alice')) and h.imap_count(dst) == 5,
               timeout=20, what='first poll imports 5')
    h.seed(src, 'alice', h.make_corpus(3, seed=4))
    h.wait_for(lambda: h.imap_count(dst) == 8, timeout=20, what='a later poll imports 3 more')
    # SIGHUP with a broken file keeps the running configuration.
    good = open(conf).read()
    h.write_config(conf, good + '\nbroken = \n')
    d.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    t.check(d.poll() is None, 'a bad reload does not stop the daemon')
    h.write_config(conf, good)
    d.send_signal(signal.SIGHUP)
    h.seed(src, 'alice', h.make_corpus(2, seed=5))
    h.wait_for(lambda: h.imap_count(dst) == 10, timeout=20, what='polling goes on after reload')
    rc = h.stop_process(d, signal.SIGTERM, timeout=20)
    t.check(rc == 0, 'SIGTERM: clean exit 0, got %r' % rc)
    log = open(d.log_path, errors='replace').read()
    t.check('keeping the running configuration' in log and 'reloaded' in log,
            'reloads are logged: %r' % log[-800:])


if __name__ == '__main__':
    h.main()
