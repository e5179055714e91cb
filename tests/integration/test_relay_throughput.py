"""What makes the relay fast, checked for what it must never change: the
group commit queues every message of concurrent sessions exactly once (each
through the relay process's commit); the queue runner carries many messages
on one upstream session, pipelines MAIL/RCPT/DATA when the server offers
PIPELINING (RFC 2920: a DATA accepted with no recipient gets a lone "."),
RSETs a transaction left open, opens several connections for a long queue,
and files every Sent copy once. Nothing here measures time
(`bench/run --only relay` does)."""

import os
import re
import smtplib
import socket
import threading
import time

import harness as h
from smtpd import Upstream

TIMEOUT = 300
FROM = 'alice@example.com'


def passwd_file(t):
    path = t.path('users')
    with open(path, 'w') as f:
        f.write('alice:{PLAIN}secret::::::\n')
    os.chmod(path, 0o644)
    return path


def config(t, up_port, relay_port=None, upstream_connections=None, user='relay'):
    smtp = ['host = "127.0.0.1"', 'port = %d' % up_port, 'tls = "none"']
    if user:
        smtp += ['user = "%s"' % user, 'password = "relaypw"', 'allow_plaintext = true']
    acct = ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    %s\n  }\n  addresses = { "%s" }\n  sent_folder = "Sent"\n}\n'
            % (h.free_port(), '\n    '.join(smtp), FROM))
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  passwd_file = "%s"\n'
             '  retry_initial = 1\n  max_connections = 32\n%s}\npoll_interval = 3600\n'
             % (relay_port or h.free_port(), passwd_file(t),
                '  upstream_connections = %d\n' % upstream_connections
                if upstream_connections else ''))
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [acct], relay))


def message(subject):
    return ('From: Alice <%s>\r\nTo: bob@example.net\r\nSubject: %s\r\n'
            'Message-ID: <%s@example.com>\r\n\r\nHello\r\n' % (FROM, subject,
                                                             subject)).encode()


def queued_subjects(t):
    return [h.header(c, 'Subject') if c is not None else None
            for _, _, c in h.outboxdb.queued(t.path('state'))]


def sent_copies(t):
    root = t.path('dest', 'alice', 'Maildir')
    return h.maildir_files(root, '.Sent') if os.path.isdir(root) else []


def flush(t, conf):
    p = t.run_bridge(conf, '-v', 'queue', 'flush')
    t.require(p.returncode == 0, 'queue flush: %r' % p.stderr)
    return p.stderr


def test_concurrent_sessions_each_queued_once(t):
    """8 sessions submit 8 messages each at the same time: each message is
    queued once, every one through the relay process's group commit, and
    later delivered and filed once."""
    up_port, port = h.free_port(), h.free_port()
    conf = config(t, up_port, port, user=None)
    d = t.start_bridge(conf, '-v', 'run')
    h.wait_for(lambda: h.port_open(port) or d.poll() is not None, 20, what='relay port')
    errors = []

    def session(k):
        try:
            s = smtplib.SMTP('127.0.0.1', port, timeout=60)
            s.ehlo('device.example')
            s.login('alice', 'secret')
            for i in range(8):
                s.sendmail(FROM, ['bob@example.net'], message('s%d-m%d' % (k, i)))
            s.quit()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=session, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t.require(not errors, 'every submission answered 250: %r' % errors[:1])
    want = sorted('s%d-m%d' % (k, i) for k in range(8) for i in range(8))
    t.check(sorted(queued_subjects(t)) == want, 'each queued once: %r' % queued_subjects(t))
    with open(d.log_path, errors='replace') as f:
        groups = [int(n) for n in re.findall(r'relay: (\d+) messages queued in one commit',
                                              f.read())]
    t.check(sum(groups) == 64, 'all 64 through the group commit: %r' % groups)
    up = Upstream(t, user=None, port=up_port).start()
    h.wait_for(lambda: len(up.messages()) >= 64 and len(sent_copies(t)) >= 64, 60,
               what='64 delivered and filed')
    time.sleep(3)                       # a repeat would show
    got = sorted(h.header(m['content'], 'Subject') for m in up.messages())
    t.check(got == want, 'each delivered once (%d)' % len(got))
    t.check(len(sent_copies(t)) == 64, 'each filed once: %d' % len(sent_copies(t)))
    t.check(h.stop_process(d) == 0, 'the daemon stops cleanly')


