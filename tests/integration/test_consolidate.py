"""Consolidation and the UIDL-reset guard (issue 3): several accounts into
one store with cross-account de-duplication, a provider that renumbers its
UIDLs, and `where` / `status` telling where each message went."""

import json
import os

import harness as h
from common import servers, sync

TIMEOUT = 420

USERS = {'alice': 'secret', 'bob': 'hunter2'}


def dedup_config(t, accounts, dedup=True, store_path=None, extra=''):
    """A maildir store at DEST/%u/Maildir, with dedup = "message-id"."""
    text = h.config_text(t.path('state'), store_path or t.path('dest', '%u', 'Maildir'),
                         accounts, extra)
    if dedup:
        text = text.replace('type = "maildir"\n', 'type = "maildir"\n  dedup = "message-id"\n', 1)
    return h.write_config(t.path('p3b.conf'), text)


def two_accounts(src, folder_b='INBOX', local_b='alice'):
    return [h.account_block('a-alice', src, user='alice', password='secret'),
            h.account_block('a-bob', src, user='bob', password='hunter2',
                            folder=folder_b, local_user=local_b)]


def status_json(t, conf):
    p = t.run_bridge(conf, 'status', '--json')
    t.require(p.returncode == 0, 'status --json exited %d: %s' % (p.returncode, p.stderr))
    return {a['name']: a for a in json.loads(p.stdout)['accounts']}


def all_files(root):
    """Every message file under a Maildir++ root, any folder."""
    out = h.maildir_files(root)
    for d in sorted(os.listdir(root)):
        if d.startswith('.') and d not in ('.', '..'):
            out += h.maildir_files(root, d)
    return out


def test_dedup_same_50_in_two_accounts(t):
    src, dst = servers(t, users=USERS)
    msgs = h.make_corpus(50, seed=31)
    h.seed(src, 'alice', msgs)
    h.seed(src, 'bob', msgs)
    # Both passes run at once, in small batches so that they interleave: a
    # message another account is storing right now is left for the next
    # pass, never stored twice. (Both into INBOX: dedup is per store and
    # folder, test_dedup_folder.py.)
    conf = dedup_config(t, two_accounts(src),
                        extra='max_parallel = 2\nbatch_messages = 2\n')
    p = sync(t, conf)
    print('  first sync:', ' | '.join(l for l in p.stderr.splitlines() if 'a-' in l))
    files = all_files(dst.maildir('alice'))
    t.check(len(files) == 50, '50 stored after the parallel pass, got %d' % len(files))
    p = sync(t, conf)
    files = all_files(dst.maildir('alice'))
    t.check(len(files) == 50, '50 stored, not 100: got %d' % len(files))
    t.check(h.imap_count(dst) == 50, 'IMAP shows 50 in INBOX')
    st = status_json(t, conf)
    imported = st['a-alice']['imported'] + st['a-bob']['imported']
    dups = st['a-alice']['duplicates'] + st['a-bob']['duplicates']
    print('  status: imported %d + %d, duplicates %d + %d' % (
        st['a-alice']['imported'], st['a-bob']['imported'],
        st['a-alice']['duplicates'], st['a-bob']['duplicates']))
    t.check(imported == 100, 'the state records all 100 UIDLs, got %d' % imported)
    t.check(dups == 50, '50 recorded as duplicates, got %d' % dups)
    t.check(st['a-alice']['pending'] == 0 and st['a-bob']['pending'] == 0, 'nothing pending')
    # Every UIDL of both accounts is known to `where`.
    for user, acct in (('alice', 'a-alice'), ('bob', 'a-bob')):
        uidls = h.pop3_uidls(src, user, USERS[user])
        bad = [u for u in uidls if t.run_bridge(conf, 'where', acct, u).returncode != 0]
        t.check(not bad, '%s: where knows every UIDL (%d unknown)' % (acct, len(bad)))
    # A third pass imports nothing.
    p = sync(t, conf)
    t.check(p.stderr.count('0 new, 0 imported') == 2, 'third sync: nothing new: %s' % p.stderr)
    t.check(len(all_files(dst.maildir('alice'))) == 50, 'still 50')


def test_dedup_sequential_then_new_mail(t):
    src, dst = servers(t, users=USERS)
    msgs = h.make_corpus(20, seed=32)
    h.seed(src, 'alice', msgs)
    h.seed(src, 'bob', msgs)
    conf = dedup_config(t, two_accounts(src))
    sync(t, conf, 'a-alice')
    p = sync(t, conf, 'a-bob')
    t.check('20 new, 0 imported' in p.stderr, 'bob stores nothing: %s' % p.stderr)
    t.check('20 messages already in the store for another account' in p.stderr,
            'bob says why: %s' % p.stderr)
    # Same Message-ID but another body is a different message: stored.
    same_id = h.header(msgs[0], 'Message-ID')
    other = h.make_message(900, message_id=same_id, body=b'another body\r\n')
    h.seed(src, 'bob', [other, h.make_message(901)])
    p = sync(t, conf, 'a-bob')
    t.check('2 new, 2 imported' in p.stderr, 'a changed body and a new one stored: %s' % p.stderr)
    t.check(len(h.maildir_files(dst.maildir('alice'))) == 22, '22 files')


