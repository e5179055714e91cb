"""POP3 and IMAP clients of the integration tests (poplib, imaplib): read
back what a Dovecot serves, as a mail client would. `dovecot` is anything
with .ports ({'pop3': N, 'pop3s': N, 'imap': N, 'imaps': N}) and .ca_file,
such as a dovecot.Dovecot.

    pop3_connect/pop3_session/pop3_stat/pop3_uidls/pop3_retr_all(dovecot, user, pw, tls=False)
    imap_connect/imap_session/imap_list/imap_fetch_all/imap_count(dovecot, user, pw, ...)
    imap_mailboxes(m, subscribed=False), mailbox_name(raw, delim, sep)
    mutf7_encode(s), mutf7_decode(s)    IMAP modified UTF-7
"""

import base64
import calendar
import contextlib
import imaplib
import poplib
import re
import ssl
import time

# The standard library's line limits are for defending clients against
# hostile servers; the test servers are ours and the corpus has long lines.
poplib._MAXLINE = 1 << 22
imaplib._MAXLINE = 1 << 22


# ---------------------------------------------------------------- POP3 client

def pop3_connect(dovecot, user='alice', password='secret', tls=False, timeout=30):
    """A logged-in poplib client (plain port, or POP3S verified with the CA)."""
    if tls:
        ctx = ssl.create_default_context(cafile=dovecot.ca_file)
        p = poplib.POP3_SSL('localhost', dovecot.ports['pop3s'], context=ctx, timeout=timeout)
    else:
        p = poplib.POP3('127.0.0.1', dovecot.ports['pop3'], timeout=timeout)
    p.user(user)
    p.pass_(password)
    return p


@contextlib.contextmanager
def _session(client, goodbye):
    """with: client, and goodbye() (its QUIT, LOGOUT) however the block ends."""
    try:
        yield client
    finally:
        goodbye()


def pop3_session(dovecot, user='alice', password='secret', tls=False):
    """with pop3_session(...) as p: a pop3_connect() client, QUIT at the end."""
    p = pop3_connect(dovecot, user, password, tls)
    return _session(p, p.quit)


def pop3_stat(dovecot, user='alice', password='secret', tls=False):
    """(count, octets) from POP3 STAT."""
    with pop3_session(dovecot, user, password, tls) as p:
        return p.stat()


def pop3_uidls(dovecot, user='alice', password='secret', tls=False):
    """The UIDLs in message order (list of str)."""
    with pop3_session(dovecot, user, password, tls) as p:
        resp, lines, _ = p.uidl()
        return [l.split(None, 1)[1].decode('ascii') for l in lines]


def pop3_retr_all(dovecot, user='alice', password='secret', tls=False):
    """Every message as RETR returns it (dot-unstuffed, CRLF line endings)."""
    with pop3_session(dovecot, user, password, tls) as p:
        n = p.stat()[0]
        out = []
        for k in range(1, n + 1):
            resp, lines, _ = p.retr(k)
            out.append(b''.join(l + b'\r\n' for l in lines))
        return out


# ---------------------------------------------------------------- IMAP client

def mutf7_decode(s):
    """IMAP modified UTF-7 (RFC 3501 5.1.3) to str."""
    if isinstance(s, bytes):
        s = s.decode('ascii')
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c != '&':
            out.append(c)
            i += 1
            continue
        j = s.index('-', i)
        chunk = s[i + 1:j]
        if not chunk:
            out.append('&')
        else:
            b = chunk.replace(',', '/')
            b += '=' * (-len(b) % 4)
            out.append(base64.b64decode(b).decode('utf-16-be'))
        i = j + 1
    return ''.join(out)


def mutf7_encode(s):
    """str to IMAP modified UTF-7."""
    out, buf = [], []

    def flush():
        if buf:
            b = base64.b64encode(''.join(buf).encode('utf-16-be')).decode().rstrip('=')
            out.append('&' + b.replace('/', ',') + '-')
            buf.clear()
    for c in s:
        if 0x20 <= ord(c) <= 0x7e:
            flush()
            out.append('&-' if c == '&' else c)
        else:
            buf.append(c)
    flush()
    return ''.join(out)


def _q(name):
    """An IMAP quoted string."""
    return '"' + name.replace('\\', '\\\\').replace('"', '\\"') + '"'


def imap_connect(dovecot, user='alice', password='secret', tls=False, timeout=60):
    """A logged-in imaplib client (plain port, or IMAPS verified with the CA)."""
    if tls:
        ctx = ssl.create_default_context(cafile=dovecot.ca_file)
        m = imaplib.IMAP4_SSL('localhost', dovecot.ports['imaps'], ssl_context=ctx,
                              timeout=timeout)
    else:
        m = imaplib.IMAP4('127.0.0.1', dovecot.ports['imap'], timeout=timeout)
    m.login(user, password)
    return m


def imap_session(dovecot, user='alice', password='secret', tls=False):
    """with imap_session(...) as m: an imap_connect() client, LOGOUT at the end."""
    m = imap_connect(dovecot, user, password, tls)
    return _session(m, m.logout)


