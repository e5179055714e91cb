"""The submission relay against abusive clients: slowloris (a byte now
and then, before and after AUTH: the session deadlines hold), 1,000
connections at once against max_connections, pipelining abuse (thousands
of commands never read, a pipelined transaction over the recipient
limit, pipelined garbage), AUTH guessing (failures counted per address
across sessions: a burst is logged once, then AUTH from that address is
refused for a while without looking at the password; other addresses are
served). After each, the relay still serves a normal client, and nothing
was queued that should not be."""

import atexit
import base64
import os
import resource
import smtplib
import socket
import sqlite3
import threading
import time

import harness as h
import faultcheck as fc

TIMEOUT = 600
TIMEOUT_S = 1           # relay.timeout: 2 s to authenticate, 12 s in all

_tally = None


def tally():
    global _tally
    if _tally is None:
        _tally = fc.Tally('relay-abuse', 'abusive relay clients')
        atexit.register(_tally.save)
    return _tally


def setup(t, max_connections=10):
    dv = t.dovecot('dv', users={'alice': 'secret'})
    port = h.free_port()
    acct = h.account_block('work', dv, extra='''
  addresses = { "alice@example.com" }
  smtp { host = "127.0.0.1" port = %d tls = "none" allow_plaintext = true }
''' % h.free_port())
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  passwd_file = %s\n  timeout = %d\n'
             '  max_connections = %d\n}\npoll_interval = 3600\n'
             % (port, h.cq(dv.passwd_path), TIMEOUT_S, max_connections))
    conf = h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [acct], relay))
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: h.port_open(port) or d.poll() is not None, 20, what='relay port')
    t.require(d.poll() is None, 'pop3bridge run exited %s' % d.returncode)
    return conf, port, d


def sessions(daemon_pid):
    """Live session processes: children of the daemon's children (the
    relay's; the queue runner and passes have none here)."""
    return sum(len(h.children(c)) for c in h.children(daemon_pid))


def queued(t):
    db = t.path('state', 'state.db')
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        return [r[0] for r in con.execute('SELECT mail_from FROM outbox')]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def still_serves(t, port, d, subject):
    """A normal client still gets its message queued."""
    t.check(d.poll() is None, 'the daemon is still running')
    s = smtplib.SMTP('127.0.0.1', port, timeout=30)
    s.ehlo('device.example')
    s.login('alice', 'secret')
    r = s.sendmail('alice@example.com', ['bob@example.net'],
                   ('Subject: %s\r\n\r\nhello\r\n' % subject).encode())
    s.quit()
    t.check(r == {}, 'a normal submission after the abuse: %r' % r)


def lines_of(sock, timeout):
    """Everything the server sends until it closes (or timeout), as lines."""
    sock.settimeout(timeout)
    data = b''
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            break
        if not b:
            break
        data += b
    return data.split(b'\r\n')


def drip(sock, data, interval, until):
    """Sends data a byte at a time every interval seconds; returns the
    seconds until the server hung up (or until, if it never did)."""
    t0 = time.monotonic()
    for b in data:
        if time.monotonic() - t0 > until:
            break
        try:
            sock.sendall(bytes([b]))
        except OSError:
            return time.monotonic() - t0
        sock.settimeout(interval)
        try:
            got = sock.recv(4096)
            if got == b'':
                return time.monotonic() - t0
            if b'421' in got:
                return time.monotonic() - t0
        except socket.timeout:
            pass
        except OSError:
            return time.monotonic() - t0
    return time.monotonic() - t0


