"""Upstream SMTP with OAuth2: the queue runner logs in to the account's
smtp {} server with AUTH XOAUTH2 or OAUTHBEARER (RFC 7628), the token
coming from password_command. The upstream (tests/integration/smtpd.py)
checks each token at a local introspection server (oauth.TokenServer), as
Gmail and Microsoft 365 do: a refused token gets the error challenge
(334 base64(JSON)), which must be answered (OAUTHBEARER: exactly "AQ==")
before the final 535. A refused token is temporary: the message stays
queued and the next attempt runs password_command again, so a refreshed
token delivers it. The token never appears in any output or in the state."""

import os

import harness as h
from oauth import TokenServer
from smtpd import Upstream

TIMEOUT = 240
FROM = 'alice@example.com'


def write_token(t, token):
    path = t.path('token')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(token + '\n')
    return path


def config(t, up, mech, tls='starttls'):
    """tls: "starttls" (verified with the test CA), or "none" without
    allow_plaintext."""
    smtp = ['host = "localhost"', 'port = %d' % up.port, 'user = "%s"' % FROM,
            'auth = "%s"' % mech, 'password_command = "cat %s"' % t.path('token'),
            'tls = "%s"' % tls]
    if tls == 'starttls':
        smtp.append('ca_file = "%s"' % t.certs.ca_file)
    acct = ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    %s\n  }\n  addresses = { "%s" }\n  sent_folder = "Sent"\n}\n'
            % (h.free_port(), '\n    '.join(smtp), FROM))
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n'
             '  queue_lifetime = 3600\n}\n' % h.free_port())
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [acct], relay))


def message(subject):
    return ('From: Alice <%s>\nTo: bob@example.net\nSubject: %s\n'
            'Message-ID: <%s@example.com>\n\nHello Bob\n' % (FROM, subject, subject)).encode()


def upstream(t, tokens):
    c = t.certs
    return Upstream(t, user=None, oauth=tokens, starttls=(c.cert, c.key)).start()


def sendmail(t, conf, subject):
    p = t.run_bridge(conf, 'sendmail', 'bob@example.net', input=message(subject))
    t.require(p.returncode == 0, 'sendmail: %r' % p.stderr)


def flush(t, conf):
    """queue flush -v; its stdout + stderr."""
    p = t.run_bridge(conf, '-v', 'queue', 'flush')
    t.require(p.returncode == 0, 'queue flush: %r' % p.stderr)
    return p.stdout + p.stderr


def qlist(t, conf):
    p = t.run_bridge(conf, 'queue', 'list')
    t.require(p.returncode == 0, 'queue list: %r' % p.stderr)
    return p.stdout


def subjects(up):
    return [h.header(m['content'], 'Subject') for m in up.messages()]


def state_bytes(t):
    """Every file of STATE_DIR, concatenated (the database and its WAL)."""
    out = b''
    for root, _, files in os.walk(t.path('state')):
        for f in files:
            try:
                with open(os.path.join(root, f), 'rb') as fh:
                    out += fh.read()
            except OSError:
                pass
    return out


def delivers(t, mech, token, subject):
    tokens = TokenServer(t)
    tokens.add(token, FROM)
    up = upstream(t, tokens)
    write_token(t, token)
    conf = config(t, up, mech.lower())
    sendmail(t, conf, subject)
    out = flush(t, conf)
    t.check(subjects(up) == [subject], '%s: delivered once: %r' % (mech, subjects(up)))
    got = up.messages()
    t.check(got and got[0]['tls'], 'over STARTTLS')
    t.check(up.auths() == [{'mechanism': mech, 'user': FROM, 'ok': True}],
            'one %s login as %s: %r' % (mech, FROM, up.auths()))
    t.check(token in tokens.requests(), 'the upstream checked our token')
    t.check(token not in out and token not in qlist(t, conf), 'token not shown: %r' % out)
    t.check('empty' in qlist(t, conf), 'queue empty: %r' % qlist(t, conf))


