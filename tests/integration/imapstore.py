"""The IMAP store in integration tests: a throwaway Dovecot serving IMAP and
IMAPS (TLS with the test CA) over its own mail root, with a master user
(Dovecot's `user*master` login), and pop3bridge configs whose store is it.

    store = dovecot_store(t)                  started; users {'alice': 'secret'}
    store.master, store.master_pw             the master login and its password
    conf = config(t, store, [h.account_block(...)], tls='implicit')
    key_header(body), strip_key(body)         the X-Pop3bridge-Key line pop3bridge adds
    stored_count(store, user)                 message files in the store's Maildir
    subscribed(store, user)                   LSUB names, "/" as separator

Every message pop3bridge APPENDs starts with the header line
"X-Pop3bridge-Key: KEY" CRLF (its delivery key, by which a crashed import
is found again); compare bodies after strip_key()."""

import os
import re

import harness as h

MASTER = 'p3b-master'
MASTER_PW = 'm4ster-secret'
KEY_HEADER = b'X-Pop3bridge-Key: '


def dovecot_store(t, name='store', users=None, start=True, extra=''):
    """A Dovecot with IMAP (plain port for reading back as the user, IMAPS
    and STARTTLS for pop3bridge) and a passwd-file master passdb; extra:
    more dovecot.conf text."""
    master_file = t.path(name + '-master-passwd')
    extra = ('auth_master_user_separator = *\n'
             'passdb {\n  driver = passwd-file\n'
             '  args = scheme=PLAIN username_format=%%u %s\n'
             '  master = yes\n  pass = yes\n}\n' % master_file) + extra
    d = t.dovecot(name, start=False, users=users, protocols=('imap',),
                  mail_root=t.path(name + '-mail'), extra_conf=extra)
    with open(master_file, 'w') as f:
        f.write('%s:{PLAIN}%s::::::\n' % (MASTER, MASTER_PW))
    os.chmod(master_file, 0o644)
    d.master, d.master_pw = MASTER, MASTER_PW
    return d.start() if start else d


def store_block(store, tls='implicit', user='%u', master=True, password=None,
                ca_file=True, extra=''):
    """The store { } block for store. ca_file=True: the test CA; None: the
    system trust store only; a path: that file."""
    port = store.ports['imaps' if tls == 'implicit' else 'imap']
    lines = ['type = "imap"', 'host = "localhost"', 'port = %d' % port,
             'tls = %s' % h.cq(tls), 'user = %s' % h.cq(user),
             'timeout = 30']
    if master:
        lines.append('master_user = %s' % h.cq(store.master))
    lines.append('password = %s' % h.cq(password if password is not None else
                                         store.master_pw if master else 'secret'))
    if ca_file is True and tls != 'none':
        lines.append('ca_file = %s' % h.cq(store.ca_file))
    elif ca_file not in (True, None):
        lines.append('ca_file = %s' % h.cq(ca_file))
    if tls == 'none':
        lines.append('allow_plaintext = true')
    if extra:
        lines.append(extra)
    return 'store {\n  %s\n}\n' % '\n  '.join(lines)


def config(t, store, accounts, extra='', name='p3b.conf', **store_kw):
    """Writes a pop3bridge config (0600) with the IMAP store and accounts."""
    return h.write_config(t.path(name), h.config_with_store(
        t.path('state'), store_block(store, **store_kw), accounts, extra))


def key_header(body):
    """The delivery key pop3bridge put in the first line, or None."""
    m = re.match(rb'X-Pop3bridge-Key: ([^\r\n]*)\r?\n', body)
    return m.group(1).decode('ascii', 'replace') if m else None


def strip_key(body):
    """body without pop3bridge's X-Pop3bridge-Key first line."""
    m = re.match(rb'X-Pop3bridge-Key: [^\r\n]*\r?\n', body)
    return body[m.end():] if m else body


def stored_count(store, user='alice'):
    """Messages in the store's Maildir (cheap: no IMAP login), all folders."""
    return len(h.maildir_files(store.maildir(user)))


def subscribed(store, user='alice', password='secret'):
    """Names of the subscribed folders (LSUB), decoded, "/" as separator."""
    with h.imap_session(store, user, password) as m:
        boxes = h.imap_mailboxes(m, subscribed=True)
    return sorted(h.mailbox_name(name, delim) for flags, delim, name in boxes)
