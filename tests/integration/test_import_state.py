"""import-state: the state files the real fetchmail, getmail6 and mpop wrote
after fetching from a test Dovecot; then sync imports exactly the messages
those tools had not seen (bodies by hash). Files that do not parse, or that
name another server or user, are refused with FILE:LINE."""

import json
import os

import harness as h
import oldtools
from common import config, servers, stored_files, sync

EX_USAGE, EX_DATAERR, EX_NOINPUT = 64, 65, 66


def _status(t, conf):
    p = t.run_bridge(conf, 'status', '--json')
    t.require(p.returncode == 0, 'status: %s' % p.stderr)
    return {a['name']: a for a in json.loads(p.stdout)['accounts']}


def _message_ids(maildir):
    out = set()
    for f in h.maildir_files(maildir):
        with open(f, 'rb') as fh:
            out.add(h.header(fh.read(), 'Message-ID'))
    return out


def _switch_from(t, tool):
    src, dst = servers(t)
    seen = [h.make_message(i, tag='old-' + tool) for i in range(6)]
    h.seed(src, 'alice', seen)
    work = t.path(tool)
    state, p = oldtools.fetch_with(tool, work, src)
    t.require(p.returncode == 0, '%s exited %d: %s' % (tool, p.returncode, p.stderr[-500:]))
    t.require(os.path.exists(state), '%s wrote its state file %s' % (tool, state))
    # What the old tool really fetched: every message then on the server.
    t.require(_message_ids(os.path.join(work, 'Maildir')) ==
              {h.header(m, 'Message-ID') for m in seen}, '%s fetched the first 6' % tool)
    new = [h.make_message(i, tag='new-' + tool) for i in range(4)]
    h.seed(src, 'alice', new)
    conf = config(t, [h.account_block('acct', src)])
    p = t.run_bridge(conf, 'import-state', '--from', tool, state, 'acct')
    t.require(p.returncode == 0, 'import-state exited %d: %s' % (p.returncode, p.stderr))
    t.check('6 UIDLs seen by %s' % tool in p.stdout and '6 new' in p.stdout,
            'the summary counts 6: %r' % p.stdout)
    sync(t, conf)
    got = sorted(h.body_hash(b) for b in stored_files(dst))
    want = sorted(h.body_hash(h.pop3_view(m)) for m in new)
    t.check(got == want, 'exactly the 4 messages %s never saw were imported (%d stored)'
            % (tool, len(got)))
    s = _status(t, conf)['acct']
    t.check(s['imported'] == 4 and s['seen_elsewhere'] == 6 and s['on_server'] == 10 and
            s['pending'] == 0, 'status counts them apart: %r' % s)
    sync(t, conf)
    t.check(len(stored_files(dst)) == 4, 'a second sync imports nothing')
    # Importing the same file again adds nothing and changes nothing.
    p = t.run_bridge(conf, 'import-state', '--from', tool, state, 'acct')
    t.check(p.returncode == 0 and '0 new, 6 already known' in p.stdout,
            'a second import-state is a no-op: %r %r' % (p.stdout, p.stderr))
    uidl = h.pop3_uidls(src)[0]
    p = t.run_bridge(conf, 'where', 'acct', uidl)
    t.check(p.returncode == 0 and 'another tool' in p.stdout, 'where says who fetched it: %r'
            % p.stdout)


def test_switch_from_fetchmail(t):
    _switch_from(t, 'fetchmail')


def test_switch_from_getmail(t):
    _switch_from(t, 'getmail')


def test_switch_from_mpop(t):
    _switch_from(t, 'mpop')


def test_deletion_after_import_state(t):
    """leave_on_server = false: the old tool's messages count as delivered,
    so they are deleted from the server with ours; nothing is fetched."""
    src, dst = servers(t)
    h.seed(src, 'alice', [h.make_message(i, tag='a') for i in range(3)])
    state, p = oldtools.fetch_with('mpop', t.path('mpop'), src)
    t.require(p.returncode == 0, 'mpop: %s' % p.stderr)
    h.seed(src, 'alice', [h.make_message(i, tag='b') for i in range(2)])
    conf = config(t, [h.account_block('acct', src, extra='leave_on_server = false')])
    t.require(t.run_bridge(conf, 'import-state', '--from', 'mpop', state, 'acct')
              .returncode == 0, 'import-state')
    sync(t, conf)
    t.check(len(stored_files(dst)) == 2, 'only the 2 new ones stored')
    t.check(h.pop3_stat(src)[0] == 0, 'all 5 deleted from the server')
    s = _status(t, conf)['acct']
    t.check(s['imported'] == 2 and s['seen_elsewhere'] == 3 and s['on_server'] == 0,
            'status after deletion: %r' % s)


