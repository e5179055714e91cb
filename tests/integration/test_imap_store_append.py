"""How the IMAP store APPENDs (store/imap_append.c), seen on the wire
through a recording proxy in front of a plaintext Dovecot:
- with MULTIAPPEND (RFC 3502) and LITERAL+ (RFC 7888), Dovecot's default:
  one command per batch, non-synchronising literals, APPENDUID's UID set
  mapped to the batch's messages in order;
- a NO to a MULTIAPPEND ([LIMIT] for one of its messages): one APPEND each
  for that batch, so the others are stored;
- LITERAL+ without MULTIAPPEND (imap_capability): pipelined APPENDs;
- neither: one APPEND at a time, each literal after the server's "+".
Each exact (bodies by hash, INTERNALDATE, none twice), each found again
by its key after a crash; SIGKILLs during pipelined and synchronising
imports leave exactly the server's messages."""

import collections
import re
import signal
import sqlite3
import time

import harness as h
import imapstore as ist
from common import header_instant
from test_imap_auth import Recorder
from test_imap_store import kill_repeatedly

TIMEOUT = 600

# Dovecot's own list less MULTIAPPEND and LITERAL+ (UIDPLUS etc. kept).
BASE_CAPS = ('IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT NAMESPACE UIDPLUS '
             'CHILDREN LIST-EXTENDED I18NLEVEL=1 CONDSTORE ESEARCH SPECIAL-USE')
PLAIN_CAPS = 'imap_capability = %s\n' % BASE_CAPS
PIPE_CAPS = 'imap_capability = %s LITERAL+\n' % BASE_CAPS


class Wire(Recorder):
    """A Recorder that also keeps the server's bytes, each chunk in one
    log with the client's, in the order the proxy saw them."""

    def __init__(self, t, port):
        self.events = []
        super().__init__(t, port)

    def _pump(self, a, b, record):
        import socket
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                with self._lock:
                    if record:
                        self.sent += d
                    self.events.append((record, d))
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def appends(self):
        """[(tag, [literal sizes], [non-synchronising?])] of every APPEND
        the client sent, in order (the stream walked command by command,
        literals skipped by their size)."""
        with self._lock:
            data = self.sent
        out, pos = [], 0
        lit = re.compile(rb'\{(\d+)(\+?)\}$')
        while pos < len(data):
            eol = data.find(b'\r\n', pos)
            if eol < 0:
                break
            line = data[pos:eol]
            m = re.match(rb'(\w+) APPEND ', line)
            cmd = (m.group(1).decode(), [], []) if m else None
            pos = eol + 2
            while True:
                mm = lit.search(line)
                if not mm:
                    break
                n = int(mm.group(1))
                if cmd:
                    cmd[1].append(n)
                    cmd[2].append(mm.group(2) == b'+')
                pos += n
                eol = data.find(b'\r\n', pos)
                if eol < 0:
                    break
                line = data[pos:eol]       # the rest of the command after the literal
                pos = eol + 2
            if cmd:
                out.append(cmd)
        return out

    def max_in_flight(self):
        """The most APPENDs the client had sent while none of them had its
        tagged reply yet (1 for a client that waits for each reply)."""
        with self._lock:
            events = list(self.events)
        sent, answered, most = set(), set(), 0
        for from_client, d in events:
            if from_client:
                sent |= set(re.findall(rb'(?m)^(\w+) APPEND ', d))
            else:
                answered |= set(re.findall(rb'(?m)^(\w+) (?:OK|NO|BAD)', d))
            most = max(most, len(sent - answered))
        return most


def store_block(port, extra=''):
    return ('store {\n  type = "imap"\n  host = "127.0.0.1"\n  port = %d\n  tls = "none"\n'
            '  allow_plaintext = true\n  user = "%%u"\n  password = "secret"\n'
            '  timeout = 30\n%s}\n' % (port, extra))


