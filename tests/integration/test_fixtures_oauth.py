#!/usr/bin/python3
"""The OAuth2 fixtures proven with the standard library's clients: the
introspection server (oauth.py), Dovecot POP3 and IMAP taking its tokens
over XOAUTH2 and OAUTHBEARER next to passwords (and the IMAP store's master
user), and the aiosmtpd upstream (smtpd.py) doing the same. They pin down
the exact exchanges pop3bridge's SASL client must handle; each transcript
is printed (responses abridged, no token)."""

import base64
import imaplib
import json
import os
import poplib
import smtplib
import ssl
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import oauth  # noqa: E402
from smtpd import Upstream  # noqa: E402

ASAN = False  # does not run pop3bridge: one run is enough

# Dovecot 2.3's error challenge for a refused token, per mechanism
DOVECOT_XOAUTH2_ERROR = {'status': '401', 'schemes': 'bearer', 'scope': 'mail'}
DOVECOT_OAUTHBEARER_ERROR = {'status': 'invalid_token'}


def b64(b):
    return base64.b64encode(b).decode()


def challenge_json(line, prefix):
    """The JSON in an error challenge line "PREFIX base64", or None."""
    if not line.startswith(prefix) or len(line) <= len(prefix):
        return None
    try:
        return json.loads(base64.b64decode(line[len(prefix):], validate=True))
    except ValueError:
        return None


class Wire:
    """A transcript; the SASL response (the only line holding a token) is
    shown abridged."""

    def __init__(self, title, secret_b64):
        self.title, self.secret, self.lines = title, secret_b64, []

    def c(self, line):
        if self.secret:
            line = line.replace(self.secret, '<%d-char response>' % len(self.secret))
        self.lines.append('C: ' + line)

    def s(self, line):
        self.lines.append('S: ' + line)
        return line

    def show(self):
        print('  %s' % self.title)
        for l in self.lines:
            print('    ' + (l if len(l) < 160 else l[:157] + '...'))


# ---------------------------------------------------------------- POP3

def pop3_sasl(t, dv, mech, resp, one_line, dummy='AQ=='):
    """AUTH MECH against dv's plain POP3 port with poplib. Returns (p,
    final line, error challenge JSON or None); p is the logged-in POP3 on
    success (caller quits), else None."""
    p = poplib.POP3('127.0.0.1', dv.ports['pop3'], timeout=15)
    r64 = b64(resp)
    w = Wire('POP3 AUTH %s %s' % (mech, 'with initial response' if one_line else 'two-step'), r64)
    w.s(p.getwelcome().decode())

    def cmd(line):
        w.c(line)
        p._putcmd(line)
        return w.s(p._getline()[0].decode())
    if one_line:
        r = cmd('AUTH %s %s' % (mech, r64))
    else:
        r = cmd('AUTH %s' % mech)
        t.check(r == '+ ', 'two-step AUTH %s: an empty "+ " challenge first: %r' % (mech, r))
        r = cmd(r64)
    err = challenge_json(r, '+ ')
    if err is not None:
        r = cmd(dummy)      # RFC 7628 3.2.3: answer the error challenge
    w.show()
    if r.startswith('+OK'):
        return p, r, err
    p.quit()
    return None, r, err


