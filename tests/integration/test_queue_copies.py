"""Sent copies and bounces that the store does not take are failures, not
done: against a real Dovecot IMAP store with the quota plugin, a refused
(OVERQUOTA) Sent copy and bounce stay pending, are shown by `queue list`
and `status`, keep their message, and are filed exactly once after the
quota is raised. The fixed delivery key of a copy never blocks its retry:
a temp file an earlier attempt left (a crash between creating it and
storing it, a failed rename) is replaced, for the Maildir and the IMAP
store."""

import email
import email.policy
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time

import harness as h
import imapstore
from smtpd import Upstream

TIMEOUT = 240
FROM = 'alice@example.com'
QUOTA = ('mail_plugins = $mail_plugins quota\n'
         'plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=%s\n}\n')


def account(up):
    return ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "relay"\n    password = "relaypw"\n    allow_plaintext = true\n  }\n'
            '  addresses = { "%s" }\n  sent_folder = "Sent"\n}\n'
            % (h.free_port(), up.port, FROM))


def relay():
    return ('relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n'
            '  queue_lifetime = 3600\n}\n' % h.free_port())


def imap_config(t, store, up):
    return imapstore.config(t, store, [account(up)], extra=relay())


def maildir_config(t, up):
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [account(up)], relay()))


def message(subject, to='good@example.net'):
    body = b''.join(b'line %04d of a message long enough to pass a 1 KiB quota\n' % i
                    for i in range(60))
    return (b'From: Alice <%s>\nTo: %s\nSubject: %s\nMessage-ID: <%s@example.com>\n\n'
            % (FROM.encode(), to.encode(), subject.encode(), subject.encode())) + body


def crlf(b):
    return b.replace(b'\n', b'\r\n')


def sendmail(t, conf, msg, *rcpts):
    p = t.run_bridge(conf, 'sendmail', *rcpts, input=msg)
    t.require(p.returncode == 0, 'sendmail: %r' % p.stderr)


def flush(t, conf):
    p = t.run_bridge(conf, '-v', 'queue', 'flush')
    t.require(p.returncode == 0, 'queue flush: %r' % p.stderr)
    return p.stderr


def qlist(t, conf):
    p = t.run_bridge(conf, 'queue', 'list')
    t.require(p.returncode == 0, 'queue list: %r' % p.stderr)
    return p.stdout


def kept(t):
    """How many messages the queue keeps (in their rows or spool files)."""
    return h.outboxdb.held(t.path('state'))


def copy_key(t, what):
    """The fixed delivery key of queue id 1's Sent copy ("sent") or bounce
    ("dsn"), as bridge/queue_file.c derives it from the outbox row."""
    db = sqlite3.connect(t.path('state', 'state.db'))
    try:
        qid, created, name = db.execute(
            'SELECT id, created_at, spool_file FROM outbox ORDER BY id LIMIT 1').fetchone()
    finally:
        db.close()
    tag = hashlib.sha256(name.encode()).hexdigest()[:32]
    return 'outbox%dx%d-%s-%s' % (qid, created, tag, what)


def status(t, conf):
    p = t.run_bridge(conf, 'status')
    j = t.run_bridge(conf, 'status', '--json')
    t.require(p.returncode == 0 and j.returncode == 0, 'status: %r %r' % (p.stderr, j.stderr))
    return p.stdout, json.loads(j.stdout)['accounts'][0]['outbox']


