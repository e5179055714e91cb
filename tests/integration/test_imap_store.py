"""The IMAP store (store/imap.c): POP3 from the Dovecot provider, APPEND
into another Dovecot over IMAPS or STARTTLS with a master user, read back
over IMAP as the user would.

Every stored message starts with pop3bridge's "X-Pop3bridge-Key: KEY" header
line (how a crashed import is found again): bodies are compared after
imapstore.strip_key()."""

import collections
import os
import random
import re
import signal
import sqlite3
import subprocess
import time

import harness as h
import imapstore as ist
from common import header_instant, sync

TIMEOUT = 600
KILLS = 25


def source(t, msgs, users=None):
    src = t.dovecot('src', users=users)
    h.seed(src, 'alice', msgs)
    return src


def fetched_hashes(fetched):
    return sorted(h.body_hash(ist.strip_key(f['body'])) for f in fetched)


def test_import_imaps_master_user(t):
    msgs = h.make_corpus(60, seed=5)
    src = source(t, msgs)
    store = ist.dovecot_store(t)
    conf = ist.config(t, store, [h.account_block('acct', src)])
    t0 = time.monotonic()
    p = sync(t, conf)
    secs = time.monotonic() - t0
    print('  imported 60 messages (%d KB) in %.2fs: %.0f msg/s'
          % (sum(map(len, msgs)) // 1024, secs, 60 / secs))
    t.check('60 imported' in p.stderr, 'summary says 60 imported: %s' % p.stderr)

    retr = h.pop3_retr_all(src)
    fetched = h.imap_fetch_all(store)
    t.check(len(fetched) == 60, 'IMAP shows 60 messages, got %d' % len(fetched))
    t.check(fetched_hashes(fetched) == sorted(h.body_hash(h.imap_view(r)) for r in retr),
            'bodies (minus the key line) are RETR byte for byte')
    keys = [ist.key_header(f['body']) for f in fetched]
    t.check(all(keys) and len(set(keys)) == 60, 'each message has its own key line')
    wrong = [f['uid'] for f in fetched
             if f['internaldate'] != header_instant(ist.strip_key(f['body']))]
    t.check(not wrong, 'INTERNALDATE is the Received/Date instant (%d wrong)' % len(wrong))
    t.check(all('\\Seen' not in f['flags'] for f in fetched), 'imported unread')
    nul = [f for f in fetched if b'\x80' in f['body'] and b'NUL' in f['body']]
    print('  messages with the NUL byte (shown as 0x80): %d' % len(nul))

    p = sync(t, conf)
    t.check('0 new, 0 imported' in p.stderr, 'second sync imports 0: %s' % p.stderr)
    t.check(h.imap_count(store) == 60, 'still 60')

    # Locations carry APPENDUID; rows left pending (as by a crash after
    # APPEND) are found again by their key header, not stored twice.
    db = sqlite3.connect(t.path('state', 'state.db'))
    locs = [r[0] for r in db.execute('SELECT location FROM messages')]
    t.check(len(locs) == 60 and all(re.fullmatch(r'INBOX;UIDVALIDITY=\d+;UID=\d+', l or '')
                                    for l in locs), 'locations with APPENDUID: %r' % locs[:3])
    with db:
        db.execute('UPDATE messages SET state = 0, location = NULL')
    db.close()
    p = sync(t, conf)
    t.check('recovered 60 interrupted deliveries (60 already stored, 0 to fetch again)'
            in p.stderr, 'pending rows reconciled by find(): %s' % p.stderr)
    t.check(h.imap_count(store) == 60, 'still 60 after reconciliation')
    st = t.run_bridge(conf, 'status', '--json')
    t.check(st.returncode == 0, 'status works: %s' % st.stderr)
    log = h.tail(store.log_path, 400)
    t.check('alice*%s' % ist.MASTER in log or 'master' in log.lower(),
            'logged in through the master user')


def test_seen_and_nonascii_nested_folder(t):
    msgs = h.make_corpus(12, seed=6)
    src = source(t, msgs)
    store = ist.dovecot_store(t)
    folder = 'Archiv/Entw\u00fcrfe & Notizen'
    conf = ist.config(t, store, [h.account_block('acct', src, folder=folder,
                                                 extra='import_seen = true')])
    sync(t, conf)
    folders = h.imap_list(store)
    t.check(folder in folders, 'nested non-ASCII folder as IMAP shows it: %r' % folders)
    t.check(folder in ist.subscribed(store), 'and subscribed: %r' % ist.subscribed(store))
    fetched = h.imap_fetch_all(store, folder=folder)
    t.check(len(fetched) == 12, '12 in the folder, got %d' % len(fetched))
    t.check(all('\\Seen' in f['flags'] for f in fetched), 'import_seen => \\Seen')
    t.check(h.imap_count(store) == 0, 'nothing in INBOX')
    t.check(fetched_hashes(fetched) ==
            sorted(h.body_hash(h.imap_view(r)) for r in h.pop3_retr_all(src)),
            'bodies intact')


def test_starttls(t):
    src = source(t, h.make_corpus(8, seed=7))
    store = ist.dovecot_store(t)
    conf = ist.config(t, store, [h.account_block('acct', src)], tls='starttls')
    p = sync(t, conf)
    t.check('8 imported' in p.stderr, '8 imported over STARTTLS: %s' % p.stderr)
    t.check(h.imap_count(store) == 8, 'IMAP shows 8')


def test_untrusted_or_refused_store(t):
    src = source(t, h.make_corpus(5, seed=8))
    store = ist.dovecot_store(t)
    # The test CA is not in the system store: the certificate is refused
    # before any credential is sent, and nothing is fetched or deleted.
    conf = ist.config(t, store, [h.account_block('acct', src,
                                                 extra='leave_on_server = false')],
                      ca_file=None)
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode != 0, 'sync fails with an unknown CA')
    t.check('not trusted' in p.stderr and 'localhost' in p.stderr,
            'error names the host and the certificate: %s' % p.stderr.strip())
    t.check(h.pop3_stat(src)[0] == 5, 'nothing deleted from the provider')
    t.check(ist.stored_count(store) == 0, 'nothing stored')
    # A wrong password: one line, naming the host, never the password.
    conf = ist.config(t, store, [h.account_block('acct', src)], password='wr0ng-pw',
                      name='bad.conf')
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode != 0, 'sync fails with a wrong password')
    t.check('imap store localhost' in p.stderr and 'refused' in p.stderr,
            'error names the store and the refusal: %s' % p.stderr.strip())
    t.check('wr0ng-pw' not in p.stderr + p.stdout, 'the password is not shown')
    t.check(h.pop3_stat(src)[0] == 5, 'still nothing deleted')


