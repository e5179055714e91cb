"""A loopback TCP proxy that cuts a connection at a chosen byte, and the
protocol maps that say which byte lands in which phase of a session.

Threads of the test process serve it on a free 127.0.0.1 port and forward
every connection to a target port. It counts raw bytes, so TLS passes
through unchanged (a cut then lands at a byte of the TLS stream, wherever
that is in the protocol inside).

    p = CutProxy(t, target_port)          listening when it returns
    p.arm(direction, offset, mode='close')  the next connection is cut:
                                          direction 'c2s' (client to server)
                                          or 's2c'; exactly `offset` bytes
                                          of that direction are forwarded,
                                          then both sides are closed
                                          ('close': FIN) or reset ('reset':
                                          SO_LINGER 0, an RST); connections
                                          after it pass
    p.cut                                 None until the armed cut happened,
                                          then {'conn', 'direction',
                                          'offset', 'mode'}
    p.disarm()                            the armed cut is dropped
    p.traces()                            [Trace] of every connection, in
                                          accept order (c2s, s2c bytes;
                                          recorded when record=True)
    p.stop()                              also done by t's cleanup

Phase maps (plain protocols only: the offsets of a TLS session mean
nothing outside it), each from a clean session's Trace:

    pop3_phases(trace)    [(phase, direction, start, end)]: greeting, capa,
                          auth, uidl, list, retr (each response), between-retr
                          (the byte where one RETR response ends), dele, quit
    imap_phases(trace)    greeting, capability, login, list, create, append-cmd,
                          append-cont (the "+"), append-literal, append-ok
                          (the tagged reply), logout; with MULTIAPPEND also
                          multiappend-next (the next message's flags, date
                          and size) and multiappend-literal
    smtp_phases(trace)    greeting, ehlo, auth, mail, rcpt, data-cmd, data
                          (the message), data-end (the final "."), data-reply
                          (the reply after it: the window SMTP leaves open),
                          quit
    cut_points(phases, n, rnd, order)   n (direction, offset, phase)
                          spread over the phases: each phase once (those in
                          order first) before any twice
    even_points(trace, n, rnd)   n cuts evenly spaced over both directions
                          (for TLS sessions)

An offset o means: the first o bytes of that direction get through. So
(s2c, start of the greeting) cuts before any byte of it, (s2c, end of a
phase) right after its last byte."""

import random
import re
import select
import socket
import struct
import time

from scriptserver import Listener


_CHUNK = 65536


class Trace:
    """What one connection carried: c2s and s2c bytes (when recorded), how
    many bytes of each were forwarded, and where a cut, if any, fell."""

    def __init__(self, n):
        self.n = n
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.count = {'c2s': 0, 's2c': 0}
        self.cut = None
        self.closed = False

    def data(self, direction):
        return bytes(self.c2s if direction == 'c2s' else self.s2c)


