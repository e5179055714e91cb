#!/usr/bin/python3
"""The scripted POP3 server (pop3script.py) proven with poplib: the
protocol it speaks, the mailbox it keeps across sessions, and each fault
hook."""

import base64
import hashlib
import os
import poplib
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pop3script  # noqa: E402

ASAN = False  # does not run pop3bridge: one run is enough


def connect(srv, user='alice', password='secret', timeout=15):
    p = poplib.POP3('127.0.0.1', srv.port, timeout=timeout)
    if user:
        p.user(user)
        p.pass_(password)
    return p


def cmd(p, line):
    """Sends line, returns the one-line reply (str), -ERR included."""
    p._putcmd(line)
    return p._getline()[0].decode('utf-8', 'replace')


def hang_up(srv, p):
    """Closes poplib connection p without QUIT and waits until srv has seen
    it end (until then the session holds the maildrop lock)."""
    p.file.close()
    p.sock.close()
    return srv.sessions(wait=5)[-1].closed is not None


def joined(lines):
    return b''.join(l + b'\r\n' for l in lines)


def corpus():
    m1 = h.make_message(1, body=b'first line\n.\n..two dots\n.hidden\nlast\n')  # LF only
    m2 = h.make_message(2)
    m3 = h.make_message(3, size=5000)
    return [('uid-1', m1), ('uid-2', m2), ('uid-3', m3)]


def test_protocol_and_update(t):
    box = corpus()
    srv = pop3script.Server(t, box)
    p = poplib.POP3('127.0.0.1', srv.port, timeout=15)
    t.check(p.getwelcome() == b'+OK pop3script ready', 'greeting %r' % p.getwelcome())
    c = p.capa()
    t.check(c == {'TOP': [], 'UIDL': [], 'USER': [], 'SASL': ['PLAIN'],
                  'RESP-CODES': [], 'AUTH-RESP-CODE': []}, 'CAPA %r' % c)
    t.check(cmd(p, 'STAT').startswith('-ERR'), 'STAT refused before login')
    p.user('alice')
    try:
        p.pass_('wrong')
        t.check(False, 'wrong password accepted')
    except poplib.error_proto as e:
        t.check(str(e) == "b'-ERR [AUTH] invalid login'", 'wrong password: %s' % e)
    p.user('alice')
    sizes = [len(h.canonical(b)) for _, b in box]
    t.check(p.pass_('secret') == b'+OK maildrop has 3 messages (%d octets)' % sum(sizes), 'login')
    t.check(p.stat() == (3, sum(sizes)), 'STAT %r' % (p.stat(),))
    t.check(p.list()[1] == [b'%d %d' % (i + 1, n) for i, n in enumerate(sizes)], 'LIST')
    t.check(p.list(2) == b'+OK 2 %d' % sizes[1], 'LIST 2')
    t.check(p.uidl()[1] == [b'1 uid-1', b'2 uid-2', b'3 uid-3'], 'UIDL %r' % p.uidl()[1])
    t.check(p.uidl(3) == b'+OK 3 uid-3', 'UIDL 3')
    for i, (_, body) in enumerate(box):
        resp, lines, _ = p.retr(i + 1)
        t.check(resp == b'+OK %d octets' % sizes[i] and joined(lines) == h.canonical(body),
                'RETR %d byte-exact (dot-stuffed on the wire)' % (i + 1))
    head = h.canonical(box[0][1]).split(b'\r\n\r\n', 1)[0] + b'\r\n\r\n'
    t.check(joined(p.top(1, 0)[1]) == head, 'TOP 1 0 is the header and the blank line')
    t.check(joined(p.top(1, 2)[1]) == head + b'first line\r\n.\r\n', 'TOP 1 2')
    p.dele(2)
    t.check(cmd(p, 'DELE 2').startswith('-ERR'), 'DELE of a deleted message refused')
    t.check(cmd(p, 'RETR 2').startswith('-ERR'), 'RETR of a deleted message refused')
    t.check(p.stat()[0] == 2 and p.uidl()[1] == [b'1 uid-1', b'3 uid-3'], 'deleted hidden')
    p.rset()
    t.check(p.stat()[0] == 3, 'RSET undeletes')
    p.dele(2)
    t.check(p.noop() == b'+OK', 'NOOP')
    t.check(cmd(p, 'XYZZY').startswith('-ERR'), 'unknown command refused')
    p.quit()
    # UPDATE happened: uid-2 is gone for the next session
    p = connect(srv)
    t.check(p.uidl()[1] == [b'1 uid-1', b'2 uid-3'], 'after QUIT: %r' % p.uidl()[1])
    p.dele(1)
    hang_up(srv, p)         # no QUIT: no UPDATE
    srv.add('uid-4', h.make_message(4))
    p = connect(srv)
    t.check(p.uidl()[1] == [b'1 uid-1', b'2 uid-3', b'3 uid-4'], 'no QUIT, nothing deleted; '
            'added mail seen: %r' % p.uidl()[1])
    p.quit()
    t.check([u for u, _ in srv.mailbox()] == ['uid-1', 'uid-3', 'uid-4'], 'mailbox()')
    s = srv.sessions()
    t.check(len(s) == 3 and [x.n for x in s] == [1, 2, 3], 'three sessions')
    t.check(s[0].quit and s[0].update and s[0].deleted == ['uid-2'], 'session 1: %r' % s[0])
    t.check(s[0].retrieved == ['uid-1', 'uid-2', 'uid-3', 'uid-1', 'uid-1'], 'RETR/TOP recorded')
    t.check(s[0].verbs()[:4] == ['CAPA', 'STAT', 'USER', 'PASS'] and s[0].mechanism == 'USER'
            and s[0].user == 'alice', 'session 1 verbs %r' % s[0].verbs())
    t.check(s[0].commands[3] == 'PASS wrong', 'commands verbatim: %r' % s[0].commands[3])
    t.check(not s[1].quit and not s[1].update and s[1].deleted == [] and 'DELE' in s[1].verbs(),
            'session 2 ended without QUIT: %r' % s[1])
    t.check(all(x.login and x.opened <= x.login <= x.closed for x in s), 'login times')
    with open(srv.log_path) as f:
        log = f.read()
    t.check('PASS ***' in log and 'secret' not in log, 'passwords masked in the transcript')


