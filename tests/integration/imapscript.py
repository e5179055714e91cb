"""A scripted IMAP server (RFC 3501, 4315 UIDPLUS) for the IMAP store's
hostile-peer tests: the part of IMAP pop3bridge's store speaks (greeting,
CAPABILITY, LOGIN, AUTHENTICATE PLAIN (with SASL-IR or after "+"), LIST,
CREATE, SUBSCRIBE, EXAMINE/SELECT, STATUS (UIDNEXT), UID SEARCH of HEADER
keys joined by OR, UID FETCH of UID and a HEADER.FIELDS section, APPEND,
NOOP, LOGOUT), with faults no packaged server produces.
Threads of the test process serve it on a free 127.0.0.1 port, in the style
of pop3script.py.

    srv = Server(t, users={'alice': 'secret'}, uidplus=True, delim='.')
    srv.port
    srv.fault('APPEND', reply='NO [OVERQUOTA] Quota exceeded', session=1)
    srv.fault('APPEND', action='bye-mid-literal')
    srv.mailbox('INBOX')      [bytes] of the messages stored there (in order)
    srv.sessions()            Session records (commands, appended, ...)
    srv.stop()                also done by t's cleanup

Mailboxes live in memory and persist across sessions: INBOX exists, others
when CREATEd (an APPEND to a missing one gets NO [TRYCREATE]). A message
APPENDed is stored when its literal is complete, before the tagged reply
is sent (so a reply that never arrives leaves it stored, as with a real
server). UID SEARCH HEADER name value finds stored messages whose header
field contains value, as Dovecot does (substring, any case).

Faults: srv.fault(command, reply=None, action=None, session=None,
times=None). command: a verb ("APPEND"), or "GREETING" (at connect);
session: an int or a collection of session numbers (connections, counted
from 1; None: every one); times: how many matching commands it applies
to (None: all). The first matching fault replaces the command's handling:
    reply=str           the tagged reply's text after the tag ("NO [LIMIT]
                        too big"); for GREETING the whole greeting line
                        ("* PREAUTH ..."); for APPEND it is sent after the
                        literal was read (and the message is not stored)
    reply=[lines]       those raw lines instead (CRLF added; "{tag}" is
                        replaced by the command's tag)
    action='close'      close without answering
    action='reset'      the same with an RST (SO_LINGER 0)
    action='silence'    never answer again (read and drop what comes)
    action='endless'    send an untagged line that never ends
    action='huge-literal'  answer with a "* LIST" whose name is a literal
                        of 2 GB (the bytes never come)
    action='bye-mid-literal'  (APPEND) read half the literal, then
                        "* BYE" and close
    action='bad-appenduid'    (APPEND) store it, answer OK with a
                        malformed APPENDUID
    action='no-appenduid'     (APPEND) store it, answer OK without one
"""

import base64
import copy
import email
import re
import select
import threading
import time

from scriptserver import Closed, Conn, ScriptServer

ACTIONS = ('close', 'reset', 'silence', 'endless', 'huge-literal', 'bye-mid-literal',
           'bad-appenduid', 'no-appenduid')


class Session:
    def __init__(self, n):
        self.n = n
        self.opened = time.time()
        self.closed = None
        self.login = None
        self.commands = []      # command lines as received (LOGIN masked)
        self.appended = []      # (mailbox, bytes) stored in this session

    def verbs(self):
        return [c.split(' ', 2)[1].upper() if ' ' in c else '' for c in self.commands]


class Server(ScriptServer):
    FAULT_KEY = 'command'
    ACTIONS = ACTIONS

    def __init__(self, t, users=None, uidplus=True, delim='.', capabilities=None):
        self.users = dict(users or {'alice': 'secret'})
        self.uidplus = uidplus
        self.delim = delim
        self.capabilities = capabilities or ['IMAP4rev1', 'LITERAL+', 'AUTH=PLAIN']
        self._boxes = {'INBOX': []}     # name -> [(uid, bytes)]
        self._uidvalidity = 1700000000
        self._next_uid = {'INBOX': 1}
        ScriptServer.__init__(self, t)

    # ------------------------------------------------------------ test API

    def mailbox(self, name='INBOX'):
        with self._lock:
            return [b for _, b in self._boxes.get(name, [])]

    # ------------------------------------------------------------ plumbing

    def _store(self, s, box, data):
        with self._lock:
            uid = self._next_uid[box]
            self._next_uid[box] += 1
            self._boxes[box].append((uid, data))
            s.appended.append((box, data))
            return uid


