"""Installed like a Debian daemon: `make install DESTDIR=...` puts the
binary, the man pages, the system and user units (and the optional
sendmail link) in place without creating the system user; the man pages
are clean under mandoc's lint and document every command, option, config
key, status --json key and metric the program has."""

import json
import os
import pwd
import re
import subprocess

import harness as h
from common import config, servers, sync

ASAN = False  # builds and reads files: one run is enough

MAN1 = os.path.join(h.REPO, 'doc', 'pop3bridge.1')
MAN5 = os.path.join(h.REPO, 'doc', 'pop3bridge.conf.5')


def _read(path):
    with open(path) as f:
        return f.read()


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_make_install_destdir(t):
    dest = t.path('root')
    had_user = _user_exists('pop3bridge')
    p = subprocess.run(['make', '-s', '-C', h.REPO, 'install', 'DESTDIR=' + dest, 'PREFIX=/usr',
                        'SENDMAIL_LINK=1'], capture_output=True, text=True, timeout=300)
    t.require(p.returncode == 0, 'make install: %s' % (p.stdout + p.stderr)[-1500:])
    want = {'usr/bin/pop3bridge': 0o755, 'usr/share/man/man1/pop3bridge.1': 0o644,
            'usr/share/man/man5/pop3bridge.conf.5': 0o644,
            'usr/lib/systemd/system/pop3bridge.service': 0o644,
            'usr/lib/systemd/user/pop3bridge.service': 0o644,
            'usr/share/doc/pop3bridge/pop3bridge.conf.example': 0o644}
    for rel, mode in want.items():
        path = os.path.join(dest, rel)
        t.check(os.path.isfile(path) and os.stat(path).st_mode & 0o777 == mode,
                '%s installed, mode %o' % (rel, mode))
    link = os.path.join(dest, 'usr/sbin/sendmail')
    t.check(os.path.islink(link) and os.readlink(link) == '/usr/bin/pop3bridge',
            'SENDMAIL_LINK=1: sbin/sendmail -> the binary')
    unit = _read(os.path.join(dest, 'usr/lib/systemd/system/pop3bridge.service'))
    t.check('ExecStart=/usr/bin/pop3bridge run' in unit and 'User=pop3bridge' in unit and
            'Type=notify' in unit and 'StateDirectory=pop3bridge' in unit,
            'the system unit runs the installed binary as pop3bridge')
    user = _read(os.path.join(dest, 'usr/lib/systemd/user/pop3bridge.service'))
    t.check('ExecStart=/usr/bin/pop3bridge run' in user and 'User=' not in user and
            'default.target' in user, 'the user unit')
    if not had_user:
        t.check(not _user_exists('pop3bridge'), 'no system user made for a DESTDIR install')
        t.check('useradd --system' in p.stdout and 'pop3bridge' in p.stdout,
                'the command to make it is printed: %r' % p.stdout)
    out = subprocess.run([os.path.join(dest, 'usr/bin/pop3bridge'), '-V'], capture_output=True,
                         text=True)
    t.check(out.returncode == 0 and out.stdout.startswith('pop3bridge '), 'installed binary runs')
    p = subprocess.run(['mandoc', '-T', 'lint', '-W', 'warning',
                        os.path.join(dest, 'usr/share/man/man1/pop3bridge.1'),
                        os.path.join(dest, 'usr/share/man/man5/pop3bridge.conf.5')],
                       capture_output=True, text=True)
    t.check(p.returncode == 0 and not p.stdout and not p.stderr,
            'installed man pages lint clean: %r' % (p.stdout + p.stderr))


def test_man_pages_lint_clean(t):
    for page in (MAN1, MAN5):
        p = subprocess.run(['mandoc', '-T', 'lint', '-W', 'warning', page], capture_output=True,
                           text=True)
        t.check(p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(),
                '%s: %r' % (os.path.basename(page), p.stdout + p.stderr))
        p = subprocess.run(['mandoc', '-T', 'utf8', page], capture_output=True, text=True)
        t.check(p.returncode == 0 and 'pop3bridge' in p.stdout, 'renders: %s' % page)


def _commands():
    p = h.run_bridge(None, '-h')
    names = re.findall(r'^  ([a-z][a-z-]+)(?: |$)', p.stdout, re.M)
    return [n for n in names if n not in ('c',)]


def _config_keys():
    src = _read(os.path.join(h.REPO, 'conf', 'conf_parse.c'))
    keys = set(re.findall(r'CFG_[A-Z_]+\("([a-z_0-9]+)"', src))
    example = _read(os.path.join(h.REPO, 'conf', 'pop3bridge.conf.example'))
    # "key =" (also commented out), and blocks: 'name {' or 'account "x" {'
    ex = set(re.findall(r'^[ \t#]*([a-z_0-9]+)[ \t]*(?:=|\{|"[^"]*"[ \t]*\{)', example, re.M))
    return keys, ex


def test_man_pages_document_everything(t):
    man1, man5 = _read(MAN1), _read(MAN5)
    cmds = _commands()
    t.require(len(cmds) >= 8 and 'import-state' in cmds, 'commands from -h: %r' % cmds)
    for c in cmds:
        t.check(re.search(r'^\.It Cm %s\b' % re.escape(c), man1, re.M),
                'pop3bridge(1) documents the command %s' % c)
    for opt in ('Fl c', 'Fl v', 'Fl q', 'Fl s', 'Fl \\-shard', 'Fl h', 'Fl V'):
        t.check('.It ' + opt in man1, 'pop3bridge(1) documents %s' % opt)
    keys, ex = _config_keys()
    t.require('include_dir' in keys and 'state_dir' in keys, 'keys from conf_parse.c: %r' % keys)
    for k in sorted(keys | ex):
        t.check(re.search(r'\bIc %s\b' % re.escape(k), man5),
                'pop3bridge.conf(5) documents the key %s' % k)
    for k in sorted(keys):
        t.check(k in ex, 'conf/pop3bridge.conf.example documents the key %s' % k)
    # The status --json keys and the metrics, as the program writes them.
    src, dst = servers(t)
    prom = t.path('m.prom')
    conf = config(t, [h.account_block('acct', src)], extra='metrics_file = "%s"\n' % prom)
    sync(t, conf)
    js = json.loads(h.run_bridge(conf, 'status', '--json').stdout)['accounts'][0]
    for k in js:
        t.check(re.search(r'\b%s\b' % re.escape(k), man1), 'pop3bridge(1) names the status '
                '--json key %s' % k)
    readme = _read(os.path.join(h.REPO, 'README.md'))
    names = sorted(set(re.findall(r'^(pop3bridge_[a-z_]+)', _read(prom), re.M)))
    t.require(len(names) >= 15, 'metrics written: %r' % names)
    for n in names:
        t.check(n in man1 and n in readme, 'metric %s documented in pop3bridge(1) and README'
                % n)


if __name__ == '__main__':
    h.main()
