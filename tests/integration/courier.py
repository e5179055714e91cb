"""A throwaway Courier (pop3d + imapd, Courier-IMAP 5 / Courier 1.0 from
Debian) for integration tests, run from the packages scripts/test-servers
unpacked (they conflict with dovecot-pop3d/imapd and are never installed).

    c = Courier(workdir, users={'alice': 'secret'}).start()
    c.ports['pop3'|'pop3s'|'imap'|'imaps'], c.ca_file, c.maildir(user)
    c.seed(user, messages), c.view(message), c.log_path, c.stop()
    c = for_test(t, 'courier')         started, stopped and logged by t

ports/ca_file follow harness.Dovecot, so harness.pop3_connect, imap_connect,
imap_list ... work on a Courier too. Plain pop3 offers STLS and plain imap
STARTTLS (starttls=False: neither); pop3s/imaps are implicit TLS, all with
the harness's test certificate. Users log in with USER/PASS or LOGIN
through Courier's authdaemond with a userdb (crypt passwords), mail is
MAILDIR = workdir/mail/USER/Maildir owned by harness.mail_ids().

What Courier does differently (checked by test_servers.py):
- pop3d advertises "UTF8 USER" and, to a client that has not sent UTF8,
  sends every message with raw 8-bit headers replaced by a notice
  ("Cannot display Unicode content", the original attached as
  message/global). Its CAPA also says "LOGIN-DELAY 10" (compiled in;
  not enforced).
- imapd's personal namespace is "INBOX." with delimiter ".": CREATE "Foo"
  is refused ("Invalid mailbox name"), CREATE "INBOX.Foo" works.
- Its Maildir files hold LF line endings; both daemons turn LF into CRLF
  on the wire, so a file written with CRLF is sent with CR CR LF. seed()
  writes LF; view(message) is what RETR and FETCH BODY[] return.

The binaries read /etc/courier (authdaemonrc, userdb.dat, the certificate)
and talk to authdaemond over /run/courier/authdaemon/socket. Those paths
are served inside isolated.Isolated's mount namespace: an overlay on /etc
whose upper layer is in workdir (so /etc/courier can be made without
touching the real /etc), workdir/etc bind-mounted on /etc/courier, and a
tmpfs on /run. Nothing of it is seen outside."""

import grp
import os
import shlex
import shutil
import subprocess

import harness
import isolated

AUTHDAEMOND = '/usr/lib/courier/courier-authlib/authdaemond'   # courier-authlib
MAKEUSERDB = '/usr/sbin/makeuserdb'                             # courier-authlib-userdb

# Debian's /etc/courier/imapd defaults
IMAP_CAPABILITY = ('IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT '
                   'THREAD=REFERENCES SORT QUOTA IDLE')


def available():
    """None when Courier can run here, else why not (a str)."""
    why = isolated.can_isolate()
    if why:
        return why
    if not isolated.unpacked_root('courier'):
        return 'Courier is not unpacked in %s (run scripts/test-servers as root)' % (
            isolated.SERVERS_DIR)
    for f in (AUTHDAEMOND, MAKEUSERDB):
        if not os.access(f, os.X_OK):
            return '%s missing (run scripts/test-servers as root)' % f
    return None


def crypt_password(password):
    """A SHA-512 crypt(3) hash of password (openssl passwd -6)."""
    p = subprocess.run(['openssl', 'passwd', '-6', '-stdin'], input=password + '\n',
                       capture_output=True, text=True, check=True)
    return p.stdout.strip()


def lf_lines(message):
    """message (bytes or str) with CRLF line endings turned into LF, as
    Courier's and Mailutils' Maildir files are kept."""
    if isinstance(message, str):
        message = message.encode('utf-8')
    return message.replace(b'\r\n', b'\n')