_LIST_RE = re.compile(rb'\((?P<flags>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"])*") (?P<name>.*)$')


def imap_mailboxes(m, subscribed=False):
    """[(flags, delim, raw mailbox name)] from LIST "" "*" (LSUB with
    subscribed=True) on the logged-in client m; names still in modified
    UTF-7 (see mailbox_name)."""
    typ, data = (m.lsub if subscribed else m.list)('""', '*')
    out = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):  # name sent as a literal
            head, lit = item
            mm = _LIST_RE.match(head.rsplit(b' {', 1)[0] + b' ""')
            out.append((mm.group('flags').decode(), _unq(mm.group('delim')), lit.decode('ascii')))
            continue
        mm = _LIST_RE.match(item)
        if not mm:
            continue
        out.append((mm.group('flags').decode(), _unq(mm.group('delim')), _unq(mm.group('name'))))
    return out


def mailbox_name(raw, delim, sep='/'):
    """A raw LIST name decoded from modified UTF-7, the server's hierarchy
    delimiter delim shown as sep (None: as the server sends it)."""
    name = mutf7_decode(raw)
    if sep is not None and delim:
        name = name.replace(delim, sep)
    return name


def _unq(b):
    """An IMAP atom or quoted string as str; NIL is None."""
    s = b.decode('ascii') if isinstance(b, bytes) else b
    if s == 'NIL':
        return None
    if s.startswith('"') and s.endswith('"'):
        s = re.sub(r'\\(.)', r'\1', s[1:-1])
    return s


def _server_name(m, folder):
    """A folder written with "/" as hierarchy separator, as the server names it."""
    if folder.upper() == 'INBOX':
        return 'INBOX'
    typ, data = m.list('""', '""')
    mm = _LIST_RE.match(data[0])
    delim = _unq(mm.group('delim')) if mm else '.'
    return mutf7_encode(folder.replace('/', delim or '/'))


def imap_list(dovecot, user='alice', password='secret', sep='/', selectable=False):
    """Folder names (str, decoded from modified UTF-7), sorted; the server's
    hierarchy delimiter is shown as sep (None: as the server sends it).
    selectable: leave out \\Noselect / \\NonExistent names (e.g. "Lists"
    when only "Lists/News" exists)."""
    with imap_session(dovecot, user, password) as m:
        boxes = imap_mailboxes(m)
    return sorted(mailbox_name(name, delim, sep) for flags, delim, name in boxes
                  if not selectable or not re.search(r'(?i)\\(noselect|nonexistent)\b', flags))


def _parse_internaldate(s):
    """'14-Nov-2023 22:13:20 +0000' -> unix time."""
    tt = time.strptime(s[:20].strip(), '%d-%b-%Y %H:%M:%S')
    zone = s[21:].strip()
    off = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[0] == '-' else 1)
    return calendar.timegm(tt) - off


def imap_fetch_all(dovecot, user='alice', password='secret', folder='INBOX'):
    """Every message of folder ("/" as hierarchy separator), in UID order, as
    dicts {uid, flags (list of str), internaldate (unix time), body (bytes of
    BODY.PEEK[])}. Read-only (EXAMINE): flags are not changed."""
    with imap_session(dovecot, user, password) as m:
        typ, data = m.select(_q(_server_name(m, folder)), readonly=True)
        if typ != 'OK':
            raise RuntimeError('EXAMINE %s: %s' % (folder, data))
        if int(data[0]) == 0:
            return []
        typ, data = m.uid('FETCH', '1:*', '(UID FLAGS INTERNALDATE BODY.PEEK[])')
        if typ != 'OK':
            raise RuntimeError('FETCH: %s' % data)
        out = []
        cur = None
        for item in data:
            if isinstance(item, tuple):
                meta, lit = item
                cur = {'body': lit}
                _fetch_meta(cur, meta)
                out.append(cur)
            elif isinstance(item, bytes) and cur is not None:
                _fetch_meta(cur, item)  # items sent after the literal
        out.sort(key=lambda d: d['uid'])
        return out


def _fetch_meta(d, meta):
    mm = re.search(rb'UID (\d+)', meta)
    if mm:
        d['uid'] = int(mm.group(1))
    mm = re.search(rb'FLAGS \(([^)]*)\)', meta)
    if mm:
        d['flags'] = mm.group(1).decode().split()
    mm = re.search(rb'INTERNALDATE "([^"]+)"', meta)
    if mm:
        d['internaldate'] = _parse_internaldate(mm.group(1).decode())


def imap_count(dovecot, user='alice', password='secret', folder='INBOX'):
    """Number of messages in folder ("/" as hierarchy separator)."""
    with imap_session(dovecot, user, password) as m:
        name = _server_name(m, folder)
        typ, data = m.status(_q(name), '(MESSAGES)')
        if typ != 'OK':
            raise RuntimeError('STATUS %s: %s' % (folder, data))
        return int(re.search(rb'MESSAGES (\d+)', data[0]).group(1))
