#!/usr/bin/python3
"""POP3 server behaviour no packaged server produces, against the scripted
server (pop3script.py): UIDL refused for a moment, a server that stops
giving UIDLs, invalid and duplicate UIDLs, RETR refused or over its bound,
max_message_size, EXPIRE 0 (server-side deletions, no QUIT when something
retrieved is not stored), LOGIN-DELAY and [IN-USE] honoured by `sync` and
`run`, auth = "auto" falling back, UTF8 and LANG sent before any
retrieval.

Every message is compared by hash with what the server holds; the
sessions the server recorded say which commands pop3bridge sent."""

import calendar
import hashlib
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import imapstore as ist  # noqa: E402
import pop3script  # noqa: E402

TIMEOUT = 300
NO_SASL = tuple(c for c in pop3script.DEFAULT_CAPA if not c.startswith('SASL'))


def block(srv, name='acct', extra='', **pop3):
    """An account block fetching from the scripted server (plain POP3 on
    loopback, USER alice)."""
    lines = ['host = "127.0.0.1"', 'port = %d' % srv.port, 'tls = "none"',
             'allow_plaintext = true', 'user = %s' % h.cq(srv.user),
             'password = %s' % h.cq(srv.password), 'timeout = 20']
    for k, v in pop3.items():
        lines.append('%s = %s' % (k, h.cq(v) if isinstance(v, str) else v))
    return ('account %s {\n  local_user = "alice"\n  pop3 {\n    %s\n  }\n%s}\n'
            % (h.cq(name), '\n    '.join(lines), ('  ' + extra.strip() + '\n') if extra else ''))


def config(t, accounts, extra='', name='p3b.conf', state='state', dest='dest'):
    return h.write_config(t.path(name), h.config_text(
        t.path(state), t.path(dest, '%u', 'Maildir'), accounts, extra))


def sync(t, conf, expect=0, *accounts):
    p = t.run_bridge(conf, 'sync', *accounts)
    t.check(p.returncode == expect, 'sync exited %d, expected %d: %s'
            % (p.returncode, expect, p.stderr.strip()[-800:]))
    return p


def status(t, conf, name='acct'):
    p = t.run_bridge(conf, 'status', '--json')
    t.require(p.returncode == 0, 'status --json: %s' % p.stderr)
    return {a['name']: a for a in json.loads(p.stdout)['accounts']}[name]


def stored(t, dest='dest'):
    """sha256 of every message in the destination Maildir INBOX, as CRLF."""
    out = []
    for f in h.maildir_files(t.path(dest, 'alice', 'Maildir')):
        with open(f, 'rb') as fh:
            out.append(hashlib.sha256(h.canonical(fh.read())).hexdigest())
    return sorted(out)


def hashes(bodies):
    return sorted(hashlib.sha256(h.canonical(b)).hexdigest() for b in bodies)


def mailbox(n, seed=0, tag='m'):
    return [('uid-%s-%03d' % (tag, i), h.make_message(i, tag='%s%d' % (tag, seed)))
            for i in range(n)]


def retr_verbs(session):
    return [c for c in session.commands if c.split(' ', 1)[0].upper() in ('RETR', 'TOP')]


# ---------------------------------------------------------------- UIDL

def test_uidl_refused_for_a_moment(t):
    """UIDL -ERR [SYS/TEMP] on the second pass, from a server whose CAPA
    announces UIDL: a temporary failure, nothing retrieved or imported
    again; the next pass is normal."""
    box = mailbox(20)
    srv = pop3script.Server(t, box)
    srv.fault('UIDL', reply='-ERR [SYS/TEMP] index being rebuilt', session=2)
    conf = config(t, [block(srv)])
    sync(t, conf)
    t.check(stored(t) == hashes(b for _, b in box), '20 imported, byte-exact')
    p = sync(t, conf, 75)
    t.check('UIDL refused' in p.stderr and 'acct:' in p.stderr, 'says why: %s' % p.stderr)
    t.check(stored(t) == hashes(b for _, b in box), 'nothing imported a second time: %d files'
            % len(stored(t)))
    s2 = srv.sessions()[1]
    t.check(not retr_verbs(s2), 'session 2 retrieved nothing: %r' % s2.verbs())
    p = sync(t, conf)
    t.check('0 new, 0 imported' in p.stderr, 'third pass: nothing new: %s' % p.stderr)
    st = status(t, conf)
    t.check(st['imported'] == 20 and st['no_uidl'] is False, 'status: %r' % st)


