"""The SMTP submission relay (bridge/relay*.c) against real clients:
Python's smtplib as the device, the harness's Dovecot passwd-file as the
user database (the same credentials log in to Dovecot IMAP), and the outbox
in the state database as the proof that something was, or was not, queued.

Limits: connections (421), the command timeout.
Refusals: no AUTH (530), wrong password (535), AUTH in plaintext from a
non-loopback address (538; a client in a network namespace over a veth
pair), a MAIL FROM that is not the user's (550), a recipient flood (452),
an oversized message (552, and SIZE= refused at MAIL), bare LF in DATA
(550) - each with nothing queued. STARTTLS then AUTH works, input
pipelined behind STARTTLS is dropped, and a message answered 250 survives
a SIGKILL of the daemon right after the reply."""

import base64
import os
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TIMEOUT = 240
MAX_SIZE = 200000


def setup(t, extra_listen=(), limits='', upstream_port=None):
    """A Dovecot (the passwd-file: alice/secret, bob/hunter2), a config with
    a relay for alice's account, and the daemon running. Returns (conf,
    port, tls_port, daemon)."""
    dv = t.dovecot('dv', users={'alice': 'secret', 'bob': 'hunter2'})
    port, tls_port = h.free_port(), h.free_port()
    # upstream: unless a test starts one on upstream_port, nothing listens
    # there and mail stays queued
    dead = upstream_port or h.free_port()
    listen = ', '.join(h.cq(x) for x in ['127.0.0.1:%d' % port] + list(extra_listen))
    certs = t.certs
    acct = h.account_block('work', dv, extra='''
  addresses = { "alice@example.com", "Alice.Smith@example.org" }
  smtp { host = "127.0.0.1" port = %d tls = "none" allow_plaintext = true }
''' % dead)
    acct_bob = h.account_block('bobs', dv, user='bob', password='hunter2', local_user='bob',
                               extra='addresses = { "bob@example.com" }\n'
                               '  smtp { host = "127.0.0.1" port = %d tls = "none" }' % dead)
    relay = '''relay {
  listen = { %s }
  listen_tls = { "127.0.0.1:%d" }
  tls_cert = %s
  tls_key = %s
  passwd_file = %s
  max_message_size = %d
  %s
}
poll_interval = 3600
''' % (listen, tls_port, h.cq(certs.cert), h.cq(certs.key), h.cq(dv.passwd_path),
       MAX_SIZE, limits)
    conf = h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [acct, acct_bob], relay))
    p = t.start_bridge(conf, '-v', 'run')
    h.wait_for(lambda: h.port_open(port) or p.poll() is not None, 20, what='relay port')
    t.require(p.poll() is None, 'pop3bridge run exited %s' % p.returncode)
    return conf, port, tls_port, p


def outbox(t):
    """[(id, mail_from, auth_user, spool_file, [rcpts])] from the state db."""
    db = t.path('state', 'state.db')
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute('SELECT id, mail_from, auth_user, spool_file FROM outbox '
                           'ORDER BY id').fetchall()
        return [r + ([x[0] for x in con.execute(
            'SELECT rcpt FROM outbox_rcpt WHERE outbox_id = ? ORDER BY pos', (r[0],))],)
            for r in rows]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def message(subject='hello', body='Hi Bob,\r\nthis is a test.\r\n'):
    return ('From: Alice <alice@example.com>\r\nTo: bob@example.net\r\n'
            'Subject: %s\r\nMessage-ID: <%s@example.com>\r\n\r\n%s'
            % (subject, subject.replace(' ', '.'), body)).encode()


def client(port):
    s = smtplib.SMTP('127.0.0.1', port, timeout=30)
    s.ehlo('device.example')
    return s


def tls_context(t):
    ctx = ssl.create_default_context(cafile=t.certs.ca_file)
    return ctx


def auth_plain(s, user, pw):
    return s.docmd('AUTH', 'PLAIN ' + base64.b64encode(
        ('\0%s\0%s' % (user, pw)).encode()).decode())


