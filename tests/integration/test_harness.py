#!/usr/bin/python3
"""Tests of the integration harness itself, against real Dovecot. They need
no pop3bridge binary, so they run once (not again under ASan)."""

import os
import re
import socket
import ssl
import subprocess
import sys
import poplib
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ASAN = False  # does not run pop3bridge: one run is enough


def test_corpus_properties(t):
    corpus = harness.make_corpus(60, seed=1)
    t.check(corpus == harness.make_corpus(60, seed=1), 'corpus is deterministic')
    t.check(corpus != harness.make_corpus(60, seed=2), 'seed changes the corpus')
    ids = [harness.header(m, 'Message-ID') for m in corpus]
    t.check(all(ids) and len(set(ids)) == len(ids), 'unique Message-IDs')
    t.check(all(harness.header(m, 'Date') for m in corpus), 'every message has a Date')
    sizes = [len(m) for m in corpus]
    t.check(min(sizes) >= 200 and max(sizes) <= 200 * 1024, 'sizes %d..%d' % (min(sizes), max(sizes)))
    t.check(max(sizes) > 100 * 1024, 'some messages are large')
    t.check(sum(b'\x00' in m for m in corpus) == 1, 'exactly one message has a NUL')
    t.check(any(b'\r\n' in m and re.search(rb'(?<!\r)\n', m) for m in corpus),
            'CRLF messages with bare LF lines')
    t.check(any(b'\r' not in m for m in corpus), 'LF-only messages')
    t.check(any(re.search(rb'(?m)^Subject: .*[\x80-\xff]', m) for m in corpus), '8-bit headers')
    t.check(any(b'Content-Transfer-Encoding: base64' in m for m in corpus), 'a base64 attachment')
    t.check(any(re.search(rb'\r\n\.\r\n', m) for m in corpus), 'a line holding only "."')
    # two different messages with the same number differ in Message-ID
    a = harness.make_message(1, subject='a')
    b = harness.make_message(1, subject='b')
    t.check(harness.header(a, 'Message-ID') != harness.header(b, 'Message-ID'), 'ids differ')
    for size in (300, 1001, 5000, 5001, 5002, 70001):
        for eol in (b'\r\n', b'\n'):
            m = harness.make_message(3, size=size, eol=eol)
            t.check(len(m) == size, 'exact size %d: %d' % (size, len(m)))
            t.check(m.endswith(eol) and (eol == b'\n' or not re.search(rb'\r(?!\n)|(?<!\r)\n', m)),
                    'clean %r line endings at size %d' % (eol, size))
    big = harness.big_message(20)
    t.check(19 * 2**20 < len(big) < 22 * 2**20, 'big message is ~20 MB: %d' % len(big))
    t.check(harness.canonical(b'a\nb\r\nc\rd\n') == b'a\r\nb\r\nc\rd\r\n', 'canonical')
    t.check(harness.header('Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n', 'Subject') == 'Grüße',
            'header() decodes RFC 2047')


def test_seed_50_then_stat(t):
    d = t.dovecot('src')
    corpus = harness.make_corpus(50, seed=7)
    harness.seed(d, 'alice', corpus)
    count, octets = harness.pop3_stat(d, 'alice', 'secret')
    t.check(count == 50, 'STAT count %d, expected 50' % count)
    t.check(octets == sum(len(harness.canonical(m)) for m in corpus),
            'STAT octets %d are the sizes of the CRLF forms' % octets)
    uidls = harness.pop3_uidls(d, 'alice', 'secret')
    t.check(len(uidls) == 50 and len(set(uidls)) == 50, '50 distinct UIDLs')
    got = harness.pop3_retr_all(d, 'alice', 'secret')
    t.check(len(got) == 50, 'RETR all')
    bad = [i for i, (m, g) in enumerate(zip(corpus, got)) if harness.canonical(m) != g]
    t.check(not bad, 'RETR returns canonical(seeded) byte for byte, seeded order; bad: %s' % bad)
    imap = harness.imap_fetch_all(d, 'alice', 'secret')
    t.check(len(imap) == 50 and harness.imap_count(d, 'alice', 'secret') == 50, 'IMAP sees 50')
    bad = [i for i, (m, g) in enumerate(zip(corpus, imap))
           if harness.body_hash(harness.imap_view(m)) != harness.body_hash(g['body'])]
    t.check(not bad, 'IMAP FETCH equals imap_view(seeded); bad: %s' % bad)