def test_token_server(t):
    tokens = oauth.TokenServer(t)
    good = tokens.grant('alice')
    old = tokens.grant('alice')
    tokens.expire(old)
    fixed = tokens.add('literal-token', 'bob')
    t.check(good != tokens.grant('alice'), 'each grant is a new token')
    t.check(oauth.introspect(tokens.url, good) == {'active': True, 'username': 'alice'},
            'active token')
    t.check(oauth.introspect(tokens.url, fixed) == {'active': True, 'username': 'bob'},
            'literal token')
    t.check(oauth.introspect(tokens.url, old) == {'active': False}, 'expired token inactive')
    t.check(oauth.introspect(tokens.url, 'never-issued') == {'active': False}, 'unknown token')
    with urllib.request.urlopen(tokens.url + '?token=' + good, timeout=5) as r:
        t.check(json.loads(r.read()) == {'active': True, 'username': 'alice'}, 'GET works too')
    t.check(tokens.requests() == [good, fixed, old, 'never-issued', good],
            'requests recorded in order: %r' % tokens.requests())
    # the SASL messages and their parsers agree
    x = oauth.xoauth2('alice', good)
    t.check(x == b'user=alice\x01auth=Bearer ' + good.encode() + b'\x01\x01', 'XOAUTH2 format')
    t.check(oauth.parse_xoauth2(x) == ('alice', good), 'XOAUTH2 parses back')
    o = oauth.oauthbearer('alice', good, 'localhost', 995)
    t.check(o == b'n,a=alice,\x01host=localhost\x01port=995\x01auth=Bearer '
            + good.encode() + b'\x01\x01', 'OAUTHBEARER format (RFC 7628 3.1)')
    t.check(oauth.parse_oauthbearer(o) == ('alice', good), 'OAUTHBEARER parses back')
    t.check(oauth.parse_oauthbearer(b'n,,\x01auth=Bearer x\x01\x01') == (None, 'x'),
            'OAUTHBEARER without authzid')
    for bad in (b'user=alice\x01auth=Bearer x\x01', b'user=alice\x01auth=Basic x\x01\x01',
                b'auth=Bearer x\x01\x01'):
        try:
            oauth.parse_xoauth2(bad)
            t.check(False, 'malformed XOAUTH2 %r accepted' % bad)
        except ValueError:
            pass
    for bad in (b'p=x,a=alice,\x01auth=Bearer x\x01\x01', b'n,a=alice,auth=Bearer x\x01\x01',
                b'n,a=alice,\x01host=h\x01\x01'):
        try:
            oauth.parse_oauthbearer(bad)
            t.check(False, 'malformed OAUTHBEARER %r accepted' % bad)
        except ValueError:
            pass
    port = tokens.port
    tokens.stop()
    t.check(not h.port_open(port), 'stopped: port closed')


def test_dovecot_pop3_xoauth2(t):
    tokens = oauth.TokenServer(t)
    good, bad = tokens.grant('alice'), tokens.grant('alice')
    tokens.expire(bad)
    src = oauth.dovecot(t, tokens, 'src')
    h.seed(src, 'alice', h.make_corpus(3))
    p = poplib.POP3('127.0.0.1', src.ports['pop3'], timeout=15)
    sasl = p.capa().get('SASL', [])
    p.quit()
    t.check({'PLAIN', 'XOAUTH2', 'OAUTHBEARER'} <= set(sasl), 'CAPA SASL lists them: %r' % sasl)

    # two-step, as Microsoft 365 needs it
    p, r, err = pop3_sasl(t, src, 'XOAUTH2', oauth.xoauth2('alice', good), one_line=False)
    t.check(r == '+OK Logged in.' and err is None, 'two-step XOAUTH2 logs in: %r' % r)
    if p:
        t.check(p.stat()[0] == 3, 'logged in as alice: STAT 3')
        p.quit()
    # one line: the initial response on the AUTH line (RFC 5034)
    p, r, err = pop3_sasl(t, src, 'XOAUTH2', oauth.xoauth2('alice', good), one_line=True)
    t.check(r == '+OK Logged in.' and err is None, 'one-line XOAUTH2 logs in: %r' % r)
    if p:
        p.quit()
    # a long token (Microsoft's are over 1500 characters) fits one line too
    long_tok = tokens.add('L' * 2500, 'alice')
    p, r, err = pop3_sasl(t, src, 'XOAUTH2', oauth.xoauth2('alice', long_tok), one_line=True)
    t.check(r == '+OK Logged in.', 'one-line XOAUTH2 with a 2500-char token: %r' % r)
    if p:
        p.quit()
    # refused: "+ base64 JSON" first, then -ERR once the client answers
    for one_line, dummy in ((True, ''), (False, 'AQ==')):
        p, r, err = pop3_sasl(t, src, 'XOAUTH2', oauth.xoauth2('alice', bad), one_line, dummy)
        t.check(err == DOVECOT_XOAUTH2_ERROR, 'error challenge JSON %r' % err)
        t.check(p is None and r == '-ERR [AUTH] Authentication failed.',
                'expired token refused after the answer %r: %r' % (dummy, r))
    # a valid token of another user is refused the same way
    p, r, err = pop3_sasl(t, src, 'XOAUTH2', oauth.xoauth2('bob', good), True, '')
    t.check(p is None and err == DOVECOT_XOAUTH2_ERROR and r.startswith('-ERR [AUTH]'),
            'token of alice for bob refused: %r' % r)
    # "*" cancels at the error challenge
    p, r, err = pop3_sasl(t, src, 'XOAUTH2', oauth.xoauth2('alice', bad), True, '*')
    t.check(r == '-ERR Authentication aborted by client.', 'cancel: %r' % r)
    # passwords still work
    t.check(h.pop3_stat(src, 'alice', 'secret')[0] == 3, 'USER/PASS still logs in')
    t.check(tokens.requests().count(bad) == 3, 'Dovecot introspected the expired token '
            'each time (no auth cache): %d' % tokens.requests().count(bad))