def test_overquota_copies_retried_until_filed(t):
    store = imapstore.dovecot_store(t, extra=QUOTA % '1k')
    up = Upstream(t, script={'bad@example.net': ['550 5.1.1 no such user here'] * 5}).start()
    conf = imap_config(t, store, up)
    msg = message('over quota')
    sendmail(t, conf, msg, 'good@example.net', 'bad@example.net')
    log = flush(t, conf)
    got = up.messages()
    t.require(len(got) == 1 and got[0]['rcpt_tos'] == ['good@example.net'],
              'sent upstream once, to the good recipient: %r' % [g['rcpt_tos'] for g in got])
    out = qlist(t, conf)
    t.check('bounced, bounce and Sent copy pending' in out, 'both pending: %r' % out)
    t.check('Sent copy not stored' in out and 'bounce not stored' in out and
            'Quota exceeded' in out, 'the store\'s refusal shown: %r' % out)
    t.check('next -' not in out, 'a next try is shown: %r' % out)
    t.check('work: queue id 1: Sent copy not stored' in log and 'next try at' in log,
            'one warning naming the account and the next try: %r' % log)
    text, js = status(t, conf)
    t.check('Sent copy or bounce pending' in text and 'Quota exceeded' in text,
            'status shows it: %r' % text)
    t.check(js['unfiled'] == 1 and 'Quota exceeded' in (js['filing_error'] or '') and
            js['next_filing'], 'status --json: %r' % js)
    t.check(kept(t) == 1, 'the message is kept: %d' % kept(t))
    t.check(h.imap_count(store, folder='INBOX') == 0, 'no bounce stored')
    # A second pass with the quota still full: still pending, still no copy.
    flush(t, conf)
    t.check('bounced, bounce and Sent copy pending' in qlist(t, conf), 'still pending')
    t.check(h.imap_count(store, folder='INBOX') == 0, 'still no bounce')

    store.restart(extra_conf=store.extra_conf.replace('storage=1k', 'storage=10M'))
    flush(t, conf)
    t.check('empty' in qlist(t, conf), 'filed: the queue is empty: %r' % qlist(t, conf))
    sent = h.imap_fetch_all(store, folder='Sent')
    t.check(len(sent) == 1, 'exactly one Sent copy: %d' % len(sent))
    if sent:
        t.check(imapstore.strip_key(sent[0]['body']) == crlf(msg), 'the Sent copy is the message')
        t.check('\\Seen' in sent[0]['flags'], 'Sent copy \\Seen: %r' % sent[0]['flags'])
    inbox = h.imap_fetch_all(store, folder='INBOX')
    t.check(len(inbox) == 1, 'exactly one bounce: %d' % len(inbox))
    if inbox:
        b = email.message_from_bytes(imapstore.strip_key(inbox[0]['body']),
                                     policy=email.policy.compat32)
        t.check(b.get_content_type() == 'multipart/report', 'the bounce is a report')
    t.check(kept(t) == 0, 'the message removed once filed: %d' % kept(t))
    imap_tmp = t.path('state', 'spool', 'imap')
    t.check(not os.path.isdir(imap_tmp) or os.listdir(imap_tmp) == [],
            'no IMAP temp file left: %r' % (os.listdir(imap_tmp) if os.path.isdir(imap_tmp) else []))
    _, js = status(t, conf)
    t.check(js['unfiled'] == 0 and js['filing_error'] is None, 'status clear: %r' % js)
    flush(t, conf)
    t.check(h.imap_count(store, folder='Sent') == 1 and h.imap_count(store) == 1,
            'a later pass stores nothing again')
    t.check(len(up.messages()) == 1, 'sent upstream once in all')


def plant_then_deliver(t, conf, up, tmp_dir):
    """Queues a message while the upstream is down, puts a stale temp file
    under its Sent copy's fixed key into tmp_dir (what an attempt that died
    between creating it and storing it leaves), then delivers."""
    msg = message('stale temp')
    sendmail(t, conf, msg, 'good@example.net')
    os.makedirs(tmp_dir, exist_ok=True)
    stale = os.path.join(tmp_dir, copy_key(t, 'sent'))
    with open(stale, 'wb') as f:
        f.write(b'X-Pop3bridge-Key: garbage\r\nSubject: half written\r\n\r\npart')
    up.start()
    flush(t, conf)
    t.check(len(up.messages()) == 1, 'sent upstream once')
    t.check('empty' in qlist(t, conf), 'Sent copy filed despite the stale temp file: %r'
            % qlist(t, conf))
    t.check(not os.path.exists(stale), 'the stale temp file was replaced and used')
    return msg