def test_dedup_only_within_one_store(t):
    # store.path has %u: alice's and bob's accounts write to two stores,
    # so each keeps its own copy.
    src, dst = servers(t, users=USERS)
    msgs = h.make_corpus(10, seed=33)
    h.seed(src, 'alice', msgs)
    h.seed(src, 'bob', msgs)
    conf = dedup_config(t, two_accounts(src, local_b='bob'))
    sync(t, conf)
    sync(t, conf)
    na, nb = len(h.maildir_files(dst.maildir('alice'))), len(h.maildir_files(dst.maildir('bob')))
    t.check((na, nb) == (10, 10), 'each store has its 10: %d, %d' % (na, nb))


def test_without_dedup_100(t):
    src, dst = servers(t, users=USERS)
    msgs = h.make_corpus(50, seed=31)
    h.seed(src, 'alice', msgs)
    h.seed(src, 'bob', msgs)
    conf = dedup_config(t, two_accounts(src, folder_b='Bob'), dedup=False,
                        extra='max_parallel = 2\n')
    sync(t, conf)
    n = len(all_files(dst.maildir('alice')))
    t.check(n == 100, 'without dedup: 100 stored, got %d' % n)
    st = status_json(t, conf)
    t.check(st['a-alice']['duplicates'] + st['a-bob']['duplicates'] == 0, 'no duplicates')


def test_dedup_into_imap_store(t):
    # The same through the IMAP store: APPENDUID recorded for the stored
    # copy, and each duplicate row points at that folder, UIDVALIDITY, UID.
    import imapstore as ist
    src = t.dovecot('src', users=USERS)
    msgs = h.make_corpus(50, seed=40)
    h.seed(src, 'alice', msgs)
    h.seed(src, 'bob', msgs)
    store = ist.dovecot_store(t)
    text = 'state_dir = %s\n%s%s\n%s' % (
        h.cq(t.path('state')), ist.store_block(store, extra='dedup = "message-id"'),
        'max_parallel = 2\nbatch_messages = 5\n', ''.join(two_accounts(src)))
    conf = h.write_config(t.path('p3b.conf'), text)
    sync(t, conf)
    sync(t, conf)
    folders = h.imap_list(store)
    n = sum(h.imap_count(store, folder=f) for f in ('INBOX', 'Bob') if f in folders)
    t.check(n == 50, 'IMAP store holds 50, not 100: %d' % n)
    st = status_json(t, conf)
    rows = st['a-alice']['imported'] + st['a-bob']['imported']
    locs = st['a-alice']['imap_locations'] + st['a-bob']['imap_locations']
    dups = st['a-alice']['duplicates'] + st['a-bob']['duplicates']
    print('  imap: %d rows, %d with IMAP UID, %d duplicates' % (rows, locs, dups))
    t.check((rows, dups) == (100, 50), 'all 100 UIDLs recorded, 50 as duplicates')
    t.check(locs == 100, 'UIDVALIDITY/UID known for all 100 rows (UIDPLUS): %d' % locs)
    # Passes interleave: either account may hold a given duplicate.
    out = ''
    for acct, user in (('a-bob', 'bob'), ('a-alice', 'alice')):
        for u in h.pop3_uidls(src, user, USERS[user])[:10]:
            p = t.run_bridge(conf, 'where', acct, u)
            if 'duplicate:' in p.stdout:
                out = p.stdout
                break
        if out:
            break
    t.check('imap:       UIDVALIDITY ' in out and 'duplicate:  stored once' in out,
            'where shows a duplicate with its UID: %r' % out)