def test_apop_auth_plain_and_in_use(t):
    srv = pop3script.Server(t, corpus()[:1], apop=True)
    p = poplib.POP3('127.0.0.1', srv.port, timeout=15)
    stamp = '<1.%d@pop3script.test>' % srv.port
    t.check(p.getwelcome() == b'+OK pop3script ready ' + stamp.encode(), 'APOP timestamp')
    try:
        p.apop('alice', 'wrong')
        t.check(False, 'APOP with a wrong secret accepted')
    except poplib.error_proto as e:
        t.check('[AUTH]' in str(e), 'APOP wrong secret: %s' % e)
    t.check(p.apop('alice', 'secret').startswith(b'+OK maildrop has 1'), 'APOP logs in')
    # a second login while the maildrop is locked
    q = poplib.POP3('127.0.0.1', srv.port, timeout=15)
    q.user('alice')
    try:
        q.pass_('secret')
        t.check(False, 'second concurrent login accepted')
    except poplib.error_proto as e:
        t.check(str(e) == "b'-ERR [IN-USE] maildrop locked'", 'IN-USE: %s' % e)
    p.quit()
    ir = base64.b64encode(b'\0alice\0secret').decode()
    t.check(cmd(q, 'AUTH PLAIN ' + ir).startswith('+OK maildrop'), 'AUTH PLAIN one line, '
            'after the lock is released')
    q.quit()
    r = poplib.POP3('127.0.0.1', srv.port, timeout=15)
    t.check(cmd(r, 'AUTH PLAIN') == '+ ', 'AUTH PLAIN two-step: "+ "')
    t.check(cmd(r, base64.b64encode(b'\0alice\0nope').decode()) == '-ERR [AUTH] invalid login',
            'AUTH PLAIN wrong password')
    t.check(cmd(r, 'AUTH CRAM-MD5').startswith('-ERR'), 'other mechanisms refused')
    t.check(cmd(r, 'AUTH PLAIN') == '+ ' and cmd(r, '*').startswith('-ERR'), '"*" cancels')
    t.check(cmd(r, 'AUTH PLAIN') == '+ ' and cmd(r, ir).startswith('+OK'), 'two-step logs in')
    r.quit()
    s = srv.sessions()
    t.check([x.mechanism for x in s] == ['APOP', 'PLAIN', 'PLAIN'],
            'mechanisms %r' % [x.mechanism for x in s])
    want = hashlib.md5((stamp + 'secret').encode()).hexdigest()
    t.check(s[0].commands[1] == 'APOP alice ' + want, 'APOP digest recorded')