def test_uidl_refused_by_a_server_without_capa(t):
    """A server that answers no CAPA (so says nothing about UIDL) refuses
    UIDL for an account whose messages are known by UIDL: temporary (75),
    nothing imported again."""
    box = mailbox(6)
    srv = pop3script.Server(t, box)
    srv.fault('CAPA', reply='-ERR unknown command')
    srv.fault('UIDL', reply='-ERR try again later', session=2)
    conf = config(t, [block(srv)])
    sync(t, conf)
    p = sync(t, conf, 75)
    t.check('UIDL refused' in p.stderr, 'says why: %s' % p.stderr)
    t.check(len(stored(t)) == 6, '6 stored, not 12: %d' % len(stored(t)))
    t.check(not retr_verbs(srv.sessions()[1]), 'session 2 retrieved nothing')


def test_server_stops_offering_uidl(t):
    """A server that no longer announces UIDL (and refuses it): ids come
    from fingerprints, which adopt the known rows: nothing is imported
    again, new mail is. When UIDL comes back, the guard adopts again."""
    box = mailbox(20)
    srv = pop3script.Server(t, box)
    conf = config(t, [block(srv)])
    sync(t, conf)
    srv.capa = tuple(c for c in srv.capa if c != 'UIDL')
    srv.fault('UIDL', reply='-ERR command not supported', session=(2, 3))
    p = sync(t, conf)
    t.check('0 imported' in p.stderr and 'adopted' in p.stderr,
            'no UIDL any more: nothing re-imported, rows adopted: %s' % p.stderr)
    t.check(len(stored(t)) == 20, 'still 20 stored: %d' % len(stored(t)))
    extra = h.make_message(50, tag='late')
    srv.add('uid-late', extra)
    p = sync(t, conf)
    t.check('1 new, 1 imported' in p.stderr, 'new mail still comes: %s' % p.stderr)
    t.check(stored(t) == hashes([b for _, b in box] + [extra]), '21 stored, byte-exact')
    t.check(status(t, conf)['no_uidl'] is True, 'status says no UIDL')
    srv.capa = pop3script.DEFAULT_CAPA
    p = sync(t, conf)
    t.check('0 imported' in p.stderr, 'UIDL back: nothing re-imported: %s' % p.stderr)
    t.check(len(stored(t)) == 21, 'still 21 stored: %d' % len(stored(t)))


def test_invalid_and_duplicate_uidls(t):
    """One invalid UIDL and one duplicate among 20 good: the two messages
    sharing a UIDL and the invalid one are identified by their fingerprint
    and imported (20 + 2), the listing is not refused; the next pass
    imports nothing. A UIDL that later repeats a known one keeps the known
    message (adopted by fingerprint) and imports only the newcomer."""
    box = mailbox(20)
    invalid = ('bad uid\x7f', h.make_message(90, tag='inv'))
    dup = (box[4][0], h.make_message(91, tag='dup'))
    srv = pop3script.Server(t, box + [invalid, dup])
    conf = config(t, [block(srv)])
    p = sync(t, conf)
    t.check('22 imported' in p.stderr, '22 imported: %s' % p.stderr)
    t.check(stored(t) == hashes([b for _, b in box] + [invalid[1], dup[1]]),
            'all 22 byte-exact, once each')
    t.check(re.search(r'message 21 has an invalid UIDL', p.stderr) and
            re.search(r'message 5 shares its UIDL', p.stderr) and
            re.search(r'message 22 shares its UIDL', p.stderr), 'each one named: %s' % p.stderr)
    p = sync(t, conf)
    t.check('0 new, 0 imported' in p.stderr, 'second pass: nothing new: %s' % p.stderr)
    # a fresh server whose mail was imported, then a newcomer repeats a UIDL
    srv2 = pop3script.Server(t, box, name='second')
    conf2 = config(t, [block(srv2)], name='p3b-2.conf', state='state2', dest='dest2')
    sync(t, conf2)
    late = h.make_message(92, tag='dup2')
    srv2.add(box[7][0], late)
    p = sync(t, conf2)
    t.check('1 new, 1 imported' in p.stderr and 'adopted' in p.stderr,
            'only the newcomer imported, the known one adopted: %s' % p.stderr)
    t.check(stored(t, 'dest2') == hashes([b for _, b in box] + [late]),
            '21 stored, the known one not twice')


