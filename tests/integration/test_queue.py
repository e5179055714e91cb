"""The outbound queue: sendmail enqueues, the runner delivers upstream
(tests/integration/smtpd.py), files a \\Seen copy in Sent, retries 4xx,
bounces 5xx (RFC 3464) into INBOX, survives SIGKILL, verifies STARTTLS;
queue list / flush / drop."""

import base64
import email
import email.policy
import os
import shutil
import signal
import time

import harness as h
from smtpd import Upstream

TIMEOUT = 240
FROM = 'alice@example.com'


def account(up, tls='none', ca=None):
    smtp = ['host = "localhost"', 'port = %d' % up.port, 'tls = "%s"' % tls,
            'user = "relay"', 'password = "relaypw"']
    if tls == 'none':
        smtp.append('allow_plaintext = true')
    if ca:
        smtp.append('ca_file = "%s"' % ca)
    return ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    %s\n  }\n  addresses = { "%s" }\n  sent_folder = "Sent"\n}\n'
            % (h.free_port(), '\n    '.join(smtp), FROM))


def config(t, up, lifetime=3600, **kw):
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n'
             '  queue_lifetime = %d\n}\n' % (h.free_port(), lifetime))
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [account(up, **kw)], relay))


def message(subject='hello', to='bob@example.net', extra=b''):
    return (b'From: Alice <alice@example.com>\nTo: ' + to.encode() + b'\n'
            b'Subject: ' + subject.encode() + b'\nMessage-ID: <' + subject.encode() +
            b'@example.com>\n' + extra + b'\nHello Bob,\n.leading dot\n\xc3\xa9t\xc3\xa9\n')


def crlf(b):
    return b.replace(b'\n', b'\r\n')


def sendmail(t, conf, msg, *args, expect=0):
    p = t.run_bridge(conf, 'sendmail', *args, input=msg)
    t.require(p.returncode == expect, 'sendmail exited %d, expected %d: %r'
              % (p.returncode, expect, p.stderr))
    return p


def flush(t, conf):
    p = t.run_bridge(conf, 'queue', 'flush')
    t.require(p.returncode == 0, 'queue flush: %r' % p.stderr)


def qlist(t, conf):
    p = t.run_bridge(conf, 'queue', 'list')
    t.require(p.returncode == 0, 'queue list: %r' % p.stderr)
    return p.stdout


def folder_files(t, folder=None):
    root = t.path('dest', 'alice', 'Maildir')
    if not os.path.isdir(root):
        return []
    return h.maildir_files(root, folder)


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def test_sendmail_t_delivers_and_files_sent(t):
    up = Upstream(t).start()
    dst = t.dovecot('dst', mail_root=t.path('dest'))
    conf = config(t, up)
    msg = message(extra=b'Cc: carol@example.org\nBcc: dave@example.org\n')
    p = sendmail(t, conf, msg, '-t', '-i')
    t.check(not p.stdout and not p.stderr, 'sendmail prints nothing: %r' % (p.stdout + p.stderr))
    t.check('bob@example.net' in qlist(t, conf), 'queued message listed')
    flush(t, conf)
    got = up.messages()
    t.require(len(got) == 1, 'one message upstream, got %d' % len(got))
    m = got[0]
    t.check(m['mail_from'] == FROM, 'envelope sender %r' % m['mail_from'])
    t.check(sorted(m['rcpt_tos']) == ['bob@example.net', 'carol@example.org',
                                      'dave@example.org'], 'recipients %r' % m['rcpt_tos'])
    want = crlf(msg.replace(b'Bcc: dave@example.org\n', b''))
    t.check(m['content'] == want, 'byte-identical upstream (Bcc removed):\n%r\n%r'
            % (m['content'], want))
    t.check('BODY=8BITMIME' in m['mail_options'], '8-bit body announced: %r' % m['mail_options'])
    sent = folder_files(t, '.Sent')
    t.require(len(sent) == 1, 'one Sent copy in the Maildir, got %d' % len(sent))
    t.check(sent[0].rsplit(':2,', 1)[-1].find('S') >= 0, 'Sent copy is \\Seen: %s' % sent[0])
    t.check(read(sent[0]).replace(b'\r\n', b'\n') == want.replace(b'\r\n', b'\n'),
            'Sent copy is the message')
    imap = h.imap_connect(dst, 'alice', 'secret')
    try:
        typ, _ = imap.select('Sent', readonly=True)
        t.require(typ == 'OK', 'Sent folder over IMAP')
        typ, data = imap.search(None, 'SEEN')
        t.check(len(data[0].split()) == 1, 'IMAP: one \\Seen message in Sent: %r' % data)
    finally:
        imap.logout()
    t.check('empty' in qlist(t, conf), 'queue empty after delivery')
    flush(t, conf)
    t.check(len(up.messages()) == 1 and len(folder_files(t, '.Sent')) == 1,
            'a second flush sends and files nothing')