def setup(t, n, seed, caps='', batch=10, extra_store='', keep=False):
    msgs = h.make_corpus(n, seed=seed)
    src = t.dovecot('src')
    h.seed(src, 'alice', msgs)
    store = ist.dovecot_store(t, extra=caps + extra_store)
    wire = Wire(t, store.ports['imap'])
    conf = h.write_config(t.path('p3b.conf'), h.config_with_store(
        t.path('state'), store_block(wire.port),
        [h.account_block('acct', src, extra='leave_on_server = %s' % (
            'true' if keep else 'false'))],
        'batch_messages = %d\n' % batch))
    return src, store, wire, conf, msgs


def check_exact(t, src_msgs, store, conf):
    """The store holds exactly the source's messages, once each, bodies
    and INTERNALDATE intact, and each row's APPENDUID is its own message."""
    fetched = h.imap_fetch_all(store)
    ids = collections.Counter(h.header(ist.strip_key(f['body']), 'Message-ID')
                              for f in fetched)
    t.check(sorted(ids) == sorted(h.header(m, 'Message-ID') for m in src_msgs) and
            max(ids.values()) == 1, 'exactly the server set, none twice (%d stored)'
            % len(fetched))
    want = sorted(h.body_hash(h.imap_view(h.pop3_view(m))) for m in src_msgs)
    t.check(sorted(h.body_hash(ist.strip_key(f['body'])) for f in fetched) == want,
            'bodies intact')
    wrong = [f['uid'] for f in fetched
             if f['internaldate'] != header_instant(ist.strip_key(f['body']))]
    t.check(not wrong, 'INTERNALDATE kept (%d wrong)' % len(wrong))
    by_uid = {f['uid']: ist.key_header(f['body']) for f in fetched}
    db = sqlite3.connect(t.path('state', 'state.db'))
    rows = db.execute('SELECT delivery_key, location FROM messages').fetchall()
    db.close()
    uid = lambda loc: int(re.search(r';UID=(\d+)$', loc or ';UID=0').group(1))
    bad = [(k, loc) for k, loc in rows if by_uid.get(uid(loc)) != k]
    t.check(not bad, 'every row\'s APPENDUID names its own message (%d do not: %r)'
            % (len(bad), bad[:3]))
    return rows


def run(t, conf):
    p = t.run_bridge(conf, 'sync')
    t.require(p.returncode == 0, 'sync: %s' % p.stderr)
    return p


def test_multiappend_one_command_per_batch(t):
    src, store, wire, conf, msgs = setup(t, 35, seed=91)
    run(t, conf)
    apps = wire.appends()
    t.check([len(a[1]) for a in apps] == [10, 10, 10, 5],
            'one MULTIAPPEND per batch of 10: %r' % [len(a[1]) for a in apps])
    t.check(all(all(a[2]) for a in apps), 'every literal non-synchronising ({N+})')
    t.check(wire.max_in_flight() == 1, 'one command at a time')
    check_exact(t, msgs, store, conf)
    t.check(h.pop3_stat(src)[0] == 0, 'deleted from the POP3 server')


def test_multiappend_refused_goes_one_by_one(t):
    """quota_max_mail_size: Dovecot refuses the whole MULTIAPPEND with NO
    [LIMIT]; its messages then go one APPEND each: the big one refused and
    named, the others stored."""
    quota = ('mail_plugins = $mail_plugins quota\n'
             'plugin {\n  quota = count:User quota\n  quota_vsizes = yes\n'
             '  quota_max_mail_size = 50k\n}\n')
    msgs = [h.make_message(i, size=2000) for i in range(6)]
    msgs.insert(3, h.make_message(77, size=90000, subject='too big'))
    src = t.dovecot('src')
    h.seed(src, 'alice', msgs)
    store = ist.dovecot_store(t, extra=quota)
    wire = Wire(t, store.ports['imap'])
    conf = h.write_config(t.path('p3b.conf'), h.config_with_store(
        t.path('state'), store_block(wire.port), [h.account_block('acct', src)]))
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 65, 'exit 65: %s' % p.stderr)
    t.check(re.search(r'acct: the store refused message 4 .*\[LIMIT\]', p.stderr),
            'the big one named with [LIMIT]: %s' % p.stderr)
    apps = wire.appends()
    t.check([len(a[1]) for a in apps] == [7] + [1] * 7,
            'a MULTIAPPEND of 7, then 7 APPENDs: %r' % [len(a[1]) for a in apps])
    got = sorted(h.header(f['body'], 'Subject') for f in h.imap_fetch_all(store))
    t.check(got == sorted('Test message %d' % i for i in range(6)), 'the six stored: %r' % got)


