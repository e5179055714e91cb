"""`pop3bridge sendmail`: a NUL in a header line is refused cleanly (it
crashed), a NUL in the body is carried; the sender must be an address of
an account whose local_user is the invoking user (root: any account's),
and that account must have an smtp {} block -- each refusal one line on
stderr with its sysexits code (77, 78), nothing queued."""

import os
import pwd
import sqlite3
import subprocess

import harness as h
from smtpd import Upstream

TIMEOUT = 180


def smtp(up):
    return ('  smtp {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "relay"\n    password = "relaypw"\n    allow_plaintext = true\n  }\n'
            % up.port)


def account(name, local_user, address, smtp_block):
    return ('account "%s" {\n  local_user = "%s"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "x"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '%s  addresses = { "%s" }\n}\n'
            % (name, local_user, h.free_port(), smtp_block, address))


def config(t, up, mine):
    accounts = [account('mine', mine, 'me@example.com', smtp(up)),
                account('other', 'alice', 'alice@example.com', smtp(up)),
                account('nosmtp', mine, 'nosmtp@example.com', '')]
    relay = 'relay {\n  listen = { "127.0.0.1:%d" }\n}\n' % h.free_port()
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), accounts, relay))


def queued(t):
    db = sqlite3.connect(t.path('state', 'state.db'))
    try:
        return [r[0] for r in db.execute('SELECT mail_from FROM outbox ORDER BY id')]
    finally:
        db.close()


def as_user(t, user, conf, args, msg):
    """Runs pop3bridge sendmail as user (not root)."""
    pw = pwd.getpwnam(user)
    p = subprocess.run([h.bridge_binary(), '-c', conf, 'sendmail'] + args, input=msg,
                       capture_output=True, timeout=60, user=pw.pw_uid, group=pw.pw_gid,
                       extra_groups=[], env={'PATH': '/usr/bin:/bin', 'HOME': t.tmp})
    err = p.stderr.decode(errors='replace')
    t.check(h.sanitizer_report(err) is None, 'sanitizer: %s' % err)
    return p.returncode, err


def message(frm, extra=b''):
    return (b'From: ' + frm.encode() + b'\nTo: bob@example.net\nSubject: hi\n' + extra +
            b'\nHello\n')


def test_nul_in_header_refused(t):
    up = Upstream(t).start()
    conf = config(t, up, mine='root')
    for name, msg, args in (
            ('in a value, -t', b'From: me@example.com\nTo: bob@example.net\n'
             b'Subject: a\0b\n\nbody\n', ['-t']),
            ('in a field name', b'From: me@example.com\nSub\0ject: x\n\nbody\n',
             ['bob@example.net']),
            ('in the sender', b'From: me@exa\0mple.com\n\nbody\n', ['bob@example.net']),
            ('in a folded Bcc', b'From: me@example.com\nTo: bob@example.net\n'
             b'Bcc: carol@example.net,\n\0 dave@example.net\n\nbody\n', ['-t'])):
        p = t.run_bridge(conf, 'sendmail', *args, input=msg)
        err = p.stderr.decode(errors='replace')
        t.check(p.returncode == 65, '%s: exit 65, got %d: %r' % (name, p.returncode, err))
        t.check(err == 'pop3bridge: sendmail: NUL byte in the header (not sent)\n',
                '%s: one line: %r' % (name, err))
    t.check(not os.path.exists(t.path('state', 'state.db')) or queued(t) == [],
            'nothing queued')


def test_nul_in_body_carried(t):
    up = Upstream(t).start()
    conf = config(t, up, mine='root')
    msg = b'From: me@example.com\nTo: bob@example.net\nSubject: nul\n\nbe\0fore\nafter\n'
    p = t.run_bridge(conf, 'sendmail', '-t', input=msg)
    t.require(p.returncode == 0, 'sendmail: %r' % p.stderr)
    p = t.run_bridge(conf, 'queue', 'flush')
    t.require(p.returncode == 0, 'flush: %r' % p.stderr)
    got = up.messages()
    t.require(len(got) == 1, 'one message upstream: %d' % len(got))
    t.check(got[0]['content'] == msg.replace(b'\n', b'\r\n'), 'byte-exact with its NUL: %r'
            % got[0]['content'])


def test_sender_must_be_the_users(t):
    """Run by the tests' mail user (p3b-mail, not root): only the addresses
    of accounts whose local_user it is, and only when they have smtp {}."""
    if os.geteuid() != 0:
        t.skip('needs root, to run sendmail as another user')
    pw = pwd.getpwuid(h.mail_ids()[0])
    user = pw.pw_name
    up = Upstream(t).start()
    conf = config(t, up, mine=user)
    os.chown(conf, pw.pw_uid, pw.pw_gid)
    os.makedirs(t.path('state'), mode=0o700)
    os.chown(t.path('state'), pw.pw_uid, pw.pw_gid)
    rc, err = as_user(t, user, conf, ['-f', 'me@example.com', 'bob@example.net'],
                      message('me@example.com'))
    t.check(rc == 0 and err == '', 'own account: queued: %d %r' % (rc, err))
    rc, err = as_user(t, user, conf, ['bob@example.net'], message('alice@example.com'))
    t.check(rc == 77, 'another user\'s account: 77, got %d' % rc)
    t.check(err == 'pop3bridge: sendmail: alice@example.com belongs to account other, whose'
            ' local_user is alice, not %s\n' % user, 'one line saying why: %r' % err)
    rc, err = as_user(t, user, conf, ['-f', 'nosmtp@example.com', 'bob@example.net'],
                      message('nosmtp@example.com'))
    t.check(rc == 78, 'no smtp block: 78, got %d' % rc)
    t.check(err == 'pop3bridge: sendmail: account nosmtp has no smtp {} block: no server'
            ' to send nosmtp@example.com\'s mail through\n', 'one line: %r' % err)
    rc, err = as_user(t, user, conf, ['-f', 'nobody@example.com', 'bob@example.net'],
                      message('nobody@example.com'))
    t.check(rc == 77 and 'not an address of any account' in err, 'unknown: 77: %d %r'
            % (rc, err))
    t.check(queued(t) == ['me@example.com'], 'only the allowed one queued: %r' % queued(t))
    # Root may send as any account's address (cron, system mail), still
    # only through an account that has an smtp block.
    p = t.run_bridge(conf, 'sendmail', 'bob@example.net', input=message('alice@example.com'))
    t.check(p.returncode == 0, 'root as alice: %d %r' % (p.returncode, p.stderr))
    p = t.run_bridge(conf, 'sendmail', 'bob@example.net', input=message('nosmtp@example.com'))
    t.check(p.returncode == 78, 'root, no smtp block: 78, got %d' % p.returncode)
    t.check(queued(t) == ['me@example.com', 'alice@example.com'], 'queued: %r' % queued(t))
    p = t.run_bridge(conf, 'queue', 'flush')
    t.check(p.returncode == 0, 'flush: %r' % p.stderr)
    t.check(sorted(m['mail_from'] for m in up.messages()) ==
            ['alice@example.com', 'me@example.com'], 'both sent: %r' % up.messages())


if __name__ == '__main__':
    h.main()
