"""Scenario crash (not in the default set: fetchmail and getmail6 make it
slow): each Maildir tool imports a --crash-message mixed mailbox over
POP3S, is SIGKILLed (its whole process group) once half of it is stored,
and is then run again until it reports nothing more. Counted: messages
stored twice, and whether every message arrived (digests)."""

import collections
import os
import signal
import subprocess
import time

from p3bench import corpus, servers, tools
from p3bench.report import Section, SummaryRow, Table


def needs(a):
    from p3bench import scen_maildir
    return scen_maildir.needs(a)


def _crash_once(b, tool, total):
    t0 = time.monotonic()
    p = subprocess.Popen(tool.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    while p.poll() is None and len(corpus.maildir_files(tool.maildir)) < total // 2:
        time.sleep(0.005)
    killed_at = len(corpus.maildir_files(tool.maildir))
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    b.log('%-12s killed after %.1f s' % (tool.name, time.monotonic() - t0))
    for k in range(5):
        t0 = time.monotonic()
        r = subprocess.run(tool.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=600)
        b.log('%-12s run %d: exit %d in %.1f s, %d stored %s' % (
            tool.name, k + 1, r.returncode, time.monotonic() - t0,
            len(corpus.maildir_files(tool.maildir)), r.stderr.decode(errors='replace')[-200:]))
        if len(corpus.maildir_files(tool.maildir)) >= total:
            break
    return killed_at


def run(b):
    n = b.args.crash
    s = Section('crash', 'Crash: SIGKILL half-way through a %d-message import (POP3S)' % n)
    src = b.source()
    c = corpus.Corpus.mixed(n, b.args.megabytes * 1e6 * n / b.args.messages)
    servers.seed_user(src, 'crash', c)
    t = Table('killed once when half the mailbox was stored, then run to completion',
              ['tool', 'stored when killed', 'stored in the end', 'stored twice', 'missing'])
    for name in b.args.tools:
        work = b.workdir('crash-' + name)
        tool = tools.IMPORTERS[name](work, src, 'crash', 'implicit')
        killed_at = _crash_once(b, tool, n)
        found = collections.Counter()
        for f in corpus.maildir_files(tool.maildir):
            with open(f, 'rb') as fh:
                found[corpus.digest(fh.read())] += 1
        twice = sum(v - 1 for v in found.values() if v > 1)
        missing = sum((c.digests - found).values())
        b.log('%-12s killed at %d, %d stored, %d twice, %d missing' % (
            name, killed_at, sum(found.values()), twice, missing))
        t.row(name, killed_at, sum(found.values()), twice, missing)
        if name == 'pop3bridge':
            s.summary.append(SummaryRow('SIGKILL half-way, %d msgs' % n,
                                        '%d twice, %d missing' % (twice, missing), '-', '-',
                                        'exactly once', twice == 0 and missing == 0))
            if twice or missing:
                s.fail('pop3bridge', 'pop3bridge: %d stored twice, %d missing' % (twice, missing))
        b.discard(work)
    s.tables.append(t)
    return s
