"""A scripted POP3 server (RFC 1939, RFC 2449, RFC 5034 AUTH PLAIN) for the
behaviour no packaged server produces: faults on a given command of a given
session, bad UIDLs, LOGIN-DELAY and EXPIRE advertised, a dribbling RETR.
Threads of the test process serve it on a free 127.0.0.1 port (the plumbing
of scriptserver.py); it is deterministic (no timers but the ones a fault
asks for).

    srv = Server(t, [(uidl, body), ...], user='alice', password='secret',
                 capa=DEFAULT_CAPA + ('LOGIN-DELAY 600',), apop=False,
                 tls=False, stls=False, expire_retrieved=None)
    srv.port                     listening when the constructor returns
    srv.fault('UIDL', reply='-ERR [SYS/TEMP] try later', session=2)
    srv.add(uidl, body)          new mail, seen from the next login on
    srv.mailbox()                [(uidl, body)] still on the server
    srv.sessions()               Session records (waits until none is open)
    srv.stop()                   also done by t's cleanup

The mailbox: bodies are bytes (stored with CRLF line ends, harness.
canonical; LIST sizes count those octets), sent dot-stuffed. A UIDL is
sent exactly as given (str or bytes): give one outside 0x21-0x7E, over 70
characters or twice to get an invalid or duplicate UIDL listing. The
mailbox persists across sessions: what a QUIT deletes (UPDATE state) is
gone for the next session; a connection that ends without QUIT deletes
nothing. A second session logging in while one is in TRANSACTION state
gets "-ERR [IN-USE] maildrop locked"; QUIT releases the lock before it
answers, a connection that just ends releases it when the server sees the
end (srv.sessions() waits for that).

Commands: CAPA (capa lines, plus STLS with stls=True before TLS), USER/PASS,
APOP (with apop=True the greeting carries a timestamp), AUTH PLAIN (initial
response on the line, or after "+ "), STAT, LIST, UIDL, RETR, TOP n k, DELE,
RSET, NOOP, UTF8 (+OK if a capa line is UTF8...), LANG (with a LANG capa
line: English only), STLS, QUIT. With
expire_retrieved (default: a capa line says "EXPIRE 0") the QUIT of a
session also deletes every message it retrieved by RETR or TOP.

Faults: srv.fault(command, reply=None, action=None, session=None, arg=None,
interval=1.0). command is a verb ("UIDL"), "LOGIN" (any of PASS, APOP,
AUTH) or "GREETING" (at connect); session an int or a collection of
session numbers (connections, counted from 1 in accept order; None: every
session); arg the command's exact argument ("2" for "RETR 2"; None: any).
The first matching fault, in the order they were added, replaces the
command's whole handling (the command has no other effect):
    reply=str                 that line is the answer (a -ERR greeting also
                              closes the connection)
    reply=[lines]             those lines, as given (add "." yourself)
    action='close'            close the connection without answering
    action='reset'            the same with a TCP RST (SO_LINGER 0)
    action='close-after'      handle the command normally, then close
    action='silence'          never answer again; what the client still
                              sends is recorded until it closes
    action='dribble'          "+OK", then (for RETR/TOP n) the message's
                              lines and filler lines, one every `interval`
                              seconds, never the final "."

Each connection is a Session: n, opened/closed (time.time()), tls, login
(time of the successful login or None), user, mechanism ("USER", "APOP",
"PLAIN"), commands (lines received, verbatim), verbs() (their first words,
upper case), quit (a QUIT was answered; a QUIT sent into silence is only in
commands), update (UPDATE state reached), retrieved
and deleted (UIDLs: retrieved by RETR/TOP; removed at QUIT). The
transcript (passwords masked, message data abridged) is in
t.path(name, 'pop3script.log'), shown when the test fails.
"""

import base64
import hashlib
import os
import select
import ssl
import time

import harness as h
from scriptserver import Closed, Conn, ScriptServer

DEFAULT_CAPA = ('TOP', 'UIDL', 'USER', 'SASL PLAIN', 'RESP-CODES', 'AUTH-RESP-CODE')
LOGIN_VERBS = ('PASS', 'APOP', 'AUTH')
ACTIONS = ('close', 'reset', 'close-after', 'silence', 'dribble')