def test_tempfail_then_success(t):
    up = Upstream(t, script={'bob@example.net': ['451 4.3.0 try again later']}).start()
    conf = config(t, up)
    sendmail(t, conf, message(), 'bob@example.net')
    flush(t, conf)
    t.check(up.messages() == [], 'nothing accepted on the 451')
    out = qlist(t, conf)
    t.check('pending' in out and '451' in out and 'attempts 1' in out, 'deferred: %r' % out)
    flush(t, conf)
    got = up.messages()
    t.check(len(got) == 1 and got[0]['rcpt_tos'] == ['bob@example.net'],
            'delivered once on retry: %r' % [g['rcpt_tos'] for g in got])
    flush(t, conf)
    t.check(len(up.messages()) == 1, 'still once')


def test_permanent_failure_bounces(t):
    up = Upstream(t, script={'bad@example.net': ['550 5.1.1 no such user here'] * 5}).start()
    conf = config(t, up)
    sendmail(t, conf, message(subject='bouncy'), 'good@example.net', 'bad@example.net')
    flush(t, conf)
    got = up.messages()
    t.check(len(got) == 1 and got[0]['rcpt_tos'] == ['good@example.net'],
            'only the good recipient got it: %r' % [g['rcpt_tos'] for g in got])
    inbox = folder_files(t)
    t.require(len(inbox) == 1, 'one bounce in INBOX, got %d' % len(inbox))
    b = email.message_from_bytes(read(inbox[0]), policy=email.policy.compat32)
    t.check(b.get_content_type() == 'multipart/report', 'multipart/report: %s' % b.get_content_type())
    t.check(b.get_param('report-type') == 'delivery-status', 'report-type delivery-status')
    parts = b.get_payload()
    t.require(len(parts) == 3, 'three parts, got %d' % len(parts))
    t.check(parts[1].get_content_type() == 'message/delivery-status', 'delivery-status part')
    blocks = parts[1].get_payload()
    fields = {}
    for blk in blocks:
        for k, v in blk.items():
            fields.setdefault(k.lower(), []).append(v)
    t.check(fields.get('reporting-mta', [''])[0].startswith('dns;'), 'Reporting-MTA: %r' % fields)
    t.check(fields.get('final-recipient') == ['rfc822; bad@example.net'],
            'Final-Recipient: %r' % fields.get('final-recipient'))
    t.check(fields.get('action') == ['failed'], 'Action: failed')
    t.check(fields.get('status') == ['5.1.1'], 'Status 5.1.1: %r' % fields.get('status'))
    t.check('550' in fields.get('diagnostic-code', [''])[0], 'Diagnostic-Code has the reply')
    t.check(parts[2].get_content_type() == 'text/rfc822-headers', 'original headers part')
    t.check(b'Subject: bouncy' in parts[2].as_bytes(), 'original Subject in the bounce')
    t.check(len(folder_files(t, '.Sent')) == 1, 'the delivered part is in Sent')
    flush(t, conf)
    t.check(len(folder_files(t)) == 1, 'the bounce is stored once')


def test_upstream_down_then_up(t):
    up = Upstream(t)
    conf = config(t, up)
    d = t.start_bridge(conf, 'run')
    sendmail(t, conf, message(), 'bob@example.net')
    h.wait_for(lambda: 'last error' in qlist(t, conf), 20, what='a failed attempt')
    up.start()
    h.wait_for(lambda: len(up.messages()) >= 1, 30, what='delivery after the upstream came up')
    h.wait_for(lambda: len(folder_files(t, '.Sent')) == 1, 10, what='the Sent copy')
    time.sleep(3)
    t.check(len(up.messages()) == 1, 'delivered once: %d' % len(up.messages()))
    t.check(h.stop_process(d) == 0, 'daemon stops cleanly on SIGTERM')