def expect(t, what, fn, code):
    """fn() must raise an SMTP error with code (or return a reply with it)."""
    try:
        r = fn()
        got = r[0] if isinstance(r, tuple) else None
    except smtplib.SMTPResponseException as e:
        got = e.smtp_code
    except smtplib.SMTPRecipientsRefused as e:
        got = list(e.recipients.values())[0][0]
    except smtplib.SMTPSenderRefused as e:
        got = e.smtp_code
    t.check(got == code, '%s: expected %d, got %r' % (what, code, got))


def test_refusals(t):
    conf, port, _, _ = setup(t)
    # no AUTH: 530
    s = client(port)
    expect(t, 'MAIL without AUTH', lambda: s.mail('alice@example.com'), 530)
    s.quit()
    # wrong password: 535; bob's password does not open alice; the third
    # failure ends the session
    s = client(port)
    expect(t, 'wrong password', lambda: auth_plain(s, 'alice', 'wrong'), 535)
    expect(t, 'other user\'s password', lambda: auth_plain(s, 'alice', 'hunter2'), 535)
    r = auth_plain(s, 'mallory', 'secret')
    t.check(r[0] == 535 and s.getreply()[0] == 421, 'third failure: 535 then 421: %s' % (r,))
    s.close()
    # MAIL FROM not the user's: 550 (bob's address, an unknown one, <>)
    s = client(port)
    s.login('alice', 'secret')
    for frm in ('bob@example.com', 'alice@evil.example', ''):
        expect(t, 'MAIL FROM <%s>' % frm, lambda: s.mail(frm), 550)
    # SIZE= over the limit refused at MAIL FROM: 552
    expect(t, 'SIZE too big', lambda: s.mail('alice@example.com', ['SIZE=%d' % (MAX_SIZE + 1)]),
           552)
    # recipient flood: the 101st gets 452
    t.check(s.mail('alice@example.com')[0] == 250, 'MAIL')
    codes = [s.rcpt('r%d@example.net' % i)[0] for i in range(101)]
    t.check(codes[:100] == [250] * 100 and codes[100] == 452, 'rcpt codes %s' % codes[95:])
    s.rset()
    # an oversized message: 552 after DATA
    big = message('big', ('y' * 78 + '\r\n') * 3000)
    expect(t, 'oversized message', lambda: s.sendmail('alice@example.com', ['b@example.net'],
                                                      big), 552)
    # a command line over 1000 bytes: 500
    expect(t, 'long line', lambda: s.docmd('NOOP ' + 'x' * 1200), 500)
    s.quit()
    # bare LF in DATA (smuggling): 550, the session stays in sync
    raw = socket.create_connection(('127.0.0.1', port), timeout=30)
    f = raw.makefile('rb')

    def reply():
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if line[3:4] != b'-':
                return lines
    reply()
    cred = base64.b64encode(b'\0alice\0secret').decode()
    raw.sendall(b'EHLO x\r\nAUTH PLAIN ' + cred.encode() + b'\r\n'
                b'MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n')
    got = [reply()[-1][:3] for _ in range(5)]
    t.check(got == [b'250', b'235', b'250', b'250', b'354'], 'pipelined group: %s' % got)
    raw.sendall(b'Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<alice@example.com>\r\n'
                b'RCPT TO:<victim@example.net>\r\nDATA\r\nevil\r\n.\r\nNOOP\r\n')
    t.check(reply()[-1][:3] == b'550', 'bare LF refused')
    t.check(reply()[-1][:3] == b'250', 'NOOP after the refused message')
    raw.sendall(b'QUIT\r\n')
    raw.close()
    time.sleep(0.5)
    t.check(outbox(t) == [], 'nothing queued: %s' % outbox(t))
    spool = t.path('state', 'spool')
    left = [f for f in os.listdir(spool) if f != 'tmp'] if os.path.isdir(spool) else []
    t.check(left == [], 'nothing in the spool: %s' % left)
    if os.path.isdir(os.path.join(spool, 'tmp')):
        t.check(os.listdir(os.path.join(spool, 'tmp')) == [], 'no temp files left')