class CutProxy(Listener):
    BACKLOG = 64

    def __init__(self, t, target_port, target_host='127.0.0.1', record=True):
        self.target = (target_host, target_port)
        self.record = record
        self._armed = None
        self.cut = None
        self._traces = []
        Listener.__init__(self, t)

    # ------------------------------------------------------------ test API

    def arm(self, direction, offset, mode='close'):
        if direction not in ('c2s', 's2c') or mode not in ('close', 'reset') or offset < 0:
            raise ValueError('arm(%r, %r, %r)' % (direction, offset, mode))
        with self._lock:
            self._armed = {'direction': direction, 'offset': offset, 'mode': mode}
            self.cut = None

    def disarm(self):
        with self._lock:
            self._armed = None

    def traces(self, wait=5.0):
        """Copies of the traces; first waits up to `wait` s for open
        connections to end."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self._lock:
                if all(tr.closed for tr in self._traces):
                    break
            time.sleep(0.02)
        with self._lock:
            return list(self._traces)

    def clear(self):
        with self._lock:
            self._traces = []

    # ------------------------------------------------------------ plumbing

    def _end_conn(self, sock):
        _close(sock)

    def _accepted(self, client):
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        client.settimeout(None)
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            tr = Trace(len(self._traces) + 1)
            self._traces.append(tr)
            cut, self._armed = self._armed, None
            self._conns.update((client, server))
        self._spawn(self._pump, client, server, tr, cut)

    def _pump(self, client, server, tr, cut):
        peer = {client: (server, 'c2s'), server: (client, 's2c')}
        live = [client, server]
        try:
            while live and not self._stopping.is_set():
                ready, _, _ = select.select(live, [], [], 0.5)
                for src in ready:
                    dst, d = peer[src]
                    try:
                        data = src.recv(_CHUNK)
                    except OSError:
                        data = b''
                    if not data:
                        # one side ended: pass the end on, keep the other way open
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        live.remove(src)
                        continue
                    if cut is not None and cut['direction'] == d:
                        room = cut['offset'] - tr.count[d]
                        if len(data) >= room:
                            self._forward(dst, data[:room], tr, d)
                            self._cut(client, server, tr, cut)
                            return
                    self._forward(dst, data, tr, d)
        finally:
            with self._lock:
                tr.closed = True
                self._conns.discard(client)
                self._conns.discard(server)
            _close(client)
            _close(server)

    def _forward(self, dst, data, tr, d):
        if not data:
            return
        try:
            dst.sendall(data)
        except OSError:
            pass
        tr.count[d] += len(data)
        if self.record:
            (tr.c2s if d == 'c2s' else tr.s2c).extend(data)

    def _cut(self, client, server, tr, cut):
        for s in (client, server):
            if cut['mode'] == 'reset':
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                except OSError:
                    pass
            else:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        info = dict(cut, conn=tr.n)
        with self._lock:
            tr.cut = info
            self.cut = info


def _close(s):
    try:
        s.close()
    except OSError:
        pass


# ---------------------------------------------------------------- phase maps

def _lines(data):
    """[(start, end)] of each CRLF/LF-terminated line (end past the LF)."""
    out, pos = [], 0
    while pos < len(data):
        nl = data.find(b'\n', pos)
        if nl < 0:
            out.append((pos, len(data)))
            break
        out.append((pos, nl + 1))
        pos = nl + 1
    return out


_POP3_MULTI = {'CAPA', 'UIDL', 'LIST', 'RETR', 'TOP'}


def pop3_phases(trace):
    """Phases of a plain POP3 session, from its recorded bytes. Responses
    come in command order (pipelined or not), so each command's response is
    the next one in the server's stream."""
    c2s, s2c = trace.data('c2s'), trace.data('s2c')
    phases = []
    pos = 0

    def response(multi):
        nonlocal pos
        start = pos
        nl = s2c.find(b'\n', pos)
        if nl < 0:
            pos = len(s2c)
            return start, pos
        ok = s2c[pos:pos + 3] == b'+OK'
        pos = nl + 1
        if multi and ok:
            end = s2c.find(b'\r\n.\r\n', pos - 2)
            pos = len(s2c) if end < 0 else end + 5
        return start, pos

    g = response(False)
    phases.append(('greeting', 's2c') + g)
    retr_ends = []
    for (a, b) in _lines(c2s):
        line = c2s[a:b].rstrip(b'\r\n')
        verb = line.split(b' ', 1)[0].upper().decode('ascii', 'replace')
        has_arg = b' ' in line
        multi = verb in _POP3_MULTI and not (verb in ('UIDL', 'LIST') and has_arg)
        name = {'CAPA': 'capa', 'USER': 'auth', 'PASS': 'auth', 'AUTH': 'auth',
                'APOP': 'auth', 'UIDL': 'uidl', 'LIST': 'list', 'RETR': 'retr',
                'TOP': 'top', 'DELE': 'dele', 'QUIT': 'quit', 'STAT': 'stat',
                'STLS': 'stls'}.get(verb, 'auth' if not verb.isalpha() else verb.lower())
        phases.append((name, 'c2s', a, b))
        r = response(multi)
        phases.append((name, 's2c') + r)
        if name == 'retr':
            retr_ends.append(r[1])
    for e in retr_ends[:-1]:
        phases.append(('between-retr', 's2c', e, e + 1))
    return phases


def imap_phases(trace):
    """Phases of a plain IMAP session (libetpan does not pipeline: each
    command's response ends at its tagged line)."""
    c2s, s2c = trace.data('c2s'), trace.data('s2c')
    phases = []
    spos = 0

    def until_tagged(tag):
        nonlocal spos
        start = spos
        for (a, b) in _lines(s2c[spos:]):
            line = s2c[spos + a:spos + b]
            if line.startswith(tag + b' '):
                end = spos + b
                spos = end
                return start, end
        spos = len(s2c)
        return start, spos

    def one_line():
        nonlocal spos
        start = spos
        nl = s2c.find(b'\n', spos)
        spos = len(s2c) if nl < 0 else nl + 1
        return start, spos

    phases.append(('greeting', 's2c') + one_line())
    cpos = 0
    while cpos < len(c2s):
        nl = c2s.find(b'\n', cpos)
        if nl < 0:
            break
        line = c2s[cpos:nl + 1]
        parts = line.split(b' ', 2)
        tag = parts[0]
        verb = parts[1].strip().upper().decode('ascii', 'replace') if len(parts) > 1 else ''
        m = re.search(rb'\{(\d+)(\+?)\}\r?\n$', line)
        if verb == 'APPEND' and m:
            # APPEND, or MULTIAPPEND (RFC 3502): after each literal the
            # command goes on, up to the next literal or its CRLF
            phases.append(('append-cmd', 'c2s', cpos, nl + 1))
            k = 0
            while m:
                size = int(m.group(1))
                if not m.group(2):     # a synchronizing literal waits for "+"
                    phases.append(('append-cont', 's2c') + one_line())
                lit = (nl + 1, nl + 1 + size)
                phases.append(('append-literal' if k == 0 else 'multiappend-literal',
                               'c2s') + lit)
                nl = c2s.find(b'\n', lit[1])
                if nl < 0:
                    break
                m = re.search(rb'\{(\d+)(\+?)\}\r?\n$', c2s[lit[1]:nl + 1])
                if m:
                    phases.append(('multiappend-next', 'c2s', lit[1], nl + 1))
                k += 1
            phases.append(('append-ok', 's2c') + until_tagged(tag))
            cpos = len(c2s) if nl < 0 else nl + 1
            continue
        name = {'CAPABILITY': 'capability', 'LOGIN': 'login', 'AUTHENTICATE': 'login',
                'LIST': 'list',
                'CREATE': 'create', 'SUBSCRIBE': 'create', 'LOGOUT': 'logout',
                'EXAMINE': 'examine', 'SELECT': 'examine', 'UID': 'search'}.get(verb,
                                                                               verb.lower())
        phases.append((name, 'c2s', cpos, nl + 1))
        phases.append((name, 's2c') + until_tagged(tag))
        cpos = nl + 1
    return phases