def test_sigkill_after_enqueue_delivers_once(t):
    """Mail queued before a crash is delivered exactly once after restart.
    The daemon is killed at several points while the upstream is still
    down (the runner retrying), so every kill lands before any upstream
    could accept a message. (A kill between an upstream's 250 and our
    commit of it would send that message again: SMTP cannot close that
    window, it is only kept short.)"""
    up = Upstream(t)                    # started after the kills
    conf = config(t, up)
    for i, delay in enumerate((0.0, 0.05, 0.2, 0.5)):
        sendmail(t, conf, message(subject='kill%d' % i), 'bob@example.net')
        d = t.start_bridge(conf, 'run')
        time.sleep(delay)
        h.stop_process(d, signal.SIGKILL)
    up.start()
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: 'empty' in qlist(t, conf), 30, what='the queue to drain')
    subjects = sorted(h.header(m['content'], 'Subject') for m in up.messages())
    t.check(subjects == ['kill0', 'kill1', 'kill2', 'kill3'], 'each once: %r' % subjects)
    t.check(len(folder_files(t, '.Sent')) == 4, 'four Sent copies')
    h.stop_process(d)


def test_reload_during_data_reply_sends_once(t):
    """SIGHUP restarts the queue runner (SIGTERM). Arriving while the
    upstream is still answering DATA, it must not cut that reply short:
    the message is delivered once, not again after the restart."""
    up = Upstream(t, data_delay=3).start()
    conf = config(t, up)
    d = t.start_bridge(conf, 'run')
    sendmail(t, conf, message('slow upstream'), '-t')
    log = os.path.join(up.dir, 'smtpd.log')
    h.wait_for(lambda: 'DATA from' in open(log).read(), 20, what='upstream took DATA')
    d.send_signal(signal.SIGHUP)        # while the upstream's reply is pending
    # With retry_initial = 1, a second attempt (after a cut reply) would
    # arrive within the delay + a retry + the delay again.
    time.sleep(10)
    got = up.messages()
    t.check(len(got) == 1, 'delivered exactly once, got %d' % len(got))
    t.check(h.stop_process(d) == 0, 'the daemon stops cleanly')


def test_runner_sweeps_orphaned_spool_files(t):
    """A crash between linking a message into the spool and committing its
    row leaves a file no row names: the runner removes such files once
    they are a day old, and never a file a queued message needs (a big
    one: a small one is kept in its row, with no file)."""
    up = Upstream(t)                    # never started: mail stays queued
    conf = config(t, up)
    sendmail(t, conf, message('small'), '-t')
    big = message('still queued', extra=b'X-Pad: ' + b'p' * 70 + b'\n') + b'0123456789' * 7000
    sendmail(t, conf, big, '-t')
    spool = t.path('state', 'spool')
    queued = [f for f in os.listdir(spool) if f.endswith('.msg')]
    t.require(len(queued) == 1, 'one spool file for the big queued message: %r' % queued)
    t.check(len(h.outboxdb.in_row(t.path('state'))) == 1, 'the small one in its row')
    old = time.time() - 3 * 86400
    orphan_old = os.path.join(spool, '1700000000.%s.1.1.msg' % ('a' * 32))
    orphan_new = os.path.join(spool, '1700000001.%s.1.2.msg' % ('b' * 32))
    for path in (orphan_old, orphan_new):
        with open(path, 'wb') as f:
            f.write(message('orphan'))
    for path in (orphan_old, os.path.join(spool, queued[0])):
        os.utime(path, (old, old))
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: not os.path.exists(orphan_old), 20, what='the old orphan removed')
    t.check(os.path.exists(orphan_new), 'a recent unreferenced file is kept')
    t.check(os.path.exists(os.path.join(spool, queued[0])),
            'the queued message keeps its file, however old')
    t.check(h.stop_process(d) == 0, 'the daemon stops cleanly')


def _nice(pid):
    """The nice value of pid, or None once it is gone."""
    fields = h.proc_stat(pid)
    return int(fields[16]) if fields is not None else None


def _watches_inotify(pid):
    try:
        return any(os.readlink('/proc/%d/fd/%s' % (pid, fd)) == 'anon_inode:inotify'
                   for fd in os.listdir('/proc/%d/fd' % pid))
    except OSError:
        return False


