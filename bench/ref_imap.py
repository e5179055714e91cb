#!/usr/bin/python3
"""Minimal IMAP APPEND clients: the limits of the IMAP store path. Run as
their own process; print one JSON line.

    ref_imap.py single PORT USER FILES_LIST --ca CA
        one APPEND per message, with a synchronising literal: send the
        command, wait for the server's "+", send the message, wait for OK
        (what any plain IMAP client does; what pop3bridge does today)
    ref_imap.py multi PORT USER FILES_LIST --ca CA [--batch 500]
        MULTIAPPEND (RFC 3502): one APPEND command per batch of messages,
        each a non-synchronising literal (LITERAL+, RFC 7888): no round trip
        inside a batch; one tagged OK (and one fsync by the server) per batch

Both log in over IMAPS as USER*MASTER (the master login pop3bridge uses),
APPEND every file of FILES_LIST (one path a line, CRLF messages, named
"UNIXTIME.*" as the bench seeds them) into INBOX with that INTERNALDATE and
no flags, and print {"appended": n, "bytes": b, "commands": c}. Each file is
read when it is sent, as a fetched message would be at hand."""

import argparse
import json
import os
import re
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from p3bench.creds import MASTER, MASTER_PW  # noqa: E402

_MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')


class ImapError(Exception):
    pass


def internaldate(ts):
    t = time.gmtime(ts)
    return '%02d-%s-%d %02d:%02d:%02d +0000' % (t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
                                               t.tm_hour, t.tm_min, t.tm_sec)


class Session:
    def __init__(self, port, ca):
        s = socket.create_connection(('127.0.0.1', port), timeout=300)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = ssl.create_default_context(cafile=ca)
        self.s = ctx.wrap_socket(s, server_hostname='localhost')
        self.buf = bytearray()
        self.n = 0
        self.line()             # greeting

    def line(self):
        while True:
            at = self.buf.find(b'\r\n')
            if at >= 0:
                line = bytes(self.buf[:at])
                del self.buf[:at + 2]
                return line
            data = self.s.recv(1 << 16)
            if not data:
                raise ImapError('connection closed')
            self.buf += data

    def tag(self):
        self.n += 1
        return b'a%d' % self.n

    def done(self, tag):
        """Reads up to the tagged reply; returns the untagged lines; raises
        unless OK. (No reply the bench provokes carries a literal.)"""
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag + b' '):
                if line[len(tag) + 1:len(tag) + 3] != b'OK':
                    raise ImapError(line.decode('utf-8', 'replace'))
                return untagged
            untagged.append(line)

    def simple(self, text):
        t = self.tag()
        self.s.sendall(t + b' ' + text + b'\r\n')
        return self.done(t)

    def continuation(self):
        while True:
            line = self.line()
            if line.startswith(b'+'):
                return
            if not line.startswith(b'* '):
                raise ImapError('expected "+": ' + line.decode('utf-8', 'replace'))


def _q(s):
    return b'"' + s.replace('\\', '\\\\').replace('"', '\\"').encode() + b'"'


def login(port, user, ca):
    im = Session(port, ca)
    im.simple(b'LOGIN ' + _q('%s*%s' % (user, MASTER)) + b' ' + _q(MASTER_PW))
    caps = b' '.join(im.simple(b'CAPABILITY')).upper().split()
    return im, set(caps)


def files_of(list_path):
    with open(list_path) as f:
        paths = [l.rstrip('\n') for l in f if l.strip()]
    return [(p, int(re.match(r'(\d+)\.', os.path.basename(p)).group(1))) for p in paths]


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def single(port, user, list_path, ca):
    im, _ = login(port, user, ca)
    n = total = 0
    for path, ts in files_of(list_path):
        data = read(path)
        t = im.tag()
        im.s.sendall(t + b' APPEND INBOX () "' + internaldate(ts).encode() + b'" {%d}\r\n'
                     % len(data))
        im.continuation()
        im.s.sendall(data + b'\r\n')
        im.done(t)
        n += 1
        total += len(data)
    im.simple(b'LOGOUT')
    return {'appended': n, 'bytes': total, 'commands': n}


def multi(port, user, list_path, ca, batch):
    im, caps = login(port, user, ca)
    for need in (b'MULTIAPPEND', b'LITERAL+'):
        if need not in caps:
            raise ImapError('the server does not advertise %s' % need.decode())
    files = files_of(list_path)
    n = total = commands = 0
    for at in range(0, len(files), batch):
        t = im.tag()
        first = True
        for path, ts in files[at:at + batch]:
            data = read(path)
            head = (t + b' APPEND INBOX' if first else b'') + b' () "' + \
                internaldate(ts).encode() + b'" {%d+}\r\n' % len(data)
            im.s.sendall(head + data)
            first = False
            n += 1
            total += len(data)
        im.s.sendall(b'\r\n')
        im.done(t)
        commands += 1
    im.simple(b'LOGOUT')
    return {'appended': n, 'bytes': total, 'commands': commands}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('mode', choices=('single', 'multi'))
    ap.add_argument('port', type=int)
    ap.add_argument('user')
    ap.add_argument('files')
    ap.add_argument('--ca', required=True)
    ap.add_argument('--batch', type=int, default=500)
    a = ap.parse_args()
    if a.mode == 'single':
        r = single(a.port, a.user, a.files, a.ca)
    else:
        r = multi(a.port, a.user, a.files, a.ca, a.batch)
    print(json.dumps(r))


if __name__ == '__main__':
    main()