def test_dovecot_nul_and_bare_lf(t):
    """Pins down what canonical()'s comment says Dovecot does."""
    d = t.dovecot('src')
    msgs = [b'Subject: nul\r\n\r\nnul[\x00]here\r\nbare\nlf\n.dot\r\nlone\rcr\r\n',
            b'Subject: no final newline\n\nline1\nlast line']
    harness.seed(d, 'alice', msgs)
    # the raw POP3 wire, before poplib touches it
    s = socket.create_connection(('127.0.0.1', d.ports['pop3']), timeout=10)
    f = s.makefile('rb')
    f.readline()
    s.sendall(b'USER alice\r\nPASS secret\r\nLIST\r\nRETR 1\r\nRETR 2\r\nQUIT\r\n')
    wire = f.read()
    s.close()
    t.check(b'\r\nnul[\x00]here\r\nbare\r\nlf\r\n..dot\r\nlone\rcr\r\n.\r\n' in wire,
            'POP3: NUL as is, bare LF -> CRLF, dot-stuffed, lone CR kept: %r' % wire)
    t.check(b'\r\nline1\r\nlast line\r\n.\r\n' in wire, 'POP3 appends CRLF at the end')
    t.check(b'\r\n2 %d\r\n' % len(harness.canonical(msgs[1])) in wire,
            'LIST size excludes the appended CRLF: %r' % wire[:120])
    got = harness.pop3_retr_all(d)
    t.check(got == [harness.pop3_view(m) for m in msgs], 'pop3_view() predicts RETR')
    imap = harness.imap_fetch_all(d)
    t.check(imap[0]['body'] == b'Subject: nul\r\n\r\nnul[\x80]here\r\nbare\r\nlf\r\n.dot\r\n'
            b'lone\rcr\r\n', 'IMAP: NUL -> 0x80, bare LF -> CRLF: %r' % imap[0]['body'])
    t.check(imap[1]['body'] == harness.canonical(msgs[1]), 'IMAP appends nothing')
    t.check([harness.imap_view(m) for m in msgs] == [g['body'] for g in imap],
            'imap_view() predicts FETCH')


def test_pop3s_and_imaps_verification(t):
    d = t.dovecot('src')
    harness.seed(d, 'alice', [harness.make_message(1)])
    t.check(harness.pop3_stat(d, 'alice', 'secret', tls=True) == (1, len(harness.make_message(1))),
            'POP3S with the test CA')
    m = harness.imap_connect(d, tls=True)
    m.logout()

    def refused(port, ctx, host='localhost'):
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname=host):
                    return None
        except ssl.SSLCertVerificationError as e:
            return e.verify_message or str(e)

    with_ca = ssl.create_default_context(cafile=d.ca_file)
    system = ssl.create_default_context()
    t.check(refused(d.ports['pop3s'], with_ca) is None, 'CA file: accepted')
    t.check(refused(d.ports['pop3s'], with_ca, '127.0.0.1') is None, 'IP SAN: accepted')
    r = refused(d.ports['pop3s'], system)
    t.check(r and 'issuer' in r, 'system store: refused (unknown issuer): %s' % r)
    r = refused(d.ports['imaps'], system)
    t.check(r is not None, 'IMAPS, system store: refused')
    try:
        harness.pop3_stat(d, 'alice', 'secret', tls=False)  # plain POP3 still works
    except Exception as e:
        t.check(False, 'plain POP3: %r' % e)

    c = t.certs
    d.restart(cert=c.wrong_cert, key=c.wrong_key)
    r = refused(d.ports['pop3s'], with_ca)
    t.check(r and 'mismatch' in r.lower(), 'wrong name: refused: %s' % r)
    t.check(refused(d.ports['pop3s'], with_ca, 'wrong.example') is None,
            'wrong cert is valid for wrong.example')
    d.restart(cert=c.selfsigned_cert, key=c.selfsigned_key)
    r = refused(d.ports['pop3s'], with_ca)
    t.check(r and 'self' in r.lower(), 'self-signed: refused: %s' % r)
    self_ctx = ssl.create_default_context(cafile=c.selfsigned_cert)
    t.check(refused(d.ports['pop3s'], self_ctx) is None, 'self-signed trusted as its own CA')


