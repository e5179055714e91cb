"""Disk faults: the Nth write, pwrite, fsync, fdatasync, syncfs, rename,
link, mkdir, creating open or ftruncate of an import and of a relay
submission fails with EIO or ENOSPC (tests/faults/faultinject.c, an
LD_PRELOAD shim the test build makes: build/faultinject.so), and real full
disks (a size-limited tmpfs under the Maildir, the state directory, the
relay's spool).

Every call of each kind is counted first (the shim in counting mode, on
one clean import or submission), then the faults run: all of them with
P3B_FAULT_SCALE=full (make reliability); in make check the first and the
middle one of each kind of the import, the middle one of the relay's.

After each fault: the pass either fails with one clear line naming the
account, or succeeds exactly (a fault where it does not matter, e.g.
creating a directory that exists); the state is never ahead of the store
(each delivered row's file is in the Maildir with its hash); nothing is
gone from the server that is not stored; the relay answers 4xx, never 250,
when it could not make a message durable, and a 250 is a queued message.
Then the next pass, with the fault gone, is exact: every message stored
once, nothing pending, nothing left on the server or in tmp/."""

import collections
import os
import smtplib
import subprocess
import time
import types

import harness as h
import faultcheck as fc
from smtpd import Upstream

TIMEOUT = 1800
SHIM = os.path.join(h.REPO, 'build', 'faultinject.so')
KINDS = ('write', 'pwrite', 'fsync', 'fdatasync', 'syncfs', 'rename', 'link', 'mkdir',
         'open', 'ftruncate')


def need_shim(t):
    t.require(os.path.exists(SHIM), '%s is missing: make %s' % (SHIM, 'build/faultinject.so'))


def shim_env(kind, nth, err, path, log=None, scope=None):
    env = {'LD_PRELOAD': SHIM, 'FAULT_CALL': kind, 'FAULT_NTH': str(nth),
           'FAULT_ERRNO': err, 'FAULT_PATH': path}
    if log:
        env['FAULT_LOG'] = log
    if scope:
        env['FAULT_SCOPE'] = scope
    # ASan wants to be the first library; the shim only passes calls on
    env['ASAN_OPTIONS'] = os.environ.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'
    return env


