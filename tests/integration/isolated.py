"""Runs a test server's start script inside private mount and PID namespaces
(root only), for servers whose binaries have compiled-in paths (/etc/...,
/run/...) that must be served from the test's own directory, and whose
daemons leave the process group they were started in.

    iso = Isolated(script, log_path, name='courier')
    iso.start({'pop3': port, ...}, timeout=20)   waits until every port listens
    iso.stop()                                   SIGKILL to all, waits

The script runs as `/bin/sh -e SCRIPT` under `unshare --fork --pid
--mount-proc --kill-child=SIGKILL --mount --propagation private`: its mounts
are seen by nothing outside, and it runs as PID 1 of a new PID namespace.
Killing that PID 1 makes the kernel kill every process of the namespace
(daemons that called setsid() or setpgid() included), and unshare exits
only when they are all gone -- so stop() needs no process group and leaves
nothing behind. If the test process dies first, even by SIGKILL, unshare
dies with it (setpriv --pdeathsig KILL; the signal comes when the thread
that started it ends, so start servers from the main thread) and
--kill-child takes the namespace down as well.

A port counts as up when `ss -Hltnp` lists it as listening, owned by a
process of the namespace: no connection is made (GNU Mailutils pop3d ends a
session that is closed without QUIT noisily, and a probe would be in every
server's log).
"""

import atexit
import os
import re
import signal
import subprocess
import time

from processes import free_port, tail

# where scripts/test-servers unpacked the servers' Debian packages
SERVERS_DIR = os.environ.get('P3B_TEST_SERVERS') or '/var/cache/pop3bridge-test-servers'

_live = []  # started Isolated instances, stopped at exit


def _stop_all():
    for iso in reversed(list(_live)):
        try:
            iso.stop()
        except Exception:
            pass


atexit.register(_stop_all)


class IsolatedError(RuntimeError):
    pass


def can_isolate():
    """None when namespaces can be made here, else why not (a str)."""
    if os.geteuid() != 0:
        return 'needs root (private mount and PID namespaces)'
    for tool in ('unshare', 'setpriv', 'ss'):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in ('/usr/bin', '/bin', '/usr/sbin', '/sbin')):
            return '%s is not installed' % tool
    return None


def unpacked_root(name):
    """SERVERS_DIR/name if scripts/test-servers unpacked it completely, else None."""
    root = os.path.join(SERVERS_DIR, name)
    return root if os.path.isfile(os.path.join(root, '.pop3bridge-unpacked')) else None


def _ns_of(pid):
    try:
        return os.readlink('/proc/%d/ns/pid' % pid)
    except OSError:
        return None


def _listeners():
    """{port: set of pids} of the TCP sockets listening on this host."""
    out = subprocess.run(['ss', '-Hltnp'], capture_output=True, text=True).stdout
    ports = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        m = re.search(r':(\d+)$', f[3])
        if m:
            ports.setdefault(int(m.group(1)), set()).update(
                int(p) for p in re.findall(r'pid=(\d+)', line))
    return ports


