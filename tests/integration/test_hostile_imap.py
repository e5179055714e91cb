"""The IMAP store against a hostile or broken server (imapscript.py):
PREAUTH, a huge literal in a reply, missing and malformed APPENDUID, NO
[TRYCREATE], [OVERQUOTA] and [LIMIT], a reply line that never ends,
silence, BYE in the middle of an APPEND literal. The source is a real
Dovecot (POP3, leave_on_server = false: every stored message is DELE'd).

After the faulted pass: it failed with one line naming the account (or,
for what the store may refuse message by message, exit 65 with the rest
stored), the state is not ahead of the store (each delivered row's key is
in the store), nothing left the server unstored. Then the server behaves,
and the next pass stores exactly the source's messages once (a message
the server took while its reply was lost is found again by its key, not
stored twice)."""

import atexit
import hashlib
import time

import harness as h
import faultcheck as fc
import imapscript
import imapstore as ist

TIMEOUT = 600


def setup(t, user):
    src = t.dovecot('src-' + user, users={user: 'secret'})
    msgs = h.make_corpus(5, seed=17)
    h.seed(src, user, msgs)
    srv = imapscript.Server(t, users={user: 'secret'})
    return src, srv, msgs


def conf(t, src, srv, user, folder='INBOX', timeout=5):
    acct = h.account_block('acct', src, user=user, local_user=user, tls='none',
                           folder=folder, extra='leave_on_server = false')
    store = ('store {\n  type = "imap"\n  host = "127.0.0.1"\n  port = %d\n  tls = "none"\n'
             '  allow_plaintext = true\n  user = "%%u"\n  password = "secret"\n'
             '  timeout = %d\n}\n' % (srv.port, timeout))
    return h.write_config(t.path('p3b-%s.conf' % user), h.config_with_store(
        t.path('state', user), store, [acct], 'batch_messages = 2\n'))


def want(msgs):
    return sorted(hashlib.sha256(h.pop3_view(m)).hexdigest() for m in msgs)


def stored(srv, folder='INBOX'):
    return sorted(hashlib.sha256(ist.strip_key(b)).hexdigest() for b in srv.mailbox(folder))


def on_server(src, user):
    out = []
    for f in h.maildir_files(src.maildir(user)):
        with open(f, 'rb') as fh:
            out.append(hashlib.sha256(h.pop3_view(fh.read())).hexdigest())
    return out


def ahead(t, srv, user, folder='INBOX'):
    keys = set(ist.key_header(b) for b in srv.mailbox(folder))
    return [r['uidl'] for r in fc.state_rows(t.path('state', user))
            if r['state'] in (1, 2) and r['delivery_key'] not in keys]


class Case:
    """One hostile-store case: the faulted pass, the checks, the clean
    pass; the figures go to the 'hostile-imap' tally."""

    def __init__(self, t, name, user='alice', folder='INBOX'):
        self.t, self.name, self.user, self.folder = t, name, user, folder
        self.src, self.srv, self.msgs = setup(t, user)
        self.conf = conf(t, self.src, self.srv, user, folder)

    def faulted(self, expect_exit=None, says=None, within=None):
        t = self.t
        t0 = time.monotonic()
        p = t.run_bridge(self.conf, '-q', 'sync', timeout=120)
        secs = time.monotonic() - t0
        self.crash = fc.crashed(p)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        print('    %s: exit %d in %.1fs: %s' % (self.name, p.returncode, secs,
                                               ' | '.join(lines)[:300]))
        if expect_exit is not None:
            t.check(p.returncode == expect_exit, '%s: exit %d, expected %d'
                    % (self.name, p.returncode, expect_exit))
        else:
            t.check(p.returncode != 0, '%s: the pass did not fail' % self.name)
        if p.returncode not in (0, 65):
            t.check(len(lines) == 1 and ': acct: ' in lines[0],
                    '%s: not one clear line: %r' % (self.name, lines[:4]))
        if says:
            t.check(any(says in l for l in lines), '%s: the error does not say %r: %r'
                    % (self.name, says, lines))
        if within:
            t.check(secs < within, '%s: took %.1fs (bound %ds)' % (self.name, secs, within))
        a = ahead(t, self.srv, self.user, self.folder)
        t.check(not a, '%s: state ahead of the store: %s' % (self.name, a[:3]))
        self.gone = fc.lost_from_server(want(self.msgs), on_server(self.src, self.user),
                                        stored(self.srv, self.folder))
        t.check(self.gone == 0, '%s: %d deleted from the server, not stored'
                % (self.name, self.gone))
        return p

    def clean(self):
        t = self.t
        self.srv.clear_faults()
        q = t.run_bridge(self.conf, '-q', 'sync', timeout=120)
        t.check(q.returncode == 0, '%s: the clean pass exited %d: %s'
                % (self.name, q.returncode, q.stderr.strip()[-300:]))
        lost, dup = fc.compare(want(self.msgs), stored(self.srv, self.folder))
        t.check(lost == 0 and dup == 0, '%s: %d lost, %d duplicated' % (self.name, lost, dup))
        t.check(not on_server(self.src, self.user), '%s: mail left on the server' % self.name)
        t.check(not [r for r in fc.state_rows(t.path('state', self.user)) if r['state'] == 0],
                '%s: rows left pending' % self.name)
        tally().case(lost=lost + self.gone, dup=dup, crash=self.crash or fc.crashed(q),
                     note=None if lost + dup + self.gone == 0 else self.name)


