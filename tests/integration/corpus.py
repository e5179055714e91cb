"""The messages of the integration tests (standard library only): a
deterministic corpus generator, and the forms in which a message is
compared after it went through a Maildir, POP3 or IMAP.

    make_message(i, ...), make_corpus(n, seed), big_message(mb)
    BASE_DATE                           the Date of message 0
    canonical(b), pop3_view(b), imap_view(b), body_hash(b)
    header(body, name)                  a header, decoded to str
"""

import base64
import email.header
import email.utils
import hashlib
import random
import re


BASE_DATE = 1700000000  # Tue, 14 Nov 2023 22:13:20 +0000

_WORDS = ('mail bridge import message server client folder header body pop imap '
          'legacy provider delivery exactly once maildir dovecot test sample lorem '
          'ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor').split()


def _text_lines(rnd, nbytes, eol=b'\r\n', width=72):
    """Filler text of exactly nbytes, whole lines each ending in eol."""
    out = bytearray()
    while len(out) < nbytes:
        left = nbytes - len(out)
        if left < len(eol):  # no room for another line ending: widen the last line
            pos = max(len(out) - len(eol), 0)
            out[pos:pos] = b'x' * left
            break
        words, n = [], 0
        while n < width:
            w = rnd.choice(_WORDS)
            words.append(w)
            n += len(w) + 1
        out += ' '.join(words).encode()[:left - len(eol)] + eol
    return bytes(out)


def _fmt_date(ts):
    return email.utils.formatdate(ts, localtime=False).replace('-0000', '+0000')


def make_message(i, size=None, subject=None, extra_headers=None, body=None,
                 sender=None, to=None, date=None, message_id=None, tag='m', eol=b'\r\n'):
    """An RFC 5322 message (bytes, eol line endings) numbered i.

    size: total size in bytes (exact when body is None; filler text added).
    subject: str (raw UTF-8 when non-ASCII; pass an RFC 2047 string to encode).
    extra_headers: list of (name, value) or raw header lines (str/bytes).
    body: bytes, used as is (not converted to eol).
    date: unix time (default BASE_DATE + i*60).
    message_id: default "<TAG.I.HASH@pop3bridge.test>" where HASH depends on
    every other argument, so different messages get different ids and the
    same arguments give the same message."""
    date = BASE_DATE + i * 60 if date is None else date
    sender = sender or 'Sender %d <sender%d@example.org>' % (i % 5, i % 5)
    to = to or 'Alice <alice@example.net>'
    subject = 'Test message %d' % i if subject is None else subject
    hdrs = [('From', sender), ('To', to), ('Subject', subject), ('Date', _fmt_date(date))]
    raw_extra = []
    for h in extra_headers or ():
        if isinstance(h, tuple):
            hdrs.append(h)
        else:
            raw_extra.append(h.encode('utf-8') if isinstance(h, str) else h)
    if body is None:
        hdrs.append(('MIME-Version', '1.0'))
        hdrs.append(('Content-Type', 'text/plain; charset=us-ascii'))

    def build(mid, body):
        head = b''.join(('%s: %s' % (k, v)).encode('utf-8') + eol
                        for k, v in [('Message-ID', mid)] + hdrs)
        head += b''.join(h.rstrip(b'\r\n') + eol for h in raw_extra)
        return head + eol + body

    key = repr((tag, i, size, subject, hdrs, raw_extra, body, eol)).encode('utf-8', 'replace')
    mid = message_id or '<%s.%d.%s@pop3bridge.test>' % (tag, i, hashlib.sha256(key).hexdigest()[:12])
    if body is None:
        rnd = random.Random('%s-%d' % (tag, i))
        head_len = len(build(mid, b''))
        want = max(size - head_len, 0) if size else 200
        body = _text_lines(rnd, want, eol)
    return build(mid, body)


