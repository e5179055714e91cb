"""Integration-test harness for pop3bridge (Python 3 standard library only).

Everything runs on 127.0.0.1, on free high ports, with throwaway Dovecot
instances (see /work/shared/TESTING.md for the traps this works around).

    free_port(), port_open(port), wait_for(pred, timeout), tail(path)
    Certs(dir), default_certs()        test CA; server, wrong-name, self-signed certs
    mail_ids()                          (uid, gid) owning test mail (user p3b-mail)
    Dovecot(workdir, users=, cert=, key=, ca_file=, uidl_format=, protocols=,
            mail_root=, extra_conf=)     .start() .stop() .restart(**changes)
                                        .ports .ca_file .maildir(user) .log_path
                                        .set_user(user, pw)
    make_maildir(path, subfolders), seed(dovecot, user, messages), maildir_files()
    make_message(i, ...), make_corpus(n, seed), big_message(mb)
    pop3_connect/pop3_stat/pop3_uidls/pop3_retr_all(dovecot, user, pw, tls=False)
    imap_connect/imap_list/imap_fetch_all/imap_count(dovecot, user, pw, ...)
    header(body, name), canonical(b), body_hash(b), pop3_view(b), imap_view(b)
    bridge_binary(), write_config(path, text), config_text(), account_block(),
    run_bridge(config, *args), start_bridge(config, *args), stop_process(p),
    sanitizer_report(text), stop_all()
    main()                               run a test module's test_* functions

A test module:

    import harness
    def test_something(t):
        src = t.dovecot('src')
        harness.seed(src, 'alice', [harness.make_message(1)])
        t.check(harness.pop3_stat(src, 'alice', 'secret')[0] == 1, 'one message')
    if __name__ == '__main__':
        harness.main()

Each test prints exactly one "PASS name", "FAIL name: reason" or
"SKIP name: reason" line; everything else it prints is indented. t is a
Context (t.tmp, t.check, t.require, t.dovecot, t.run_bridge, ...). In a test
module, `ASAN = False` makes tests/run run it once (not again with the ASan
binary) and `TIMEOUT = N` sets the seconds each test may take (300).
"""

import atexit
import base64
import calendar
import email.header
import email.utils
import errno
import hashlib
import imaplib
import inspect
import os
import poplib
import pwd
import grp
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# The standard library's line limits are for defending clients against
# hostile servers; the test servers are ours and the corpus has long lines.
poplib._MAXLINE = 1 << 22
imaplib._MAXLINE = 1 << 22

MAIL_USER = 'p3b-mail'


