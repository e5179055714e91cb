#!/usr/bin/python3
"""Minimal POP3 clients: the limits pop3bridge is measured against. Each is
run as its own process (so that its CPU time and memory are its own) and
prints one JSON line.

    ref_pop3.py stream PORT USER [--tls CA]
        login (USER/PASS), UIDL, then RETR of every message, pipelined (up
        to WINDOW commands in flight), the data thrown away, QUIT:
        {"messages": n, "bytes": octets received, "uidls": n}
    ref_pop3.py poll PORT USER [--tls CA]
        login, UIDL, QUIT: {"uidls": n}
    ref_pop3.py poll-many PORT USERS_FILE --parallel P [--tls CA]
        login + UIDL + QUIT for every user in USERS_FILE (one a line), P
        worker processes taking the next user as they finish one:
        {"accounts": n, "ok": k, "uidls": total, "errors": [...]}

Every user's password is p3bench.creds.PASSWORD. Nothing sleeps; everything read
is checked to be a well-formed POP3 reply."""

import argparse
import json
import multiprocessing
import os
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from p3bench.creds import PASSWORD  # noqa: E402

WINDOW = 128          # RETRs in flight
RECV = 1 << 20


class Pop3Error(Exception):
    pass


class Session:
    def __init__(self, port, ca=None):
        s = socket.create_connection(('127.0.0.1', port), timeout=120)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ca:
            ctx = ssl.create_default_context(cafile=ca)
            s = ctx.wrap_socket(s, server_hostname='localhost')
        self.s = s
        self.buf = bytearray()
        self.status()

    def _fill(self):
        data = self.s.recv(RECV)
        if not data:
            raise Pop3Error('connection closed')
        self.buf += data

    def status(self):
        """One status line; raises on -ERR."""
        while True:
            at = self.buf.find(b'\r\n')
            if at >= 0:
                break
            self._fill()
        line = bytes(self.buf[:at])
        del self.buf[:at + 2]
        if not line.startswith(b'+OK'):
            raise Pop3Error(line.decode('ascii', 'replace'))
        return line

    def multi(self):
        """A +OK status line and its multi-line body up to "." alone: the
        body's length (dot-stuffed, as received), and the body when keep."""
        self.status()
        # the body ends at the first CRLF "." CRLF, counting the status
        # line's CRLF (an empty body is "." CRLF at once)
        if self.buf[:3] == b'.\r\n':
            del self.buf[:3]
            return 0
        scan = 0
        while True:
            at = self.buf.find(b'\r\n.\r\n', scan)
            if at >= 0:
                del self.buf[:at + 5]
                return at + 2
            scan = max(len(self.buf) - 4, 0)
            self._fill()

    def multi_body(self):
        self.status()
        if self.buf[:3] == b'.\r\n':
            del self.buf[:3]
            return b''
        scan = 0
        while True:
            at = self.buf.find(b'\r\n.\r\n', scan)
            if at >= 0:
                body = bytes(self.buf[:at + 2])
                del self.buf[:at + 5]
                return body
            scan = max(len(self.buf) - 4, 0)
            self._fill()

    def cmd(self, line):
        self.s.sendall(line.encode('ascii') + b'\r\n')

    def login(self, user, password):
        self.cmd('USER ' + user)
        self.status()
        self.cmd('PASS ' + password)
        self.status()

    def uidl(self):
        self.cmd('UIDL')
        body = self.multi_body()
        return body.count(b'\r\n')

    def quit(self):
        self.cmd('QUIT')
        self.status()
        self.s.close()


def stream(port, user, ca):
    p = Session(port, ca)
    p.login(user, PASSWORD)
    n = p.uidl()
    sent = done = total = 0
    while done < n:
        if sent < n and sent - done < WINDOW // 2:
            k = min(n, sent + WINDOW)
            p.s.sendall(b''.join(b'RETR %d\r\n' % (i + 1) for i in range(sent, k)))
            sent = k
        total += p.multi()
        done += 1
    p.quit()
    return {'messages': done, 'bytes': total, 'uidls': n}


def poll(port, user, ca):
    p = Session(port, ca)
    p.login(user, PASSWORD)
    n = p.uidl()
    p.quit()
    return {'uidls': n}


_ARGS = None


def _poll_one(user):
    port, ca = _ARGS
    try:
        return user, poll(port, user, ca)['uidls'], None
    except Exception as e:      # reported, and the run counts as wrong
        return user, 0, '%s: %s' % (user, e)


def _init(args):
    global _ARGS
    _ARGS = args


def poll_many(port, users, parallel, ca):
    ok = total = 0
    errors = []
    pool = multiprocessing.Pool(parallel, initializer=_init, initargs=((port, ca),))
    try:
        for user, n, err in pool.imap_unordered(_poll_one, users, chunksize=1):
            if err:
                errors.append(err)
            else:
                ok += 1
                total += n
    finally:
        pool.close()
        pool.join()     # reaped: their CPU time counts in ours (wait4)
    return {'accounts': len(users), 'ok': ok, 'uidls': total, 'errors': errors[:5]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('mode', choices=('stream', 'poll', 'poll-many'))
    ap.add_argument('port', type=int)
    ap.add_argument('who')
    ap.add_argument('--tls', metavar='CA')
    ap.add_argument('--parallel', type=int, default=8)
    a = ap.parse_args()
    if a.mode == 'stream':
        r = stream(a.port, a.who, a.tls)
    elif a.mode == 'poll':
        r = poll(a.port, a.who, a.tls)
    else:
        with open(a.who) as f:
            users = [l.strip() for l in f if l.strip()]
        r = poll_many(a.port, users, a.parallel, a.tls)
    print(json.dumps(r))


if __name__ == '__main__':
    main()
