"""The IMAP store against what real servers do beyond plain Dovecot
(store/imap_folder.c, store/imap_append.c): folders under the personal
NAMESPACE (RFC 2342) -- a Dovecot with Courier's "INBOX." prefix here,
the real Courier in test_imap_store_courier.py --, the Sent copy into the
folder flagged \\Sent (RFC 6154) when sent_folder is not set, APPENDLIMIT
(RFC 7889) refused before sending, [OVERQUOTA] (RFC 9208) as a temporary
failure that loses nothing, [LIMIT] (RFC 5530) refusing one message.

Bodies are compared by hash after imapstore.strip_key()."""

import collections
import re

import harness as h
import imapstore as ist
from common import sync
from smtpd import Upstream

TIMEOUT = 400

# Courier's layout on a Dovecot: every folder under "INBOX." (a CREATE of
# "Foo" is refused: "Client tried to access nonexistent namespace").
COURIER_NS = 'namespace inbox {\n  prefix = INBOX.\n  separator = .\n  inbox = yes\n}\n'
FROM = 'alice@example.com'


def source(t, msgs):
    src = t.dovecot('src')
    h.seed(src, 'alice', msgs)
    return src


def hashes(fetched):
    return sorted(h.body_hash(ist.strip_key(f['body'])) for f in fetched)


def retr_hashes(src):
    return sorted(h.body_hash(h.imap_view(r)) for r in h.pop3_retr_all(src))


def relay_config(t, store, sent_folder=None, up=None, name='p3b.conf', **store_kw):
    """An account that relays through up and files Sent copies in the IMAP
    store (imapstore.store_block(store, **store_kw)); sent_folder None: not
    set."""
    up = up or Upstream(t).start()
    acct = ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "relay"\n    password = "relaypw"\n    allow_plaintext = true\n  }\n'
            '  addresses = { "%s" }\n%s}\n'
            % (h.free_port(), up.port, FROM,
               '  sent_folder = %s\n' % h.cq(sent_folder) if sent_folder else ''))
    relay = 'relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n}\n' % h.free_port()
    text = h.config_with_store(t.path('state-' + name), ist.store_block(store, **store_kw), [acct],
                                relay)
    return h.write_config(t.path(name), text), up


def send_one(t, conf, subject):
    msg = ('From: Alice <%s>\nTo: bob@example.net\nSubject: %s\n'
           'Message-ID: <%s@example.com>\n\nHello Bob\n' % (FROM, subject, subject)).encode()
    p = t.run_bridge(conf, 'sendmail', '-t', input=msg)
    t.require(p.returncode == 0, 'sendmail: %r' % p.stderr)
    p = t.run_bridge(conf, 'queue', 'flush')
    t.require(p.returncode == 0, 'queue flush: %r' % p.stderr)
    return p


def subjects(store, folder):
    return sorted(h.header(ist.strip_key(f['body']), 'Subject')
                  for f in h.imap_fetch_all(store, folder=folder))


def test_folders_under_the_personal_namespace(t):
    """folder = "Lists/News" on a server whose personal namespace is
    "INBOX." with "." (Courier's) is INBOX.Lists.News: created, subscribed,
    bodies intact; INBOX stays INBOX; a folder written with the prefix
    already is not prefixed twice."""
    msgs = h.make_corpus(12, seed=21)
    src = source(t, msgs)
    other = t.dovecot('src2', users={'bob': 'secret'})
    h.seed(other, 'bob', h.make_corpus(3, seed=22))
    third = t.dovecot('src3', users={'carol': 'secret'})
    h.seed(third, 'carol', h.make_corpus(2, seed=23))
    store = ist.dovecot_store(t, extra=COURIER_NS)
    conf = ist.config(t, store, [
        h.account_block('news', src, folder='Lists/News'),
        h.account_block('inbox', other, user='bob'),
        h.account_block('full', third, user='carol', folder='INBOX/Archive')])
    p = sync(t, conf)
    t.check(p.returncode == 0, 'sync: %s' % p.stderr)
    boxes = h.imap_list(store, sep=None)
    t.check('INBOX.Lists.News' in boxes, 'INBOX.Lists.News made: %r' % boxes)
    t.check('INBOX.Archive' in boxes and 'INBOX.INBOX.Archive' not in boxes,
            '"INBOX/Archive" is INBOX.Archive, not prefixed twice: %r' % boxes)
    t.check(not any(b.startswith('Lists') for b in boxes), 'nothing outside INBOX.')
    got = h.imap_fetch_all(store, folder='INBOX/Lists/News')
    t.check(len(got) == 12, '12 in INBOX.Lists.News, got %d' % len(got))
    t.check(hashes(got) == retr_hashes(src), 'bodies are RETR byte for byte')
    t.check(len(h.imap_fetch_all(store)) == 3, 'the INBOX account: 3 in INBOX')
    t.check(len(h.imap_fetch_all(store, folder='INBOX/Archive')) == 2, '2 in INBOX.Archive')
    with h.imap_session(store) as m:
        subs = [name for flags, delim, name in h.imap_mailboxes(m, subscribed=True)]
    t.check('INBOX.Lists.News' in subs and 'INBOX.Archive' in subs,
            'new folders subscribed: %r' % subs)
    # Reconciliation finds the rows by key under the same names.
    p = sync(t, conf)
    t.check('0 new, 0 imported' in p.stderr, 'second pass imports nothing: %s' % p.stderr)