def test_imap_over_maildir_written_by_hand(t):
    """The destination side: a second Dovecot serves over IMAP a Maildir
    that somebody else (later pop3bridge) writes, with folders."""
    src = t.dovecot('src')
    msgs = [harness.make_message(1, subject='Hello'),
            harness.make_message(2, subject='Grüße', body=b'8-bit body: \xc3\xa4\r\n'),
            harness.make_message(3, subject='News', tag='n')]
    harness.seed(src, 'alice', msgs)
    fetched = harness.pop3_retr_all(src)

    dest_root = t.path('dest')
    dst = t.dovecot('dst', mail_root=dest_root)
    md = harness.make_maildir(os.path.join(dest_root, 'alice', 'Maildir'),
                              subfolders=['.Lists.News', '.Caf&AOk-'])
    uid, gid = harness.mail_ids()
    dates = [harness.BASE_DATE + 1000 * i for i in range(3)]
    targets = [('', 'new', ''), ('', 'cur', ':2,S'), ('.Lists.News', 'new', '')]
    for i, (raw, date, (folder, sub, info)) in enumerate(zip(fetched, dates, targets)):
        key = '%d.M%dP%d.byhand' % (date, i, os.getpid())
        tmp = os.path.join(md, folder, 'tmp', key)
        with open(tmp, 'wb') as f:
            f.write(raw.replace(b'\r\n', b'\n'))  # Maildir files use LF
        os.chown(tmp, uid, gid)
        os.utime(tmp, (date, date))
        os.rename(tmp, os.path.join(md, folder, sub, key + info))

    folders = harness.imap_list(dst, 'alice', 'secret')
    t.check(folders == ['Café', 'INBOX', 'Lists', 'Lists/News'] or
            folders == ['Café', 'INBOX', 'Lists/News'], 'folders: %s' % folders)
    t.check('Lists.News' in harness.imap_list(dst, sep=None), 'raw delimiter is "."')
    inbox = harness.imap_fetch_all(dst, 'alice', 'secret')
    news = harness.imap_fetch_all(dst, 'alice', 'secret', 'Lists/News')
    t.check(len(inbox) == 2 and len(news) == 1, 'counts %d %d' % (len(inbox), len(news)))
    t.check(harness.imap_count(dst, folder='Lists/News') == 1, 'imap_count on a subfolder')
    t.check(harness.imap_count(dst, folder='Café') == 0, 'imap_count on a UTF-7 folder')
    got = inbox + news
    for i in range(3):
        t.check(harness.body_hash(got[i]['body']) == harness.body_hash(fetched[i]) ==
                harness.body_hash(msgs[i]), 'message %d: same canonical hash' % i)
        t.check(got[i]['internaldate'] == dates[i],
                'message %d: INTERNALDATE %s is the mtime %s' % (i, got[i]['internaldate'], dates[i]))
    t.check('\\Seen' not in inbox[0]['flags'], 'new/ message unseen: %s' % inbox[0]['flags'])
    t.check('\\Seen' in inbox[1]['flags'], 'cur/ :2,S message seen: %s' % inbox[1]['flags'])
    t.check(harness.header(inbox[1]['body'], 'Subject') == 'Grüße', 'raw UTF-8 subject')
    # a flag change by the IMAP user is visible in the file name
    m = harness.imap_connect(dst)
    m.select('INBOX')
    m.uid('STORE', str(inbox[0]['uid']), '+FLAGS', '(\\Flagged)')
    m.logout()
    names = [os.path.basename(p) for p in harness.maildir_files(md)]
    t.check(any(n.endswith(':2,F') for n in names), 'flag stored in the file name: %s' % names)


