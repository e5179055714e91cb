"""sync --dry-run: logs in, lists, prints per account what a pass would
import, skip and delete, and changes nothing: the state file's bytes, the
server's mailbox (UIDLs and bodies) and the store are the same before and
after; a missing database is not made."""

import hashlib
import os
import re

import harness as h
from common import config, servers, stored_files, sync


def _files(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for top, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(top, f)
            with open(p, 'rb') as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _server(src):
    return h.pop3_uidls(src), sorted(h.body_hash(b) for b in h.pop3_retr_all(src))


def test_dry_run_changes_nothing(t):
    src, dst = servers(t)
    h.seed(src, 'alice', [h.make_message(i, tag='old') for i in range(4)])
    conf = config(t, [h.account_block('acct', src)])
    sync(t, conf)
    t.require(len(stored_files(dst)) == 4, 'first sync imported 4')
    # Now: delete what is delivered, skip what is over 5000 octets; 3 new, 1 big.
    conf = config(t, [h.account_block('acct', src, extra='leave_on_server = false\n'
                                      '  max_message_size = 5000')])
    h.seed(src, 'alice', [h.make_message(i, tag='new') for i in range(3)] +
           [h.make_message(9, size=20000, tag='big')])
    state_before = _files(t.path('state'))
    server_before = _server(src)
    store_before = _files(t.path('dest'))
    p = t.run_bridge(conf, 'sync', '--dry-run')
    t.check(p.returncode == 0, 'dry run exits 0: %s' % p.stderr)
    t.check(re.search(r'^acct: 8 on the server; would import 3 \(\d+ bytes\), skip 1 \(over '
                      r'max_message_size\), delete 4 .*dry run', p.stdout, re.M),
            'says what a pass would do: %r' % p.stdout)
    t.check(_files(t.path('state')) == state_before, 'the state: every file the same bytes')
    t.check(_server(src) == server_before, 'the server: same UIDLs, same messages')
    t.check(_files(t.path('dest')) == store_before, 'the store: nothing written')
    # The real pass does what the dry run said.
    p = sync(t, conf, expect=65)
    t.check(len(stored_files(dst)) == 7, '3 imported')
    t.check(len(h.pop3_uidls(src)) == 1, 'the 7 delivered deleted, the big one left')


def test_dry_run_without_a_database(t):
    src, dst = servers(t)
    h.seed(src, 'alice', [h.make_message(i, tag='d') for i in range(5)])
    conf = config(t, [h.account_block('acct', src), h.account_block(
        'wrong', src, password='nope', folder='W')])
    p = t.run_bridge(conf, 'sync', '--dry-run', 'acct')
    t.check(p.returncode == 0 and 'acct: 5 on the server; would import 5' in p.stdout,
            'everything is new: %r %r' % (p.stdout, p.stderr))
    t.check(not os.path.exists(t.path('state', 'state.db')), 'no database made')
    t.check(not os.path.exists(dst.maildir('alice')) or not stored_files(dst), 'nothing stored')
    p = t.run_bridge(conf, 'sync', '--dry-run')
    t.check(p.returncode == 69 and 'wrong: ' in p.stderr, 'a refused login is reported: %d %r'
            % (p.returncode, p.stderr))
    t.check(len(h.pop3_uidls(src)) == 5, 'server untouched')


if __name__ == '__main__':
    h.main()
