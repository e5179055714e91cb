"""Scenario 5: many accounts. One Dovecot (passwd-file with --accounts
users, POP3S), --per-account small messages each; one pop3bridge config
with an account per user, each into its own Maildir (store path %u).

  - `sync`, first cycle, at max_parallel = 1 and at --parallel (fresh state
    and Maildirs each time), checked: every message of every account once;
  - a nothing-new cycle at --parallel by `run` (the daemon), timed until
    its poll log holds a pass of every account, with the memory of the
    daemon and its children sampled meanwhile (sum of RSS and of PSS, from
    /proc/PID/smaps_rollup every 0.1 s);
  - the limit: ref_pop3.py poll-many, login + UIDL + QUIT for every account,
    --parallel processes at once, and one at a time: what 1 -> --parallel
    gives any client of this Dovecot on this machine (the ceiling of the
    first cycle's scaling, the same server work per account);
  - Dovecot's own CPU in each run (its master's tree and what it reaped):
    it shares the cores, and a login costs it more than the client.
Before anything is timed, one poll-many pass has made Dovecot index every
mailbox (else whichever ran first would pay for it)."""

import collections
import os
import signal
import sqlite3
import subprocess
import time

import harness as h
from p3bench import corpus, measure, tools
from p3bench.creds import PASSWORD
from p3bench.report import Section, SummaryRow, Table, last_line, mb, ratio, secs


def _users(n):
    return ['a%04d' % i for i in range(n)]


def _config(b, work, dv, users, parallel):
    accts = [h.account_block(u, dv, user=u, password=PASSWORD, local_user=u, tls='implicit')
             for u in users]
    # All on one host: max_per_host (default 2) would cap the parallelism.
    extra = 'max_parallel = %d\nmax_per_host = %d\npoll_interval = 3600\n' % (parallel, parallel)
    conf = tools.write(os.path.join(work, 'p3b.conf'), h.config_text(
        os.path.join(work, 'state'), os.path.join(work, 'mail', '%u', 'Maildir'), accts, extra))
    measure.chown_tree(work)
    return conf


def _verify(work, users, want):
    found = collections.Counter()
    for u in users:
        for f in corpus.maildir_files(os.path.join(work, 'mail', u, 'Maildir')):
            with open(f, 'rb') as fh:
                found[corpus.digest(fh.read())] += 1
    return corpus.verify_digests(found, want)


