"""OAuth2 for integration tests: a local token-introspection server
(RFC 7662) whose tokens the test decides, and Dovecots that accept those
tokens over SASL XOAUTH2 and OAUTHBEARER (RFC 7628) next to passwords.

    tokens = TokenServer(t)                  started on a free 127.0.0.1 port,
                                             stopped at the end of the test
    tok = tokens.grant('alice')              a new token, active, for alice
    tokens.expire(tok)                       from now on introspected inactive
    tokens.add('literal-token', 'alice', active=True)
    tokens.url, tokens.requests()            the introspection URL; the tokens
                                             introspected so far, in order
    src = dovecot(t, tokens, 'src')          harness Dovecot (POP3 + IMAP) whose
                                             passdb also takes the tokens
    store = imap_store(t, tokens)            imapstore.dovecot_store likewise
                                             (master user kept)
    xoauth2(user, tok), oauthbearer(user, tok, host, port)
                                             client initial responses (bytes)
    parse_xoauth2(b), parse_oauthbearer(b)   (user, token), ValueError if
                                             malformed: for test servers
    introspect(url, token)                   the JSON answer, as a server asks
    XOAUTH2_ERROR, OAUTHBEARER_ERROR         the error challenges smtpd.py sends

The server answers POST (form "token=...", as Dovecot's introspection_mode
= post sends it) and GET (?token=...) on any path with 200 and
{"active": true, "username": USER} for an active token, {"active": false}
for an expired or unknown one (RFC 7662 section 2.2). Every token is
unguessable and known only to the test; nothing here logs a token.

Dovecot's auth process has no auth cache here (auth_cache_size is 0), so
expire() takes effect at the next login.

What Dovecot 2.3.19 answers (test_fixtures_oauth.py checks each line):
    POP3 CAPA                "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER"
    AUTH XOAUTH2             "+ " (with a space), then the base64 response
    AUTH XOAUTH2 <b64>       one line; a 2500-character token still fits
    valid token              "+OK Logged in."
    refused token            "+ " base64({"status":"401","schemes":"bearer",
                             "scope":"mail"}) -- for OAUTHBEARER
                             base64({"status":"invalid_token"}) -- then, after
                             any answer (empty line or "AQ=="):
                             "-ERR [AUTH] Authentication failed."; "*" instead
                             gives "-ERR Authentication aborted by client."
    OAUTHBEARER without a=   "-ERR [AUTH] Authentication failed." at once, no
                             challenge: Dovecot needs the gs2 authzid
    IMAP                     SASL-IR and AUTH=XOAUTH2 AUTH=OAUTHBEARER in the
                             greeting's capabilities; the same exchanges with
                             "+ " continuations; success "TAG OK Logged in"
                             after an untagged "* CAPABILITY ..." (or
                             "TAG OK [CAPABILITY ...] Logged in"), refusal
                             "TAG NO [AUTHENTICATIONFAILED] Authentication
                             failed.", "*" gives "TAG BAD Authentication aborted
                             by client."
"""

import base64
import http.server
import json
import os
import secrets
import threading
import urllib.parse
import urllib.request

# The error challenge a refused token gets before the final failure (RFC
# 7628 section 3.2.2): Dovecot 2.3 sends exactly these for XOAUTH2 (as Gmail
# does, with its own scope) and {"status":"invalid_token"} for OAUTHBEARER;
# smtpd.py's upstream sends these two.
XOAUTH2_ERROR = {'status': '401', 'schemes': 'bearer', 'scope': 'mail'}
OAUTHBEARER_ERROR = {'status': 'invalid_token', 'schemes': 'bearer', 'scope': 'mail'}


class TokenServer:
    """RFC 7662 introspection on http://127.0.0.1:PORT/introspect, in a
    thread of the test process (so the test changes tokens while a server
    or pop3bridge runs). tokens: initial {token: user}, all active."""

    PATH = '/introspect'

    def __init__(self, t=None, tokens=None):
        self._lock = threading.Lock()
        self._tokens = {}        # token -> (user, active)
        self._requests = []      # tokens introspected, in order
        for tok, user in (tokens or {}).items():
            self.add(tok, user)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                form = urllib.parse.parse_qs(self.rfile.read(n).decode('utf-8', 'replace'))
                self._answer(form)

            def do_GET(self):
                self._answer(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))

            def _answer(self, form):
                tok = (form.get('token') or [''])[0]
                body = json.dumps(owner._introspect(tok)).encode()
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):  # the request line holds GET tokens
                pass

        self._httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = 'http://127.0.0.1:%d%s' % (self.port, self.PATH)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name='oauth-introspection', daemon=True)
        self._thread.start()
        if t is not None:
            t.cleanup(self.stop)

    def _introspect(self, tok):
        with self._lock:
            self._requests.append(tok)
            user, active = self._tokens.get(tok, (None, False))
        return {'active': True, 'username': user} if active else {'active': False}

    def add(self, token, user, active=True):
        with self._lock:
            self._tokens[token] = (user, active)
        return token

    def grant(self, user):
        """A new active token for user."""
        return self.add('p3b-tok-' + secrets.token_urlsafe(24), user)

    def expire(self, token):
        with self._lock:
            user, _ = self._tokens[token]
            self._tokens[token] = (user, False)

    def requests(self):
        """The tokens introspected so far (each request once), in order."""
        with self._lock:
            return list(self._requests)

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(10)
            self._httpd = None


