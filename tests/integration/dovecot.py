"""The Dovecot fixture of the integration tests: throwaway Dovecot 2.3
instances on free 127.0.0.1 ports, and the Maildirs they serve.

    Dovecot(workdir, users=, cert=, key=, ca_file=, uidl_format=, protocols=,
            mail_root=, extra_conf=)     .start() .stop() .restart(**changes)
                                        .ports .ca_file .maildir(user) .log_path
                                        .set_user(user, pw)
    dovecot_path()                      the dovecot binary, or None
    mail_ids()                          (uid, gid) owning test mail (user MAIL_USER)
    make_traversable(path), make_maildir(path, subfolders)
    seed(dovecot, user, messages), maildir_files(path, folder)

Dovecot as root drops privileges for its auth and mail processes: mail
belongs to MAIL_USER and every directory on the way to it must be
traversable (make_traversable); as non-root it cannot chroot its login
processes, and unix socket paths must stay under 108 bytes (base_dir).
mail_ids() caches its answer in this module, and every started Dovecot is
registered with processes.track (stopped at exit)."""

import atexit
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

from pki import default_certs
from processes import free_ports, group_alive, poll, port_open, tail, track, untrack, wait_nowait

MAIL_USER = 'p3b-mail'


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
        keys = [k for proto in self.protocols for k in (proto, proto + 's')]
        self.ports = dict(zip(keys, free_ports(len(keys))))

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
            '# written by tests/integration/dovecot.py',
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
            track(self, self.stop)
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
                wait_nowait(p.pid, timeout)
            try:  # the master is alive or a zombie: its pgid cannot be reused yet
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
            # the children are reparented to init, which may take a while to
            # reap them; what matters is that they are dead (zombies hold no
            # sockets or files)
            poll(lambda: not group_alive(p.pid), 5, 0.01)
        self.proc = None
        try:
            os.unlink(os.path.join(self.base_dir, 'master.pid'))
        except OSError:
            pass
        untrack(self)

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
