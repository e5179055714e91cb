"""An upstream SMTP server for relay tests (Debian's python3-aiosmtpd).

As a program (run with /usr/bin/python3):
    smtpd.py --port P --spool DIR [--user U --password PW] [--starttls CERT KEY]
             [--script FILE] [--oauth-url URL] [--auth-log FILE]
accepts AUTH PLAIN/LOGIN (required when --user is given), offers STARTTLS
(then required before AUTH and MAIL) with --starttls, and answers RCPT
per recipient from the JSON script {"addr": ["451 4.3.0 later", ...]}:
each RCPT for addr takes the next reply of its list, 250 once the list is
used up. Every accepted message is written to DIR/NNNN.json with its
envelope (mail_from, rcpt_tos, mail_options) and original_content (base64).

With --oauth-url it also offers AUTH XOAUTH2 and OAUTHBEARER (RFC 7628),
each token checked by POSTing it to that introspection URL (oauth.py's
TokenServer), as Gmail and Microsoft 365 answer them:
    AUTH XOAUTH2 [IR]          334 (empty) when no initial response; then
                               235 2.7.0 Authentication successful, or for a
                               refused token 334 base64({"status":"401",...}),
                               any answer (the empty line), 535 5.7.8
    AUTH OAUTHBEARER [IR]      likewise, the error challenge is
                               base64({"status":"invalid_token",...}) and the
                               answer must be ^A ("AQ==", RFC 7628 3.2.3):
                               535 5.7.8, anything else 501 5.5.2
A malformed response is 501 5.5.2, an unreachable introspection 454 4.7.0.
--auth-log FILE: one JSON line per AUTH {"mechanism", "user", "ok"} (no
secret).

From a test:  up = Upstream(t, ...); up.start(); up.messages(); up.auths();
              up.stop()
"""

import base64
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


class Upstream:
    """The server in a subprocess on a free 127.0.0.1 port, stopped by pid
    at the end of the test (t.cleanup)."""

    def __init__(self, t, name='upstream', user='relay', password='relaypw',
                 starttls=None, script=None, port=None, data_delay=0, oauth=None):
        import harness as h
        self.t, self.user, self.password = t, user, password
        self.dir = t.path(name)
        self.spool = os.path.join(self.dir, 'spool')
        os.makedirs(self.spool, exist_ok=True)
        self.port = port or h.free_port()
        self.starttls = starttls        # (cert, key) or None
        self.script = script or {}
        self.data_delay = data_delay    # seconds before answering DATA
        # an oauth.TokenServer (or its URL): also XOAUTH2 and OAUTHBEARER
        self.oauth_url = getattr(oauth, 'url', oauth)
        self.auth_log = os.path.join(self.dir, 'auth.jsonl')
        self.proc = None
        self.log_path = os.path.join(self.dir, 'smtpd.log')
        t.add_log(self.log_path, 'upstream smtpd log')
        t.cleanup(self.stop)

    def start(self):
        import harness as h
        sp = os.path.join(self.dir, 'script.json')
        with open(sp, 'w') as f:
            json.dump(self.script, f)
        cmd = ['/usr/bin/python3', os.path.join(HERE, 'smtpd.py'), '--port', str(self.port),
               '--spool', self.spool, '--script', sp, '--auth-log', self.auth_log]
        if self.user:
            cmd += ['--user', self.user, '--password', self.password]
        if self.starttls:
            cmd += ['--starttls', self.starttls[0], self.starttls[1]]
        if self.data_delay:
            cmd += ['--data-delay', str(self.data_delay)]
        if self.oauth_url:
            cmd += ['--oauth-url', self.oauth_url]
        log = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        h.wait_for(lambda: h.port_open(self.port), 20, what='smtpd on port %d' % self.port)
        return self

    def stop(self):
        import harness as h
        if self.proc is not None:
            h.stop_process(self.proc, timeout=10)
        self.proc = None

    def messages(self):
        out = []
        for f in sorted(os.listdir(self.spool)):
            if f.endswith('.json'):
                with open(os.path.join(self.spool, f)) as fh:
                    m = json.load(fh)
                m['content'] = base64.b64decode(m['content'])
                out.append(m)
        return out

    def auths(self):
        """Every AUTH attempt so far, in order: dicts with mechanism, user
        (the login or token user; None if malformed) and ok (bool)."""
        try:
            with open(self.auth_log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []


# ---------------------------------------------------------------- the server

def serve(args):
    import asyncio
    import ssl
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    with open(args.script) as f:
        script = json.load(f)
    counter = [len(os.listdir(args.spool))]

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            replies = script.get(address.lower(), [])
            if replies:
                reply = replies.pop(0)
                print('RCPT %s -> %s' % (address, reply), flush=True)
                if not reply.startswith('2'):
                    return reply
            envelope.rcpt_tos.append(address)
            return '250 2.1.5 OK'

        async def handle_DATA(self, server, session, envelope):
            counter[0] += 1
            rec = {'mail_from': envelope.mail_from, 'rcpt_tos': envelope.rcpt_tos,
                   'mail_options': envelope.mail_options,
                   'tls': session.ssl is not None,
                   'content': base64.b64encode(envelope.original_content).decode()}
            path = os.path.join(args.spool, '%04d.json' % counter[0])
            with open(path + '.tmp', 'w') as f:
                json.dump(rec, f)
            os.rename(path + '.tmp', path)
            print('DATA from %s to %s (%d bytes)' % (envelope.mail_from, envelope.rcpt_tos,
                                                     len(envelope.original_content)), flush=True)
            if args.data_delay:
                # A slow upstream: the message is taken, the reply is late.
                await asyncio.sleep(args.data_delay)
            return '250 2.0.0 queued as %06d' % counter[0]   # one length: cut offsets stay true

    def record(mechanism, user, ok):
        print('AUTH %s %s' % (mechanism, 'ok' if ok else 'refused'), flush=True)
        if args.auth_log:
            with open(args.auth_log, 'a') as f:
                f.write(json.dumps({'mechanism': mechanism, 'user': user, 'ok': ok}) + '\n')

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login.decode() == args.user and
              auth_data.password.decode() == args.password)
        record(mechanism, auth_data.login.decode(errors='replace'), ok)
        return AuthResult(success=ok)

    if args.oauth_url:
        add_oauth_mechanisms(Handler, args.oauth_url, record)

    kw = {}
    if args.user or args.oauth_url:
        kw.update(authenticator=authenticator, auth_required=True,
                  auth_require_tls=bool(args.starttls))
    if args.starttls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.starttls[0], args.starttls[1])
        kw.update(tls_context=ctx, require_starttls=True)
    c = Controller(Handler(), hostname='127.0.0.1', port=args.port, decode_data=False,
                   data_size_limit=64 * 1024 * 1024, **kw)
    c.start()
    print('listening on %d' % args.port, flush=True)
    import signal
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    c.stop()


