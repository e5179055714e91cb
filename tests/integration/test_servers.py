#!/usr/bin/python3
"""Smoke tests of the fixtures for servers other than Dovecot (courier.py,
mailutils.py, isolated.py): they start, serve what the issue-8 tests rely
on, and leave nothing behind. They run no pop3bridge, so they run once."""

import imaplib
import os
import poplib
import re
import signal
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import courier  # noqa: E402
import isolated  # noqa: E402
import mailutils  # noqa: E402

ASAN = False  # does not run pop3bridge: one run is enough

MU_USER = 'test@example.com'

# raw UTF-8 in From and Subject: what Courier hides from non-UTF8 clients
EIGHT_BIT = harness.make_message(
    2, subject='Gr\u00fc\u00dfe \u2013 \u65e5\u672c\u8a9e', sender='J\u00fcrgen <j@example.org>',
    body='Gr\u00fc\u00dfe aus M\u00fcnchen\r\n'.encode(),
    extra_headers=[('MIME-Version', '1.0'), ('Content-Type', 'text/plain; charset=utf-8'),
                   ('Content-Transfer-Encoding', '8bit')])


def retr_all(p):
    """Every message of a logged-in poplib client, as RETR returns it."""
    return [b''.join(l + b'\r\n' for l in p.retr(k)[1]) for k in range(1, p.stat()[0] + 1)]


def login(server, user, password, utf8=False):
    """A logged-in poplib client on the plain port; utf8: send UTF8 first."""
    p = poplib.POP3('127.0.0.1', server.ports['pop3'], timeout=30)
    if utf8:
        resp = p._shortcmd('UTF8')
        if not resp.startswith(b'+OK'):
            raise RuntimeError('UTF8: %r' % resp)
    p.user(user)
    p.pass_(password)
    return p


def uidls(p):
    return [l.split()[1].decode() for l in p.uidl()[1]]


# ---------------------------------------------------------------- Courier

def test_courier_pop3_utf8(t):
    users = {'alice': 'secret', 'bob': 'pw-bob', 'carol': 'pw-carol'}
    c = courier.for_test(t, users=users)
    print('  courier started in %.2fs' % c.start_seconds)
    ascii_msg = harness.make_message(1)
    c.seed('alice', [ascii_msg, EIGHT_BIT])

    p = login(c, 'alice', 'secret')
    capa = p.capa()
    t.check(capa.get('UTF8') == ['USER'], 'CAPA: UTF8 USER: %s' % capa)
    t.check(capa.get('LOGIN-DELAY') == ['10'], 'CAPA: LOGIN-DELAY 10 (compiled in): %s' % capa)
    got = retr_all(p)
    p.quit()
    t.check(got[0] == c.view(ascii_msg), 'ASCII message as is without UTF8')
    t.check(got[1] != c.view(EIGHT_BIT), '8-bit headers: not the message without UTF8')
    t.check(harness.header(got[1], 'Subject') == 'Cannot display Unicode content',
            'replaced by the notice: %r' % got[1][:300])
    t.check(b'Content-Type: message/global' in got[1], 'original attached as message/global')

    p = login(c, 'alice', 'secret', utf8=True)
    got = retr_all(p)
    p.quit()
    t.check(got == [c.view(ascii_msg), c.view(EIGHT_BIT)],
            'with UTF8 sent first: the original bytes: %r' % got[1][:300])
    p = login(c, 'alice', 'secret')
    t.check(p._shortcmd('UTF8').startswith(b'+OK'), 'UTF8 accepted after login too')
    t.check(retr_all(p)[1] == c.view(EIGHT_BIT), 'and then RETR is exact')
    p.quit()

    # every kind of message of the corpus, byte for byte (with UTF8)
    corpus = harness.make_corpus(18, seed=3)
    c.seed('bob', corpus)
    p = login(c, 'bob', 'pw-bob', utf8=True)
    got = retr_all(p)
    p.quit()
    bad = [i for i, (m, g) in enumerate(zip(corpus, got)) if c.view(m) != g]
    t.check(len(got) == 18 and not bad, 'RETR returns view(seeded); bad: %s' % bad)

    # why seed() writes LF: Courier adds a CR to every LF it sends
    harness.seed(c.maildir('carol'), None, [ascii_msg])
    p = login(c, 'carol', 'pw-carol')
    got = retr_all(p)
    p.quit()
    t.check(got[0].count(b'\r\r\n') == ascii_msg.count(b'\r\n'),
            'a CRLF file is sent with CR CR LF: %r' % got[0][:100])

    ctx = ssl.create_default_context(cafile=c.ca_file)
    t.check(harness.pop3_stat(c, 'alice', 'secret', tls=True)[0] == 2, 'POP3S with the test CA')
    p = poplib.POP3('localhost', c.ports['pop3'], timeout=30)
    t.check('STLS' in p.capa(), 'STLS offered on the plain port')
    p.stls(ctx)
    p.user('alice')
    p.pass_('secret')
    t.check(p.stat()[0] == 2, 'STLS, then login')
    p.quit()

    t.check(not os.path.exists('/etc/courier/cert.pem') and
            not os.path.exists('/run/courier/authdaemon/socket'),
            "the real /etc/courier and /run/courier are not Courier's")


