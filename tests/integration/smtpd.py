"""An upstream SMTP server for relay tests (Debian's python3-aiosmtpd).

As a program (run with /usr/bin/python3):
    smtpd.py --port P --spool DIR [--user U --password PW] [--starttls CERT KEY]
             [--script FILE]
accepts AUTH PLAIN/LOGIN (required when --user is given), offers STARTTLS
(then required before AUTH and MAIL) with --starttls, and answers RCPT
per recipient from the JSON script {"addr": ["451 4.3.0 later", ...]}:
each RCPT for addr takes the next reply of its list, 250 once the list is
used up. Every accepted message is written to DIR/NNNN.json with its
envelope (mail_from, rcpt_tos, mail_options) and original_content (base64).

From a test:  up = Upstream(t, ...); up.start(); up.messages(); up.stop()
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
                 starttls=None, script=None, port=None, data_delay=0):
        import harness as h
        self.t, self.user, self.password = t, user, password
        self.dir = t.path(name)
        self.spool = os.path.join(self.dir, 'spool')
        os.makedirs(self.spool, exist_ok=True)
        self.port = port or h.free_port()
        self.starttls = starttls        # (cert, key) or None
        self.script = script or {}
        self.data_delay = data_delay    # seconds before answering DATA
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
               '--spool', self.spool, '--script', sp]
        if self.user:
            cmd += ['--user', self.user, '--password', self.password]
        if self.starttls:
            cmd += ['--starttls', self.starttls[0], self.starttls[1]]
        if self.data_delay:
            cmd += ['--data-delay', str(self.data_delay)]
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
            return '250 2.0.0 queued as %d' % counter[0]

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login.decode() == args.user and
              auth_data.password.decode() == args.password)
        print('AUTH %s %s' % (mechanism, 'ok' if ok else 'refused'), flush=True)
        return AuthResult(success=ok)

    kw = {}
    if args.user:
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
    a = ap.parse_args()
    import signal
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    serve(a)