def test_uidl_format_change_on_restart(t):
    d = t.dovecot('src')
    corpus = harness.make_corpus(5, seed=3)
    harness.seed(d, 'alice', corpus)
    before = harness.pop3_uidls(d)
    t.check(all(re.fullmatch(r'[0-9a-f]{16}', u) for u in before), 'uidls %s' % before)
    d.restart()
    t.check(harness.pop3_uidls(d) == before, 'UIDLs stable across a plain restart')
    d.restart(uidl_format='%g')
    after = harness.pop3_uidls(d)
    t.check(len(after) == 5 and not set(after) & set(before), 'reset UIDLs: %s' % after)
    t.check(harness.pop3_retr_all(d) == [harness.canonical(m) for m in corpus],
            'same messages under the new UIDLs')
    d.restart(uidl_format='%08Xu%08Xv')
    t.check(harness.pop3_uidls(d) == before, 'old format gives the old UIDLs back')


def test_apop_and_users(t):
    d = t.dovecot('src', users={'alice': 'secret', 'bob': 'hunter2'})
    harness.seed(d, 'bob', [harness.make_message(1), harness.make_message(2)])
    p = poplib.POP3('127.0.0.1', d.ports['pop3'], timeout=10)
    t.check(re.search(rb'<[^>]+@[^>]*>|<[^>]+>', p.getwelcome()), 'APOP timestamp in greeting')
    p.apop('bob', 'hunter2')
    t.check(p.stat()[0] == 2, 'APOP login works')
    p.quit()
    t.check(harness.pop3_stat(d, 'alice', 'secret')[0] == 0, 'alice has an empty Maildir')
    try:
        harness.pop3_stat(d, 'alice', 'wrong')
        t.check(False, 'a wrong password is refused')
    except poplib.error_proto:
        pass
    def login(user, pw):
        try:
            return harness.pop3_stat(d, user, pw) == (0, 0)
        except poplib.error_proto:
            return False
    d.set_user('carol', 'pw')  # passwd-file is re-read without a restart
    harness.wait_for(lambda: login('carol', 'pw'), 5, 0.1, 'user added live')
    d.set_user('carol', 'pX')  # same size, same second: still noticed
    harness.wait_for(lambda: login('carol', 'pX'), 5, 0.1, 'password changed live')
    t0 = time.monotonic()
    for pw in ('bad1', 'bad2', 'bad3'):
        try:
            harness.pop3_stat(d, 'alice', pw)
        except poplib.error_proto:
            pass
    t.check(time.monotonic() - t0 < 3, 'no growing penalty for failed logins: %.1fs'
            % (time.monotonic() - t0))


def test_big_message_roundtrip(t):
    d = t.dovecot('src')
    big = harness.big_message(20)
    harness.seed(d, 'alice', [big])
    t0 = time.monotonic()
    got = harness.pop3_retr_all(d)
    t1 = time.monotonic()
    imap = harness.imap_fetch_all(d)
    t2 = time.monotonic()
    print('  20 MB: POP3 RETR %.2fs, IMAP FETCH %.2fs' % (t1 - t0, t2 - t1))
    t.check(got == [harness.canonical(big)], 'POP3 RETR of 20 MB')
    t.check(harness.body_hash(imap[0]['body']) == harness.body_hash(big), 'IMAP FETCH of 20 MB')


def test_stop_leaves_no_process(t):
    d = t.dovecot('src')
    harness.seed(d, 'alice', [harness.make_message(1)])
    harness.pop3_stat(d)
    pid = d.pid

    group = lambda: harness.group_alive(pid)
    t.check(len(group()) >= 3, 'dovecot runs as a process group: %s' % group())
    d.stop()
    t.check(group() == [], 'nothing left of the group: %s' % group())
    t.check(not harness.port_open(d.ports['pop3']), 'port closed')
    d.start()
    t.check(harness.pop3_stat(d)[0] == 1, 'start again after stop')


