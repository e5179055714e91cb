"""The outbound queue against a hostile or broken upstream SMTP server
(smtpscript.py): multi-line replies to every command, a 421 in the middle
of DATA, reply lines and replies that never end, silence, hang-ups. Each
case queues two messages with `sendmail`, runs `queue flush` under the
fault, then without it: in the end the upstream has each message exactly
once (a message is sent again only when the upstream did not answer its
final dot), nothing is left queued, and every attempt ended within its
bounds (no flush hangs, whatever the server sends)."""

import atexit
import os
import sqlite3
import time

import harness as h
import faultcheck as fc
import smtpscript

TIMEOUT = 600
FROM = 'alice@example.com'

_tally = None


def tally():
    global _tally
    if _tally is None:
        _tally = fc.Tally('hostile-smtp', 'hostile upstream SMTP')
        atexit.register(_tally.save)
    return _tally


def conf(t, name, port, timeout=5):
    acct = ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    host = "127.0.0.1"\n    port = %d\n    tls = "none"\n'
            '    user = "relay"\n    password = "relaypw"\n    allow_plaintext = true\n'
            '    timeout = %d\n  }\n'
            '  addresses = { "%s" }\n}\n' % (h.free_port(), port, timeout, FROM))
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n'
             '  queue_lifetime = 3600\n}\n' % h.free_port())
    return h.write_config(t.path('conf-%s' % name), h.config_text(
        t.path('state', name), t.path('dest', name, 'Maildir'), [acct], relay))


def message(name, k):
    return ('From: Alice <%s>\nTo: bob@example.net\nSubject: %s/%d\n'
            'Message-ID: <%s.%d@x>\n\n%s' % (FROM, name, k, name, k,
                                           'a line of the body\n' * 300)).encode()


def queued(t, name):
    con = sqlite3.connect(os.path.join(t.path('state', name), 'state.db'), timeout=60)
    try:
        return [r[0] for r in con.execute('SELECT id FROM outbox WHERE state = 0')]
    finally:
        con.close()


def copies(srv, name):
    out = {}
    for _, _, data in srv.messages():
        subj = h.header(data, 'Subject')
        if subj and subj.startswith(name + '/'):
            out[subj] = out.get(subj, 0) + 1
    return out


def case(t, name, setup, within=60, resend_ok=False):
    """One case: setup(srv) arms the faults; returns the faulted flush."""
    srv = smtpscript.Server(t)
    setup(srv)
    c = conf(t, name, srv.port)
    for k in (1, 2):
        p = t.run_bridge(c, 'sendmail', 'bob@example.net', input=message(name, k))
        t.require(p.returncode == 0, 'sendmail: %s' % p.stderr)
    t0 = time.monotonic()
    p = t.run_bridge(c, '-q', 'queue', 'flush', timeout=within + 60)
    secs = time.monotonic() - t0
    crash = fc.crashed(p)
    print('    %s: flush exit %d in %.1fs, upstream has %s, %d still queued: %s'
          % (name, p.returncode, secs, copies(srv, name), len(queued(t, name)),
             p.stderr.strip()[-200:]))
    t.check(secs < within, '%s: the flush took %.1fs (bound %ds)' % (name, secs, within))
    before = copies(srv, name)
    srv.clear_faults()
    for _ in range(4):
        time.sleep(1.1)
        q = t.run_bridge(c, '-q', 'queue', 'flush', timeout=120)
        crash = crash or fc.crashed(q)
        if not queued(t, name):
            break
    got = copies(srv, name)
    lost = sum(1 for k in (1, 2) if got.get('%s/%d' % (name, k), 0) == 0)
    dup = sum(max(0, v - 1) for v in got.values())
    t.check(not queued(t, name), '%s: still queued after the clean flushes' % name)
    t.check(lost == 0 and dup == 0, '%s: upstream has %s (before the clean flush %s)'
            % (name, got, before))
    tally().case(lost=lost, dup=dup, crash=crash, note=None if lost + dup == 0 else name)
    return p, srv


def test_multiline_replies(t):
    p, srv = case(t, 'multi', lambda srv: setattr(srv, 'multiline', True))
    t.check(p.returncode == 0 and len(srv.messages()) == 2, 'delivered through multi-line '
            'replies to every command')


def test_421_inside_data(t):
    case(t, 'd421', lambda srv: srv.fault('DATA', action='421-mid-data', times=1))


def test_hang_ups(t):
    for step in ('GREETING', 'EHLO', 'AUTH', 'MAIL', 'RCPT', 'DATA'):
        case(t, 'cut-' + step.lower(), lambda srv, s=step: srv.fault(s, action='reset',
                                                                    times=1))


def test_refusals(t):
    case(t, 'greet554', lambda srv: srv.fault('GREETING', reply='554 5.3.2 go away', times=1))
    case(t, 'mail451', lambda srv: srv.fault('MAIL', reply='451 4.3.0 later', times=2))
    case(t, 'dot451', lambda srv: srv.fault('DOT', reply='451 4.3.0 not now', times=1))


def test_endless_reply_line(t):
    """One reply line without end: libetpan would read it into memory for
    as long as it comes (doc/DESIGN.md, libetpan trap 9)."""
    case(t, 'endless', lambda srv: srv.fault('MAIL', action='endless', times=1), within=30)


def test_endless_reply_lines(t):
    """Reply lines without end: a 200-line reply bound exists already."""
    case(t, 'lines', lambda srv: srv.fault('EHLO', action='endless-lines', times=1),
         within=30)


def test_silence(t):
    case(t, 'silent', lambda srv: srv.fault('MAIL', action='silence', times=1), within=40)


if __name__ == '__main__':
    h.main()