def kill_repeatedly(conf, seed, stored, total):
    """SIGKILLs `sync` at store counts (see test_crash.py): a few at
    start-up, most at random counts plus a few ms, two at the end."""
    rnd = random.Random(seed)
    targets = [0] * 3 + sorted(rnd.sample(range(1, total), KILLS - 5)) + [total] * 2
    seen = []
    for target in targets:
        p = subprocess.Popen([h.bridge_binary(), '-q', '-c', conf, 'sync'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if target == 0:
            time.sleep(rnd.uniform(0.005, 0.05))
        else:
            target = max(target, min(stored() + 1, total))
            while p.poll() is None and stored() < target:
                time.sleep(0.002)
            time.sleep(rnd.uniform(0, 0.015 if target < total else 0.15))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            seen.append(stored())
        p.wait()
        time.sleep(0.05)
    return seen


def test_sigkill_during_imap_import(t):
    total = 200
    msgs = h.make_corpus(total, seed=41)
    src_ids = [h.header(m, 'Message-ID') for m in msgs]
    src = source(t, msgs)
    store = ist.dovecot_store(t)
    conf = ist.config(t, store, [h.account_block('acct', src,
                                                 extra='leave_on_server = false')],
                      extra='batch_messages = 5\n')
    seen = kill_repeatedly(conf, 41, lambda: ist.stored_count(store), total)
    print('  %d kills landed; messages stored at each: %s' % (len(seen), seen))
    t.check(len(seen) >= 20, 'at least 20 kills landed, got %d' % len(seen))
    t.check(len(set(n for n in seen if 0 < n < total)) >= 12, 'kills spread over the import')
    for _ in range(20):
        p = t.run_bridge(conf, 'sync')
        if p.returncode == 0:
            break
        time.sleep(0.2)
    t.require(p.returncode == 0, 'the final sync succeeds: %s' % p.stderr)
    fetched = h.imap_fetch_all(store)
    ids = collections.Counter(h.header(ist.strip_key(f['body']), 'Message-ID') for f in fetched)
    keys = collections.Counter(ist.key_header(f['body']) for f in fetched)
    dups = sum(c - 1 for c in ids.values())
    lost = set(src_ids) - set(ids)
    print('  %d messages stored, %d duplicated, %d lost' % (len(fetched), dups, len(lost)))
    t.check(dups == 0 and max(keys.values()) == 1, '%d duplicates' % dups)
    t.check(not lost, '%d lost' % len(lost))
    t.check(set(ids) == set(src_ids), 'the store holds exactly the server set')
    spool = t.path('state', 'spool', 'imap')
    left = os.listdir(spool) if os.path.isdir(spool) else []
    t.check(left == [], 'no stray temp file: %r' % left[:5])
    t.check(h.pop3_stat(src)[0] == 0, 'every message deleted from the provider')


def asan_build():
    return 'asan' in h.bridge_binary()


def test_message_refused_by_the_store_does_not_block_the_rest(t):
    """An IMAP server that refuses one message (here: over Dovecot's
    quota_max_mail_size) must not stop the import at that message: the
    others are stored, the refused one stays on the server (not deleted),
    and the pass says which one, every pass, until it fits."""
    quota = ('mail_plugins = $mail_plugins quota\n'
             'plugin {\n  quota = count:User quota\n  quota_vsizes = yes\n'
             '  quota_max_mail_size = 100k\n}\n')
    src = t.dovecot('src')
    store = ist.dovecot_store(t, extra=quota)
    msgs = [h.make_message(i, size=3000) for i in range(4)]
    msgs.insert(1, h.make_message(99, size=300 * 1024, subject='too big'))
    h.seed(src, 'alice', msgs)
    conf = ist.config(t, store, [h.account_block("acct", src, extra="leave_on_server = false")])
    for attempt in (1, 2):
        p = t.run_bridge(conf, 'sync')
        t.check(p.returncode == 65, 'pass %d exits 65 (EX_DATAERR), got %d: %s'
                % (attempt, p.returncode, p.stderr))
        t.check('refused' in p.stderr and 'acct:' in p.stderr, 'says so: %r' % p.stderr)
        got = [h.header(f['body'], 'Subject') for f in h.imap_fetch_all(store)]
        t.check(sorted(got) == ['Test message %d' % i for i in range(4)],
                'the other four are stored: %r' % got)
        t.check(h.pop3_stat(src)[0] == 1, 'only the refused one is left on the server')
    s = t.run_bridge(conf, 'status', '--json').stdout
    t.check('refused' in s, 'status shows the error: %s' % s)


def test_50mb_message_rss(t):
    if not os.path.exists('/usr/bin/time'):
        t.skip('/usr/bin/time is not installed (package time)')
    big = h.big_message(50)
    src = source(t, [big, h.make_message(1)])
    store = ist.dovecot_store(t)
    conf = ist.config(t, store, [h.account_block('acct', src)])
    p = subprocess.run(['/usr/bin/time', '-v', h.bridge_binary(), '-c', conf, 'sync'],
                       capture_output=True, text=True, timeout=400)
    t.require(p.returncode == 0, 'sync under time -v: %s' % p.stderr[-800:])
    m = re.search(r'Maximum resident set size \(kbytes\): (\d+)', p.stderr)
    t.require(m, 'time -v printed the peak RSS')
    kb = int(m.group(1))
    print('  peak RSS appending a %.1f MB message: %d KB (%.1f MB)'
          % (len(big) / 1e6, kb, kb / 1024))
    if asan_build():
        print('  (ASan build: shadow memory inflates RSS; bound checked on the release build)')
    else:
        t.check(kb < 32 * 1024, 'peak RSS %d KB < 32 MB' % kb)
    fetched = h.imap_fetch_all(store)
    t.check(len(fetched) == 2, 'both stored')
    t.check(sorted(h.body_hash(h.imap_view(r)) for r in h.pop3_retr_all(src)) ==
            fetched_hashes(fetched), 'the big message is intact')


if __name__ == '__main__':
    h.main()
