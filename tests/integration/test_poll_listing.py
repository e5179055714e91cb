#!/usr/bin/python3
"""What a pass asks a real Dovecot for: UIDL first, and LIST only for the
messages it will retrieve. A poll that finds nothing new sends no LIST at
all; a pass with a few new messages asks "LIST n" for each of those, and
their sizes are right (max_message_size skips the new big one, RETR of the
other is exact); the first import of a whole mailbox takes one LIST.
Dovecot's rawlog (rawlog_dir) records every command it was sent after
login, one "<time> <command>" line each. Against the scripted server: a
"LIST n" that names another message, or is refused for a message UIDL
listed, is a protocol error (76) and imports nothing."""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pop3script  # noqa: E402
from common import config, servers, stored_files, sync  # noqa: E402

EX_PROTOCOL = 76


def _rawlog_server(t):
    raw = t.path('rawlog')
    os.makedirs(raw)
    os.chmod(raw, 0o777)
    src, dst = servers(t, extra_conf='protocol pop3 {\n  rawlog_dir = %s\n}' % raw)
    return src, dst, raw


def _sessions(raw, seen):
    """The commands of each POP3 session logged since seen (a set of
    files, updated): a list of lists of command lines."""
    out = []
    for f in sorted(glob.glob(os.path.join(raw, '*.in'))):
        if f in seen:
            continue
        seen.add(f)
        with open(f, 'rb') as fh:
            lines = [l.decode('ascii', 'replace').strip() for l in fh.read().split(b'\n')]
        # each line is "<seconds.micros> <command>"
        out.append([l.split(' ', 1)[1] if ' ' in l else '' for l in lines if l])
    return out


def _verbs(cmds, verb):
    return [c for c in cmds if c.split(' ')[0].upper() == verb]


def test_nothing_new_sends_no_list(t):
    src, dst, raw = _rawlog_server(t)
    seen = set()
    h.seed(src, 'alice', [h.make_message(i, tag='old') for i in range(40)])
    conf = config(t, [h.account_block('acct', src, extra='max_message_size = 8000')])
    sync(t, conf)
    t.require(len(stored_files(dst)) == 40, 'first import: 40 stored')
    s = _sessions(raw, seen)
    t.require(len(s) == 1, 'one POP3 session logged by the rawlog: %d' % len(s))
    t.check(_verbs(s[0], 'LIST') == ['LIST'], 'the first import takes one whole LIST: %r'
            % _verbs(s[0], 'LIST'))

    sync(t, conf)
    s = _sessions(raw, seen)
    t.require(len(s) == 1, 'one session for the second pass: %d' % len(s))
    t.check(_verbs(s[0], 'UIDL') == ['UIDL'] and not _verbs(s[0], 'LIST') and
            not _verbs(s[0], 'RETR'), 'nothing new: UIDL, no LIST, no RETR: %r' % s[0])

    # Two new messages, one over max_message_size: LIST n for each of
    # them only, the big one skipped by that size, the other exact.
    small = h.make_message(100, tag='new-small')
    big = h.make_message(101, size=20000, tag='new-big')
    h.seed(src, 'alice', [small, big])
    p = sync(t, conf, expect=65)
    s = _sessions(raw, seen)
    t.require(len(s) == 1, 'one session for the third pass: %d' % len(s))
    lists = _verbs(s[0], 'LIST')
    t.check(sorted(lists) == ['LIST 41', 'LIST 42'], 'LIST n for the 2 new only: %r' % lists)
    t.check(_verbs(s[0], 'RETR') == ['RETR 41'] or _verbs(s[0], 'RETR') == ['RETR 42'],
            'one RETR, of the small one: %r' % _verbs(s[0], 'RETR'))
    t.check('larger than max_message_size' in p.stderr, 'the big one skipped by its LIST size:'
            ' %s' % p.stderr[-400:])
    got = stored_files(dst)
    t.check(len(got) == 41, '41 stored: %d' % len(got))
    t.check(h.body_hash(h.pop3_view(small)) in [h.body_hash(b) for b in got],
            'the small new message stored exactly')
    t.check(h.body_hash(h.pop3_view(big)) not in [h.body_hash(b) for b in got],
            'the big one left on the server')


def _script_block(srv):
    return ('account "acct" {\n  local_user = "alice"\n  pop3 {\n    host = "127.0.0.1"\n'
            '    port = %d\n    tls = "none"\n    allow_plaintext = true\n    user = %s\n'
            '    password = %s\n    timeout = 20\n  }\n}\n'
            % (srv.port, h.cq(srv.user), h.cq(srv.password)))


def test_list_n_that_disagrees_is_refused(t):
    box = [('uid-%03d' % i, h.make_message(i, tag='ln')) for i in range(20)]
    srv = pop3script.Server(t, box)
    conf = config(t, [_script_block(srv)])
    sync(t, conf)
    t.require(len(stored_files_of(t)) == 20, 'first import: 20')
    srv.add('uid-new', h.make_message(50, tag='ln-new'))
    srv.fault('LIST', reply='+OK 7 1234', arg='21', session=2)
    srv.fault('LIST', reply='-ERR no such message', arg='21', session=3)
    p = sync(t, conf, expect=EX_PROTOCOL)
    t.check('UIDL and LIST disagree: message 21 in one, 7 in the other' in p.stderr,
            'LIST 21 naming message 7 refused: %s' % p.stderr[-400:])
    p = sync(t, conf, expect=EX_PROTOCOL)
    t.check('LIST 21: -ERR no such message, although UIDL lists it' in p.stderr,
            'LIST 21 refused for a listed message: %s' % p.stderr[-400:])
    t.check(len(stored_files_of(t)) == 20, 'nothing imported by either')
    s = srv.sessions()
    t.check(all(not [c for c in x.commands if c.startswith('RETR')] for x in s[1:3]),
            'no RETR in those sessions')
    p = sync(t, conf)
    t.check(len(stored_files_of(t)) == 21, 'without the fault the new one comes: %s'
            % p.stderr[-300:])


def stored_files_of(t):
    return h.maildir_files(t.path('dest', 'alice', 'Maildir'))


if __name__ == '__main__':
    h.main()
