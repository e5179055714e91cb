"""Scenario 2: POP3 -> Maildir, plain and POP3S, the mixed corpus.
pop3bridge and mpop each import it into a fresh Maildir, and run again
(nothing new). fetchmail and getmail6 take minutes for the whole corpus:
they run on a --slow-messages part of it over POP3S, beside pop3bridge and
mpop on the same part (unless --slow-messages is the corpus size). The limits, in the same run:
  - the disk floor: floor_writer.c writes the same messages as files
    (tmp/ -> new/) with no fsync, and with one syncfs per 500 files
    (pop3bridge's own durability scheme); with --fsync-floor also with an
    fsync per file (what mpop does: minutes on a disk with slow flushes);
  - the network floor: ref_pop3.py stream (login, UIDL, pipelined RETRs
    to /dev/null), plain and POP3S.
Checked: every tool's Maildir holds exactly the corpus (digests)."""

import json
import shutil

from p3bench import corpus, tools
from p3bench.report import Section, SummaryRow, Table, last_line, mb, ratio, secs

SLOW = ('fetchmail', 'getmail6')


def needs(a):
    return [t for t in a.tools if tools.IMPORTERS[t].binary and
            not shutil.which(tools.IMPORTERS[t].binary)]


def _floors(b, s, c, t):
    files = b.file_list('maildir-files', c.files)
    out = {}
    modes = [('none', 'floor: write the files, no fsync'),
             ('syncfs', 'floor: write, one syncfs per %d files' % b.args.batch)]
    if b.args.fsync_floor:
        modes.append(('fsync', 'floor: write, fsync each file'))
    for mode, label in modes:
        work = b.workdir('floor-' + mode)
        md = tools.new_maildir(work + '/Maildir')
        r = b.measure(label, [b.floor_writer, mode, md, files, str(b.args.batch)])
        res = json.loads(r.out) if r.rc == 0 else {'seconds': r.wall}
        chk = corpus.verify_maildir(md, c)
        if r.rc != 0:
            chk = corpus.Check(False, 'exit %d: %s' % (r.rc, last_line(r.err)), chk.count)
        if not chk.ok:
            s.fail('floor', '%s: %s' % (label, chk.why))
        out[mode] = res['seconds']
        t.row(label, '-', secs(res['seconds']), '-', '-', '-', '-', chk)
        b.discard(work)
    t.note('floor seconds: the writing only (floor_writer.c loads the messages first)')
    return out


def _import(b, s, c, src, user, name, tls, tls_name):
    """One tool's import of c (seeded as user) and its second run:
    (first Result, second Result, Check)."""
    work = b.workdir('%s-%s-%s' % (name, user, tls))
    tool = tools.IMPORTERS[name](work, src, user, tls)
    r = b.measure('%s, %s, %s' % (name, tls_name, user), tool.argv(), timeout=1800)
    chk = corpus.verify_maildir(tool.maildir, c)
    if r.rc != 0:
        chk = corpus.Check(False, 'exit %d: %s' % (r.rc, last_line(r.err)), chk.count)
    if not chk.ok:
        s.fail(name, '%s %s: %s' % (name, tls_name, chk.why))
    again = b.measure('%s, %s, again (nothing new)' % (name, tls_name), tool.argv())
    n_after = len(corpus.maildir_files(tool.maildir))
    if n_after != chk.count:
        s.fail(name, '%s %s: the second run stored %d more' % (
            name, tls_name, n_after - chk.count))
    b.discard(work)
    return r, again, chk