def test_pipelined_appends_with_literal_plus(t):
    src, store, wire, conf, msgs = setup(t, 40, seed=92, caps=PIPE_CAPS, batch=40)
    run(t, conf)
    apps = wire.appends()
    t.check(len(apps) == 40 and all(len(a[1]) == 1 and a[2][0] for a in apps),
            'one APPEND per message, literals {N+}: %d commands' % len(apps))
    t.check(wire.max_in_flight() > 1, 'pipelined: %d APPENDs in flight at most'
            % wire.max_in_flight())
    check_exact(t, msgs, store, conf)


def test_synchronising_without_multiappend_or_literal_plus(t):
    src, store, wire, conf, msgs = setup(t, 25, seed=93, caps=PLAIN_CAPS)
    run(t, conf)
    apps = wire.appends()
    t.check(len(apps) == 25 and all(len(a[1]) == 1 and not a[2][0] for a in apps),
            'one APPEND per message, literals {N} after "+": %r' % apps[:2])
    t.check(wire.max_in_flight() == 1, 'each waits for its reply')
    check_exact(t, msgs, store, conf)


def test_recovery_looks_up_keys_at_once(t):
    """Rows left pending are settled with one UID SEARCH OR ... (and one
    FETCH of the key headers), not a SEARCH per key: found ones become
    delivered, the ones missing from the store (deleted here) are fetched
    again after the folder stayed quiet, and a stranger whose header holds
    a missing key as a substring does not count."""
    src, store, wire, conf, msgs = setup(t, 30, seed=96, batch=30, keep=True)
    run(t, conf)
    db = sqlite3.connect(t.path('state', 'state.db'))
    rows = db.execute('SELECT uidl, delivery_key, location FROM messages ORDER BY uidl').fetchall()
    pending = rows[:20]
    with db:
        db.executemany('UPDATE messages SET state = 0, location = NULL WHERE uidl = ?',
                       [(u,) for u, k, loc in pending])
    db.close()
    gone = pending[:5]
    with h.imap_session(store) as m:
        m.select('INBOX')
        for u, k, loc in gone:
            uid = re.search(r';UID=(\d+)$', loc).group(1)
            m.uid('STORE', uid, '+FLAGS', '(\\Deleted)')
        m.expunge()
        stranger = (b'X-Pop3bridge-Key: ' + gone[0][1].encode() + b'-not-ours\r\n'
                    b'From: x@example.org\r\nSubject: stranger\r\n\r\nhi\r\n')
        m.append('INBOX', None, None, stranger)
    before = wire.sent.count(b'UID SEARCH')
    p = t.run_bridge(conf, 'sync')
    t.require(p.returncode == 0, 'sync: %s' % p.stderr)
    t.check('recovered 20 interrupted deliveries (15 already stored, 5 to fetch again)'
            in p.stderr, 'found 15, 5 to fetch again: %s' % p.stderr)
    searches = wire.sent.count(b'UID SEARCH') - before
    t.check(searches == 2, 'one SEARCH for the 20 keys, one more after the folder was quiet: '
            '%d' % searches)
    fetched = h.imap_fetch_all(store)
    t.check(len(fetched) == 31, '30 messages and the stranger, got %d' % len(fetched))
    ids = collections.Counter(h.header(ist.strip_key(f['body']), 'Message-ID') for f in fetched)
    t.check(all(v == 1 for k, v in ids.items() if k), 'none twice')


