"""The fetchers people switch from, run for real (Debian's fetchmail,
getmail6 and mpop) against a test Dovecot, so that import-state is tested
with state files those tools wrote themselves.

    fetch_with(tool, work, dovecot, user='alice', password='secret')
        runs TOOL once over POP3S (keep: nothing deleted) into WORK/Maildir;
        returns (path of the state file it wrote, CompletedProcess)
    TOOLS                   the names: 'fetchmail', 'getmail', 'mpop'

Every tool runs as the unprivileged mail user (getmail6 refuses to deliver
as root, fetchmail warns) with HOME=WORK; WORK and its files belong to it."""

import os
import subprocess

from dovecot import MAIL_USER, mail_ids

TOOLS = ('fetchmail', 'getmail', 'mpop')


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def _maildir(path):
    for sub in ('tmp', 'new', 'cur'):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


def _fetchmail(work, d, user, password):
    rc = _write(os.path.join(work, 'fetchmailrc'), '\n'.join([
        'set no syslog',
        'poll localhost proto pop3 port %d uidl' % d.ports['pop3s'],
        '  user "%s" there with password "%s" is "%s" here' % (user, password, MAIL_USER),
        '  ssl sslcertck sslcertfile "%s"' % d.ca_file,
        '  keep', '  mda "/usr/bin/safecat %s/Maildir/tmp %s/Maildir/new"' % (work, work), '']))
    ids = os.path.join(work, '.fetchids')
    return ids, ['fetchmail', '-f', rc, '--idfile', ids,
                 '--pidfile', os.path.join(work, 'fetchmail.pid'), '-s']


def _getmail(work, d, user, password):
    rc = _write(os.path.join(work, 'getmailrc'), '\n'.join([
        '[retriever]', 'type = SimplePOP3SSLRetriever', 'server = localhost',
        'port = %d' % d.ports['pop3s'], 'username = %s' % user, 'password = %s' % password,
        'ca_certs = %s' % d.ca_file,
        '[destination]', 'type = Maildir', 'path = %s/Maildir/' % work,
        '[options]', 'delete = false', 'read_all = false', 'verbose = 0', '']))
    state = os.path.join(work, 'oldmail-localhost-%d-%s' % (d.ports['pop3s'], user))
    return state, ['getmail', '--getmaildir', work, '--rcfile', rc]


def _mpop(work, d, user, password):
    uidls = os.path.join(work, 'uidls')
    rc = _write(os.path.join(work, 'mpoprc'), '\n'.join([
        'account old', 'host localhost', 'port %d' % d.ports['pop3s'],
        'tls on', 'tls_starttls off', 'tls_trust_file %s' % d.ca_file,
        'auth user', 'user %s' % user, 'password %s' % password, 'keep on', 'only_new on',
        'uidls_file %s' % uidls, 'delivery maildir %s/Maildir' % work, '']))
    return uidls, ['mpop', '--file=%s' % rc, '-q', 'old']


_SETUP = {'fetchmail': _fetchmail, 'getmail': _getmail, 'mpop': _mpop}


def fetch_with(tool, work, dovecot, user='alice', password='secret'):
    """Runs tool once (keep mode) into work/Maildir; (state file, process)."""
    os.makedirs(work, exist_ok=True)
    _maildir(os.path.join(work, 'Maildir'))
    state, cmd = _SETUP[tool](work, dovecot, user, password)
    uid, gid = mail_ids()
    for top, dirs, files in os.walk(work):
        for x in [top] + [os.path.join(top, f) for f in files]:
            os.chown(x, uid, gid)
    p = subprocess.run(['setpriv', '--reuid=%d' % uid, '--regid=%d' % gid, '--clear-groups',
                        '--reset-env', 'env', 'HOME=%s' % work] + cmd,
                       capture_output=True, text=True, timeout=120)
    return state, p
