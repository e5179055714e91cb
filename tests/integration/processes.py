"""Ports and processes of the integration tests (standard library only):
free loopback ports, polling with a deadline, log tails, and the one
registry of everything a test program started, stopped by pid at exit.

    free_port(), free_ports(n), port_open(port)   127.0.0.1 ports, claimed
    poll(pred, timeout), wait_for(pred, timeout, what=)
    tail(path, lines)                     the end of a log file
    group_alive(pgid), wait_nowait(pid, timeout)
    proc_stat(pid), children(pid), descendants(pid)   from /proc, live only
    track(obj, stop), untrack(obj), stop_all()
    stop_process(popen, sig, timeout)

The registry (track/untrack/stop_all) is module state: import this module
by its one name (`processes`, or through `harness`) so that a program has
exactly one list of what to stop."""

import atexit
import fcntl
import os
import signal
import socket
import subprocess
import time


# ---------------------------------------------------------------- ports

# Ports handed out come from below the kernel's ephemeral range, so that
# neither another program's bind(port 0) nor an outgoing connection's local
# port can take one between our choice and the server's bind; and each is
# claimed by a lock on byte `port` of PORT_CLAIMS, so that the test programs
# run side by side (tests/run) never hand out the same port twice. (With
# bind(port 0) alone, four programs taking 200 ports at once were given 14
# twice, and a relay test spoke SMTP to another test's server.) The locks
# are fcntl record locks: the kernel drops them when their program ends,
# however it ends, and a forked child holds none of its parent's.
PORT_CLAIMS = '/tmp/p3b-ports.lock'
_claims = {'fd': None, 'next': None, 'ours': set()}


def _port_range():
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(1024, low - 12000), low


def _claim(port):
    """Claims port for this process: True if it is ours now."""
    if _claims['fd'] is None:
        _claims['fd'] = os.open(PORT_CLAIMS, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            os.fchmod(_claims['fd'], 0o666)     # shared by root's and users' runs
        except OSError:
            pass
    if port in _claims['ours']:     # our own locks never conflict with us
        return False
    try:
        fcntl.lockf(_claims['fd'], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except OSError:
        return False
    _claims['ours'].add(port)
    return True


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n):
    """n distinct TCP ports on 127.0.0.1, free now and claimed by this
    process until it exits (see PORT_CLAIMS above)."""
    low, high = _port_range()
    if _claims['next'] is None:
        _claims['next'] = low + (os.getpid() * 97) % (high - low)
    out = []
    for _ in range(high - low):
        port = _claims['next']
        _claims['next'] = low + (port + 1 - low) % (high - low)
        if _claim(port) and _bindable(port):
            out.append(port)
            if len(out) == n:
                return out
    raise RuntimeError('no free port left in %d-%d' % (low, high - 1))


def free_port():
    """A TCP port on 127.0.0.1, free now and claimed by this process."""
    return free_ports(1)[0]


def port_open(port, host='127.0.0.1', timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- polling

def poll(pred, timeout, interval=0.05):
    """Calls pred() every interval seconds until it returns a true value or
    timeout seconds have passed; returns its last value (false: timed out)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def wait_for(pred, timeout=10.0, interval=0.05, what='condition'):
    """Polls pred() until it returns a true value (returned) or timeout."""
    v = poll(pred, timeout, interval)
    if not v:
        raise TimeoutError('timed out after %.1fs waiting for %s' % (timeout, what))
    return v


def tail(path, lines=100):
    """The last lines of a text file, or '' if it cannot be read."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError:
        return ''
    text = data.decode('utf-8', 'replace').splitlines()
    return '\n'.join(text[-lines:])


# ---------------------------------------------------------------- processes

def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name, as strings
    (state first, then ppid, pgrp, ...; nice is [16]), or None once pid is
    gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None


def _live_procs():
    """(pid, stat fields) of every live (not zombie) process."""
    for p in os.listdir('/proc'):
        if p.isdigit():
            fields = proc_stat(int(p))
            if fields is not None and fields[0] not in ('Z', 'X'):
                yield int(p), fields


def group_alive(pgid):
    """pids of the live (not zombie) processes in process group pgid."""
    return [p for p, fields in _live_procs() if int(fields[2]) == pgid]


def children(pid):
    """pids of the live children of pid."""
    return [p for p, fields in _live_procs() if int(fields[1]) == pid]


def descendants(pid):
    """pids of the live descendants of pid, from one look at /proc."""
    kids = {}
    for p, fields in _live_procs():
        kids.setdefault(int(fields[1]), []).append(p)
    out, todo = [], list(kids.get(pid, ()))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _exited(pid):
    """True once child pid has exited (or is not our child), without reaping
    it: its pid, and so its process group id, stay reserved."""
    try:
        r = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
    except ChildProcessError:
        return True
    return r is not None and r.si_pid == pid


def wait_nowait(pid, timeout):
    """Waits until child pid exits without reaping it; True if it exited."""
    return poll(lambda: _exited(pid), timeout, 0.02)


_live = []  # (object, its stop function): what stop_all() stops, newest last


def track(obj, stop):
    """Registers obj (a Popen, a Dovecot) that this program started, with the
    function that stops it; stop_all() calls it, at exit at the latest."""
    _live.append((obj, stop))


def untrack(obj):
    """Forgets obj (it was stopped)."""
    _live[:] = [e for e in _live if e[0] is not obj]


def stop_all():
    """Stops every Dovecot and pop3bridge process the harness started (also
    done at exit)."""
    for obj, stop in reversed(list(_live)):
        try:
            stop()
        except Exception:
            pass


atexit.register(stop_all)


def stop_process(p, sig=signal.SIGTERM, timeout=15):
    """Sends sig to a Popen we started, waits (SIGKILL after timeout);
    returns its exit code (negative: killed by a signal)."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    untrack(p)
    return p.returncode
