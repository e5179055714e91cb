"""Scale-out: --shard K/N (N instances sharing nothing cover every account
exactly once; the hash is the documented FNV-1a 64 of the name) and
include_dir (accounts in DIR/*.conf, errors still FILE:LINE)."""

import json
import os

import harness as h
from common import stored_files, sync

EX_USAGE, EX_CONFIG = 64, 78


def fnv1a64(name):
    """The contract's hash, computed independently of the C code."""
    v = 0xcbf29ce484222325
    for b in name.encode():
        v = ((v ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return v


def _names(t, conf, *args):
    p = t.run_bridge(conf, *args, 'status', '--json')
    t.require(p.returncode == 0, 'status %r: %s' % (args, p.stderr))
    return [a['name'] for a in json.loads(p.stdout)['accounts']]


def test_three_shards_cover_thirty_accounts_once(t):
    users = {'u%02d' % i: 'pw%02d' % i for i in range(30)}
    src = t.dovecot('src', users=users)
    dst = t.dovecot('dst', mail_root=t.path('dest'))
    msgs = {}
    for u in users:
        msgs[u] = h.make_message(int(u[1:]), tag='shard-' + u)
        h.seed(src, u, [msgs[u]])
    accounts = [h.account_block('acct-%s' % u, src, user=u, password=users[u], local_user=u)
                for u in sorted(users)]
    # Three instances that share nothing: each its own state_dir.
    confs = [h.write_config(t.path('p3b-%d.conf' % k), h.config_text(
        t.path('state-%d' % k), t.path('dest', '%u', 'Maildir'), accounts))
        for k in (1, 2, 3)]
    seen = {}
    for k in (1, 2, 3):
        shard = '%d/3' % k
        names = _names(t, confs[k - 1], '--shard', shard)
        want = sorted('acct-%s' % u for u in users if fnv1a64('acct-%s' % u) % 3 == k - 1)
        t.check(sorted(names) == want, 'shard %s holds the accounts FNV-1a 64 mod 3 puts '
                'there: %r, want %r' % (shard, names, want))
        for n in names:
            t.check(n not in seen, '%s in shards %s and %s' % (n, seen.get(n), shard))
            seen[n] = shard
        p = t.run_bridge(confs[k - 1], '--shard', shard, 'check-config')
        t.check(p.returncode == 0 and ('%d account' % len(names)) in p.stdout and
                'shard %s' % shard in p.stdout, 'check-config names the shard: %r' % p.stdout)
        p = t.run_bridge(confs[k - 1], '--shard', shard, 'sync')
        t.check(p.returncode == 0, 'sync of shard %s: %s' % (shard, p.stderr[-400:]))
    t.check(len(seen) == 30, 'every account in some shard (%d of 30)' % len(seen))
    t.check(min(list(seen.values()).count(s) for s in ('1/3', '2/3', '3/3')) > 0,
            'no shard empty: %r' % sorted(seen.values()))
    for u in users:
        got = stored_files(dst, user=u)
        t.check(len(got) == 1 and h.body_hash(got[0]) == h.body_hash(h.pop3_view(msgs[u])),
                '%s imported exactly once (%d stored)' % (u, len(got)))
    # Naming an account of another shard is a usage error that says whose.
    other = next(n for n, s in seen.items() if s != '1/3')
    p = t.run_bridge(confs[0], '--shard', '1/3', 'sync', other)
    t.check(p.returncode == EX_USAGE and 'shard %s' % seen[other][0] in p.stderr,
            'sync of another shard\'s account refused: %r' % p.stderr)
    for bad in ('0/3', '4/3', '3', 'a/b', '1/0'):
        p = t.run_bridge(confs[0], '--shard', bad, 'status')
        t.check(p.returncode == EX_USAGE, '--shard %s refused, got %d' % (bad, p.returncode))
    p = t.run_bridge(confs[0], '--shard', '1/3', 'queue')
    t.check(p.returncode == EX_USAGE, '--shard with queue refused')


def _include_setup(t, src):
    os.makedirs(t.path('conf.d'))
    return h.write_config(t.path('p3b.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'),
        [h.account_block('main', src, folder='Main')], extra='include_dir = "conf.d"\n'))


def test_include_dir(t):
    src = t.dovecot('src')
    dst = t.dovecot('dst', mail_root=t.path('dest'))
    h.seed(src, 'alice', [h.make_message(i, tag='inc') for i in range(2)])
    conf = _include_setup(t, src)
    # One or many accounts per file, read in name order; other files ignored.
    h.write_config(t.path('conf.d', '20-b.conf'), h.account_block('b1', src, folder='B1') +
                   h.account_block('b2', src, folder='B2'))
    h.write_config(t.path('conf.d', '10-a.conf'), h.account_block('a', src, folder='A'))
    h.write_config(t.path('conf.d', 'notes.txt'), 'not a config')
    h.write_config(t.path('conf.d', '.hidden.conf'), 'garbage {')
    t.check(_names(t, conf) == ['main', 'a', 'b1', 'b2'], 'accounts of the main file, then '
            'conf.d/*.conf in name order: %r' % _names(t, conf))
    sync(t, conf)
    for f in ('.Main', '.A', '.B1', '.B2'):
        t.check(len(stored_files(dst, folder=f)) == 2, 'account of %s imported' % f)
    # Errors are FILE:LINE of the file they are in.
    bad = t.path('conf.d', '30-bad.conf')
    h.write_config(bad, h.account_block('c', src) + 'poll_interval = 10\n' +
                   h.account_block('a', src, folder='Again') +
                   'account "d" {\n  folder = "x/"\n  pop3 {\n    host = "h"\n  }\n}\n')
    p = t.run_bridge(conf, 'check-config')
    lines = p.stderr.strip().splitlines()
    t.check(p.returncode == EX_CONFIG, 'a bad include file fails check-config')
    t.check(lines and all(l.startswith(bad + ':') for l in lines) and len(lines) >= 3,
            'every error as FILE:LINE of the include file: %r' % lines)
    t.check(any('only account blocks' in l for l in lines), 'top-level key refused: %r' % lines)
    t.check(any('defined twice (first at %s:' % t.path('conf.d', '10-a.conf') in l
                for l in lines), 'a repeated account names the first file: %r' % lines)
    # A password in an include file readable by others is refused there.
    os.unlink(bad)
    leak = t.path('conf.d', '40-leak.conf')
    h.write_config(leak, h.account_block('e', src))
    os.chmod(leak, 0o644)
    p = t.run_bridge(conf, 'check-config')
    t.check(p.returncode == EX_CONFIG and ('%s: holds a password but is readable' % leak)
            in p.stderr, 'readable include file with a password refused: %r' % p.stderr)
    os.unlink(leak)
    h.write_config(t.path('p3b-missing.conf'), h.config_text(
        t.path('state'), t.path('dest', '%u', 'Maildir'), [],
        extra='include_dir = "%s"\n' % t.path('nowhere')))
    p = t.run_bridge(t.path('p3b-missing.conf'), 'check-config')
    t.check(p.returncode == EX_CONFIG and 'include_dir' in p.stderr,
            'a missing include_dir is an error: %r' % p.stderr)


if __name__ == '__main__':
    h.main()