# ---------------------------------------------------------------- Dovecot

def dovecot_conf(tokens, args_path):
    """dovecot.conf text (appended after the harness's own, which it
    overrides) adding the oauth2 passdb for XOAUTH2 and OAUTHBEARER; writes
    its args file at args_path. Password mechanisms keep the passwd-file
    passdb, which comes first in the harness's config."""
    with open(args_path, 'w') as f:
        f.write('introspection_url = %s\n'
                'introspection_mode = post\n'
                'username_attribute = username\n'
                'active_attribute = active\n'
                'active_value = true\n'
                'timeout_msecs = 5000\n' % tokens.url)
    os.chmod(args_path, 0o644)
    return ('auth_mechanisms = plain login apop xoauth2 oauthbearer\n'
            'passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n'
            '  args = %s\n}\n' % args_path)


def dovecot(t, tokens, name='src', extra_conf='', **kw):
    """t.dovecot(name, **kw) (started) that also takes tokens' tokens."""
    conf = dovecot_conf(tokens, t.path(name + '-oauth2.conf'))
    return t.dovecot(name, extra_conf=conf + extra_conf, **kw)


def imap_store(t, tokens, name='store', extra='', **kw):
    """imapstore.dovecot_store(t, name, **kw) that also takes the tokens:
    alice logs in with her password, a token, or as the master user."""
    import imapstore
    conf = dovecot_conf(tokens, t.path(name + '-oauth2.conf'))
    return imapstore.dovecot_store(t, name, extra=conf + extra, **kw)


# ---------------------------------------------------------------- SASL messages

def xoauth2(user, token):
    """The XOAUTH2 client response (before base64): user=U^Aauth=Bearer T^A^A."""
    return b'user=%s\x01auth=Bearer %s\x01\x01' % (user.encode(), token.encode())


def oauthbearer(user, token, host='127.0.0.1', port=None):
    """The OAUTHBEARER client response (RFC 7628 section 3.1) with a gs2
    header naming user (a=), host and port key/values."""
    kv = b'host=%s\x01' % host.encode()
    if port is not None:
        kv += b'port=%d\x01' % port
    return b'n,a=%s,\x01%sauth=Bearer %s\x01\x01' % (user.encode(), kv, token.encode())


def b64(b):
    return base64.b64encode(b).decode()


def _bearer(value):
    scheme, _, tok = value.partition(' ')
    if scheme.lower() != 'bearer' or not tok:
        raise ValueError('auth is not "Bearer TOKEN"')
    return tok


def parse_xoauth2(b):
    """(user, token) of an XOAUTH2 client response; ValueError if malformed."""
    s = b.decode('utf-8')
    if not s.endswith('\x01\x01'):
        raise ValueError('XOAUTH2 response not ended by ^A^A')
    kv = dict(f.split('=', 1) for f in s[:-2].split('\x01') if '=' in f)
    if 'user' not in kv or 'auth' not in kv:
        raise ValueError('XOAUTH2 response lacks user= or auth=')
    return kv['user'], _bearer(kv['auth'])


def parse_oauthbearer(b):
    """(authzid or None, token) of an OAUTHBEARER client response (RFC 7628
    section 3.1); ValueError if malformed."""
    s = b.decode('utf-8')
    gs2, sep, rest = s.partition('\x01')
    if not sep or not rest.endswith('\x01'):
        raise ValueError('OAUTHBEARER response not "gs2-header ^A kvpairs ^A"')
    fields = gs2.split(',')
    if len(fields) != 3 or fields[0] not in ('n', 'y') or fields[2] != '':
        raise ValueError('bad gs2 header %r' % gs2)
    authz = fields[1][2:] if fields[1].startswith('a=') else None
    if fields[1] and authz is None:
        raise ValueError('bad gs2 authzid %r' % fields[1])
    kv = dict(f.split('=', 1) for f in rest[:-1].split('\x01') if '=' in f)
    if 'auth' not in kv:
        raise ValueError('OAUTHBEARER response lacks auth=')
    return authz, _bearer(kv['auth'])


def introspect(url, token, timeout=5):
    """POSTs token=TOKEN to url (as Dovecot does); the JSON answer (dict)."""
    data = urllib.parse.urlencode({'token': token}).encode()
    with urllib.request.urlopen(url, data=data, timeout=timeout) as r:
        return json.loads(r.read().decode())
