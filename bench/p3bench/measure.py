"""Running one measured process, and watching the memory of a process tree.

    r = run(argv, env=None, timeout=None)   -> Result
        r.wall (s), r.user, r.sys, r.cpu (= user + sys, s) and r.maxrss (kB)
        of the process and its waited-for children (maxrss: the largest
        single process), as GNU time reports them from wait4(); r.rc,
        r.out / r.err (text, the last 64 KB of each).
    m = TreeMemory(pid).start() ... m.stop()
        samples every `interval` s the processes of the tree under pid
        (pid itself unless include_root=False, e.g. for GNU time): m.peak_rss_sum, m.peak_pss_sum (kB; PSS from
        /proc/PID/smaps_rollup, so shared pages are not counted twice),
        m.peak_procs (most processes alive at once), m.samples.
    as_user(argv, home)  the argv run as the unprivileged mail user (when
        we are root), with a clean environment, as every tool is run."""

import os
import subprocess
import tempfile
import threading
import time



TIME = '/usr/bin/time'


class Result:
    def __init__(self, argv, wall, user, sys_, maxrss, rc, out, err):
        self.argv = argv
        self.wall = wall
        self.user, self.sys = user, sys_
        self.cpu = user + sys_
        self.maxrss = maxrss
        self.rc = rc
        self.out, self.err = out, err

    def __repr__(self):
        return '<%s rc=%d %.2fs cpu %.2fs rss %d kB>' % (
            os.path.basename(self.argv[0]), self.rc, self.wall, self.cpu, self.maxrss)


def _tail(f, n=65536):
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(size - n, 0))
    return f.read().decode('utf-8', 'replace')


def run(argv, env=None, timeout=None, cwd=None, on_start=None):
    """Runs argv to completion (SIGKILL to its process group after timeout
    seconds) and returns a Result. on_start(pid) is called right after the
    fork (e.g. to start a TreeMemory on pid).

    The command runs under GNU time, which reports its CPU time and peak
    RSS from wait4(): a process forked straight from this (large) Python
    process would carry our RSS in its ru_maxrss (Linux keeps the high
    water mark of the memory it had before exec)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile('r') as tf:
        t0 = time.monotonic()
        p = subprocess.Popen([TIME, '-o', tf.name, '-f', 'P3B-TIME %U %S %M %x'] + list(argv),
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             env=env, cwd=cwd, start_new_session=True)
        if on_start:
            on_start(p.pid)
        timer = None
        if timeout:
            timer = threading.Timer(timeout, _kill_group, (p.pid,))
            timer.daemon = True
            timer.start()
        try:
            p.wait()
        finally:
            if timer:
                timer.cancel()
        wall = time.monotonic() - t0
        user = sys_ = 0.0
        rss, rc = 0, p.returncode
        for line in tf.read().splitlines():
            if line.startswith('P3B-TIME '):
                f = line.split()
                user, sys_, rss, rc = float(f[1]), float(f[2]), int(f[3]), int(f[4])
            elif 'terminated by signal' in line:
                rc = -int(line.split()[-1])
        return Result(argv, wall, user, sys_, rss, rc, _tail(out), _tail(err))


def _kill_group(pid):
    try:
        os.killpg(pid, 9)
    except OSError:
        pass


def as_user(argv, home):
    """argv run as the mail user with HOME=home and a minimal environment
    (through setpriv when we are root)."""
    import harness as h
    env = ['env', '-i', 'HOME=%s' % home, 'PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
           'LANG=C.UTF-8']
    if os.geteuid() != 0:
        return env + list(argv)
    uid, gid = h.mail_ids()
    return ['setpriv', '--reuid=%d' % uid, '--regid=%d' % gid, '--clear-groups'] + env + list(argv)


def chown_tree(path):
    """Gives path and everything under it to the mail user (when root)."""
    if os.geteuid() != 0:
        return
    import harness as h
    uid, gid = h.mail_ids()
    for d, dirs, files in os.walk(path):
        os.lchown(d, uid, gid)
        for f in files:
            os.lchown(os.path.join(d, f), uid, gid)


def _children_map():
    kids = {}
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % p, 'rb') as f:
                fields = f.read().rsplit(b')', 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] in (b'Z', b'X'):
            continue
        kids.setdefault(int(fields[1]), []).append(int(p))
    return kids


def tree(pid):
    """pid and its live descendants."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def tree_cpu(pid):
    """CPU seconds (user + system) of pid's live tree and of every process
    it reaped (a server's master: its login and mail processes come and
    go), so that the difference across a run is the server's CPU in it."""
    tick = os.sysconf('SC_CLK_TCK')
    total = 0
    for p in tree(pid):
        try:
            with open('/proc/%d/stat' % p, 'rb') as f:
                fields = f.read().rsplit(b')', 1)[1].split()
        except (OSError, IndexError):
            continue
        total += sum(int(x) for x in fields[11:15])
    return total / tick


def _rollup(pid):
    """(rss, pss) in kB of one process, or None when it is gone."""
    try:
        with open('/proc/%d/smaps_rollup' % pid, 'rb') as f:
            data = f.read()
    except OSError:
        return None
    rss = pss = 0
    for line in data.splitlines():
        if line.startswith(b'Rss:'):
            rss = int(line.split()[1])
        elif line.startswith(b'Pss:'):
            pss = int(line.split()[1])
    return rss, pss


class TreeMemory:
    def __init__(self, pid, interval=0.1, include_root=True):
        self.pid, self.interval, self.include_root = pid, interval, include_root
        self.peak_rss_sum = self.peak_pss_sum = self.peak_procs = self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self._t.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        rss = pss = n = 0
        for p in tree(self.pid):
            if p == self.pid and not self.include_root:
                continue
            r = _rollup(p)
            if r:
                rss, pss, n = rss + r[0], pss + r[1], n + 1
        if n:
            self.samples += 1
            self.peak_rss_sum = max(self.peak_rss_sum, rss)
            self.peak_pss_sum = max(self.peak_pss_sum, pss)
            self.peak_procs = max(self.peak_procs, n)

    def stop(self):
        self._stop.set()
        self._t.join()
        return self
