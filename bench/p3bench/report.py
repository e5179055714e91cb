"""The bench's output: Markdown tables (pasteable into the README) and the
facts about the machine a run was made on.

    t = Table('title', ['tool', 'seconds', ...]); t.row(...); t.note('...')
    print(t.markdown())
    s = Section('imap', '1. POP3S -> IMAP store'): s.tables, s.summary
        (SummaryRow), s.notes, s.seconds (wall time of the scenario),
        s.fail(who, why) / s.ok(*who): correctness failures by tool
    machine(scratch_kind) -> Markdown lines: date, nproc, CPU, memory,
        kernel, load, the pop3bridge commit
    fmt helpers: secs(), rate(), ratio(), mb()"""

import datetime
import os
import platform
import subprocess

import harness as h
from p3bench import REPO


def secs(x):
    return '-' if x is None else '%.2f' % x


def rate(x):
    return '-' if x is None else ('%.0f' % x if x >= 100 else '%.1f' % x)


def ratio(x):
    return '-' if x is None else '%.2f\u00d7' % x


def mb(kb):
    return '-' if kb is None else '%.1f' % (kb / 1024.0)


def last_line(text):
    """The last non-empty line of a program's output (for a short reason)."""
    lines = [l.strip() for l in (text or '').splitlines() if l.strip()]
    return lines[-1][:200] if lines else ''


class Table:
    def __init__(self, title, columns):
        self.title, self.columns = title, columns
        self.rows, self.notes = [], []

    def row(self, *cells):
        self.rows.append([str(c) for c in cells])

    def note(self, text):
        self.notes.append(text)

    def markdown(self):
        out = ['**%s**' % self.title, '', '| ' + ' | '.join(self.columns) + ' |',
               '|' + '|'.join('---' for _ in self.columns) + '|']
        out += ['| ' + ' | '.join(r) + ' |' for r in self.rows]
        if self.notes:
            out.append('')
            out += ['- ' + n for n in self.notes]
        return '\n'.join(out)


class SummaryRow:
    """One line of the final table: what pop3bridge did, the reference it is
    compared with, their ratio, the issue's target and whether it is met."""

    def __init__(self, path, p3b, ref, ratio_text, target, met):
        self.path, self.p3b, self.ref, self.ratio, self.target = path, p3b, ref, ratio_text, target
        self.met = met          # True, False or None (no target / not measured)


class Section:
    def __init__(self, key, title):
        self.key, self.title = key, title
        self.tables, self.summary, self.notes = [], [], []
        self.seconds = None
        self.wrong = []         # correctness failures: those figures are void
        self.bad = set()        # who failed: "pop3bridge" or a reference's name

    def fail(self, who, text):
        """Records that who (pop3bridge, or a reference) did not store or
        answer exactly what it should have: its figures are void."""
        self.wrong.append(text)
        self.bad.add(who)

    def ok(self, *who):
        """True when none of who failed (a summary row compares them)."""
        return not self.bad.intersection(who)

    def markdown(self):
        out = ['### ' + self.title, '']
        for t in self.tables:
            out += [t.markdown(), '']
        if self.notes:
            out += ['- ' + n for n in self.notes] + ['']
        if self.wrong:
            out += ['**WRONG RESULTS (figures void):** ' + '; '.join(self.wrong), '']
        return '\n'.join(out)


def summary_table(sections):
    t = Table('Summary', ['path', 'pop3bridge', 'reference (same run)', 'ratio',
                          'issue 9 target', 'met'])
    for s in sections:
        for r in s.summary:
            t.row(r.path, r.p3b, r.ref, r.ratio, r.target,
                  {True: 'yes', False: '**no**', None: '-'}[r.met])
    return t


def _commit():
    def git(*a):
        return subprocess.run(['git', '-C', REPO] + list(a), capture_output=True,
                              text=True).stdout.strip()
    code = ('bridge', 'store', 'conf', 'Makefile')
    rev = git('rev-parse', '--short=12', 'HEAD') or 'unknown'
    dirty = git('status', '--porcelain', '--untracked-files=no', '--', *code)
    last = git('log', '-1', '--format=%h %s', '--', *code)
    return rev + (' + uncommitted changes' if dirty else ''), last


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def machine(scratch_kind):
    rev, subject = _commit()
    with open('/proc/meminfo') as f:
        mem = int(f.readline().split()[1]) // 1024
    return [
        '- date: %s' % datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        '- machine: `nproc` = %d, %s, %d MB RAM, Linux %s' % (os.cpu_count(), cpu_model(), mem,
                                                              platform.release()),
        '- pop3bridge: tree at %s, last change to its code: %s; binary %s' % (
            rev, subject, h.bridge_binary()),
        '- files: %s' % scratch_kind,
        '- load average at start: %s' % ' '.join(open('/proc/loadavg').read().split()[:3]),
    ]