def test_sent_copy_goes_under_the_namespace(t):
    """Without SPECIAL-USE flags and without sent_folder, the Sent copy is
    "Sent" under the namespace: INBOX.Sent."""
    store = ist.dovecot_store(t, extra=COURIER_NS)
    conf, up = relay_config(t, store)
    send_one(t, conf, 'ns-sent')
    t.require(len(up.messages()) == 1, 'sent upstream')
    boxes = h.imap_list(store, sep=None)
    t.check('INBOX.Sent' in boxes, 'INBOX.Sent made: %r' % boxes)
    t.check(subjects(store, 'INBOX/Sent') == ['ns-sent'], 'the copy is in INBOX.Sent')


def test_sent_copy_into_the_special_use_folder(t):
    """A Dovecot whose \\Sent folder is "Sent Messages": the copy goes there
    when sent_folder is not set, into "Sent" when it says so; each once
    (a second flush files nothing)."""
    special = ('namespace inbox {\n  inbox = yes\n  mailbox "Sent Messages" {\n'
               '    special_use = \\Sent\n    auto = subscribe\n  }\n}\n')
    store = ist.dovecot_store(t, extra=special)
    conf, up = relay_config(t, store)
    send_one(t, conf, 'unset')
    t.check(subjects(store, 'Sent Messages') == ['unset'], 'in "Sent Messages": %r'
            % subjects(store, 'Sent Messages'))
    t.check('Sent' not in h.imap_list(store), 'no "Sent" made: %r' % h.imap_list(store))
    p = t.run_bridge(conf, 'queue', 'flush')
    t.check(subjects(store, 'Sent Messages') == ['unset'], 'filed once')
    conf2, _ = relay_config(t, store, sent_folder='Sent', up=up, name='named.conf')
    send_one(t, conf2, 'named')
    t.check(subjects(store, 'Sent') == ['named'], 'sent_folder = "Sent" is "Sent"')
    t.check(subjects(store, 'Sent Messages') == ['unset'], 'and not the \\Sent folder')


def test_sent_copy_maildir_without_sent_folder(t):
    """The Maildir store has no special-use flags: sent_folder not set is
    "Sent" as before (.Sent)."""
    up = Upstream(t).start()
    acct = ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "relay"\n    password = "relaypw"\n    allow_plaintext = true\n  }\n'
            '  addresses = { "%s" }\n}\n' % (h.free_port(), up.port, FROM))
    relay = 'relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n}\n' % h.free_port()
    conf = h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [acct], relay))
    send_one(t, conf, 'maildir-sent')
    files = h.maildir_files(t.path('dest', 'alice', 'Maildir'), '.Sent')
    t.check(len(files) == 1, 'one copy in .Sent, got %d' % len(files))