def test_long_workdir(t):
    """Unix socket names are limited to 108 bytes: a deep workdir still works."""
    deep = t.path(*(['a-rather-long-directory-name'] * 4))
    d = t.dovecot(os.path.relpath(deep, t.tmp))
    harness.seed(d, 'alice', [harness.make_message(1)])
    t.check(harness.pop3_stat(d)[0] == 1, 'POP3 works')
    t.check(len(d.base_dir) <= 64, 'base_dir moved: %s' % d.base_dir)


def test_framework_output(t):
    """harness.main(): result lines, exit code, tracebacks, kept dirs."""
    mod = t.path('test_sample.py')
    with open(mod, 'w') as f:
        f.write('import sys\nsys.path.insert(0, %r)\nimport harness\n'
                'def test_ok(t):\n    t.check(True, "fine")\n'
                'def test_bad_check(t):\n    t.check(1 == 2, "one is not two")\n'
                'def test_raises(t):\n    open(t.path("marker"), "w").close()\n'
                '    raise ValueError("boom")\n'
                'def test_skipped(t):\n    t.skip("no reason")\n'
                'if __name__ == "__main__":\n    harness.main()\n'
                % os.path.dirname(harness.__file__))
    p = subprocess.run(['/usr/bin/python3', mod], capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    results = [l for l in lines if re.match(r'(PASS|FAIL|SKIP) ', l)]
    t.check(results == ['PASS test_ok', 'FAIL test_bad_check: one is not two',
                        'FAIL test_raises: ValueError: boom', 'SKIP test_skipped: no reason'],
            'result lines: %s' % results)
    t.check(p.returncode == 1, 'exit 1 on failure, got %d' % p.returncode)
    t.check(any(l.startswith('    ') and 'ValueError' in l for l in lines), 'indented traceback')
    kept = [l.split()[-1] for l in lines if l.startswith('  kept ')]
    t.check(len(kept) == 2 and all(os.path.isdir(k) for k in kept), 'failed dirs kept: %s' % kept)
    t.check(any(os.path.exists(os.path.join(k, 'marker')) for k in kept), 'marker in kept dir')
    for k in kept:
        subprocess.run(['rm', '-rf', k])
    p = subprocess.run(['/usr/bin/python3', mod, 'test_ok'], capture_output=True, text=True,
                       timeout=60)
    t.check(p.returncode == 0 and p.stdout.splitlines()[-1] == 'PASS test_ok',
            'run one test by name: %r' % p.stdout)


def test_ports_never_shared(t):
    """Test programs run side by side (tests/run) are never handed the same
    port, none from the kernel's ephemeral range, and their claims go when
    they exit: four programs take 200 ports each at once."""
    code = ('import sys; sys.path.insert(0, %r); import processes; '
            'print(" ".join(map(str, processes.free_ports(200))), flush=True); '
            'sys.stdin.read()' % os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    # all four alive until each has its ports (a claim ends with its program)
    got = [list(map(int, p.stdout.readline().split())) for p in procs]
    for p in procs:
        p.communicate(timeout=60)
    ports = [port for g in got for port in g]
    t.check([len(g) for g in got] == [200] * 4, 'each got its ports: %r' % [len(g) for g in got])
    t.check(len(set(ports)) == len(ports), '%d ports handed out twice'
            % (len(ports) - len(set(ports))))
    with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
        low = int(f.read().split()[0])
    t.check(all(p < low for p in ports), 'none from the ephemeral range (from %d)' % low)
    again = ('import sys; sys.path.insert(0, %r); import processes; '
             'print(sum(processes._claim(int(p)) for p in sys.argv[1:]))'
             % os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, '-c', again] + [str(x) for x in set(ports)],
                       stdout=subprocess.PIPE, text=True, timeout=60)
    t.check(p.stdout.strip() == str(len(set(ports))),
            'claims released at exit: %s of %d claimed again' % (p.stdout.strip(), len(set(ports))))

if __name__ == '__main__':
    harness.main()
