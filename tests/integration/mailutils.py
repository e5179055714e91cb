"""A throwaway GNU Mailutils pop3d (3.15, Debian's mailutils-pop3d) for
integration tests, run from the package scripts/test-servers unpacked (it
conflicts with dovecot-pop3d and is never installed). Plain POP3 only.

    m = Mailutils(workdir, users={'test@example.com': 'secret'}).start()
    m.ports['pop3'], m.maildir(user), m.seed(user, messages),
    m.view(message, uidl), m.log_path, m.stop()
    m = for_test(t, 'mailutils', login_delay=600)   started, stopped by t

ports follows harness.Dovecot (harness.pop3_connect(m, user, pw) works).
Users log in as user@domain with USER/PASS: `virtdomain` authorization,
one passwd-format file per domain (crypt hashes, the mail uid/gid, home
workdir/mail/USER); the mailbox is HOME/INBOX, a Maildir.

How this pop3d behaves (checked by test_servers.py):
- expire=0, delete_expired=True (the defaults here) make it enforce
  EXPIRE 0: every message retrieved (RETR or TOP) in a session that ends
  with QUIT is deleted, RSET or not; a session closed without QUIT deletes
  nothing. expire=None leaves the statement out.
- Its greeting carries an APOP timestamp, but it has no APOP secret for
  these users: APOP gets "-ERR [AUTH] Bad login", USER/PASS works.
- Its CAPA is malformed: login-delay and expire are announced as lines
  "600" and "EXPIRE0", not "LOGIN-DELAY 600" and "EXPIRE 0".
- login_delay=N is enforced (a second login within N s gets "-ERR
  [LOGIN-DELAY] ...") only because the stat-file is made here, empty and
  0600: pop3d creates a missing one 0660 and then refuses it as group
  readable, after which it neither enforces the delay nor announces it.
- A Maildir file must hold LF line endings (a CRLF file is read as an empty
  message, and rewritten as one at QUIT); seed() writes LF.
- The UIDL of a message with an X-UIDL header is that header's value;
  other messages get a generated one, and once a client has asked for it
  (UIDL) the message gets an "X-UIDL: <uidl>" line at the end of its
  header: LIST, STAT and RETR include it from then on, and QUIT writes it
  into the file. view(message, uidl) is what RETR returns after UIDL,
  view(message) before.
- It locks Maildirs under /var/lock/subsys/mail (else every login gets
  "-ERR [IN-USE]"): the script mounts a tmpfs on /run/lock, where
  /var/lock points, inside isolated.py's namespace, never on the real one.
- At QUIT it renames the files (",a=O,u=N" in the name) and rewrites the
  ones it changed (owner root:mail, mode 0600).

The port is watched with `ss` (isolated.py), never probed: this pop3d
logs a connection closed without QUIT as a protocol error."""

import os
import shlex

import harness
import isolated
from courier import crypt_password, lf_lines


def available():
    """None when Mailutils pop3d can run here, else why not (a str)."""
    why = isolated.can_isolate()
    if why:
        return why
    if not isolated.unpacked_root('mailutils'):
        return 'Mailutils is not unpacked in %s (run scripts/test-servers as root)' % (
            isolated.SERVERS_DIR)
    return None