def _passes(db):
    try:
        con = sqlite3.connect('file:%s?mode=ro' % db, uri=True, timeout=5)
        try:
            return con.execute('SELECT count(*) FROM poll_log').fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _cpu(pid):
    """CPU seconds of pid and of its children it has reaped."""
    with open('/proc/%d/stat' % pid, 'rb') as f:
        fields = f.read().rsplit(b')', 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf('SC_CLK_TCK')


def _daemon_cycle(b, work, conf, n):
    """Runs `pop3bridge run` until every account has one more pass in the
    poll log; returns (seconds, TreeMemory, exit code, passes, CPU s of the
    daemon and its finished passes)."""
    db = os.path.join(work, 'state', 'state.db')
    start = _passes(db)
    argv = measure.as_user([h.bridge_binary(), '-q', '-c', conf, 'run'], work)
    os.sync()
    log = open(os.path.join(work, 'run.log'), 'ab')
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    log.close()
    m = measure.TreeMemory(p.pid).start()
    try:
        while _passes(db) < start + n and p.poll() is None and time.monotonic() - t0 < 1800:
            time.sleep(0.1)
        wall = time.monotonic() - t0
        # the last pass may still be reaped: a moment for SIGCHLD
        time.sleep(0.2)
        cpu = _cpu(p.pid) if p.poll() is None else None
    finally:
        m.stop()
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return wall, m, p.returncode, _passes(db) - start, cpu


def run(b):
    n, per, par = b.args.accounts, b.args.per_account, b.args.parallel
    s = Section('accounts', '5. Many accounts: %d \u00d7 %d messages, POP3S, one Dovecot' % (n, per))
    users = _users(n)
    t0 = time.monotonic()
    dv = h.Dovecot(os.path.join(b.scratch.src, 'accounts-dovecot'),
                   users={u: PASSWORD for u in users}, protocols=('pop3',),
                   mail_root=os.path.join(b.scratch.src, 'accounts-mail'), name='bench-accts',
                   extra_conf='pop3_no_flag_updates = yes\n').start()
    want = collections.Counter()
    uid, gid = h.mail_ids()
    for u in users:
        c = corpus.Corpus.small(per, tag=u)
        c.seed(h.make_maildir(dv.maildir(u)), uid if os.geteuid() == 0 else None, gid)
        want.update(c.digests)
    users_file = b.file_list('accounts-users', users)
    ref = b.ref('ref_pop3.py', 'poll-many', dv.ports['pop3s'], users_file, '--parallel', par,
                '--tls', dv.ca_file)
    warm = b.measure('(not timed) every mailbox indexed once', ref, quiet=True)
    if warm.rc != 0 or '"ok": %d,' % n not in warm.out:
        s.fail('ref', 'warm-up poll: %s %s' % (warm.out.strip(), last_line(warm.err)))
    b.log('%d accounts seeded and indexed in %.1f s' % (n, time.monotonic() - t0))

    t = Table('%d accounts, %d messages each (%d in all)' % (n, per, n * per),
              ['run', 'seconds', 'accounts/s', 'client CPU s', 'Dovecot CPU s',
               'peak RSS MB (largest process)', 'stored exactly'])

    def server_cpu(f):
        c0 = measure.tree_cpu(dv.pid)
        out = f()
        return out, measure.tree_cpu(dv.pid) - c0

    first = {}
    for p in (1, par):
        work = b.workdir('accounts-p%d' % p)
        conf = _config(b, work, dv, users, p)
        r, dcpu = server_cpu(lambda: b.measure(
            'pop3bridge sync, first cycle, max_parallel=%d' % p,
            measure.as_user([h.bridge_binary(), '-q', '-c', conf, 'sync'], work), timeout=3600))
        chk = _verify(work, users, want)
        if r.rc != 0:
            chk = corpus.Check(False, 'exit %d: %s' % (r.rc, last_line(r.err)), chk.count)
        if not chk.ok:
            s.fail('pop3bridge', 'first cycle at %d: %s' % (p, chk.why))
        first[p] = r.wall
        t.row('`sync`, first cycle, max_parallel=%d' % p, secs(r.wall), '%.0f' % (n / r.wall),
              secs(r.cpu), secs(dcpu), mb(r.maxrss), chk)
        if p != par:
            b.discard(work)
    # the nothing-new cycle, on the state of the max_parallel=par import,
    # by the daemon: its time, CPU and memory
    (nothing, mem, rc, passes, cpu), dcpu = server_cpu(lambda: _daemon_cycle(b, work, conf, n))
    b.log('%-34s %8.2f s  cpu %6.2f s  %d passes, peak %d processes, sum RSS %.1f MB, '
          'sum PSS %.1f MB' % ('pop3bridge run, one nothing-new cycle', nothing, cpu, passes,
                               mem.peak_procs, mem.peak_rss_sum / 1024.0,
                               mem.peak_pss_sum / 1024.0))
    chk = _verify(work, users, want)
    if passes < n:
        chk = corpus.Check(False, 'only %d of %d passes in the poll log (exit %s)' % (
            passes, n, rc), chk.count)
    if not chk.ok:
        s.fail('pop3bridge', 'daemon cycle: %s' % chk.why)
    t.row('`run`, one nothing-new cycle, max_parallel=%d (until %d passes logged)' % (par, n),
          secs(nothing), '%.0f' % (n / nothing), secs(cpu), secs(dcpu), '-', chk)
    ref1 = b.ref('ref_pop3.py', 'poll-many', dv.ports['pop3s'], users_file, '--parallel', 1,
                 '--tls', dv.ca_file)
    minimal = {}
    for p, argv in ((par, ref), (1, ref1)):
        r, dcpu = server_cpu(lambda: b.measure('minimal client, %d at a time' % p, argv))
        ok = r.rc == 0 and '"ok": %d,' % n in r.out and '"uidls": %d,' % (n * per) in r.out
        if not ok:
            s.fail('ref', 'minimal client at %d: %s %s' % (p, r.out.strip(), last_line(r.err)))
        minimal[p] = r.wall
        t.row('minimal client: POP3S login + UIDL + QUIT, %d at a time' % p, secs(r.wall),
              '%.0f' % (n / r.wall), secs(r.cpu), secs(dcpu), mb(r.maxrss),
              'ok' if ok else 'WRONG')
    limit = minimal[par]
    t.note('first cycle max_parallel=1 / max_parallel=%d: %s; nothing-new cycle / minimal '
           'client: %s' % (par, ratio(first[1] / first[par]), ratio(nothing / limit)))
    t.note('the ceiling of the scaling on this machine: the minimal client at 1 / at %d: %s '
           '(%d cores, shared with Dovecot, whose CPU per login the column shows)'
           % (par, ratio(minimal[1] / minimal[par]), os.cpu_count() or 0))
    t.note('the `run` cycle: from the daemon\'s start until its poll log holds a pass of every '
           'account; its CPU: the daemon and its finished passes (/proc/PID/stat)')
    s.tables.append(t)
    mt = Table('the daemon (`run`) and its children during the nothing-new cycle',
               ['processes at once (peak)', 'sum of RSS MB (peak)', 'sum of PSS MB (peak)',
                'samples'])
    mt.row(mem.peak_procs, mb(mem.peak_rss_sum), mb(mem.peak_pss_sum), mem.samples)
    mt.note('PSS counts each shared page once, divided among the processes sharing it: the '
            'daemon\'s real share of memory')
    s.tables.append(mt)
    dv.stop()
    b.discard(work)
    s.summary.append(SummaryRow(
        '%d accounts \u00d7 %d, `sync` first cycle' % (n, per),
        '%s s at 1, %s s at %d' % (secs(first[1]), secs(first[par]), par),
        'minimal client: %s faster at %d than at 1' % (ratio(minimal[1] / minimal[par]), par),
        '%s faster at %d' % (ratio(first[1] / first[par]), par), '\u2265 3\u00d7 faster at 8',
        s.ok('pop3bridge') and first[1] / first[par] >= 3))
    s.summary.append(SummaryRow(
        'the same, nothing new, max_parallel=%d' % par, '%s s (`run`), %s CPU s' % (
            secs(nothing), secs(cpu)),
        'login+UIDL+QUIT, %d at a time: %s s' % (par, secs(limit)),
        ratio(nothing / limit), '\u2264 1.2\u00d7', s.ok('pop3bridge', 'ref') and nothing / limit <= 1.2))
    s.summary.append(SummaryRow(
        'daemon memory, %d accounts' % n, '%s MB PSS (%s MB RSS), %d processes' % (
            mb(mem.peak_pss_sum), mb(mem.peak_rss_sum), mem.peak_procs), '-', '-', '< 64 MB',
        s.ok('pop3bridge') and mem.peak_pss_sum < 64 * 1024))
    return s