def test_slowloris(t):
    conf, port, d = setup(t)
    # before AUTH: the 2-timeout deadline (2 s) holds although every byte
    # comes within the per-read timeout
    s = socket.create_connection(('127.0.0.1', port))
    s.recv(1024)
    secs = drip(s, b'EHLO ' + b'x' * 200, 0.5, 30)
    s.close()
    print('    before AUTH: hung up after %.1fs' % secs)
    t.check(secs < 4 * TIMEOUT_S, 'slowloris before AUTH cut after %.1fs' % secs)
    tally().case(crash=False)
    # after AUTH, dripping a message: the session deadline (12 s) holds
    s = socket.create_connection(('127.0.0.1', port))
    f = s.makefile('rb')
    f.readline()
    cred = base64.b64encode(b'\0alice\0secret').decode()
    s.sendall(('EHLO x\r\nAUTH PLAIN %s\r\nMAIL FROM:<alice@example.com>\r\n'
               'RCPT TO:<bob@example.net>\r\nDATA\r\n' % cred).encode())
    for _ in range(5):
        while True:
            line = f.readline()
            if line[3:4] != b'-':
                break
    secs = drip(s, b'Subject: slow\r\n\r\n' + b'y' * 200, 0.8, 60)
    s.close()
    print('    dripping DATA after AUTH: hung up after %.1fs' % secs)
    t.check(secs < 12 * TIMEOUT_S + 2, 'slowloris in DATA cut after %.1fs' % secs)
    t.check(queued(t) == [], 'nothing queued: %r' % queued(t))
    still_serves(t, port, d, 'after slowloris')
    tally().case(crash=False)


def test_thousand_connections(t):
    conf, port, d = setup(t, max_connections=10)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    socks = []
    # sessions at once: the relay's children, sampled while the flood is
    # served (sessions end by their 2 s deadline, then more get in)
    most, sampling = [0], threading.Event()

    def sample():
        while not sampling.is_set():
            most[0] = max(most[0], sessions(d.pid))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in range(1000):
            try:
                socks.append(socket.create_connection(('127.0.0.1', port), timeout=10))
            except OSError:
                break
        t.check(len(socks) == 1000, 'opened %d connections' % len(socks))
        time.sleep(1)
        greeted = refused = silent = 0
        for s in socks:
            s.settimeout(10)
            try:
                line = s.recv(200)
            except OSError:
                line = b''
            if line.startswith(b'220'):
                greeted += 1
            elif line.startswith(b'421'):
                refused += 1
            else:
                silent += 1
        sampling.set()
        sampler.join(10)
        print('    1000 connections: %d greeted, %d refused with 421, %d neither; at most '
              '%d sessions at once' % (greeted, refused, silent, most[0]))
        t.check(0 < most[0] <= 10, 'at most max_connections sessions at once: %d' % most[0])
        t.check(greeted + refused == len(socks), '%d connections got no answer' % silent)
    finally:
        sampling.set()
        for s in socks:
            s.close()
    time.sleep(1)
    still_serves(t, port, d, 'after the flood')
    tally().case(crash=fc.crashed(d) if d.poll() is not None else False)


def test_pipelining_abuse(t):
    conf, port, d = setup(t)
    # thousands of commands, never read: the session ends when its
    # writes time out, the relay does not wedge
    s = socket.create_connection(('127.0.0.1', port))
    s.recv(1024)
    t0 = time.monotonic()
    try:
        s.sendall(b'NOOP\r\n' * 200000)
    except OSError:
        pass
    lines_of(s, 3 * TIMEOUT_S + 10)
    s.close()
    print('    200000 unread NOOPs: over in %.1fs' % (time.monotonic() - t0))
    still_serves(t, port, d, 'after unread pipelining')
    # one pipelined transaction over the recipient limit (100)
    s = socket.create_connection(('127.0.0.1', port))
    f = s.makefile('rb')
    f.readline()
    cred = base64.b64encode(b'\0alice\0secret').decode()
    burst = ('EHLO x\r\nAUTH PLAIN %s\r\nMAIL FROM:<alice@example.com>\r\n' % cred +
             ''.join('RCPT TO:<r%d@example.net>\r\n' % i for i in range(150)) +
             'DATA\r\nSubject: burst\r\n\r\nhello\r\n.\r\nQUIT\r\n')
    s.sendall(burst.encode())
    codes = []
    while True:
        line = f.readline()
        if not line:
            break
        if line[3:4] != b'-':
            codes.append(line[:3].decode())
    s.close()
    rcpt = codes[3:153]
    t.check(codes[:3] == ['250', '235', '250'], 'EHLO AUTH MAIL: %s' % codes[:3])
    t.check(rcpt.count('250') == 100 and rcpt.count('452') == 50,
            'RCPT: %d accepted, %d refused' % (rcpt.count('250'), rcpt.count('452')))
    t.check(codes[153:] == ['354', '250', '221'], 'DATA, the message, QUIT: %s'
            % codes[153:])
    # pipelined garbage: 10 bad commands and the session ends
    s = socket.create_connection(('127.0.0.1', port))
    s.recv(1024)
    s.sendall(b'BOGUS\r\n' * 50)
    got = [l for l in lines_of(s, 10) if l]
    s.close()
    t.check(len(got) == 11 and got[-1].startswith(b'421'), 'ten errors then 421: %d lines, '
            'last %r' % (len(got), got[-1:]))
    still_serves(t, port, d, 'after pipelined garbage')
    subjects = queued(t)
    t.check(len(subjects) == 3, 'queued: the burst and two normal messages, got %d'
            % len(subjects))
    tally().case(crash=False)