def test_appendlimit_refused_before_sending(t):
    """APPENDLIMIT=N (here only announced: Dovecot 2.3 would take the
    message) => a larger message is refused by pop3bridge itself, never
    sent, left on the POP3 server; the others are imported; every pass
    says so and exits 65."""
    store = ist.dovecot_store(t, extra='imap_capability = +APPENDLIMIT=40000\n')
    msgs = [h.make_message(i, size=3000) for i in range(4)]
    msgs.insert(2, h.make_message(50, size=60000, subject='over the limit'))
    src = source(t, msgs)
    conf = ist.config(t, store, [h.account_block('acct', src, extra='leave_on_server = false')])
    for attempt in (1, 2):
        p = t.run_bridge(conf, 'sync')
        t.check(p.returncode == 65, 'pass %d exits 65, got %d: %s'
                % (attempt, p.returncode, p.stderr))
        t.check(re.search(r'acct: the store refused message \d+ .*APPENDLIMIT of 40000', p.stderr),
                'the log names account, message and limit: %s' % p.stderr)
        got = [h.header(f['body'], 'Subject') for f in h.imap_fetch_all(store)]
        t.check(sorted(got) == ['Test message %d' % i for i in range(4)],
                'the four others stored: %r' % got)
        t.check(h.pop3_stat(src)[0] == 1, 'the big one is left on the server')
    t.check(ist.stored_count(store) == 4, 'the store holds 4 files: nothing else was sent')


def test_limit_refuses_one_message(t):
    """Dovecot's quota_max_mail_size answers NO [LIMIT]: that message is
    refused (65, named with the code), the rest imported."""
    quota = ('mail_plugins = $mail_plugins quota\n'
             'plugin {\n  quota = count:User quota\n  quota_vsizes = yes\n'
             '  quota_max_mail_size = 50k\n}\n')
    store = ist.dovecot_store(t, extra=quota)
    msgs = [h.make_message(i, size=2000) for i in range(3)]
    msgs.append(h.make_message(9, size=80000, subject='too big'))
    src = source(t, msgs)
    conf = ist.config(t, store, [h.account_block('acct', src)])
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 65, 'exit 65, got %d: %s' % (p.returncode, p.stderr))
    t.check(re.search(r'acct: the store refused message 4 .*\[LIMIT\]', p.stderr),
            'refusal named with [LIMIT]: %s' % p.stderr)
    t.check(h.imap_count(store) == 3, 'the other three stored')


def test_overquota_is_temporary_and_loses_nothing(t):
    """A full mailbox (Dovecot quota, storage=1M) answers NO [OVERQUOTA]:
    the pass stops (75, temporary: the daemon retries), nothing is deleted
    from the POP3 server nor stored twice; once the quota is raised the
    next pass imports exactly the rest."""
    def quota(limit):
        return ('mail_plugins = $mail_plugins quota\n'
                'plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=%s\n}\n'
                % limit)
    store = ist.dovecot_store(t, extra=quota('1M'))
    msgs = [h.make_message(i, size=100 * 1024) for i in range(20)]
    src = source(t, msgs)
    conf = ist.config(t, store, [h.account_block('acct', src, extra='leave_on_server = false')],
                      extra='batch_messages = 4\n')
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 75, 'over quota: exit 75, got %d: %s' % (p.returncode, p.stderr))
    t.check('[OVERQUOTA]' in p.stderr and 'acct:' in p.stderr,
            'the error names the account and the code: %s' % p.stderr)
    stored = h.imap_count(store)
    t.check(0 < stored < 20, 'some stored before the quota was reached: %d' % stored)
    t.check(h.pop3_stat(src)[0] == 20, 'nothing deleted from the POP3 server')
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 75, 'still full: 75 again, got %d' % p.returncode)
    t.check(h.imap_count(store) == stored, 'nothing more stored while full')
    store.restart(extra_conf=store.extra_conf.replace('storage=1M', 'storage=100M'))
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 0, 'quota raised: exit 0, got %d: %s' % (p.returncode, p.stderr))
    fetched = h.imap_fetch_all(store)
    ids = collections.Counter(h.header(ist.strip_key(f['body']), 'Message-ID') for f in fetched)
    t.check(len(fetched) == 20 and max(ids.values()) == 1, 'exactly the 20, none twice: %d, %r'
            % (len(fetched), [k for k, v in ids.items() if v > 1]))
    t.check(sorted(ids) == sorted(h.header(m, 'Message-ID') for m in msgs), 'the server set')
    t.check(h.pop3_stat(src)[0] == 0, 'all deleted from the POP3 server after the import')


if __name__ == '__main__':
    h.main()