# ---------------------------------------------------------------- skipped messages

def test_retr_refused_is_skipped_and_retried(t):
    """RETR -ERR for one message: the others are imported (and deleted,
    leave_on_server = false), that one is skipped and recorded (state,
    status, one log line naming account, message and UIDL), never
    deleted, retried next pass (still 65); imported once RETR works."""
    box = mailbox(5)
    srv = pop3script.Server(t, box)
    # message 3 now, message 1 once the others are deleted
    srv.fault('RETR', reply='-ERR [SYS/PERM] message unreadable', arg='3', session=1)
    srv.fault('RETR', reply='-ERR [SYS/PERM] message unreadable', arg='1', session=2)
    conf = config(t, [block(srv, extra='leave_on_server = false')])
    p = sync(t, conf, 65)
    line = [l for l in p.stderr.splitlines() if 'skipped' in l and 'message 3' in l]
    t.check(line and 'acct:' in line[0] and box[2][0] in line[0] and '-ERR [SYS/PERM]' in line[0],
            'one line names account, message, UIDL and reason: %s' % p.stderr)
    t.check('4 imported' in p.stderr, 'the others imported: %s' % p.stderr)
    t.check(stored(t) == hashes(b for i, (_, b) in enumerate(box) if i != 2), '4 stored')
    t.check([u for u, _ in srv.mailbox()] == [box[2][0]], 'only the skipped one is left on '
            'the server: %r' % [u for u, _ in srv.mailbox()])
    st = status(t, conf)
    t.check(st['skipped'] == 1 and st['last_skipped'] == 1, 'status counts it: %r' % st)
    sk = st['skipped_messages']
    t.check(len(sk) == 1 and sk[0]['uidl'] == box[2][0] and 'RETR refused' in sk[0]['reason']
            and sk[0]['times'] == 1, 'status names it: %r' % sk)
    text = t.run_bridge(conf, 'status').stdout
    t.check('skipped: 1 message' in text and box[2][0] in text, 'text status: %s' % text)
    w = t.run_bridge(conf, 'where', 'acct', box[2][0])
    t.check(w.returncode == 1 and 'skipped 1 time' in w.stderr and 'RETR refused' in w.stderr,
            'where says it was skipped and why: %s' % w.stderr)
    p = sync(t, conf, 65)
    t.check('RETR 1' in srv.sessions()[1].commands, 'retried on the next pass: %r'
            % srv.sessions()[1].commands)
    t.check(status(t, conf)['skipped_messages'][0]['times'] == 2, 'counted twice')
    p = sync(t, conf)
    t.check('1 imported' in p.stderr, 'imported once RETR works: %s' % p.stderr)
    t.check(stored(t) == hashes(b for _, b in box), 'all 5 stored, byte-exact')
    st = status(t, conf)
    t.check(st['skipped'] == 0 and st['skipped_messages'] == [], 'no longer skipped: %r' % st)
    t.check(srv.mailbox() == [], 'and then deleted')


def test_max_message_size(t):
    """A message over max_message_size (LIST size) is skipped without RETR,
    every pass, left on the server even with leave_on_server = false; the
    others are imported; raising the limit imports it."""
    big = ('uid-big', h.make_message(7, size=300 * 1024, tag='big'))
    box = mailbox(3) + [big]
    srv = pop3script.Server(t, box)
    acct = block(srv, extra='leave_on_server = false')
    conf = config(t, [acct], extra='max_message_size = 102400\n')
    for attempt in (1, 2):
        p = sync(t, conf, 65)
        t.check('max_message_size' in p.stderr and 'uid-big' in p.stderr,
                'pass %d names it: %s' % (attempt, p.stderr))
        t.check('uid-big' not in srv.sessions()[-1].retrieved, 'never retrieved')
        t.check([u for u, _ in srv.mailbox()] == ['uid-big'], 'left on the server')
    t.check(stored(t) == hashes(b for _, b in box[:3]), 'the 3 others stored')
    st = status(t, conf)
    t.check(st['skipped'] == 1 and st['skipped_messages'][0]['times'] == 2 and
            st['skipped_messages'][0]['size'] == len(h.canonical(big[1])), 'status: %r' % st)
    # per account: the account's own limit wins over the top-level one
    conf = config(t, [block(srv, extra='leave_on_server = false\nmax_message_size = 1048576')],
                  extra='max_message_size = 102400\n')
    p = sync(t, conf)
    t.check('1 imported' in p.stderr, 'imported under a higher limit: %s' % p.stderr)
    t.check(stored(t) == hashes(b for _, b in box) and srv.mailbox() == [], 'all stored')
    t.check(status(t, conf)['skipped'] == 0, 'no longer skipped')