def auth_session(port, user, password, source='127.0.0.1'):
    """One session: up to three AUTH PLAIN tries with password (the relay
    hangs up after the third failure); the reply codes of the AUTHs."""
    s = socket.create_connection(('127.0.0.1', port), timeout=30,
                                 source_address=(source, 0))
    f = s.makefile('rb')
    codes = []
    try:
        f.readline()
        s.sendall(b'EHLO guesser.example\r\n')
        while f.readline()[3:4] == b'-':
            pass
        cred = base64.b64encode(b'\0' + user.encode() + b'\0' + password.encode())
        for _ in range(3):
            s.sendall(b'AUTH PLAIN ' + cred + b'\r\n')
            line = f.readline()
            if not line:
                break
            codes.append(int(line[:3]))
            if codes[-1] != 535:
                break
        s.sendall(b'QUIT\r\n')
    except OSError:
        pass
    finally:
        s.close()
    return codes


def log_count(d, text):
    with open(d.log_path, 'rb') as f:
        return f.read().decode('utf-8', 'replace').count(text)


def test_auth_guessing(t):
    conf, port, d = setup(t)
    # four sessions of three wrong guesses each (the relay hangs up on
    # the third): twelve failures, over the limit of ten
    for i in range(4):
        codes = auth_session(port, 'alice', 'Pw-guess-%d' % i)
        t.check(codes == [535, 535, 535], 'guessing session %d: %s' % (i, codes))
    # the relay counts a session's failures when it has ended (within 1 s)
    codes = []
    end = time.monotonic() + 10
    while time.monotonic() < end:
        codes = auth_session(port, 'alice', 'secret')
        if codes != [235]:
            break
        time.sleep(0.2)
    print('    after 12 failed AUTHs: the right password gets %s' % codes)
    t.check(codes == [454], 'AUTH from a guessing address refused (454) even with the '
            'right password: %s' % codes)
    # still refused, and not logged again
    for i in range(3):
        codes = auth_session(port, 'alice', 'Pw-guess-more%d' % i)
        t.check(codes == [454], 'blocked guess %d: %s' % (i, codes))
    # another address is not held for the guesser's failures
    codes = auth_session(port, 'alice', 'secret', source='127.0.0.2')
    t.check(codes == [235], 'AUTH from another address: %s' % codes)
    time.sleep(1.5)
    burst = log_count(d, 'relay: 127.0.0.1: authentication failed')
    blocked = log_count(d, 'relay: 127.0.0.1: 12 failed authentications')
    print('    log: %d line for the burst, %d for the block' % (burst, blocked))
    t.check(burst == 1, 'the burst logged once, not per guess: %d lines' % burst)
    t.check(blocked == 1, 'the block logged once: %d lines' % blocked)
    t.check(log_count(d, 'Pw-guess') == 0,
            'no password in the log')
    t.check(d.poll() is None, 'the daemon is still running')
    t.check(queued(t) == [], 'nothing queued: %r' % queued(t))
    tally().case(crash=False)


if __name__ == '__main__':
    h.main()