def test_dovecot_pop3_oauthbearer(t):
    tokens = oauth.TokenServer(t)
    good, bad = tokens.grant('alice'), tokens.grant('alice')
    tokens.expire(bad)
    src = oauth.dovecot(t, tokens, 'src')
    port = src.ports['pop3']
    for one_line in (True, False):
        p, r, err = pop3_sasl(t, src, 'OAUTHBEARER',
                              oauth.oauthbearer('alice', good, '127.0.0.1', port), one_line)
        t.check(r == '+OK Logged in.' and err is None,
                'OAUTHBEARER %s logs in: %r' % ('one-line' if one_line else 'two-step', r))
        if p:
            t.check(p.stat()[0] == 0, 'STAT works after OAUTHBEARER')
            p.quit()
    p, r, err = pop3_sasl(t, src, 'OAUTHBEARER', oauth.oauthbearer('alice', bad, '127.0.0.1', port),
                          True, 'AQ==')
    t.check(err == DOVECOT_OAUTHBEARER_ERROR, 'error challenge JSON %r' % err)
    t.check(p is None and r == '-ERR [AUTH] Authentication failed.', 'refused: %r' % r)
    # Dovecot insists on the gs2 authzid (a=user): without it, no challenge
    p, r, err = pop3_sasl(t, src, 'OAUTHBEARER',
                          b'n,,\x01auth=Bearer ' + good.encode() + b'\x01\x01', True)
    t.check(p is None and err is None and r == '-ERR [AUTH] Authentication failed.',
            'OAUTHBEARER without a= refused at once: %r' % r)
    # expiring a live token takes effect at the next login
    tokens.expire(good)
    p, r, err = pop3_sasl(t, src, 'OAUTHBEARER',
                          oauth.oauthbearer('alice', good, '127.0.0.1', port), True)
    t.check(p is None and r.startswith('-ERR [AUTH]'), 'expired at runtime: %r' % r)


# ---------------------------------------------------------------- IMAP

def imap_raw(m, tag, line, secret, answers=('AQ==',)):
    """Sends `TAG LINE` on imaplib connection m; answers each continuation
    with the next of answers; returns (tagged line, untagged lines,
    continuations, wire)."""
    w = Wire('IMAP %s' % line.split(' ')[0:2], secret)
    full = '%s %s' % (tag, line)
    w.c(full)
    m.send(full.encode() + b'\r\n')
    untagged, conts, answers = [], [], list(answers)
    while True:
        r = w.s(m.readline().decode().rstrip('\r\n'))
        if r.startswith(tag + ' '):
            w.show()
            return r, untagged, conts, w
        if r.startswith('+'):
            conts.append(r)
            a = answers.pop(0)
            w.c(a)
            m.send(a.encode() + b'\r\n')
        else:
            untagged.append(r)


def imap_check_logged_in(t, m, what):
    r, _, _, _ = imap_raw(m, 'X9', 'SELECT INBOX', None)
    t.check(r.startswith('X9 OK'), '%s: SELECT after login: %r' % (what, r))