def _refused(t, conf, tool, path, line, account='acct'):
    p = t.run_bridge(conf, 'import-state', '--from', tool, path, account)
    want = '%s:%s' % (path, line) if line is not None else path + ':'
    t.check(p.returncode == EX_DATAERR and want in p.stderr,
            '%s file %s refused with %s: exit %d %r' % (tool, os.path.basename(path), want,
                                                       p.returncode, p.stderr))


def _write(t, name, data):
    path = t.path(name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def test_refused_files(t):
    src, dst = servers(t)
    port = src.ports['pop3s']
    conf = config(t, [h.account_block('acct', src)])
    # Another user or server only.
    _refused(t, conf, 'fetchmail', _write(t, 'ids-other', b'bob@localhost 0001\n'
                                           b'alice@elsewhere.example 0002\n'), 1)
    _refused(t, conf, 'mpop', _write(t, 'uidls-other', b'# mpop\n 2 pop.example.org alice\n'
                                      b'a1\na2\n'), 2)
    os.makedirs(t.path('gm'))
    _refused(t, conf, 'getmail', _write(t, 'gm/oldmail-localhost-%d-bob' % port,
                                         b'0001\x001700000000\n'), None)
    _refused(t, conf, 'getmail', _write(t, 'gm/oldmail-localhost-110-alice',
                                         b'0001\x001700000000\n'), None)
    # Files that do not parse: the line that failed.
    _refused(t, conf, 'fetchmail', _write(t, 'ids-bad', b'alice@localhost 0001\n'
                                           b'alice@localhost 0002\njunk\n'), 3)
    _refused(t, conf, 'fetchmail', _write(t, 'ids-long', b'alice@localhost ' + b'x' * 71 +
                                           b'\n'), 1)
    _refused(t, conf, 'mpop', _write(t, 'uidls-short', b' 3 localhost alice\na\nb\n'), 3)
    _refused(t, conf, 'mpop', _write(t, 'uidls-nolist', b'# c\nabc\n'), 2)
    _refused(t, conf, 'getmail', _write(t, 'gm/oldmail-localhost-%d-alice' % port,
                                         b'0001\x001700000000\n0002 1700000000\n'), 2)
    _refused(t, conf, 'getmail', _write(t, 'gm/oldmail-localhost-%d-alice' % port,
                                         b'1234/5678\x001700000000\n'), 1)
    # A fetchmail file given as mpop's.
    _refused(t, conf, 'mpop', _write(t, 'ids-as-mpop', b'alice@localhost 0001\n'), 1)
    for args, code in ((['--from', 'kmail', t.path('ids-bad'), 'acct'], EX_USAGE),
                       (['--from', 'mpop', t.path('ids-bad'), 'nobody'], EX_USAGE),
                       (['--from', 'mpop', t.path('ids-bad')], EX_USAGE),
                       (['--from', 'mpop', t.path('missing'), 'acct'], EX_NOINPUT)):
        p = t.run_bridge(conf, 'import-state', *args)
        t.check(p.returncode == code, '%r exits %d, got %d' % (args, code, p.returncode))
    s = _status(t, conf)['acct']
    t.check(s['seen_elsewhere'] == 0, 'nothing recorded by refused files: %r' % s)


def test_shared_file_takes_only_its_account(t):
    """fetchmail's and mpop's files hold every account the tool polls: only
    the lines of this account's user and server count, the rest is named."""
    src, dst = servers(t)
    msgs = [h.make_message(i, tag='shared') for i in range(3)]
    h.seed(src, 'alice', msgs)
    uidls = h.pop3_uidls(src)
    conf = config(t, [h.account_block('acct', src)])
    ids = _write(t, 'fetchids', ('bob@pop.example.org 77\nALICE@LocalHost %s\n'
                                 'alice@localhost %s\ncarol@localhost 78\n'
                                 % (uidls[0], uidls[1])).encode())
    p = t.run_bridge(conf, 'import-state', '--from', 'fetchmail', ids, 'acct')
    t.check(p.returncode == 0 and '2 UIDLs' in p.stdout and '2 entries of other accounts'
            in p.stdout and 'line 1' in p.stdout, 'fetchmail shared file: %r %r'
            % (p.stdout, p.stderr))
    sync(t, conf)
    got = sorted(h.body_hash(b) for b in stored_files(dst))
    t.check(got == [h.body_hash(h.pop3_view(msgs[2]))], 'only the third message imported')


if __name__ == '__main__':
    h.main()
