"""Scenario 3b (not in the default set): the nothing-new poll of a mailbox
of --million messages (issue 9: 1,000,000), over POP3S, against the real
Dovecot source (its Maildir on tmpfs). About 6 minutes on 2 shared cores:
seeding 10^6 files and Dovecot's first index of them take most of it.

"Already imported": pop3bridge's state is filled with
`pop3bridge import-state --from mpop` of an mpop UIDL file written from
the server's UIDL list (importing 10^6 messages would take many minutes
and measure nothing new); mpop gets the same file. Then each tool polls
--million-repeat times, interleaved, and the median is shown: wall,
client CPU, peak RSS. Checked: every poll exits 0 and stores nothing."""

import os
import poplib
import time

import harness as h
from p3bench import corpus, measure, tools
from p3bench.creds import PASSWORD
from p3bench.scen_poll import interleaved_polls, median
from p3bench.report import Section, SummaryRow, Table, last_line, mb, ratio, secs

MSG_BYTES = 600     # small messages: 10^6 of them fit the source tmpfs


def _uidls(src, user):
    """The server's UIDLs; the first UIDL of a fresh Maildir of 10^6 files
    keeps Dovecot silent while it indexes them (minutes, not the 30 s the
    test clients wait)."""
    p = poplib.POP3('127.0.0.1', src.ports['pop3'], timeout=1800)
    try:
        p.user(user)
        p.pass_(PASSWORD)
        return [l.split(None, 1)[1].decode('ascii') for l in p.uidl()[1]]
    finally:
        p.quit()


def run(b):
    n = b.args.million
    s = Section('million', '3b. Nothing-new poll of %d messages, POP3S' % n)
    src = b.source()
    user = 'million%d' % n
    t0 = time.monotonic()
    md = h.make_maildir(src.maildir(user))
    uid, gid = h.mail_ids()
    c = corpus.Corpus([MSG_BYTES] * n, user).seed(md, uid if os.geteuid() == 0 else None, gid)
    b.log('%s: %d messages (%.0f MB) seeded in %.0f s' % (user, n, c.total / 1e6,
                                                         time.monotonic() - t0))
    t0 = time.monotonic()
    uidls = _uidls(src, user)
    b.log('%s: Dovecot indexed them and listed %d UIDLs in %.0f s' % (
        user, len(uidls), time.monotonic() - t0))
    if len(uidls) != n:
        s.fail('pop3bridge', 'the server lists %d UIDLs, not %d' % (len(uidls), n))
        return s
    p3b = tools.Pop3bridge(b.workdir('million-p3b'), src, user, 'implicit')
    mp = tools.Mpop(b.workdir('million-mpop'), src, user, 'implicit')
    mp.adopt(uidls)
    del uidls
    r = b.measure('pop3bridge import-state of %d UIDLs' % n,
                  measure.as_user([h.bridge_binary(), '-q', '-c', p3b.conf, 'import-state',
                                   '--from', 'mpop', mp.uidls, 'bench'], p3b.work),
                  timeout=1800)
    if r.rc != 0:
        s.fail('pop3bridge', 'import-state: exit %d: %s' % (r.rc, last_line(r.err)))
        return s
    prep = Table('the known state', ['what', 'seconds', 'client CPU s', 'peak RSS MB'])
    prep.row('pop3bridge import-state --from mpop (%d UIDLs)' % n, secs(r.wall), secs(r.cpu),
             mb(r.maxrss))
    ref = b.ref('ref_pop3.py', 'poll', src.ports['pop3s'], user, '--tls', src.ca_file)
    runs = interleaved_polls(b, s, n, b.args.million_repeat, p3b, mp, ref, timeout=1800)
    t = Table('a poll that finds nothing new in %d messages (median of %d, interleaved)'
              % (n, b.args.million_repeat),
              ['tool', 'wall s', 'client CPU s', 'peak RSS MB', 'wall vs mpop', 'correct'])
    mw = median(runs['mpop'], 'wall')
    fig = {}
    for name, label in (('pop3bridge', 'pop3bridge'), ('mpop', 'mpop'),
                        ('ref', 'minimal client: login + UIDL + QUIT')):
        rs = runs[name]
        fig[name] = (median(rs, 'wall'), median(rs, 'cpu'), median(rs, 'maxrss'))
        t.row(label, secs(fig[name][0]), secs(fig[name][1]), mb(fig[name][2]),
              ratio(fig[name][0] / mw), 'ok' if s.ok(name) else 'WRONG')
    t.note('source: the real Dovecot (Maildir on tmpfs), %d messages of %d bytes; the '
           'state and mpop\'s UIDL file were written from its UIDL list' % (n, MSG_BYTES))
    s.tables += [t, prep]
    w, cpu, rss = fig['pop3bridge']
    s.summary.append(SummaryRow(
        'nothing-new poll, %d msgs' % n,
        '%s s, %s CPU s, %s MB' % (secs(w), secs(cpu), mb(rss)),
        'mpop %s s, %s CPU s, %s MB; login+UIDL+QUIT %s s' % (
            secs(mw), secs(fig['mpop'][1]), mb(fig['mpop'][2]), secs(fig['ref'][0])),
        'wall/mpop %s' % ratio(w / mw), 'RSS < 32 MB',
        s.ok('pop3bridge') and rss < 32 * 1024))
    b.discard(p3b.work)
    b.discard(mp.work)
    # the source's 10^6 files are not needed by any later scenario
    b.discard(os.path.dirname(src.maildir(user)))
    return s
