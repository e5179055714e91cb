#!/usr/bin/python3
"""pop3bridge against real POP3 servers besides Dovecot (the fixtures of
courier.py and mailutils.py): Courier pop3d, which mangles messages with
raw 8-bit headers unless the client says UTF8 and announces LOGIN-DELAY
10; GNU Mailutils pop3d, with an APOP timestamp but no APOP secret, EXPIRE
0 enforced, a malformed CAPA ("600", "EXPIRE0") and LOGIN-DELAY enforced.
Bodies are compared by hash with what the server sends."""

import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import courier  # noqa: E402
import imapstore as ist  # noqa: E402
import mailutils  # noqa: E402

TIMEOUT = 300
MU_USER = 'test@example.com'


def config(t, accounts, extra='', name='p3b.conf'):
    return h.write_config(t.path(name), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), accounts, extra))


def sync(t, conf, expect=0):
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == expect, 'sync exited %d, expected %d: %s'
            % (p.returncode, expect, p.stderr.strip()[-800:]))
    return p


def status(t, conf, name='acct'):
    p = t.run_bridge(conf, 'status', '--json')
    t.require(p.returncode == 0, 'status --json: %s' % p.stderr)
    return {a['name']: a for a in json.loads(p.stdout)['accounts']}[name]


def sha(b):
    return hashlib.sha256(b).hexdigest()


def stored(t, user='alice'):
    """The message files of the destination Maildir INBOX (bytes)."""
    out = []
    for f in h.maildir_files(t.path('dest', user, 'Maildir')):
        with open(f, 'rb') as fh:
            out.append(fh.read())
    return out


def as_maildir(retr):
    """What pop3bridge writes into a Maildir for RETR bytes: CRLF made LF."""
    return retr.replace(b'\r\n', b'\n')


def eight_bit(i):
    """A message with raw UTF-8 in its header (what Courier hides from a
    client that does not say UTF8)."""
    names = ['J\u00fcrgen M\u00fcller', '\u00c9lodie Fran\u00e7ois', '\u5c71\u7530 \u592a\u90ce',
             '\u0417\u043e\u044f \u0418\u0432\u0430\u043d\u043e\u0432\u0430']
    return h.make_message(
        200 + i, subject='Gr\u00fc\u00dfe %d \u2013 \u65e5\u672c\u8a9e' % i,
        sender='%s <u%d@example.org>' % (names[i % 4], i),
        body=('Gr\u00fc\u00dfe aus M\u00fcnchen %d\r\n' % i).encode(), tag='8bit',
        extra_headers=[('MIME-Version', '1.0'), ('Content-Type', 'text/plain; charset=utf-8'),
                       ('Content-Transfer-Encoding', '8bit')])


# ---------------------------------------------------------------- Courier

def test_courier_utf8_import_is_exact(t):
    """60 messages, 12 of them with raw 8-bit headers, from Courier pop3d
    over POP3S: pop3bridge sends UTF8 before any retrieval, so every
    stored message is exactly what was seeded (not Courier's "Cannot
    display Unicode content" notice). Courier's LOGIN-DELAY 10 is honoured:
    a pass within 10 s of the last login does not log in."""
    c = courier.for_test(t)
    msgs = h.make_corpus(48, seed=8) + [eight_bit(i) for i in range(12)]
    c.seed('alice', msgs)
    conf = config(t, [h.account_block('acct', c, tls='implicit')])
    p = sync(t, conf)
    t.check('60 imported' in p.stderr, '60 imported: %s' % p.stderr)
    got = sorted(sha(f) for f in stored(t))
    want = sorted(sha(as_maildir(c.view(m))) for m in msgs)
    t.check(len(got) == 60 and got == want, 'every body byte-exact (%d of 60 match)'
            % len(set(got) & set(want)))
    notice = [f for f in stored(t) if b'Cannot display Unicode content' in f]
    t.check(not notice, '%d messages replaced by the notice' % len(notice))
    st = status(t, conf)
    t.check(st['login_delay'] == 10, 'LOGIN-DELAY 10 recorded: %r' % st)
    p = sync(t, conf, 75)
    t.check('not polled' in p.stderr, 'a pass within 10 s does not log in: %s' % p.stderr)
    time.sleep(11)
    p = sync(t, conf)
    t.check('0 new, 0 imported' in p.stderr, 'after the delay: a pass, nothing new: %s'
            % p.stderr)
    t.check(len(stored(t)) == 60, 'nothing imported twice: %d' % len(stored(t)))


# ---------------------------------------------------------------- Mailutils