def test_uidl_reset_imports_nothing(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(40, seed=34))
    conf = dedup_config(t, [h.account_block('acct', src)], dedup=False)
    p = sync(t, conf)
    t.check('40 imported' in p.stderr, '40 imported first: %s' % p.stderr)
    before = set(h.pop3_uidls(src))
    src.restart(uidl_format='%v-%u')
    after = set(h.pop3_uidls(src))
    t.require(len(after) == 40 and not (before & after),
              'the provider renumbered all 40 UIDLs (%d kept)' % len(before & after))
    p = sync(t, conf)
    t.check('0 imported' in p.stderr, '0 re-imported: %s' % p.stderr)
    t.check('acct: server renumbered 40 messages (UIDL reset)' in p.stderr,
            'the warning names the account: %s' % p.stderr)
    t.check(len(h.maildir_files(dst.maildir('alice'))) == 40, 'still 40 files')
    p = t.run_bridge(conf, 'status')
    t.check('warning:' in p.stdout and 'renumbered 40 messages' in p.stdout,
            'status shows the warning: %s' % p.stdout)
    st = status_json(t, conf)['acct']
    t.check(st['uidl_resets'] == 1 and 'renumbered 40' in (st['warning'] or ''),
            'status --json: uidl_resets 1 and the warning: %r' % st)
    t.check(st['imported'] == 40, 'still 40 imported')
    # The new UIDLs are the known ones now: nothing new, and `where` finds them.
    p = sync(t, conf)
    t.check('40 on server, 0 new' in p.stderr, 'next pass: nothing new: %s' % p.stderr)
    u = sorted(after)[0]
    p = t.run_bridge(conf, 'where', 'acct', u)
    t.check(p.returncode == 0 and 'delivered' in p.stdout, 'where knows %s: %s' % (u, p.stdout))


def test_partial_reset_imports_only_new(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(20, seed=35))
    conf = dedup_config(t, [h.account_block('acct', src)], dedup=False)
    sync(t, conf)
    src.restart(uidl_format='%v-%u')
    h.seed(src, 'alice', h.make_corpus(5, seed=36))
    p = sync(t, conf)
    t.check('25 on server, 5 new, 5 imported' in p.stderr,
            'only the 5 new imported: %s' % p.stderr)
    t.check('renumbered 20 messages' in p.stderr, '20 adopted: %s' % p.stderr)
    t.check(len(h.maildir_files(dst.maildir('alice'))) == 25, '25 files')
    # Below the threshold nothing is compared: 5 unknown of 30 is new mail.
    h.seed(src, 'alice', h.make_corpus(5, seed=37))
    p = sync(t, conf)
    t.check('5 new, 5 imported' in p.stderr, 'new mail: %s' % p.stderr)
    st = status_json(t, conf)['acct']
    t.check(st['uidl_resets'] == 1, 'one reset recorded: %r' % st)


def test_reset_guard_off(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(10, seed=38))
    conf = dedup_config(t, [h.account_block('acct', src, extra='uidl_reset_threshold = 0')],
                        dedup=False)
    sync(t, conf)
    src.restart(uidl_format='%v-%u')
    p = sync(t, conf)
    t.check('10 new, 10 imported' in p.stderr, 'guard off: imported again: %s' % p.stderr)


def test_where(t):
    src, dst = servers(t, users=USERS)
    msgs = h.make_corpus(3, seed=39)
    h.seed(src, 'alice', msgs)
    h.seed(src, 'bob', msgs)
    conf = dedup_config(t, two_accounts(src))
    sync(t, conf, 'a-alice')
    sync(t, conf, 'a-bob')
    u = h.pop3_uidls(src)[0]
    p = t.run_bridge(conf, 'where', 'a-alice', u)
    out = p.stdout
    print('  ' + out.replace('\n', '\n  '))
    t.check(p.returncode == 0, 'where exits 0: %s' % p.stderr)
    t.check(out.startswith('a-alice %s\n' % u), 'names account and UIDL')
    t.check('state:      delivered' in out and 'folder:     INBOX' in out, 'state and folder')
    t.check('store:      maildir:%s' % dst.maildir('alice') in out, 'the store')
    loc = [l.split(':', 1)[1].strip() for l in out.splitlines() if l.startswith('  location:')]
    t.check(loc and any(f.endswith(loc[0].split('/')[-1]) for f in
                        h.maildir_files(dst.maildir('alice'))), 'location is a stored file: %r' % loc)
    t.check('delivered:' in out and 'message-id: <' in out, 'times and Message-ID')
    ub = h.pop3_uidls(src, 'bob', 'hunter2')[0]
    p = t.run_bridge(conf, 'where', 'a-bob', ub)
    t.check(p.returncode == 0 and 'duplicate:  stored once, as account a-alice' in p.stdout
            and 'folder:     INBOX' in p.stdout and loc and loc[0] in p.stdout,
            'bob\'s copy points at alice\'s: %s' % p.stdout)
    p = t.run_bridge(conf, 'where', 'a-alice', 'no-such-uidl')
    t.check(p.returncode == 1 and 'a-alice: no message with UIDL no-such-uidl' in p.stderr,
            'unknown UIDL: exit 1 and a clear line: %d %s' % (p.returncode, p.stderr))
    p = t.run_bridge(conf, 'where', 'nobody', u)
    t.check(p.returncode == 64, 'unknown account: usage error (%d)' % p.returncode)
    p = t.run_bridge(conf, 'where', 'a-alice')
    t.check(p.returncode == 64, 'missing UIDL: usage error (%d)' % p.returncode)


if __name__ == '__main__':
    h.main()
