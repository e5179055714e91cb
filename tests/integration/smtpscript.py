"""A scripted upstream SMTP server (RFC 5321, RFC 4954 AUTH PLAIN/LOGIN)
for the queue's hostile-peer tests: multi-line replies, a 421 in the
middle of DATA, a reply line that never ends, silence. Threads of the test
process serve it on a free 127.0.0.1 port, in the style of pop3script.py.

    srv = Server(t, user='relay', password='relaypw', multiline=False)
    srv.port
    srv.fault('DATA', action='421-mid-data', session=1)
    srv.messages()        [(mail_from, [rcpt], data bytes)] accepted (250
                          after the final dot), in order
    srv.sessions()        Session records (commands received, ...)
    srv.stop()            also done by t's cleanup

With multiline=True every reply is sent as three lines ("250-...",
"250-...", "250 ...").

Faults: srv.fault(step, reply=None, action=None, session=None, times=None).
step: "GREETING", a verb ("EHLO", "AUTH", "MAIL", "RCPT", "DATA" - the
answer to the DATA command), or "DOT" (the answer after the final ".");
session: an int or a collection of session numbers (None: every one);
times: how many matches it applies to (None: all). The first matching
fault replaces that answer:
    reply=str or [lines]  sent as given (CRLF added)
    action='close' | 'reset'   hang up (RST for 'reset')
    action='silence'      never answer again
    action='endless'      a reply line that never ends ("250 xxxx...")
    action='endless-lines'    "250-x" lines without end
    action='421-mid-data' (DATA) "354", read part of the message, then
                          "421 4.3.0 shutting down" and hang up
"""

import base64
import copy
import select
import threading
import time

from scriptserver import Closed, Conn, ScriptServer

ACTIONS = ('close', 'reset', 'silence', 'endless', 'endless-lines', '421-mid-data')


class Session:
    def __init__(self, n):
        self.n = n
        self.opened = time.time()
        self.closed = None
        self.commands = []


class Server(ScriptServer):
    FAULT_KEY = 'step'
    ACTIONS = ACTIONS

    def __init__(self, t, user='relay', password='relaypw', multiline=False):
        self.user, self.password, self.multiline = user, password, multiline
        self._messages = []
        ScriptServer.__init__(self, t)

    def messages(self):
        with self._lock:
            return list(self._messages)


class _Conn(Conn):
    def __init__(self, srv, sock, s):
        Conn.__init__(self, srv, sock, s)
        self.authed = False
        self.mail_from = None
        self.rcpts = []

    def raw(self, lines):
        self.sock.sendall(b''.join((l if isinstance(l, bytes) else l.encode()) + b'\r\n'
                                   for l in lines))

    def send(self, code, text, extra=()):
        """One reply: code + text, with extra lines before the last."""
        lines = list(extra) + [text]
        if self.srv.multiline and len(lines) == 1:
            lines = ['(multi-line reply)', 'really', text]
        out = ['%d-%s' % (code, l) for l in lines[:-1]] + ['%d %s' % (code, lines[-1])]
        self.raw(out)

    def faulted(self, step):
        """Applies the fault for step, if any: True when it answered."""
        f = self.srv._fault_for(self.s, step)
        if f is None:
            return False
        if f['reply'] is not None:
            self.raw([f['reply']] if isinstance(f['reply'], str) else f['reply'])
            return True
        a = f['action']
        if a in ('close', 'reset'):
            self.close(reset=a == 'reset')
        if a == 'silence':
            while True:
                self.readline()
        if a in ('endless', 'endless-lines'):
            if a == 'endless':
                self.sock.sendall(b'250 ')
            chunk = b'x' * 65536 if a == 'endless' else b'250-x\r\n' * 8192
            while not self.srv._stopping.is_set():
                r, _, _ = select.select([self.sock], [], [], 0)
                if r and not self.sock.recv(4096):
                    self.close()
                self.sock.sendall(chunk)
        if a == '421-mid-data':
            self.send(354, 'End data with <CR><LF>.<CR><LF>')
            for _ in range(3):
                self.readline()
            self.raw(['421 4.3.0 shutting down'])
            self.close()
        raise AssertionError(a)

    def run(self):
        if not self.faulted('GREETING'):
            self.send(220, 'smtpscript ESMTP ready')
        while True:
            line = self.readline()
            verb = line.split(' ', 1)[0].split(':', 1)[0].upper()
            with self.srv._lock:
                self.s.commands.append(line if verb != 'AUTH' else 'AUTH ***')
            if self.faulted(verb):
                continue
            self.command(verb, line)

    def command(self, verb, line):
        if verb == 'EHLO':
            return self.send(250, 'HELP', ['smtpscript', 'PIPELINING', 'SIZE 10000000',
                                           '8BITMIME', 'AUTH PLAIN LOGIN'])
        if verb == 'AUTH':
            parts = line.split(' ')
            mech = parts[1].upper() if len(parts) > 1 else ''
            if mech == 'PLAIN':
                ir = parts[2] if len(parts) > 2 else None
                if ir is None:
                    self.raw(['334 '])
                    ir = self.readline()
                try:
                    _, u, p = base64.b64decode(ir).decode().split('\0')
                except ValueError:
                    return self.send(501, '5.5.2 malformed')
            elif mech == 'LOGIN':
                self.raw(['334 VXNlcm5hbWU6'])
                u = base64.b64decode(self.readline()).decode()
                self.raw(['334 UGFzc3dvcmQ6'])
                p = base64.b64decode(self.readline()).decode()
            else:
                return self.send(504, '5.5.4 unknown mechanism')
            if u == self.srv.user and p == self.srv.password:
                self.authed = True
                return self.send(235, '2.7.0 Authentication successful')
            return self.send(535, '5.7.8 Authentication credentials invalid')
        if verb == 'MAIL':
            if not self.authed:
                return self.send(530, '5.7.0 Authentication required')
            self.mail_from = line.split(':', 1)[1].split('>', 1)[0].strip(' <')
            self.rcpts = []
            return self.send(250, '2.1.0 Ok')
        if verb == 'RCPT':
            self.rcpts.append(line.split(':', 1)[1].split('>', 1)[0].strip(' <'))
            return self.send(250, '2.1.5 Ok')
        if verb == 'DATA':
            self.send(354, 'End data with <CR><LF>.<CR><LF>')
            data = bytearray()
            while True:
                l = self.rfile.readline(1 << 20)
                if not l:
                    raise Closed()
                if l == b'.\r\n':
                    break
                data += l[1:] if l.startswith(b'.') else l
            if self.faulted('DOT'):
                return
            with self.srv._lock:
                self.srv._messages.append((self.mail_from, list(self.rcpts), bytes(data)))
            return self.send(250, '2.0.0 Ok: queued')
        if verb == 'RSET':
            self.mail_from, self.rcpts = None, []
            return self.send(250, '2.0.0 Ok')
        if verb == 'NOOP':
            return self.send(250, '2.0.0 Ok')
        if verb == 'QUIT':
            self.send(221, '2.0.0 Bye')
            self.close()
        return self.send(502, '5.5.2 Command not recognized')


Server.SESSION = Session
Server.CONN = _Conn
