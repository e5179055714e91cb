"""Scenario 3: the nothing-new poll of a big mailbox, over POP3S, at 10,000
and 100,000 messages already imported (growth shows in the difference).

Seeding: small messages (1-3 KB) written straight into the source's
Maildir. "Already imported": pop3bridge imports the whole mailbox once
(timed: the big-mailbox import figure, and checked by digest); mpop's UIDL
file is written directly in its own format with the server's UIDLs (mpop
fetching 100,000 messages would take minutes and measure nothing new).
Then each tool polls --poll-repeat times, interleaved (pop3bridge, mpop,
minimal client, pop3bridge, ...), and the median of each is shown: wall,
client CPU (user + sys), peak RSS. Checked: every poll exits 0 and stores
nothing."""

import statistics

import harness as h
from p3bench import corpus, tools
from p3bench.creds import PASSWORD
from p3bench.report import Section, SummaryRow, Table, last_line, mb, ratio, secs


def median(results, key):
    return statistics.median(getattr(r, key) for r in results)


def interleaved_polls(b, s, n, repeat, p3b, mp, ref, timeout=None):
    """repeat rounds of one nothing-new poll each by pop3bridge, mpop and
    the minimal client (argv ref) of a mailbox of n messages, in turn:
    {'pop3bridge' | 'mpop' | 'ref': [results]}. A poll that fails, stores
    anything, or (the client) does not list n UIDLs marks its tool wrong
    in section s."""
    runs = {'pop3bridge': [], 'mpop': [], 'ref': []}
    for k in range(repeat):
        for name, argv, md in (('pop3bridge', p3b.argv(), p3b.maildir),
                               ('mpop', mp.argv(), mp.maildir), ('ref', ref, None)):
            before = len(corpus.maildir_files(md)) if md else 0
            r = b.measure('%s poll of %d (%d)' % (name, n, k + 1), argv,
                          **({'timeout': timeout} if timeout else {}))
            stored = (len(corpus.maildir_files(md)) - before) if md else 0
            if r.rc != 0 or stored:
                s.fail(name, '%s poll of %d: exit %d, stored %d: %s' % (
                    name, n, r.rc, stored, last_line(r.err)))
            if name == 'ref' and '"uidls": %d' % n not in r.out:
                s.fail('ref', 'minimal client: %s' % r.out.strip())
            runs[name].append(r)
    return runs


def run(b):
    s = Section('poll', '3. Nothing-new poll, POP3S')
    src = b.source()
    t = Table('a poll that finds nothing new (median of %d, interleaved)' % b.args.poll_repeat,
              ['mailbox', 'tool', 'wall s', 'client CPU s', 'peak RSS MB', 'wall vs mpop',
               'correct'])
    imp = Table('the first import of the same mailboxes (pop3bridge, POP3S, small messages)',
                ['mailbox', 'seconds', 'msgs/s', 'client CPU s', 'peak RSS MB', 'stored exactly'])
    figures = {}
    for n in b.args.poll:
        user = 'p%d' % n
        c = b.small(n, user)
        p3b = tools.Pop3bridge(b.workdir('poll-p3b-%s' % user), src, user, 'implicit')
        r = b.measure('pop3bridge first import of %d' % n, p3b.argv(), timeout=3600)
        chk = corpus.verify_maildir(p3b.maildir, c)
        if r.rc != 0:
            chk = corpus.Check(False, 'exit %d: %s' % (r.rc, last_line(r.err)), chk.count)
        if not chk.ok:
            s.fail('pop3bridge', 'pop3bridge import of %d: %s' % (n, chk.why))
        imp.row('%d' % n, secs(r.wall), '%.0f' % (n / r.wall), secs(r.cpu), mb(r.maxrss), chk)
        mp = tools.Mpop(b.workdir('poll-mpop-%s' % user), src, user, 'implicit')
        mp.adopt(h.pop3_uidls(src, user, PASSWORD))
        ref = b.ref('ref_pop3.py', 'poll', src.ports['pop3s'], user, '--tls', src.ca_file)
        runs = interleaved_polls(b, s, n, b.args.poll_repeat, p3b, mp, ref)
        mpop_wall = median(runs['mpop'], 'wall')
        for name, label in (('pop3bridge', 'pop3bridge'), ('mpop', 'mpop'),
                            ('ref', 'minimal client: login + UIDL + QUIT')):
            rs = runs[name]
            w = median(rs, 'wall')
            t.row('%d' % n, label, secs(w), secs(median(rs, 'cpu')), mb(median(rs, 'maxrss')),
                  ratio(w / mpop_wall), 'ok' if s.ok(name) else 'WRONG')
            figures[(n, name)] = (w, median(rs, 'cpu'), median(rs, 'maxrss'))
        b.discard(p3b.work)
        b.discard(mp.work)
    t.note('mpop\'s UIDL file was written from the server\'s UIDL list, not by a first mpop run')
    s.tables += [t, imp]
    big = max(b.args.poll)
    if (big, 'pop3bridge') in figures:
        w, cpu, rss = figures[(big, 'pop3bridge')]
        mw, mcpu, mrss = figures[(big, 'mpop')]
        rw = figures[(big, 'ref')][0]
        small = min(b.args.poll)
        growth = (rss - figures[(small, 'pop3bridge')][2]) / 1024.0 if small != big else None
        s.summary.append(SummaryRow(
            'nothing-new poll, %d msgs' % big,
            '%s s, %s CPU s, %s MB%s' % (secs(w), secs(cpu), mb(rss),
                                         ' (+%.1f MB from %d)' % (growth, small)
                                         if growth is not None else ''),
            'mpop %s s, %s CPU s, %s MB; login+UIDL+QUIT %s s' % (secs(mw), secs(mcpu), mb(mrss),
                                                                   secs(rw)),
            'wall/mpop %s' % ratio(w / mw),
            'wall \u2264 mpop, CPU \u2264 0.2 s, RSS \u2264 16 MB, growth \u2264 4 MB',
            s.ok('pop3bridge', 'mpop') and w <= mw and cpu <= 0.2 and rss <= 16 * 1024 and
            (growth is None or growth <= 4)))
    return s