# ---------------------------------------------------------------- ports

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_open(port, host='127.0.0.1', timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(pred, timeout=10.0, interval=0.05, what='condition'):
    """Polls pred() until it returns a true value (returned) or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError('timed out after %.1fs waiting for %s' % (timeout, what))
        time.sleep(interval)


def tail(path, lines=100):
    """The last lines of a text file, or '' if it cannot be read."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError:
        return ''
    text = data.decode('utf-8', 'replace').splitlines()
    return '\n'.join(text[-lines:])


# ---------------------------------------------------------------- certificates

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = pop3bridge test
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[wrong]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[selfsigned]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
"""


class Certs:
    """Test PKI in dir, made with the openssl command (RSA 2048, 30 days):

    ca_file                   a private CA (trusted only when given as ca_file)
    cert, key                 DNS:localhost,IP:127.0.0.1, serverAuth, signed by the CA
    wrong_cert, wrong_key     DNS:wrong.example, signed by the same CA
    selfsigned_cert, selfsigned_key   self-signed, DNS:localhost,IP:127.0.0.1

    The files are made once: if dir already holds them they are reused. The
    directory is filled under a temporary name and renamed into place, so
    programs running in parallel may share one dir."""

    FILES = ('ca.pem', 'ca.key', 'server.pem', 'server.key', 'wrong.pem',
             'wrong.key', 'selfsigned.pem', 'selfsigned.key')

    def __init__(self, dir):
        self.dir = os.path.abspath(dir)
        if not self._complete(self.dir):
            self._make()
        j = lambda f: os.path.join(self.dir, f)
        self.ca_file, self.ca_key = j('ca.pem'), j('ca.key')
        self.cert, self.key = j('server.pem'), j('server.key')
        self.wrong_cert, self.wrong_key = j('wrong.pem'), j('wrong.key')
        self.selfsigned_cert, self.selfsigned_key = j('selfsigned.pem'), j('selfsigned.key')

    @classmethod
    def _complete(cls, d):
        return all(os.path.isfile(os.path.join(d, f)) for f in cls.FILES)

    def _make(self):
        parent = os.path.dirname(self.dir)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix='.certs-', dir=parent)
        try:
            self._generate(tmp)
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, self.dir)  # replaces an empty dir, fails on a full one
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not self._complete(self.dir):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _generate(d):
        def run(*args):
            p = subprocess.run(['openssl'] + list(args), cwd=d, capture_output=True)
            if p.returncode != 0:
                raise RuntimeError('openssl %s failed: %s' % (args[0], p.stderr.decode(errors='replace')))

        with open(os.path.join(d, 'openssl.cnf'), 'w') as f:
            f.write(_OPENSSL_CNF)
        for name in ('ca', 'server', 'wrong', 'selfsigned'):
            run('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
                '-out', name + '.key')
        run('req', '-x509', '-new', '-config', 'openssl.cnf', '-extensions', 'v3_ca',
            '-key', 'ca.key', '-subj', '/O=pop3bridge tests/CN=pop3bridge test CA',
            '-days', '30', '-sha256', '-out', 'ca.pem')
        for name, cn in (('server', 'localhost'), ('wrong', 'wrong.example')):
            run('req', '-new', '-config', 'openssl.cnf', '-key', name + '.key',
                '-subj', '/O=pop3bridge tests/CN=' + cn, '-out', name + '.csr')
            run('x509', '-req', '-in', name + '.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
                '-set_serial', str(random.getrandbits(63)), '-days', '30', '-sha256',
                '-extfile', 'openssl.cnf', '-extensions', name, '-out', name + '.pem')
        run('req', '-x509', '-new', '-config', 'openssl.cnf', '-extensions', 'selfsigned',
            '-key', 'selfsigned.key', '-subj', '/O=pop3bridge tests/CN=localhost',
            '-days', '30', '-sha256', '-out', 'selfsigned.pem')
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)


_default_certs = None


def default_certs():
    """The Certs of this run: in $P3B_CERTS when set (tests/run shares one
    across programs), else in a temp dir removed when the process exits."""
    global _default_certs
    if _default_certs is None:
        d = os.environ.get('P3B_CERTS')
        if not d:
            base = tempfile.mkdtemp(prefix='p3b-certs-')
            os.chmod(base, 0o755)
            atexit.register(shutil.rmtree, base, True)
            d = os.path.join(base, 'certs')
        _default_certs = Certs(d)
    return _default_certs


# ---------------------------------------------------------------- Dovecot

def dovecot_path():
    """Path of the dovecot binary, or None."""
    p = shutil.which('dovecot')
    if p:
        return p
    for d in ('/usr/sbin', '/sbin', '/usr/local/sbin'):
        if os.access(os.path.join(d, 'dovecot'), os.X_OK):
            return os.path.join(d, 'dovecot')
    return None


_mail_ids = None


def mail_ids():
    """(uid, gid) that owns test mailboxes: the system user p3b-mail (made with
    useradd --system when missing and we are root), else 'mail'. Never 0.
    As non-root: our own uid/gid."""
    global _mail_ids
    if _mail_ids:
        return _mail_ids
    if os.geteuid() != 0:
        _mail_ids = (os.getuid(), os.getgid())
        return _mail_ids
    try:
        pw = pwd.getpwnam(MAIL_USER)
    except KeyError:
        pw = None
        useradd = shutil.which('useradd') or '/usr/sbin/useradd'
        if os.access(useradd, os.X_OK):
            subprocess.run([useradd, '--system', '--user-group', '--no-create-home',
                            '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin',
                            MAIL_USER], capture_output=True)
        try:  # also when a parallel test program created it first
            pw = pwd.getpwnam(MAIL_USER)
        except KeyError:
            pw = pwd.getpwnam('mail')
    _mail_ids = (pw.pw_uid, pw.pw_gid)
    return _mail_ids


def make_traversable(path):
    """chmod o+x every directory from path up to / (mkdtemp dirs are 0700 and
    Dovecot's auth and mail processes run unprivileged)."""
    p = os.path.abspath(path)
    while True:
        try:
            st = os.stat(p)
            if st.st_mode & 0o055 != 0o055 and os.geteuid() in (0, st.st_uid):
                os.chmod(p, (st.st_mode | 0o755) & 0o7777)
        except OSError:
            pass
        if p == '/':
            break
        p = os.path.dirname(p)


def make_maildir(path, subfolders=()):
    """Creates a Maildir (cur/new/tmp) at path owned by the mail uid, and its
    parent directories up to the first existing one; returns path.
    subfolders: Maildir++ folder names (".a.b") to create below it as well."""
    uid, gid = mail_ids()
    path = os.path.abspath(path)
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d, 0o700)
        _chown(d, uid, gid)
    for sub in ('',) + tuple(subfolders):
        base = os.path.join(path, sub) if sub else path
        for d in (base, os.path.join(base, 'cur'), os.path.join(base, 'new'),
                  os.path.join(base, 'tmp')):
            if not os.path.isdir(d):
                os.mkdir(d, 0o700)
                _chown(d, uid, gid)
        if sub and not os.path.exists(os.path.join(base, 'maildirfolder')):
            open(os.path.join(base, 'maildirfolder'), 'w').close()
            _chown(os.path.join(base, 'maildirfolder'), uid, gid)
    return path


def _chown(path, uid, gid):
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


_live = []  # Dovecots and Popens stopped at exit


def stop_all():
    """Stops every Dovecot and pop3bridge process the harness started (also
    done at exit)."""
    for obj in reversed(list(_live)):
        try:
            if isinstance(obj, Dovecot):
                obj.stop()
            else:
                stop_process(obj)
        except Exception:
            pass


atexit.register(stop_all)


class DovecotError(RuntimeError):
    pass


class Dovecot:
    """A throwaway Dovecot 2.3 in workdir: POP3, POP3S, IMAP, IMAPS on free
    ports of 127.0.0.1, passwd-file users with plaintext passwords (so APOP
    works), mail in maildir:MAIL_ROOT/%u/Maildir owned by the mail uid.

        d = Dovecot(dir, users={'alice': 'secret'}).start()
        d.ports['pop3s'], d.ca_file, d.maildir('alice'), d.log_path
        d.restart(uidl_format='%g'); d.stop()

    The same class serves as the "legacy POP3 provider" and as the IMAP
    server over the Maildir pop3bridge writes (mail_root=...)."""

    def __init__(self, workdir, users=None, cert=None, key=None, ca_file=None,
                 uidl_format='%08Xu%08Xv', protocols=('pop3', 'imap'), mail_root=None,
                 extra_conf='', name=None):
        self.dir = os.path.abspath(workdir)
        os.makedirs(self.dir, exist_ok=True)
        make_traversable(self.dir)
        self.users = dict(users if users is not None else {'alice': 'secret'})
        if cert is None:
            c = default_certs()
            cert, key = c.cert, c.key
            ca_file = ca_file or c.ca_file
        self.cert, self.key, self.ca_file = cert, key, ca_file
        self.uidl_format = uidl_format
        self.protocols = tuple(protocols)
        self.mail_root = os.path.abspath(mail_root or os.path.join(self.dir, 'mail'))
        self.extra_conf = extra_conf
        self.name = name or os.path.basename(self.dir)
        self.conf_path = os.path.join(self.dir, 'dovecot.conf')
        self.passwd_path = os.path.join(self.dir, 'passwd')
        self.log_path = os.path.join(self.dir, 'dovecot.log')
        self.stderr_path = os.path.join(self.dir, 'dovecot.stderr')
        self.ports = {}
        self.proc = None
        self.start_seconds = None  # how long the last start() took
        # Dovecot's sockets live in base_dir: keep their paths under the
        # 108-byte limit of a unix socket name
        self.base_dir = os.path.join(self.dir, 'run')
        if len(self.base_dir) > 64:
            self.base_dir = tempfile.mkdtemp(prefix='p3b-dv-')
            atexit.register(shutil.rmtree, self.base_dir, True)
        self._pick_ports()

    def __repr__(self):
        return '<Dovecot %s %s>' % (self.name, self.ports)

    # -- configuration

    def _pick_ports(self):
        self.ports = {}
        for proto in self.protocols:
            self.ports[proto] = free_port()
            self.ports[proto + 's'] = free_port()

    def maildir(self, user):
        """The user's Maildir root: MAIL_ROOT/user/Maildir."""
        return os.path.join(self.mail_root, user, 'Maildir')

    def set_user(self, user, password):
        """Adds or changes a user, live: Dovecot re-reads its passwd-file when
        the file's mtime or size changes, checking at most once a second, so
        the change takes effect within about a second (wait_for a login).
        Creates the user's Maildir."""
        self.users[user] = password
        self._write_passwd()
        make_maildir(self.maildir(user))

    def _write_passwd(self):
        try:
            old = os.stat(self.passwd_path).st_mtime
        except OSError:
            old = 0
        tmp = self.passwd_path + '.tmp'
        with open(tmp, 'w') as f:
            for u, pw in self.users.items():
                f.write('%s:{PLAIN}%s::::::\n' % (u, pw))
        os.chmod(tmp, 0o644)
        # Dovecot compares mtime in whole seconds: make sure it moves
        m = max(time.time(), int(old) + 1)
        os.utime(tmp, (m, m))
        os.replace(tmp, self.passwd_path)

    def _conf(self):
        uid, gid = mail_ids()
        j = lambda *p: os.path.join(self.dir, *p)
        lines = [
            '# written by tests/integration/harness.py',
            'instance_name = p3b-%s-%d' % (re.sub(r'[^A-Za-z0-9_-]', '_', self.name)[:20],
                                           self.ports[self.protocols[0]]),
            'base_dir = %s' % self.base_dir,
            'state_dir = %s' % j('state'),
            'log_path = %s' % self.log_path,
            'protocols = %s' % ' '.join(self.protocols),
            'listen = 127.0.0.1',
            'ssl = yes',
            'ssl_cert = <%s' % self.cert,
            'ssl_key = <%s' % self.key,
            'disable_plaintext_auth = no',
            'auth_mechanisms = plain login apop',
            'auth_verbose = yes',
            'auth_failure_delay = 0',  # a refused login answers at once
            'verbose_ssl = yes',
            'passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%%u %s\n}'
            % self.passwd_path,
            'userdb {\n  driver = static\n  args = uid=%d gid=%d home=%s/%%u\n}'
            % (uid, gid, self.mail_root),
            'first_valid_uid = %d' % min(uid, 500),
            'first_valid_gid = %d' % min(gid, 1),
            'mail_location = maildir:%s/%%u/Maildir' % self.mail_root,
            'pop3_uidl_format = %s' % self.uidl_format,
            'mail_max_userip_connections = 200',
        ]
        if os.path.exists('/usr/share/dovecot/dh.pem'):
            lines.append('ssl_dh = </usr/share/dovecot/dh.pem')
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.getuid()).pw_name
            lines += ['default_internal_user = %s' % me, 'default_login_user = %s' % me,
                      'default_internal_group = %s' % grp.getgrgid(os.getgid()).gr_name]
        # as non-root, Dovecot cannot chroot its login and anvil processes
        nochroot = '  chroot =\n' if os.geteuid() != 0 else ''
        for proto in self.protocols:
            lines.append('service %s-login {' % proto)
            if nochroot:
                lines.append(nochroot.rstrip('\n'))
            lines.append('  inet_listener %s {\n    address = 127.0.0.1\n    port = %d\n  }'
                         % (proto, self.ports[proto]))
            lines.append('  inet_listener %ss {\n    address = 127.0.0.1\n    port = %d\n'
                         '    ssl = yes\n  }' % (proto, self.ports[proto + 's']))
            lines.append('}')
        # no growing delay after failed logins from 127.0.0.1 (tests fail
        # logins on purpose); auth_failure_delay = 0 removes the fixed one
        lines.append('service anvil {\n%s  unix_listener anvil-auth-penalty {\n    mode = 0\n'
                     '  }\n}' % nochroot)
        if self.extra_conf:
            lines.append(self.extra_conf)
        return '\n'.join(lines) + '\n'

    def write_config(self):
        os.makedirs(self.mail_root, exist_ok=True)
        os.chmod(self.mail_root, 0o755)
        _chown(self.mail_root, *mail_ids())  # Dovecot may create users' dirs
        make_traversable(self.mail_root)
        make_traversable(self.dir)
        self._write_passwd()
        with open(self.conf_path, 'w') as f:
            f.write(self._conf())
        for user in self.users:
            make_maildir(self.maildir(user))

    # -- process

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20.0):
        """Writes the config, starts `dovecot -F -c DIR/dovecot.conf`, waits
        until every port accepts. Retries with new ports if one was taken
        meanwhile. Returns self."""
        if self.running:
            return self
        exe = dovecot_path()
        if not exe:
            raise DovecotError('dovecot is not installed')
        t0 = time.monotonic()
        for attempt in range(4):
            self.write_config()
            log_size = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            err = open(self.stderr_path, 'ab')
            try:
                self.proc = subprocess.Popen([exe, '-F', '-c', self.conf_path],
                                             stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                             start_new_session=True)
            finally:
                err.close()
            _live.append(self)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                # the master binds every listener before it forks: probing
                # the plain ports is enough (and keeps TLS noise out of the log)
                if all(port_open(p) for k, p in self.ports.items() if not k.endswith('s')):
                    self.start_seconds = time.monotonic() - t0
                    return self
                time.sleep(0.02)
            rc = self.proc.poll()
            self.stop()
            log = self._log_since(log_size) + '\n' + tail(self.stderr_path, 30)
            if 'Address already in use' in log and attempt < 3:
                self._pick_ports()
                continue
            raise DovecotError('dovecot %s did not start (%s):\n%s' % (
                self.name, 'exit %s' % rc if rc is not None else 'timeout', log.strip()))
        raise DovecotError('dovecot %s did not start' % self.name)

    def _log_since(self, offset):
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(offset)
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def stop(self, graceful=False, timeout=10.0):
        """Stops the Dovecot we started, by its pid: SIGKILL to its process
        group (the master and its children; instant, and Maildir is crash
        safe), or with graceful=True SIGTERM to the master first (Dovecot
        then takes about a second). Waits until every process of the group
        is gone."""
        p = self.proc
        if p is None:
            return
        if p.returncode is None:
            if graceful:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                _wait_nowait(p.pid, timeout)
            try:  # the master is alive or a zombie: its pgid cannot be reused yet
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
            # the children are reparented to init, which may take a while to
            # reap them; what matters is that they are dead (zombies hold no
            # sockets or files)
            deadline = time.monotonic() + 5
            while group_alive(p.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        self.proc = None
        try:
            os.unlink(os.path.join(self.base_dir, 'master.pid'))
        except OSError:
            pass
        if self in _live:
            _live.remove(self)

    def restart(self, **changes):
        """stop(); apply changes (uidl_format=, users=, extra_conf=, cert=, key=,
        ca_file=); start() on the same ports."""
        self.stop()
        for k, v in changes.items():
            if not hasattr(self, k):
                raise AttributeError(k)
            setattr(self, k, v)
        return self.start()

    def log(self):
        return tail(self.log_path, 1000000)


def group_alive(pgid):
    """pids of the live (not zombie) processes in process group pgid."""
    out = []
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % p, 'rb') as f:
                fields = f.read().rsplit(b')', 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in (b'Z', b'X'):
            out.append(int(p))
    return out


def _wait_nowait(pid, timeout):
    """Waits until pid exits without reaping it; True if it exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True
        if r is not None and r.si_pid == pid:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# ---------------------------------------------------------------- seeding

_seed_seq = 0


def seed(dovecot, user, messages, flags='', mtime=None):
    """Writes each message (bytes) as a file into the user's Maildir cur/,
    named "SECS.M<seq>P<pid>.seed,S=<size>:2,<flags>" (so Dovecot keeps the
    given order), owned by the mail uid. mtime (unix time, or a list of
    them) sets the files' mtime, which is Dovecot's INTERNALDATE. Works on a
    running Dovecot too. Returns the list of file paths."""
    global _seed_seq
    md = make_maildir(dovecot.maildir(user) if isinstance(dovecot, Dovecot) else dovecot)
    uid, gid = mail_ids()
    base = int(time.time())
    paths = []
    for i, msg in enumerate(messages):
        if isinstance(msg, str):
            msg = msg.encode('utf-8')
        _seed_seq += 1
        name = '%d.M%06dP%d.seed,S=%d:2,%s' % (base, _seed_seq, os.getpid(), len(msg), flags)
        tmp = os.path.join(md, 'tmp', name.split(':')[0])
        with open(tmp, 'wb') as f:
            f.write(msg)
        _chown(tmp, uid, gid)
        if mtime is not None:
            m = mtime[i] if isinstance(mtime, (list, tuple)) else mtime
            os.utime(tmp, (m, m))
        dst = os.path.join(md, 'cur', name)
        os.rename(tmp, dst)
        paths.append(dst)
    return paths


def maildir_files(path, folder=None):
    """Sorted paths of the messages in a Maildir's new/ and cur/ (folder: a
    Maildir++ folder name like ".Lists.News")."""
    if folder:
        path = os.path.join(path, folder)
    out = []
    for sub in ('new', 'cur'):
        d = os.path.join(path, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, f) for f in os.listdir(d) if not f.startswith('.')]
    return sorted(out)


# ---------------------------------------------------------------- messages

BASE_DATE = 1700000000  # Tue, 14 Nov 2023 22:13:20 +0000

_WORDS = ('mail bridge import message server client folder header body pop imap '
          'legacy provider delivery exactly once maildir dovecot test sample lorem '
          'ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor').split()


def _text_lines(rnd, nbytes, eol=b'\r\n', width=72):
    """Filler text of exactly nbytes, whole lines each ending in eol."""
    out = bytearray()
    while len(out) < nbytes:
        left = nbytes - len(out)
        if left < len(eol):  # no room for another line ending: widen the last line
            pos = max(len(out) - len(eol), 0)
            out[pos:pos] = b'x' * left
            break
        words, n = [], 0
        while n < width:
            w = rnd.choice(_WORDS)
            words.append(w)
            n += len(w) + 1
        out += ' '.join(words).encode()[:left - len(eol)] + eol
    return bytes(out)


def _fmt_date(ts):
    return email.utils.formatdate(ts, localtime=False).replace('-0000', '+0000')


def make_message(i, size=None, subject=None, extra_headers=None, body=None,
                 sender=None, to=None, date=None, message_id=None, tag='m', eol=b'\r\n'):
    """An RFC 5322 message (bytes, eol line endings) numbered i.

    size: total size in bytes (exact when body is None; filler text added).
    subject: str (raw UTF-8 when non-ASCII; pass an RFC 2047 string to encode).
    extra_headers: list of (name, value) or raw header lines (str/bytes).
    body: bytes, used as is (not converted to eol).
    date: unix time (default BASE_DATE + i*60).
    message_id: default "<TAG.I.HASH@pop3bridge.test>" where HASH depends on
    every other argument, so different messages get different ids and the
    same arguments give the same message."""
    date = BASE_DATE + i * 60 if date is None else date
    sender = sender or 'Sender %d <sender%d@example.org>' % (i % 5, i % 5)
    to = to or 'Alice <alice@example.net>'
    subject = 'Test message %d' % i if subject is None else subject
    hdrs = [('From', sender), ('To', to), ('Subject', subject), ('Date', _fmt_date(date))]
    raw_extra = []
    for h in extra_headers or ():
        if isinstance(h, tuple):
            hdrs.append(h)
        else:
            raw_extra.append(h.encode('utf-8') if isinstance(h, str) else h)
    if body is None:
        hdrs.append(('MIME-Version', '1.0'))
        hdrs.append(('Content-Type', 'text/plain; charset=us-ascii'))

    def build(mid, body):
        head = b''.join(('%s: %s' % (k, v)).encode('utf-8') + eol
                        for k, v in [('Message-ID', mid)] + hdrs)
        head += b''.join(h.rstrip(b'\r\n') + eol for h in raw_extra)
        return head + eol + body

    key = repr((tag, i, size, subject, hdrs, raw_extra, body, eol)).encode('utf-8', 'replace')
    mid = message_id or '<%s.%d.%s@pop3bridge.test>' % (tag, i, hashlib.sha256(key).hexdigest()[:12])
    if body is None:
        rnd = random.Random('%s-%d' % (tag, i))
        head_len = len(build(mid, b''))
        want = max(size - head_len, 0) if size else 200
        body = _text_lines(rnd, want, eol)
    return build(mid, body)


def _multipart(i, rnd, attach_bytes, subject, eol=b'\r\n', tag='m'):
    boundary = '=_p3b_%d_%08x' % (i, rnd.getrandbits(32))
    data = rnd.randbytes(attach_bytes)
    b64 = base64.encodebytes(data).replace(b'\n', eol)
    body = (b'This is a multi-part message in MIME format.' + eol + eol +
            b'--' + boundary.encode() + eol +
            b'Content-Type: text/plain; charset=utf-8' + eol +
            b'Content-Transfer-Encoding: 8bit' + eol + eol +
            'Please find the file attached. Gr\u00fc\u00dfe!'.encode() + eol + eol +
            b'--' + boundary.encode() + eol +
            b'Content-Type: application/octet-stream; name="data%d.bin"' % i + eol +
            b'Content-Transfer-Encoding: base64' + eol +
            b'Content-Disposition: attachment; filename="data%d.bin"' % i + eol + eol +
            b64 +
            b'--' + boundary.encode() + b'--' + eol)
    return make_message(i, subject=subject, body=body, tag=tag, eol=eol, extra_headers=[
        ('MIME-Version', '1.0'),
        ('Content-Type', 'multipart/mixed; boundary="%s"' % boundary)])


def make_corpus(n, seed=0):
    """n varied messages (deterministic for a seed), cycling through kinds:
    plain ASCII 200 B..2 KB; text up to 50 KB; large text up to 200 KB;
    raw 8-bit UTF-8 headers and body; CRLF messages with some bare-LF lines;
    LF-only messages; dot-stuffing bait (lines ".", "..", ".x"); a long
    (4000-byte) line; multipart with a base64 attachment (up to 150 KB).
    Exactly one message (index 5 when n > 5, else the last) has a NUL byte
    in its body. Every message has a unique Message-ID and a Date; sizes
    stay within 200 B..200 KB."""
    rnd = random.Random('corpus-%s' % seed)
    tag = 'c%s' % seed
    out = []
    nul_at = 5 if n > 5 else n - 1
    for i in range(n):
        kind = i % 9
        if i == nul_at:
            body = (b'Before the NUL byte.\r\nA NUL here: [\x00] and after it.\r\n' +
                    _text_lines(rnd, rnd.randint(100, 2000)))
            m = make_message(i, subject='NUL byte in body %d' % i, body=body, tag=tag)
        elif kind == 0:
            m = make_message(i, size=rnd.randint(200, 2048), tag=tag)
        elif kind == 1:
            m = make_message(i, size=rnd.randint(2048, 50 * 1024), tag=tag,
                             subject='Medium text %d' % i)
        elif kind == 2:
            m = make_message(i, size=rnd.randint(50 * 1024, 200 * 1024), tag=tag,
                             subject='Large text %d' % i)
        elif kind == 3:
            body = ('Gr\u00fc\u00dfe aus M\u00fcnchen, \u65e5\u672c\u8a9e\u306e\u30c6\u30ad'
                    '\u30b9\u30c8, \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435'
                    '\u043a\u0441\u0442.\r\n').encode() * rnd.randint(1, 40)
            m = make_message(i, tag=tag, body=body,
                             subject='Gr\u00fc\u00dfe \u2013 \u65e5\u672c\u8a9e %d' % i,
                             sender='J\u00fcrgen M\u00fcller <juergen@example.org>',
                             extra_headers=[('MIME-Version', '1.0'),
                                            ('Content-Type', 'text/plain; charset=utf-8'),
                                            ('Content-Transfer-Encoding', '8bit')])
        elif kind == 4:
            lines = _text_lines(rnd, rnd.randint(500, 8000)).split(b'\r\n')
            body = b''.join(l + (b'\n' if j % 3 == 1 else b'\r\n')
                            for j, l in enumerate(lines[:-1]))
            m = make_message(i, tag=tag, body=body, subject='Some bare LF lines %d' % i)
        elif kind == 5:
            m = make_message(i, size=rnd.randint(200, 20000), tag=tag, eol=b'\n',
                             subject='LF-only message %d' % i)
        elif kind == 6:
            body = (b'Dot-stuffing bait follows.\r\n.\r\n..\r\n.x\r\n...\r\n'
                    b'. leading dot and space\r\n' + _text_lines(rnd, rnd.randint(100, 3000)) +
                    b'.\r\nlast line\r\n')
            m = make_message(i, tag=tag, body=body, subject='Dots %d' % i)
        elif kind == 7:
            body = (b'A long line follows.\r\n' + b'x' * 4000 + b'\r\n' +
                    _text_lines(rnd, rnd.randint(100, 1000)))
            m = make_message(i, tag=tag, body=body, subject='Long line %d' % i)
        else:
            m = _multipart(i, rnd, rnd.randint(1024, 150 * 1024),
                           'Attachment %d' % i, tag=tag)
        out.append(m)
    return out


def big_message(mb=20, i=0, seed=0):
    """A ~mb MB message: a text part and a base64 attachment of random bytes."""
    rnd = random.Random('big-%s-%s' % (seed, i))
    return _multipart(i, rnd, int(mb * 1024 * 1024 * 57 / 78), 'Big attachment %d MB' % mb,
                      tag='big%s' % seed)


# ---------------------------------------------------------------- canonical form

def canonical(body):
    """body with every line ending made CRLF (bare LF -> CRLF, CRLF kept, a
    lone CR kept), so that a message can be compared between a Maildir file
    (LF, or anything), a POP3 RETR (CRLF) and an IMAP FETCH (CRLF).

    What Dovecot 2.3.19 does with a Maildir file (found by trying it; the
    test test_harness.py:test_dovecot_nul_and_bare_lf keeps checking it):
    - POP3 RETR: bare LF is sent as CRLF, CRLF as is, a lone CR as is;
      lines starting with "." are dot-stuffed; a NUL byte is sent as is.
      A message whose last line has no line ending gets CRLF appended before
      the terminating "." -- and that CRLF is NOT counted in the LIST/RETR
      size, so "bytes received" can exceed "LIST size" by 2. LIST/STAT
      sizes are those of canonical(file).
    - IMAP FETCH BODY[]: bare LF is sent as CRLF; a NUL byte is sent as
      0x80 (IMAP literals may not carry NUL); nothing is appended.
    So canonical() only unifies line endings and keeps every other byte,
    NULs included: byte-identical delivery is checked honestly by comparing
    canonical(POP3 RETR) with canonical(the Maildir file pop3bridge wrote)
    (maildir_files()), which must be equal. Over IMAP a NUL cannot be seen;
    compare imap_view(source) with the fetched body. pop3_view(original)
    is what RETR returns for a seeded file."""
    if isinstance(body, str):
        body = body.encode('utf-8')
    return re.sub(rb'\r?\n', b'\r\n', body)


def pop3_view(body):
    """What Dovecot's POP3 RETR returns (after dot-unstuffing) for a Maildir
    file holding body: canonical(body), plus CRLF if it did not end in one."""
    b = canonical(body)
    return b if b.endswith(b'\r\n') or not b else b + b'\r\n'


def body_hash(b):
    """sha256 hex of canonical(b)."""
    return hashlib.sha256(canonical(b)).hexdigest()


def imap_view(body):
    """canonical(body) as Dovecot's IMAP FETCH shows it: NUL -> 0x80. Compare
    body_hash(imap_view(original)) with body_hash(fetched_over_imap)."""
    return canonical(body).replace(b'\x00', b'\x80')


# ---------------------------------------------------------------- POP3 client

def pop3_connect(dovecot, user='alice', password='secret', tls=False, timeout=30):
    """A logged-in poplib client (plain port, or POP3S verified with the CA)."""
    if tls:
        ctx = ssl.create_default_context(cafile=dovecot.ca_file)
        p = poplib.POP3_SSL('localhost', dovecot.ports['pop3s'], context=ctx, timeout=timeout)
    else:
        p = poplib.POP3('127.0.0.1', dovecot.ports['pop3'], timeout=timeout)
    p.user(user)
    p.pass_(password)
    return p


def pop3_stat(dovecot, user='alice', password='secret', tls=False):
    """(count, octets) from POP3 STAT."""
    p = pop3_connect(dovecot, user, password, tls)
    try:
        return p.stat()
    finally:
        p.quit()


def pop3_uidls(dovecot, user='alice', password='secret', tls=False):
    """The UIDLs in message order (list of str)."""
    p = pop3_connect(dovecot, user, password, tls)
    try:
        resp, lines, _ = p.uidl()
        return [l.split(None, 1)[1].decode('ascii') for l in lines]
    finally:
        p.quit()


def pop3_retr_all(dovecot, user='alice', password='secret', tls=False):
    """Every message as RETR returns it (dot-unstuffed, CRLF line endings)."""
    p = pop3_connect(dovecot, user, password, tls)
    try:
        n = p.stat()[0]
        out = []
        for k in range(1, n + 1):
            resp, lines, _ = p.retr(k)
            out.append(b''.join(l + b'\r\n' for l in lines))
        return out
    finally:
        p.quit()


# ---------------------------------------------------------------- IMAP client

def mutf7_decode(s):
    """IMAP modified UTF-7 (RFC 3501 5.1.3) to str."""
    if isinstance(s, bytes):
        s = s.decode('ascii')
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c != '&':
            out.append(c)
            i += 1
            continue
        j = s.index('-', i)
        chunk = s[i + 1:j]
        if not chunk:
            out.append('&')
        else:
            b = chunk.replace(',', '/')
            b += '=' * (-len(b) % 4)
            out.append(base64.b64decode(b).decode('utf-16-be'))
        i = j + 1
    return ''.join(out)


def mutf7_encode(s):
    """str to IMAP modified UTF-7."""
    out, buf = [], []

    def flush():
        if buf:
            b = base64.b64encode(''.join(buf).encode('utf-16-be')).decode().rstrip('=')
            out.append('&' + b.replace('/', ',') + '-')
            buf.clear()
    for c in s:
        if 0x20 <= ord(c) <= 0x7e:
            flush()
            out.append('&-' if c == '&' else c)
        else:
            buf.append(c)
    flush()
    return ''.join(out)


def _q(name):
    return '"' + name.replace('\\', '\\\\').replace('"', '\\"') + '"'


def imap_connect(dovecot, user='alice', password='secret', tls=False, timeout=60):
    if tls:
        ctx = ssl.create_default_context(cafile=dovecot.ca_file)
        m = imaplib.IMAP4_SSL('localhost', dovecot.ports['imaps'], ssl_context=ctx,
                              timeout=timeout)
    else:
        m = imaplib.IMAP4('127.0.0.1', dovecot.ports['imap'], timeout=timeout)
    m.login(user, password)
    return m


_LIST_RE = re.compile(rb'\((?P<flags>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"])*") (?P<name>.*)$')


def _list(m):
    """[(flags, delim, raw mailbox name)] from LIST "" "*"."""
    typ, data = m.list('""', '*')
    out = []
    it = iter(data)
    for item in it:
        if item is None:
            continue
        if isinstance(item, tuple):  # name sent as a literal
            head, lit = item
            mm = _LIST_RE.match(head.rsplit(b' {', 1)[0] + b' ""')
            out.append((mm.group('flags').decode(), _unq(mm.group('delim')), lit.decode('ascii')))
            continue
        mm = _LIST_RE.match(item)
        if not mm:
            continue
        out.append((mm.group('flags').decode(), _unq(mm.group('delim')), _unq(mm.group('name'))))
    return out


def _unq(b):
    s = b.decode('ascii') if isinstance(b, bytes) else b
    if s == 'NIL':
        return None
    if s.startswith('"') and s.endswith('"'):
        s = re.sub(r'\\(.)', r'\1', s[1:-1])
    return s


def _server_name(m, folder):
    """A folder written with "/" as hierarchy separator, as the server names it."""
    if folder.upper() == 'INBOX':
        return 'INBOX'
    typ, data = m.list('""', '""')
    mm = _LIST_RE.match(data[0])
    delim = _unq(mm.group('delim')) if mm else '.'
    return mutf7_encode(folder.replace('/', delim or '/'))


def imap_list(dovecot, user='alice', password='secret', sep='/', selectable=False):
    """Folder names (str, decoded from modified UTF-7), sorted; the server's
    hierarchy delimiter is shown as sep (None: as the server sends it).
    selectable: leave out \\Noselect / \\NonExistent names (e.g. "Lists"
    when only "Lists/News" exists)."""
    m = imap_connect(dovecot, user, password)
    try:
        out = []
        for flags, delim, name in _list(m):
            if selectable and re.search(r'(?i)\\(noselect|nonexistent)\b', flags):
                continue
            name = mutf7_decode(name)
            if sep is not None and delim:
                name = name.replace(delim, sep)
            out.append(name)
        return sorted(out)
    finally:
        m.logout()


def _parse_internaldate(s):
    """'14-Nov-2023 22:13:20 +0000' -> unix time."""
    tt = time.strptime(s[:20].strip(), '%d-%b-%Y %H:%M:%S')
    zone = s[21:].strip()
    off = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[0] == '-' else 1)
    return calendar.timegm(tt) - off


def imap_fetch_all(dovecot, user='alice', password='secret', folder='INBOX'):
    """Every message of folder ("/" as hierarchy separator), in UID order, as
    dicts {uid, flags (list of str), internaldate (unix time), body (bytes of
    BODY.PEEK[])}. Read-only (EXAMINE): flags are not changed."""
    m = imap_connect(dovecot, user, password)
    try:
        typ, data = m.select(_q(_server_name(m, folder)), readonly=True)
        if typ != 'OK':
            raise RuntimeError('EXAMINE %s: %s' % (folder, data))
        if int(data[0]) == 0:
            return []
        typ, data = m.uid('FETCH', '1:*', '(UID FLAGS INTERNALDATE BODY.PEEK[])')
        if typ != 'OK':
            raise RuntimeError('FETCH: %s' % data)
        out = []
        cur = None
        for item in data:
            if isinstance(item, tuple):
                meta, lit = item
                cur = {'body': lit}
                _fetch_meta(cur, meta)
                out.append(cur)
            elif isinstance(item, bytes) and cur is not None:
                _fetch_meta(cur, item)  # items sent after the literal
        out.sort(key=lambda d: d['uid'])
        return out
    finally:
        m.logout()


def _fetch_meta(d, meta):
    mm = re.search(rb'UID (\d+)', meta)
    if mm:
        d['uid'] = int(mm.group(1))
    mm = re.search(rb'FLAGS \(([^)]*)\)', meta)
    if mm:
        d['flags'] = mm.group(1).decode().split()
    mm = re.search(rb'INTERNALDATE "([^"]+)"', meta)
    if mm:
        d['internaldate'] = _parse_internaldate(mm.group(1).decode())


def imap_count(dovecot, user='alice', password='secret', folder='INBOX'):
    """Number of messages in folder ("/" as hierarchy separator)."""
    m = imap_connect(dovecot, user, password)
    try:
        name = _server_name(m, folder)
        typ, data = m.status(_q(name), '(MESSAGES)')
        if typ != 'OK':
            raise RuntimeError('STATUS %s: %s' % (folder, data))
        return int(re.search(rb'MESSAGES (\d+)', data[0]).group(1))
    finally:
        m.logout()


def header(body, name):
    """A header of a message, decoded (RFC 2047 and raw UTF-8) to str; None."""
    head = canonical(body).split(b'\r\n\r\n', 1)[0]
    mm = re.search(rb'(?im)^' + re.escape(name.encode()) + rb':[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)', head)
    if not mm:
        return None
    raw = mm.group(1).replace(b'\r\n', b'').decode('utf-8', 'replace')
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except Exception:
        return raw


# ---------------------------------------------------------------- pop3bridge

def bridge_binary():
    """$POP3BRIDGE, else the repo's ./pop3bridge (absolute path)."""
    return os.path.abspath(os.environ.get('POP3BRIDGE') or os.path.join(REPO, 'pop3bridge'))