def test_courier_imap_namespace(t):
    c = courier.for_test(t)
    seeded = harness.make_message(1)
    c.seed('alice', [seeded])
    m = harness.imap_connect(c)
    try:
        typ, data = m.namespace()
        t.check(typ == 'OK' and data[0].startswith(b'(("INBOX." ".")) '),
                'personal namespace "INBOX." with delimiter ".": %r' % data)
        typ, data = m.create('Foo')
        t.check(typ == 'NO' and b'Invalid mailbox name' in data[0],
                'CREATE "Foo" refused: %s %r' % (typ, data))
        typ, data = m.create('INBOX.Foo')
        t.check(typ == 'OK', 'CREATE "INBOX.Foo": %s %r' % (typ, data))
        typ, data = m.append('INBOX.Foo', None, None, EIGHT_BIT)
        t.check(typ == 'OK' and b'APPENDUID' in data[0], 'APPEND: %s %r' % (typ, data))
        typ, data = m.select('INBOX.Foo', readonly=True)
        typ, data = m.fetch('1', '(BODY.PEEK[])')
        t.check(typ == 'OK' and data[0][1] == EIGHT_BIT, 'FETCH returns what was appended')
    finally:
        m.logout()
    files = harness.maildir_files(c.maildir('alice'), '.Foo')
    body = open(files[0], 'rb').read() if len(files) == 1 else None
    t.check(body == courier.lf_lines(EIGHT_BIT), 'stored as Maildir++ .Foo, with LF: %r'
            % (body or b'')[:100])
    t.check(harness.imap_list(c) == ['INBOX', 'INBOX/Foo'], 'LIST: %s' % harness.imap_list(c))
    t.check(harness.imap_count(c, folder='INBOX/Foo') == 1, 'harness helpers: INBOX/Foo')
    got = harness.imap_fetch_all(c)
    t.check(len(got) == 1 and got[0]['body'] == c.view(seeded), 'FETCH of a seeded message')

    m = harness.imap_connect(c, tls=True)
    m.logout()
    m = imaplib.IMAP4('localhost', c.ports['imap'], timeout=30)
    t.check('STARTTLS' in m.capabilities, 'STARTTLS offered: %s' % (m.capabilities,))
    m.starttls(ssl.create_default_context(cafile=c.ca_file))
    t.check(m.login('alice', 'secret')[0] == 'OK', 'STARTTLS, then LOGIN')
    m.logout()


# ---------------------------------------------------------------- Mailutils