def test_starttls_auth_and_queue(t):
    conf, port, tls_port, _ = setup(t)
    s = client(port)
    t.check(s.has_extn('starttls') and s.has_extn('pipelining') and s.has_extn('8bitmime')
            and s.has_extn('enhancedstatuscodes') and s.has_extn('size'), 'EHLO keywords')
    s.starttls(context=tls_context(t))
    s.ehlo('device.example')
    t.check(not s.has_extn('starttls'), 'no STARTTLS after STARTTLS')
    s.login('alice', 'secret')
    body = message('over tls')
    before = time.time()
    code, resp = s.mail('Alice.Smith@example.org', ['BODY=8BITMIME', 'SIZE=%d' % len(body)])
    t.check(code == 250, 'MAIL %s' % code)
    s.rcpt('bob@example.net')
    s.rcpt('carol@example.net')
    code, resp = s.data(body)
    t.check(code == 250 and b'queued as' in resp, 'DATA: %d %r' % (code, resp))
    # The 250 came after the row and the message in it exist.
    rows = outbox(t)
    t.require(len(rows) == 1, 'one queued message: %s' % rows)
    qid, frm, user, spool, rcpts = rows[0]
    t.check(resp.split()[-1] == str(qid).encode(), 'queue id in the reply')
    t.check((frm, user, rcpts) == ('Alice.Smith@example.org', 'alice',
                                   ['bob@example.net', 'carol@example.net']), rows[0])
    t.require(h.outboxdb.in_row(t.path('state')) == [qid], 'a small message in its row')
    stored = h.outboxdb.queued(t.path('state'))[0][2]
    t.check(not os.path.exists(t.path('state', 'spool', spool)), 'and no spool file')
    t.check(stored.startswith(b'Received: from device.example ([127.0.0.1])'), stored[:200])
    t.check(b'with ESMTPSA' in stored.split(b'\r\n\r\n')[0], 'ESMTPSA in Received')
    t.check(stored.endswith(body), 'the message follows the trace header unchanged')
    s.quit()
    # implicit TLS listener, AUTH LOGIN
    s = smtplib.SMTP_SSL('127.0.0.1', tls_port, context=tls_context(t), timeout=30)
    s.ehlo('device.example')
    s.user, s.password = 'alice', 'secret'
    code, _ = s.auth('LOGIN', s.auth_login)
    t.check(code == 235, 'AUTH LOGIN over implicit TLS')
    s.sendmail('alice@example.com', ['dave@example.net'], message('implicit'))
    s.quit()
    t.check(len(outbox(t)) == 2, 'two queued')


def test_big_submission_in_a_spool_file(t):
    """A message over store/outbox.h's OUTBOX_INLINE_MAX (64 KiB) is not
    read into its row: the session makes it durable as a spool file, and
    the row names it; it survives a SIGKILL right after the 250."""
    conf, port, _, p = setup(t)
    s = client(port)
    s.login('alice', 'secret')
    body = message('big one', 'line of a long message\r\n' * 4000)
    s.mail('alice@example.com')
    s.rcpt('bob@example.net')
    code, _ = s.data(body)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    s.close()
    t.check(code == 250, 'DATA %d' % code)
    rows = outbox(t)
    t.require(len(rows) == 1, 'one queued message: %s' % rows)
    state = t.path('state')
    t.check(h.outboxdb.in_row(state) == [], 'not in its row')
    path = t.path('state', 'spool', rows[0][3])
    t.require(os.path.exists(path), 'its spool file %s' % path)
    with open(path, 'rb') as f:
        stored = f.read()
    t.check(len(stored) > 64 * 1024 and stored.endswith(body),
            'the file holds the message under the trace header (%d bytes)' % len(stored))


def test_starttls_injection(t):
    conf, port, _, _ = setup(t)
    raw = socket.create_connection(('127.0.0.1', port), timeout=30)
    f = raw.makefile('rb')
    f.readline()
    raw.sendall(b'EHLO x\r\n')
    while f.readline()[3:4] == b'-':
        pass
    # NOOP pipelined in plaintext behind STARTTLS must never be answered
    raw.sendall(b'STARTTLS\r\nNOOP\r\n')
    t.check(f.readline()[:3] == b'220', 'STARTTLS accepted')
    tls = tls_context(t).wrap_socket(raw, server_hostname='localhost')
    tls.sendall(b'EHLO y\r\n')
    tf = tls.makefile('rb')
    first = tf.readline()
    t.check(first.startswith(b'250-'), 'first reply after TLS is to EHLO, not NOOP: %r' % first)
    tls.close()


