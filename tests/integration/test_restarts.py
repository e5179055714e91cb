"""Restarts and contention: the source Dovecot and the IMAP store Dovecot
restarted in the middle of a pass (killed, started again on the same
ports), and the state database locked by another process for longer than
the busy timeout (30 s). Each faulted pass fails with one line and leaves
the state no further than the store and nothing deleted unstored; the
next pass is exact. Under the lock the pass is a temporary failure (75),
the daemon keeps running and imports every account once it is released.
(The IMAP store's BYE in the middle of an APPEND is in
test_hostile_imap.py.)"""

import atexit
import os
import sqlite3
import subprocess
import threading
import time

import harness as h
import faultcheck as fc
import imapstore as ist

TIMEOUT = 900

_tally = None


def tally():
    global _tally
    if _tally is None:
        _tally = fc.Tally('restarts', 'server restarts and a locked state database')
        atexit.register(_tally.save)
    return _tally


def corpus():
    return h.make_corpus(24, seed=41) + [h.make_message(90 + i, size=200000) for i in range(4)]


def maildir_hashes(root):
    out = []
    for f in h.maildir_files(root):
        with open(f, 'rb') as fh:
            out.append(h.body_hash(h.imap_view(fh.read())))
    return out


def server_hashes(src, user):
    out = []
    for f in h.maildir_files(src.maildir(user)):
        with open(f, 'rb') as fh:
            out.append(h.body_hash(h.imap_view(h.pop3_view(fh.read()))))
    return out