def test_mailutils_expire_and_apop(t):
    mu = mailutils.for_test(t)
    print('  mailutils started in %.2fs' % mu.start_seconds)
    msgs = [harness.make_message(i) for i in range(1, 7)]
    mu.seed(MU_USER, msgs)

    p = poplib.POP3('127.0.0.1', mu.ports['pop3'], timeout=30)
    t.check(re.search(rb'<[^<>@]+@[^<>]+>$', p.getwelcome()),
            'APOP timestamp in the greeting: %r' % p.getwelcome())
    capa = p.capa()
    t.check('EXPIRE0' in capa and 'EXPIRE' not in capa, 'malformed CAPA line EXPIRE0: %s' % capa)
    try:
        p.apop(MU_USER, 'secret')
        t.check(False, 'APOP accepted')
    except poplib.error_proto as e:
        t.check(e.args[0] == b'-ERR [AUTH] Bad login', 'APOP refused: %r' % e.args[0])
    p.user(MU_USER)
    t.check(p.pass_('secret').startswith(b'+OK'), 'USER/PASS after the refused APOP')
    sizes = [int(l.split()[1]) for l in p.list()[1]]
    t.check(sizes == [len(harness.canonical(m)) for m in msgs], 'LIST before UIDL: %s' % sizes)
    first = uidls(p)
    t.check(len(first) == 6 and len(set(first)) == 6, 'UIDL: %s' % first)
    size = int(p.list(1).split()[2])
    got = b''.join(l + b'\r\n' for l in p.retr(1)[1])
    t.check(got == mu.view(msgs[0], first[0]), 'RETR 1 = view(): X-UIDL added: %r' % got[-200:])
    t.check(size == len(got), 'LIST after UIDL counts X-UIDL: %d' % size)
    p.quit()

    p = login(mu, MU_USER, 'secret')
    t.check(uidls(p) == first[1:], 'EXPIRE 0: message 1 gone after RETR and QUIT')
    p.retr(1)
    p.close()  # no QUIT: no UPDATE state
    p = login(mu, MU_USER, 'secret')
    t.check(uidls(p) == first[1:], 'RETR without QUIT deletes nothing')
    p.top(1, 0)
    p.retr(2)
    p.rset()
    p.quit()
    p = login(mu, MU_USER, 'secret')
    t.check(uidls(p) == first[3:], 'TOP counts as retrieved, RSET does not help: %s' % uidls(p))
    p.quit()

    # the same server without `expire`: retrieved messages stay
    keep = mailutils.for_test(t, 'keep', expire=None)
    keep.seed(MU_USER, msgs[:2])
    p = login(keep, MU_USER, 'secret')
    t.check('EXPIRE0' not in p.capa(), 'no EXPIRE0 without expire')
    retr_all(p)
    p.quit()
    t.check(harness.pop3_stat(keep, MU_USER, 'secret')[0] == 2, 'expire=None: nothing deleted')


def test_mailutils_uidl_and_corpus(t):
    mu = mailutils.for_test(t, expire=None)
    given = harness.make_message(1, extra_headers=[('X-UIDL', 'given-uidl-1')])
    corpus = harness.make_corpus(18, seed=4)
    mu.seed(MU_USER, [given] + corpus)
    p = login(mu, MU_USER, 'secret')
    ids = uidls(p)
    got = retr_all(p)
    p.quit()
    t.check(ids[0] == 'given-uidl-1', 'an X-UIDL header is the UIDL: %s' % ids[0])
    t.check(got[0] == harness.pop3_view(given), 'and the message is sent unchanged')
    bad = [i for i, (m, u, g) in enumerate(zip(corpus, ids[1:], got[1:]))
           if mu.view(m, u) != g]
    t.check(len(got) == 19 and not bad, 'RETR returns view(seeded, uidl); bad: %s' % bad)


def test_mailutils_login_delay(t):
    mu = mailutils.for_test(t, login_delay=600)
    p = poplib.POP3('127.0.0.1', mu.ports['pop3'], timeout=30)
    capa = p.capa()
    t.check('600' in capa and 'EXPIRE0' in capa and 'LOGIN-DELAY' not in capa,
            'malformed CAPA lines 600 and EXPIRE0: %s' % capa)
    p.user(MU_USER)
    t.check(p.pass_('secret').startswith(b'+OK'), 'first login')
    p.quit()
    p = poplib.POP3('127.0.0.1', mu.ports['pop3'], timeout=30)
    t.check('600' in p.capa(), 'still announced after a login')
    p.user(MU_USER)
    try:
        p.pass_('secret')
        t.check(False, 'second login within 600 s accepted')
    except poplib.error_proto as e:
        t.check(e.args[0].startswith(b'-ERR [LOGIN-DELAY]'), 'refused: %r' % e.args[0])
    p.quit()