def test_sigkill_after_250(t):
    conf, port, _, p = setup(t)
    s = client(port)
    s.login('alice', 'secret')
    s.mail('alice@example.com')
    s.rcpt('bob@example.net')
    code, resp = s.data(message('durable'))
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t.check(code == 250, 'DATA %d' % code)
    s.close()
    rows = outbox(t)
    t.require(len(rows) == 1, 'queued before the 250: %s' % rows)
    # restart: the message is still there, still queued
    h.wait_for(lambda: not h.port_open(port), 10, what='old relay gone')
    p2 = t.start_bridge(conf, '-v', 'run')
    h.wait_for(lambda: h.port_open(port) or p2.poll() is not None, 20, what='relay again')
    t.check(p2.poll() is None, 'restarted daemon runs')
    q = t.run_bridge(conf, 'queue', 'list')
    t.check(len(outbox(t)) == 1, 'still one message after restart')
    if q.returncode == 0:
        t.check(str(rows[0][0]) in q.stdout, 'queue list shows it: %s' % q.stdout)


def test_device_to_upstream_exactly_once_across_sigkill(t):
    """A device submits through the relay; the daemon dies (SIGKILL) right
    after the 250, before anything could be relayed; with the upstream up
    and the daemon restarted, the message arrives upstream exactly once and
    one \\Seen copy lands in Sent."""
    from smtpd import Upstream
    up_port = h.free_port()
    # The runner wakes at each enqueue: it may try the still absent
    # upstream before the kill, and that deferral must not outlast the test.
    conf, port, _, p = setup(t, upstream_port=up_port, limits='retry_initial = 1')
    s = client(port)
    s.login('alice', 'secret')
    s.mail('alice@example.com')
    s.rcpt('bob@example.net')
    body = message('end to end')
    code, _ = s.data(body)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t.check(code == 250, 'DATA %d' % code)
    s.close()
    up = Upstream(t, user=None, port=up_port).start()
    h.wait_for(lambda: not h.port_open(port), 10, what='old relay gone')
    p2 = t.start_bridge(conf, 'run')
    h.wait_for(lambda: len(up.messages()) >= 1, 30, what='relayed upstream')
    time.sleep(4)               # the runner polls every ~2 s: a repeat would show
    got = up.messages()
    t.check(len(got) == 1, 'delivered exactly once, got %d' % len(got))
    t.check(got and got[0]['content'].endswith(body) and
            got[0]['content'].startswith(b'Received: '),
            'the submitted bytes, under our Received: trace header')
    sent = h.wait_for(lambda: h.maildir_files(t.path('dest', 'alice', 'Maildir'), '.Sent'),
                      20, what='a Sent copy')
    t.check(len(sent) == 1 and sent[0].endswith(':2,S'), 'one \\Seen copy in Sent: %s' % sent)
    t.check(h.stop_process(p2) == 0, 'the daemon stops cleanly')


def test_limits_connections_and_timeout(t):
    conf, port, _, _ = setup(t, limits='max_connections = 2\n  timeout = 2')
    def session():
        try:
            return client(port)
        except smtplib.SMTPConnectError:
            return None         # the probe of setup() may not be reaped yet
    a = h.wait_for(session, 10, what='session 1')
    b = h.wait_for(session, 10, what='session 2')
    c = socket.create_connection(('127.0.0.1', port), timeout=10)
    t.check(c.makefile('rb').readline().startswith(b'421 4.7.0'), 'third connection: 421')
    c.close()
    a.quit()
    b.quit()
    # an idle client is dropped after the command timeout (once the two
    # sessions above have ended, a connection is served again)
    def greeted():
        d = socket.create_connection(('127.0.0.1', port), timeout=10)
        f = d.makefile('rb')
        if f.readline().startswith(b'220 '):
            return d, f
        d.close()
    d, f = h.wait_for(greeted, 10, what='a free session slot')
    t0 = time.monotonic()
    t.check(f.readline() == b'', 'closed by the server')
    t.check(time.monotonic() - t0 < 8, 'within the timeout')
    d.close()