def test_dovecot_imap_xoauth2_oauthbearer(t):
    tokens = oauth.TokenServer(t)
    good, bad = tokens.grant('alice'), tokens.grant('alice')
    tokens.expire(bad)
    dv = oauth.dovecot(t, tokens, 'imap', protocols=('imap',))
    port = dv.ports['imap']
    m = imaplib.IMAP4('127.0.0.1', port, timeout=15)
    caps = set(m.capabilities)
    t.check({'SASL-IR', 'AUTH=XOAUTH2', 'AUTH=OAUTHBEARER', 'AUTH=PLAIN'} <= caps,
            'capabilities: %r' % sorted(caps))
    # two-step with imaplib's own AUTHENTICATE: continuation "+ " (empty)
    seen = []
    resp = oauth.xoauth2('alice', good)
    typ, data = m.authenticate('XOAUTH2', lambda ch: seen.append(ch) or resp)
    t.check(typ == 'OK' and seen == [b''], 'imaplib two-step XOAUTH2: %r %r %r' % (typ, data, seen))
    t.check(m.select('INBOX')[0] == 'OK', 'SELECT as alice')
    m.logout()

    for mech, resp_of, err_json in (
            ('XOAUTH2', lambda tok: oauth.xoauth2('alice', tok), DOVECOT_XOAUTH2_ERROR),
            ('OAUTHBEARER', lambda tok: oauth.oauthbearer('alice', tok, '127.0.0.1', port),
             DOVECOT_OAUTHBEARER_ERROR)):
        # SASL-IR (RFC 4959): one line, no continuation
        m = imaplib.IMAP4('127.0.0.1', port, timeout=15)
        r64 = b64(resp_of(good))
        r, untagged, conts, _ = imap_raw(m, 'A1', 'AUTHENTICATE %s %s' % (mech, r64), r64)
        t.check(r.startswith('A1 OK') and not conts, '%s SASL-IR logs in: %r' % (mech, r))
        t.check('[CAPABILITY ' in r or any(u.startswith('* CAPABILITY') for u in untagged),
                'post-login capabilities sent')
        imap_check_logged_in(t, m, mech)
        m.logout()
        # two-step, refused: "+ " then "+ base64 JSON", answered, then NO
        m = imaplib.IMAP4('127.0.0.1', port, timeout=15)
        r64 = b64(resp_of(bad))
        r, _, conts, _ = imap_raw(m, 'A2', 'AUTHENTICATE %s' % mech, r64, [r64, 'AQ=='])
        t.check(len(conts) == 2 and conts[0] == '+ ' and challenge_json(conts[1], '+ ') == err_json,
                '%s refused: continuations %r' % (mech, conts))
        t.check(r == 'A2 NO [AUTHENTICATIONFAILED] Authentication failed.', '%s: %r' % (mech, r))
        # SASL-IR, refused, cancelled with "*" at the error challenge
        r64 = b64(resp_of(bad))
        r, _, conts, _ = imap_raw(m, 'A3', 'AUTHENTICATE %s %s' % (mech, r64), r64, ['*'])
        t.check(len(conts) == 1 and challenge_json(conts[0], '+ ') == err_json,
                '%s SASL-IR refused: error challenge %r' % (mech, conts))
        t.check(r == 'A3 BAD Authentication aborted by client.', '%s cancel: %r' % (mech, r))
        m.logout()

    # imaplib's AUTHENTICATE sees the error challenge and the NO
    m = imaplib.IMAP4('127.0.0.1', port, timeout=15)
    seen, answers = [], [oauth.oauthbearer('alice', bad, '127.0.0.1', port), b'\x01']
    try:
        m.authenticate('OAUTHBEARER', lambda ch: seen.append(ch) or answers.pop(0))
        t.check(False, 'imaplib OAUTHBEARER with an expired token logged in')
    except imaplib.IMAP4.error as e:
        t.check('AUTHENTICATIONFAILED' in str(e), 'imaplib error: %s' % e)
    t.check(len(seen) == 2 and json.loads(seen[1]) == DOVECOT_OAUTHBEARER_ERROR,
            'imaplib got the JSON challenge: %r' % seen)
    m.logout()
    m = imaplib.IMAP4('127.0.0.1', port, timeout=15)
    t.check(m.login('alice', 'secret')[0] == 'OK', 'LOGIN with the password still works')
    m.logout()


