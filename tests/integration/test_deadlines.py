#!/usr/bin/python3
"""Deadlines everywhere (doc/DESIGN.md, Process model; lib/deadline.h): a
RETR that dribbles below the step timeout ends by its own deadline, the pass
ends by pass_timeout, SIGTERM ends a pass during a slow RETR within about a
second, password_command is killed after its timeout, and a resolver that
never answers is cut after the timeout. Each time: exit 75, one line naming
the account, nothing lost, and the next clean pass imports everything once.

The POP3 server is the scripted one (pop3script.py: its `dribble` and
`silence` faults); the hanging resolver is glibc's own, pointed (in private
mount and network namespaces) at a UDP socket on 127.0.0.1:53 that never
answers."""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pop3script  # noqa: E402

TIMEOUT = 180


def mailbox(n=3, size=1500):
    """n messages of size bytes: a 1500-byte message has about 25 lines,
    more than a dribble sends before any deadline here."""
    return [('u%d' % i, h.make_message(i, size=size)) for i in range(1, n + 1)]


def config(t, host, port, timeout=2, pass_timeout=None, password='password = "secret"',
           ca_file=None):
    """A config fetching from host:port (plain POP3 on loopback, or POP3S
    trusting ca_file) into t.path('Maildir'); returns its path."""
    tls = ['tls = "implicit"', 'ca_file = %s' % h.cq(ca_file)] if ca_file else \
        ['tls = "none"', 'allow_plaintext = true']
    pop3 = ['host = %s' % h.cq(host), 'port = %d' % port] + tls + [
        'user = "alice"', password, 'timeout = %d' % timeout]
    acct = 'account "alice" {\n  folder = "INBOX"\n  pop3 {\n    %s\n  }\n}\n' % (
        '\n    '.join(pop3))
    extra = 'pass_timeout = %d\n' % pass_timeout if pass_timeout else ''
    path = t.path('pop3bridge.conf')
    h.write_config(path, h.config_text(t.path('state'), t.path('Maildir'), [acct], extra))
    return path


def stored(t):
    """Hashes (canonical) of the messages in the Maildir, sorted."""
    out = []
    for f in h.maildir_files(t.path('Maildir')):
        with open(f, 'rb') as fh:
            out.append(h.body_hash(fh.read()))
    return sorted(out)


def wanted(box):
    return sorted(h.body_hash(b) for _, b in box)


def pending(t, conf):
    p = t.run_bridge(conf, 'status', '--json')
    if p.returncode != 0:
        return None
    return json.loads(p.stdout)['accounts'][0]['pending']


def timed(t, conf, *args, timeout=60):
    t0 = time.monotonic()
    try:
        p = t.run_bridge(conf, *args, timeout=timeout)
    except subprocess.TimeoutExpired:
        t.fail('pop3bridge %s still running after %d s' % (' '.join(args), timeout))
    return p, time.monotonic() - t0


def import_is_exact_after(t, conf, srv, box):
    """The next pass (no fault left) imports everything, exactly once."""
    p = t.run_bridge(conf, 'sync', timeout=60)
    t.check(p.returncode == 0, 'clean pass: exit 0, got %d: %s' % (p.returncode, p.stderr))
    t.check(stored(t) == wanted(box), 'every message stored exactly once (%d files for %d)'
            % (len(stored(t)), len(box)))
    t.check(pending(t, conf) == 0, 'nothing pending after the clean pass')
    t.check([u for u, _ in srv.mailbox()] == [u for u, _ in box], 'nothing deleted')


def wait_transcript(srv, text, timeout=20):
    """Waits until the server's transcript holds text."""
    def seen():
        with open(srv.log_path, errors='replace') as f:
            return text in f.read()
    h.wait_for(seen, timeout, what='%r in the POP3 transcript' % text)


