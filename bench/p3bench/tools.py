"""The importers the bench runs, each configured for one POP3 account into a
fresh destination under its own working dir, run as the unprivileged mail
user (getmail6 refuses to deliver as root, fetchmail warns).

    t = Pop3bridge(work, src, user, tls='implicit'|'none', store=None|imap)
    t = Mpop(...) / Fetchmail(...) / Getmail(...)    (Maildir only)
    t.argv()         the measured command (one import pass)
    t.maildir        where the messages land (Maildir tools)
    IMPORTERS        name -> class, for the Maildir scenario

Every tool is told to keep the mail on the server and to fetch only what
it has not fetched yet, and to be quiet."""

import os

import harness as h
from p3bench import measure
from p3bench.creds import PASSWORD


def write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def new_maildir(path):
    for sub in ('tmp', 'new', 'cur'):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


class Tool:
    name = '?'
    binary = None

    def __init__(self, work, src, user, tls='implicit'):
        self.work, self.src, self.user, self.tls = work, src, user, tls
        os.makedirs(work, exist_ok=True)
        self.maildir = new_maildir(os.path.join(work, 'Maildir'))
        self.setup()
        measure.chown_tree(work)

    @property
    def port(self):
        return self.src.ports['pop3s' if self.tls == 'implicit' else 'pop3']

    def argv(self):
        return measure.as_user(self.cmd(), self.work)


class Pop3bridge(Tool):
    name = 'pop3bridge'

    def setup(self):
        acct = h.account_block('bench', self.src, user=self.user, password=PASSWORD,
                               local_user=self.user, tls=self.tls)
        self.conf = write(os.path.join(self.work, 'p3b.conf'), h.config_text(
            os.path.join(self.work, 'state'), self.maildir, [acct]))

    def cmd(self):
        return [h.bridge_binary(), '-q', '-c', self.conf, 'sync']


class Pop3bridgeImap(Pop3bridge):
    """pop3bridge with store { type = "imap" } into st (servers.imap_store),
    as the master user, INBOX of user `into`."""

    def __init__(self, work, src, user, st, into):
        self.st, self.into = st, into
        super().__init__(work, src, user, 'implicit')

    def setup(self):
        store = ('store {\n  type = "imap"\n  host = "localhost"\n  port = %d\n'
                 '  tls = "implicit"\n  ca_file = %s\n  user = "%%u"\n  master_user = %s\n'
                 '  password = %s\n  timeout = 120\n}\n'
                 % (self.st.ports['imaps'], h.cq(self.st.ca_file), h.cq(self.st.master),
                    h.cq(self.st.master_pw)))
        acct = h.account_block('bench', self.src, user=self.user, password=PASSWORD,
                               local_user=self.into, tls='implicit')
        self.conf = write(os.path.join(self.work, 'p3b.conf'), 'state_dir = %s\n%s\n%s' % (
            h.cq(os.path.join(self.work, 'state')), store, acct))


class Mpop(Tool):
    name = 'mpop'
    binary = 'mpop'

    def setup(self):
        tls = (['tls on', 'tls_starttls off', 'tls_trust_file %s' % self.src.ca_file]
               if self.tls == 'implicit' else ['tls off'])
        self.uidls = os.path.join(self.work, 'uidls')
        self.conf = write(os.path.join(self.work, 'mpoprc'), '\n'.join(
            ['account bench', 'host localhost', 'port %d' % self.port] + tls +
            ['auth user', 'user %s' % self.user, 'password %s' % PASSWORD, 'keep on',
             'only_new on', 'uidls_file %s' % self.uidls,
             'delivery maildir %s' % self.maildir, '']))

    def cmd(self):
        return ['mpop', '--file=%s' % self.conf, '-q', 'bench']

    def adopt(self, uidls):
        """Writes mpop's UIDL file as if it had fetched uidls already (the
        format of mpop 1.4: a " COUNT HOST USER" line, then the UIDs in
        ascending order)."""
        text = ('# written by bench/p3bench/tools.py in the format of mpop 1.4\n'
                ' %d localhost %s\n%s' % (len(uidls), self.user,
                                          ''.join(u + '\n' for u in sorted(uidls))))
        write(self.uidls, text)
        measure.chown_tree(self.work)


class Fetchmail(Tool):
    name = 'fetchmail'
    binary = 'fetchmail'

    def setup(self):
        if self.tls == 'implicit':
            port, ssl = self.src.ports['pop3s'], ('  ssl sslcertck sslcertfile "%s"'
                                                  % self.src.ca_file)
        else:
            port, ssl = self.src.ports['pop3'], '  sslproto ""'
        self.conf = write(os.path.join(self.work, 'fetchmailrc'), '\n'.join([
            'set no syslog',
            'poll localhost proto pop3 port %d uidl' % port,
            '  user "%s" there with password "%s" is "%s" here' % (self.user, PASSWORD,
                                                                    h.MAIL_USER),
            ssl, '  keep',
            '  mda "/usr/bin/safecat %s/tmp %s/new"' % (self.maildir, self.maildir), '']))

    def cmd(self):
        return ['fetchmail', '-f', self.conf, '--idfile', os.path.join(self.work, 'ids'),
                '--pidfile', os.path.join(self.work, 'pid'), '-s']


class Getmail(Tool):
    name = 'getmail6'
    binary = 'getmail'

    def setup(self):
        if self.tls == 'implicit':
            retr = ['type = SimplePOP3SSLRetriever', 'port = %d' % self.src.ports['pop3s'],
                    'ca_certs = %s' % self.src.ca_file]
        else:
            retr = ['type = SimplePOP3Retriever', 'port = %d' % self.src.ports['pop3']]
        self.conf = write(os.path.join(self.work, 'getmailrc'), '\n'.join(
            ['[retriever]', 'server = localhost'] + retr +
            ['username = %s' % self.user, 'password = %s' % PASSWORD,
             '[destination]', 'type = Maildir', 'path = %s/' % self.maildir,
             '[options]', 'delete = false', 'read_all = false', 'verbose = 0', '']))

    def cmd(self):
        return ['getmail', '--getmaildir', self.work, '--rcfile', self.conf]


IMPORTERS = {'pop3bridge': Pop3bridge, 'mpop': Mpop, 'fetchmail': Fetchmail,
             'getmail6': Getmail}
