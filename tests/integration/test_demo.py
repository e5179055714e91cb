#!/usr/bin/python3
"""scripts/demo (make demo) keeps working: it syncs two POP3 accounts into
a Maildir and shows the result over IMAP."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def test_demo(t):
    env = dict(os.environ, POP3BRIDGE=harness.bridge_binary(), TMPDIR=t.tmp)
    p = subprocess.run(['/usr/bin/python3', os.path.join(harness.REPO, 'scripts', 'demo')],
                       env=env, capture_output=True, text=True, errors='replace', timeout=240,
                       stdin=subprocess.DEVNULL)
    log = t.path('demo.out')
    with open(log, 'w') as f:
        f.write('exit %d\n--- stdout\n%s\n--- stderr\n%s\n' % (p.returncode, p.stdout, p.stderr))
    t.add_log(log, 'scripts/demo')
    t.check(p.returncode == 0, 'scripts/demo exited %d' % p.returncode)
    t.check('INBOX (12 messages)' in p.stdout, 'INBOX shows 12 messages')
    t.check('Lists/News (3 messages)' in p.stdout, 'Lists/News shows 3 messages')
    t.check('Café meeting — déjà vu' in p.stdout, 'non-ASCII subject decoded')
    t.check('still INBOX: 12, Lists/News: 3' in p.stdout, 'second sync imports nothing')
    rep = harness.sanitizer_report(p.stderr)
    t.check(rep is None, 'sanitizer: %s' % rep)
    left = [d for d in os.listdir(t.tmp) if d.startswith('pop3bridge-demo-')]
    t.check(p.returncode != 0 or not left, 'demo removed its temp dir: %s' % left)


if __name__ == '__main__':
    harness.main()