def test_dribbling_retr_ends_by_its_deadline(t):
    """A line every second, under the 2 s step timeout: without a deadline
    per response the RETR of message 2 would never end. Its deadline is
    2 s + 1500 octets at 16 KiB/s, rounded up: 3 s."""
    box = mailbox()
    srv = pop3script.Server(t, box)
    srv.fault('RETR', action='dribble', arg='2', session=1, interval=1.0)
    conf = config(t, '127.0.0.1', srv.port, timeout=2)
    p, took = timed(t, conf, 'sync')
    t.check(p.returncode == 75, 'exit 75 (temporary), got %d' % p.returncode)
    t.check('alice: RETR of message 2 (UIDL u2) exceeded its deadline of 3 s' in p.stderr,
            'one line naming account, message and deadline: %r' % p.stderr)
    t.check(took < 3 + 3, 'ended by its deadline (3 s), took %.1f s' % took)
    s = srv.sessions()
    t.check(len(s) == 1 and not s[0].quit and 'RETR 3' not in s[0].commands,
            'session abandoned without QUIT, nothing after message 2: %r' % s)
    t.check(stored(t) == wanted(box[:1]), 'message 1, fetched before, was delivered')
    t.check(pending(t, conf) == 0, 'nothing left pending')
    import_is_exact_after(t, conf, srv, box)


def test_pass_deadline(t):
    """A server that stops answering mid-RETR, with a 30 s step timeout:
    pass_timeout = 3 ends the pass after 3 s."""
    box = mailbox()
    srv = pop3script.Server(t, box)
    srv.fault('RETR', action='silence', arg='2', session=1)
    conf = config(t, '127.0.0.1', srv.port, timeout=30, pass_timeout=3)
    p, took = timed(t, conf, 'sync')
    t.check(p.returncode == 75, 'exit 75, got %d' % p.returncode)
    t.check('alice: RETR of message 2 (UIDL u2): the pass exceeded its deadline of 3 s'
            in p.stderr, 'the pass deadline is named: %r' % p.stderr)
    t.check(took < 3 + 3, 'ended by the pass deadline (3 s), took %.1f s' % took)
    t.check(stored(t) == wanted(box[:1]), 'message 1 delivered')
    import_is_exact_after(t, conf, srv, box)


def sigterm_during_slow_retr(t, tls):
    """SIGTERM to `sync` while a RETR dribbles (its own deadline 31 s away,
    the step timeout 30 s): the pass notices the stop while it waits."""
    box = mailbox()
    srv = pop3script.Server(t, box, tls=tls)
    srv.fault('RETR', action='dribble', arg='2', session=1, interval=0.5)
    conf = config(t, 'localhost' if tls else '127.0.0.1', srv.port, timeout=30,
                  ca_file=srv.ca_file if tls else None)
    p = t.start_bridge(conf, 'sync')
    wait_transcript(srv, 'C: RETR 2')
    time.sleep(1.5)             # well into the dribble
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=30 + 2)
    except subprocess.TimeoutExpired:
        t.fail('sync still running 32 s after SIGTERM')
    took = time.monotonic() - t0
    t.check(rc == 75, 'exit 75 after SIGTERM, got %d' % rc)
    t.check(took < 3, 'stopped within about a second of SIGTERM, took %.1f s' % took)
    with open(p.log_path, errors='replace') as f:
        log = f.read()
    t.check('alice: RETR of message 2 (UIDL u2): interrupted by a stop request' in log,
            'the stop is named: %r' % log)
    s = srv.sessions()
    t.check(len(s) == 1 and not s[0].quit, 'abandoned without QUIT: %r' % s)
    t.check(stored(t) == wanted(box[:1]), 'message 1 delivered')
    import_is_exact_after(t, conf, srv, box)


def test_sigterm_during_slow_retr(t):
    sigterm_during_slow_retr(t, tls=False)


def test_sigterm_during_slow_retr_over_tls(t):
    """The same through the TLS layer (the wait is inside GnuTLS's read)."""
    sigterm_during_slow_retr(t, tls=True)


def test_daemon_stops_during_slow_retr(t):
    """`run` on SIGTERM: its pass, in a slow RETR, stops within about a
    second, and the daemon exits 0; `sync` afterwards imports the rest."""
    box = mailbox()
    srv = pop3script.Server(t, box)
    srv.fault('RETR', action='dribble', arg='2', session=1, interval=0.5)
    conf = config(t, '127.0.0.1', srv.port, timeout=30)
    d = t.start_bridge(conf, 'run')
    wait_transcript(srv, 'C: RETR 2')
    time.sleep(1.5)
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    try:
        rc = d.wait(timeout=30 + 2)
    except subprocess.TimeoutExpired:
        t.fail('run still running 32 s after SIGTERM')
    took = time.monotonic() - t0
    t.check(rc == 0, 'the daemon exits 0, got %d' % rc)
    t.check(took < 3, 'stopped within about a second of SIGTERM, took %.1f s' % took)
    with open(d.log_path, errors='replace') as f:
        log = f.read()
    t.check('alice: RETR of message 2 (UIDL u2): interrupted by a stop request' in log,
            'the pass names the stop: %r' % log)
    t.check(stored(t) == wanted(box[:1]), 'message 1 delivered')
    import_is_exact_after(t, conf, srv, box)


