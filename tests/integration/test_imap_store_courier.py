"""The real Courier IMAP (tests/integration/courier.py) as pop3bridge's
store: its personal namespace is "INBOX." with ".", so folder =
"Lists/News" must become INBOX.Lists.News (a CREATE of "Lists.News" is
refused: "Invalid mailbox name") and the Sent copy INBOX.Sent (Courier has
no SPECIAL-USE). POP3 comes from a Dovecot; bodies are compared by hash
after imapstore.strip_key()."""

import re
import sqlite3

import courier
import harness as h
import imapstore as ist
from common import sync
from test_imap_store_real import relay_config, send_one

TIMEOUT = 400


def courier_store(t):
    return courier.for_test(t, 'store')


def test_courier_store_folders_under_inbox(t):
    msgs = h.make_corpus(30, seed=81)
    src = t.dovecot('src')
    h.seed(src, 'alice', msgs)
    store = courier_store(t)
    conf = ist.config(t, store, [h.account_block('news', src, folder='Lists/News')],
                      master=False)
    p = t.run_bridge(conf, '-v', 'sync')
    t.require(p.returncode == 0, 'sync into Courier: %s' % p.stderr)
    t.check('30 imported' in p.stderr, '30 imported: %s' % p.stderr)
    t.check(re.search(r'logged in as alice with (PLAIN|LOGIN)', p.stderr),
            'the login is named: %s' % p.stderr)
    boxes = h.imap_list(store, sep=None)
    t.check('INBOX.Lists.News' in boxes, 'INBOX.Lists.News on Courier: %r' % boxes)
    got = h.imap_fetch_all(store, folder='INBOX/Lists/News')
    t.check(len(got) == 30, '30 in INBOX.Lists.News, got %d' % len(got))
    # Courier's FETCH keeps a NUL byte as it is (Dovecot sends 0x80): the
    # bodies are RETR's bytes exactly.
    want = sorted(h.body_hash(r) for r in h.pop3_retr_all(src))
    have = sorted(h.body_hash(ist.strip_key(f['body'])) for f in got)
    t.check(have == want, 'bodies byte for byte RETR (%d differ)'
            % len(set(want) - set(have)))
    t.check(any(b'\x00' in ist.strip_key(f['body']) for f in got), 'the NUL byte kept')
    with h.imap_session(store) as m:
        subs = [name for flags, delim, name in h.imap_mailboxes(m, subscribed=True)]
    t.check('INBOX.Lists.News' in subs, 'subscribed: %r' % subs)
    t.check(len(h.maildir_files(store.maildir('alice'), '.Lists.News')) == 30,
            "in Courier's Maildir++ .Lists.News")

    p = sync(t, conf)
    t.check('0 new, 0 imported' in p.stderr, 'second pass imports nothing: %s' % p.stderr)
    # Rows left pending (a crash after APPEND) are found by their key
    # header with Courier's SEARCH, under the namespaced name.
    db = sqlite3.connect(t.path('state', 'state.db'))
    with db:
        db.execute('UPDATE messages SET state = 0, location = NULL')
    db.close()
    p = sync(t, conf)
    t.check('recovered 30 interrupted deliveries (30 already stored, 0 to fetch again)'
            in p.stderr, 'pending rows found on Courier: %s' % p.stderr)
    t.check(len(h.imap_fetch_all(store, folder='INBOX/Lists/News')) == 30, 'still 30')


def test_courier_sent_copy_in_inbox_sent(t):
    store = courier_store(t)
    conf, up = relay_config(t, store, master=False)
    send_one(t, conf, 'courier-sent')
    t.require(len(up.messages()) == 1, 'sent upstream')
    boxes = h.imap_list(store, sep=None)
    t.check('INBOX.Sent' in boxes, 'INBOX.Sent made on Courier: %r' % boxes)
    got = h.imap_fetch_all(store, folder='INBOX/Sent')
    t.check(len(got) == 1 and h.header(ist.strip_key(got[0]['body']), 'Subject') ==
            'courier-sent', 'the copy is in INBOX.Sent')
    t.check('\\Seen' in got[0]['flags'] if got else False, 'and \\Seen')


if __name__ == '__main__':
    h.main()
