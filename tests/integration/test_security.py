"""TLS verification and authentication policy against a real Dovecot: a
refused server never sees a credential, and nothing is imported."""

import os
import time

import harness as h
from common import config, servers, sync

EX_UNAVAILABLE, EX_CONFIG = 69, 78


def log_size(src):
    """Where the log ends once it is quiet: Dovecot writes the lines of the
    harness's readiness probes a moment after they close."""
    size, deadline = -1, time.monotonic() + 5
    while time.monotonic() < deadline:
        now = os.path.getsize(src.log_path)
        if now == size:
            break
        size = now
        time.sleep(0.25)
    return size


def log_since(src, offset):
    with open(src.log_path, errors='replace') as f:
        f.seek(offset)
        return f.read()


def no_login_attempted(src, since):
    """In the log written since offset `since`: Dovecot saw a connection
    close without any authentication attempt (a positive sign: the
    harness's readiness probes are before `since`)."""
    log = log_since(src, since)
    return ('no auth attempts' in log and 'Login: user=' not in log and
            'auth failed' not in log)


def never_connected(src, since):
    return 'rip=127.0.0.1' not in log_since(src, since)


def refused(t, src, dst, conf, words):
    since = log_size(src)
    p = sync(t, conf, expect=EX_UNAVAILABLE)
    err = p.stderr.strip()
    t.check(len(err.splitlines()) == 1 and err.startswith('pop3bridge: acct:'),
            'one error line naming the account: %r' % err)
    t.check(all(w in err.lower() for w in words), 'error says %r: %r' % (words, err))
    t.check('secret' not in p.stderr, 'no secret in the output')
    t.check(no_login_attempted(src, since), 'no credential reached the server')
    t.check(h.imap_count(dst) == 0, 'nothing imported')


def test_unknown_ca_refused_by_default(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(3))
    block = h.account_block('acct', src).replace('ca_file = "%s"' % src.ca_file, '')
    refused(t, src, dst, config(t, [block]), ['certificate'])


def test_self_signed_refused_even_with_ca_file(t):
    c = t.certs
    src, dst = servers(t, cert=c.selfsigned_cert, key=c.selfsigned_key, ca_file=c.ca_file)
    h.seed(src, 'alice', h.make_corpus(3))
    refused(t, src, dst, config(t, [h.account_block('acct', src)]), ['certificate'])


def test_wrong_host_name_refused(t):
    c = t.certs
    src, dst = servers(t, cert=c.wrong_cert, key=c.wrong_key, ca_file=c.ca_file)
    h.seed(src, 'alice', h.make_corpus(3))
    refused(t, src, dst, config(t, [h.account_block('acct', src)]), ['certificate'])


def test_starttls_verified_and_used(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(5))
    sync(t, config(t, [h.account_block('acct', src, tls='starttls')]))
    t.check(h.imap_count(dst) == 5, '5 imported over STLS')
    log = open(src.log_path, errors='replace').read()
    t.check('method=PLAIN' in log and 'TLS' in log.split('Login: user=<alice>')[1].splitlines()[0],
            'the login happened inside TLS')


def test_starttls_with_unknown_ca_refused(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(3))
    block = h.account_block('acct', src, tls='starttls').replace(
        'ca_file = "%s"' % src.ca_file, '')
    refused(t, src, dst, config(t, [block]), ['certificate'])


def test_missing_stls_is_fatal(t):
    # A provider without TLS on its POP3 port: STLS is not offered, and
    # tls = "starttls" must not fall back to plaintext.
    src, dst = servers(t, extra_conf='ssl = no\n', protocols=('pop3',))
    h.seed(src, 'alice', h.make_corpus(3))
    refused(t, src, dst, config(t, [h.account_block('acct', src, tls='starttls')]), ['stls'])


def test_plaintext_password_needs_allow_plaintext(t):
    src, dst = servers(t)
    block = h.account_block('acct', src, tls='none').replace('allow_plaintext = true', '')
    p = t.run_bridge(config(t, [block]), 'check-config')
    t.check(p.returncode == EX_CONFIG, 'check-config exits 78, got %d' % p.returncode)
    t.check('plaintext' in p.stderr and ':' in p.stderr.split()[0], 'file:line error: %r' % p.stderr)
    since = log_size(src)
    p = t.run_bridge(config(t, [block]), 'sync')
    t.check(p.returncode == EX_CONFIG and never_connected(src, since),
            'sync refuses too, before connecting')


def test_plaintext_allowed_user_pass_and_apop(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(4))
    sync(t, config(t, [h.account_block('acct', src, tls='none', auth='apop')]))
    t.check(h.imap_count(dst) == 4, 'APOP over plaintext (allowed) imports')
    log = open(src.log_path, errors='replace').read()
    t.check('method=APOP' in log, 'Dovecot saw an APOP login')
    h.seed(src, 'alice', h.make_corpus(2, seed=9))
    sync(t, config(t, [h.account_block('acct', src, tls='none', auth='user')], name='u.conf'))
    t.check(h.imap_count(dst) == 6, 'USER/PASS imports the new ones only')


def test_wrong_password(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(3))
    p = sync(t, config(t, [h.account_block('acct', src, password='wrong')]),
             expect=EX_UNAVAILABLE)
    t.check(p.stderr.startswith('pop3bridge: acct:') and 'wrong' not in p.stderr,
            'one line, no password: %r' % p.stderr)
    t.check(h.imap_count(dst) == 0, 'nothing imported')
    st = t.run_bridge(config(t, [h.account_block('acct', src, password='wrong')]), 'status')
    t.check('last error' in st.stdout, 'status shows the error: %r' % st.stdout)


def test_password_command(t):
    src, dst = servers(t)
    h.seed(src, 'alice', h.make_corpus(2))
    block = h.account_block('acct', src, password=None,
                            pop3_extra='password_command = "printf \'secret\\\\n\'"')
    sync(t, config(t, [block]))
    t.check(h.imap_count(dst) == 2, 'imported with the password from the command')
    bad = h.account_block('acct', src, password=None, pop3_extra='password_command = "exit 3"')
    p = sync(t, config(t, [bad], name='bad.conf'), expect=EX_CONFIG)
    t.check('exit status 3' in p.stderr, 'the command failure is reported: %r' % p.stderr)


def test_world_readable_config_with_password_refused(t):
    src, dst = servers(t)
    conf = config(t, [h.account_block('acct', src)])
    import os
    os.chmod(conf, 0o644)
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == EX_CONFIG and 'readable' in p.stderr, 'refused: %r' % p.stderr)


if __name__ == '__main__':
    h.main()