class Session:
    def __init__(self, n, tls):
        self.n, self.tls = n, tls
        self.opened, self.closed = time.time(), None
        self.login = self.user = self.mechanism = None
        self.commands = []
        self.quit = self.update = False
        self.retrieved, self.deleted = [], []

    def verbs(self):
        return [c.split(' ', 1)[0].upper() for c in self.commands]

    def __repr__(self):
        return '<Session %d login=%s verbs=%s deleted=%r>' % (
            self.n, self.login is not None, self.verbs(), self.deleted)


class _Message:
    """One message of the mailbox; identity (not UIDL) says which one is
    deleted, so duplicate UIDLs behave."""

    def __init__(self, uidl, body):
        self.uidl = uidl if isinstance(uidl, bytes) else str(uidl).encode('utf-8')
        self.body = h.canonical(body if isinstance(body, bytes) else body.encode('utf-8'))
        if not self.body.endswith(b'\r\n'):
            self.body += b'\r\n'


class Server(ScriptServer):
    FAULT_KEY = 'command'
    ACTIONS = ACTIONS

    def __init__(self, t, mailbox=(), user='alice', password='secret', capa=DEFAULT_CAPA,
                 apop=False, tls=False, stls=False, expire_retrieved=None, name='pop3script'):
        self.user, self.password = user, password
        self.capa = tuple(capa)
        self.apop, self.tls, self.stls = apop, tls, stls
        if expire_retrieved is None:
            expire_retrieved = any(c.split()[:2] == ['EXPIRE', '0'] for c in self.capa)
        self.expire_retrieved = expire_retrieved
        self._box = [_Message(u, b) for u, b in mailbox]
        self._locked_by = None      # the Session in TRANSACTION state
        os.makedirs(t.path(name), exist_ok=True)
        self.log_path = t.path(name, 'pop3script.log')
        self._log = open(self.log_path, 'a', buffering=1, errors='replace')
        t.add_log(self.log_path, 'pop3script %s' % name)
        if tls or stls:
            c = h.default_certs()
            self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ctx.load_cert_chain(c.cert, c.key)
            self.ca_file = c.ca_file
        ScriptServer.__init__(self, t)

    # ------------------------------------------------------------ test API

    def fault(self, command, reply=None, action=None, session=None, arg=None, interval=1.0):
        ScriptServer.fault(self, command, reply=reply, action=action, session=session,
                           arg=arg, interval=interval)

    def add(self, uidl, body):
        with self._lock:
            self._box.append(_Message(uidl, body))

    def mailbox(self):
        with self._lock:
            return [(m.uidl.decode('utf-8', 'surrogateescape'), m.body) for m in self._box]

    def stop(self):
        """Closes the listener and every connection, joins the threads."""
        ScriptServer.stop(self)
        with self._lock:        # a thread that outlived its join may still log
            self._log.close()

    # ------------------------------------------------------------ plumbing

    def _new_session(self, n):
        return Session(n, self.tls)

    def _note(self, s, text):
        with self._lock:
            if not self._log.closed:
                self._log.write('%.3f [%d] %s\n' % (time.time(), s.n, text))

    def _conn_error(self, s, e):
        if not isinstance(e, Closed):
            self._note(s, 'connection error: %s' % e)

    def _ended(self, s, c):
        if self._locked_by is s:
            self._locked_by = None
        if not self._log.closed:
            self._log.write('%.3f [%d] closed\n' % (time.time(), s.n))

    def _fault_matches(self, f, verb, arg):
        if f['arg'] is not None and f['arg'] != arg:
            return False
        return f['command'] == verb or (f['command'] == 'LOGIN' and verb in LOGIN_VERBS)


