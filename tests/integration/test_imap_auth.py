"""How the IMAP store logs in (store/imap_auth.c), against Dovecot: SASL
PLAIN with SASL-IR (RFC 4959) or in two steps, LOGIN when asked or when
nothing else is offered, LOGINDISABLED honoured (no password sent at
all), XOAUTH2 and OAUTHBEARER (RFC 7628) with a token from
password_command -- a valid one imports, an expired one is one line naming
the account, exit 69, the token never shown.

A recording proxy between pop3bridge and a plaintext Dovecot shows what
goes on the wire; over TLS the Dovecot log and pop3bridge's -v log say
which mechanism logged in."""

import base64
import os
import re
import socket
import threading

import harness as h
import imapstore as ist
import oauth
from common import sync

TIMEOUT = 300


class Recorder:
    """A TCP proxy on a free 127.0.0.1 port to port, keeping every byte the
    client sent (one connection at a time is enough here)."""

    def __init__(self, t, port):
        self.sent = b''
        self._lock = threading.Lock()
        self._srv = socket.socket()
        self._srv.bind(('127.0.0.1', 0))
        self._srv.listen(8)
        self.port = self._srv.getsockname()[1]
        self._target = port
        threading.Thread(target=self._serve, daemon=True).start()
        t.cleanup(self._srv.close)

    def _serve(self):
        while True:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            s = socket.create_connection(('127.0.0.1', self._target))
            threading.Thread(target=self._pump, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, False), daemon=True).start()

    def _pump(self, a, b, record):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if record:
                    with self._lock:
                        self.sent += d
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def lines(self):
        with self._lock:
            return self.sent.split(b'\r\n')


def source(t, n=5, seed=60):
    src = t.dovecot('src')
    msgs = h.make_corpus(n, seed=seed)
    h.seed(src, 'alice', msgs)
    return src, msgs


def plain_store_block(port, auth=None, password='secret', extra=''):
    """A tls = "none" store block through port (a Recorder), as alice."""
    lines = ['type = "imap"', 'host = "127.0.0.1"', 'port = %d' % port, 'tls = "none"',
             'allow_plaintext = true', 'user = "%u"', 'timeout = 20',
             'password = %s' % h.cq(password)]
    if auth:
        lines.append('auth = %s' % h.cq(auth))
    if extra:
        lines.append(extra)
    return 'store {\n  %s\n}\n' % '\n  '.join(lines)


def write_conf(t, store_text, accounts, name='p3b.conf'):
    """A config; every config of a test shares one state (what is
    imported is known to all)."""
    return h.write_config(t.path(name), h.config_with_store(
        t.path('state'), store_text, accounts))


def auth_commands(rec):
    """The AUTHENTICATE/LOGIN lines the client sent, and the line after
    each (a second step), with credentials as they went."""
    out = []
    lines = rec.lines()
    for i, l in enumerate(lines):
        m = re.match(rb'\S+ (AUTHENTICATE|LOGIN)\b(.*)$', l, re.I)
        if m:
            out.append((m.group(1).upper().decode(), m.group(2).strip(),
                        lines[i + 1] if i + 1 < len(lines) else b''))
    return out