def run(b):
    s = Section('maildir', '2. POP3 \u2192 Maildir (%d mixed messages)' % b.args.messages)
    c = b.mixed()
    src = b.source()
    t = Table('%d messages, %.1f MB, into a fresh Maildir each' % (c.n, c.total / 1e6),
              ['tool', 'source', 'seconds', 'client CPU s', 'peak RSS MB',
               '\u00d7 pop3bridge time', 'second run s', 'stored exactly'])
    floor = _floors(b, s, c, t)
    times = {}
    fast = [x for x in b.args.tools if x not in SLOW]
    slow = [x for x in b.args.tools if x in SLOW]
    for tls, tls_name in (('none', 'POP3'), ('implicit', 'POP3S')):
        r = b.measure('minimal POP3 client, %s' % tls_name,
                      b.ref('ref_pop3.py', 'stream', src.ports['pop3s' if tls == 'implicit'
                                                              else 'pop3'], 'mix',
                            *(['--tls', src.ca_file] if tls == 'implicit' else [])))
        ok = r.rc == 0 and '"messages": %d,' % c.n in r.out
        if not ok:
            s.fail('stream', 'minimal POP3 client %s: %s' % (tls_name, r.out.strip() or
                                                           last_line(r.err)))
        times[('stream', tls)] = r.wall
        t.row('minimal POP3 client (RETRs to /dev/null)', tls_name, secs(r.wall), secs(r.cpu),
              mb(r.maxrss), '-', '-', 'ok' if ok else 'WRONG')
        rows = []
        for name in fast + (slow if b.args.slow_messages >= c.n else []):
            r, again, chk = _import(b, s, c, src, 'mix', name, tls, tls_name)
            times[(name, tls)] = r.wall
            rows.append((name, r, again, chk))
        base = times.get(('pop3bridge', tls))
        for name, r, again, chk in rows:
            t.row(name, tls_name, secs(r.wall), secs(r.cpu), mb(r.maxrss),
                  ratio(r.wall / base) if base else '-', secs(again.wall), chk)
    t.note('\u00d7 pop3bridge time: how many times longer than pop3bridge the same import took '
           '(mpop/pop3bridge is the ratio issue 9 wants \u2265 2.0)')
    t.note('client CPU: user + system of the importer (and its children, e.g. safecat)')
    s.tables.append(t)
    if slow and b.args.slow_messages < c.n:
        s.tables.append(_slow_tools(b, s, src, fast, slow))
    for tls, tls_name in (('none', 'plain'), ('implicit', 'POP3S')):
        p3b, mp = times.get(('pop3bridge', tls)), times.get(('mpop', tls))
        if p3b is None:
            continue
        s.summary.append(SummaryRow(
            'POP3 \u2192 Maildir, %s, %d mixed msgs' % (tls_name, c.n), '%s s' % secs(p3b),
            'mpop %s s; no-fsync floor %s s; syncfs floor %s s; POP3 client %s s' % (
                secs(mp), secs(floor['none']), secs(floor['syncfs']),
                secs(times[('stream', tls)])),
            'mpop/p3b %s; p3b/floor %s' % (ratio(mp / p3b) if mp else '-',
                                           ratio(p3b / floor['none'])),
            '\u2265 2.0\u00d7 mpop, \u2264 1.25\u00d7 floor',
            s.ok('pop3bridge', 'mpop', 'floor') and mp is not None and mp / p3b >= 2.0 and p3b / floor['none'] <= 1.25))
    return s


def _slow_tools(b, s, src, fast, slow):
    """fetchmail and getmail6 take minutes on the whole corpus: they run on
    the first part of it (same generator, --slow-messages), over POP3S,
    beside pop3bridge and mpop on the same part."""
    c = b.part(b.args.slow_messages, 'slice')
    t = Table('fetchmail and getmail6: a %d-message mixed mailbox (%.1f MB), POP3S' % (
        c.n, c.total / 1e6), ['tool', 'seconds', 'msgs/s', 'client CPU s', 'peak RSS MB',
                              '\u00d7 pop3bridge time', 'second run s', 'stored exactly'])
    rows = []
    for name in fast + slow:
        r, again, chk = _import(b, s, c, src, 'slice', name, 'implicit', 'POP3S')
        rows.append((name, r, again, chk))
    base = next((r.wall for n, r, a, ch in rows if n == 'pop3bridge'), None)
    for name, r, again, chk in rows:
        t.row(name, secs(r.wall), '%.0f' % (c.n / r.wall), secs(r.cpu), mb(r.maxrss),
              ratio(r.wall / base) if base else '-', secs(again.wall), chk)
    t.note('fetchmail delivers through safecat (one process per message); getmail6 is Python')
    return t