def test_xoauth2_one_line(t):
    """A short token fits on the AUTH line (initial response)."""
    delivers(t, 'XOAUTH2', 'p3b-short-token-0123456789', 'xoauth2 short')


def test_xoauth2_two_step(t):
    """A token whose AUTH line would pass SMTP's 512 octets goes in the
    two-step form (AUTH XOAUTH2, 334, response): aiosmtpd refuses a longer
    command line with 500, so delivery proves the form."""
    delivers(t, 'XOAUTH2', 'p3b-long-' + 'x' * 400, 'xoauth2 long')


def test_oauthbearer_one_line(t):
    delivers(t, 'OAUTHBEARER', 'p3b-bearer-0123456789', 'bearer short')


def test_oauthbearer_two_step(t):
    delivers(t, 'OAUTHBEARER', 'p3b-bearer-long-' + 'y' * 400, 'bearer long')


def refused_then_refreshed(t, mech, status):
    tokens = TokenServer(t)
    old = tokens.grant(FROM)
    tokens.expire(old)
    up = upstream(t, tokens)
    write_token(t, old)
    conf = config(t, up, mech.lower())
    d = t.start_bridge(conf, '-v', 'run')
    sendmail(t, conf, 'refused')
    h.wait_for(lambda: 'last error' in qlist(t, conf), 30, what='a failed attempt')
    h.stop_process(d)
    out = qlist(t, conf)
    t.check(up.messages() == [], 'nothing sent with the expired token')
    t.check('pending' in out and 'queued' in out, 'still queued: %r' % out)
    t.check('AUTH %s refused: 535' % mech in out, 'the final 535, not a 501 for a wrong'
            ' answer to the error challenge: %r' % out)
    t.check('(token refused: status "%s")' % status in out,
            'the challenge status shown: %r' % out)
    auths = up.auths()
    t.check(auths and all(a == {'mechanism': mech, 'user': FROM, 'ok': False} for a in auths),
            'refused %s logins only: %r' % (mech, auths))
    log = open(d.log_path, errors='replace').read()
    lines = [l for l in log.splitlines() if 'AUTH %s refused' % mech in l]
    t.check(lines and all(l.startswith('pop3bridge: work: queue id 1:') for l in lines),
            'one line per attempt naming the account: %r' % lines)
    # A refresher wrote a new token: the next attempt runs password_command again.
    new = tokens.grant(FROM)
    write_token(t, new)
    out2 = flush(t, conf)
    t.check(subjects(up) == ['refused'], 'delivered once with the new token: %r'
            % subjects(up))
    t.check(up.auths()[-1] == {'mechanism': mech, 'user': FROM, 'ok': True},
            'the last login succeeded: %r' % up.auths()[-1:])
    shown = log + out + out2 + qlist(t, conf)
    t.check(old not in shown and new not in shown, 'no token in logs or queue list')
    st = state_bytes(t)
    t.check(old.encode() not in st and new.encode() not in st, 'no token in the state')


def test_xoauth2_refused_token_retried(t):
    refused_then_refreshed(t, 'XOAUTH2', '401')


def test_oauthbearer_refused_token_retried(t):
    refused_then_refreshed(t, 'OAUTHBEARER', 'invalid_token')


def test_token_needs_tls(t):
    """A token is a credential: over tls = "none" it needs allow_plaintext,
    like a password (the config is refused without it)."""
    tokens = TokenServer(t)
    up = Upstream(t, user=None, oauth=tokens)
    write_token(t, tokens.grant(FROM))
    conf = config(t, up, 'oauthbearer', tls='none')
    p = t.run_bridge(conf, 'check-config')
    t.check(p.returncode == 78 and 'smtp: password over plaintext refused' in p.stderr,
            'refused without allow_plaintext: %d %r' % (p.returncode, p.stderr))


if __name__ == '__main__':
    h.main()