def test_plain_with_sasl_ir_then_two_steps(t):
    """Dovecot offers AUTH=PLAIN and SASL-IR: one AUTHENTICATE PLAIN line
    with the response; without SASL-IR (imap_capability) the response
    comes after the "+"; either way the mail is imported."""
    src, msgs = source(t)
    store = ist.dovecot_store(t)
    rec = Recorder(t, store.ports['imap'])
    conf = write_conf(t, plain_store_block(rec.port),
                      [h.account_block('acct', src)])
    p = sync(t, conf)
    cmds = auth_commands(rec)
    want = base64.b64encode(b'\0alice\0secret')
    t.check(len(cmds) == 1 and cmds[0][0] == 'AUTHENTICATE' and
            cmds[0][1] == b'PLAIN ' + want, 'one AUTHENTICATE PLAIN with SASL-IR: %r' % cmds)
    t.check(h.imap_count(store) == 5, '5 imported')

    store.restart(extra_conf=store.extra_conf +
                  'imap_capability = IMAP4rev1 LITERAL+ UIDPLUS NAMESPACE\n')
    rec2 = Recorder(t, store.ports['imap'])
    h.seed(src, 'alice', [h.make_message(90)])
    conf2 = write_conf(t, plain_store_block(rec2.port),
                       [h.account_block('acct', src)], name='two.conf')
    p = t.run_bridge(conf2, '-v', 'sync')
    t.check(p.returncode == 0, 'two-step sync: %s' % p.stderr)
    cmds = auth_commands(rec2)
    t.check(len(cmds) == 1 and cmds[0][:2] == ('AUTHENTICATE', b'PLAIN') and
            cmds[0][2] == want, 'AUTHENTICATE PLAIN, then the response alone: %r' % cmds)
    t.check('logged in as alice with PLAIN' in p.stderr, '-v says PLAIN: %s' % p.stderr)
    t.check(h.imap_count(store) == 6, 'the new message imported too')


def test_login_when_asked(t):
    """auth = "login": the LOGIN command, not AUTHENTICATE."""
    src, _ = source(t, 3)
    store = ist.dovecot_store(t)
    rec = Recorder(t, store.ports['imap'])
    conf = write_conf(t, plain_store_block(rec.port, auth='login'),
                      [h.account_block('acct', src)])
    p = sync(t, conf)
    cmds = auth_commands(rec)
    t.check([c[0] for c in cmds] == ['LOGIN'], 'LOGIN only: %r' % cmds)
    t.check(h.imap_count(store) == 3, '3 imported')


def test_logindisabled_sends_no_password(t):
    """A server announcing LOGINDISABLED (over plaintext) gets neither LOGIN
    nor AUTHENTICATE PLAIN: 69, the reason named, no credential on the
    wire, nothing fetched."""
    src, _ = source(t, 3)
    store = ist.dovecot_store(
        t, extra='imap_capability = IMAP4rev1 LOGINDISABLED UIDPLUS\n')
    rec = Recorder(t, store.ports['imap'])
    for auth in (None, 'plain', 'login'):
        conf = write_conf(t, plain_store_block(rec.port, auth=auth),
                          [h.account_block('acct', src, extra='leave_on_server = false')],
                          name='%s.conf' % auth)
        p = t.run_bridge(conf, 'sync')
        t.check(p.returncode == 69, 'auth = %s: exit 69, got %d: %s'
                % (auth, p.returncode, p.stderr))
        t.check('LOGINDISABLED' in p.stderr and 'acct' in p.stderr,
                'says LOGINDISABLED: %s' % p.stderr)
    t.check(auth_commands(rec) == [] and b'secret' not in rec.sent and
            base64.b64encode(b'\0alice\0secret') not in rec.sent,
            'no LOGIN or AUTHENTICATE sent: %r' % rec.sent[-300:])
    t.check(h.pop3_stat(src)[0] == 3 and ist.stored_count(store) == 0,
            'nothing fetched or deleted')


def test_wrong_password_is_69_and_not_shown(t):
    src, _ = source(t, 2)
    store = ist.dovecot_store(t)
    conf = ist.config(t, store, [h.account_block('acct', src)], master=False,
                      password='Wr0ng-pa55')
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 69, 'exit 69, got %d: %s' % (p.returncode, p.stderr))
    t.check(re.search(r'acct: imap store localhost:\d+: PLAIN login as alice refused '
                      r'\[AUTHENTICATIONFAILED\]', p.stderr),
            'one line naming account, store and code: %s' % p.stderr)
    out = p.stdout + p.stderr
    t.check('Wr0ng-pa55' not in out and
            base64.b64encode(b'\0alice\0Wr0ng-pa55').decode() not in out,
            'the password is not shown')