def marked_processes(mark):
    """pids of live processes whose command line holds mark."""
    out = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                cmd = f.read()
            with open('/proc/%s/stat' % pid, 'rb') as f:
                state = f.read().rsplit(b')', 1)[1].split()[0]
        except OSError:
            continue
        if mark.encode() in cmd and state not in (b'Z', b'X'):
            out.append(int(pid))
    return out


def test_password_command_timeout(t):
    """password_command runs "sleep" under a shell that waits for it: after
    the 2 s timeout both are killed (its process group), none is left."""
    box = mailbox(1)
    srv = pop3script.Server(t, box)
    mark = '987%d' % os.getpid()
    conf = config(t, '127.0.0.1', srv.port, timeout=2,
                  password='password_command = "sleep %s; echo late"' % mark)
    p, took = timed(t, conf, 'sync')
    t.check(p.returncode == 75, 'exit 75, got %d' % p.returncode)
    t.check('alice: password_command timed out after 2 s' in p.stderr,
            'one line naming the account: %r' % p.stderr)
    t.check(took < 2 + 3, 'killed after its timeout (2 s), took %.1f s' % took)
    left = h.poll(lambda: not marked_processes(mark), 5) or marked_processes(mark)
    t.check(left is True, 'no process of the command left: %r' % left)
    t.check(srv.sessions() == [], 'no connection without a password')


SILENT_DNS = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 53))
open(sys.argv[1], 'w').close()
while True:
    s.recv(4096)        # read every query, answer none
'''


def test_dns_that_never_answers(t):
    """getaddrinfo() of glibc, with a resolv.conf of `options timeout:30
    attempts:5`, waits minutes for a DNS server that reads queries and never
    answers. pop3bridge gives up after its 2 s timeout."""
    if subprocess.run(['unshare', '-m', '-n', 'true'], capture_output=True).returncode != 0:
        t.skip('unshare -m -n is not permitted here')
    resolv = t.path('resolv.conf')
    with open(resolv, 'w') as f:
        f.write('nameserver 127.0.0.1\noptions timeout:30 attempts:5\n')
    with open(t.path('silent_dns.py'), 'w') as f:
        f.write(SILENT_DNS)
    conf = config(t, 'pop.never-answers.test', 110, timeout=2)
    ready = t.path('dns-ready')
    script = ('ip link set lo up && mount --bind %s /etc/resolv.conf || exit 99\n'
              '/usr/bin/python3 %s %s & dns=$!\n'
              'while [ ! -e %s ]; do sleep 0.05; done\n'
              '%s -c %s sync; rc=$?\n'
              'kill $dns; wait $dns; exit $rc\n'
              % (resolv, t.path('silent_dns.py'), ready, ready, h.bridge_binary(), conf))
    t0 = time.monotonic()
    try:
        p = subprocess.run(['unshare', '-m', '-n', 'sh', '-c', script], capture_output=True,
                           text=True, errors='replace', timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        t.fail('sync still running after 60 s: the resolution is unbounded')
    took = time.monotonic() - t0
    with open(t.path('sync-in-namespace.out'), 'w') as f:
        f.write('exit %d\n--- stdout\n%s\n--- stderr\n%s\n' % (p.returncode, p.stdout, p.stderr))
    t.add_log(t.path('sync-in-namespace.out'), 'pop3bridge sync (namespaces)')
    t.require(p.returncode != 99, 'namespace setup failed: %s' % p.stderr)
    t.check(h.sanitizer_report(p.stderr) is None, 'sanitizer: %s' % h.sanitizer_report(p.stderr))
    t.check(p.returncode == 75, 'exit 75, got %d' % p.returncode)
    t.check('alice: pop.never-answers.test:110: cannot resolve pop.never-answers.test: '
            'timed out after 2 s' in p.stderr,
            'one line naming the account and the cut resolution: %r' % p.stderr)
    t.check(took < 2 + 4, 'gave up after the timeout (2 s), took %.1f s' % took)


if __name__ == '__main__':
    h.main()
