"""Scenario 1: POP3S -> IMAP store. pop3bridge imports a mixed corpus
(--imap-messages of the main corpus's mean size: every message costs the
store an fsync, so the full corpus takes minutes per client) from the
source over POP3S and APPENDs it over IMAPS (master login) into a
local Dovecot; against it, on the same Dovecot, into fresh mailboxes, the
two minimal clients of ref_imap.py APPEND the same messages (read from the
source's files: no POP3 in their way, so they are the limit of the store
side): one APPEND per message, and MULTIAPPEND + LITERAL+ 500 per command.
Checked: every message once in each mailbox (digests) with its Date: as
INTERNALDATE."""

import os

from p3bench import corpus, servers, tools
from p3bench.report import Section, SummaryRow, Table, last_line, mb, rate, ratio, secs

USERS = ('multi', 'p3b', 'single')


def run(b):
    s = Section('imap', '1. POP3S \u2192 IMAP store (APPEND over IMAPS into a local Dovecot)')
    if b.args.imap_messages >= b.args.messages:
        c, user = b.mixed(), 'mix'
    else:
        c, user = b.part(b.args.imap_messages, 'imap'), 'imap'
    src = b.source()
    work = b.workdir('imap-store')
    st = servers.imap_store(os.path.join(work, 'dovecot'), os.path.join(work, 'mail'), USERS)
    try:
        files = b.file_list('imap-files', c.files)
        runs = []
        # the pop3bridge run between the two references, so that a drift of
        # the machine's load shows in them rather than only in the ratio
        for who in USERS:
            if who == 'p3b':
                tool = tools.Pop3bridgeImap(b.workdir('p3b-imap'), src, user, st, 'p3b')
                label = 'pop3bridge (store imap, POP3S source)'
                r = b.measure(label, tool.argv())
            else:
                label = ('minimal client, MULTIAPPEND + LITERAL+, %d per command' % b.args.batch
                         if who == 'multi' else 'minimal client, one APPEND per message')
                r = b.measure(label, b.ref('ref_imap.py', who, st.ports['imaps'], who, files,
                                           '--ca', st.ca_file, '--batch', b.args.batch))
            chk = corpus.verify_maildir(st.maildir(who), c, dates=True)
            if r.rc != 0:
                chk = corpus.Check(False, 'exit %d: %s' % (r.rc, last_line(r.err)), chk.count)
            if not chk.ok:
                s.fail('pop3bridge' if who == 'p3b' else who, '%s: %s' % (label, chk.why))
            runs.append((who, label, r, chk))
    finally:
        st.stop()
    multi = next(r for w, _, r, ch in runs if w == 'multi')
    t = Table('%d messages, %.1f MB, into INBOX of a fresh mailbox each' % (c.n, c.total / 1e6),
              ['client', 'seconds', 'msgs/s', 'MB/s', 'client CPU s', 'peak RSS MB',
               'msgs/s vs MULTIAPPEND client', 'stored exactly'])
    for who, label, r, chk in runs:
        t.row(label, secs(r.wall), rate(c.n / r.wall), rate(c.total / 1e6 / r.wall), secs(r.cpu),
              mb(r.maxrss), ratio(multi.wall / r.wall), chk)
    t.note('the minimal clients read each message from the source\'s files (tmpfs) as they send '
           'it; their CPU time shows whether Python held them back (client CPU << seconds: no)')
    s.tables.append(t)
    p3b = next(r for w, _, r, ch in runs if w == 'p3b')
    single = next(r for w, _, r, ch in runs if w == 'single')
    s.summary.append(SummaryRow(
        'POP3S \u2192 IMAP store, %d mixed msgs' % c.n,
        '%s msgs/s (%s s)' % (rate(c.n / p3b.wall), secs(p3b.wall)),
        'MULTIAPPEND client %s msgs/s; one APPEND each %s msgs/s' % (
            rate(c.n / multi.wall), rate(c.n / single.wall)),
        ratio(multi.wall / p3b.wall) + ' of MULTIAPPEND',
        '\u2265 800 msgs/s and \u2265 0.75\u00d7',
        s.ok('pop3bridge', 'multi') and c.n / p3b.wall >= 800 and multi.wall / p3b.wall >= 0.75))
    b.discard(work)
    return s
