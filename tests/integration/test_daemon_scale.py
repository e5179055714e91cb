"""The daemon with 200 accounts on one Dovecot: run with max_parallel = 8 and
max_per_host = 2 (Dovecot's own log of logins shows never more than 2 at
once), one account with a wrong password whose polls back off (its failed
logins in Dovecot's log, far fewer than its poll_interval would make),
SIGHUP adding and removing an account, SIGTERM in the middle of an import
that leaves nothing pending after the next pass, and a second run refused.
About a minute (rel) on 2 cores."""

import json
import os
import re
import signal
import time

import harness as h
from common import stored_files

TIMEOUT = 420
N = 200
LOGIN = re.compile(r'pop3-login: Info: Login: user=<([^>]*)>.*session=<([^>]*)>')
END = re.compile(r'pop3\(([^)]*)\)<\d+><([^>]*)>: Info: Disconnected')
# One line per connection whose logins failed (a pass tries each mechanism
# the server offers in one connection).
AUTH_FAILED = re.compile(r'pop3-login: Info: Disconnected: .*\(auth failed, \d+ attempts.*'
                         r'user=<([^>]*)>')


def log_lines(d, start=0):
    with open(d.log_path, errors='replace') as f:
        f.seek(start)
        return f.read().splitlines()


def max_concurrent(lines):
    open_, most = set(), 0
    for line in lines:
        m = LOGIN.search(line)
        if m:
            open_.add(m.group(2))
            most = max(most, len(open_))
            continue
        m = END.search(line)
        if m:
            open_.discard(m.group(2))
    return most


def logins(lines, user):
    n = 0
    for line in lines:
        m = LOGIN.search(line)
        n += bool(m and m.group(1) == user)
    return n


def failed_logins(lines, user):
    n = 0
    for line in lines:
        m = AUTH_FAILED.search(line)
        n += bool(m and m.group(1) == user)
    return n


def status(t, conf):
    p = t.run_bridge(conf, 'status', '--json')
    t.require(p.returncode == 0, 'status: %s' % p.stderr)
    return {a['name']: a for a in json.loads(p.stdout)['accounts']}


def account(src, u, pw, extra=''):
    # Plain POP3 on loopback: the test is about the schedule, and 200 TLS
    # handshakes under ASan would be most of its time.
    return h.account_block('a-%s' % u, src, user=u, password=pw, local_user=u, extra=extra,
                           tls='none')


def write_conf(t, src, users, extra_accounts=(), drop=()):
    # The big one first: it is under way when the test sends SIGTERM.
    accts = list(extra_accounts)
    # u000 is polled every 2 s: while it is configured, Dovecot's log
    # shows it again and again.
    accts += [account(src, u, pw, extra='poll_interval = 2' if u == 'u000' else '')
              for u, pw in sorted(users.items()) if u not in drop]
    # The wrong password: the server refuses every login.
    accts.append(account(src, 'bad', 'not-the-password', extra='poll_interval = 2'))
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), accts,
        'max_parallel = 8\nmax_per_host = 2\npoll_interval = 3600\n'))


