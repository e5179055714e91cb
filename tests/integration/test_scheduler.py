"""The scheduler and what it shows: max_per_host (Dovecot's own log of
logins says how many connections were open at once), one `run` per
state_dir, sd_notify (READY, STATUS, WATCHDOG pings), max_parallel on
SIGHUP, the per-pass summary line, and sync's progress on a terminal
(a pseudo-terminal here) but not in a pipe or with -q."""

import os
import pty
import re
import select
import signal
import socket
import subprocess
import time

import harness as h
from common import config, servers, stored_files

TIMEOUT = 300
LOGIN = re.compile(r'pop3-login: Info: Login: user=<([^>]*)>.*session=<([^>]*)>')
END = re.compile(r'pop3\(([^)]*)\)<\d+><([^>]*)>: Info: Disconnected')


def concurrency(log_path):
    """The most POP3 sessions logged in at once, in the log's order."""
    open_, most = set(), 0
    with open(log_path, errors='replace') as f:
        for line in f:
            m = LOGIN.search(line)
            if m:
                open_.add(m.group(2))
                most = max(most, len(open_))
                continue
            m = END.search(line)
            if m:
                open_.discard(m.group(2))
    return most


def _users(n, prefix='u'):
    return {'%s%02d' % (prefix, i): 'pw%02d' % i for i in range(n)}


def _seed_many(src, users, per_user, size=30000):
    for u in users:
        h.seed(src, u, [h.make_message(i, size=size, tag=u) for i in range(per_user)])


def _accounts(src, users, extra=''):
    return [h.account_block('acct-%s' % u, src, user=u, password=pw, local_user=u, extra=extra)
            for u, pw in sorted(users.items())]


def test_max_per_host_in_sync(t):
    users = _users(6)
    src, dst = servers(t, users=users)
    _seed_many(src, users, 25)
    conf = config(t, _accounts(src, users), extra='max_parallel = 6\nmax_per_host = 2\n')
    p = t.run_bridge(conf, 'sync')
    t.require(p.returncode == 0, 'sync: %s' % p.stderr[-500:])
    got = concurrency(src.log_path)
    t.check(got == 2, 'at most 2 (and so many) logged in at once with max_per_host = 2: %d' % got)
    for u in users:
        t.check(len(stored_files(dst, user=u)) == 25, '%s imported' % u)
    # The control: the log shows more when more are allowed.
    users2 = _users(6, 'v')
    src2 = t.dovecot('src2', users=users2)
    _seed_many(src2, users2, 25)
    conf2 = config(t, _accounts(src2, users2), extra='max_parallel = 6\nmax_per_host = 6\n',
                   name='p3b-2.conf')
    p = t.run_bridge(conf2, 'sync')
    t.require(p.returncode == 0, 'sync 2: %s' % p.stderr[-500:])
    t.check(concurrency(src2.log_path) > 2, 'with max_per_host = 6 more than 2 at once: %d'
            % concurrency(src2.log_path))