def smtp_phases(trace):
    """Phases of a plain SMTP client session (replies to a PIPELINING group
    come in command order; multi-line replies are "DDD-" lines then one
    "DDD " line)."""
    c2s, s2c = trace.data('c2s'), trace.data('s2c')
    phases = []
    spos = 0

    def reply():
        nonlocal spos
        start = spos
        for (a, b) in _lines(s2c[spos:]):
            line = s2c[spos + a:spos + b]
            if line[3:4] != b'-':
                end = spos + b
                spos = end
                return start, end
        spos = len(s2c)
        return start, spos

    phases.append(('greeting', 's2c') + reply())
    cpos = 0
    while cpos < len(c2s):
        nl = c2s.find(b'\n', cpos)
        if nl < 0:
            break
        line = c2s[cpos:nl + 1]
        verb = line.split(b' ', 1)[0].split(b':', 1)[0].strip().upper().decode('ascii',
                                                                            'replace')
        if verb == 'DATA':
            phases.append(('data-cmd', 'c2s', cpos, nl + 1))
            phases.append(('data-cmd', 's2c') + reply())
            end = c2s.find(b'\r\n.\r\n', nl - 1)
            end = len(c2s) if end < 0 else end + 5
            phases.append(('data', 'c2s', nl + 1, end - 3))
            phases.append(('data-end', 'c2s', end - 3, end))
            phases.append(('data-reply', 's2c') + reply())
            cpos = end
            continue
        name = {'EHLO': 'ehlo', 'HELO': 'ehlo', 'AUTH': 'auth', 'MAIL': 'mail',
                'RCPT': 'rcpt', 'QUIT': 'quit', 'RSET': 'rset',
                'STARTTLS': 'starttls'}.get(verb, 'auth')
        phases.append((name, 'c2s', cpos, nl + 1))
        phases.append((name, 's2c') + reply())
        cpos = nl + 1
    return phases


def cut_points(phases, n, rnd=None, order=()):
    """n cuts (direction, offset, phase name) over the phases: one per
    phase name first, the names in `order` before the others, then again
    round after round. In each round a name takes another of its entries
    (both directions, each RETR...) and another kind of byte: one inside,
    then its first byte (none of the phase gets through), then its last
    (all but one byte), then random ones. Phases of length 0 are skipped,
    a (direction, offset) is never taken twice."""
    rnd = rnd or random.Random(1)
    groups = {}
    for p in phases:
        if p[3] > p[2]:
            groups.setdefault(p[0], []).append(p)
    names = [x for x in order if x in groups] + sorted(x for x in groups if x not in order)
    out, seen = [], set()
    for rounds in range(64):
        for name in names:
            if len(out) >= n:
                return out
            entries = groups[name]
            _, d, a, b = entries[(rounds + rnd.randrange(len(entries))) % len(entries)]
            kind = rounds % 4 if rounds < 4 else 3
            off = (rnd.randrange(a, b) if kind in (0, 3) else a if kind == 1 else b - 1)
            if (d, off) in seen:
                continue
            seen.add((d, off))
            out.append((d, off, name))
    return out


def even_points(trace, n, rnd=None):
    """n cuts evenly spaced over both directions of a session (a TLS one:
    its bytes cannot be mapped to phases), alternating directions, each
    jittered inside its slot."""
    rnd = rnd or random.Random(2)
    out = []
    for i in range(n):
        d = 's2c' if i % 2 == 0 else 'c2s'
        total = trace.count[d]
        k, slots = i // 2, (n + 1 - i % 2) // 2
        if total == 0 or slots == 0:
            continue
        lo, hi = total * k // slots, max(total * (k + 1) // slots, total * k // slots + 1)
        out.append((d, rnd.randrange(lo, min(hi, total)), 'tls'))
    return out