def test_retr_over_its_bound_is_skipped(t):
    """A RETR that brings far more than LIST said (more than twice, plus
    1 MiB) is read to its end, dropped and skipped: the session goes on and
    the messages after it are imported. The server's EXPIRE is not
    announced, so that retrieved-but-not-stored message makes the session
    end without QUIT."""
    box = mailbox(4)
    huge = h.make_message(9, size=3 * 1024 * 1024, tag='huge')
    box.insert(1, ('uid-huge', huge))
    srv = pop3script.Server(t, box)
    sizes = [len(h.canonical(b)) for _, b in box]
    sizes[1] = 1000
    srv.fault('LIST', reply=['+OK %d messages' % len(box)] +
              ['%d %d' % (i + 1, n) for i, n in enumerate(sizes)] + ['.'])
    conf = config(t, [block(srv)])
    p = sync(t, conf, 65)
    t.check('uid-huge' in p.stderr and 'skipped' in p.stderr and 'LIST size' in p.stderr,
            'skipped with its reason: %s' % p.stderr)
    t.check(stored(t) == hashes(b for u, b in box if u != 'uid-huge'),
            'the messages after it were imported in the same session')
    s = srv.sessions()
    t.check(len(s) == 1 and not s[0].quit, 'one session, ended without QUIT: %r' % s)
    t.check('without QUIT' in p.stderr and 'no EXPIRE' in p.stderr, 'says why: %s' % p.stderr)
    t.check(len(srv.mailbox()) == 5, 'nothing deleted')


# ---------------------------------------------------------------- EXPIRE

def test_expire0_server_deletions_are_counted(t):
    """EXPIRE 0 with leave_on_server = true: every message retrieved and
    stored is deleted by the server at QUIT. The pass says so, the rows
    are marked deleted, status warns about the contradiction."""
    box = mailbox(5)
    srv = pop3script.Server(t, box, capa=pop3script.DEFAULT_CAPA + ('EXPIRE 0',))
    conf = config(t, [block(srv)])
    p = sync(t, conf)
    t.check('5 imported' in p.stderr and '5 deleted by the server (EXPIRE 0)' in p.stderr,
            'the pass states the server\'s deletions: %s' % p.stderr)
    t.check(srv.mailbox() == [] and stored(t) == hashes(b for _, b in box),
            'all stored, and gone from the server')
    st = status(t, conf)
    t.check(st['on_server'] == 0 and st['imported'] == 5 and st['last_server_deleted'] == 5,
            'rows marked deleted: %r' % st)
    t.check(st['server_expire'] == 0 and st['expire_warning'] and
            'leave_on_server' in st['expire_warning'], 'status warns: %r' % st)
    text = t.run_bridge(conf, 'status').stdout
    t.check('EXPIRE 0' in text and 'warning' in text and '5 deleted by the server' in text,
            'text status: %s' % text)


# A Dovecot store that refuses any message over 100 KB ([LIMIT]).
QUOTA_100K = ('mail_plugins = $mail_plugins quota\n'
              'plugin {\n  quota = count:User quota\n  quota_vsizes = yes\n'
              '  quota_max_mail_size = 100k\n}\n')