def test_faults_per_session_and_argument(t):
    srv = pop3script.Server(t, corpus())
    srv.fault('UIDL', reply='-ERR [SYS/TEMP] try later', session=2)
    srv.fault('RETR', reply='-ERR [SYS/PERM] cannot read that one', arg='2')
    srv.fault('LOGIN', reply='-ERR [IN-USE] held by another client', session=3)
    srv.fault('PASS', reply='-ERR [LOGIN-DELAY] wait 600 seconds', session=(4, 5))
    srv.fault('GREETING', reply='-ERR [SYS/TEMP] overloaded', session=6)
    srv.fault('LIST', reply=['+OK 1 messages', '1 999999999', '.'], session=7)
    srv.fault('LOGIN', reply='-ERR [AUTH] token expired', session=8)
    for n in range(1, 9):
        try:
            p = poplib.POP3('127.0.0.1', srv.port, timeout=15)
        except poplib.error_proto as e:
            t.check(n == 6 and str(e) == "b'-ERR [SYS/TEMP] overloaded'", 'greeting %d: %s' % (n, e))
            continue
        p.user('alice')
        try:
            p.pass_('secret')
        except poplib.error_proto as e:
            want = {3: '[IN-USE]', 4: '[LOGIN-DELAY]', 5: '[LOGIN-DELAY]', 8: '[AUTH]'}
            t.check(want.get(n, '?') in str(e), 'login of session %d: %s' % (n, e))
            p.quit()
            continue
        t.check(n in (1, 2, 7), 'session %d logged in' % n)
        u = cmd(p, 'UIDL 1')
        t.check(u == ('-ERR [SYS/TEMP] try later' if n == 2 else '+OK 1 uid-1'),
                'UIDL in session %d: %s' % (n, u))
        t.check(p.retr(1)[0].startswith(b'+OK'), 'RETR 1 works')
        t.check(cmd(p, 'RETR 2') == '-ERR [SYS/PERM] cannot read that one', 'RETR 2 refused')
        if n == 7:
            t.check(p.list()[1] == [b'1 999999999'], 'multi-line reply override')
        p.quit()
    s = srv.sessions()
    t.check(len(s) == 8, '8 sessions: %d' % len(s))
    t.check([x.login is not None for x in s] == [True, True, False, False, False, False, True, False],
            'logins %r' % [x.login is not None for x in s])
    t.check(s[5].commands == [] and s[5].closed, 'a -ERR greeting closes the connection')
    t.check([x.retrieved for x in s if x.login] == [['uid-1']] * 3,
            'the refused RETR retrieved nothing')
    try:
        srv.fault('RETR', reply='-ERR', action='close')
        t.check(False, 'reply and action together accepted')
    except ValueError:
        pass