def write_config(path, text):
    """Writes a config file with mode 0600 (pop3bridge refuses readable ones)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def cq(s):
    """A libconfuse quoted string."""
    return '"' + str(s).replace('\\', '\\\\').replace('"', '\\"') + '"'


def account_block(name, dovecot, user='alice', password='secret', folder='INBOX',
                  local_user='alice', tls='implicit', extra='', pop3_extra='', **opts):
    """An account "NAME" { ... } block fetching from dovecot. tls: "implicit"
    (pop3s port, ca_file = dovecot.ca_file), "starttls" or "none" (pop3
    port; "none" sets allow_plaintext). opts: more pop3 {} settings
    (auth="apop", timeout=5); extra: raw text inside the account block."""
    port = dovecot.ports['pop3s' if tls == 'implicit' else 'pop3']
    pop3 = ['host = "localhost"', 'port = %d' % port, 'tls = %s' % cq(tls),
            'user = %s' % cq(user)]
    if password is not None:
        pop3.append('password = %s' % cq(password))
    if tls != 'none' and dovecot.ca_file:
        pop3.append('ca_file = %s' % cq(dovecot.ca_file))
    if tls == 'none':
        pop3.append('allow_plaintext = true')
    for k, v in opts.items():
        pop3.append('%s = %s' % (k, cq(v) if isinstance(v, str) else
                                 ('true' if v is True else 'false' if v is False else v)))
    if pop3_extra:
        pop3.append(pop3_extra)
    return ('account %s {\n  local_user = %s\n  folder = %s\n  pop3 {\n    %s\n  }\n%s}\n'
            % (cq(name), cq(local_user), cq(folder), '\n    '.join(pop3),
               ('  ' + extra.strip() + '\n') if extra else ''))


def config_text(state_dir, store_path, accounts, extra=''):
    """A whole config: state_dir, a maildir store at store_path ("%u" allowed),
    the account blocks (strings from account_block) and extra top-level text."""
    return ('state_dir = %s\nstore {\n  type = "maildir"\n  path = %s\n}\n%s\n%s'
            % (cq(state_dir), cq(store_path), extra, ''.join(accounts)))


def run_bridge(config, *args, timeout=300, check=False, env=None, input=None, text=True):
    """Runs `pop3bridge -c CONFIG ARGS...`; CompletedProcess with stdout and
    stderr captured (str, or bytes with text=False or bytes input). check:
    raise RuntimeError with the output when the exit code is not 0."""
    cmd = [bridge_binary()] + (['-c', config] if config else []) + [str(a) for a in args]
    if isinstance(input, bytes):
        text = False
    e = dict(os.environ)
    e.update(env or {})
    kw = {'errors': 'replace'} if text else {}
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, env=e,
                       text=text, stdin=None if input is not None else subprocess.DEVNULL,
                       **kw)
    if check and p.returncode != 0:
        raise RuntimeError('%s exited %d\n--- stdout\n%s\n--- stderr\n%s' % (
            ' '.join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def start_bridge(config, *args, env=None, log=None):
    """Starts `pop3bridge -c CONFIG ARGS...` in the background (e.g. "run"),
    stdout+stderr to log (default CONFIG.DIR/pop3bridge-PID.log, also in
    .log_path). Stopped at exit if still running; stop it with stop_process."""
    cmd = [bridge_binary()] + (['-c', config] if config else []) + [str(a) for a in args]
    e = dict(os.environ)
    e.update(env or {})
    if log is None:
        log = os.path.join(os.path.dirname(os.path.abspath(config or '.')),
                           'pop3bridge-%d.log' % int(time.time() * 1000))
    f = open(log, 'ab')
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=e)
    finally:
        f.close()
    p.log_path = log
    _live.append(p)
    return p


def stop_process(p, sig=signal.SIGTERM, timeout=15):
    """Sends sig to a Popen we started, waits (SIGKILL after timeout);
    returns its exit code (negative: killed by a signal)."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in _live:
        _live.remove(p)
    return p.returncode


_SANITIZER_RE = re.compile(r'ERROR: (?:Address|Leak|Memory|Thread)Sanitizer|runtime error: |'
                           r'SUMMARY: (?:Address|UndefinedBehavior)Sanitizer')


def sanitizer_report(text):
    """The first line of an ASan/LSan/UBSan report in text (str or bytes), or None."""
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    for line in (text or '').splitlines():
        if _SANITIZER_RE.search(line):
            return line.strip()
    return None


# ---------------------------------------------------------------- test framework

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
        self.add_log(log, 'pop3bridge %s' % ' '.join(map(str, args)))
        rep = sanitizer_report(err)
        self.check(rep is None, 'sanitizer: pop3bridge %s: %s' % (' '.join(map(str, args)), rep))
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
                rep = sanitizer_report(f.read())
            self.check(rep is None, 'sanitizer: pop3bridge %s: %s' % (' '.join(map(str, args)), rep))
        self.cleanup(stop)
        self.add_log(p.log_path, 'pop3bridge %s' % ' '.join(map(str, args)))
        return p

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


def _on_sigterm(signum, frame):
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
    sys.exit(1 if failed else 0)
