#!/usr/bin/python3
"""POP3 OAuth2 against Dovecot's oauth2 passdb (oauth.py: a local token
introspection server decides which tokens are valid): XOAUTH2 on one line
when the initial response fits in 255 octets, two-step (AUTH XOAUTH2, "+",
response) when it does not, as Microsoft 365 needs; OAUTHBEARER (RFC 7628)
with the gs2 authzid Dovecot requires; the token from password_command; an
expired token is one line naming the account with the server's status,
exit 69, nothing lost, and the token appears in no output, log or state.

A small recording relay between pop3bridge and Dovecot's plain POP3 port
shows what went on the wire."""

import base64
import json
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import oauth  # noqa: E402

TIMEOUT = 300


class Relay:
    """127.0.0.1:PORT -> 127.0.0.1:target, recording the client's lines."""

    def __init__(self, t, target):
        self.target, self.lines, self._lock = target, [], threading.Lock()
        self._ls = socket.create_server(('127.0.0.1', 0))
        self.port = self._ls.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()
        t.cleanup(self.stop)

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self._ls.accept()
            except OSError:
                return
            s = socket.create_connection(('127.0.0.1', self.target))
            buf = bytearray()
            threading.Thread(target=self._pump, args=(c, s, buf), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, None), daemon=True).start()

    def _pump(self, a, b, buf):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if buf is not None:
                    buf += d
                    while b'\r\n' in buf:
                        line, _, rest = bytes(buf).partition(b'\r\n')
                        buf[:] = rest
                        with self._lock:
                            self.lines.append(line.decode('utf-8', 'replace'))
                b.sendall(d)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def client_lines(self):
        with self._lock:
            return list(self.lines)

    def stop(self):
        self._stop = True
        self._ls.close()


def setup(t, n=4):
    tokens = oauth.TokenServer(t)
    src = oauth.dovecot(t, tokens, 'src')
    msgs = [h.make_message(i, tag='oauth') for i in range(n)]
    h.seed(src, 'alice', msgs)
    return tokens, src, msgs


def token_config(t, relay, mech, token, name='acct'):
    """A config whose pop3 {} logs in with mech and reads the token from
    a file through password_command, over the relay (plain POP3)."""
    tok_file = t.path('token-%s' % name)
    with open(tok_file, 'w') as f:
        f.write(token + '\n')
    os.chmod(tok_file, 0o600)
    acct = ('account %s {\n  local_user = "alice"\n  pop3 {\n'
            '    host = "127.0.0.1"\n    port = %d\n    tls = "none"\n'
            '    allow_plaintext = true\n    user = "alice"\n    auth = %s\n'
            '    password_command = %s\n  }\n}\n'
            % (h.cq(name), relay.port, h.cq(mech), h.cq('cat ' + tok_file)))
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [acct])), tok_file


def stored(t):
    out = []
    for f in h.maildir_files(t.path('dest', 'alice', 'Maildir')):
        with open(f, 'rb') as fh:
            out.append(h.body_hash(fh.read()))
    return sorted(out)


def auth_lines(relay):
    """The AUTH exchange the client sent: [AUTH line, responses...]."""
    lines = relay.client_lines()
    i = next((k for k, l in enumerate(lines) if l.startswith('AUTH ')), None)
    if i is None:
        return []
    j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith(('CAPA', 'UIDL',
                                                                          'QUIT'))), len(lines))
    return lines[i:j]


def no_token_anywhere(t, token, outputs):
    """The token is in none of pop3bridge's outputs nor in its state."""
    for what, text in outputs:
        t.check(token not in text, 'token not in %s' % what)
    for root, _, files in os.walk(t.path('state')):
        for f in files:
            with open(os.path.join(root, f), 'rb') as fh:
                t.check(token.encode() not in fh.read(), 'token not in %s' % f)