def test_mailutils_auto_auth_and_expire0(t):
    """GNU Mailutils pop3d with auth = "auto": its greeting has an APOP
    timestamp but APOP is refused; USER/PASS logs in and all 20 messages
    are imported. Its EXPIRE 0 (malformed "EXPIRE0") deletes all 20 at
    QUIT although leave_on_server = true: the pass reports the 20
    server-side deletions, the rows are marked deleted, status warns."""
    mu = mailutils.for_test(t)
    msgs = [h.make_message(i, tag='mu') for i in range(20)]
    mu.seed(MU_USER, msgs)
    conf = config(t, [h.account_block('acct', mu, user=MU_USER, tls='none')])
    p = sync(t, conf)
    t.check('20 imported' in p.stderr, 'all 20 imported: %s' % p.stderr)
    t.check('logged in with USER after APOP: -ERR [AUTH] Bad login' in p.stderr,
            'the log says APOP was refused and USER logged in: %s' % p.stderr)
    t.check('20 deleted by the server (EXPIRE 0)' in p.stderr, 'server deletions stated: %s'
            % p.stderr)
    files = stored(t)
    # RETR after UIDL carries an X-UIDL line (mailutils.py): compare with that view
    want = sorted(sha(as_maildir(mu.view(m, h.header(f, 'X-UIDL'))))
                  for m, f in zip(sorted(msgs, key=lambda m: h.header(m, 'Message-ID')),
                                  sorted(files, key=lambda f: h.header(f, 'Message-ID'))))
    t.check(sorted(sha(f) for f in files) == want and len(files) == 20,
            'the 20 bodies as the server sent them')
    t.check(h.pop3_stat(mu, MU_USER, 'secret')[0] == 0, 'the server deleted them (EXPIRE 0)')
    st = status(t, conf)
    t.check(st['last_auth'] == 'USER' and st['server_expire'] == 0 and st['on_server'] == 0
            and st['last_server_deleted'] == 20, 'status: %r' % st)
    t.check(st['expire_warning'] and 'EXPIRE 0' in st['expire_warning'] and
            'leave_on_server' in st['expire_warning'], 'EXPIRE contradicts the policy: %r'
            % st['expire_warning'])


def test_mailutils_expire0_keeps_a_refused_message(t):
    """EXPIRE 0 and the IMAP store refuses one message (over its size
    limit): the session ends without QUIT, so Mailutils deletes nothing:
    the refused message is still on the server, the others are stored;
    the next pass retrieves only it, and still keeps it."""
    quota = ('mail_plugins = $mail_plugins quota\n'
             'plugin {\n  quota = count:User quota\n  quota_vsizes = yes\n'
             '  quota_max_mail_size = 100k\n}\n')
    store = ist.dovecot_store(t, extra=quota)
    mu = mailutils.for_test(t)
    msgs = [h.make_message(i, tag='mu') for i in range(5)]
    big = h.make_message(99, size=300 * 1024, tag='big')
    mu.seed(MU_USER, msgs[:2] + [big] + msgs[2:])
    acct = h.account_block('acct', mu, user=MU_USER, tls='none', local_user='alice', auth='user')
    conf = ist.config(t, store, [acct])
    for attempt in (1, 2):
        p = t.run_bridge(conf, 'sync')
        t.check(p.returncode == 65, 'pass %d: 65: %d %s' % (attempt, p.returncode, p.stderr))
        t.check('without QUIT' in p.stderr and 'EXPIRE 0' in p.stderr, 'says why: %s' % p.stderr)
        n = h.pop3_stat(mu, MU_USER, 'secret')[0]
        t.check(n == 6, 'pass %d: all 6 still on the server: %d' % (attempt, n))
    got = sorted(h.header(f['body'], 'Subject') for f in h.imap_fetch_all(store))
    t.check(got == sorted('Test message %d' % i for i in range(5)), 'the 5 others stored: %r'
            % got)
    # (retrieving them here ends this check: EXPIRE 0 deletes them at QUIT)
    subjects = [h.header(l, 'Subject') for l in h.pop3_retr_all(mu, MU_USER, 'secret')]
    t.check(h.header(big, 'Subject') in subjects, 'the refused one is still there: %r' % subjects)


def test_mailutils_login_delay_and_malformed_capa(t):
    """Mailutils' CAPA lines "600" and "EXPIRE0" are read as LOGIN-DELAY
    600 and EXPIRE 0: the next `sync` does not log in (Mailutils would
    refuse it with [LOGIN-DELAY]), status shows both."""
    mu = mailutils.for_test(t, login_delay=600, expire=None)
    mu.seed(MU_USER, [h.make_message(i, tag='ld') for i in range(3)])
    conf = config(t, [h.account_block('acct', mu, user=MU_USER, tls='none', auth='user')])
    p = sync(t, conf)
    t.check('3 imported' in p.stderr, 'imported: %s' % p.stderr)
    st = status(t, conf)
    t.check(st['login_delay'] == 600 and st['server_expire'] is None, 'status: %r' % st)
    p = sync(t, conf, 75)
    t.check('not polled' in p.stderr and 'LOGIN-DELAY' in p.stderr, 'no login: %s' % p.stderr)
    # expire 0 as "EXPIRE0"
    mu0 = mailutils.for_test(t, 'expire0')
    mu0.seed(MU_USER, [h.make_message(7, tag='e0')])
    conf0 = h.write_config(t.path('p3b0.conf'), h.config_text(
        t.path('state0'), t.path('dest0', '%u', 'Maildir'),
        [h.account_block('acct', mu0, user=MU_USER, tls='none', auth='user')]))
    p = t.run_bridge(conf0, 'sync')
    t.check(p.returncode == 0 and '1 deleted by the server (EXPIRE 0)' in p.stderr,
            '"EXPIRE0" read as EXPIRE 0: %s' % p.stderr)


if __name__ == '__main__':
    h.main()
