"""pop3bridge as the system's sendmail: invoked through a link named
sendmail it takes sendmail's command line (-C FILE for the configuration),
accepts the flags mail programs pass (-oi -oem -F NAME -bm -odi -t -f),
refuses unknown ones with a usage line, and the message reaches upstream
as `pop3bridge sendmail` would send it."""

import os

import harness as h
from smtpd import Upstream

FROM = 'alice@example.com'


def _config(t, up):
    acct = ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "relay"\n    password = "relaypw"\n    allow_plaintext = true\n  }\n'
            '  addresses = { "%s" }\n}\n' % (h.free_port(), up.port, FROM))
    relay = 'relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n}\n' % h.free_port()
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [acct], relay))


def _link(t):
    os.makedirs(t.path('bin'))
    link = t.path('bin', 'sendmail')
    os.symlink(h.bridge_binary(), link)
    return link


def _run(t, argv, msg):
    import subprocess
    p = subprocess.run(argv, input=msg, capture_output=True, timeout=120)
    log = t.path('sendmail-%d.out' % len(os.listdir(t.tmp)))
    with open(log, 'wb') as f:
        f.write(b'$ ' + ' '.join(argv).encode() + b'\nexit %d\n' % p.returncode +
                p.stdout + p.stderr)
    t.add_log(log)
    t.check(h.sanitizer_report(p.stderr) is None, 'sanitizer: %s' % h.sanitizer_report(p.stderr))
    return p


def test_invoked_as_sendmail(t):
    up = Upstream(t).start()
    conf = _config(t, up)
    sm = _link(t)
    msg = (b'From: Alice <alice@example.com>\nTo: bob@example.net\nCc: carol@example.org\n'
           b'Subject: mode\nMessage-ID: <mode@example.com>\n\nline\n.\nafter a lone dot\n')
    # What mutt, git send-email, cron and PHP's mail() pass.
    p = _run(t, [sm, '-C', conf, '-oi', '-oem', '-F', 'Alice A', '-bm', '-odi', '-t',
                 '-f', FROM], msg)
    t.check(p.returncode == 0 and not p.stdout and not p.stderr,
            'accepted and silent: exit %d %r' % (p.returncode, p.stderr))
    p = _run(t, [sm, '-C' + conf, '-i', '-fnobody@example.com', '-FAlice', 'dave@example.org'],
             msg)
    t.check(p.returncode == 77, 'a sender of no account refused (77), got %d' % p.returncode)
    p = _run(t, [sm, '-C', conf, '-oee', '-odb', '-v', '-f', FROM, '--', 'dave@example.org'],
             msg)
    t.check(p.returncode == 0, 'more harmless flags and "--": %r' % p.stderr)
    for bad in (['-bs'], ['-q'], ['-bp'], ['-X', '/tmp/log']):
        p = _run(t, [sm, '-C', conf] + bad + ['dave@example.org'], msg)
        t.check(p.returncode == 64 and b'usage: sendmail' in p.stderr and
                b'unsupported option ' + bad[0].encode() in p.stderr,
                '%r refused with a usage line: %d %r' % (bad, p.returncode, p.stderr))
    p = _run(t, [sm, '-C'], msg)
    t.check(p.returncode == 64, '-C without a file: %d' % p.returncode)
    r = t.run_bridge(conf, 'queue', 'flush')
    t.require(r.returncode == 0, 'queue flush: %s' % r.stderr)
    got = up.messages()
    t.require(len(got) == 2, 'two messages upstream, got %d' % len(got))
    first = [m for m in got if 'carol@example.org' in m['rcpt_tos']]
    t.require(len(first) == 1, 'the -t message: %r' % [m['rcpt_tos'] for m in got])
    m = first[0]
    t.check(m['mail_from'] == FROM and sorted(m['rcpt_tos']) ==
            ['bob@example.net', 'carol@example.org'], 'envelope %r %r'
            % (m['mail_from'], m['rcpt_tos']))
    t.check(m['content'] == msg.replace(b'\n', b'\r\n'),
            '-oi: the lone dot is a line, the message intact: %r' % m['content'])
    # The same flags through the command.
    r = t.run_bridge(conf, 'sendmail', '-oi', '-oem', '-F', 'A', '-bm', '-odi', '-t', input=msg)
    t.check(r.returncode == 0, 'pop3bridge sendmail takes the same flags: %r' % r.stderr)


if __name__ == '__main__':
    h.main()