def _notify_socket(t):
    path = t.path('notify.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    t.cleanup(s.close)
    return s, path


def _datagrams(s, seconds):
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            out.append((time.monotonic(), s.recv(4096).decode()))
    return out


def test_one_run_per_state_dir_and_notify(t):
    src, dst = servers(t)
    h.seed(src, 'alice', [h.make_message(i, tag='n') for i in range(3)])
    conf = config(t, [h.account_block('acct', src, extra='poll_interval = 2')])
    sock, path = _notify_socket(t)
    d = t.start_bridge(conf, 'run', env={'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '2000000'})
    msgs = _datagrams(sock, 6)
    texts = [m for _, m in msgs]
    t.check('READY=1' in texts, 'READY=1 sent: %r' % texts[:5])
    pings = [ts for ts, m in msgs if m == 'WATCHDOG=1']
    t.check(len(pings) >= 4, 'WATCHDOG=1 about every second (WatchdogSec=2): %d in 6 s'
            % len(pings))
    t.check(all(b - a < 1.9 for a, b in zip(pings, pings[1:])), 'never 2 s without a ping: %r'
            % [round(b - a, 2) for a, b in zip(pings, pings[1:])])
    status = [m for m in texts if m.startswith('STATUS=')]
    t.check(any('idle' in m or 'polling' in m for m in status), 'STATUS= says what the cycle '
            'does: %r' % status)
    # A second run on the same state_dir is refused, naming the first one.
    p = t.run_bridge(conf, 'run', timeout=30)
    t.check(p.returncode == 75 and ('pid %d' % d.pid) in p.stderr and 'run.lock' in p.stderr,
            'second run refused with 75 naming pid %d: %d %r' % (d.pid, p.returncode, p.stderr))
    t.check(d.poll() is None, 'the first run still runs')
    # sync beside it: the account lock keeps one pass at a time (busy, 75,
    # or a pass of its own when the daemon's is not running).
    p = t.run_bridge(conf, 'sync', timeout=60)
    t.check(p.returncode in (0, 75), 'sync beside run: %d %s' % (p.returncode, p.stderr))
    t.check(len(stored_files(dst)) == 3, 'nothing imported twice')
    h.stop_process(d)
    t.check(d.returncode == 0, 'run stopped with 0 (got %s)' % d.returncode)
    with open(d.log_path) as f:
        log = f.read()
    t.check(re.search(r'pass: 1 account polled in \d+s, 0 failed, 3 messages imported', log),
            'one summary line per pass: %r' % log[-800:])


def test_max_parallel_changes_on_sighup(t):
    users = _users(6, 'w')
    src, dst = servers(t, users=users)
    _seed_many(src, users, 40)
    conf = config(t, _accounts(src, users), extra='max_parallel = 1\nmax_per_host = 6\n'
                  'poll_interval = 3600\n')
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: all(len(stored_files(dst, user=u)) == 40 for u in users), timeout=120,
               what='all 6 imported one at a time')
    t.check(concurrency(src.log_path) == 1, 'max_parallel = 1: one at a time (%d)'
            % concurrency(src.log_path))
    _seed_many(src, users, 40, size=31000)
    with open(conf) as f:
        text = f.read().replace('max_parallel = 1', 'max_parallel = 6')
    h.write_config(conf, text.replace('poll_interval = 3600', 'poll_interval = 1'))
    before = os.path.getsize(src.log_path)
    d.send_signal(signal.SIGHUP)
    h.wait_for(lambda: all(len(stored_files(dst, user=u)) == 80 for u in users), timeout=120,
               what='the new mail imported after the reload')
    with open(src.log_path, errors='replace') as f:
        f.seek(before)
        tail = t.path('after-hup.log')
        with open(tail, 'w') as o:
            o.write(f.read())
    t.check(concurrency(tail) > 1, 'after SIGHUP with max_parallel = 6 several at once: %d'
            % concurrency(tail))


def _holding(pids, path):
    """Those of pids with path open."""
    out = []
    for p in pids:
        try:
            fds = os.listdir('/proc/%d/fd' % p)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink('/proc/%d/fd/%s' % (p, fd)) == path:
                    out.append(p)
                    break
            except OSError:
                pass
    return out


def _idle_holders(t, src, dst, users, name):
    """Runs the daemon over users (one pass each, then idle): the children
    that hold state.db open once every pass has ended, whether the daemon
    itself held it, and whether every child was gone after SIGTERM."""
    _seed_many(src, users, 2)
    conf = config(t, _accounts(src, users), extra='poll_interval = 3600\n', name=name + '.conf')
    with open(conf) as f:
        text = f.read()
    h.write_config(conf, text.replace(t.path('state'), t.path('state-' + name)))
    db = t.path('state-' + name, 'state.db')
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: all(len(stored_files(dst, user=u)) == 2 for u in users), timeout=120,
               what='every account imported')
    # the passes end right after their last commit: wait until the set of
    # holders is the same twice, a second apart
    seen = []
    for _ in range(30):
        seen.append(sorted(_holding(h.descendants(d.pid), db)))
        if len(seen) > 1 and seen[-1] == seen[-2]:
            break
        time.sleep(1)
    held_by_daemon = bool(_holding([d.pid], db))
    kids = h.descendants(d.pid)
    rc = h.stop_process(d)
    t.check(rc == 0, '%s: run exited %d on SIGTERM' % (name, rc))
    return seen[-1], held_by_daemon, not [p for p in kids if _alive(p)]


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


def test_state_kept_open_between_passes(t):
    """With several accounts, the pool keeps one connection to the state
    open between passes (a keeper child: each pass's open would otherwise
    rebuild the WAL index), never in the daemon itself (its forks would
    inherit it), and stops it with the rest; with one account, no keeper."""
    one_users, many_users = _users(1, 'k'), _users(3, 'm')
    src, dst = servers(t, users=dict(one_users, **many_users))
    one, one_daemon, one_gone = _idle_holders(t, src, dst, one_users, 'one')
    many, many_daemon, many_gone = _idle_holders(t, src, dst, many_users, 'many')
    t.check(len(many) == len(one) + 1, 'idle, with 3 accounts one more child holds state.db '
            'than with 1: %s vs %s' % (many, one))
    t.check(not one_daemon and not many_daemon, 'the daemon itself never holds state.db')
    t.check(one_gone and many_gone, 'no child left after SIGTERM')


def _pty_run(argv, timeout=120):
    """Runs argv with stdout and stderr on a pseudo-terminal; all it wrote."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                         close_fds=True)
    os.close(slave)
    out, end = b'', time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif p.poll() is not None:
            break
    p.wait(timeout=30)
    os.close(master)
    return p.returncode, out.decode('utf-8', 'replace')


BAR = re.compile(r'acct-p\d\d \[[#.]{20}\] \d+/\d+ messages, [\d.]+ [kMG]?B of [\d.]+ [kMG]?B, '
                 r'[\d.]+ [kMG]?B/s, ETA \d+:\d\d')


def test_progress_on_a_terminal_only(t):
    users = _users(2, 'p')
    src, dst = servers(t, users=users)
    _seed_many(src, users, 150, size=60000)
    conf = config(t, _accounts(src, users))
    rc, out = _pty_run([h.bridge_binary(), '-c', conf, 'sync'])
    t.check(rc == 0, 'sync on a pty: %d' % rc)
    t.check(BAR.search(out), 'a bar with messages, bytes, rate and ETA: %r' % out[-600:])
    t.check(re.search(r'acct-p00 \[#{20}\] 150/150 messages, .* in \d+:\d\d', out),
            'the last state of an account stays: %r' % out[-600:])
    t.check('acct-p01: 150 on server, 150 new, 150 imported' in out,
            'the passes\' log lines are shown too')
    t.check(h.sanitizer_report(out) is None, 'sanitizer: %s' % h.sanitizer_report(out))
    # Piped: the log lines, no bar, no ETA, no terminal codes.
    for u in users:
        h.seed(src, u, [h.make_message(i, size=60000, tag='b' + u) for i in range(100)])
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 0 and 'acct-p00: 250 on server, 100 new' in p.stderr,
            'piped sync logs: %r' % p.stderr)
    t.check('ETA' not in p.stderr and '[#' not in p.stderr and '\033[' not in p.stderr,
            'no bar in a pipe: %r' % p.stderr)
    # -q on a terminal: nothing at all.
    for u in users:
        h.seed(src, u, [h.make_message(i, size=60000, tag='c' + u) for i in range(100)])
    rc, out = _pty_run([h.bridge_binary(), '-q', '-c', conf, 'sync'])
    t.check(rc == 0 and out.strip() == '', '-q prints nothing on a terminal: %r' % out[-300:])
    for u in users:
        t.check(len(stored_files(dst, user=u)) == 350, '%s: all imported' % u)


if __name__ == '__main__':
    h.main()