def test_master_user_logs_in_with_plain(t):
    """The master login goes as SASL PLAIN with the user as authorization
    identity (RFC 4616): no separator needed on the server."""
    src, _ = source(t, 2)
    store = ist.dovecot_store(t)
    conf = ist.config(t, store, [h.account_block('acct', src)])
    p = t.run_bridge(conf, '-v', 'sync')
    t.check(p.returncode == 0, 'sync: %s' % p.stderr)
    t.check('logged in as alice with PLAIN' in p.stderr, '-v: %s' % p.stderr)
    t.check(h.imap_count(store) == 2, 'stored in alice\'s mailbox')


def oauth_conf(store, tokfile, mech):
    """An IMAPS store block logging in as alice with auth = mech, the
    token read by password_command from tokfile."""
    block = ist.store_block(store, master=False, password='',
                            extra='auth = %s\n  password_command = %s'
                            % (h.cq(mech), h.cq('cat ' + tokfile)))
    block = block.replace('  password = ""\n', '')
    return block


def test_oauth_tokens(t):
    """XOAUTH2 and OAUTHBEARER, token from password_command: a valid token
    imports; once expired: exit 69, one line naming the account and the
    server's status, the token in no output; nothing lost."""
    tokens = oauth.TokenServer(t)
    store = oauth.imap_store(t, tokens)
    src, msgs = source(t, 4)
    tok = tokens.grant('alice')
    tokfile = t.path('token')
    with open(tokfile, 'w') as f:
        f.write(tok + '\n')
    for i, mech in enumerate(('xoauth2', 'oauthbearer')):
        h.seed(src, 'alice', [h.make_message(100 + i)])
        conf = write_conf(t, oauth_conf(store, tokfile, mech),
                          [h.account_block('acct', src)], name=mech + '.conf')
        p = t.run_bridge(conf, '-v', 'sync')
        t.check(p.returncode == 0, '%s with a valid token: %s' % (mech, p.stderr))
        t.check('logged in as alice with %s' % mech.upper() in p.stderr,
                '-v names %s: %s' % (mech, p.stderr))
        t.check(tok not in p.stdout + p.stderr, 'token not shown')
    t.check(h.imap_count(store) == 6, 'all imported with tokens: %d' % h.imap_count(store))
    t.check(tok in tokens.requests(), 'Dovecot introspected the token')

    tokens.expire(tok)
    h.seed(src, 'alice', [h.make_message(200)])
    for mech, status in (('xoauth2', '401'), ('oauthbearer', 'invalid_token')):
        conf = write_conf(t, oauth_conf(store, tokfile, mech),
                          [h.account_block('acct', src)], name=mech + '-x.conf')
        p = t.run_bridge(conf, 'sync')
        t.check(p.returncode == 69, '%s expired: exit 69, got %d: %s'
                % (mech, p.returncode, p.stderr))
        lines = [l for l in p.stderr.splitlines() if 'refused' in l]
        t.check(len(lines) == 1 and lines[0].startswith('pop3bridge: acct: ') and
                '%s login as alice refused' % mech.upper() in lines[0] and
                'status %s' % status in lines[0],
                'one line: account, mechanism, status: %r' % p.stderr)
        t.check(tok not in p.stdout + p.stderr and
                base64.b64encode(oauth.xoauth2('alice', tok)).decode() not in p.stderr,
                'token never shown')
    t.check(h.imap_count(store) == 6, 'nothing stored with the expired token')
    t.check(h.pop3_stat(src)[0] == 7, 'and nothing lost on the POP3 server')
    for root, _, files in os.walk(t.path('state')):
        for fn in files:
            with open(os.path.join(root, fn), 'rb') as f:
                t.check(tok.encode() not in f.read(), 'token not in %s' % fn)