def test_two_hundred_accounts(t):
    users = {'u%03d' % i: 'pw%03d' % i for i in range(N)}
    users['bad'] = 'the-password'
    users['big'] = 'big-pw'
    users['late'] = 'late-pw'
    src = t.dovecot('src', users=users)
    dst = t.dovecot('dst', mail_root=t.path('dest'))
    t0 = time.monotonic()
    for u in users:
        if u.startswith('u'):
            h.seed(src, u, [h.make_message(i, tag=u) for i in range(2)])
    big = [h.make_message(i, size=40000, tag='big') for i in range(800)]
    h.seed(src, 'big', big)
    h.seed(src, 'late', [h.make_message(1, tag='late')])
    polled = {u: pw for u, pw in users.items() if u.startswith('u')}
    conf = write_conf(t, src, polled, extra_accounts=[account(src, 'big', 'big-pw')])
    d = t.start_bridge(conf, 'run')

    h.wait_for(lambda: os.path.exists(t.path('state', 'run.lock')), timeout=30,
               what='run holds its lock')
    p = t.run_bridge(conf, 'run', timeout=30)
    t.check(p.returncode == 75 and 'pid %d' % d.pid in p.stderr,
            'a second run is refused: %d %r' % (p.returncode, p.stderr))
    # SIGTERM in the middle of the big import; the next run finishes it.
    h.wait_for(lambda: 20 < len(stored_files(dst, user='big')) or d.poll() is not None,
               timeout=120, what='the big import under way')
    t.require(d.poll() is None, 'run is running')
    d.send_signal(signal.SIGTERM)
    d.wait(timeout=60)
    t.check(d.returncode == 0, 'SIGTERM: exit 0 (got %s)' % d.returncode)
    part = len(stored_files(dst, user='big'))
    t.check(part < len(big), 'stopped in the middle: %d of %d' % (part, len(big)))

    mark = os.path.getsize(src.log_path)
    d = t.start_bridge(conf, 'run')
    h.wait_for(lambda: len(stored_files(dst, user='big')) == len(big) and
               all(len(stored_files(dst, user=u)) == 2 for u in polled), timeout=240,
               what='every account imported')
    s = status(t, conf)
    t.check(all(a['pending'] == 0 for a in s.values()), 'nothing pending after the next pass: '
            '%r' % {n: a['pending'] for n, a in s.items() if a['pending']})
    t.check(s['a-big']['imported'] == len(big), 'big imported once: %r' % s['a-big']['imported'])
    got = sorted(h.body_hash(b) for b in stored_files(dst, user='big'))
    t.check(got == sorted(h.body_hash(h.pop3_view(m)) for m in big),
            'the big mailbox exactly, none twice')

    # SIGHUP: one account more, one less.
    write_conf(t, src, polled, extra_accounts=[account(src, 'big', 'big-pw'),
                                               account(src, 'late', 'late-pw')],
               drop=('u000',))
    d.send_signal(signal.SIGHUP)
    h.wait_for(lambda: len(stored_files(dst, user='late')) == 1, timeout=60,
               what='the account added by SIGHUP imported')
    t.check(logins(log_lines(src, mark), 'u000') >= 2,
            'u000 was polled every 2 s before the reload')
    h.seed(src, 'u000', [h.make_message(9, tag='u000-after')])
    # A pass of u000 under way at the SIGHUP may still log in; after that none.
    time.sleep(3)
    settled = os.path.getsize(src.log_path)
    time.sleep(6)
    lines = log_lines(src, mark)
    t.check(logins(log_lines(src, settled), 'u000') == 0,
            'the account removed by SIGHUP is no longer polled')
    t.check(len(stored_files(dst, user='u000')) == 2, 'nothing new imported for it')

    most = max_concurrent(lines)
    t.check(most <= 2, 'never more than 2 logins at once on one server: %d' % most)
    t.check(most == 2, 'but 2 at once (max_parallel 8 had work for them): %d' % most)
    s = status(t, conf)
    bad = s['a-bad']
    t.check(bad['last_result'] == 'error' and bad['last_error'], 'the bad account fails: %r' % bad)
    with open(d.log_path) as f:
        dlog = f.read()
    t.check(re.search(r'pass: \d+ accounts polled in \d+s, \d+ failed', dlog),
            'the daemon logs a summary line per pass')
    # The wrong password backs off: without it, a poll every 2 s (plus
    # Dovecot's 2 s delay on a failed login) would be some 15 attempts a
    # minute; with it 2, 8, 32... seconds apart.
    spent = time.monotonic() - t0
    fails = failed_logins(log_lines(src), 'bad')
    print('  failed logins of "bad": %d in %.0f s' % (fails, spent))
    # At most as many as the backoff allows at its shortest (login refusals:
    # 2 s x 4^(n-1), less 25 % jitter), against spent / 4 without it.
    allowed, at = 0, 0.0
    while at <= spent:
        allowed += 1
        at += 0.75 * 2 * 4 ** (allowed - 1)
    t.check(1 <= fails <= allowed, 'the wrong password backs off: %d failed logins in '
            '%.0f s at poll_interval = 2 (the backoff allows %d)' % (fails, spent, allowed))
    t.check(bad['failures'] == fails and bad['failing_since'] and bad['next_poll'] and
            bad['backoff'] and bad['backoff'] > 2, 'status shows the backoff: failures %r, '
            'failing since %r, next poll %r, backoff %r' % (bad['failures'],
                                                          bad['failing_since'],
                                                          bad['next_poll'], bad['backoff']))
    h.stop_process(d)
    t.check(d.returncode == 0, 'stopped with 0')
    print('  200 accounts: %.1f s' % (time.monotonic() - t0))


if __name__ == '__main__':
    h.main()