def test_runner_yields_cpu(t):
    """The queue runner (the daemon's child that waits on the spool with
    inotify) runs 5 nice levels below the daemon (its delivery workers
    inherit it): the relay's sessions, whose clients wait for a 250, come
    first. The daemon's other children keep its priority; a pass that ends
    while they are read is left out."""
    up = Upstream(t)
    conf = config(t, up)
    d = t.start_bridge(conf, 'run')
    kids = []

    def runner():
        kids[:] = h.children(d.pid)
        return [k for k in kids if _watches_inotify(k)]
    found = h.wait_for(runner, 20, what='the queue runner')
    base = _nice(d.pid)
    t.check(len(found) == 1, 'one runner among the children %r: %r' % (kids, found))
    if found:
        nice = _nice(found[0])
        t.check(nice == min(base + 5, 19), 'runner nice %d, daemon %d' % (nice, base))
    # the others (the relay, a pass that may end meanwhile), as they are now
    others = [(k, _nice(k)) for k in kids if k not in found]
    others = [(k, n) for k, n in others if n is not None]
    t.check(all(nice == base for _, nice in others), 'the other children at nice %d: %r'
            % (base, others))
    t.check(h.stop_process(d) == 0, 'the daemon stops cleanly')


def test_starttls_verified(t):
    c = t.certs
    up = Upstream(t, starttls=(c.cert, c.key)).start()
    conf = config(t, up, tls='starttls')
    sendmail(t, conf, message(), 'bob@example.net')
    flush(t, conf)
    out = qlist(t, conf)
    t.check(up.messages() == [] and 'pending' in out, 'unknown CA: nothing sent, still queued')
    t.check('certif' in out.lower(), 'the error names the certificate: %r' % out)
    conf = config(t, up, tls='starttls', ca=c.ca_file)
    flush(t, conf)
    got = up.messages()
    t.check(len(got) == 1 and got[0]['tls'], 'delivered over TLS with the CA: %r' % got)


def test_queue_list_drop_and_refusals(t):
    up = Upstream(t)
    conf = config(t, up)
    sendmail(t, conf, message(subject='one'), 'bob@example.net')
    sendmail(t, conf, message(subject='two'), 'bob@example.net')
    out = qlist(t, conf)
    ids = [l.split()[0] for l in out.splitlines() if not l.startswith(' ')]
    t.require(len(ids) == 2, 'two queued: %r' % out)
    t.check(h.outboxdb.held(t.path('state')) == 2, 'two messages kept')
    p = t.run_bridge(conf, 'queue', 'drop', ids[0])
    t.check(p.returncode == 0, 'drop: %r' % p.stderr)
    out = qlist(t, conf)
    t.check(len([l for l in out.splitlines() if not l.startswith(' ')]) == 1, 'one left: %r' % out)
    t.check(h.outboxdb.held(t.path('state')) == 1, 'its message is gone')
    t.check(t.run_bridge(conf, 'queue', 'drop', '999').returncode == 66, 'unknown id: 66')
    t.check(t.run_bridge(conf, 'queue', 'bogus').returncode == 64, 'bad subcommand: 64')
    sendmail(t, conf, message(), '-f', 'mallory@example.com', 'bob@example.net', expect=77)
    sendmail(t, conf, message(), 'bob\r@example.net', expect=65)
    sendmail(t, conf, message(), expect=64)
    t.check(len([l for l in qlist(t, conf).splitlines() if not l.startswith(' ')]) == 1,
            'refused messages were not queued')


class RawUpstream:
    """A scripted SMTP server (one thread per connection) for replies that
    aiosmtpd will not give: replies maps a command's verb to the reply
    line(s) ('AUTH' may be a function of the command line)."""

    def __init__(self, t, replies):
        import socket
        import threading
        self.replies, self.lines = replies, []
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()
        t.cleanup(self.sock.close)

    def serve(self):
        import threading
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(c,), daemon=True).start()

    def session(self, c):
        f = c.makefile('rb')
        c.sendall(b'220 raw ESMTP\r\n')
        in_data = False
        for line in f:
            self.lines.append(line)
            if in_data:
                if line == b'.\r\n':
                    in_data = False
                    c.sendall(b'250 ok\r\n')
                continue
            verb = line.split(b' ', 1)[0].strip().upper().decode()
            r = self.replies.get(verb, '250 ok')
            if callable(r):
                r = r(line)
            c.sendall(r.encode() + b'\r\n')
            if verb == 'DATA' and r.startswith('354'):
                in_data = True
            if verb == 'QUIT':
                break
        c.close()


