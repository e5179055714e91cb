"""Scenario 4: memory while importing one very large message (--big-mb,
default 2 GiB) from POP3S into Maildir. The message is generated straight
into the source's Maildir in 1 MB pieces (never held in memory) and
checked after the import by a streamed digest of the stored file.
Reported: wall, throughput, CPU, the peak RSS of the largest pop3bridge
process (GNU time) and the peak sum over its processes (sampled from
/proc every 0.1 s)."""

import os

import harness as h
from p3bench import corpus, measure, servers, tools
from p3bench.report import Section, SummaryRow, Table, last_line, mb, secs


def run(b):
    s = Section('memory', '4. Memory: one %d MiB message, POP3S \u2192 Maildir' % b.args.big_mb)
    src = b.source()
    size = b.args.big_mb << 20
    md = h.make_maildir(src.maildir('big'))
    name = '%d.M1P%d.bench-big,S=%d,W=%d:2,' % (corpus.BASE_DATE, os.getpid(), size, size)
    path = os.path.join(md, 'cur', name)
    uid, gid = h.mail_ids()
    want = corpus.big_message(path, size, uid if os.geteuid() == 0 else None, gid)
    servers.warm(src, 'big')
    tool = tools.Pop3bridge(b.workdir('big-p3b'), src, 'big', 'implicit')
    mem = []

    def watch(pid):
        mem.append(measure.TreeMemory(pid, include_root=False).start())
    r = b.measure('pop3bridge import of one %d MiB message' % b.args.big_mb, tool.argv(),
                  timeout=3600, on_start=watch)
    m = mem[0].stop()
    stored = corpus.maildir_files(tool.maildir)
    if r.rc != 0:
        chk = corpus.Check(False, 'exit %d: %s' % (r.rc, last_line(r.err)), len(stored))
    elif len(stored) != 1:
        chk = corpus.Check(False, '%d files stored' % len(stored), len(stored))
    elif corpus.file_digest(stored[0]) != want:
        chk = corpus.Check(False, 'the stored message differs', 1)
    else:
        chk = corpus.Check(True, '', 1)
    if not chk.ok:
        s.fail('pop3bridge', chk.why)
    t = Table('one message of %d bytes' % size,
              ['tool', 'seconds', 'MB/s', 'client CPU s', 'peak RSS MB (largest process)',
               'peak RSS MB (all its processes)', 'stored exactly'])
    t.row('pop3bridge', secs(r.wall), '%.0f' % (size / 1e6 / r.wall), secs(r.cpu), mb(r.maxrss),
          mb(m.peak_rss_sum), chk)
    s.tables.append(t)
    s.summary.append(SummaryRow('one %d MiB message \u2192 Maildir' % b.args.big_mb,
                                '%s MB peak RSS, %s s' % (mb(r.maxrss), secs(r.wall)), '-', '-',
                                'RSS < 32 MB', chk.ok and r.maxrss < 32 * 1024))
    os.unlink(path)
    b.discard(tool.work)
    return s
