"""The bench's messages: deterministic (the same bytes for the same
arguments, on every machine), generated fast, written straight into a
Maildir that a Dovecot serves, and checked where each tool stored them.

    c = Corpus.mixed(n=10000, total=318e6)   sizes 2 KB..2 MB, log-normal
    c = Corpus.small(n=100000)               1..3 KB each (big mailboxes)
    c.n, c.total, c.sizes, c.digests (Counter)
    c.seed(maildir)          files in cur/, mtime = Date (INTERNALDATE)
    c.files                  their paths, once seeded
    verify_maildir(path, c) -> Check      every message exactly once, by hash
    big_message(path, size)  one message of size bytes, written in 1 MB
                             pieces (never held in memory); its digest

Each message is CRLF throughout and starts with its own "Message-ID:
<bench." header line. A tool may put header lines above it (Received:,
Delivered-To:, X-Pop3bridge-Key: ...) and may store LF instead of CRLF: the
digest is the sha256 of what follows that Message-ID line's start, with
CRLF made LF, so anything else -- a lost byte, a wrong dot-unstuffing, a
truncated message -- is a different digest."""

import base64
import collections
import hashlib
import math
import os
import random
import time


ANCHOR = b'Message-ID: <bench.'
BASE_DATE = 1700000000
KB = 1024

_WORDS = ('mail bridge import message server client folder header body pop imap legacy '
          'provider delivery exactly once maildir dovecot sample lorem ipsum dolor sit amet '
          'consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore '
          'magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris').split()
_UTF8 = ['Gr\u00fc\u00dfe aus M\u00fcnchen und K\u00f6ln', '\u65e5\u672c\u8a9e\u306e\u30c6'
         '\u30ad\u30b9\u30c8', '\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a'
         '\u0441\u0442', 'caf\u00e9 cr\u00e8me br\u00fbl\u00e9e']


def _pool():
    """4096 filler lines (no line ending): words, a few UTF-8 lines and the
    lines POP3 dot-stuffing must get right ("." alone, "..", ".x")."""
    rnd = random.Random('bench-pool')
    lines = []
    for k in range(4096):
        if k % 97 == 0:
            lines.append(rnd.choice([b'.', b'..', b'.hidden line', b'. dot space', b'...']))
            continue
        width = rnd.randint(40, 76)
        words = []
        while sum(len(w) + 1 for w in words) < width:
            words.append(rnd.choice(_WORDS))
        line = ' '.join(words)
        if k % 13 == 0:
            line = rnd.choice(_UTF8) + ' ' + line
        lines.append(line.encode('utf-8'))
    return lines


_TEXT = None                    # (8 MB of pool lines joined by CRLF, line starts)
_B64 = None                     # 8 MB of base64 lines, 76 characters + CRLF each
_B64_LINE = 78