def add_oauth_mechanisms(handler_class, url, record):
    """Gives handler_class aiosmtpd's auth_XOAUTH2 and auth_OAUTHBEARER
    hooks (called as hook(server, ["MECH", initial_response?])), checking
    tokens at the introspection url."""
    from aiosmtpd.smtp import AuthResult, MISSING
    import binascii
    import oauth

    async def sasl(server, mech, args, parse, error_json, dummy_ok):
        if len(args) > 1:
            try:
                resp = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push('501 5.5.2 Cannot decode base64')
                return AuthResult(success=False, handled=True)
        else:
            resp = await server.challenge_auth('')
            if resp is MISSING:    # "*" or bad base64: aiosmtpd has answered 501
                return AuthResult(success=False, handled=True)
        try:
            user, token = parse(resp)
        except ValueError as e:
            record(mech, None, False)
            await server.push('501 5.5.2 Malformed %s response: %s' % (mech, e))
            return AuthResult(success=False, handled=True)
        try:
            info = oauth.introspect(url, token)
        except OSError as e:
            record(mech, user, False)
            await server.push('454 4.7.0 Temporary authentication failure (%s)'
                              % type(e).__name__)
            return AuthResult(success=False, handled=True)
        ok = info.get('active') is True and (user is None or info.get('username') == user)
        record(mech, user if user is not None else info.get('username'), ok)
        if ok:
            return AuthResult(success=True, auth_data=info.get('username'))
        # RFC 7628 3.2.2: the error is a challenge; the client answers it
        answer = await server.challenge_auth(json.dumps(error_json, separators=(',', ':')))
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        if not dummy_ok(answer):
            await server.push('501 5.5.2 Expected %x01 after the error challenge')
            return AuthResult(success=False, handled=True)
        await server.push('535 5.7.8 Username and Password not accepted')
        return AuthResult(success=False, handled=True)

    async def auth_XOAUTH2(self, server, args):
        return await sasl(server, 'XOAUTH2', args, oauth.parse_xoauth2,
                          oauth.XOAUTH2_ERROR, lambda a: True)

    async def auth_OAUTHBEARER(self, server, args):
        return await sasl(server, 'OAUTHBEARER', args, oauth.parse_oauthbearer,
                          oauth.OAUTHBEARER_ERROR, lambda a: a == b'\x01')

    handler_class.auth_XOAUTH2 = auth_XOAUTH2
    handler_class.auth_OAUTHBEARER = auth_OAUTHBEARER


if __name__ == '__main__':
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--spool', required=True)
    ap.add_argument('--script', required=True)
    ap.add_argument('--user')
    ap.add_argument('--password')
    ap.add_argument('--starttls', nargs=2)
    ap.add_argument('--data-delay', type=float, default=0)
    ap.add_argument('--oauth-url')
    ap.add_argument('--auth-log')
    a = ap.parse_args()
    import signal
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    serve(a)