def _tokens(arg):
    """IMAP atoms, quoted strings and parentheses of arg, as strings."""
    out, i = [], 0
    while i < len(arg):
        c = arg[i]
        if c == ' ':
            i += 1
        elif c in '()':
            out.append(c)
            i += 1
        elif c == '"':
            v, rest = _unquote(arg[i:])
            out.append(v)
            i = len(arg) - len(rest)
        else:
            m = re.match(r'[^ ()]+', arg[i:])
            out.append(m.group(0))
            i += len(m.group(0))
    return out


def _search_matcher(toks):
    """A predicate over message bytes from search keys (HEADER name value,
    OR a b, several ANDed), consuming toks; ValueError for anything else."""
    def one():
        if not toks:
            raise ValueError('search key missing')
        k = toks.pop(0).upper()
        if k == 'OR':
            a, b = one(), one()
            return lambda m: a(m) or b(m)
        if k == 'HEADER' and len(toks) >= 2:
            name, value = toks.pop(0), toks.pop(0).lower()
            return lambda m: any(value in (v or '').lower()
                                 for v in email.message_from_bytes(m).get_all(name, []))
        if k == '(':
            keys = []
            while toks and toks[0] != ')':
                keys.append(one())
            if not toks:
                raise ValueError('unbalanced')
            toks.pop(0)
            return lambda m: all(f(m) for f in keys)
        raise ValueError('search key %s' % k)
    keys = [one()]
    while toks:
        keys.append(one())
    return lambda m: all(f(m) for f in keys)


def _uid_set(text):
    out = set()
    for part in text.split(','):
        a, _, b = part.partition(':')
        lo, hi = int(a), int(b or a)
        out.update(range(min(lo, hi), max(lo, hi) + 1))
    return out


def _unquote(arg):
    """The first IMAP astring of arg and the rest: (value, rest)."""
    arg = arg.lstrip(' ')
    if arg.startswith('"'):
        out, i = [], 1
        while i < len(arg) and arg[i] != '"':
            if arg[i] == '\\':
                i += 1
            out.append(arg[i])
            i += 1
        return ''.join(out), arg[i + 1:]
    m = re.match(r'(\S+)(.*)', arg)
    return (m.group(1), m.group(2)) if m else ('', '')


