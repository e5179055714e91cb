"""Scenario 6: the relay. --relay submissions of --relay-size bytes over
--connections concurrent authenticated SMTP sessions (ref_smtp.py) into
`pop3bridge run` with a relay {} block; its queue runner delivers them to
the account's upstream, once Postfix's smtp-sink (the fast sink) and once
aiosmtpd (tests/integration/smtpd.py), and files a Sent copy of each in the
Maildir store.

Figures: accepted msgs/s (submission: until the client has its last 250),
end to end msgs/s (until the upstream holds every message), and when the
last Sent copy was filed, all from the client's first connection. The
limit: the same client submitting straight to the same sink. Checked: the
upstream received every message exactly once, and each has exactly one Sent
copy (digests)."""

import collections
import json
import os
import resource
import signal
import subprocess
import threading
import time

import harness as h
from p3bench import corpus, measure, servers, tools
from p3bench.creds import PASSWORD
from p3bench.report import Section, SummaryRow, Table, last_line, rate, ratio, secs

FROM, TO, USER = 'alice@example.com', 'bob@example.net', 'alice'


def needs(a):
    return [] if os.access(servers.SmtpSink.binary(), os.X_OK) else ['smtp-sink (postfix)']


def _config(work, up_port, relay_port):
    passwd = tools.write(os.path.join(work, 'passwd'), '%s:{PLAIN}%s::::::\n' % (USER, PASSWORD),
                         0o644)
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  passwd_file = %s\n'
             '  retry_initial = 1\n}\npoll_interval = 3600\n' % (relay_port, h.cq(passwd)))
    acct = ('account "relay" {\n  local_user = "%s"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "%s"\n    password = "unused"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    host = "127.0.0.1"\n    port = %d\n    tls = "none"\n  }\n'
            '  addresses = { "%s" }\n  sent_folder = "Sent"\n}\n'
            % (USER, h.free_port(), USER, up_port, FROM))
    conf = tools.write(os.path.join(work, 'p3b.conf'), h.config_text(
        os.path.join(work, 'state'), os.path.join(work, 'mail', '%u', 'Maildir'), [acct], relay))
    measure.chown_tree(work)
    return conf


class Watch:
    """Notes, from a thread, when count() first reaches n."""

    def __init__(self, count, n):
        self.count, self.n = count, n
        self.at = None
        self.last = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while not self._stop.is_set():
            self.last = self.count()
            if self.last >= self.n:
                self.at = time.monotonic()
                return
            # Each count lists a directory of up to n files: often only
            # near the end, where the time is taken (bench/run's own CPU
            # is taken from the two cores pop3bridge is measured on).
            time.sleep(0.01 if self.last >= self.n * 0.95 else 0.1)

    def wait(self, timeout):
        self._t.join(timeout)
        self._stop.set()
        self._t.join()
        return self.at