def run_until(t, conf, stored, target, timeout=120):
    """Starts `sync`, returns it once the store holds target messages."""
    p = subprocess.Popen([h.bridge_binary(), '-q', '-c', conf, 'sync'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    h.poll(lambda: p.poll() is not None or stored() >= target, timeout, 0.005)
    return p


def finish(t, p, what):
    out, err = p.communicate(timeout=180)
    lines = [l for l in err.splitlines() if l.strip()]
    print('    %s: exit %d: %s' % (what, p.returncode, ' | '.join(lines)[:300]))
    t.check(h.sanitizer_report(err) is None, '%s: %s' % (what, h.sanitizer_report(err)))
    if p.returncode != 0:
        t.check(len(lines) == 1 and ': acct: ' in lines[0], '%s: not one clear line: %r'
                % (what, lines[:4]))
    return p.returncode, err


def test_source_restart_mid_pass(t):
    msgs = corpus()
    want = fc.expected_hashes(msgs)
    points = fc.scale([6], [3, 9, 15, 21])
    users = ['s%d' % i for i in range(len(points))]
    src = t.dovecot('src', users={u: 'secret' for u in users})
    for u, at in zip(users, points):
        h.seed(src, u, msgs)
        acct = h.account_block('acct', src, user=u, local_user=u, tls='none',
                               extra='leave_on_server = false')
        conf = h.write_config(t.path('conf-' + u), h.config_text(
            t.path('state', u), t.path('dest', '%u', 'Maildir'), [acct], 'batch_messages = 3\n'))
        root = t.path('dest', u, 'Maildir')
        what = '%s: source restarted at %d stored' % (u, at)
        p = run_until(t, conf, lambda: len(h.maildir_files(root)), at)
        src.restart()
        rc, err = finish(t, p, what)
        t.check(rc != 0 or len(maildir_hashes(root)) == len(msgs), '%s: exit 0 with %d of %d'
                % (what, len(maildir_hashes(root)), len(msgs)))
        ahead = fc.maildir_ahead(t.path('state', u), root)
        t.check(not ahead, '%s: state ahead of the store: %s' % (what, ahead[:3]))
        gone = fc.lost_from_server(want, server_hashes(src, u), maildir_hashes(root))
        t.check(gone == 0, '%s: %d deleted from the server, not stored' % (what, gone))
        q = t.run_bridge(conf, '-q', 'sync')
        t.check(q.returncode == 0, '%s: the next pass: %s' % (what, q.stderr))
        lost, dup = fc.compare(want, maildir_hashes(root))
        t.check(lost == 0 and dup == 0, '%s: %d lost, %d duplicated' % (what, lost, dup))
        t.check(not server_hashes(src, u), '%s: mail left on the server' % what)
        tally().case(lost=lost + gone, dup=dup, crash=rc < 0,
                     note=None if lost + dup + gone == 0 else what)


def test_store_restart_mid_pass(t):
    msgs = corpus()
    want = fc.expected_hashes(msgs)
    points = fc.scale([6], [3, 9, 15, 21])
    users = ['r%d' % i for i in range(len(points))]
    src = t.dovecot('src', users={u: 'secret' for u in users})
    store = ist.dovecot_store(t, users={u: 'secret' for u in users})
    for u, at in zip(users, points):
        h.seed(src, u, msgs)
        acct = h.account_block('acct', src, user=u, local_user=u, tls='none',
                               extra='leave_on_server = false')
        conf = h.write_config(t.path('conf-' + u), h.config_with_store(
            t.path('state', u), ist.store_block(store), [acct], 'batch_messages = 3\n'))
        what = '%s: store restarted at %d stored' % (u, at)
        p = run_until(t, conf, lambda: ist.stored_count(store, u), at)
        store.restart()
        rc, err = finish(t, p, what)
        stored = sorted(h.body_hash(ist.strip_key(f['body']))
                        for f in h.imap_fetch_all(store, u, 'secret'))
        gone = fc.lost_from_server(want, server_hashes(src, u), stored)
        t.check(gone == 0, '%s: %d deleted from the server, not stored' % (what, gone))
        ahead = fc.imap_ahead(t.path('state', u), store, u)
        t.check(not ahead, '%s: state ahead of the store: %s' % (what, ahead[:3]))
        q = t.run_bridge(conf, '-q', 'sync')
        t.check(q.returncode == 0, '%s: the next pass: %s' % (what, q.stderr))
        stored = sorted(h.body_hash(ist.strip_key(f['body']))
                        for f in h.imap_fetch_all(store, u, 'secret'))
        lost, dup = fc.compare(want, stored)
        t.check(lost == 0 and dup == 0, '%s: %d lost, %d duplicated' % (what, lost, dup))
        t.check(not server_hashes(src, u), '%s: mail left on the server' % what)
        tally().case(lost=lost + gone, dup=dup, crash=rc < 0,
                     note=None if lost + dup + gone == 0 else what)


class Locker:
    """Another process holding the state database: a python sqlite3
    connection in BEGIN EXCLUSIVE for secs seconds, in a thread."""

    def __init__(self, db, secs):
        self.db, self.secs = db, secs
        self.held = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()
        self.held.wait(30)

    def _run(self):
        con = sqlite3.connect(self.db, timeout=60, isolation_level=None)
        con.execute('BEGIN EXCLUSIVE')
        self.held.set()
        time.sleep(self.secs)
        con.execute('ROLLBACK')
        con.close()

    def join(self):
        self.th.join(self.secs + 30)


def test_state_locked(t):
    """Longer than the busy timeout: the pass waits 30 s, then fails as a
    temporary failure (75) with nothing lost; a daemon with two accounts
    goes on and imports both once the lock is gone."""
    users = ['alice', 'bob']
    src = t.dovecot('src', users={u: 'secret' for u in users})
    msgs = h.make_corpus(6, seed=43)
    want = fc.expected_hashes(msgs)
    accts = [h.account_block(u, src, user=u, local_user=u, tls='none',
                             extra='leave_on_server = false\n  poll_interval = 2')
             for u in users]
    conf = h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), accts))
    p = t.run_bridge(conf, '-q', 'sync')
    t.require(p.returncode == 0, 'first pass (empty): %s' % p.stderr)
    for u in users:
        h.seed(src, u, msgs)
    db = t.path('state', 'state.db')
    if fc.scale(False, True):
        lock = Locker(db, 36)
        t0 = time.monotonic()
        p = t.run_bridge(conf, '-q', 'sync', 'alice', timeout=120)
        secs = time.monotonic() - t0
        lock.join()
        print('    sync under the lock: exit %d after %.0fs: %s'
              % (p.returncode, secs, p.stderr.strip()))
        t.check(p.returncode == 75, 'a locked database is a temporary failure: exit %d'
                % p.returncode)
        t.check(len(server_hashes(src, 'alice')) == len(msgs), 'nothing left the server')
    # the daemon: passes fail while the lock lasts, the daemon does not
    lock = Locker(db, 36)
    d = t.start_bridge(conf, 'run')
    lock.join()
    alive = d.poll() is None
    t.check(alive, 'the daemon survived the lock: exit %s' % d.returncode)
    done = h.poll(lambda: all(len(maildir_hashes(t.path('dest', u, 'Maildir'))) == len(msgs)
                              for u in users), 60)
    h.stop_process(d)
    with open(d.log_path) as f:
        log = f.read()
    print('    daemon log under the lock: %s' % ' | '.join(
        l for l in log.splitlines() if 'lock' in l or 'busy' in l)[:400])
    t.check(done, 'both accounts imported after the lock')
    for u in users:
        lost, dup = fc.compare(want, maildir_hashes(t.path('dest', u, 'Maildir')))
        t.check(lost == 0 and dup == 0, '%s: %d lost, %d duplicated' % (u, lost, dup))
        t.check(not server_hashes(src, u), '%s: mail left on the server' % u)
        tally().case(lost=lost, dup=dup, crash=not alive,
                     note=None if lost + dup == 0 else 'locked state: ' + u)


if __name__ == '__main__':
    h.main()
