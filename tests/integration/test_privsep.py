"""The relay process parses untrusted input: run as root, it drops to the
owner of STATE_DIR (an unprivileged user) after binding its ports, holds no
capability, cannot read the configuration file, and has none of the POP3,
SMTP or store secrets in its memory; it still queues what it accepts."""

import base64
import os
import smtplib
import sqlite3

import harness as h

POP3_PW = 'pop3-Secret-7f3a9c'
SMTP_PW = 'smtp-Secret-21be4d'


def _status(pid):
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            k, _, v = line.partition(':')
            out[k] = v.split()
    return out


def _memory_holds(pid, needles):
    """Which of needles (bytes) occur in pid's readable memory (as root).
    Mappings over 1 GiB are skipped: the sanitizers' shadow memory and
    allocator reservations (their heap is in smaller mappings)."""
    found, step, pad = set(), 16 << 20, max(len(n) for n in needles)
    with open('/proc/%d/maps' % pid) as maps, open('/proc/%d/mem' % pid, 'rb', 0) as mem:
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split('-'))
            if 'r' not in parts[1] or hi - lo > (1 << 30) or \
                    (len(parts) > 5 and parts[5] in ('[vvar]', '[vsyscall]')):
                continue
            for at in range(lo, hi, step):
                try:
                    mem.seek(at)
                    chunk = mem.read(min(step + pad, hi - at))
                except (OSError, ValueError, OverflowError):
                    continue
                for n in needles:
                    if n in chunk:
                        found.add(n)
                        i = chunk.index(n)
                        if b'Secret' in n:
                            print('    %s found in %s at %#x: %r' % (
                                n.decode(), line.strip(), at + i, chunk[max(0, i - 48):i + 32]))
    return found


def test_relay_drops_to_state_dir_owner(t):
    if os.geteuid() != 0:
        t.skip('needs root (the drop is from root)')
    uid, gid = h.mail_ids()
    dv = t.dovecot('dv', users={'alice': POP3_PW})
    port, dead = h.free_port(), h.free_port()
    state = t.path('state')
    os.makedirs(state, mode=0o700)
    os.chown(state, uid, gid)
    acct = h.account_block('work', dv, password=POP3_PW, extra='''
  addresses = { "alice@example.com" }
  smtp { host = "127.0.0.1" port = %d tls = "none" user = "alice" password = "%s"
         allow_plaintext = true }
''' % (dead, SMTP_PW))
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  passwd_file = %s\n}\n'
             'poll_interval = 3600\n' % (port, h.cq(dv.passwd_path)))
    conf = h.write_config(t.path('p3b.conf'), h.config_text(
        state, t.path('dest', '%u', 'Maildir'), [acct], relay))
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: h.port_open(port) or d.poll() is not None, 20, what='relay port')
    t.require(d.poll() is None, 'run exited %s' % d.returncode)
    s = smtplib.SMTP('127.0.0.1', port, timeout=30)
    try:
        s.ehlo('device.example')
        # The session process: a child of the relay, a child of the daemon.
        session = relay = None
        for kid in h.children(d.pid):
            grand = h.children(kid)
            if grand:
                relay, session = kid, grand[0]
        t.require(session is not None, 'found the relay and its session process')
        for name, pid in (('relay', relay), ('session', session)):
            st = _status(pid)
            t.check(st['Uid'] == [str(uid)] * 4 and st['Gid'] == [str(gid)] * 4,
                    '%s runs as %d:%d: Uid %r Gid %r' % (name, uid, gid, st['Uid'], st['Gid']))
            t.check(st['Groups'] in ([str(gid)], []), '%s groups %r' % (name, st['Groups']))
            t.check(all(int(st[c][0], 16) == 0 for c in ('CapEff', 'CapPrm', 'CapInh',
                                                         'CapAmb')),
                    '%s holds no capability: %r' % (name, [st[c] for c in ('CapEff', 'CapPrm')]))
            # A control the scan must find: the account's address, which the
            # relay does hold (on its heap, as the passwords would be).
            control = b'alice@example.com'
            held = _memory_holds(pid, [POP3_PW.encode(), SMTP_PW.encode(), control])
            t.check(control in held, '%s: the scan sees the heap (found %r)' % (name, held))
            held.discard(control)
            t.check(not held, '%s holds no secret in its memory: %r' % (name, held))
        t.check(os.stat(conf).st_uid == 0 and os.stat(conf).st_mode & 0o077 == 0,
                'the configuration is root 0600: the relay\'s uid cannot read it')
        # It still does its job: AUTH against the passwd-file, DATA queued.
        code, _ = s.docmd('AUTH', 'PLAIN ' + base64.b64encode(
            ('\0alice\0%s' % POP3_PW).encode()).decode())
        t.check(code == 235, 'AUTH as alice: %d' % code)
        s.sendmail('alice@example.com', ['bob@example.net'],
                   b'From: alice@example.com\r\nTo: bob@example.net\r\nSubject: x\r\n\r\nhi\r\n')
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass
    con = sqlite3.connect(os.path.join(state, 'state.db'), timeout=30)
    try:
        n = con.execute('SELECT count(*) FROM outbox').fetchone()[0]
    finally:
        con.close()
    t.check(n == 1, 'the message was queued by the unprivileged relay (%d rows)' % n)


if __name__ == '__main__':
    h.main()