def test_imap_store_keeps_master_user(t):
    tokens = oauth.TokenServer(t)
    good = tokens.grant('alice')
    store = oauth.imap_store(t, tokens)
    port = store.ports['imap']
    m = imaplib.IMAP4('127.0.0.1', port, timeout=15)
    t.check(m.login('alice*' + store.master, store.master_pw)[0] == 'OK', 'master user login')
    m.logout()
    m = imaplib.IMAP4('127.0.0.1', port, timeout=15)
    t.check(m.login('alice', 'secret')[0] == 'OK', 'password login')
    m.logout()
    m = imaplib.IMAP4('127.0.0.1', port, timeout=15)
    r64 = b64(oauth.xoauth2('alice', good))
    r, _, _, _ = imap_raw(m, 'A1', 'AUTHENTICATE XOAUTH2 ' + r64, r64)
    t.check(r.startswith('A1 OK'), 'token login on the store: %r' % r)
    m.logout()
    # and over IMAPS with the test CA, as pop3bridge's store connects
    ctx = ssl.create_default_context(cafile=store.ca_file)
    m = imaplib.IMAP4_SSL('localhost', store.ports['imaps'], ssl_context=ctx, timeout=15)
    typ, _ = m.authenticate('XOAUTH2', lambda ch: oauth.xoauth2('alice', good))
    t.check(typ == 'OK', 'XOAUTH2 over IMAPS')
    m.logout()


# ---------------------------------------------------------------- SMTP upstream

def smtp_sasl(t, up, mech, resp, one_line=True, dummy=''):
    """AUTH MECH with smtplib's docmd; returns (smtp, final code, final
    text, error challenge JSON or None). smtp is open (caller quits)."""
    s = smtplib.SMTP('127.0.0.1', up.port, timeout=15)
    s.ehlo('client.test')
    r64 = b64(resp)
    w = Wire('SMTP AUTH %s %s' % (mech, 'with initial response' if one_line else 'two-step'), r64)

    def cmd(line):
        w.c(line)
        code, text = s.docmd(line)
        w.s('%d %s' % (code, text.decode()))
        return code, text.decode()
    if one_line:
        code, text = cmd('AUTH %s %s' % (mech, r64))
    else:
        code, text = cmd('AUTH %s' % mech)
        t.check(code == 334 and text == '', 'two-step: an empty 334 first: %d %r' % (code, text))
        code, text = cmd(r64)
    err = None
    if code == 334:
        err = json.loads(base64.b64decode(text))
        code, text = cmd(dummy)
    w.show()
    return s, code, text, err