class ScriptedUpstream:
    """An SMTP server on its own thread that offers PIPELINING and answers
    RCPT per recipient (bad@ gets 550) and DATA by script: 'refuse' (554
    when no RCPT of the transaction was accepted) or 'accept' (354 always,
    as RFC 2920 warns a server may). It records every recv() chunk and the
    lines, per connection."""

    def __init__(self, t, data='refuse'):
        self.data, self.conns = data, []
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()
        t.cleanup(self.sock.close)

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            rec = {'chunks': [], 'lines': []}
            self.conns.append(rec)
            threading.Thread(target=self.session, args=(c, rec), daemon=True).start()

    def session(self, c, rec):
        c.sendall(b'220 scripted ESMTP\r\n')
        buf, in_data, ok = b'', False, 0
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            rec['chunks'].append(chunk)
            buf += chunk
            while b'\r\n' in buf:
                line, buf = buf.split(b'\r\n', 1)
                rec['lines'].append(line)
                if in_data:
                    if line == b'.':
                        in_data = False
                        c.sendall(b'250 2.0.0 queued\r\n')
                    continue
                verb = line.split(b' ', 1)[0].upper()
                if verb == b'EHLO':
                    c.sendall(b'250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n')
                elif verb == b'MAIL':
                    ok = 0
                    c.sendall(b'250 2.1.0 ok\r\n')
                elif verb == b'RCPT':
                    bad = b'bad@' in line
                    ok += not bad
                    c.sendall(b'550 5.1.1 no such user\r\n' if bad else b'250 2.1.5 ok\r\n')
                elif verb == b'DATA':
                    if ok == 0 and self.data == 'refuse':
                        c.sendall(b'554 5.5.1 no valid recipients\r\n')
                    else:
                        in_data = True
                        c.sendall(b'354 go ahead\r\n')
                elif verb == b'QUIT':
                    c.sendall(b'221 bye\r\n')
                    c.close()
                    return
                else:
                    c.sendall(b'250 ok\r\n')
        c.close()


def queue_two(t, conf):
    """Queues a message only for bad@ (refused), then one for good@."""
    for subject, to in (('first', 'bad@example.net'), ('second', 'good@example.net')):
        p = t.run_bridge(conf, 'sendmail', to, input=message(subject))
        t.require(p.returncode == 0, 'sendmail: %r' % p.stderr)


def test_pipelined_session_rsets_an_open_transaction(t):
    up = ScriptedUpstream(t, data='refuse')
    conf = config(t, up.port, user=None)
    queue_two(t, conf)
    flush(t, conf)
    t.require(len(up.conns) == 1, 'both messages on one connection: %d' % len(up.conns))
    c = up.conns[0]
    lines = [l for l in c['lines'] if not l.startswith(b'EHLO')]
    verbs = [l.split(b' ', 1)[0] for l in lines]
    t.check(verbs[:4] == [b'MAIL', b'RCPT', b'DATA', b'RSET'],
            'refused DATA, then RSET before the next MAIL: %r' % verbs)
    t.check(any(b'MAIL FROM' in ch and b'RCPT TO' in ch and b'DATA\r\n' in ch
                for ch in c['chunks']), 'MAIL, RCPT and DATA in one write (PIPELINING)')
    t.check(any(b'RSET\r\nMAIL FROM' in ch for ch in c['chunks']),
            'the RSET pipelined with the next envelope')
    t.check(sum(1 for l in lines if l.startswith(b'Subject: second')) == 1,
            'the second message sent once')
    out = t.run_bridge(conf, 'queue', 'list').stdout
    t.check('empty' in out, 'both finished (one bounced, one sent): %r' % out)


def test_accepted_data_without_recipient_gets_a_lone_dot(t):
    """RFC 2920: the DATA of a pipelined group accepted although every RCPT
    was refused gets a lone "." and delivers nothing."""
    up = ScriptedUpstream(t, data='accept')
    conf = config(t, up.port, user=None)
    queue_two(t, conf)
    flush(t, conf)
    t.require(len(up.conns) == 1, 'one connection: %d' % len(up.conns))
    lines = up.conns[0]['lines']
    i = lines.index(b'DATA')
    t.check(lines[i + 1] == b'.', 'a lone dot after the refused recipient\'s DATA: %r'
            % lines[i:i + 3])
    t.check(not any(l.startswith(b'Subject: first') for l in lines), 'no body sent for it')
    out = t.run_bridge(conf, 'queue', 'list').stdout
    t.check('empty' in out, 'finished: %r' % out)
    inbox = h.maildir_files(t.path('dest', 'alice', 'Maildir'))
    t.check(len(inbox) == 1, 'the refused one bounced: %r' % inbox)


def test_long_queue_uses_several_connections(t):
    """70 queued messages with upstream_connections = 2: two sessions (one
    login each), every message delivered once, every Sent copy filed once."""
    up = Upstream(t)
    conf = config(t, up.port, upstream_connections=2)
    for i in range(70):
        p = t.run_bridge(conf, 'sendmail', 'bob@example.net', input=message('q%02d' % i))
        t.require(p.returncode == 0, 'sendmail: %r' % p.stderr)
    up.start()
    flush(t, conf)
    logins = [a for a in up.auths() if a['ok']]
    t.check(len(logins) == 2, 'two connections, one login each: %r' % up.auths())
    got = sorted(h.header(m['content'], 'Subject') for m in up.messages())
    t.check(got == ['q%02d' % i for i in range(70)], 'each delivered once (%d)' % len(got))
    t.check(len(sent_copies(t)) == 70, 'each filed once: %d' % len(sent_copies(t)))
    t.check('empty' in t.run_bridge(conf, 'queue', 'list').stdout, 'queue empty')


if __name__ == '__main__':
    h.main()