def test_oauth_two_step_answers(t):
    """Without SASL-IR: AUTHENTICATE XOAUTH2 / OAUTHBEARER, then the
    response after "+"; a refused token's error challenge is answered with
    an empty line (XOAUTH2) or ^A (OAUTHBEARER, RFC 7628 3.2.3)."""
    tokens = oauth.TokenServer(t)
    store = oauth.imap_store(t, tokens, extra='imap_capability = IMAP4rev1 UIDPLUS\n')
    src, _ = source(t, 2)
    tok = tokens.grant('alice')
    tokfile = t.path('token')
    with open(tokfile, 'w') as f:
        f.write(tok + '\n')
    rec = Recorder(t, store.ports['imap'])
    for mech in ('xoauth2', 'oauthbearer'):
        block = plain_store_block(rec.port, auth=mech, password='x')
        block = block.replace('password = "x"', 'password_command = %s' % h.cq('cat ' + tokfile))
        conf = write_conf(t, block, [h.account_block('acct', src)], name=mech + '.conf')
        p = t.run_bridge(conf, 'sync')
        t.check(p.returncode == 0, '%s two-step: %s' % (mech, p.stderr))
    tokens.expire(tok)
    for mech in ('xoauth2', 'oauthbearer'):
        conf = t.path(mech + '.conf')
        p = t.run_bridge(conf, 'sync')
        t.check(p.returncode == 69, '%s expired, two-step: 69, got %d' % (mech, p.returncode))
    cmds = auth_commands(rec)
    t.check([(c[0], c[1]) for c in cmds] == [('AUTHENTICATE', b'XOAUTH2'),
                                             ('AUTHENTICATE', b'OAUTHBEARER')] * 2,
            'each AUTHENTICATE without an initial response: %r' % [c[:2] for c in cmds])
    lines = rec.lines()
    after = [lines[i + 2] for i, l in enumerate(lines)
             if re.match(rb'\S+ AUTHENTICATE ', l)][2:]
    t.check(after == [b'', b'AQ=='], 'answers to the error challenge: %r' % after)
    t.check(h.imap_count(store) == 2, 'imported with the valid token')


class Greeter:
    """A listener on a free 127.0.0.1 port that sends one line to each
    client and keeps what the client sent (no packaged server greets with
    PREAUTH on demand)."""

    def __init__(self, t, line):
        self.line, self.got = line, b''
        self._srv = socket.socket()
        self._srv.bind(('127.0.0.1', 0))
        self._srv.listen(4)
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()
        t.cleanup(self._srv.close)

    def _serve(self):
        while True:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                c.sendall(self.line)
                try:
                    while True:
                        d = c.recv(4096)
                        if not d:
                            break
                        self.got += d
                        if b'LOGOUT' in d.upper():
                            c.sendall(b'* BYE\r\n')
                            break
                except OSError:
                    pass


def test_preauth_and_bad_greetings(t):
    """PREAUTH is refused (69: the server chose the mailbox), a greeting
    that is no IMAP is an error (74), a BYE greeting temporary (75); no
    credential is sent to any of them and nothing is fetched."""
    src, _ = source(t, 2)
    for line, code in ((b'* PREAUTH IMAP4rev1 logged in as somebody\r\n', 69),
                       (b'220 smtp.example.com ESMTP\r\n', 74),
                       (b'* BYE too busy, try later\r\n', 75)):
        g = Greeter(t, line)
        conf = write_conf(t, plain_store_block(g.port),
                          [h.account_block('acct', src, extra='leave_on_server = false')],
                          name='greet%d.conf' % code)
        p = t.run_bridge(conf, 'sync')
        t.check(p.returncode == code, '%r: exit %d, got %d: %s'
                % (line[:20], code, p.returncode, p.stderr))
        t.check(p.stderr.count('acct: imap store 127.0.0.1:%d' % g.port) == 1,
                'one line naming account and store: %s' % p.stderr)
        t.check(b'secret' not in g.got and b'LOGIN' not in g.got.upper() and
                b'AUTHENTICATE' not in g.got.upper(), 'no credential sent: %r' % g.got)
    t.check(h.pop3_stat(src)[0] == 2, 'nothing fetched or deleted')


if __name__ == '__main__':
    h.main()
