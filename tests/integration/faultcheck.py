"""What the fault tests (network cuts, disk faults, restarts) check after a
fault and after the clean pass that follows it, and how they count.

    scale(check, full)            how many cases: `check` in make check,
                                  `full` when P3B_FAULT_SCALE=full (make
                                  reliability)
    variant()                     "rel" or "asan": which binary runs
    expected_hashes(msgs)         the corpus as an IMAP client must read it
    state_rows(state_dir)         the messages table, as dicts
    maildir_ahead(state_dir, root)   rows marked delivered whose file is not
                                  in the Maildir with that content
    imap_ahead(state_dir, store, user)   the same for an IMAP store (the
                                  delivery key searched for)
    lost_from_server(msgs, server_msgs, stored_hashes)
                                  messages gone from the server and not in
                                  the store
    compare(want, got)            (lost, duplicated) between two multisets
                                  of hashes
    Tally(cls)                    one fault class: .case(lost=, dup=, crash=,
                                  inherent=, note=) per case, .save() writes
                                  the figures for scripts/reliability

A fault class's figures go, one JSON object per line, to
$P3B_RESULTS/NAME.jsonl when P3B_RESULTS names a directory (make
reliability sets it); without it nothing is written. "lost" and
"duplicated" are messages, "crashes" runs ended by a signal or with a
sanitizer report, "inherent" the duplicates SMTP makes unavoidable (the
upstream accepted, its reply was lost: at-least-once, doc/DESIGN.md, The
relay protocol)."""

import collections
import hashlib
import json
import os
import sqlite3

import harness as h


def scale(check, full):
    """The number of cases of a fault class for this run."""
    return full if os.environ.get('P3B_FAULT_SCALE') == 'full' else check


def variant():
    return 'asan' if 'asan' in h.bridge_binary().split(os.sep) else 'rel'


def sha(b):
    return hashlib.sha256(b).hexdigest()


def expected_hashes(msgs):
    """Body hashes of the messages as a client reads them over IMAP after
    they went through the source's POP3 (Dovecot appends a final CRLF)."""
    return sorted(h.body_hash(h.imap_view(h.pop3_view(m))) for m in msgs)


def state_rows(state_dir):
    """The messages table of STATE_DIR/state.db, as dicts ([] before the
    first run)."""
    db = os.path.join(state_dir, 'state.db')
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(db, timeout=60)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute('SELECT * FROM messages')]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def _maildir_index(root):
    """{delivery key: file bytes} of every message file below root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if os.path.basename(dirpath) not in ('new', 'cur'):
            continue
        for f in files:
            with open(os.path.join(dirpath, f), 'rb') as fh:
                out[f.split(':', 1)[0].split(',', 1)[0]] = fh.read()
    return out


def maildir_ahead(state_dir, root):
    """Rows the state calls delivered (or deleted) whose message is not in
    the Maildir with the stored hash: the state ran ahead of the store."""
    files = _maildir_index(root)
    bad = []
    for r in state_rows(state_dir):
        if r['state'] not in (1, 2) or r.get('duplicate_of_account'):
            continue
        body = files.get(r['delivery_key'])
        if body is None or sha(body) != r['sha256']:
            bad.append('%s (%s)' % (r['uidl'], 'missing' if body is None else 'other bytes'))
    return bad


def imap_ahead(state_dir, store, user, password='secret'):
    """The same for an IMAP store: each delivered row's key must be found
    by a client's SEARCH."""
    rows = [r for r in state_rows(state_dir)
            if r['state'] in (1, 2) and not r.get('duplicate_of_account')]
    if not rows:
        return []
    bad = []
    with h.imap_session(store, user, password) as m:
        m.select('INBOX', readonly=True)
        for r in rows:
            typ, data = m.uid('SEARCH', 'HEADER', 'X-Pop3bridge-Key', r['delivery_key'])
            if typ != 'OK' or not data or not data[0].split():
                bad.append(r['uidl'])
    return bad


def compare(want, got):
    """(lost, duplicated): how many of want are missing from got, how many
    of got are extra copies of something wanted (or not wanted at all)."""
    w, g = collections.Counter(want), collections.Counter(got)
    lost = sum((w - g).values())
    dup = sum((g - w).values())
    return lost, dup


def lost_from_server(want_on_server, now_on_server, stored):
    """Messages (by hash) the server no longer has and the store does not
    hold: deleted before they were stored."""
    gone = collections.Counter(want_on_server) - collections.Counter(now_on_server)
    have = collections.Counter(stored)
    return sum((gone - have).values())


class Tally:
    """The figures of one fault class in this program run."""

    def __init__(self, name, cls):
        self.name, self.cls = name, cls
        self.cases = self.lost = self.duplicated = self.crashes = self.inherent = 0
        self.notes = []

    def case(self, lost=0, dup=0, crash=False, inherent=0, note=None):
        self.cases += 1
        self.lost += lost
        self.duplicated += dup
        self.crashes += 1 if crash else 0
        self.inherent += inherent
        if note:
            self.notes.append(note)

    def save(self):
        d = os.environ.get('P3B_RESULTS')
        if not d:
            return
        os.makedirs(d, exist_ok=True)
        rec = {'name': self.name, 'class': self.cls, 'variant': variant(),
               'cases': self.cases, 'lost': self.lost, 'duplicated': self.duplicated,
               'crashes': self.crashes, 'inherent': self.inherent, 'notes': self.notes[:20]}
        with open(os.path.join(d, '%s.jsonl' % self.name), 'a') as f:
            f.write(json.dumps(rec) + '\n')


def crashed(p):
    """True when a finished pop3bridge run died by a signal or printed a
    sanitizer report (p: a CompletedProcess or a Popen with .log_path)."""
    if p.returncode is not None and p.returncode < 0:
        return True
    text = getattr(p, 'stderr', None)
    if text is None and getattr(p, 'log_path', None):
        with open(p.log_path, 'rb') as f:
            text = f.read()
    return h.sanitizer_report(text or '') is not None