class _Conn(Conn):
    """One POP3 session: the protocol state machine."""
    LINE_MAX = 1 << 16

    def __init__(self, srv, sock, s):
        Conn.__init__(self, srv, sock, s)
        self.msgs = None            # the maildrop snapshot in TRANSACTION state
        self.deleted = set()        # indexes into msgs
        self.retrieved = set()
        self.pending_user = None
        self.timestamp = '<%d.%d@pop3script.test>' % (s.n, srv.port)

    # -- I/O

    def start_tls(self):
        self.sock = self.srv._ctx.wrap_socket(self.sock, server_side=True)
        with self.srv._lock:
            self.srv._conns.add(self.sock)
        self.rfile = self.sock.makefile('rb')
        self.s.tls = True

    def send(self, lines, note=None):
        if isinstance(lines, (str, bytes)):
            lines = [lines]
        data = b''.join((l if isinstance(l, bytes) else l.encode('utf-8')) + b'\r\n'
                        for l in lines)
        self.srv._note(self.s, 'S: ' + (note or data.decode('utf-8', 'replace').rstrip('\r\n')
                                        .replace('\r\n', '\n    ')))
        self.sock.sendall(data)

    # -- the session

    def run(self):
        srv, s = self.srv, self.s
        if srv.tls:
            self.start_tls()
        greeting = '+OK pop3script ready' + (' ' + self.timestamp if srv.apop else '')
        f = srv._fault_for(s, 'GREETING', None)
        if f and f['reply'] is not None:
            self.send(f['reply'])
            first = f['reply'] if isinstance(f['reply'], (str, bytes)) else f['reply'][0]
            if (first if isinstance(first, bytes) else first.encode()).startswith(b'-ERR'):
                self.close()
        elif f and f['action'] != 'close-after':
            self.act(f, None, None)
        else:
            self.send(greeting)
            if f:
                self.close()
        while True:
            line = self.readline()
            with srv._lock:
                s.commands.append(line)
            verb, _, arg = line.partition(' ')
            verb = verb.upper()
            masked = line if verb not in ('PASS', 'APOP', 'AUTH') else verb + ' ***'
            srv._note(s, 'C: ' + masked)
            f = srv._fault_for(s, verb, arg)
            if f and f['reply'] is not None:
                self.send(f['reply'])
                continue
            if f and f['action'] != 'close-after':
                self.act(f, verb, arg)
                continue
            self.command(verb, arg)
            if f:
                self.close()

    def act(self, f, verb, arg):
        a = f['action']
        if a in ('close', 'reset'):
            self.close(reset=a == 'reset')
        if a == 'silence':
            while True:     # record what still comes, never answer
                line = self.readline()
                with self.srv._lock:
                    self.s.commands.append(line)
                self.srv._note(self.s, 'C: %s (silence)' % line.split(' ', 1)[0])
        if a == 'dribble':
            self.send('+OK here it comes')
            lines = []
            m = self.message(arg.split(' ', 1)[0] if arg else '') if verb in ('RETR', 'TOP') else None
            if m is not None:
                lines = self.stuffed(m.body)
            n = 0
            while not self.srv._stopping.is_set():
                # wait one interval, but notice at once a client that leaves
                # (it holds the maildrop lock until then)
                if select.select([self.sock], [], [], f['interval'])[0]:
                    if not self.sock.recv(4096):
                        self.close()
                    continue
                n += 1
                self.sock.sendall((lines.pop(0) if lines else b'X-Dribble: %d' % n) + b'\r\n')
            self.close()

    def command(self, verb, arg):
        srv, s = self.srv, self.s
        if verb == 'CAPA':
            extra = ['STLS'] if srv.stls and not s.tls else []
            return self.send(['+OK capability list follows'] + list(srv.capa) + extra + ['.'])
        if verb == 'QUIT':
            return self.quit()
        if verb == 'NOOP' and self.msgs is not None:
            return self.send('+OK')
        if verb == 'LANG' and 'LANG' in srv.capa:
            # RFC 6856: valid in both states; this server speaks English only
            if arg.lower() in ('en', '*', 'en-us'):
                return self.send('+OK en English, as asked')
            return self.send('-ERR [LANG] language not supported')
        if self.msgs is None:
            return self.authorization(verb, arg)
        return self.transaction(verb, arg)

    # -- AUTHORIZATION state

    def authorization(self, verb, arg):
        srv, s = self.srv, self.s
        if verb == 'STLS' and srv.stls and not s.tls:
            self.send('+OK begin TLS')
            return self.start_tls()
        if verb == 'UTF8' and any(c.split()[:1] == ['UTF8'] for c in srv.capa):
            return self.send('+OK UTF8 enabled')
        if verb == 'USER':
            self.pending_user = arg
            return self.send('+OK')
        if verb == 'PASS':
            user, self.pending_user = self.pending_user, None
            if user is None:
                return self.send('-ERR USER first')
            return self.login(user, arg == srv.password and user == srv.user, 'USER')
        if verb == 'APOP' and srv.apop:
            user, _, digest = arg.partition(' ')
            want = hashlib.md5((self.timestamp + srv.password).encode()).hexdigest()
            return self.login(user, user == srv.user and digest.lower() == want, 'APOP')
        if verb == 'AUTH':
            return self.auth(arg)
        return self.send('-ERR unknown command in AUTHORIZATION state')

    def auth(self, arg):
        mech, _, ir = arg.partition(' ')
        if mech.upper() != 'PLAIN':
            return self.send('-ERR unsupported mechanism')
        if not ir:
            self.send('+ ')
            ir = self.readline()
            with self.srv._lock:
                self.s.commands.append(ir)
            self.srv._note(self.s, 'C: ***')
        if ir == '*':
            return self.send('-ERR authentication cancelled')
        try:
            _, user, pw = base64.b64decode(ir, validate=True).decode('utf-8').split('\0')
        except ValueError:
            return self.send('-ERR malformed AUTH PLAIN response')
        self.login(user, user == self.srv.user and pw == self.srv.password, 'PLAIN')

    def login(self, user, ok, mechanism):
        srv, s = self.srv, self.s
        if not ok:
            return self.send('-ERR [AUTH] invalid login')
        with srv._lock:
            if srv._locked_by is not None:
                busy = True
            else:
                busy = False
                srv._locked_by = s
                self.msgs = list(srv._box)
                s.login, s.user, s.mechanism = time.time(), user, mechanism
        if busy:
            return self.send('-ERR [IN-USE] maildrop locked')
        self.send('+OK maildrop has %d messages (%d octets)' % self.stat())

    # -- TRANSACTION state

    def stat(self):
        live = [m for i, m in enumerate(self.msgs) if i not in self.deleted]
        return len(live), sum(len(m.body) for m in live)

    def message(self, num):
        """The message numbered num (a string), or None."""
        try:
            i = int(num) - 1
        except ValueError:
            return None
        if 0 <= i < len(self.msgs) and i not in self.deleted:
            return self.msgs[i]
        return None

    @staticmethod
    def stuffed(body):
        return [b'.' + l if l.startswith(b'.') else l for l in body[:-2].split(b'\r\n')]

    def listing(self, arg, what, item):
        if arg:
            m = self.message(arg)
            if m is None:
                return self.send('-ERR no such message')
            return self.send(b'+OK %d %s' % (int(arg), item(m)))
        lines = [b'+OK %d messages' % self.stat()[0]]
        lines += [b'%d %s' % (i + 1, item(m)) for i, m in enumerate(self.msgs)
                  if i not in self.deleted]
        self.send(lines + [b'.'], note='%s listing of %d messages' % (what, len(lines) - 1))

    def transaction(self, verb, arg):
        if verb == 'STAT':
            return self.send('+OK %d %d' % self.stat())
        if verb == 'LIST':
            return self.listing(arg, 'LIST', lambda m: b'%d' % len(m.body))
        if verb == 'UIDL':
            return self.listing(arg, 'UIDL', lambda m: m.uidl)
        if verb in ('RETR', 'TOP'):
            num, _, n = arg.partition(' ')
            m = self.message(num)
            if m is None:
                return self.send('-ERR no such message')
            if verb == 'TOP':
                try:
                    keep = int(n)
                except ValueError:
                    return self.send('-ERR TOP needs a line count')
                head, sep, body = m.body.partition(b'\r\n\r\n')
                lines = body.split(b'\r\n')[:-1]      # body ends with CRLF
                text = (head + sep + b''.join(l + b'\r\n' for l in lines[:keep])
                        if sep else m.body)
            else:
                text = m.body
            self.retrieved.add(self.msgs.index(m))
            with self.srv._lock:
                self.s.retrieved.append(m.uidl.decode('utf-8', 'surrogateescape'))
            return self.send([b'+OK %d octets' % len(m.body)] + self.stuffed(text) + [b'.'],
                             note='+OK %s %s (%d octets)' % (verb, arg, len(text)))
        if verb == 'DELE':
            m = self.message(arg)
            if m is None:
                return self.send('-ERR no such message')
            self.deleted.add(int(arg) - 1)
            return self.send('+OK message %s deleted' % arg)
        if verb == 'RSET':
            self.deleted.clear()
            return self.send('+OK maildrop has %d messages (%d octets)' % self.stat())
        return self.send('-ERR unknown command')

    def quit(self):
        srv, s = self.srv, self.s
        s.quit = True
        if self.msgs is not None:
            gone = set(self.deleted) | (self.retrieved if srv.expire_retrieved else set())
            with srv._lock:
                doomed = [self.msgs[i] for i in sorted(gone)]
                srv._box = [m for m in srv._box if not any(m is d for d in doomed)]
                s.deleted = [m.uidl.decode('utf-8', 'surrogateescape') for m in doomed]
                s.update = True
                if srv._locked_by is s:     # released before the answer: a
                    srv._locked_by = None   # client that read "+OK" may log in again
        self.send('+OK bye')
        self.close()


Server.CONN = _Conn