class Mailutils(isolated.IsolatedServer):
    """pop3d on a free port of 127.0.0.1 (ports['pop3']). expire: days
    (0: EXPIRE 0) or None; delete_expired: delete expired messages at QUIT;
    login_delay: seconds or None; extra_conf: more pop3d config text."""

    KIND = 'mailutils'
    PORTS = ('pop3',)

    def __init__(self, workdir, users=None, expire=0, delete_expired=True, login_delay=None,
                 extra_conf='', name=None):
        self.dir = os.path.abspath(workdir)
        os.makedirs(self.dir, exist_ok=True)
        harness.make_traversable(self.dir)
        self.users = dict(users if users is not None else {'test@example.com': 'secret'})
        for u in self.users:
            if u.count('@') != 1:
                raise ValueError('Mailutils users are user@domain: %r' % u)
        self.expire = expire
        self.delete_expired = delete_expired
        self.login_delay = login_delay
        self.extra_conf = extra_conf
        self.name = name or os.path.basename(self.dir)
        self.root = isolated.unpacked_root('mailutils')
        self.ca_file = None  # no TLS
        self.mail_root = os.path.join(self.dir, 'mail')
        self.passwd_dir = os.path.join(self.dir, 'virtdomain')
        self.stat_file = os.path.join(self.dir, 'state', 'logins.db')
        self.conf_path = os.path.join(self.dir, 'pop3d.conf')
        self.log_path = os.path.join(self.dir, 'pop3d.log')
        self.script = os.path.join(self.dir, 'start.sh')
        self.ports = {}
        self.start_seconds = None  # how long the last start() took
        self._iso = None

    def home(self, user):
        return os.path.join(self.mail_root, user)

    def maildir(self, user):
        return os.path.join(self.home(user), 'INBOX')

    def seed(self, user, messages, flags='', mtime=None):
        """Writes messages (bytes) into the user's Maildir cur/ with LF line
        endings (harness.seed, so in the given order); returns the paths."""
        return harness.seed(self.maildir(user), None, [lf_lines(m) for m in messages],
                            flags=flags, mtime=mtime)

    @staticmethod
    def view(message, uidl=None):
        """What RETR returns for a message seed() wrote: CRLF line endings
        (and a final one), and, when its UIDL uidl has been asked, "X-UIDL:
        uidl" as the last header line unless it has an X-UIDL header."""
        b = harness.pop3_view(message)
        if uidl is None or harness.header(b, 'X-UIDL') is not None:
            return b
        head, sep, body = b.partition(b'\r\n\r\n')
        uidl = uidl.encode('ascii') if isinstance(uidl, str) else uidl
        return head + b'\r\nX-UIDL: ' + uidl + b'\r\n\r\n' + body

    # -- configuration

    def _write_config(self):
        why = available()
        if why:
            raise isolated.IsolatedError('Mailutils cannot run: ' + why)
        uid, gid = harness.mail_ids()
        os.makedirs(self.passwd_dir, exist_ok=True)
        os.makedirs(os.path.dirname(self.stat_file), exist_ok=True)
        os.makedirs(self.mail_root, exist_ok=True)
        os.chmod(self.mail_root, 0o755)
        domains = {}
        for user, pw in self.users.items():
            local, domain = user.split('@')
            harness.make_maildir(self.maildir(user))
            domains.setdefault(domain, []).append('%s:%s:%d:%d::%s:/bin/sh\n' % (
                local, crypt_password(pw), uid, gid, self.home(user)))
        for domain, lines in domains.items():
            path = os.path.join(self.passwd_dir, domain)
            with open(path, 'w') as f:
                f.writelines(lines)
            os.chmod(path, 0o600)
        conf = ['# written by tests/integration/mailutils.py',
                'logging { syslog no; };',
                'auth { authorization virtdomain; authentication generic; };',
                'virtdomain { passwd-dir %s; };' % _cq(self.passwd_dir)]
        if self.expire is not None:
            conf.append('expire %d;' % self.expire)
        conf.append('delete-expired %s;' % ('yes' if self.delete_expired else 'no'))
        if self.login_delay:
            # gdbm takes an empty file for a new database
            fd = os.open(self.stat_file, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(self.stat_file, 0o600)
            conf += ['login-delay %d;' % self.login_delay, 'stat-file %s;' % _cq(self.stat_file)]
        conf.append('server 127.0.0.1:%d { transcript no; };' % self.ports['pop3'])
        if self.extra_conf:
            conf.append(self.extra_conf)
        with open(self.conf_path, 'w') as f:
            f.write('\n'.join(conf) + '\n')
        q = shlex.quote
        with open(self.script, 'w') as f:
            f.write('# written by tests/integration/mailutils.py; run by isolated.py inside\n'
                    '# private mount and PID namespaces (sh -e: any failure ends it)\n'
                    'mount -t tmpfs -o mode=0755 tmpfs /run/lock\n'
                    'mkdir -p /run/lock/subsys/mail\n'
                    'env -i PATH=/usr/bin:/bin %s --config-file=%s --daemon --foreground &\n'
                    'wait\n' % (q(os.path.join(self.root, 'usr/sbin/pop3d')), q(self.conf_path)))

    # -- process (isolated.IsolatedServer: start, running, members, stop, log)

    def _prepare(self):
        self._write_config()


def _cq(s):
    """A Mailutils config string."""
    return '"' + str(s).replace('\\', '\\\\').replace('"', '\\"') + '"'


def for_test(t, name='mailutils', start=True, **kw):
    """A Mailutils pop3d in t.path(name), stopped when the test ends (also
    when it fails), its log shown on failure; skips the test when it cannot
    run as non-root, fails it when the package is missing."""
    why = isolated.can_isolate()
    if why:
        t.skip('Mailutils: ' + why)
    m = Mailutils(t.path(name), name=name, **kw)
    t.cleanup(m.stop)
    t.add_log(m.log_path, 'mailutils %s log' % name)
    return m.start() if start else m
