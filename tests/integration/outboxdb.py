"""The relay's queue as the tests read it from STATE_DIR (store/outbox.c):
each outbox row with its message, which a small message keeps in the row
(its outbox_body row) and a big one in its spool file (STATE_DIR/spool/NAME)."""

import os
import sqlite3


def queued(state_dir):
    """[(id, spool_file, content)] for every outbox row, oldest first;
    content is the message's bytes (from the row or the spool file), or
    None when neither holds it (a finished message cleaned up, or a file
    gone)."""
    db = os.path.join(state_dir, 'state.db')
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(db, timeout=60)
    try:
        rows = con.execute('SELECT o.id, o.spool_file, b.body FROM outbox o'
                           ' LEFT JOIN outbox_body b ON b.id = o.id ORDER BY o.id').fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    out = []
    for qid, name, body in rows:
        content = bytes(body) if body is not None else None
        if content is None and name:
            try:
                with open(os.path.join(state_dir, 'spool', name), 'rb') as f:
                    content = f.read()
            except OSError:
                pass
        out.append((qid, name, content))
    return out


def in_row(state_dir):
    """Ids of the messages kept in their rows."""
    con = sqlite3.connect(os.path.join(state_dir, 'state.db'), timeout=60)
    try:
        return [r[0] for r in con.execute('SELECT id FROM outbox_body ORDER BY id')]
    finally:
        con.close()


def set_body(state_dir, qid, content):
    """Replaces the row copy of message qid (a test damaging it behind the
    bridge's back)."""
    con = sqlite3.connect(os.path.join(state_dir, 'state.db'), timeout=60)
    try:
        con.execute('UPDATE outbox_body SET body = ? WHERE id = ?', (content, qid))
        con.commit()
    finally:
        con.close()


def spool_files(state_dir):
    """The message files in the spool, sorted."""
    spool = os.path.join(state_dir, 'spool')
    return sorted(f for f in os.listdir(spool) if f.endswith('.msg')) \
        if os.path.isdir(spool) else []


def held(state_dir):
    """How many messages the queue still keeps: in rows or spool files."""
    return len(in_row(state_dir)) + len(spool_files(state_dir)) \
        if os.path.exists(os.path.join(state_dir, 'state.db')) else 0