def _netns(t):
    """A network namespace with a veth pair: returns (ns, host_ip, ns_ip) or
    skips when the sandbox cannot make one."""
    n = os.getpid() % 200 + 20
    ns, a, b = 'p3b%d' % os.getpid(), 'p3ba%d' % os.getpid(), 'p3bb%d' % os.getpid()
    host_ip, ns_ip = '10.213.%d.1' % n, '10.213.%d.2' % n
    cmds = [['ip', 'netns', 'add', ns],
            ['ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b],
            ['ip', 'link', 'set', b, 'netns', ns],
            ['ip', 'addr', 'add', host_ip + '/24', 'dev', a],
            ['ip', 'link', 'set', a, 'up'],
            ['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', ns_ip + '/24', 'dev', b],
            ['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', b, 'up'],
            ['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']]

    def undo():
        subprocess.run(['ip', 'link', 'del', a], capture_output=True)
        subprocess.run(['ip', 'netns', 'del', ns], capture_output=True)
    for c in cmds:
        r = subprocess.run(c, capture_output=True, text=True)
        if r.returncode != 0:
            undo()
            t.skip('cannot make a network namespace: %s: %s' % (' '.join(c), r.stderr.strip()))
    t.cleanup(undo)
    return ns, host_ip, ns_ip


CLIENT = r'''
import smtplib, ssl, sys, base64
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP(host, port, timeout=20)
s.ehlo('remote.example')
print('auth-advertised', s.has_extn('auth'))
print('plain', s.docmd('AUTH', 'PLAIN ' + base64.b64encode(b'\0alice\0secret').decode())[0])
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False  # the certificate names 127.0.0.1, we dial the veth address
s.starttls(context=ctx)
s.ehlo('remote.example')
print('auth-after-tls', s.has_extn('auth'))
print('login', s.login('alice', 'secret')[0])
s.quit()
'''


def test_plaintext_auth_from_network(t):
    ns, host_ip, ns_ip = _netns(t)
    port = h.free_port()
    conf, lport, _, _ = setup(t, extra_listen=['%s:%d' % (host_ip, port)])
    r = subprocess.run(['ip', 'netns', 'exec', ns, '/usr/bin/python3', '-c', CLIENT, host_ip,
                        str(port), t.certs.ca_file], capture_output=True, text=True, timeout=60)
    print('    ' + r.stdout.replace('\n', '\n    ') + r.stderr[-800:])
    out = dict(line.split(' ', 1) for line in r.stdout.splitlines() if ' ' in line)
    t.check(out.get('auth-advertised') == 'False', 'AUTH not offered in plaintext remotely')
    t.check(out.get('plain') == '538', 'AUTH PLAIN in plaintext from %s: 538' % ns_ip)
    t.check(out.get('auth-after-tls') == 'True' and out.get('login') == '235',
            'AUTH after STARTTLS works remotely')
    t.check(outbox(t) == [], 'nothing queued')


def test_session_deadline_and_long_line(t):
    """A client dripping a byte just inside the per-read timeout is cut at
    the session's absolute deadline (before AUTH: 2 x timeout) with a 421;
    an over-long line is thrown away as it streams, and the next command is
    still served."""
    conf, port, _, _ = setup(t, limits='timeout = 2')
    d = socket.create_connection(('127.0.0.1', port), timeout=10)
    f = d.makefile('rb')
    t.require(f.readline().startswith(b'220 '), 'greeting')
    d.sendall(b'NOOP ' + b'x' * 200000 + b'\r\nNOOP\r\n')
    t.check(f.readline().startswith(b'500 5.5.2'), 'over-long line refused')
    t.check(f.readline().startswith(b'250 '), 'the next command is served')
    t0 = time.monotonic()
    got = b''
    d.settimeout(1.2)
    while time.monotonic() - t0 < 15:
        try:
            d.sendall(b'x')
        except OSError:
            break
        try:
            chunk = d.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    elapsed = time.monotonic() - t0
    t.check(got.startswith(b'421 4.4.2'), 'ended with a 421: %r' % got)
    t.check(elapsed < 10, 'within the pre-AUTH deadline (%.1f s)' % elapsed)
    d.close()


if __name__ == '__main__':
    h.main()