class Courier(isolated.IsolatedServer):
    """Courier pop3d (pop3 with STLS, pop3s) and imapd (imap with STARTTLS,
    imaps) on free ports of 127.0.0.1. env: more or other environment for
    the daemons, as in Courier's /etc/courier/pop3d and imapd (e.g.
    {'POP3AUTH': 'PLAIN LOGIN'}, {'IMAP_CAPABILITY': ...})."""

    KIND = 'courier'
    PORTS = ('pop3', 'pop3s', 'imap', 'imaps')

    def __init__(self, workdir, users=None, cert=None, key=None, ca_file=None,
                 starttls=True, env=None, name=None):
        self.dir = os.path.abspath(workdir)
        os.makedirs(self.dir, exist_ok=True)
        harness.make_traversable(self.dir)
        self.users = dict(users if users is not None else {'alice': 'secret'})
        if cert is None:
            c = harness.default_certs()
            cert, key = c.cert, c.key
            ca_file = ca_file or c.ca_file
        self.cert, self.key, self.ca_file = cert, key, ca_file
        self.starttls = starttls
        self.env = dict(env or {})
        self.name = name or os.path.basename(self.dir)
        self.root = isolated.unpacked_root('courier')
        self.etc = os.path.join(self.dir, 'etc')        # /etc/courier inside
        self.mail_root = os.path.join(self.dir, 'mail')
        self.log_path = os.path.join(self.dir, 'courier.log')
        self.script = os.path.join(self.dir, 'start.sh')
        self.ports = {}
        self.start_seconds = None  # how long the last start() took
        self._iso = None

    def maildir(self, user):
        return os.path.join(self.mail_root, user, 'Maildir')

    def seed(self, user, messages, flags='', mtime=None):
        """Writes messages (bytes) into the user's Maildir cur/ with LF line
        endings (harness.seed, so in the given order); returns the paths."""
        return harness.seed(self.maildir(user), None, [lf_lines(m) for m in messages],
                            flags=flags, mtime=mtime)

    @staticmethod
    def view(message):
        """What pop3d RETR (after UTF8) and imapd FETCH BODY[] return for a
        message seed() wrote: every line ending CRLF, CRLF added at the end
        of a last line without one."""
        return harness.pop3_view(message)

    # -- configuration

    def _write_config(self):
        why = available()
        if why:
            raise isolated.IsolatedError('Courier cannot run: ' + why)
        uid, gid = harness.mail_ids()
        os.makedirs(self.etc, exist_ok=True)
        os.makedirs(self.mail_root, exist_ok=True)
        os.chmod(self.mail_root, 0o755)
        lines = []
        for user, pw in self.users.items():
            home = os.path.join(self.mail_root, user)
            harness.make_maildir(self.maildir(user))
            lines.append('%s\tuid=%d|gid=%d|home=%s|mail=%s|systempw=%s\n'
                         % (user, uid, gid, home, self.maildir(user), crypt_password(pw)))
        userdb = os.path.join(self.etc, 'userdb')
        fd = os.open(userdb, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.writelines(lines)
        os.chmod(userdb, 0o600)  # makeuserdb refuses anything else
        p = subprocess.run([MAKEUSERDB, '-f', userdb], capture_output=True, text=True)
        if p.returncode != 0:
            raise isolated.IsolatedError('makeuserdb: %s' % (p.stderr or p.stdout).strip())
        with open(os.path.join(self.etc, 'authdaemonrc'), 'w') as f:
            # DEBUG_LOGIN=2 would log passwords
            f.write('authmodulelist="authuserdb"\nauthmodulelistorig="authuserdb"\n'
                    'daemons=2\nauthdaemonvar=/run/courier/authdaemon\nDEBUG_LOGIN=0\n'
                    'DEFAULTOPTIONS=""\nLOGGEROPTS=""\n')
        # couriertls wants key and certificate in one file; pop3login reads
        # it for STLS after dropping to the courier user
        pem = os.path.join(self.etc, 'cert.pem')
        with open(self.key, 'rb') as k, open(self.cert, 'rb') as c:
            data = k.read() + c.read()
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        try:
            os.chown(pem, 0, grp.getgrnam('courier').gr_gid)
            os.chmod(pem, 0o640)
        except KeyError:
            os.chmod(pem, 0o644)
        with open(self.script, 'w') as f:
            f.write(self._script())

    def _daemon_env(self, kind):
        tls = kind.endswith('s')
        env = {'PATH': '/usr/bin:/bin',
               'COURIERTLS': os.path.join(self.root, 'usr/bin/couriertls'),
               'TLS_CERTFILE': '/etc/courier/cert.pem', 'TLS_VERIFYPEER': 'NONE'}
        if kind.startswith('pop3'):
            env.update({'POP3AUTH': '', 'POP3AUTH_TLS': '', 'POP3_TLS_REQUIRED': '0',
                        'POP3_STARTTLS': 'YES' if self.starttls and not tls else 'NO',
                        'MIME_UNICODE_MESSAGE_TYPE': 'message/global'})
            if tls:
                env['POP3_TLS'] = '1'
        else:
            env.update({'IMAP_CAPABILITY': IMAP_CAPABILITY,
                        'IMAP_CAPABILITY_TLS': IMAP_CAPABILITY + ' AUTH=PLAIN',
                        'IMAP_STARTTLS': 'YES' if self.starttls and not tls else 'NO',
                        'IMAP_TLS_REQUIRED': '0', 'IMAP_KEYWORDS': '1', 'IMAP_ACL': '1',
                        'IMAP_IDLE_TIMEOUT': '60', 'IMAP_MAILBOX_SANITY_CHECK': '1',
                        'IMAP_UMASK': '022', 'IMAP_USELOCKS': '1',
                        'IMAP_TRASHFOLDERNAME': 'Trash', 'IMAP_MOVE_EXPUNGE_TO_TRASH': '0',
                        'IMAP_ENHANCEDIDLE': '0'})
            if tls:
                env['IMAP_TLS'] = '1'
        env.update(self.env)
        return env

    def _script(self):
        q = shlex.quote
        r = lambda p: q(os.path.join(self.root, p))
        ov = os.path.join(self.dir, 'overlay')
        lines = [
            '# written by tests/integration/courier.py; run by isolated.py inside',
            '# private mount and PID namespaces (sh -e: any failure ends it)',
            'mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc'
            % (q(ov + '/upper'), q(ov + '/work')),
            'mkdir /etc/courier',
            'mount --bind %s /etc/courier' % q(self.etc),
            'mount -t tmpfs -o mode=0755 tmpfs /run',
            'mkdir -p /run/courier/authdaemon',
            '%s &' % q(AUTHDAEMOND),
            'n=0',
            'while [ ! -S /run/courier/authdaemon/socket ]; do',
            '  n=$((n + 1)); [ $n -lt 400 ] || { echo "authdaemond did not start"; exit 1; }',
            '  sleep 0.05',
            'done',
        ]
        tcpd = ('%s -address=127.0.0.1 -nodnslookup -noidentlookup -maxprocs=100 '
                '-maxperip=100 -stderr=%s' % (r('usr/sbin/couriertcpd'), q(self.log_path)))
        progs = {'pop3': '%s %s Maildir' % (r('usr/lib/courier/courier/courierpop3login'),
                                            r('usr/lib/courier/courier/courierpop3d')),
                 'imap': '%s %s Maildir' % (r('usr/lib/courier/courier/imaplogin'),
                                            r('usr/bin/imapd'))}
        for kind in ('pop3', 'pop3s', 'imap', 'imaps'):
            env = ' '.join('%s=%s' % (k, q(v)) for k, v in sorted(self._daemon_env(kind).items()))
            tls = ('%s -server -tcpd ' % r('usr/bin/couriertls')) if kind.endswith('s') else ''
            lines.append('env -i %s %s %d %s%s &' % (env, tcpd, self.ports[kind], tls,
                                                      progs[kind.rstrip('s')]))
        lines.append('wait')
        return '\n'.join(lines) + '\n'

    # -- process (isolated.IsolatedServer: start, running, members, stop, log)

    def _prepare(self):
        ov = os.path.join(self.dir, 'overlay')
        shutil.rmtree(ov, ignore_errors=True)  # overlayfs wants an empty workdir
        os.makedirs(os.path.join(ov, 'upper'))
        os.makedirs(os.path.join(ov, 'work'))
        self._write_config()


def for_test(t, name='courier', start=True, **kw):
    """A Courier in t.path(name), stopped when the test ends (also when it
    fails), its log shown on failure; skips the test when Courier cannot run
    as non-root, fails it when the packages are missing."""
    why = isolated.can_isolate()
    if why:
        t.skip('Courier: ' + why)
    c = Courier(t.path(name), name=name, **kw)
    t.cleanup(c.stop)
    t.add_log(c.log_path, 'courier %s log' % name)
    return c.start() if start else c