class Dribbler(Wire):
    """A Wire that, once the client has sent an APPEND, hands on the
    server's bytes one every `pause` seconds (a tarpit: each read of the
    client gets something well within its timeout)."""

    def __init__(self, t, port, pause=0.5):
        self.pause, self.on = pause, True
        super().__init__(t, port)

    def _pump(self, a, b, record):
        import socket
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                with self._lock:
                    if record:
                        self.sent += d
                    slow = not record and self.on and b' APPEND ' in self.sent
                if not slow:
                    b.sendall(d)
                    continue
                for i in range(len(d)):
                    time.sleep(self.pause)
                    b.sendall(d[i:i + 1])
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def dribble_setup(t, n):
    msgs = [h.make_message(i, size=3000) for i in range(n)]
    src = t.dovecot('src')
    h.seed(src, 'alice', msgs)
    store = ist.dovecot_store(t)
    slow = Dribbler(t, store.ports['imap'])
    conf = h.write_config(t.path('p3b.conf'), h.config_with_store(
        t.path('state'), store_block(slow.port).replace('timeout = 30', 'timeout = 2'),
        [h.account_block('acct', src, extra='leave_on_server = false')]))
    return src, store, slow, conf, msgs


def test_append_deadline_cuts_a_dribbling_server(t):
    """A server that answers the MULTIAPPEND a byte every 0.5 s (each read
    well within the 2 s timeout) is cut at the command's deadline, the
    timeout plus its 9 KB at 16 KiB/s (3 s): exit 75, nothing deleted; the
    next pass stores exactly the rest."""
    src, store, slow, conf, msgs = dribble_setup(t, 3)
    t0 = time.monotonic()
    p = t.run_bridge(conf, 'sync')
    took = time.monotonic() - t0
    t.check(p.returncode == 75, 'exit 75, got %d: %s' % (p.returncode, p.stderr))
    t.check(re.search(r'acct: imap store 127\.0\.0\.1:\d+: MULTIAPPEND: timed out after 3 s',
                      p.stderr), 'one line naming the deadline: %s' % p.stderr)
    t.check(took < 3 + 6, 'ended by the deadline, took %.1f s (the reply alone: 40 s)' % took)
    t.check(h.pop3_stat(src)[0] == 3, 'nothing deleted from the POP3 server')
    slow.on = False
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 0, 'next pass: %s' % p.stderr)
    check_exact(t, msgs, store, conf)


def test_sigterm_during_a_slow_append(t):
    """SIGTERM while the store dribbles its answer ends the pass within
    about a second (the stream is stop-aware), 75, nothing lost."""
    src, store, slow, conf, msgs = dribble_setup(t, 3)
    slow.pause = 1.0
    p = t.start_bridge(conf, 'sync')
    h.wait_for(lambda: b' APPEND ' in slow.sent, 20, what='the APPEND')
    time.sleep(0.5)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    rc = p.wait(20)
    took = time.monotonic() - t0
    t.check(rc == 75, 'exit 75 after SIGTERM, got %s' % rc)
    t.check(took < 3, 'stopped within about a second, took %.1f s' % took)
    slow.on = False
    p = t.run_bridge(conf, 'sync')
    t.check(p.returncode == 0, 'next pass: %s' % p.stderr)
    check_exact(t, msgs, store, conf)


def crash(t, caps, seed):
    total = 150
    src, store, wire, conf, msgs = setup(t, total, seed=seed, caps=caps, batch=25)
    seen = kill_repeatedly(conf, seed, lambda: ist.stored_count(store), total)
    print('  %d kills landed; messages stored at each: %s' % (len(seen), seen))
    t.check(len(seen) >= 20, 'at least 20 kills landed, got %d' % len(seen))
    for _ in range(20):
        p = t.run_bridge(conf, 'sync')
        if p.returncode == 0:
            break
    t.require(p.returncode == 0, 'the final sync succeeds: %s' % p.stderr)
    check_exact(t, msgs, store, conf)
    t.check(h.pop3_stat(src)[0] == 0, 'every message deleted from the provider')


def test_sigkill_during_pipelined_appends(t):
    crash(t, PIPE_CAPS, 94)


def test_sigkill_during_synchronising_appends(t):
    crash(t, PLAIN_CAPS, 95)


if __name__ == '__main__':
    h.main()