def _multipart(i, rnd, attach_bytes, subject, eol=b'\r\n', tag='m'):
    boundary = '=_p3b_%d_%08x' % (i, rnd.getrandbits(32))
    data = rnd.randbytes(attach_bytes)
    b64 = base64.encodebytes(data).replace(b'\n', eol)
    body = (b'This is a multi-part message in MIME format.' + eol + eol +
            b'--' + boundary.encode() + eol +
            b'Content-Type: text/plain; charset=utf-8' + eol +
            b'Content-Transfer-Encoding: 8bit' + eol + eol +
            'Please find the file attached. Gr\u00fc\u00dfe!'.encode() + eol + eol +
            b'--' + boundary.encode() + eol +
            b'Content-Type: application/octet-stream; name="data%d.bin"' % i + eol +
            b'Content-Transfer-Encoding: base64' + eol +
            b'Content-Disposition: attachment; filename="data%d.bin"' % i + eol + eol +
            b64 +
            b'--' + boundary.encode() + b'--' + eol)
    return make_message(i, subject=subject, body=body, tag=tag, eol=eol, extra_headers=[
        ('MIME-Version', '1.0'),
        ('Content-Type', 'multipart/mixed; boundary="%s"' % boundary)])


def make_corpus(n, seed=0):
    """n varied messages (deterministic for a seed), cycling through kinds:
    plain ASCII 200 B..2 KB; text up to 50 KB; large text up to 200 KB;
    raw 8-bit UTF-8 headers and body; CRLF messages with some bare-LF lines;
    LF-only messages; dot-stuffing bait (lines ".", "..", ".x"); a long
    (4000-byte) line; multipart with a base64 attachment (up to 150 KB).
    Exactly one message (index 5 when n > 5, else the last) has a NUL byte
    in its body. Every message has a unique Message-ID and a Date; sizes
    stay within 200 B..200 KB."""
    rnd = random.Random('corpus-%s' % seed)
    tag = 'c%s' % seed
    out = []
    nul_at = 5 if n > 5 else n - 1
    for i in range(n):
        kind = i % 9
        if i == nul_at:
            body = (b'Before the NUL byte.\r\nA NUL here: [\x00] and after it.\r\n' +
                    _text_lines(rnd, rnd.randint(100, 2000)))
            m = make_message(i, subject='NUL byte in body %d' % i, body=body, tag=tag)
        elif kind == 0:
            m = make_message(i, size=rnd.randint(200, 2048), tag=tag)
        elif kind == 1:
            m = make_message(i, size=rnd.randint(2048, 50 * 1024), tag=tag,
                             subject='Medium text %d' % i)
        elif kind == 2:
            m = make_message(i, size=rnd.randint(50 * 1024, 200 * 1024), tag=tag,
                             subject='Large text %d' % i)
        elif kind == 3:
            body = ('Gr\u00fc\u00dfe aus M\u00fcnchen, \u65e5\u672c\u8a9e\u306e\u30c6\u30ad'
                    '\u30b9\u30c8, \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435'
                    '\u043a\u0441\u0442.\r\n').encode() * rnd.randint(1, 40)
            m = make_message(i, tag=tag, body=body,
                             subject='Gr\u00fc\u00dfe \u2013 \u65e5\u672c\u8a9e %d' % i,
                             sender='J\u00fcrgen M\u00fcller <juergen@example.org>',
                             extra_headers=[('MIME-Version', '1.0'),
                                            ('Content-Type', 'text/plain; charset=utf-8'),
                                            ('Content-Transfer-Encoding', '8bit')])
        elif kind == 4:
            lines = _text_lines(rnd, rnd.randint(500, 8000)).split(b'\r\n')
            body = b''.join(l + (b'\n' if j % 3 == 1 else b'\r\n')
                            for j, l in enumerate(lines[:-1]))
            m = make_message(i, tag=tag, body=body, subject='Some bare LF lines %d' % i)
        elif kind == 5:
            m = make_message(i, size=rnd.randint(200, 20000), tag=tag, eol=b'\n',
                             subject='LF-only message %d' % i)
        elif kind == 6:
            body = (b'Dot-stuffing bait follows.\r\n.\r\n..\r\n.x\r\n...\r\n'
                    b'. leading dot and space\r\n' + _text_lines(rnd, rnd.randint(100, 3000)) +
                    b'.\r\nlast line\r\n')
            m = make_message(i, tag=tag, body=body, subject='Dots %d' % i)
        elif kind == 7:
            body = (b'A long line follows.\r\n' + b'x' * 4000 + b'\r\n' +
                    _text_lines(rnd, rnd.randint(100, 1000)))
            m = make_message(i, tag=tag, body=body, subject='Long line %d' % i)
        else:
            m = _multipart(i, rnd, rnd.randint(1024, 150 * 1024),
                           'Attachment %d' % i, tag=tag)
        out.append(m)
    return out