def _pools():
    global _TEXT, _B64
    if _TEXT is None:
        rnd = random.Random('bench-text')
        lines = _pool()
        text = b'\r\n'.join(rnd.choices(lines, k=(8 << 20) // 40)) + b'\r\n'
        starts, at = [0], text.find(b'\n')
        while at != -1:
            starts.append(at + 1)
            at = text.find(b'\n', at + 1)
        _TEXT = (text, starts[:-1])
        raw = random.Random('bench-b64').randbytes((8 << 20) // _B64_LINE * 57)
        _B64 = base64.encodebytes(raw).replace(b'\n', b'\r\n')


def _text(rnd, nbytes):
    """Exactly nbytes (>= 2, < 8 MB) of CRLF-terminated text lines, from a
    line of the text pool that rnd picks."""
    _pools()
    text, starts = _TEXT
    last = len(text) - nbytes
    k = rnd.randrange(len(starts))
    off = starts[k] if starts[k] <= last else starts[k % 64]
    body = text[off:off + nbytes - 2]
    if body.endswith(b'\r'):
        body = body[:-1] + b'x'
    return body + b'\r\n'


def _base64(rnd, nlines):
    """nlines (< 100,000) lines of base64 from the pool, CRLF each."""
    _pools()
    total = len(_B64) // _B64_LINE
    k = rnd.randrange(total - nlines)
    return _B64[k * _B64_LINE:(k + nlines) * _B64_LINE]


_DAYS = ('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun')
_MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')


def _date(ts):
    """RFC 5322 date in UTC (not locale dependent)."""
    t = time.gmtime(ts)
    return '%s, %02d %s %d %02d:%02d:%02d +0000' % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min,
        t.tm_sec)


def message(i, size, tag='m', rnd=None):
    """Message number i of about size bytes (exact for text ones; a
    multipart one is within a line of it), CRLF line endings. rnd: the
    random source (default: one for tag and i)."""
    rnd = rnd or random.Random('bench-%s-%d' % (tag, i))
    date = BASE_DATE + i * 37
    utf8 = i % 7 == 3
    subject = ('Gr\u00fc\u00dfe %d \u2013 \u65e5\u672c\u8a9e' % i) if utf8 else 'Bench message %d' % i
    head = [('Message-ID', '<bench.%s.%d.%08x@pop3bridge.test>' % (tag, i, rnd.getrandbits(32))),
            ('Date', _date(date)),
            ('From', 'Sender %d <sender%d@example.org>' % (i % 17, i % 17)),
            ('To', 'Alice <alice@example.net>'),
            ('Subject', subject),
            ('MIME-Version', '1.0')]
    multipart = size > 48 * KB
    if multipart:
        boundary = '=_bench_%d_%08x' % (i, rnd.getrandbits(32))
        head.append(('Content-Type', 'multipart/mixed; boundary="%s"' % boundary))
    else:
        head.append(('Content-Type', 'text/plain; charset=%s' % ('utf-8' if utf8 else 'us-ascii')))
        head.append(('Content-Transfer-Encoding', '8bit' if utf8 else '7bit'))
    hb = b''.join(('%s: %s\r\n' % kv).encode('utf-8') for kv in head) + b'\r\n'
    if not multipart:
        return hb + _text(rnd, max(size - len(hb), 2))
    b = boundary.encode()
    text = _text(rnd, 600)
    part1 = (b'--' + b + b'\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n' + text)
    part2h = (b'--' + b + b'\r\nContent-Type: application/octet-stream; name="f%d.bin"\r\n'
              b'Content-Transfer-Encoding: base64\r\n'
              b'Content-Disposition: attachment; filename="f%d.bin"\r\n\r\n' % (i, i))
    tail = b'--' + b + b'--\r\n'
    room = size - len(hb) - len(part1) - len(part2h) - len(tail)
    b64 = _base64(rnd, max(room // _B64_LINE, 1))
    return hb + part1 + part2h + b64 + tail


def digest(content):
    """The bench digest of a stored message (see the module doc), or None
    when content holds no bench message."""
    at = content.find(ANCHOR)
    if at < 0:
        return None
    return hashlib.sha256(content[at:].replace(b'\r\n', b'\n')).hexdigest()


def mixed_sizes(n, total, lo=2 * KB, hi=2 * KB * KB, sigma=1.6, seed='bench-sizes'):
    """n sizes in [lo, hi], deterministic, shaped like a real mailbox: lo
    plus a log-normal part (most messages a few KB, a long tail of
    attachments up to hi), its median chosen so that they sum to about
    total."""
    rnd = random.Random(seed)
    zs = [rnd.gauss(0.0, sigma) for _ in range(n)]

    def sizes(mu):
        return [min(int(lo + math.exp(mu + z)), hi) for z in zs]
    a, b = 0.0, math.log(hi)              # sum(sizes(mu)) grows with mu
    for _ in range(60):
        m = (a + b) / 2
        if sum(sizes(m)) < total:
            a = m
        else:
            b = m
    return sizes((a + b) / 2)


class Corpus:
    def __init__(self, sizes, tag):
        self.sizes = list(sizes)
        self.tag = tag
        self.n = len(self.sizes)
        self.files = []
        self.digests = collections.Counter()
        self.total = 0

    @classmethod
    def mixed(cls, n=10000, total=318e6):
        return cls(mixed_sizes(n, total), 'mix%d' % n)

    @classmethod
    def small(cls, n, tag=None):
        rnd = random.Random('bench-small-%d' % n)
        return cls([rnd.randint(KB, 3 * KB) for _ in range(n)], tag or 'small%d' % n)

    def messages(self):
        """(i, bytes) of every message, in order (one random source for the
        whole corpus, in this order: deterministic)."""
        rnd = random.Random('bench-%s' % self.tag)
        for i, size in enumerate(self.sizes):
            yield i, message(i, size, self.tag, rnd)

    def seed(self, maildir, uid=None, gid=None):
        """Writes every message into maildir/cur (which must exist), named
        as Dovecot names its own files, with S= and W= sizes so that it
        need not read them to LIST; returns self."""
        cur = os.path.join(maildir, 'cur')
        pid = os.getpid()
        self.files, self.total = [], 0
        self.digests = collections.Counter()
        for i, m in self.messages():
            date = BASE_DATE + i * 37
            name = '%d.M%dP%d.bench,S=%d,W=%d:2,' % (date, i, pid, len(m), len(m))
            path = os.path.join(cur, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, m)
                if uid is not None:
                    os.fchown(fd, uid, gid)
                os.utime(fd, (date, date))
            finally:
                os.close(fd)
            self.files.append(path)
            self.total += len(m)
            self.digests[digest(m)] += 1
        return self


class Check:
    """What verify_* found: ok, a one-line reason, count of messages seen."""

    def __init__(self, ok, why, count):
        self.ok, self.why, self.count = ok, why, count

    def __str__(self):
        return 'ok' if self.ok else 'WRONG: ' + self.why


def maildir_files(path):
    out = []
    for sub in ('new', 'cur'):
        d = os.path.join(path, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in os.listdir(d) if not f.startswith('.')]
    return out


def file_digest(path, piece=1 << 22):
    """digest() of a file of any size, read in pieces."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        data = f.read(piece)
        at = data.find(ANCHOR)
        if at < 0:
            return None
        data = data[at:]
        carry = b''
        while data:
            data = carry + data
            # a CR at the end may be the first half of a CRLF
            carry = b'\r' if data.endswith(b'\r') else b''
            if carry:
                data = data[:-1]
            h.update(data.replace(b'\r\n', b'\n'))
            data = f.read(piece)
        h.update(carry)
    return h.hexdigest()


def verify_digests(found, want):
    """Check comparing Counters of digests (found may hold None: not a
    bench message)."""
    n = sum(found.values())
    if found == want:
        return Check(True, '', n)
    missing = sum((want - found).values())
    extra = sum((found - want).values())
    return Check(False, '%d stored, %d expected: %d missing or different, %d extra or '
                 'different' % (n, sum(want.values()), missing, extra), n)


def header_date(content):
    """The Date: of the bench message in content, as a unix time."""
    import email.utils
    at = content.find(ANCHOR)
    d = content.find(b'\nDate: ', at)
    end = content.find(b'\n', d + 1)
    return int(email.utils.parsedate_to_datetime(
        content[d + 7:end].strip().decode('ascii')).timestamp())


def verify_files(paths, want, dates=False):
    """Check of the files at paths against the digests want; dates: also
    each file's mtime must be its message's Date: (a Maildir's
    INTERNALDATE, as Dovecot keeps it)."""
    found = collections.Counter()
    bad_dates = 0
    for p in paths:
        with open(p, 'rb') as f:
            content = f.read()
        d = digest(content)
        found[d] += 1
        if dates and d is not None and int(os.stat(p).st_mtime) != header_date(content):
            bad_dates += 1
    c = verify_digests(found, want)
    if c.ok and bad_dates:
        return Check(False, '%d messages without their Date: as INTERNALDATE' % bad_dates,
                     c.count)
    return c


def verify_maildir(path, corpus_or_digests, folders=('',), dates=False):
    """Every message of the corpus exactly once in the Maildir at path
    (new/ and cur/ of each Maildir++ folder named)."""
    want = getattr(corpus_or_digests, 'digests', corpus_or_digests)
    paths = []
    for f in folders:
        paths += maildir_files(os.path.join(path, f) if f else path)
    return verify_files(paths, want, dates)


def big_message(path, size, uid=None, gid=None):
    """Writes one text message of exactly size bytes to path in 1 MB
    pieces; returns its digest (as digest() computes it)."""
    head = ('Message-ID: <bench.big.%d@pop3bridge.test>\r\nDate: %s\r\n'
            'From: Sender <sender@example.org>\r\nTo: Alice <alice@example.net>\r\n'
            'Subject: One message of %d bytes\r\nMIME-Version: 1.0\r\n'
            'Content-Type: text/plain; charset=us-ascii\r\n\r\n'
            % (size, _date(BASE_DATE), size)).encode()
    rnd = random.Random('bench-big')
    h = hashlib.sha256()
    left = size - len(head)
    # 8 different 1 MB runs of whole lines, each piece led by its number so
    # that no two pieces are the same: a store that dropped or repeated a
    # piece cannot keep the digest
    tails = [_text(rnd, (1 << 20) - 13) for _ in range(8)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, head)
        h.update(head.replace(b'\r\n', b'\n'))
        k = 0
        while left > 0:
            if left >= 1 << 20:
                piece = b'%012d ' % k + tails[k % len(tails)]
            elif left > 15:
                piece = b'%012d ' % k + _text(rnd, left - 13)
            else:
                piece = _text(rnd, max(left, 2))
            os.write(fd, piece)
            h.update(piece.replace(b'\r\n', b'\n'))
            left -= len(piece)
            k += 1
        if uid is not None:
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    os.utime(path, (BASE_DATE, BASE_DATE))
    return h.hexdigest()