def test_expire0_store_refusal_keeps_the_message(t):
    """EXPIRE 0 and the IMAP store refuses one message (over its size
    limit): no QUIT, so the server keeps it; the deletions wanted
    (leave_on_server = false) go in a session that retrieves nothing."""
    store = ist.dovecot_store(t, extra=QUOTA_100K)
    box = mailbox(3)
    box.insert(1, ('uid-big', h.make_message(99, size=300 * 1024, tag='big')))
    srv = pop3script.Server(t, box, capa=pop3script.DEFAULT_CAPA + ('EXPIRE 0',))
    conf = ist.config(t, store, [block(srv, extra='leave_on_server = false')])
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 65, 'exit 65: %d %s' % (p.returncode, p.stderr))
    t.check('without QUIT' in p.stderr and 'EXPIRE 0' in p.stderr, 'says why: %s' % p.stderr)
    t.check([u for u, _ in srv.mailbox()] == ['uid-big'], 'the refused message is still on '
            'the server, the others deleted: %r' % [u for u, _ in srv.mailbox()])
    s = srv.sessions()
    t.check(len(s) == 2 and not s[0].quit and s[1].quit and not retr_verbs(s[1]) and
            'DELE' in s[1].verbs(), 'deletions in a session of their own: %r' % s)
    got = sorted(h.body_hash(ist.strip_key(f['body'])) for f in h.imap_fetch_all(store))
    t.check(got == sorted(h.body_hash(b) for u, b in box if u != 'uid-big'), '3 stored')


def test_deletion_session_waits_for_the_unlock(t):
    """The deletion session finds the maildrop still locked ([IN-USE]: the
    server has not yet seen the import session end): it tries once more a
    moment later, and the deletions are done in this pass."""
    store = ist.dovecot_store(t, extra=QUOTA_100K)
    box = mailbox(3)
    box.insert(1, ('uid-big', h.make_message(98, size=300 * 1024, tag='big')))
    srv = pop3script.Server(t, box, capa=pop3script.DEFAULT_CAPA + ('EXPIRE 0',))
    srv.fault('LOGIN', reply='-ERR [IN-USE] maildrop locked', session=2)
    conf = ist.config(t, store, [block(srv, extra='leave_on_server = false')])
    p = t.run_bridge(conf, 'sync')
    s = srv.sessions()
    t.check(len(s) == 3 and not s[0].quit and s[1].login is None and s[2].quit and
            'DELE' in s[2].verbs() and not retr_verbs(s[2]),
            'a second try of the deletion session: %r' % s)
    t.check([u for u, _ in srv.mailbox()] == ['uid-big'], 'the others deleted, the refused '
            'one kept: %r (%s)' % ([u for u, _ in srv.mailbox()], p.stderr))
    t.check('postponed' not in p.stderr, 'not postponed: %s' % p.stderr)


# ---------------------------------------------------------------- LOGIN-DELAY, IN-USE

def test_login_delay_honoured_by_run_and_sync(t):
    """LOGIN-DELAY 600: `run` polling every 2 s logs in once; `sync`
    afterwards does not log in (75, says until when); status shows the
    delay and the next poll."""
    box = mailbox(3)
    srv = pop3script.Server(t, box, capa=pop3script.DEFAULT_CAPA + ('LOGIN-DELAY 600',))
    conf = config(t, [block(srv)], extra='poll_interval = 2\n')
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: len(stored(t)) == 3, 20, what='first pass')
    time.sleep(7)
    h.stop_process(d)
    n = len(srv.sessions())
    t.check(n == 1, '`run` logged in once in 7 s at a 2 s interval: %d sessions' % n)
    p = sync(t, conf, 75)
    t.check('not polled' in p.stderr and 'LOGIN-DELAY' in p.stderr, 'says until when: %s'
            % p.stderr)
    t.check(len(srv.sessions()) == 1, 'sync did not connect')
    st = status(t, conf)
    t.check(st['login_delay'] == 600 and st['next_poll'] and st['not_before'],
            'status: %r' % st)
    nb = calendar.timegm(time.strptime(st['not_before'], '%Y-%m-%dT%H:%M:%SZ'))
    t.check(abs(nb - (srv.sessions()[0].login + 600)) < 5, 'not before = login + 600 s')
    text = t.run_bridge(conf, 'status').stdout
    t.check('LOGIN-DELAY 600 s' in text and 'next poll' in text, 'text status: %s' % text)