def _children_cpu():
    """User + system seconds of this process's reaped children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def write_messages(path, messages):
    """The messages file bench/ref_smtp.py reads: each message after a line
    holding its length."""
    with open(path, 'wb') as f:
        for m in messages:
            f.write(b'%d\n' % len(m))
            f.write(m)


def _digests(contents):
    return collections.Counter(corpus.digest(c) for c in contents)


def _submit(b, label, port, msgs_file, auth):
    args = [port, msgs_file, '--connections', b.args.connections, '--from', FROM, '--to', TO]
    if auth:
        args += ['--auth', '%s:%s' % (USER, PASSWORD)]
    r = b.measure(label, b.ref('ref_smtp.py', *args), timeout=1800)
    try:
        res = json.loads(r.out)
    except ValueError:
        res = {'accepted': 0, 'refused': 0, 'errors': [last_line(r.err)], 'start': 0, 'end': 1}
    return r, res


def _one_upstream(b, s, t, Sink, msgs_file, want):
    n = b.args.relay
    work = b.workdir('relay-' + Sink.name)
    sink = Sink(work).start()
    try:
        # the limit: straight to the sink
        r, res = _submit(b, 'minimal client \u2192 %s' % Sink.name, sink.port, msgs_file, False)
        Watch(sink.count, n).wait(120)      # every dump file there
        chk = corpus.verify_digests(_digests(sink.contents()), want)
        if res['accepted'] != n or not chk.ok:
            s.fail(Sink.name, 'direct to %s: accepted %d, %s %s' % (Sink.name, res['accepted'], chk,
                                                                 res['errors']))
        direct = n / (res['end'] - res['start'])
        t.row('minimal client straight to %s (the limit)' % Sink.name, rate(direct), '-', '-',
              '-', '-', chk)
        sink.reset()
        # pop3bridge's relay in front of it
        relay_port = h.free_port()
        conf = _config(work, sink.port, relay_port)
        sent = os.path.join(work, 'mail', USER, 'Maildir', '.Sent')
        argv = measure.as_user([h.bridge_binary(), '-q', '-c', conf, 'run'], work)
        log = open(os.path.join(work, 'run.log'), 'ab')
        cpu0 = _children_cpu()
        d = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
        log.close()
        try:
            h.wait_for(lambda: h.port_open(relay_port) or d.poll() is not None, 20,
                       what='the relay port')
            if d.poll() is not None:
                raise RuntimeError('pop3bridge run exited %s: %s' % (
                    d.returncode, h.tail(os.path.join(work, 'run.log'), 5)))
            up = Watch(sink.count, n)
            filed = Watch(lambda: len(corpus.maildir_files(sent)), n)
            r, res = _submit(b, 'devices \u2192 pop3bridge relay \u2192 %s' % Sink.name,
                             relay_port, msgs_file, True)
            t_up = up.wait(300)
            t_sent = filed.wait(max(60, 300 - (time.monotonic() - res['end'])))
        finally:
            d.send_signal(signal.SIGTERM)
            try:
                d.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(d.pid, signal.SIGKILL)
                d.wait()
        # the daemon and every process of its tree (each reaps its own):
        # nothing else of this process ends in between
        cpu = _children_cpu() - cpu0
        t0 = res['start']
        accepted = n / (res['end'] - t0) if res['accepted'] == n else None
        e2e = n / (t_up - t0) if t_up else None
        chk = corpus.verify_digests(_digests(sink.contents()), want)
        copies = corpus.maildir_files(sent)
        chk_sent = corpus.verify_files(copies, want)
        if res['accepted'] != n:
            s.fail('pop3bridge', 'relay to %s: accepted %d of %d: %s' % (Sink.name, res['accepted'], n,
                                                                   res['errors']))
        if not chk.ok:
            s.fail('pop3bridge', 'relay to %s, upstream: %s' % (Sink.name, chk))
        if not chk_sent.ok:
            s.fail('pop3bridge', 'relay to %s, Sent copies: %s' % (Sink.name, chk_sent))
        b.log('  upstream has %d after %s s, %d Sent copies after %s s' % (
            up.last, secs(t_up - t0) if t_up else '(timeout)', len(copies),
            secs(t_sent - t0) if t_sent else '(timeout)'))
        t.row('pop3bridge relay \u2192 %s' % Sink.name, rate(accepted), rate(e2e),
              secs(t_up - t0) if t_up else 'not all in 300 s',
              '%d (%s s)' % (len(copies), secs(t_sent - t0) if t_sent else 'not all'),
              '%.2f (%.2f ms a message)' % (cpu, 1000 * cpu / n), '%s; Sent %s' % (chk, chk_sent))
        return {'accepted': accepted, 'e2e': e2e, 'direct': direct, 'sent': len(copies),
                'sent_s': (t_sent - t0) if t_sent else None}
    finally:
        sink.stop()
        b.discard(work)


def run(b):
    n, size = b.args.relay, b.args.relay_size
    s = Section('relay', '6. Relay: %d \u00d7 %d B over %d authenticated connections' % (
        n, size, b.args.connections))
    msgs = [corpus.message(i, size, 'relay') for i in range(n)]
    want = _digests(msgs)
    msgs_file = os.path.join(b.scratch.root, 'relay-messages')
    write_messages(msgs_file, msgs)
    t = Table('%d messages of %d bytes, %d connections' % (n, size, b.args.connections),
              ['path', 'accepted msgs/s', 'end to end msgs/s', 'all upstream after s',
               'Sent copies (all filed after s)', 'pop3bridge CPU s', 'correct'])
    out = {}
    for Sink in (servers.SmtpSink, servers.Aiosmtpd):
        out[Sink.name] = _one_upstream(b, s, t, Sink, msgs_file, want)
    t.note('seconds and rates from the client\'s first connection; accepted = every 250 '
           'received by the submitting client')
    t.note('pop3bridge CPU: user + system seconds of `pop3bridge run` and every process it '
           'started (sessions, relay, queue runner and its workers), start to stop: what the '
           'messages cost it, whatever else the machine was doing')
    s.tables.append(t)
    for name, o in out.items():
        s.summary.append(SummaryRow(
            'relay %d \u00d7 %d KB, %d conns \u2192 %s' % (n, size // 1024, b.args.connections, name),
            'accepted %s msgs/s, end to end %s msgs/s, %d Sent copies' % (
                rate(o['accepted']), rate(o['e2e']), o['sent']),
            'the client straight to %s: %s msgs/s' % (name, rate(o['direct'])),
            'accepted/limit %s' % (ratio(o['accepted'] / o['direct']) if o['accepted'] else '-'),
            '\u2265 1,000 accepted, \u2265 500 end to end',
            s.ok('pop3bridge', name) and bool(o['accepted']) and o['accepted'] >= 1000 and bool(o['e2e']) and
            o['e2e'] >= 500))
    return s
