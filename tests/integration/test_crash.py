"""Crash safety: pop3bridge is killed with SIGKILL at random points of an
import, then finishes: the Maildir holds exactly the server's messages,
none lost, none twice, and no stray temp file."""

import collections
import os
import random
import signal
import subprocess
import time

import harness as h
from common import config, servers, stored_files

TIMEOUT = 600
KILLS = 25


def kill_repeatedly(t, conf, seed, stored):
    """Starts `sync` and SIGKILLs it at random points: a few while it
    connects and recovers, then when the store has reached random message
    counts (plus a random few milliseconds, to land anywhere in a batch:
    between RETRs, the pending commit, the renames, the delivered commit),
    and a few after the last message (DELE, QUIT, their commits). Targets
    are counts, not times, so a slow build (ASan) is hit as densely as a
    fast one. Returns (runs, store size at each kill that landed)."""
    rnd = random.Random(seed)
    targets = ([0] * 3 + sorted(rnd.sample(range(1, 300), KILLS - 5)) + [300] * 2)
    runs, seen = 0, []
    for target in targets:
        runs += 1
        p = subprocess.Popen([h.bridge_binary(), '-q', '-c', conf, 'sync'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if target == 0:
            time.sleep(rnd.uniform(0.005, 0.05))
        else:
            # Each targeted run gets past its own recovery and stores at
            # least one batch before it dies.
            target = max(target, min(stored() + 1, 300))
            while p.poll() is None and stored() < target:
                time.sleep(0.002)
            time.sleep(rnd.uniform(0, 0.015 if target < 300 else 0.15))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            seen.append(stored())
        p.wait()
        # The pass runs in a child that must die with its parent (even
        # while it works with the mail owner's ids).
        try:
            h.wait_for(lambda: not survivors(conf), 2, what='no orphan pass')
        except TimeoutError:
            t.check(False, 'a pass outlived its killed parent: %s' % survivors(conf))
    return runs, seen


def survivors(conf):
    """pids of pop3bridge processes still running with this config."""
    out = subprocess.run(['pgrep', '-f', conf], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def finish(t, conf):
    for _ in range(20):
        p = t.run_bridge(conf, 'sync')
        if p.returncode == 0:
            return p
        time.sleep(0.2)
    t.fail('the final sync never succeeded: %s' % p.stderr)


def check_store(t, src_ids, dst):
    files = stored_files(dst)
    got = collections.Counter(h.header(f, 'Message-ID') for f in files)
    dups = sum(c - 1 for c in got.values())
    lost = set(src_ids) - set(got)
    print('  %d messages stored, %d duplicated, %d lost' % (len(files), dups, len(lost)))
    t.check(dups == 0, '%d duplicates' % dups)
    t.check(not lost, '%d lost' % len(lost))
    t.check(set(got) == set(src_ids), 'the store holds exactly the server set')
    tmp = os.listdir(os.path.join(dst.maildir('alice'), 'tmp'))
    t.check(tmp == [], 'no stray temp file: %r' % tmp[:5])
    t.check(h.imap_count(dst) == len(src_ids), 'IMAP shows %d' % len(src_ids))


def crash_test(t, leave_on_server, seed):
    src, dst = servers(t)
    msgs = h.make_corpus(300, seed=seed)
    src_ids = [h.header(m, 'Message-ID') for m in msgs]
    h.seed(src, 'alice', msgs)
    extra = 'leave_on_server = %s' % ('true' if leave_on_server else 'false')
    # Small batches make many distinct crash points: between RETRs, between
    # the pending commit, the renames, the delivered commit, DELE and QUIT.
    conf = config(t, [h.account_block('acct', src, extra=extra)],
                  extra='batch_messages = 5\n')
    stored = lambda: len(h.maildir_files(dst.maildir('alice')))
    runs, seen = kill_repeatedly(t, conf, seed, stored)
    print('  %d runs, %d killed mid-run; messages stored at each kill: %s'
          % (runs, len(seen), seen))
    t.check(len(seen) >= 20, 'at least 20 kills landed, got %d' % len(seen))
    mid = set(n for n in seen if 0 < n < 300)
    t.check(len(mid) >= 12, 'kills spread over the import (%d distinct points)' % len(mid))
    finish(t, conf)
    check_store(t, src_ids, dst)
    return src


def test_sigkill_during_import(t):
    crash_test(t, True, seed=31)


def test_sigkill_during_import_and_deletion(t):
    src = crash_test(t, False, seed=32)
    t.check(h.pop3_stat(src)[0] == 0, 'every message deleted from the server in the end')


if __name__ == '__main__':
    h.main()
