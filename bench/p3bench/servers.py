"""The servers the bench measures against, all on 127.0.0.1 free ports,
started from the test harness's Dovecot class and stopped by pid.

    src = source(root, mail_root, users)   POP3 + POP3S provider (Dovecot)
    st = imap_store(root, mail_root, users) IMAP + IMAPS store with a master
                                           user (st.master, st.master_pw),
                                           as tests/integration/imapstore.py
    seed_user(dovecot, user, corpus)        corpus written into the user's
                                           Maildir, then one UIDL so that
                                           Dovecot has indexed it before
                                           anything is timed
    SmtpSink(root).start()                  Postfix's smtp-sink, every
                                           message dumped to a file
    Aiosmtpd(root).start()                  tests/integration/smtpd.py
    sink.count(), sink.contents(), sink.stop()"""

import base64
import glob
import json
import os
import shutil
import socket
import subprocess
import time

import harness as h
from p3bench import REPO
from p3bench.creds import MASTER, MASTER_PW, PASSWORD


def source(workdir, mail_root, users):
    """A started Dovecot serving POP3 and POP3S for users (names; all with
    PASSWORD) from mail_root."""
    # pop3_no_flag_updates: RETR does not mark a message \\Seen, which
    # would rename its file: the source stays as seeded for every tool.
    # vsz_limit: the pop3 process indexing a Maildir of 10^6 files (the
    # million scenario) needs more than the default 256 MB.
    d = h.Dovecot(workdir, users={u: PASSWORD for u in users}, protocols=('pop3',),
                  mail_root=mail_root, name='bench-src',
                  extra_conf='pop3_no_flag_updates = yes\n'
                  'service pop3 {\n  vsz_limit = 4G\n}\n')
    return d.start()


def imap_store(workdir, mail_root, users):
    """A started Dovecot serving IMAP and IMAPS over mail_root, with the
    master login MASTER (user*MASTER), like the IMAP store tests use."""
    os.makedirs(workdir, exist_ok=True)
    master_file = os.path.join(workdir, 'master-passwd')
    with open(master_file, 'w') as f:
        f.write('%s:{PLAIN}%s::::::\n' % (MASTER, MASTER_PW))
    os.chmod(master_file, 0o644)
    extra = ('auth_master_user_separator = *\n'
             'passdb {\n  driver = passwd-file\n'
             '  args = scheme=PLAIN username_format=%%u %s\n'
             '  master = yes\n  pass = yes\n}\n' % master_file)
    d = h.Dovecot(workdir, users={u: PASSWORD for u in users}, protocols=('imap',),
                  mail_root=mail_root, extra_conf=extra, name='bench-store')
    d.master, d.master_pw = MASTER, MASTER_PW
    return d.start()


def seed_user(dovecot, user, corpus):
    """Writes corpus into user's Maildir (owned by the mail uid) and makes
    Dovecot index it (one POP3 UIDL); returns corpus."""
    md = h.make_maildir(dovecot.maildir(user))
    uid, gid = h.mail_ids()
    corpus.seed(md, uid if os.geteuid() == 0 else None, gid)
    warm(dovecot, user)
    return corpus


def warm(dovecot, user):
    """One login + UIDL, not timed: Dovecot builds the mailbox's index and
    UIDL list once, so the first tool measured does not pay for it."""
    uidls = h.pop3_uidls(dovecot, user, PASSWORD)
    return len(uidls)


def _wait_port(port, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('%s exited %s' % (what, proc.returncode))
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5) as s:
                s.recv(100)      # the greeting: it is serving
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError('%s did not listen on %d' % (what, port))


class SmtpSink:
    """Postfix's smtp-sink on a free port: ESMTP with PIPELINING, every
    transaction dumped to a file of DIR/dump/ (headers it adds, then the
    message; the file appears when the transaction starts). Backlog 256:
    8 clients never wait for accept()."""

    name = 'smtp-sink'

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, 'smtp-sink')
        self.dump = os.path.join(self.dir, 'dump')
        os.makedirs(self.dump, exist_ok=True)
        self.port = h.free_port()
        self.proc = None

    @staticmethod
    def binary():
        return shutil.which('smtp-sink') or '/usr/sbin/smtp-sink'

    def start(self):
        # -u: drop to the mail user when root (it refuses to run as root);
        # -d: dump each message to a file named from the template (the
        # time and a random number)
        argv = [self.binary(), '-d', os.path.join(self.dump, '%H%M%S.')]
        if os.geteuid() == 0:
            uid, gid = h.mail_ids()
            os.chown(self.dump, uid, gid)
            argv += ['-u', h.MAIL_USER if _has_user(h.MAIL_USER) else 'nobody']
        argv += ['127.0.0.1:%d' % self.port, '256']
        self.log = open(os.path.join(self.dir, 'log'), 'ab')
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, start_new_session=True)
        _wait_port(self.port, self.proc, 'smtp-sink')
        return self

    def files(self):
        return [f for f in glob.glob(os.path.join(self.dump, '*')) if os.path.isfile(f)]

    def count(self):
        # d_type, not a stat per file: the relay scenario counts while
        # pop3bridge runs, and must not take its CPU
        with os.scandir(self.dump) as it:
            return sum(1 for e in it if e.is_file())

    def contents(self):
        """The messages as received (LF line endings: smtp-sink writes
        them so): each dump file without the empty line smtp-sink ends it
        with (a file without it is cut short, and kept as is)."""
        out = []
        for f in self.files():
            with open(f, 'rb') as fh:
                data = fh.read()
            out.append(data[:-1] if data.endswith(b'\n\n') else data)
        return out

    def reset(self):
        for f in self.files():
            os.unlink(f)

    def stop(self):
        _stop(self.proc)
        self.proc = None


def _has_user(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Aiosmtpd:
    """tests/integration/smtpd.py (aiosmtpd) on a free port, no AUTH:
    each message a JSON file in its spool."""

    name = 'aiosmtpd'

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, 'aiosmtpd')
        self.spool = os.path.join(self.dir, 'spool')
        os.makedirs(self.spool, exist_ok=True)
        self.port = h.free_port()
        self.proc = None

    def start(self):
        script = os.path.join(self.dir, 'script.json')
        with open(script, 'w') as f:
            f.write('{}')
        argv = ['/usr/bin/python3', os.path.join(REPO, 'tests', 'integration', 'smtpd.py'), '--port', str(self.port),
                '--spool', self.spool, '--script', script]
        self.log = open(os.path.join(self.dir, 'log'), 'ab')
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.log, start_new_session=True)
        _wait_port(self.port, self.proc, 'aiosmtpd')
        return self

    def files(self):
        return glob.glob(os.path.join(self.spool, '*.json'))

    def count(self):
        with os.scandir(self.spool) as it:
            return sum(1 for e in it if e.name.endswith('.json'))

    def contents(self):
        out = []
        for f in self.files():
            with open(f) as fh:
                out.append(base64.b64decode(json.load(fh)['content']))
        return out

    def reset(self):
        for f in os.listdir(self.spool):
            os.unlink(os.path.join(self.spool, f))

    def stop(self):
        _stop(self.proc)
        self.proc = None


def _stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