def test_bad_uidls_capa_pipelining_expire(t):
    uidls = ['good-1', 'has space', 'ctl\x7f', 'x' * 80, 'caf\xe9', 'dup', 'dup', 'good-2']
    box = [(u, h.make_message(i)) for i, u in enumerate(uidls)]
    capa = pop3script.DEFAULT_CAPA + ('LOGIN-DELAY 600', 'EXPIRE 0', 'UTF8', 'PIPELINING')
    srv = pop3script.Server(t, box, capa=capa)
    p = poplib.POP3('127.0.0.1', srv.port, timeout=15)
    c = p.capa()
    t.check(c.get('LOGIN-DELAY') == ['600'] and c.get('EXPIRE') == ['0'] and 'UTF8' in c
            and 'PIPELINING' in c, 'CAPA %r' % c)
    t.check(cmd(p, 'UTF8') == '+OK UTF8 enabled', 'UTF8 accepted when advertised')
    p.user('alice')
    p.pass_('secret')
    got = [l.split(b' ', 1)[1] for l in p.uidl()[1]]
    t.check(got == [u.encode('utf-8') for u in uidls], 'UIDLs sent as given: %r' % got)
    # pipelining: three commands in one write, three answers in order
    p.sock.sendall(b'STAT\r\nUIDL 6\r\nUIDL 7\r\n')
    answers = [p._getline()[0] for _ in range(3)]
    t.check(answers == [b'+OK 8 %d' % sum(len(h.canonical(b)) for _, b in box),
                        b'+OK 6 dup', b'+OK 7 dup'], 'pipelined: %r' % answers)
    # EXPIRE 0: what this session retrieves (RETR or TOP) goes at QUIT
    p.retr(1)
    p.top(7, 0)
    p.quit()
    s = srv.sessions()[0]
    t.check(s.deleted == ['good-1', 'dup'] and 'DELE' not in s.verbs(), 'EXPIRE 0: %r' % s)
    left = [u for u, _ in srv.mailbox()]
    t.check(left == uidls[1:6] + ['good-2'], 'the other "dup" stays: %r' % left)
    p = poplib.POP3('127.0.0.1', srv.port, timeout=15)
    t.check(cmd(p, 'UTF8') == '+OK UTF8 enabled', 'UTF8 before login')
    p.user('alice')
    p.pass_('secret')
    p.retr(1)
    hang_up(srv, p)          # no QUIT: EXPIRE does not apply either
    t.check(len(srv.mailbox()) == 6, 'no QUIT, nothing expired')
    # a server that advertises EXPIRE 0 but keeps mail, and one that says
    # nothing and expires anyway
    for expire, capa2, left in ((False, capa, 1), (True, pop3script.DEFAULT_CAPA, 0)):
        srv2 = pop3script.Server(t, box[:1], capa=capa2, expire_retrieved=expire,
                                 name='expire-%s' % expire)
        p = connect(srv2)
        p.retr(1)
        p.quit()
        t.check(len(srv2.mailbox()) == left, 'expire_retrieved=%s: %d left' % (expire, left))
    p = connect(srv2)
    t.check(cmd(p, 'UTF8').startswith('-ERR'), 'UTF8 refused when not advertised')
    p.quit()