def test_in_use_is_temporary_with_backoff(t):
    """[IN-USE] at login: 75, and no login is tried again before the
    backoff (60 s after a first failure) is over."""
    srv = pop3script.Server(t, mailbox(2))
    srv.fault('LOGIN', reply='-ERR [IN-USE] maildrop held by another client', session=1)
    conf = config(t, [block(srv)])
    p = sync(t, conf, 75)
    t.check('[IN-USE]' in p.stderr and 'for now' in p.stderr, 'temporary: %s' % p.stderr)
    p = sync(t, conf, 75)
    t.check('not polled' in p.stderr and len(srv.sessions()) == 1,
            'the second sync waits for the backoff: %s' % p.stderr)
    st = status(t, conf)
    nb = calendar.timegm(time.strptime(st['not_before'], '%Y-%m-%dT%H:%M:%SZ'))
    t.check(50 <= nb - time.time() <= 61, 'backoff about 60 s: %r' % st['not_before'])
    t.check(st['failures'] == 1, 'one failure counted: %r' % st)


# ---------------------------------------------------------------- login, UTF8

def test_auth_auto_falls_back(t):
    """auth = "auto" over tls = "none": APOP first (the greeting has a
    timestamp), refused, then USER/PASS, which works; the log says so. All
    refused: 69, naming each."""
    srv = pop3script.Server(t, mailbox(4), capa=NO_SASL, apop=True)
    srv.fault('APOP', reply='-ERR [AUTH] Bad login')
    conf = config(t, [block(srv)])
    p = sync(t, conf)
    t.check('4 imported' in p.stderr, 'imported: %s' % p.stderr)
    t.check('logged in with USER after APOP: -ERR [AUTH] Bad login' in p.stderr,
            'the log says which logged in: %s' % p.stderr)
    s = srv.sessions()
    t.check(s[0].mechanism == 'USER' and s[0].verbs()[:4] == ['CAPA', 'APOP', 'USER', 'PASS'],
            'APOP, then USER/PASS in one session: %r' % s[0].verbs())
    t.check(status(t, conf)['last_auth'] == 'USER', 'status shows the mechanism')
    srv.password = 'changed'
    p = sync(t, conf, 69)
    t.check('APOP' in p.stderr and 'USER' in p.stderr and 'every mechanism' in p.stderr,
            'all refused: each named: %s' % p.stderr)
    t.check('secret' not in p.stderr, 'no password in the output')


def test_utf8_sent_before_any_retrieval(t):
    """A server announcing UTF8 (RFC 6856) gets it after login, before any
    TOP or RETR."""
    box = mailbox(2)
    srv = pop3script.Server(t, box, capa=pop3script.DEFAULT_CAPA + ('UTF8',))
    conf = config(t, [block(srv)])
    sync(t, conf)
    v = srv.sessions()[0].verbs()
    t.check('UTF8' in v and 'AUTH' in v and v.index('AUTH') < v.index('UTF8') < v.index('RETR'),
            'UTF8 after login, before RETR: %r' % v)
    srv2 = pop3script.Server(t, box, name='no-utf8')
    conf2 = config(t, [block(srv2)], name='p3b-2.conf', state='state2', dest='dest2')
    sync(t, conf2)
    t.check('UTF8' not in srv2.sessions()[0].verbs(), 'not sent when not announced')


def test_lang_asked_before_any_retrieval(t):
    """A server announcing LANG (RFC 6856) is asked for English after UTF8
    and before any TOP or RETR; the import is exact. Not sent when not
    announced."""
    box = mailbox(3)
    srv = pop3script.Server(t, box, capa=pop3script.DEFAULT_CAPA + ('UTF8', 'LANG'))
    conf = config(t, [block(srv)])
    sync(t, conf)
    s = srv.sessions()[0]
    v = s.verbs()
    t.check('LANG' in v and v.index('UTF8') < v.index('LANG') < v.index('RETR'),
            'LANG after UTF8, before RETR: %r' % v)
    t.check('LANG en' in s.commands, 'English asked for: %r' % s.commands)
    t.check(stored(t) == hashes(b for _, b in box), 'exact import with LANG on')
    with open(srv.log_path, errors='replace') as f:
        t.check('S: +OK en English' in f.read(), 'the server switched to English')
    srv2 = pop3script.Server(t, box, name='no-lang')
    conf2 = config(t, [block(srv2)], name='p3b-2.conf', state='state2', dest='dest2')
    sync(t, conf2)
    t.check('LANG' not in srv2.sessions()[0].verbs(), 'not sent when not announced')


if __name__ == '__main__':
    h.main()
