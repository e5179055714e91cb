#!/usr/bin/python3
"""A minimal SMTP submitter, used two ways by the relay scenario: as the
devices submitting to pop3bridge's relay, and as the limit (the same
client straight to the upstream sink). One process per connection, so the
client is not held back by one interpreter.

    ref_smtp.py PORT MESSAGES_FILE --connections 8 [--auth USER:PASSWORD]
                --from ADDR --to ADDR

MESSAGES_FILE: the messages, each preceded by a line "LENGTH\\n" (as
p3bench/scen_relay.py writes it). Connection k sends messages k, k+C, k+2C ...:
EHLO, AUTH PLAIN when asked, then per message MAIL, RCPT and DATA in one
write when the server offers PIPELINING (else one at a time), the message
(dot-stuffed), and waits for the 250 before the next one. Prints
{"accepted": n, "refused": r, "start": T0, "end": T1, "errors": [...]}
with T0/T1 on CLOCK_MONOTONIC (the same clock as the bench's)."""

import argparse
import base64
import json
import os
import socket
import sys
import time


def read_messages(path):
    out = []
    with open(path, 'rb') as f:
        data = f.read()
    at = 0
    while at < len(data):
        nl = data.index(b'\n', at)
        n = int(data[at:nl])
        out.append(data[nl + 1:nl + 1 + n])
        at = nl + 1 + n
    return out


def dot_stuff(m):
    m = m if m.endswith(b'\r\n') else m + b'\r\n'
    if m.startswith(b'.'):
        m = b'.' + m
    return m.replace(b'\r\n.', b'\r\n..') + b'.\r\n'


class Smtp:
    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=120)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def reply(self):
        """(code, [lines]) of one possibly multi-line reply."""
        lines = []
        while True:
            at = self.buf.find(b'\r\n')
            if at < 0:
                data = self.s.recv(65536)
                if not data:
                    raise OSError('connection closed')
                self.buf += data
                continue
            line = bytes(self.buf[:at])
            del self.buf[:at + 2]
            lines.append(line)
            if line[3:4] != b'-':
                return int(line[:3]), lines

    def send(self, data):
        self.s.sendall(data)


def worker(port, messages, auth, frm, to, out_fd):
    res = {'accepted': 0, 'refused': 0, 'errors': []}
    try:
        c = Smtp(port)
        code, _ = c.reply()
        if code != 220:
            raise OSError('greeting %d' % code)
        c.send(b'EHLO bench.example\r\n')
        code, lines = c.reply()
        ext = {l[4:].split(b' ')[0].upper() for l in lines}
        pipelining = b'PIPELINING' in ext
        if auth:
            u, p = auth.split(':', 1)
            c.send(b'AUTH PLAIN ' + base64.b64encode(b'\0' + u.encode() + b'\0' + p.encode()) +
                   b'\r\n')
            code, lines = c.reply()
            if code != 235:
                raise OSError('AUTH: %r' % lines)
        env = [b'MAIL FROM:<%s>\r\n' % frm.encode(), b'RCPT TO:<%s>\r\n' % to.encode(),
               b'DATA\r\n']
        for m in messages:
            if pipelining:
                c.send(b''.join(env))
                codes = [c.reply()[0] for _ in env]
            else:
                codes = []
                for e in env:
                    c.send(e)
                    codes.append(c.reply()[0])
                    if codes[-1] >= 400:
                        break
            if codes[-1] != 354:
                res['refused'] += 1
                if len(res['errors']) < 3:
                    res['errors'].append('envelope: %s' % codes)
                c.send(b'RSET\r\n')
                c.reply()
                continue
            c.send(m)
            code, lines = c.reply()
            if code == 250:
                res['accepted'] += 1
            else:
                res['refused'] += 1
                if len(res['errors']) < 3:
                    res['errors'].append(b' '.join(lines).decode('utf-8', 'replace'))
        c.send(b'QUIT\r\n')
        c.reply()
    except Exception as e:          # reported; the run then counts as wrong
        res['errors'].append('%s: %s' % (type(e).__name__, e))
    res['end'] = time.monotonic()
    os.write(out_fd, json.dumps(res).encode() + b'\n')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('port', type=int)
    ap.add_argument('messages')
    ap.add_argument('--connections', type=int, default=8)
    ap.add_argument('--auth')
    ap.add_argument('--from', dest='frm', required=True)
    ap.add_argument('--to', required=True)
    a = ap.parse_args()
    msgs = [dot_stuff(m) for m in read_messages(a.messages)]
    r, w = os.pipe()
    t0 = time.monotonic()
    pids = []
    for k in range(a.connections):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            worker(a.port, msgs[k::a.connections], a.auth, a.frm, a.to, w)
            os._exit(0)
        pids.append(pid)
    os.close(w)
    for pid in pids:
        os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        parts = [json.loads(l) for l in f if l.strip()]
    out = {'accepted': sum(p['accepted'] for p in parts),
           'refused': sum(p['refused'] for p in parts),
           'errors': [e for p in parts for e in p['errors']][:5],
           'start': t0, 'end': max([p['end'] for p in parts] or [t0]),
           'connections': len(parts)}
    print(json.dumps(out))


if __name__ == '__main__':
    sys.exit(main())
