#!/usr/bin/python3
"""Cross-account de-duplication is scoped by store *and* folder: account B's
copy of a message for folder "Work" is not a duplicate of account A's
INBOX copy (it would never show up in Work); in the same folder it is."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from common import servers, sync  # noqa: E402

USERS = {'alice': 'secret', 'bob': 'hunter2', 'carol': 'pw-carol'}


def test_dedup_per_folder(t):
    src, dst = servers(t, users=USERS)
    msgs = h.make_corpus(6, seed=51)
    for u in USERS:
        h.seed(src, u, msgs)
    accts = [h.account_block('a', src, user='alice', password='secret'),
             h.account_block('b', src, user='bob', password='hunter2', folder='Work'),
             h.account_block('c', src, user='carol', password='pw-carol', folder='Work')]
    text = h.config_text(t.path('state'), t.path('dest', '%u', 'Maildir'), accts)
    text = text.replace('type = "maildir"\n', 'type = "maildir"\n  dedup = "message-id"\n', 1)
    conf = h.write_config(t.path('p3b.conf'), text)
    for acct in ('a', 'b', 'c'):
        sync(t, conf, acct)
    inbox = h.imap_fetch_all(dst)
    work = h.imap_fetch_all(dst, folder='Work')
    want = sorted(h.body_hash(h.imap_view(m)) for m in msgs)
    t.check(sorted(h.body_hash(f['body']) for f in inbox) == want, "a's 6 in INBOX")
    t.check(sorted(h.body_hash(f['body']) for f in work) == want,
            "b's 6 in Work, not taken for a's INBOX copies (%d there)" % len(work))
    st = {x['name']: x for x in json.loads(t.run_bridge(conf, 'status', '--json').stdout)[
        'accounts']}
    t.check(st['b']['duplicates'] == 0, 'b stored its own copies: %r' % st['b'])
    t.check(st['c']['duplicates'] == 6, "c's are b's copies in Work: %r" % st['c'])
    u = h.pop3_uidls(src, 'bob', 'hunter2')[0]
    p = t.run_bridge(conf, 'where', 'b', u)
    t.check('folder:     Work' in p.stdout and 'duplicate:' not in p.stdout,
            'where: b\'s message is in Work: %s' % p.stdout)
    u = h.pop3_uidls(src, 'carol', 'pw-carol')[0]
    p = t.run_bridge(conf, 'where', 'c', u)
    t.check('folder:     Work' in p.stdout and 'as account b\'s copy' in p.stdout,
            'where: c\'s points at b\'s copy in Work: %s' % p.stdout)


if __name__ == '__main__':
    h.main()