class _Conn(Conn):
    def __init__(self, srv, sock, s):
        Conn.__init__(self, srv, sock, s)
        self.user = None
        self.selected = None

    def send(self, line):
        self.sock.sendall((line if isinstance(line, bytes) else line.encode()) + b'\r\n')

    def caps(self):
        return ' '.join(self.srv.capabilities + (['UIDPLUS'] if self.srv.uidplus and
                                                  self.user else []))

    def run(self):
        f = self.srv._fault_for(self.s, 'GREETING')
        if f and f['reply'] is not None:
            self.send(f['reply'] if isinstance(f['reply'], str) else f['reply'][0])
            if not f['reply'].startswith('* OK'):
                if f['reply'].startswith('* BYE'):
                    self.close()
        elif f:
            self.act(f, '*', 'GREETING', '')
        else:
            self.send('* OK [CAPABILITY %s] imapscript ready' % self.caps())
        while True:
            line = self.readline()
            tag, _, rest = line.partition(' ')
            verb, _, arg = rest.partition(' ')
            verb = verb.upper()
            with self.srv._lock:
                self.s.commands.append(line if verb != 'LOGIN' else '%s LOGIN ***' % tag)
            if verb == 'UID':
                sub, _, arg = arg.partition(' ')
                verb = 'UID ' + sub.upper()
            f = self.srv._fault_for(self.s, verb.split(' ')[0] if verb != 'UID SEARCH'
                                    else 'SEARCH')
            if f and verb != 'APPEND':
                if f['reply'] is not None:
                    self.reply(tag, f['reply'])
                    continue
                self.act(f, tag, verb, arg)
                continue
            self.command(tag, verb, arg, f)

    def reply(self, tag, r):
        if isinstance(r, str):
            self.send('%s %s' % (tag, r))
        else:
            for l in r:
                self.send(l.replace('{tag}', tag))

    def act(self, f, tag, verb, arg):
        a = f['action']
        if a in ('close', 'reset'):
            self.close(reset=a == 'reset')
        if a == 'silence':
            while True:
                self.readline()
        if a == 'endless':
            self.sock.sendall(b'* OK ')
            chunk = b'x' * 65536
            while not self.srv._stopping.is_set():
                r, _, _ = select.select([self.sock], [], [], 0)
                if r and not self.sock.recv(4096):
                    self.close()
                self.sock.sendall(chunk)
        if a == 'huge-literal':
            self.send('* LIST () "." {2000000000}')
            while True:
                self.readline()
        raise AssertionError('action %s not for %s' % (a, verb))

    def command(self, tag, verb, arg, f):
        srv = self.srv
        if verb == 'CAPABILITY':
            self.send('* CAPABILITY %s' % self.caps())
            return self.send('%s OK Capability completed.' % tag)
        if verb == 'NOOP':
            return self.send('%s OK NOOP completed.' % tag)
        if verb == 'LOGOUT':
            self.send('* BYE Logging out')
            self.send('%s OK Logout completed.' % tag)
            self.close()
        if verb == 'AUTHENTICATE':
            mech, _, ir = arg.partition(' ')
            if mech.upper() != 'PLAIN':
                return self.send('%s NO Unsupported mechanism.' % tag)
            if not ir:
                self.send('+ ')
                ir = self.readline()
            try:
                authz, authc, pw = base64.b64decode(ir, validate=True).decode().split('\0')
            except (ValueError, UnicodeDecodeError):
                return self.send('%s BAD Invalid base64.' % tag)
            if srv.users.get(authc) != pw:
                return self.send('%s NO [AUTHENTICATIONFAILED] Authentication failed.' % tag)
            self.user = authz or authc
            with srv._lock:
                self.s.login = time.time()
            return self.send('%s OK [CAPABILITY %s] Logged in' % (tag, self.caps()))
        if verb == 'LOGIN':
            user, rest = _unquote(arg)
            pw, _ = _unquote(rest)
            base = user.split('*', 1)[0]
            if srv.users.get(base) != pw and srv.users.get(user.split('*', 1)[-1]) != pw:
                return self.send('%s NO [AUTHENTICATIONFAILED] Authentication failed.' % tag)
            self.user = base
            with srv._lock:
                self.s.login = time.time()
            return self.send('%s OK [CAPABILITY %s] Logged in' % (tag, self.caps()))
        if self.user is None:
            return self.send('%s BAD Log in first.' % tag)
        if verb in ('LIST', 'LSUB'):
            ref, rest = _unquote(arg)
            pat, _ = _unquote(rest)
            if pat == '':
                self.send('* %s (\\Noselect) "%s" ""' % (verb, srv.delim))
            else:
                with srv._lock:
                    names = [n for n in srv._boxes if n == pat]
                for n in names:
                    self.send('* %s () "%s" "%s"' % (verb, srv.delim, n))
            return self.send('%s OK List completed.' % tag)
        if verb in ('CREATE', 'SUBSCRIBE'):
            name, _ = _unquote(arg)
            if verb == 'CREATE':
                with srv._lock:
                    if name in srv._boxes:
                        return self.send('%s NO [ALREADYEXISTS] Mailbox exists.' % tag)
                    srv._boxes[name] = []
                    srv._next_uid[name] = 1
            return self.send('%s OK %s completed.' % (tag, verb.capitalize()))
        if verb in ('EXAMINE', 'SELECT'):
            name, _ = _unquote(arg)
            with srv._lock:
                box = srv._boxes.get(name)
                n = len(box) if box is not None else 0
                nxt = srv._next_uid.get(name, 1)
            if box is None:
                return self.send('%s NO [NONEXISTENT] Mailbox doesn\'t exist.' % tag)
            self.selected = name
            self.send('* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)')
            self.send('* OK [PERMANENTFLAGS ()] Read-only mailbox.')
            self.send('* %d EXISTS' % n)
            self.send('* 0 RECENT')
            self.send('* OK [UIDVALIDITY %d] UIDs valid' % srv._uidvalidity)
            self.send('* OK [UIDNEXT %d] Predicted next UID' % nxt)
            return self.send('%s OK [READ-ONLY] Examine completed.' % tag)
        if verb == 'UID SEARCH':
            try:
                match = _search_matcher(_tokens(arg))
            except ValueError:
                match = None
            if match is None or self.selected is None:
                return self.send('%s BAD Error in IMAP command.' % tag)
            with srv._lock:
                box = list(srv._boxes.get(self.selected, []))
            hits = [uid for uid, b in box if match(b)]
            self.send('* SEARCH' + ''.join(' %d' % u for u in hits))
            return self.send('%s OK Search completed.' % tag)
        if verb == 'UID FETCH':
            m = re.match(r'([0-9:,]+) \((.*)\)$', arg)
            f = re.search(r'BODY\.PEEK\[HEADER\.FIELDS \(([^)]*)\)\]', arg, re.I)
            if not m or self.selected is None:
                return self.send('%s BAD Error in IMAP command.' % tag)
            uids = _uid_set(m.group(1))
            with srv._lock:
                box = list(srv._boxes.get(self.selected, []))
            for seq, (uid, b) in enumerate(box, 1):
                if uid not in uids:
                    continue
                items = 'UID %d' % uid
                if f:
                    names = [n.lower() for n in _tokens(f.group(1))]
                    head = b.split(b'\r\n\r\n', 1)[0].split(b'\r\n')
                    hdr = b''.join(l + b'\r\n' for l in head
                                   if l.split(b':', 1)[0].decode('latin-1').lower() in names)
                    hdr += b'\r\n'
                    self.sock.sendall(('* %d FETCH (%s BODY[HEADER.FIELDS (%s)] {%d}\r\n'
                                       % (seq, items, f.group(1).upper(), len(hdr))).encode() +
                                      hdr + b')\r\n')
                else:
                    self.send('* %d FETCH (%s)' % (seq, items))
            return self.send('%s OK Fetch completed.' % tag)
        if verb == 'STATUS':
            name, _ = _unquote(arg)
            with srv._lock:
                if name not in srv._boxes:
                    return self.send('%s NO [NONEXISTENT] Mailbox doesn\'t exist.' % tag)
                nxt = srv._next_uid.get(name, 1)
            return self.send('* STATUS "%s" (UIDNEXT %d)\r\n%s OK Status completed.'
                             % (name, nxt, tag))
        if verb == 'APPEND':
            return self.append(tag, arg, f)
        return self.send('%s BAD Unknown command.' % tag)

    def append(self, tag, arg, f):
        srv = self.srv
        name, rest = _unquote(arg)
        m = re.search(r'\{(\d+)(\+?)\}$', rest)
        if not m:
            return self.send('%s BAD Missing literal.' % tag)
        size, nonsync = int(m.group(1)), m.group(2) == '+'
        with srv._lock:
            exists = name in srv._boxes
        if f and f['action'] in ('close', 'reset', 'silence', 'endless', 'huge-literal'):
            self.act(f, tag, 'APPEND', arg)
        if not exists and not nonsync:
            return self.send('%s NO [TRYCREATE] Mailbox doesn\'t exist: %s' % (tag, name))
        if not nonsync:
            self.send('+ OK')
        if f and f['action'] == 'bye-mid-literal':
            self.rfile.read(size // 2)
            self.send('* BYE Server shutting down.')
            self.close()
        data = self.rfile.read(size)
        if len(data) < size:
            raise Closed()
        self.rfile.readline()       # the CRLF after the literal
        if f and f['reply'] is not None:
            return self.reply(tag, f['reply'])
        if not exists:
            return self.send('%s NO [TRYCREATE] Mailbox doesn\'t exist: %s' % (tag, name))
        uid = srv._store(self.s, name, data)
        if f and f['action'] == 'no-appenduid':
            return self.send('%s OK Append completed.' % tag)
        if f and f['action'] == 'bad-appenduid':
            return self.send('%s OK [APPENDUID %d x%d] Append completed.'
                             % (tag, srv._uidvalidity, uid))
        if srv.uidplus:
            return self.send('%s OK [APPENDUID %d %d] Append completed.'
                             % (tag, srv._uidvalidity, uid))
        return self.send('%s OK Append completed.' % tag)


Server.SESSION = Session
Server.CONN = _Conn
