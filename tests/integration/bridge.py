"""pop3bridge, the program under test: where its binary is, its config files,
running it and reading sanitizer reports out of its output.

    REPO, bridge_binary()               the checkout, and $POP3BRIDGE or ./pop3bridge
    cq(s), account_block(name, dovecot, ...), maildir_store(path)
    config_text(state_dir, store_path, accounts), config_with_store(state_dir, store, accounts)
    write_config(path, text)            mode 0600
    run_bridge(config, *args), start_bridge(config, *args)
    sanitizer_report(text)

A started pop3bridge is registered with processes.track (stopped at exit);
stop it earlier with processes.stop_process."""

import os
import re
import subprocess
import time

from processes import stop_process, track

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def bridge_binary():
    """$POP3BRIDGE, else the repo's ./pop3bridge (absolute path)."""
    return os.path.abspath(os.environ.get('POP3BRIDGE') or os.path.join(REPO, 'pop3bridge'))


# ---------------------------------------------------------------- config files

def write_config(path, text):
    """Writes a config file with mode 0600 (pop3bridge refuses readable ones)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def cq(s):
    """A libconfuse quoted string."""
    return '"' + str(s).replace('\\', '\\\\').replace('"', '\\"') + '"'


def account_block(name, dovecot, user='alice', password='secret', folder='INBOX',
                  local_user='alice', tls='implicit', extra='', pop3_extra='', **opts):
    """An account "NAME" { ... } block fetching from dovecot. tls: "implicit"
    (pop3s port, ca_file = dovecot.ca_file), "starttls" or "none" (pop3
    port; "none" sets allow_plaintext). opts: more pop3 {} settings
    (auth="apop", timeout=5); extra: raw text inside the account block."""
    port = dovecot.ports['pop3s' if tls == 'implicit' else 'pop3']
    pop3 = ['host = "localhost"', 'port = %d' % port, 'tls = %s' % cq(tls),
            'user = %s' % cq(user)]
    if password is not None:
        pop3.append('password = %s' % cq(password))
    if tls != 'none' and dovecot.ca_file:
        pop3.append('ca_file = %s' % cq(dovecot.ca_file))
    if tls == 'none':
        pop3.append('allow_plaintext = true')
    for k, v in opts.items():
        pop3.append('%s = %s' % (k, cq(v) if isinstance(v, str) else
                                 ('true' if v is True else 'false' if v is False else v)))
    if pop3_extra:
        pop3.append(pop3_extra)
    return ('account %s {\n  local_user = %s\n  folder = %s\n  pop3 {\n    %s\n  }\n%s}\n'
            % (cq(name), cq(local_user), cq(folder), '\n    '.join(pop3),
               ('  ' + extra.strip() + '\n') if extra else ''))


def maildir_store(path):
    """The store { } block of a Maildir store at path ("%u" allowed)."""
    return 'store {\n  type = "maildir"\n  path = %s\n}\n' % cq(path)


def config_with_store(state_dir, store, accounts, extra=''):
    """A whole config: state_dir, the store block store (text ending in a
    newline), extra top-level text and the account blocks."""
    return 'state_dir = %s\n%s%s\n%s' % (cq(state_dir), store, extra, ''.join(accounts))


def config_text(state_dir, store_path, accounts, extra=''):
    """A whole config: state_dir, a maildir store at store_path ("%u" allowed),
    the account blocks (strings from account_block) and extra top-level text."""
    return config_with_store(state_dir, maildir_store(store_path), accounts, extra)


# ---------------------------------------------------------------- running it

def _command(config, args):
    """argv of `pop3bridge [-c CONFIG] ARGS...`."""
    return [bridge_binary()] + (['-c', config] if config else []) + [str(a) for a in args]


def _environ(env):
    """This process's environment with env's entries added or replaced."""
    e = dict(os.environ)
    e.update(env or {})
    return e


def run_bridge(config, *args, timeout=300, check=False, env=None, input=None, text=True):
    """Runs `pop3bridge -c CONFIG ARGS...`; CompletedProcess with stdout and
    stderr captured (str, or bytes with text=False or bytes input). check:
    raise RuntimeError with the output when the exit code is not 0."""
    cmd = _command(config, args)
    if isinstance(input, bytes):
        text = False
    kw = {'errors': 'replace'} if text else {}
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, env=_environ(env),
                       text=text, stdin=None if input is not None else subprocess.DEVNULL,
                       **kw)
    if check and p.returncode != 0:
        raise RuntimeError('%s exited %d\n--- stdout\n%s\n--- stderr\n%s' % (
            ' '.join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def start_bridge(config, *args, env=None, log=None):
    """Starts `pop3bridge -c CONFIG ARGS...` in the background (e.g. "run"),
    stdout+stderr to log (default CONFIG.DIR/pop3bridge-MILLISECONDS.log, also in
    .log_path). Stopped at exit if still running; stop it with stop_process."""
    if log is None:
        log = os.path.join(os.path.dirname(os.path.abspath(config or '.')),
                           'pop3bridge-%d.log' % int(time.time() * 1000))
    f = open(log, 'ab')
    try:
        p = subprocess.Popen(_command(config, args), stdin=subprocess.DEVNULL, stdout=f,
                             stderr=f, env=_environ(env))
    finally:
        f.close()
    p.log_path = log
    track(p, lambda: stop_process(p))
    return p


_SANITIZER_RE = re.compile(r'ERROR: (?:Address|Leak|Memory|Thread)Sanitizer|runtime error: |'
                           r'SUMMARY: (?:Address|UndefinedBehavior)Sanitizer')


def sanitizer_report(text):
    """The first line of an ASan/LSan/UBSan report in text (str or bytes), or None."""
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    for line in (text or '').splitlines():
        if _SANITIZER_RE.search(line):
            return line.strip()
    return None