def big_message(mb=20, i=0, seed=0):
    """A ~mb MB message: a text part and a base64 attachment of random bytes."""
    rnd = random.Random('big-%s-%s' % (seed, i))
    return _multipart(i, rnd, int(mb * 1024 * 1024 * 57 / 78), 'Big attachment %d MB' % mb,
                      tag='big%s' % seed)


# ---------------------------------------------------------------- canonical form

def canonical(body):
    """body with every line ending made CRLF (bare LF -> CRLF, CRLF kept, a
    lone CR kept), so that a message can be compared between a Maildir file
    (LF, or anything), a POP3 RETR (CRLF) and an IMAP FETCH (CRLF).

    What Dovecot 2.3.19 does with a Maildir file (found by trying it; the
    test test_harness.py:test_dovecot_nul_and_bare_lf keeps checking it):
    - POP3 RETR: bare LF is sent as CRLF, CRLF as is, a lone CR as is;
      lines starting with "." are dot-stuffed; a NUL byte is sent as is.
      A message whose last line has no line ending gets CRLF appended before
      the terminating "." -- and that CRLF is NOT counted in the LIST/RETR
      size, so "bytes received" can exceed "LIST size" by 2. LIST/STAT
      sizes are those of canonical(file).
    - IMAP FETCH BODY[]: bare LF is sent as CRLF; a NUL byte is sent as
      0x80 (IMAP literals may not carry NUL); nothing is appended.
    So canonical() only unifies line endings and keeps every other byte,
    NULs included: byte-identical delivery is checked honestly by comparing
    canonical(POP3 RETR) with canonical(the Maildir file pop3bridge wrote)
    (maildir_files()), which must be equal. Over IMAP a NUL cannot be seen;
    compare imap_view(source) with the fetched body. pop3_view(original)
    is what RETR returns for a seeded file."""
    if isinstance(body, str):
        body = body.encode('utf-8')
    return re.sub(rb'\r?\n', b'\r\n', body)


def pop3_view(body):
    """What Dovecot's POP3 RETR returns (after dot-unstuffing) for a Maildir
    file holding body: canonical(body), plus CRLF if it did not end in one."""
    b = canonical(body)
    return b if b.endswith(b'\r\n') or not b else b + b'\r\n'


def body_hash(b):
    """sha256 hex of canonical(b)."""
    return hashlib.sha256(canonical(b)).hexdigest()


def imap_view(body):
    """canonical(body) as Dovecot's IMAP FETCH shows it: NUL -> 0x80. Compare
    body_hash(imap_view(original)) with body_hash(fetched_over_imap)."""
    return canonical(body).replace(b'\x00', b'\x80')


def header(body, name):
    """A header of a message, decoded (RFC 2047 and raw UTF-8) to str; None."""
    head = canonical(body).split(b'\r\n\r\n', 1)[0]
    mm = re.search(rb'(?im)^' + re.escape(name.encode()) + rb':[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)', head)
    if not mm:
        return None
    raw = mm.group(1).replace(b'\r\n', b'').decode('utf-8', 'replace')
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except Exception:
        return raw