def test_stale_maildir_temp_file_replaced(t):
    up = Upstream(t)
    conf = maildir_config(t, up)
    root = t.path('dest', 'alice', 'Maildir')
    msg = plant_then_deliver(t, conf, up, os.path.join(root, '.Sent', 'tmp'))
    sent = h.maildir_files(root, '.Sent')
    t.check(len(sent) == 1, 'one Sent copy: %r' % sent)
    if sent:
        with open(sent[0], 'rb') as f:
            t.check(f.read() == msg, 'the Sent copy is the message, not the stale file')


def test_stale_imap_temp_file_replaced(t):
    store = imapstore.dovecot_store(t)
    up = Upstream(t)
    conf = imap_config(t, store, up)
    msg = plant_then_deliver(t, conf, up, t.path('state', 'spool', 'imap'))
    sent = h.imap_fetch_all(store, folder='Sent')
    t.check(len(sent) == 1, 'one Sent copy: %d' % len(sent))
    if sent:
        t.check(imapstore.strip_key(sent[0]['body']) == crlf(msg),
                'the Sent copy is the message, not the stale file')


def test_rename_error_then_filed_once(t):
    """The Maildir's Sent/cur is on another file system (a symlink to
    /dev/shm): the rename of the copy fails with EXDEV after its temp file
    was written. The copy stays pending, and every retry fails for that
    reason, not for the temp file of the one before; once cur/ is a real
    directory, the copy is filed once."""
    up = Upstream(t).start()
    conf = maildir_config(t, up)
    root = t.path('dest', 'alice', 'Maildir')
    sent_dir = os.path.join(root, '.Sent')
    for sub in ('tmp', 'new'):
        os.makedirs(os.path.join(sent_dir, sub))
    other = tempfile.mkdtemp(prefix='p3b-xdev-', dir='/dev/shm')
    t.cleanup(lambda: shutil.rmtree(other, ignore_errors=True))
    os.symlink(other, os.path.join(sent_dir, 'cur'))
    msg = message('cross device')
    sendmail(t, conf, msg, 'good@example.net')
    for attempt in (1, 2):
        flush(t, conf)
        out = qlist(t, conf)
        t.check('sent, Sent copy pending' in out and 'cross-device' in out,
                'attempt %d: pending, with the rename error: %r' % (attempt, out))
        t.check('File exists' not in out, 'attempt %d: no stale temp file in the way' % attempt)
        t.check(os.listdir(os.path.join(sent_dir, 'tmp')) == [],
                'attempt %d: its temp file removed' % attempt)
    t.check(len(up.messages()) == 1, 'sent upstream once')
    t.check(kept(t) == 1, 'the message kept while the copy is pending')
    os.unlink(os.path.join(sent_dir, 'cur'))
    os.mkdir(os.path.join(sent_dir, 'cur'))
    flush(t, conf)
    t.check('empty' in qlist(t, conf), 'filed: %r' % qlist(t, conf))
    sent = h.maildir_files(root, '.Sent')
    t.check(len(sent) == 1, 'exactly one Sent copy: %r' % sent)
    t.check(os.listdir(other) == [], 'nothing landed on the other file system')
    t.check(kept(t) == 0, 'the message removed once filed')


def test_drop_gives_up_filing(t):
    """`queue drop` on a sent message whose Sent copy is pending gives up
    the copy (the message stays sent) and frees its spool file."""
    store = imapstore.dovecot_store(t, extra=QUOTA % '1k')
    up = Upstream(t).start()
    conf = imap_config(t, store, up)
    sendmail(t, conf, message('dropped copy'), 'good@example.net')
    flush(t, conf)
    t.require('sent, Sent copy pending' in qlist(t, conf), 'pending: %r' % qlist(t, conf))
    p = t.run_bridge(conf, 'queue', 'drop', '1')
    t.check(p.returncode == 0, 'drop: %r' % p.stderr)
    t.check('empty' in qlist(t, conf), 'nothing left: %r' % qlist(t, conf))
    t.check(kept(t) == 0, 'its message is gone')
    db = sqlite3.connect(t.path('state', 'state.db'))
    try:
        st = db.execute('SELECT state FROM outbox WHERE id = 1').fetchone()[0]
    finally:
        db.close()
    t.check(st == 1, 'still recorded as sent (state %d)' % st)
    t.check(len(up.messages()) == 1, 'sent once')


if __name__ == '__main__':
    h.main()