# ---------------------------------------------------------------- cleanup

_SAMPLE = '''import sys, time
sys.path.insert(0, %(here)r)
import harness, courier, mailutils

sessions = []

def start(t):
    c = courier.for_test(t)
    m = mailutils.for_test(t)
    # an open session each: processes beyond the daemons. Kept referenced:
    # CPython drops an exception raised in a file object's finalizer, so a
    # SIGTERM arriving while a dropped poplib client is collected is lost.
    sessions.append(harness.pop3_connect(c))
    sessions.append(harness.pop3_connect(m, 'test@example.com', 'secret'))
    print('TMP %%s' %% t.tmp)
    print('PIDS %%s' %% ' '.join(map(str, c.members() + m.members())))
    print('PORTS %%s' %% ' '.join(map(str, list(c.ports.values()) + list(m.ports.values()))),
          flush=True)

def test_fails(t):
    start(t)
    t.fail('on purpose')

def test_killed(t):
    start(t)
    for _ in range(1200):  # short sleeps: a signal just before one is seen at once
        time.sleep(0.1)

if __name__ == '__main__':
    harness.main()
'''


def _alive(pids):
    out = []
    for pid in pids:
        try:
            with open('/proc/%d/stat' % pid, 'rb') as f:
                if f.read().rsplit(b')', 1)[1].split()[0] not in (b'Z', b'X'):
                    out.append(pid)
        except OSError:
            pass
    return out


def _started(lines):
    pids = ports = []
    for l in lines:
        if l.startswith('PIDS '):
            pids = [int(x) for x in l.split()[1:]]
        elif l.startswith('PORTS '):
            ports = [int(x) for x in l.split()[1:]]
    return pids, ports


def test_stopped_when_a_test_fails_or_is_killed(t):
    why = isolated.can_isolate()
    if why:
        t.skip(why)
    mod = t.path('test_sample.py')
    with open(mod, 'w') as f:
        f.write(_SAMPLE % {'here': os.path.dirname(os.path.abspath(__file__))})

    def check_gone(what, lines, wait=0):
        pids, ports = _started(lines)
        t.check(len(pids) >= 6, '%s: the servers ran (%s)' % (what, pids))
        if wait:
            try:
                harness.wait_for(lambda: not _alive(pids), wait, what='processes gone')
            except TimeoutError:
                pass
        t.check(_alive(pids) == [], '%s: no process left: %s' % (what, _alive(pids)))
        t.check(ports and not any(harness.port_open(p) for p in ports), '%s: ports closed' % what)
        for k in [l.split()[-1] for l in lines if l.startswith(('  kept ', 'TMP '))]:
            subprocess.run(['rm', '-rf', k])

    p = subprocess.run(['/usr/bin/python3', mod, 'test_fails'], capture_output=True, text=True,
                       timeout=120)
    lines = p.stdout.splitlines()
    t.check('FAIL test_fails: on purpose' in lines, 'the sample failed: %s' % p.stdout[-2000:])
    check_gone('failed test', lines)

    # tests/run's timeout sends SIGTERM, and SIGKILL 10 s later
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(['/usr/bin/python3', mod, 'test_killed'],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line.rstrip('\n'))
                if line.startswith('PORTS '):
                    proc.send_signal(sig)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if sig == signal.SIGTERM:
            t.check('FAIL test_killed: interrupted' in lines, 'interrupted: %s' % lines[-20:])
        check_gone(sig.name, lines, wait=5 if sig == signal.SIGKILL else 0)


if __name__ == '__main__':
    harness.main()
