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
KILLS = 22


def kill_repeatedly(t, conf, seed, stop_when, progress):
    """Starts `sync` and SIGKILLs it after a random delay, until KILLS kills
    landed while it was still running. Returns (kills, runs, progress at
    each kill)."""
    rnd = random.Random(seed)
    kills = runs = 0
    seen = []
    while kills < KILLS and runs < 200 and not stop_when():
        runs += 1
        p = subprocess.Popen([h.bridge_binary(), '-q', '-c', conf, 'sync'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.02, 0.12))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
            seen.append(progress())
        p.wait()
        # The pass runs in a child that dies with its parent; wait until it
        # released the account lock so the next run does not just see "busy".
        time.sleep(0.05)
    return kills, runs, seen


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
    done = lambda: len(h.maildir_files(dst.maildir('alice'))) >= 300 and (
        leave_on_server or h.pop3_stat(src)[0] == 0)
    stored = lambda: len(h.maildir_files(dst.maildir('alice')))
    kills, runs, seen = kill_repeatedly(t, conf, seed, done, stored)
    print('  %d runs, %d killed mid-run; messages stored at each kill: %s' % (runs, kills, seen))
    t.check(kills >= 20, 'at least 20 kills landed, got %d' % kills)
    mid = [n for n in seen if 0 < n < 300]
    t.check(len(set(mid)) >= 8, 'kills spread over the import (%d distinct points)' % len(set(mid)))
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