def read_log(path):
    """[(seq, kind, function, path, failed)] of a shim log."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) >= 7:
                    out.append((int(p[0]), p[2], p[3], ' '.join(p[4:-2]), p[-2] == 'failed'))
    except FileNotFoundError:
        pass
    return out


def pick(n, few=(1, -1)):
    """Which Nth calls of a kind with n calls run: all at full scale, else
    those of few (1 the first, -1 the last, 0 the middle one)."""
    if n == 0:
        return []
    if fc.scale(False, True):
        return list(range(1, n + 1))
    return sorted({n if k == -1 else (n + 1) // 2 if k == 0 else k for k in few})


def stored(root):
    out = []
    for f in h.maildir_files(root):
        with open(f, 'rb') as fh:
            out.append(h.body_hash(h.imap_view(fh.read())))
    return out


def on_server(src, user):
    out = []
    for f in h.maildir_files(src.maildir(user)):
        with open(f, 'rb') as fh:
            out.append(h.body_hash(h.imap_view(h.pop3_view(fh.read()))))
    return out


# How the one line may name the injected error: strerror(), or SQLite's
# words for it.
SAYS = {'EIO': ('Input/output error', 'disk I/O error'),
        'ENOSPC': ('No space left on device', 'database or disk is full', 'disk I/O error')}
# SQLite retries a failed open read-only and keeps no errno: store/state.c
# then says the database cannot be opened for writing
OPEN_RO = 'opening for writing'
# Likewise when it cannot create the write-ahead log: store/state.c asks
# the directory again (a fault of one call has passed by then)
WAL_RO = 'creating the write-ahead log'


def names_error(line, err):
    return any(w in line for w in SAYS[err] + (OPEN_RO, WAL_RO))


def one_clear_line(t, p, what, err=None):
    """A failed pass prints exactly one line, naming the account (and,
    for an injected errno, the error)."""
    lines = [l for l in (p.stderr or '').splitlines() if l.strip()]
    if p.returncode == 0:
        return
    t.check(len(lines) == 1 and ': acct: ' in lines[0],
            '%s: exit %d, expected one line naming the account: %r'
            % (what, p.returncode, lines[:4]))
    if err and lines:
        t.check(names_error(lines[-1], err),
                '%s: the line does not say %s: %r' % (what, err, lines[-1]))


# ---------------------------------------------------------------- the import

class Import:
    """One Dovecot source with a mailbox per case, Maildirs under dest/."""

    def __init__(self, t, n_users):
        self.t = t
        self.users = ['d%03d' % i for i in range(n_users)]
        self.src = t.dovecot('src', users={u: 'secret' for u in self.users})
        self.msgs = h.make_corpus(4, seed=13)
        self.want = fc.expected_hashes(self.msgs)
        self.free = iter(self.users)
        # every case finds dest/ there (the first import would make it,
        # with one fsync more than the others)
        os.makedirs(t.path('dest'), exist_ok=True)

    def conf(self, user, state=None, dest=None):
        acct = h.account_block('acct', self.src, user=user, local_user=user, tls='none',
                               extra='leave_on_server = false')
        return h.write_config(self.t.path('conf-%s' % user), h.config_text(
            state or self.t.path('state', user), dest or self.t.path('dest', '%u', 'Maildir'),
            [acct], 'batch_messages = 2\n'))

    def prepared(self, state=None, dest=None):
        """A user whose state and Maildir exist (one empty pass), with the
        corpus waiting on the server."""
        u = next(self.free)
        conf = self.conf(u, state, dest)
        p = self.t.run_bridge(conf, '-q', 'sync')
        self.t.require(p.returncode == 0, 'preparing pass: %s' % p.stderr)
        h.seed(self.src, u, self.msgs)
        return u, conf

    def after_fault(self, what, u, state, root):
        t = self.t
        ahead = fc.maildir_ahead(state, root)
        t.check(not ahead, '%s: state ahead of the store: %s' % (what, ahead[:3]))
        gone = fc.lost_from_server(self.want, on_server(self.src, u), stored(root))
        t.check(gone == 0, '%s: %d deleted from the server, not stored' % (what, gone))
        return gone

    def clean_pass(self, what, u, conf, state, root):
        t = self.t
        q = t.run_bridge(conf, '-q', 'sync')
        t.check(q.returncode == 0, '%s: the next pass exited %d: %s'
                % (what, q.returncode, q.stderr.strip()[-300:]))
        lost, dup = fc.compare(self.want, stored(root))
        t.check(lost == 0 and dup == 0, '%s: %d lost, %d duplicated' % (what, lost, dup))
        t.check(not [r for r in fc.state_rows(state) if r['state'] == 0],
                '%s: rows left pending' % what)
        t.check(not on_server(self.src, u), '%s: mail left on the server' % what)
        tmp = os.listdir(os.path.join(root, 'tmp')) if os.path.isdir(
            os.path.join(root, 'tmp')) else []
        t.check(not tmp, '%s: left in tmp/: %s' % (what, tmp[:3]))
        return lost, dup, fc.crashed(q)


def test_import_io_faults(t):
    need_shim(t)
    imp = Import(t, 400 if fc.scale(False, True) else 60)
    # count every call of the import proper
    u, conf = imp.prepared()
    log = t.path('count-%s.log' % u)
    p = t.run_bridge(conf, '-q', 'sync', env=shim_env('all', 0, 'EIO', t.tmp, log=log))
    t.require(p.returncode == 0, 'counting pass: %s' % p.stderr)
    calls = read_log(log)
    count = collections.Counter(c[1] for c in calls)
    print('  calls of one import of %d messages: %s' % (
        len(imp.msgs), ', '.join('%s %d' % (k, count[k]) for k in KINDS if count[k])))
    for k in ('write', 'pwrite', 'fsync', 'fdatasync', 'open'):
        t.require(count[k] > 0, 'the import makes %s calls' % k)
    # Maildir files get their names by linkat (anonymous O_TMPFILE temp
    # files) or, where /proc or the file system refuses that, by rename
    t.require(count['link'] + count['rename'] > 0, 'the import names its files (link, rename)')
    tally = fc.Tally('disk-import', 'disk fault (EIO/ENOSPC at the Nth call): import')
    failed_passes = 0
    for k in KINDS:
        for i, n in enumerate(pick(count[k], few=(1, 0))):
            err = ('EIO', 'ENOSPC')[i % 2]
            u, conf = imp.prepared()
            state, root = t.path('state', u), t.path('dest', u, 'Maildir')
            flog = t.path('fault-%s.log' % u)
            what = '%s %s #%d/%d %s' % (u, k, n, count[k], err)
            p = t.run_bridge(conf, '-q', 'sync', env=shim_env(k, n, err, t.tmp, log=flog))
            calls = read_log(flog)
            fired = [c for c in calls if c[4]]
            if not fired and len(calls) < n:
                # SQLite's checkpoint at close writes as many pages as are
                # dirty: a pass may make a few calls fewer than the count
                print('    %s: this pass made only %d such calls' % (what, len(calls)))
                imp.clean_pass(what, u, conf, state, root)
                continue
            t.check(fired, '%s: the fault never fired' % what)
            one_clear_line(t, p, what, err)
            failed_passes += p.returncode != 0
            gone = imp.after_fault(what, u, state, root)
            lost, dup, crash = imp.clean_pass(what, u, conf, state, root)
            print('    %s (%s %s): exit %d%s' % (what, fired[0][2] if fired else '-',
                  fired[0][3].replace(t.tmp, '') if fired else '', p.returncode,
                  ': ' + p.stderr.strip().replace(t.tmp, '') if p.returncode else ''))
            tally.case(lost=lost + gone, dup=dup, crash=crash or fc.crashed(p),
                       note=None if lost + dup + gone == 0 else what)
    tally.save()
    print('  %d import faults (%d passes failed, the rest did not need that call): '
          '%d lost, %d duplicated, %d crashes'
          % (tally.cases, failed_passes, tally.lost, tally.duplicated, tally.crashes))
    t.check(failed_passes > 0, 'faults make passes fail')


# ---------------------------------------------------------------- the relay

def relay_setup(t, dv, up, name):
    port = h.free_port()
    acct = h.account_block('work', dv, extra='''
  addresses = { "alice@example.com" }
  smtp { host = "127.0.0.1" port = %d tls = "none" user = "relay" password = "relaypw"
         allow_plaintext = true }
''' % up.port)
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  passwd_file = %s\n'
             '  retry_initial = 1\n}\npoll_interval = 3600\n' % (port, h.cq(dv.passwd_path)))
    conf = h.write_config(t.path('conf-%s' % name), h.config_text(
        t.path('state', name), t.path('dest', '%u', 'Maildir'), [acct], relay))
    return conf, port


def listening(port):
    """True once something listens on 127.0.0.1:port, seen in
    /proc/net/tcp without connecting (FAULT_SCOPE=first-session counts the
    first connection the relay accepts: a probe must not be it)."""
    want = ':%04X' % port
    try:
        with open('/proc/net/tcp') as f:
            return any(l.split()[1].endswith(want) and l.split()[3] == '0A'
                       for l in f.readlines()[1:])
    except (OSError, IndexError):
        return False


def submit(port, subject, lines=200):
    """The reply code to DATA (250 queued, 4xx or 5xx refused)."""
    msg = ('From: alice@example.com\r\nTo: bob@example.net\r\nSubject: %s\r\n'
           'Message-ID: <%s@x>\r\n\r\n%s\r\n' % (subject, subject, 'body line\r\n' * lines))
    s = smtplib.SMTP('127.0.0.1', port, timeout=60)
    try:
        s.ehlo('device.example')
        s.login('alice', 'secret')
        s.sendmail('alice@example.com', ['bob@example.net'], msg.encode())
        return 250
    except smtplib.SMTPDataError as e:
        return e.smtp_code
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass


def upstream_copies(up, subject):
    return sum(1 for m in up.messages() if h.header(m['content'], 'Subject') == subject)


def outbox_subjects(state_dir):
    """Subjects of the queued messages (None for one whose row or spool
    file does not hold it)."""
    return [h.header(c, 'Subject') if c is not None else None
            for _, _, c in h.outboxdb.queued(state_dir)]


def orphans(state_dir, queued):
    """Spool files beyond what the queued messages in files account for."""
    in_files = queued - len(h.outboxdb.in_row(state_dir))
    return max(0, len(h.outboxdb.spool_files(state_dir)) - in_files)


def relay_daemon(t, conf, port, env=None):
    d = t.start_bridge(conf, 'run', env=env)
    h.wait_for(lambda: listening(port) or d.poll() is not None, 20, what='relay port')
    t.require(d.poll() is None, 'pop3bridge run exited %s' % d.returncode)
    return d


def relay_case(t, dv, up, name, env, tally, what, lines=200):
    """A submission of lines body lines under the fault (the session and
    the relay process that commits for it: FAULT_SCOPE=accept), then the
    daemon again without the shim: a clean submission, the queue runner
    delivering. Returns the first reply code."""
    conf, port = relay_setup(t, dv, up, name)
    d = relay_daemon(t, conf, port, env)
    code1 = submit(port, name + '-1', lines)
    h.stop_process(d)
    crash = fc.crashed(d)
    t.check(code1 == 250 or 400 <= code1 < 500, '%s: answered %d (a 5xx for a disk fault '
            'refuses mail for good)' % (what, code1))
    d = relay_daemon(t, conf, port)
    code2 = submit(port, name + '-2')
    t.check(code2 == 250, '%s: the next submission got %d' % (what, code2))
    want = {name + '-2': 1}
    if code1 == 250:
        want[name + '-1'] = 1
    h.poll(lambda: all(upstream_copies(up, s) >= n for s, n in want.items()), 20)
    h.stop_process(d)
    crash = crash or fc.crashed(d)
    got = {s: upstream_copies(up, s) for s in (name + '-1', name + '-2')}
    lost = sum(1 for s in want if got[s] == 0)
    dup = sum(max(0, v - 1) for v in got.values()) + (got[name + '-1'] if code1 != 250 else 0)
    t.check(lost == 0, '%s: answered 250 but never delivered: %s' % (what, got))
    t.check(dup == 0, '%s: delivered more than answered 250: %s' % (what, got))
    state = t.path('state', name)
    t.check(orphans(state, len(outbox_subjects(state))) == 0, '%s: a spool file no row '
            'refers to' % what)
    tally.case(lost=lost, dup=dup, crash=crash, note=None if lost + dup == 0 else what)
    return code1


def test_relay_io_faults(t):
    need_shim(t)
    dv = t.dovecot('dv', users={'alice': 'secret'})
    up = Upstream(t).start()
    tally = fc.Tally('disk-relay', 'disk fault (EIO/ENOSPC at the Nth call): relay spool')
    codes = collections.Counter()
    i = 0
    # A small message goes into its row (one WAL write and sync); a big
    # one (over store/outbox.h's OUTBOX_INLINE_MAX, 64 KiB) into a spool
    # file the session fsyncs and links first.
    for size, lines, kinds in (('small', 200, ('write', 'pwrite', 'fdatasync')),
                               ('big', 8000, ('write', 'fsync', 'link', 'pwrite',
                                              'fdatasync'))):
        # count the calls of one submission: its session and the relay
        # process that commits for it (not the daemon, not the queue runner)
        conf, port = relay_setup(t, dv, up, 'count-' + size)
        log = t.path('count-%s-relay.log' % size)
        d = relay_daemon(t, conf, port, shim_env('all', 0, 'EIO', t.path('state', 'count-' + size),
                                                 log=log, scope='accept'))
        t.require(submit(port, 'count-%s-1' % size, lines) == 250, 'counting submission')
        h.stop_process(d)
        count = collections.Counter(c[1] for c in read_log(log))
        print('  calls of one %s relay submission: %s' % (size, ', '.join(
            '%s %d' % (k, count[k]) for k in KINDS if count[k])))
        for k in kinds:
            t.require(count[k] > 0, 'a %s submission makes %s calls' % (size, k))
        if size == 'small':
            t.check(count['fsync'] == 0 and count['link'] == 0,
                    'a small submission links and fsyncs no file: %r' % count)
        for k in KINDS:
            for n in pick(count[k], few=(0,)):
                err = ('EIO', 'ENOSPC')[i % 2]
                name = 'r%03d' % i
                i += 1
                what = '%s %s %s #%d/%d %s' % (name, size, k, n, count[k], err)
                env = shim_env(k, n, err, t.path('state', name), log=t.path(name + '.log'),
                               scope='accept')
                code = relay_case(t, dv, up, name, env, tally, what, lines)
                calls = read_log(t.path(name + '.log'))
                fired = [c for c in calls if c[4]]
                t.check(fired or len(calls) < n, '%s: the fault never fired' % what)
                codes[code] += 1
                print('    %s (%s): %d' % (what, fired[0][3].replace(t.tmp, '') if fired
                                            else '-', code))
    tally.save()
    print('  %d relay faults: replies %s; %d lost, %d duplicated, %d crashes'
          % (tally.cases, dict(codes), tally.lost, tally.duplicated, tally.crashes))
    t.check(sum(v for c, v in codes.items() if c != 250) > 0, 'faults make the relay say 4xx')


# ---------------------------------------------------------------- full disks

class Tmpfs:
    """A size-limited tmpfs mounted at path (root only), unmounted by the
    test's cleanup even when the test fails (lazily if still busy)."""

    def __init__(self, t, path, size, uid=0, gid=0, mode='0700'):
        self.path = path
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,uid=%d,gid=%d,mode=%s'
                            % (size, uid, gid, mode), 'tmpfs', path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            t.fail('mount tmpfs on %s: %s' % (path, r.stderr.strip()))
        t.cleanup(self.umount)

    def resize(self, size):
        subprocess.run(['mount', '-o', 'remount,size=%s' % size, self.path], check=True)

    def umount(self):
        if subprocess.run(['umount', self.path], capture_output=True).returncode != 0:
            subprocess.run(['umount', '-l', self.path], capture_output=True)