def test_dribble_silence_close_reset(t):
    srv = pop3script.Server(t, corpus())
    srv.fault('RETR', action='dribble', session=1, interval=0.2)
    srv.fault('NOOP', action='silence', session=2)
    srv.fault('STAT', action='close', session=3)
    srv.fault('LIST', action='reset', session=4)
    srv.fault('DELE', action='close-after', session=5)
    srv.fault('GREETING', action='silence', session=6)
    # 1: dribble -- lines keep coming, about one per interval, never "."
    p = connect(srv)
    p._putcmd('RETR 1')
    t0 = time.monotonic()
    first = p._getline()[0]
    lines = [p._getline()[0] for _ in range(12)]
    took = time.monotonic() - t0
    t.check(first.startswith(b'+OK'), 'dribble starts with +OK: %r' % first)
    body = h.canonical(corpus()[0][1]).split(b'\r\n')
    t.check(lines[:3] == body[:3], 'the message comes first: %r' % lines[:3])
    t.check(b'.' not in lines and 2.0 < took < 6.0, '12 lines in %.1fs, no end' % took)
    t.check(hang_up(srv, p), 'the dribble notices the client leaving')
    # 2: silence -- no answer; what the client still sends is recorded
    p = connect(srv)
    p.sock.settimeout(1.0)
    p._putcmd('NOOP')
    try:
        p._getline()
        t.check(False, 'an answer in silence')
    except (socket.timeout, TimeoutError):
        pass
    p.sock.sendall(b'QUIT\r\n')
    time.sleep(0.3)
    hang_up(srv, p)
    # 3: close before answering
    p = connect(srv)
    p._putcmd('STAT')
    t.check(p.file.readline() == b'', 'STAT: connection closed, no answer')
    hang_up(srv, p)
    # 4: reset
    p = connect(srv)
    p._putcmd('LIST')
    try:
        data = p.sock.recv(100)
        t.check(False, 'LIST: got %r instead of a reset' % data)
    except ConnectionResetError:
        pass
    hang_up(srv, p)
    # 5: answered, then closed: no UPDATE
    p = connect(srv)
    t.check(p.dele(1) == b'+OK message 1 deleted', 'DELE answered')
    t.check(p.file.readline() == b'', 'then closed')
    hang_up(srv, p)
    # 6: silent greeting
    s6 = socket.create_connection(('127.0.0.1', srv.port), timeout=1.0)
    try:
        s6.recv(100)
        t.check(False, 'a greeting despite silence')
    except (socket.timeout, TimeoutError):
        pass
    s6.close()
    s = srv.sessions()
    t.check(len(s) == 6 and all(x.closed for x in s), 'six sessions, all closed')
    t.check(s[1].verbs() == ['USER', 'PASS', 'NOOP', 'QUIT'] and not s[1].quit,
            'QUIT sent into silence recorded, not handled: %r' % s[1].verbs())
    t.check(s[4].verbs()[-1] == 'DELE' and not s[4].update, 'close-after: %r' % s[4])
    t.check(len(srv.mailbox()) == 3, 'nothing deleted')


def test_tls_and_stls(t):
    c = h.default_certs()
    ctx = ssl.create_default_context(cafile=c.ca_file)
    srv = pop3script.Server(t, corpus(), tls=True)
    p = poplib.POP3_SSL('localhost', srv.port, context=ctx, timeout=15)
    p.user('alice')
    p.pass_('secret')
    t.check(p.stat()[0] == 3 and 'STLS' not in p.capa(), 'implicit TLS, verified')
    p.quit()
    try:
        poplib.POP3_SSL('localhost', srv.port, context=ssl.create_default_context(), timeout=15)
        t.check(False, 'system trust store accepted the test certificate')
    except ssl.SSLCertVerificationError:
        pass
    srv2 = pop3script.Server(t, corpus(), stls=True, name='stls')
    p = poplib.POP3('127.0.0.1', srv2.port, timeout=15)
    t.check('STLS' in p.capa(), 'STLS advertised before TLS')
    p.stls(ctx)
    t.check('STLS' not in p.capa(), 'and not after')
    p.user('alice')
    p.pass_('secret')
    t.check(p.stat()[0] == 3, 'login over STLS')
    p.quit()
    t.check([x.tls for x in srv.sessions()] == [True, True], 'implicit sessions are TLS')
    t.check([x.tls for x in srv2.sessions()] == [True], 'STLS session is TLS')


def test_stop_ends_every_session(t):
    before = threading.active_count()
    srv = pop3script.Server(t, corpus())
    srv.fault('RETR', action='dribble', interval=0.1)
    srv.fault('NOOP', action='silence')
    a = connect(srv)
    a._putcmd('RETR 2')
    a._getline()
    b = connect(srv, user=None)
    b._putcmd('NOOP')
    c = socket.create_connection(('127.0.0.1', srv.port))     # idle after the greeting
    h.wait_for(lambda: len(srv.sessions(wait=0)) == 3, 5, what='three sessions')
    t0 = time.monotonic()
    srv.stop()
    t.check(time.monotonic() - t0 < 3, 'stop() is quick: %.1fs' % (time.monotonic() - t0))
    t.check(not h.port_open(srv.port), 'port closed')
    t.check(all(x.closed for x in srv.sessions(wait=0)), 'every session closed')
    t.check(threading.active_count() == before, 'threads gone: %d, were %d'
            % (threading.active_count(), before))
    for x in (a.sock, b.sock, c):
        x.close()
    srv.stop()  # again (t's cleanup does it too): harmless


if __name__ == '__main__':
    h.main()
