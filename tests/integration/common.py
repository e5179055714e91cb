"""What several integration tests share: a provider Dovecot (POP3 source),
a destination Dovecot serving the Maildir pop3bridge writes over IMAP, and
a config tying them together."""

import email.utils
import hashlib

import harness as h


def servers(t, users=None, **src_kw):
    """(src, dst): the legacy POP3 provider and the IMAP server over the
    destination Maildir (DEST/%u/Maildir, user alice)."""
    src = t.dovecot('src', users=users, **src_kw)
    dst = t.dovecot('dst', mail_root=t.path('dest'))
    return src, dst


def config(t, accounts, extra='', name='p3b.conf'):
    """Writes a pop3bridge config (mode 0600) for account blocks."""
    return h.write_config(t.path(name), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), accounts, extra))


def sync(t, conf, *accounts, expect=0):
    p = t.run_bridge(conf, 'sync', *accounts)
    t.require(p.returncode == expect, 'sync exited %d, expected %d: %s'
              % (p.returncode, expect, p.stderr.strip()[-500:]))
    return p


def sha(b):
    return hashlib.sha256(b).hexdigest()


def stored_files(dst, user='alice', folder=None):
    """Bytes of every message file in the destination Maildir (new/ + cur/)."""
    out = []
    for f in h.maildir_files(dst.maildir(user), folder):
        with open(f, 'rb') as fh:
            out.append(fh.read())
    return out


def message_ids(bodies):
    return [h.header(b, 'Message-ID') for b in bodies]


def header_instant(body):
    """The instant a store should use as internal date: the first
    Received: header's date, else Date:."""
    rec = h.header(body, 'Received')
    if rec and ';' in rec:
        return int(email.utils.parsedate_to_datetime(rec.rsplit(';', 1)[1].strip()).timestamp())
    return int(email.utils.parsedate_to_datetime(h.header(body, 'Date')).timestamp())