def test_smtp_upstream_oauth(t):
    tokens = oauth.TokenServer(t)
    good, bad = tokens.grant('alice'), tokens.grant('alice')
    tokens.expire(bad)
    plain = Upstream(t, name='plain').start()
    s = smtplib.SMTP('127.0.0.1', plain.port, timeout=15)
    s.ehlo('client.test')
    t.check(s.esmtp_features.get('auth', '').split() == ['LOGIN', 'PLAIN'],
            'without oauth: AUTH %r unchanged' % s.esmtp_features.get('auth'))
    s.quit()

    up = Upstream(t, oauth=tokens).start()
    s = smtplib.SMTP('127.0.0.1', up.port, timeout=15)
    s.ehlo('client.test')
    t.check(s.esmtp_features.get('auth', '').split() == ['LOGIN', 'OAUTHBEARER', 'PLAIN', 'XOAUTH2'],
            'AUTH %r' % s.esmtp_features.get('auth'))
    t.check(s.login('relay', 'relaypw')[0] == 235, 'password login still works')
    s.quit()

    ok = '235 2.7.0 Authentication successful'
    for mech, resp in (('XOAUTH2', oauth.xoauth2('alice', good)),
                       ('OAUTHBEARER', oauth.oauthbearer('alice', good, '127.0.0.1', up.port))):
        for one_line in (True, False):
            s, code, text, err = smtp_sasl(t, up, mech, resp, one_line)
            t.check('%d %s' % (code, text) == ok and err is None,
                    '%s %s: %d %s' % (mech, one_line, code, text))
            s.quit()
    # a message relayed after XOAUTH2 (smtplib's own auth())
    s = smtplib.SMTP('127.0.0.1', up.port, timeout=15)
    s.ehlo('client.test')
    code, _ = s.auth('XOAUTH2', lambda ch=None: oauth.xoauth2('alice', good).decode())
    t.check(code == 235, 'smtplib auth XOAUTH2: %d' % code)
    msg = h.make_message(1)
    s.sendmail('alice@example.org', ['bob@example.net'], msg)
    s.quit()
    got = up.messages()
    t.check(len(got) == 1 and got[0]['content'] == msg, 'message accepted after XOAUTH2')

    # refused: 334 with the JSON error, the client's answer, then 535
    fail = '535 5.7.8 Username and Password not accepted'
    s, code, text, err = smtp_sasl(t, up, 'XOAUTH2', oauth.xoauth2('alice', bad), True, '')
    t.check(err == oauth.XOAUTH2_ERROR and '%d %s' % (code, text) == fail,
            'XOAUTH2 refused: %r %d %s' % (err, code, text))
    s.quit()
    s, code, text, err = smtp_sasl(t, up, 'OAUTHBEARER',
                                   oauth.oauthbearer('alice', bad, '127.0.0.1', up.port),
                                   False, 'AQ==')
    t.check(err == oauth.OAUTHBEARER_ERROR and '%d %s' % (code, text) == fail,
            'OAUTHBEARER refused: %r %d %s' % (err, code, text))
    s.quit()
    # OAUTHBEARER's answer to the error must be ^A (RFC 7628 3.2.3)
    s, code, text, err = smtp_sasl(t, up, 'OAUTHBEARER',
                                   oauth.oauthbearer('alice', bad, '127.0.0.1', up.port), True, '')
    t.check(code == 501, 'OAUTHBEARER error answered by an empty line: %d %s' % (code, text))
    s.quit()
    # wrong user for the token, malformed response, "*"
    s, code, text, err = smtp_sasl(t, up, 'XOAUTH2', oauth.xoauth2('bob', good), True, '')
    t.check(err is not None and code == 535, 'token of alice for bob: %d %s' % (code, text))
    s.quit()
    s, code, text, err = smtp_sasl(t, up, 'XOAUTH2', b'user=alice\x01auth=Basic x\x01\x01')
    t.check(code == 501, 'malformed response: %d %s' % (code, text))
    s.quit()
    s, code, text, err = smtp_sasl(t, up, 'XOAUTH2', oauth.xoauth2('alice', bad), True, '*')
    t.check(code == 501 and 'aborted' in text, '"*" aborts: %d %s' % (code, text))
    s.quit()
    # MAIL is refused without a login (auth_required kept)
    s = smtplib.SMTP('127.0.0.1', up.port, timeout=15)
    s.ehlo('client.test')
    code, _ = s.docmd('MAIL FROM:<alice@example.org>')
    t.check(code == 530, 'MAIL before AUTH: %d' % code)
    s.quit()

    auths = up.auths()
    t.check([(a['mechanism'], a['ok']) for a in auths] == [
        ('PLAIN', True), ('XOAUTH2', True), ('XOAUTH2', True), ('OAUTHBEARER', True),
        ('OAUTHBEARER', True), ('XOAUTH2', True), ('XOAUTH2', False), ('OAUTHBEARER', False),
        ('OAUTHBEARER', False), ('XOAUTH2', False), ('XOAUTH2', False), ('XOAUTH2', False)],
        'auth log: %r' % auths)
    t.check(all(good not in json.dumps(a) and bad not in json.dumps(a) for a in auths),
            'no token in the auth log')
    t.check(good not in h.tail(up.log_path, 10000), 'no token in the server log')
    # the introspection server going away is a temporary failure
    tokens.stop()
    s, code, text, err = smtp_sasl(t, up, 'XOAUTH2', oauth.xoauth2('alice', good))
    t.check(code == 454, 'introspection down: %d %s' % (code, text))
    s.quit()


if __name__ == '__main__':
    h.main()