def raw_config(t, up):
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n'
             '  queue_lifetime = 3600\n}\n' % h.free_port())
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [account(up)], relay))


EHLO = '250-raw\r\n250 AUTH PLAIN LOGIN'


def test_data_2xx_is_not_delivery(t):
    """A 250 to DATA (instead of 354) is a protocol error: the recipient
    stays pending, never marked delivered without the body."""
    up = RawUpstream(t, {'EHLO': EHLO, 'AUTH': '235 ok', 'DATA': '250 sure'})
    conf = raw_config(t, up)
    sendmail(t, conf, message(), 'bob@example.net')
    flush(t, conf)
    out = qlist(t, conf)
    t.check('pending' in out and 'delivered' not in out, 'still pending: %r' % out)
    t.check('unexpected reply to DATA' in out, 'protocol error recorded: %r' % out)
    t.check(not any(b'Hello Bob' in x for x in up.lines), 'no body sent')


def test_auth_echo_withheld(t):
    """An upstream that echoes the AUTH line (base64 of "\0relay\0relaypw")
    or the password: the refusal text is withheld from errors, logs and
    queue list."""
    for echo in (lambda line: '535 5.7.8 rejected: ' + line.decode().strip(),
                 lambda line: '535 5.7.8 bad password relaypw'):
        up = RawUpstream(t, {'EHLO': EHLO, 'AUTH': echo})
        conf = raw_config(t, up)
        sendmail(t, conf, message(), 'bob@example.net')
        p = t.run_bridge(conf, '-v', 'queue', 'flush')
        out = qlist(t, conf) + p.stdout + p.stderr
        forms = [base64.b64encode(x).decode() for x in
                 (b'\0relay\0relaypw', b'relay\0relay\0relaypw')]
        t.check(not any(f in out for f in forms) and 'relaypw' not in out,
                'secret not shown: %r' % out)
        t.check('withheld' in out, 'refusal withheld: %r' % out)
        t.run_bridge(conf, 'queue', 'drop', '1')
        shutil.rmtree(t.path('state'))


def test_bare_cr_never_reaches_upstream(t):
    """sendmail turns a bare CR into CRLF (no "a\r.\r\n" smuggling), refuses
    one in the header, and a queued message holding a bare CR or LF anyway
    (in its row or its spool file) is never sent."""
    up = Upstream(t).start()
    conf = config(t, up)
    msg = b'From: alice@example.com\nTo: bob@example.net\nSubject: cr\n\na\r.\r\nMAIL FROM:<x>\rz\n'
    sendmail(t, conf, msg, 'bob@example.net')
    flush(t, conf)
    got = up.messages()
    t.require(len(got) == 1, 'one message upstream, got %d' % len(got))
    t.check(got[0]['content'].endswith(b'\r\n\r\na\r\n.\r\nMAIL FROM:<x>\r\nz\r\n'),
            'bare CR made CRLF: %r' % got[0]['content'])
    sendmail(t, conf, b'From: alice@example.com\nSubject: a\rb\n\nx\n', 'bob@example.net',
             expect=65)
    # defence in depth: a queued message damaged behind our back, a small
    # one in its row and a big one in its spool file
    big = b'0123456789' * 7000 + b'\n'
    sendmail(t, conf, message(subject='damaged'), 'bob@example.net')
    sendmail(t, conf, message(subject='damaged-big') + big, 'bob@example.net')
    state = t.path('state')
    rows = h.outboxdb.in_row(state)
    damaged, in_rows = 0, 0
    for qid, name, data in h.outboxdb.queued(state):
        if data is None or b'damaged' not in data:
            continue
        data = data.replace(b'Hello Bob,\r\n', b'Hello\n.\nBob,\r\n')
        if qid in rows:
            h.outboxdb.set_body(state, qid, data)
            in_rows += 1
        else:
            with open(os.path.join(state, 'spool', name), 'wb') as f:
                f.write(data)
        damaged += 1
    t.require(damaged == 2 and in_rows == 1, 'damaged %d (%d in rows)' % (damaged, in_rows))
    flush(t, conf)
    t.check(len(up.messages()) == 1, 'the damaged messages are not sent')
    t.check(qlist(t, conf).count('bare CR or LF') == 2, 'and says why: %r' % qlist(t, conf))


if __name__ == '__main__':
    h.main()