class Isolated:
    """One start script in its own namespaces. log_path gets the script's
    stdout and stderr (appended)."""

    def __init__(self, script, log_path, name='server'):
        self.script = script
        self.log_path = log_path
        self.name = name
        self.proc = None   # the unshare process
        self.init = None   # PID 1 of the namespace (the shell), as seen from here
        self.ns = None     # its PID namespace, "pid:[inode]"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def members(self):
        """pids (as seen from here) of the live processes in the namespace."""
        if not self.ns:
            return []
        out = []
        for p in os.listdir('/proc'):
            if p.isdigit() and _ns_of(int(p)) == self.ns:
                try:
                    with open('/proc/%s/stat' % p, 'rb') as f:
                        state = f.read().rsplit(b')', 1)[1].split()[0]
                except (OSError, IndexError):
                    continue
                if state not in (b'Z', b'X'):
                    out.append(int(p))
        return sorted(out)

    def _find_init(self):
        try:
            with open('/proc/%d/task/%d/children' % (self.proc.pid, self.proc.pid)) as f:
                kids = f.read().split()
        except OSError:
            return False
        ns = _ns_of(int(kids[0])) if kids else None
        if ns is None or ns == _ns_of(os.getpid()):
            return False
        self.init, self.ns = int(kids[0]), ns
        return True

    def start(self, ports, timeout=20.0):
        """Starts the script; returns when every port of ports (a dict or a
        list) listens in the namespace. Raises IsolatedError (with the log's
        tail; "Address already in use" in it means a port was taken) when
        the script exits or timeout passes first; nothing is left running
        then."""
        want = sorted(set(ports.values() if isinstance(ports, dict) else ports))
        with open(self.log_path, 'ab') as log:
            start_at = log.tell()
            self.proc = subprocess.Popen(
                ['setpriv', '--pdeathsig', 'KILL',
                 'unshare', '--fork', '--pid', '--mount-proc', '--kill-child=SIGKILL',
                 '--mount', '--propagation', 'private', '/bin/sh', '-e', self.script],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        _live.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.ns or self._find_init():
                mine = set(self.members())
                up = _listeners()
                if all(up.get(p, set()) & mine for p in want):
                    return self
            if 'Address already in use' in self.log_since(start_at):
                break  # the caller picks other ports
            time.sleep(0.02)
        rc = self.proc.poll()
        self.stop()
        raise IsolatedError('%s did not start (%s):\n%s' % (
            self.name, 'exit %s' % rc if rc is not None else 'timeout after %.0fs' % timeout,
            self.log_since(start_at).strip()))

    def log_since(self, offset=0):
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(offset)
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def stop(self, timeout=10.0):
        """SIGKILL to the namespace's PID 1 (the kernel then kills the rest),
        waits for unshare; afterwards no process of the namespace is left.
        Raises IsolatedError if one still is after timeout."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            if self.init is None:
                self._find_init()
            try:  # without a known PID 1, unshare's death takes it down
                os.kill(self.init or p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()  # --kill-child takes the namespace with it
                p.wait()
        left = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.members()
            if not left:
                break
            time.sleep(0.02)
        self.proc = None
        if self in _live:
            _live.remove(self)
        if left:
            raise IsolatedError('%s: processes left after stop: %s' % (self.name, left))


class IsolatedServer:
    """What the servers run in their own namespace share (courier.py,
    mailutils.py): start on free ports, again on new ones when one was
    taken meanwhile, and running, members, stop, log. A subclass sets
    KIND and PORTS (the names of its ports), self.name, self.script,
    self.log_path, self.ports (empty) and self._iso = None, and writes its
    configuration for self.ports in _prepare(), called before each try."""

    KIND = 'server'
    PORTS = ()

    def _prepare(self):
        raise NotImplementedError

    @property
    def running(self):
        return self._iso is not None and self._iso.running

    def members(self):
        """pids of every process of this server (daemons and sessions); []
        when stopped."""
        return self._iso.members() if self._iso else []

    def start(self, timeout=20.0):
        """Writes the config, starts the server, returns self when every
        port listens. Picks new ports if one was taken meanwhile."""
        if self.running:
            return self
        t0 = time.monotonic()
        for attempt in range(4):
            if not self.ports or attempt:
                self.ports = {k: free_port() for k in self.PORTS}
            self._prepare()
            self._iso = Isolated(self.script, self.log_path, '%s %s' % (self.KIND, self.name))
            try:
                self._iso.start(self.ports, timeout)
            except IsolatedError as e:
                if 'Address already in use' in str(e) and attempt < 3:
                    continue
                raise
            self.start_seconds = time.monotonic() - t0
            return self
        raise IsolatedError('%s %s did not start' % (self.KIND, self.name))

    def stop(self):
        """Kills every process of this server (see Isolated); idempotent."""
        if self._iso:
            self._iso.stop()

    def log(self):
        return tail(self.log_path, 1000000)
