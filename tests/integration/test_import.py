"""Importing a POP3 mailbox into the Maildir, read back through Dovecot IMAP."""

import collections

import harness as h
from common import config, servers, sha, stored_files, sync, header_instant

TIMEOUT = 420


def test_import_500_varied_and_20mb(t):
    src, dst = servers(t)
    msgs = h.make_corpus(500, seed=2) + [h.big_message(20)]
    h.seed(src, 'alice', msgs)
    conf = config(t, [h.account_block('acct', src)])
    p = sync(t, conf)
    t.check('501 imported' in p.stderr, 'summary says 501 imported: %s' % p.stderr)

    # Byte for byte: a Maildir holds LF line endings, so each stored file
    # must be exactly RETR's bytes with every CRLF made LF. (A line ending in
    # a lone CR, "x\r\r\n", is stored "x\r\n", as Dovecot's own LDA does.)
    retr = h.pop3_retr_all(src)
    want = [r.replace(b'\r\n', b'\n') for r in retr]
    files = stored_files(dst)
    t.check(len(files) == 501, '501 files in the Maildir, got %d' % len(files))
    t.check(sorted(map(sha, want)) == sorted(map(sha, files)),
            'stored files are RETR byte for byte (CRLF -> LF)')
    nul = [f for f in files if b'\x00' in f]
    t.check(len(nul) == 1, 'the NUL byte survived (%d files with NUL)' % len(nul))

    # As a user's client sees it: Dovecot IMAP over the destination Maildir.
    fetched = h.imap_fetch_all(dst)
    t.check(len(fetched) == 501, 'IMAP shows 501 messages, got %d' % len(fetched))
    t.check(sorted(h.body_hash(h.imap_view(w)) for w in want) ==
            sorted(h.body_hash(f['body']) for f in fetched),
            'IMAP bodies have the source hashes')
    wrong_dates = [f['uid'] for f in fetched if f['internaldate'] != header_instant(f['body'])]
    t.check(not wrong_dates, 'INTERNALDATE is the Date header instant (%d wrong)' % len(wrong_dates))
    t.check(all(set(f["flags"]) <= {"\\Recent"} for f in fetched), 'imported unread, without flags')

    # A second pass imports nothing; new mail is picked up.
    p = sync(t, conf)
    t.check('0 new, 0 imported' in p.stderr, 'second sync imports 0: %s' % p.stderr)
    h.seed(src, 'alice', h.make_corpus(7, seed=3))
    p = sync(t, conf)
    t.check('7 new, 7 imported' in p.stderr, 'third sync imports the 7 added: %s' % p.stderr)
    t.check(h.imap_count(dst) == 508, 'IMAP shows 508')
    ids = collections.Counter(h.header(f['body'], 'Message-ID') for f in h.imap_fetch_all(dst))
    t.check(max(ids.values()) == 1, 'no Message-ID twice')


def test_received_header_sets_internal_date(t):
    src, dst = servers(t)
    received = 'from mx.example.org by pop.example.net; Wed, 01 Mar 2023 08:30:00 +0100'
    m = h.make_message(1, date=1600000000, extra_headers=[('Received', received)])
    h.seed(src, 'alice', [m, h.make_message(2, date=1600000600)])
    sync(t, config(t, [h.account_block('acct', src)]))
    got = {h.header(f['body'], 'Subject'): f['internaldate'] for f in h.imap_fetch_all(dst)}
    t.check(got.get('Test message 1') == 1677655800, 'Received date wins: %r' % got)
    t.check(got.get('Test message 2') == 1600000600, 'else the Date header: %r' % got)


def test_accounts_into_folders_in_parallel(t):
    users = {'alice': 'secret', 'bob': 'hunter2', 'carol': 'pw3'}
    src, dst = servers(t, users=users)
    for i, u in enumerate(users):
        h.seed(src, u, h.make_corpus(20, seed=10 + i))
    accts = [h.account_block('a-alice', src, user='alice', password='secret'),
             h.account_block('a-bob', src, user='bob', password='hunter2', folder='Lists/Bob'),
             h.account_block('a-carol', src, user='carol', password='pw3',
                             folder='Entw\u00fcrfe & Notizen')]
    conf = config(t, accts, extra='max_parallel = 3\n')
    p = sync(t, conf)
    t.check(p.stderr.count('20 imported') == 3, 'three accounts imported 20 each: %s' % p.stderr)
    folders = h.imap_list(dst)
    t.check('Lists/Bob' in folders and 'Entw\u00fcrfe & Notizen' in folders,
            'nested and non-ASCII folders as IMAP shows them: %r' % folders)
    for folder in ('INBOX', 'Lists/Bob', 'Entw\u00fcrfe & Notizen'):
        t.check(h.imap_count(dst, folder=folder) == 20, '20 in %s' % folder)
    p = sync(t, conf, 'a-bob')
    t.check('a-bob: 20 on server, 0 new' in p.stderr and 'a-alice' not in p.stderr,
            'sync ACCOUNT syncs only that one: %s' % p.stderr)


if __name__ == '__main__':
    h.main()
