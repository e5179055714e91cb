"""What every scenario of one bench run shares: the options, the scratch
file systems, the POP3 source Dovecot and the corpora seeded into it (each
made once, when a scenario first asks for it), and how a measured command
is run and logged.

    b = Bench(args, scratch)
    b.source()            the POP3/POP3S provider (users: mix, imap, slice, big, crash,
                          pN for each --poll size N)
    b.mixed()             the mixed corpus, seeded as user "mix"
    b.part(n, user)       a smaller one (same mean size), seeded as user
    b.small(n, user)      n small messages seeded as user
    b.workdir(name)       a new empty directory on the destination fs
    b.measure(label, argv, **kw)  flush the page cache's dirty pages, run
                          argv (measure.run), log one line, return Result
    b.ref(script, *args)  argv of a reference client (bench/ref_*.py)
    b.floor_writer        path of the compiled C floor writer
    b.log(text)           one progress line
    b.stop()              stops every server"""

import os
import shutil
import subprocess
import time

import harness as h
from p3bench import BENCH, corpus, measure, servers

PY = '/usr/bin/python3'


class Bench:
    def __init__(self, args, scratch):
        self.args = args
        self.scratch = scratch
        self._source = None
        self._mixed = None
        self._parts = {}
        self._small = {}
        self._n = 0
        self.floor_writer = self._build_floor_writer()

    def log(self, text):
        print('  ' + text, flush=True)

    def _build_floor_writer(self):
        out = os.path.join(self.scratch.root, 'floor_writer')
        cc = os.environ.get('CC', 'cc')
        r = subprocess.run([cc, '-O2', '-Wall', '-Wextra', '-Werror', '-o', out,
                            os.path.join(BENCH, 'floor_writer.c')], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError('building floor_writer.c failed:\n' + r.stderr)
        os.chmod(out, 0o755)
        return out

    def source(self):
        if self._source is None:
            t0 = time.monotonic()
            self._source = servers.source(os.path.join(self.scratch.src, 'dovecot'),
                                          os.path.join(self.scratch.src, 'mail'),
                                          ['mix', 'imap', 'slice', 'big', 'crash'] +
                                          ['p%d' % n for n in self.args.poll] +
                                          ['million%d' % self.args.million])
            self.log('source Dovecot up in %.1f s (POP3 %d, POP3S %d)' % (
                time.monotonic() - t0, self._source.ports['pop3'], self._source.ports['pop3s']))
        return self._source

    def mixed(self):
        """The mixed corpus (--messages, --megabytes), seeded as user mix."""
        if self._mixed is None:
            t0 = time.monotonic()
            c = corpus.Corpus.mixed(self.args.messages, self.args.megabytes * 1e6)
            servers.seed_user(self.source(), 'mix', c)
            self._mixed = c
            self.log('mixed corpus: %d messages, %.1f MB (%d B .. %.2f MB, median %.1f KB), '
                     'seeded in %.1f s' % (c.n, c.total / 1e6, min(c.sizes), max(c.sizes) / 1e6,
                                           sorted(c.sizes)[c.n // 2] / 1e3,
                                           time.monotonic() - t0))
        return self._mixed

    def part(self, n, user):
        """A mixed corpus of n messages of the same mean size as the main
        one (the same generator, its own deterministic draw), seeded as
        user; made once per user."""
        if user not in self._parts:
            t0 = time.monotonic()
            c = corpus.Corpus.mixed(n, self.args.megabytes * 1e6 * n / self.args.messages)
            servers.seed_user(self.source(), user, c)
            self._parts[user] = c
            self.log('%s: %d mixed messages, %.1f MB, seeded in %.1f s' % (
                user, c.n, c.total / 1e6, time.monotonic() - t0))
        return self._parts[user]

    def small(self, n, user):
        if user not in self._small:
            t0 = time.monotonic()
            c = corpus.Corpus.small(n, tag=user)
            servers.seed_user(self.source(), user, c)
            self._small[user] = c
            self.log('%s: %d small messages (%.1f MB) seeded and indexed in %.1f s' % (
                user, n, c.total / 1e6, time.monotonic() - t0))
        return self._small[user]

    def file_list(self, name, paths):
        p = os.path.join(self.scratch.root, name)
        with open(p, 'w') as f:
            f.write(''.join(x + '\n' for x in paths))
        os.chmod(p, 0o644)
        return p

    def workdir(self, name):
        self._n += 1
        d = os.path.join(self.scratch.dst, '%02d-%s' % (self._n, name))
        os.makedirs(d)
        os.chmod(d, 0o755)
        return d

    def discard(self, path):
        """Removes a finished run's files (the destination fs stays small
        and the next run does not share its directories' caches)."""
        shutil.rmtree(path, ignore_errors=True)

    def ref(self, script, *args):
        return [PY, os.path.join(BENCH, script)] + [str(a) for a in args]

    def measure(self, label, argv, quiet=False, **kw):
        # dirty pages of earlier runs are written back now, not during
        # this one (and a tool's syncfs does not pay for them)
        os.sync()
        r = measure.run(argv, **kw)
        if not quiet:
            self.log('%-34s %8.2f s  cpu %6.2f s  rss %7.1f MB  exit %d' % (
                label, r.wall, r.cpu, r.maxrss / 1024.0, r.rc))
        if r.rc not in (0,) and r.err.strip():
            self.log('    stderr: ' + ' | '.join(r.err.strip().splitlines()[-3:])[:400])
        return r

    def stop(self):
        h.stop_all()
