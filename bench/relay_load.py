#!/usr/bin/python3
"""Relay throughput, measured (issue 9 item 4): N submissions of SIZE bytes
over C concurrent authenticated SMTP connections into `pop3bridge run`,
relayed to a local upstream (Postfix's smtp-sink, or the tests' aiosmtpd),
with a Sent copy of each into a Maildir.

    bench/relay_load.py [--messages 2000] [--size 10240] [--connections 8]
                        [--upstream sink|aiosmtpd] [--binary ./pop3bridge]
                        [--limit] [--keep]

Prints, each from the first submission:
  accepted    all N answered 250 (the relay's fsync-before-250 path)
  delivered   all N recorded as sent upstream (queue rows in state.db)
  filed       all N Sent copies stored and their spool files removed
and with --limit the same client straight into the upstream: the ceiling.
Everything runs on 127.0.0.1 free ports in a temp dir, stopped by pid.
Not a test: nothing here asserts a time."""

import argparse
import base64
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

USER, PASSWORD, FROM = 'alice', 'relaypw', 'alice@example.com'


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(('127.0.0.1', port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError('nothing listens on %d' % port)


def body(size, i):
    head = ('From: Alice <%s>\r\nTo: bob@example.net\r\nSubject: load %d\r\n'
            'Message-ID: <load-%d@example.com>\r\n\r\n' % (FROM, i, i)).encode()
    line = b'0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n'
    n = max(0, size - len(head))
    return head + (line * (n // len(line) + 1))[:n - n % len(line)] + b'\r\n'


class Client:
    """One SMTP connection submitting messages in turn (PIPELINING: MAIL,
    RCPT and DATA in one write), authenticated with AUTH PLAIN when auth."""

    def __init__(self, port, auth):
        """auth: (user, password) for AUTH PLAIN, or None."""
        self.s = socket.create_connection(('127.0.0.1', port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile('rb')
        self.reply()
        self.cmd(b'EHLO load.example')
        if auth:
            tok = base64.b64encode(b'\0' + auth[0].encode() + b'\0' + auth[1].encode())
            code = self.cmd(b'AUTH PLAIN ' + tok)
            if code != 235:
                raise RuntimeError('AUTH: %d' % code)

    def reply(self):
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError('connection closed')
            if line[3:4] != b'-':
                return int(line[:3])

    def cmd(self, line):
        self.s.sendall(line + b'\r\n')
        return self.reply()

    def send(self, msg):
        self.s.sendall(b'MAIL FROM:<%s>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n'
                       % FROM.encode())
        codes = [self.reply() for _ in range(3)]
        if codes != [250, 250, 354]:
            raise RuntimeError('MAIL/RCPT/DATA: %r' % codes)
        self.s.sendall(msg.replace(b'\r\n.', b'\r\n..') + b'.\r\n')
        code = self.reply()
        if code != 250:
            raise RuntimeError('end of DATA: %d' % code)

    def close(self):
        try:
            self.cmd(b'QUIT')
        except (OSError, RuntimeError):
            pass
        self.s.close()


def submit(port, n, size, conns, auth):
    """Seconds to submit n messages over conns connections."""
    errors, counter, lock = [], [0], threading.Lock()
    msgs = [body(size, i) for i in range(n)]

    def worker():
        try:
            c = Client(port, auth)
            while True:
                with lock:
                    i = counter[0]
                    counter[0] += 1
                if i >= n:
                    break
                c.send(msgs[i])
            c.close()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError('submission failed: %r' % errors[0])
    return time.monotonic() - t0


def start_upstream(kind, port, d):
    log = open(os.path.join(d, 'upstream.log'), 'ab')
    if kind == 'sink':
        cmd = ['smtp-sink', '-u', 'nobody', '-c', '127.0.0.1:%d' % port, '256']
    else:
        spool = os.path.join(d, 'upstream-spool')
        os.makedirs(spool)
        script = os.path.join(d, 'script.json')
        with open(script, 'w') as f:
            f.write('{}')
        cmd = ['/usr/bin/python3', os.path.join(REPO, 'tests', 'integration', 'smtpd.py'),
               '--port', str(port), '--spool', spool, '--script', script,
               '--user', 'relay', '--password', 'relaypw']
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    wait_port(port)
    return p


def config(d, up_port, relay_port):
    passwd = os.path.join(d, 'users')
    with open(passwd, 'w') as f:
        f.write('%s:{PLAIN}%s::::::\n' % (USER, PASSWORD))
    text = '''state_dir = "%(d)s/state"
poll_interval = 86400
store { type = "maildir"  path = "%(d)s/mail/%%u/Maildir" }
account "load" {
  local_user = "%(user)s"
  pop3 { host = "127.0.0.1"  port = %(dead)d  tls = "none"  user = "x"  password = "x"
         allow_plaintext = true }
  smtp { host = "127.0.0.1"  port = %(up)d  tls = "none"  user = "relay"
         password = "relaypw"  allow_plaintext = true }
  addresses = { "%(from)s" }
  sent_folder = "Sent"
}
relay {
  listen = { "127.0.0.1:%(relay)d" }
  passwd_file = "%(passwd)s"
  max_connections = 64
}
''' % {'d': d, 'user': USER, 'dead': free_port(), 'up': up_port, 'from': FROM,
       'relay': relay_port, 'passwd': passwd}
    path = os.path.join(d, 'p3b.conf')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    return path


def counts(d):
    """(sent, unfiled) from the state; (0, 0) before the outbox exists."""
    try:
        db = sqlite3.connect('file:%s/state/state.db?mode=ro' % d, uri=True, timeout=5)
        try:
            sent = db.execute('SELECT count(*) FROM outbox WHERE state = 1').fetchone()[0]
            left = db.execute("SELECT count(*) FROM outbox WHERE spool_file <> ''"
                              ).fetchone()[0]
        finally:
            db.close()
        return sent, left
    except sqlite3.Error:
        return 0, -1


def run(args):
    d = tempfile.mkdtemp(prefix='p3b-relay-bench-', dir=args.dir)
    os.chmod(d, 0o755)
    procs = []
    try:
        up_port, relay_port = free_port(), free_port()
        procs.append(start_upstream(args.upstream, up_port, d))
        if args.limit:
            secs = submit(up_port, args.messages, args.size, args.connections,
                          ('relay', 'relaypw') if args.upstream != 'sink' else None)
            print('limit      %6.2f s  %7.0f msgs/s  (the same client straight into %s)'
                  % (secs, args.messages / secs, args.upstream))
        conf = config(d, up_port, relay_port)
        log = open(os.path.join(d, 'pop3bridge.log'), 'ab')
        procs.append(subprocess.Popen([args.binary, '-c', conf] + (['-v'] if args.verbose else []) + ['run'],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        wait_port(relay_port)
        t0 = time.monotonic()
        secs = submit(relay_port, args.messages, args.size, args.connections,
                      (USER, PASSWORD))
        print('accepted   %6.2f s  %7.0f msgs/s' % (secs, args.messages / secs))
        delivered = filed = None
        while time.monotonic() - t0 < args.timeout:
            sent, left = counts(d)
            now = time.monotonic() - t0
            if delivered is None and sent >= args.messages:
                delivered = now
            if delivered is not None and left == 0:
                filed = now
                break
            time.sleep(0.02)
        for what, t in (('delivered', delivered), ('filed', filed)):
            if t is None:
                print('%-10s not done within %d s' % (what, args.timeout))
            else:
                print('%-10s %6.2f s  %7.0f msgs/s  (end to end)' % (what, t,
                                                                   args.messages / t))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if args.keep:
            print('kept %s' % d)
        else:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--messages', type=int, default=2000)
    ap.add_argument('--size', type=int, default=10240)
    ap.add_argument('--connections', type=int, default=8)
    ap.add_argument('--upstream', choices=('sink', 'aiosmtpd'), default='sink')
    ap.add_argument('--binary', default=os.path.join(REPO, 'pop3bridge'))
    ap.add_argument('--timeout', type=int, default=300)
    ap.add_argument('--limit', action='store_true')
    ap.add_argument('--keep', action='store_true')
    ap.add_argument('--dir', help='where the temp dir goes (default: $TMPDIR); /dev/shm shows the cost without disk syncs')
    ap.add_argument('--verbose', action='store_true', help='pop3bridge -v (its log is kept with --keep)')
    run(ap.parse_args())