_tally = None


def tally():
    """The figures of every case this program runs, saved at its end."""
    global _tally
    if _tally is None:
        _tally = fc.Tally('hostile-imap', 'hostile IMAP store')
        atexit.register(_tally.save)
    return _tally


def test_preauth(t):
    c = Case(t, 'PREAUTH greeting')
    c.srv.fault('GREETING', reply='* PREAUTH [CAPABILITY IMAP4rev1] Logged in as root')
    c.faulted(says='PREAUTH')
    t.check(len(on_server(c.src, c.user)) == len(c.msgs), 'nothing left the source')
    t.check(c.srv.mailbox() == [], 'nothing stored')
    c.clean()


def test_huge_literal(t):
    c = Case(t, 'a 2 GB literal in a LIST reply')
    c.srv.fault('LIST', action='huge-literal')
    c.faulted(says='refused', within=20)
    c.clean()


def test_missing_appenduid(t):
    c = Case(t, 'no APPENDUID')
    c.srv.fault('APPEND', action='no-appenduid')
    c.faulted(expect_exit=0)
    locs = [r['location'] for r in fc.state_rows(t.path('state', c.user))]
    t.check(locs and all(l == 'INBOX' for l in locs), 'locations without a UID: %r' % locs[:3])
    c.clean()


def test_malformed_appenduid(t):
    c = Case(t, 'malformed APPENDUID')
    c.srv.fault('APPEND', action='bad-appenduid', times=1)
    c.faulted(says='refused')
    # APPENDs are pipelined (LITERAL+): those sent behind the first may be
    # stored too before its reply breaks the session
    t.check(len(c.srv.mailbox()) >= 1, 'the server stored the first message: %d'
            % len(c.srv.mailbox()))
    c.clean()       # found again by its key: stored once


def test_trycreate(t):
    c = Case(t, 'NO [TRYCREATE] to an APPEND', folder='Work')
    c.srv.fault('APPEND', reply='NO [TRYCREATE] Mailbox doesn\'t exist: Work', times=1)
    c.faulted(expect_exit=0)
    t.check(sorted(stored(c.srv, 'Work')) == want(c.msgs), 'created again and stored')
    c.clean()


def test_overquota_and_limit(t):
    for code in ('OVERQUOTA', 'LIMIT'):
        c = Case(t, 'NO [%s] to one APPEND' % code, user='u-' + code.lower())
        c.srv.fault('APPEND', reply='NO [%s] Quota exceeded (mailbox for user is full)'
                    % code, times=1)
        # OVERQUOTA: every further message would fail too, the batch ends,
        # a temporary failure (75); LIMIT: that message only is refused (65)
        c.faulted(expect_exit=75 if code == 'OVERQUOTA' else 65)
        if code == 'LIMIT':
            t.check(len(c.srv.mailbox()) == len(c.msgs) - 1, '%s: the others stored' % code)
            t.check(len(on_server(c.src, c.user)) == 1, '%s: the refused one stays on the '
                    'server' % code)
        else:
            t.check(len(on_server(c.src, c.user)) >= 1, '%s: the refused one stays on the '
                    'server' % code)
        c.clean()


def test_endless_line(t):
    c = Case(t, 'a reply line that never ends')
    c.srv.fault('EXAMINE', action='endless')
    c.srv.fault('LIST', action='endless')
    c.faulted(says='longer than', within=30)
    c.clean()


def test_silence(t):
    c = Case(t, 'silence after APPEND')
    c.srv.fault('APPEND', action='silence', times=1)
    c.faulted(within=40)
    c.clean()


def test_bye_mid_append(t):
    c = Case(t, 'BYE in the middle of an APPEND literal')
    c.srv.fault('APPEND', action='bye-mid-literal', times=1)
    c.faulted()
    t.check(c.srv.mailbox() == [], 'the half message was not stored')
    c.clean()


if __name__ == '__main__':
    h.main()
