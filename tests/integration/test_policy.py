"""Deletion policies, checked with POP3 STAT on the provider."""

import os
import sqlite3

import harness as h
from common import config, servers, sync


def state_db(t):
    return sqlite3.connect(t.path('state', 'state.db'))


def test_leave_on_server(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(10))
    before = h.pop3_stat(src)
    sync(t, config(t, [h.account_block('acct', src)]))
    t.check(h.pop3_stat(src) == before, 'STAT unchanged: %r -> %r' % (before, h.pop3_stat(src)))
    t.check(h.imap_count(dst) == 10, 'all imported')


def test_delete_after_delivery(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(25))
    conf = config(t, [h.account_block('acct', src, extra='leave_on_server = false')])
    p = sync(t, conf)
    t.check('25 deleted' in p.stderr, 'summary says 25 deleted: %r' % p.stderr)
    t.check(h.pop3_stat(src)[0] == 0, 'STAT 0 after the pass, got %r' % (h.pop3_stat(src),))
    t.check(h.imap_count(dst) == 25, 'every message safe in the store first')
    states = dict(state_db(t).execute('SELECT state, count(*) FROM messages GROUP BY state'))
    t.check(states == {2: 25}, 'rows marked deleted only after QUIT: %r' % states)
    h.seed(src, 'alice', h.make_corpus(3, seed=7))
    sync(t, conf)
    t.check(h.pop3_stat(src)[0] == 0 and h.imap_count(dst) == 28, 'next pass likewise')


def test_delete_after_days(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(8))
    conf = config(t, [h.account_block('acct', src, extra='delete_after_days = 3')])
    sync(t, conf)
    t.check(h.pop3_stat(src)[0] == 8, 'nothing deleted on the day of import')
    # Three of them were delivered four days ago; two only two days ago.
    uidls = h.pop3_uidls(src)
    db = state_db(t)
    db.executemany('UPDATE messages SET delivered_at = delivered_at - ? WHERE uidl = ?',
                   [(4 * 86400, u) for u in uidls[:3]] + [(2 * 86400, u) for u in uidls[3:5]])
    db.commit()
    db.close()
    p = sync(t, conf)
    t.check('3 deleted' in p.stderr, 'summary says 3 deleted: %r' % p.stderr)
    t.check(h.pop3_uidls(src) == uidls[3:], 'exactly the old ones are gone from the server')
    t.check(h.imap_count(dst) == 8, 'the store keeps all 8')


if __name__ == '__main__':
    h.main()
