"""The test runner of the integration tests: a test module's test_*
functions, one result line each.

    main()                  run the calling module's tests (or those named in argv)
    run_test(name, fn)      one test: 'PASS' | 'FAIL' | 'SKIP'
    Context                 the t a test function gets
    TestFailure, Skip, TestTimeout

Each test prints exactly one "PASS name", "FAIL name: reason" or
"SKIP name: reason" line; everything else it prints is indented. In a test
module, `TIMEOUT = N` sets the seconds each test may take (300); a test
function's own `timeout` attribute overrides it. SIGTERM and SIGHUP (tests/run's
timeout) end the program through SystemExit, so cleanups and atexit run."""

import inspect
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

from bridge import run_bridge, sanitizer_report, start_bridge
from dovecot import Dovecot, dovecot_path, make_traversable
from pki import default_certs
from processes import stop_all, stop_process, tail


class TestFailure(Exception):
    pass


class Skip(Exception):
    pass


class TestTimeout(Exception):
    pass


class Context:
    """What a test function gets as t:
    t.name, t.tmp (fresh dir, 0755; removed after a pass, kept on failure),
    t.check(cond, msg) (records a failure and goes on; returns cond),
    t.require(cond, msg) / t.fail(msg) (stop the test), t.skip(msg),
    t.path(*parts), t.certs, t.dovecot(name, **kw) (started, stopped at
    the end, log shown on failure), t.run_bridge(...), t.start_bridge(...),
    t.add_log(path, label), t.cleanup(fn)."""

    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix='p3b-%s-' % name[:40])
        os.chmod(self.tmp, 0o755)
        make_traversable(self.tmp)
        self.failures = []
        self._cleanups = []
        self._logs = []
        self._n = 0

    # -- assertions
    def check(self, cond, msg='check failed'):
        if not cond:
            fr = inspect.stack()[1]
            where = '%s:%d' % (os.path.basename(fr.filename), fr.lineno)
            self.failures.append(msg)
            print('  check failed %s: %s' % (where, msg), flush=True)
        return bool(cond)

    def require(self, cond, msg='requirement failed'):
        if not cond:
            raise TestFailure(msg)
        return cond

    def fail(self, msg):
        raise TestFailure(msg)

    def skip(self, msg):
        raise Skip(msg)

    # -- resources
    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    @property
    def certs(self):
        return default_certs()

    def cleanup(self, fn):
        self._cleanups.append(fn)
        return fn

    def add_log(self, path, label=None):
        self._logs.append((label or os.path.basename(path), path))

    def dovecot(self, name='dovecot', start=True, **kw):
        d = Dovecot(self.path(name), name=name, **kw)
        self.cleanup(d.stop)
        self.add_log(d.log_path, 'dovecot %s log' % name)
        self.add_log(d.stderr_path, 'dovecot %s stderr' % name)
        return d.start() if start else d

    def run_bridge(self, config, *args, **kw):
        """run_bridge(), with the command and its output kept in t.tmp and
        shown if the test fails; a sanitizer report in its stderr is a
        failed check."""
        self._n += 1
        p = run_bridge(config, *args, **kw)
        log = self.path('bridge-%02d-%s.out' % (self._n, args[0] if args else 'none'))
        out, err = p.stdout or '', p.stderr or ''
        if isinstance(out, bytes) or isinstance(err, bytes):
            out = out.decode('utf-8', 'replace') if isinstance(out, bytes) else out
            err = err.decode('utf-8', 'replace') if isinstance(err, bytes) else err
        with open(log, 'w') as f:
            f.write('$ %s\nexit %d\n--- stdout\n%s\n--- stderr\n%s\n'
                    % (' '.join(p.args), p.returncode, out, err))
        self.add_log(log, _label(args))
        self._check_sanitizer(args, err)
        return p

    def start_bridge(self, config, *args, **kw):
        """start_bridge(), stopped at the end of the test; its log is shown
        on failure and checked for sanitizer reports."""
        self._n += 1
        kw.setdefault('log', self.path('bridge-%02d-%s.log' % (self._n, args[0] if args else 'x')))
        p = start_bridge(config, *args, **kw)

        def stop():
            stop_process(p)
            with open(p.log_path, 'rb') as f:
                self._check_sanitizer(args, f.read())
        self.cleanup(stop)
        self.add_log(p.log_path, _label(args))
        return p

    def _check_sanitizer(self, args, output):
        """A sanitizer report in the output of `pop3bridge ARGS` is a failed check."""
        rep = sanitizer_report(output)
        self.check(rep is None, 'sanitizer: %s: %s' % (_label(args), rep))

    def _finish(self):
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as e:
                print('  cleanup failed: %r' % e, flush=True)
        self._cleanups = []

    def _print_logs(self, lines=150):
        for label, path in self._logs:
            text = tail(path, lines)
            if not text.strip():
                continue
            print('  --- %s (%s, last %d lines)' % (label, path, lines))
            for l in text.splitlines():
                print('    | ' + l)