def test_xoauth2_one_line_two_step_and_expired(t):
    tokens, src, msgs = setup(t)
    relay = Relay(t, src.ports['pop3'])
    good = tokens.grant('alice')
    conf, tok_file = token_config(t, relay, 'xoauth2', good)
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 0 and '4 imported' in p.stderr, 'XOAUTH2 logs in: %d %s'
            % (p.returncode, p.stderr))
    t.check(stored(t) == sorted(h.body_hash(m) for m in msgs), 'all 4 stored')
    a = auth_lines(relay)
    t.check(len(a) == 1 and a[0].startswith('AUTH XOAUTH2 '), 'short token: one line: %r'
            % [l[:40] for l in a])
    if a:
        got = base64.b64decode(a[0].split()[2])
        t.check(oauth.parse_xoauth2(got) == ('alice', good), 'the response carries the token')
    outputs = [('stderr', p.stderr), ('stdout', p.stdout)]
    # A Microsoft-sized token: the response does not fit in 255 octets
    long_tok = tokens.add('M365-' + 'x' * 1500, 'alice')
    with open(tok_file, 'w') as f:
        f.write(long_tok + '\n')
    h.seed(src, 'alice', [h.make_message(50, tag='oauth')])
    relay.lines.clear()
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 0 and '1 imported' in p.stderr, 'long token logs in: %s' % p.stderr)
    a = auth_lines(relay)
    t.check(len(a) == 2 and a[0] == 'AUTH XOAUTH2' and len(a[1]) > 2000,
            'long token: two-step: %r' % [l[:40] for l in a])
    outputs += [('stderr', p.stderr), ('stdout', p.stdout)]
    # expired: one line naming the account and the status, 69, nothing lost
    tokens.expire(long_tok)
    h.seed(src, 'alice', [h.make_message(51, tag='oauth')])
    relay.lines.clear()
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 69, 'expired token: 69: %d %s' % (p.returncode, p.stderr))
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    t.check(len(lines) == 1 and 'acct:' in lines[0] and 'status "401"' in lines[0] and
            'login refused' in lines[0], 'one line naming the account and the status: %r' % lines)
    a = auth_lines(relay)
    t.check(len(a) == 3 and a[2] == '', 'the error challenge answered with an empty line: %r'
            % [l[:40] for l in a])
    t.check(len(stored(t)) == 5, 'nothing lost or imported: %d' % len(stored(t)))
    st = json.loads(t.run_bridge(conf, 'status', '--json').stdout)['accounts'][0]
    t.check(st['last_result'] == 'error' and 'status "401"' in st['last_error'] and
            st['last_auth'] == 'XOAUTH2', 'status: %r' % st)
    outputs += [('stderr', p.stderr), ('stdout', p.stdout), ('status', json.dumps(st))]
    for tok in (good, long_tok):
        no_token_anywhere(t, tok, outputs)
    # a fresh token: the pass goes on where it stopped
    with open(tok_file, 'w') as f:
        f.write(tokens.grant('alice') + '\n')
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 0 and '1 imported' in p.stderr, 'a new token: 1 imported: %s'
            % p.stderr)


def test_oauthbearer(t):
    tokens, src, msgs = setup(t, 3)
    relay = Relay(t, src.ports['pop3'])
    good = tokens.grant('alice')
    conf, tok_file = token_config(t, relay, 'oauthbearer', good)
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 0 and '3 imported' in p.stderr, 'OAUTHBEARER logs in: %d %s'
            % (p.returncode, p.stderr))
    a = auth_lines(relay)
    t.check(len(a) == 1 and a[0].startswith('AUTH OAUTHBEARER '), 'one line: %r'
            % [l[:40] for l in a])
    if a:
        raw = base64.b64decode(a[0].split()[2])
        t.check(oauth.parse_oauthbearer(raw) == ('alice', good), 'gs2 a=alice and the token')
        t.check(b'host=127.0.0.1\x01port=%d\x01' % relay.port in raw, 'host and port: %r'
                % raw.replace(good.encode(), b'TOKEN'))
    outputs = [('stderr', p.stderr), ('stdout', p.stdout)]
    tokens.expire(good)
    relay.lines.clear()
    p = t.run_bridge(conf, 'sync')
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    t.check(p.returncode == 69 and len(lines) == 1 and 'acct:' in lines[0] and
            'status "invalid_token"' in lines[0], 'expired: 69, one line with the status: %d %r'
            % (p.returncode, lines))
    a = auth_lines(relay)
    t.check(len(a) == 2 and a[1] == 'AQ==', 'the error challenge answered with AQ==: %r'
            % [l[:40] for l in a])
    t.check(len(stored(t)) == 3, 'nothing lost')
    outputs += [('stderr', p.stderr), ('stdout', p.stdout)]
    no_token_anywhere(t, good, outputs)


if __name__ == '__main__':
    h.main()