def need_root(t):
    if os.geteuid() != 0:
        t.skip('mounting a tmpfs needs root')


def fill(path, leave):
    """Fills the file system of path, then gives `leave` bytes back."""
    chunk = b'\0' * 4096
    fd = os.open(os.path.join(path, 'filler'), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        n = 0
        while True:
            try:
                n += os.write(fd, chunk)
            except OSError:
                break
        os.ftruncate(fd, max(0, n - leave))
    finally:
        os.close(fd)


def test_full_disks(t):
    need_root(t)
    uid, gid = h.mail_ids()
    imp = Import(t, 24)
    tally = fc.Tally('disk-full', 'disk full (ENOSPC, size-limited tmpfs)')
    # the Maildir fills up: some messages stored, then ENOSPC (the tmpfs
    # holds a part of what the mailbox needs)
    for share in fc.scale([25, 75], [10, 25, 40, 55, 70, 85]):
        u = next(imp.free)
        msgs = imp.msgs + [h.make_message(200 + share, size=150000)]
        kb = max(16, sum(map(len, msgs)) * share // 100 // 1024)
        mount = Tmpfs(t, t.path('dest', u), '%dk' % kb, uid, gid)
        h.make_maildir(t.path('dest', u, 'Maildir'))
        conf = imp.conf(u)
        h.seed(imp.src, u, msgs)
        want = fc.expected_hashes(msgs)
        state, root = t.path('state', u), t.path('dest', u, 'Maildir')
        what = '%s Maildir on a %d KB tmpfs' % (u, kb)
        p = t.run_bridge(conf, '-q', 'sync')
        print('    %s: exit %d %s' % (what, p.returncode, p.stderr.strip().replace(t.tmp, '')))
        t.check(p.returncode != 0, '%s: the pass did not notice the full disk' % what)
        one_clear_line(t, p, what)
        ahead = fc.maildir_ahead(state, root)
        t.check(not ahead, '%s: state ahead of the store: %s' % (what, ahead[:3]))
        gone = fc.lost_from_server(want, on_server(imp.src, u), stored(root))
        t.check(gone == 0, '%s: %d deleted from the server, not stored' % (what, gone))
        mount.resize('64m')
        q = t.run_bridge(conf, '-q', 'sync')
        t.check(q.returncode == 0, '%s: the pass after the disk grew: %s' % (what, q.stderr))
        lost, dup = fc.compare(want, stored(root))
        t.check(lost == 0 and dup == 0, '%s: %d lost, %d duplicated' % (what, lost, dup))
        t.check(not os.listdir(os.path.join(root, 'tmp')), '%s: tmp/ not empty' % what)
        tally.case(lost=lost + gone, dup=dup, crash=fc.crashed(p) or fc.crashed(q),
                   note=None if lost + dup + gone == 0 else what)
    # the state directory fills up: SQLite's journal and WAL writes fail
    for kb in fc.scale([8, 64], [4, 8, 16, 32, 64, 128]):
        u = next(imp.free)
        Tmpfs(t, t.path('state', u), '4m')
        conf = imp.conf(u)
        p = t.run_bridge(conf, '-q', 'sync')
        t.require(p.returncode == 0, 'preparing pass: %s' % p.stderr)
        h.seed(imp.src, u, imp.msgs)
        fill(t.path('state', u), kb * 1024)
        state, root = t.path('state', u), t.path('dest', u, 'Maildir')
        what = '%s state_dir with %d KB free' % (u, kb)
        p = t.run_bridge(conf, '-q', 'sync')
        print('    %s: exit %d %s' % (what, p.returncode, p.stderr.strip().replace(t.tmp, '')))
        one_clear_line(t, p, what)
        gone = imp.after_fault(what, u, state, root)
        os.unlink(os.path.join(state, 'filler'))
        lost, dup, crash = imp.clean_pass(what, u, conf, state, root)
        tally.case(lost=lost + gone, dup=dup, crash=crash or fc.crashed(p),
                   note=None if lost + dup + gone == 0 else what)
    tally.save()
    print('  %d full-disk cases: %d lost, %d duplicated, %d crashes'
          % (tally.cases, tally.lost, tally.duplicated, tally.crashes))


def test_full_spool(t):
    need_root(t)
    dv = t.dovecot('dv', users={'alice': 'secret'})
    up = Upstream(t).start()
    tally = fc.Tally('disk-spool', 'disk full (ENOSPC, size-limited tmpfs): relay spool')
    # a message of 36 KB, and less than that free
    for i, kb in enumerate(fc.scale([4], [1, 4, 8, 16, 24])):
        name = 's%03d' % i
        state = t.path('state', name)
        mount = Tmpfs(t, state, '2m')
        conf, port = relay_setup(t, dv, up, name)
        d = t.start_bridge(conf, 'run')
        h.wait_for(lambda: h.port_open(port) or d.poll() is not None, 20, what='relay port')
        t.require(d.poll() is None, 'pop3bridge run exited %s' % d.returncode)
        fill(state, kb * 1024)
        what = '%s spool with %d KB free' % (name, kb)
        code = submit(port, name + '-1', lines=3000)
        print('    %s: %d' % (what, code))
        t.check(400 <= code < 500, '%s: answered %d, expected 4xx' % (what, code))
        os.unlink(os.path.join(state, 'filler'))
        code2 = submit(port, name + '-2')
        t.check(code2 == 250, '%s: after space was freed: %d' % (what, code2))
        h.poll(lambda: upstream_copies(up, name + '-2') >= 1, 20)
        h.stop_process(d)
        got = {s: upstream_copies(up, s) for s in (name + '-1', name + '-2')}
        lost = 1 if got[name + '-2'] == 0 else 0
        dup = got[name + '-1'] + max(0, got[name + '-2'] - 1)
        t.check(lost == 0 and dup == 0, '%s: upstream got %s' % (what, got))
        t.check(orphans(state, len(outbox_subjects(state))) == 0, '%s: orphan spool file' % what)
        tally.case(lost=lost, dup=dup, crash=fc.crashed(d),
                   note=None if lost + dup == 0 else what)
        mount.umount()
    tally.save()


if __name__ == '__main__':
    h.main()