def _label(args):
    """How a pop3bridge command is named in logs and messages."""
    return 'pop3bridge %s' % ' '.join(map(str, args))


_terminated = 0


def _on_sigterm(signum, frame):
    # Remembered as well as raised: CPython drops an exception raised while
    # a finalizer runs (a dropped poplib/imaplib client being collected),
    # so the runner checks again after each test.
    global _terminated
    _terminated = signum
    raise SystemExit(128 + signum)


def _on_alarm(signum, frame):
    raise TestTimeout('test timed out')


def _tests_of(mod):
    tests = [(f.__code__.co_firstlineno, n, f) for n, f in vars(mod).items()
             if n.startswith('test_') and inspect.isfunction(f) and f.__module__ == mod.__name__]
    return [(n, f) for _, n, f in sorted(tests)]


def run_test(name, fn, timeout=300):
    """Runs one test; prints its result line; returns 'PASS'|'FAIL'|'SKIP'."""
    t = Context(name)
    t0 = time.monotonic()
    result, reason = 'PASS', ''
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(getattr(fn, 'timeout', timeout)))
    try:
        try:
            fn(t)
        finally:
            signal.alarm(0)
    except Skip as e:
        result, reason = 'SKIP', str(e)
    except TestFailure as e:
        result, reason = 'FAIL', str(e)
    except Exception as e:
        tb = traceback.format_exc().rstrip().splitlines()
        for l in tb[-25:]:
            print('    ' + l)
        result, reason = 'FAIL', '%s: %s' % (type(e).__name__, str(e).splitlines()[0] if str(e) else '')
    except BaseException:  # SIGTERM (tests/run's timeout), Ctrl-C: report, clean up, go on dying
        signal.signal(signal.SIGALRM, old)
        t._finish()
        print('  kept %s' % t.tmp)
        print('FAIL %s: interrupted' % name, flush=True)
        raise
    finally:
        signal.signal(signal.SIGALRM, old)
        t._finish()
    if result == 'PASS' and t.failures:
        result, reason = 'FAIL', t.failures[0] + (
            ' (and %d more)' % (len(t.failures) - 1) if len(t.failures) > 1 else '')
    print('  %s: %.2fs' % (name, time.monotonic() - t0))
    if result == 'FAIL':
        t._print_logs()
        print('  kept %s' % t.tmp)
        print('FAIL %s: %s' % (name, ' '.join(reason.split())), flush=True)
    else:
        shutil.rmtree(t.tmp, ignore_errors=True)
        print('%s %s%s' % (result, name, ': ' + reason if reason else ''), flush=True)
    return result


def main(argv=None):
    """Runs the calling module's test_* functions in file order (or the ones
    named in argv), one result line each; exits 1 if any failed."""
    argv = sys.argv[1:] if argv is None else argv
    mod = sys.modules['__main__']
    tests = _tests_of(mod)
    if argv:
        byname = dict(tests)
        sel = []
        for n in argv:
            if n not in byname:
                print('FAIL %s: no such test in %s' % (n, os.path.basename(mod.__file__)))
                sys.exit(1)
            sel.append((n, byname[n]))
        tests = sel
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    if not dovecot_path():
        for n, _ in tests:
            print('SKIP %s: dovecot not installed' % n)
        sys.exit(0)
    timeout = getattr(mod, 'TIMEOUT', 300)
    failed = 0
    for n, fn in tests:
        if run_test(n, fn, timeout) == 'FAIL':
            failed += 1
        if _terminated:
            stop_all()
            sys.exit(128 + _terminated)
    sys.exit(1 if failed else 0)
