"""Network cuts: a loopback proxy (cutproxy.py) between pop3bridge and the
real server closes or resets the connection at a chosen byte, in either
direction, then a clean pass runs. After the cut the state must never be
ahead of the store and nothing may be gone from the server that is not
stored; after the clean pass the store holds exactly the server's
messages (by body hash, as an IMAP client reads them), none twice, and
nothing is left pending.

POP3 (source Dovecot), the IMAP store (store Dovecot) and upstream SMTP
(aiosmtpd): cut points are picked from a clean session's byte trace in
plaintext, so that each lands in a known phase (greeting, STLS, auth,
UIDL, inside a RETR, between RETRs, DELE, QUIT; greeting, LOGIN, APPEND
command, inside the literal, before the tagged OK; EHLO, AUTH, MAIL,
RCPT, inside DATA, after the final dot before the reply), plus cuts spread
evenly over a TLS session (its bytes cannot be mapped to phases). Each case
runs for its own user / queue, so the cases never share state.

make check runs P3B_CUTS (8) cuts per protocol; make reliability
(P3B_FAULT_SCALE=full) 54. The SMTP window where upstream accepted but the
reply was lost is at-least-once: such a case may deliver twice and is
counted as "inherent", not as a duplicate (doc/DESIGN.md, The relay
protocol)."""

import os
import random
import sqlite3
import time
import types

import harness as h
import cutproxy
import faultcheck as fc
import imapstore as ist
from smtpd import Upstream

TIMEOUT = 1500


def n_cuts():
    return int(os.environ.get('P3B_CUTS') or fc.scale(8, 54))


def split(n):
    """(phase-targeted plaintext, STLS/STARTTLS, evenly spaced TLS) counts."""
    tls = max(1, n // 8)
    stls = max(1, n // 10)
    return n - tls - stls, stls, tls


def modes(i):
    return 'reset' if i % 2 else 'close'


def show(points):
    for d, off, phase in points:
        print('    cut %s at %d (%s)' % (d, off, phase))


# ---------------------------------------------------------------- POP3

MSGS = None


def corpus():
    global MSGS
    if MSGS is None:
        # one message of ~120 KB, so that a cut lands inside a RETR that
        # spans several reads; dot-stuffing bait; batches of 2
        MSGS = h.make_corpus(5, seed=11) + [h.make_message(99, size=120000)]
    return MSGS


def pop3_conf(t, user, port, tls='none', ca_file=None, leave=False):
    server = types.SimpleNamespace(ports={'pop3': port, 'pop3s': port}, ca_file=ca_file)
    acct = h.account_block('acct', server, user=user, local_user=user, tls=tls,
                           extra='leave_on_server = %s' % ('true' if leave else 'false'))
    return h.write_config(t.path('conf-%s' % user), h.config_text(
        t.path('state', user), t.path('dest', '%u', 'Maildir'), [acct],
        'batch_messages = 2\n'))


def server_hashes(src, user):
    out = []
    for f in h.maildir_files(src.maildir(user)):
        with open(f, 'rb') as fh:
            out.append(h.body_hash(h.imap_view(h.pop3_view(fh.read()))))
    return out


def stored_hashes(root):
    out = []
    for f in h.maildir_files(root):
        with open(f, 'rb') as fh:
            out.append(h.body_hash(h.imap_view(fh.read())))
    return out


def pending(state_dir):
    return [r['uidl'] for r in fc.state_rows(state_dir) if r['state'] == 0]


def one_line_error(t, p, what):
    """A failed pass says why in one line naming the account."""
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    t.check(p.returncode == 0 or (lines and 'acct' in lines[-1]),
            '%s: exit %d without a clear last line: %r' % (what, p.returncode, lines[-3:]))


def pop3_case(t, tally, src, dst, user, proxy, d, off, mode, phase, tls='none'):
    want = fc.expected_hashes(corpus())
    root = dst.maildir(user)
    conf = pop3_conf(t, user, proxy.port, tls=tls, ca_file=src.ca_file)
    proxy.arm(d, off, mode)
    p = t.run_bridge(conf, '-q', 'sync', timeout=120)
    crash = fc.crashed(p)
    what = '%s cut %s@%d (%s, %s)' % (user, d, off, phase, mode)
    t.check(proxy.cut is not None, '%s: the cut never happened (session shorter?)' % what)
    proxy.disarm()
    one_line_error(t, p, what)
    ahead = fc.maildir_ahead(t.path('state', user), root)
    t.check(not ahead, '%s: state ahead of the store: %s' % (what, ahead[:3]))
    gone = fc.lost_from_server(want, server_hashes(src, user), stored_hashes(root))
    t.check(gone == 0, '%s: %d deleted from the server, not stored' % (what, gone))
    q = t.run_bridge(conf, '-q', 'sync', timeout=120)
    crash = crash or fc.crashed(q)
    t.check(q.returncode == 0, '%s: the clean pass exited %d: %s' % (what, q.returncode,
                                                                  q.stderr.strip()[-300:]))
    got = sorted(h.body_hash(f['body']) for f in h.imap_fetch_all(dst, user, 'secret'))
    lost, dup = fc.compare(want, got)
    t.check(lost == 0 and dup == 0, '%s: %d lost, %d duplicated' % (what, lost, dup))
    t.check(not pending(t.path('state', user)), '%s: rows left pending' % what)
    left = server_hashes(src, user)
    t.check(not left, '%s: %d left on the server after the clean pass' % (what, len(left)))
    tally.case(lost=lost + gone, dup=dup, crash=crash,
               note=None if lost + dup + gone == 0 else what)
    print('    %s: exit %d then %d' % (what, p.returncode, q.returncode))


def test_pop3_cuts(t):
    n_plain, n_stls, n_tls = split(n_cuts())
    users = ['c%03d' % i for i in range(n_plain + n_stls + n_tls + 3)]
    src = t.dovecot('src', users={u: 'secret' for u in users})
    dst = t.dovecot('dst', mail_root=t.path('dest'), users={u: 'secret' for u in users})
    for u in users:
        h.seed(src, u, corpus())
    plain = cutproxy.CutProxy(t, src.ports['pop3'])
    tls = cutproxy.CutProxy(t, src.ports['pop3s'])
    tally = fc.Tally('cuts-pop3', 'network cut: POP3 (source)')
    rnd = random.Random(21)
    free = iter(users)

    # the reference sessions: plain, STLS, implicit TLS
    refs = {}
    for kind, proxy, mode in (('plain', plain, 'none'), ('stls', plain, 'starttls'),
                              ('tls', tls, 'implicit')):
        u = next(free)
        proxy.clear()
        p = t.run_bridge(pop3_conf(t, u, proxy.port, tls=mode, ca_file=src.ca_file),
                         '-q', 'sync')
        t.require(p.returncode == 0, 'reference %s pass: %s' % (kind, p.stderr))
        refs[kind] = proxy.traces()[0]
    phases = cutproxy.pop3_phases(refs['plain'])
    names = sorted(set(ph[0] for ph in phases))
    print('  POP3 phases seen: %s' % ', '.join(names))
    for need in ('greeting', 'auth', 'uidl', 'retr', 'between-retr', 'dele', 'quit'):
        t.require(need in names, 'the reference session has a %s phase' % need)
    order = ('retr', 'between-retr', 'dele', 'quit', 'uidl', 'auth', 'greeting', 'list',
             'capa')
    points = [(d, o, ph, 'none', plain)
              for d, o, ph in cutproxy.cut_points(phases, n_plain, rnd, order)]
    # STLS: the plaintext part, and the first bytes of the handshake
    st = [ph for ph in cutproxy.pop3_phases(refs['stls'])
          if ph[0] in ('greeting', 'capa', 'stls')][:5]
    stls_end = max(ph[3] for ph in st if ph[0] == 'stls' and ph[1] == 'c2s')
    st.append(('stls-handshake', 'c2s', stls_end, stls_end + 200))
    points += [(d, o, 'stls/' + ph, 'starttls', plain)
               for d, o, ph in cutproxy.cut_points(st, n_stls, rnd)]
    points += [(d, o, ph, 'implicit', tls)
               for d, o, ph in cutproxy.even_points(refs['tls'], n_tls, rnd)]
    for i, (d, off, phase, mode, proxy) in enumerate(points):
        pop3_case(t, tally, src, dst, next(free), proxy, d, off, modes(i), phase, tls=mode)
    tally.save()
    print('  %d POP3 cuts: %d lost, %d duplicated, %d crashes'
          % (tally.cases, tally.lost, tally.duplicated, tally.crashes))
    t.check(tally.cases == len(points) and tally.cases >= n_cuts(), 'every cut ran')


# ---------------------------------------------------------------- IMAP store

def imap_conf(t, user, src, store_port, tls='none', ca_file=None):
    acct = h.account_block('acct', src, user=user, local_user=user, tls='none',
                           extra='leave_on_server = false')
    server = types.SimpleNamespace(ports={'imap': store_port, 'imaps': store_port},
                                   master=ist.MASTER, master_pw=ist.MASTER_PW,
                                   ca_file=ca_file)
    block = ist.store_block(server, tls=tls, ca_file=ca_file if tls != 'none' else True)
    return h.write_config(t.path('conf-%s' % user), h.config_with_store(
        t.path('state', user), block, [acct], 'batch_messages = 2\n'))


def imap_stored(store, user):
    return sorted(h.body_hash(ist.strip_key(f['body']))
                  for f in h.imap_fetch_all(store, user, 'secret'))


def imap_case(t, tally, src, store, user, proxy, d, off, mode, phase, tls='none'):
    want = fc.expected_hashes(corpus())
    conf = imap_conf(t, user, src, proxy.port, tls=tls, ca_file=store.ca_file)
    what = '%s cut %s@%d (%s, %s)' % (user, d, off, phase, mode)
    proxy.arm(d, off, mode)
    p = t.run_bridge(conf, '-q', 'sync', timeout=120)
    crash = fc.crashed(p)
    t.check(proxy.cut is not None, '%s: the cut never happened' % what)
    proxy.disarm()
    one_line_error(t, p, what)
    ahead = fc.imap_ahead(t.path('state', user), store, user)
    t.check(not ahead, '%s: state ahead of the store: %s' % (what, ahead[:3]))
    gone = fc.lost_from_server(want, server_hashes(src, user), imap_stored(store, user))
    t.check(gone == 0, '%s: %d deleted from the server, not stored' % (what, gone))
    q = t.run_bridge(conf, '-q', 'sync', timeout=120)
    crash = crash or fc.crashed(q)
    t.check(q.returncode == 0, '%s: the clean pass exited %d: %s' % (what, q.returncode,
                                                                  q.stderr.strip()[-300:]))
    lost, dup = fc.compare(want, imap_stored(store, user))
    t.check(lost == 0 and dup == 0, '%s: %d lost, %d duplicated' % (what, lost, dup))
    t.check(not pending(t.path('state', user)), '%s: rows left pending' % what)
    t.check(not server_hashes(src, user), '%s: mail left on the server' % what)
    tally.case(lost=lost + gone, dup=dup, crash=crash,
               note=None if lost + dup + gone == 0 else what)
    print('    %s: exit %d then %d' % (what, p.returncode, q.returncode))


def test_imap_store_cuts(t):
    n_plain, _, n_tls = split(n_cuts())
    n_plain += max(1, n_cuts() // 10)       # no STARTTLS part of its own here
    users = ['i%03d' % i for i in range(n_plain + n_tls + 2)]
    src = t.dovecot('src', users={u: 'secret' for u in users})
    store = ist.dovecot_store(t, users={u: 'secret' for u in users})
    for u in users:
        h.seed(src, u, corpus())
    plain = cutproxy.CutProxy(t, store.ports['imap'])
    tls = cutproxy.CutProxy(t, store.ports['imaps'])
    tally = fc.Tally('cuts-imap', 'network cut: IMAP store')
    rnd = random.Random(22)
    free = iter(users)
    refs = {}
    for kind, proxy, mode in (('plain', plain, 'none'), ('tls', tls, 'implicit')):
        u = next(free)
        proxy.clear()
        p = t.run_bridge(imap_conf(t, u, src, proxy.port, tls=mode, ca_file=store.ca_file),
                         '-q', 'sync')
        t.require(p.returncode == 0, 'reference %s pass: %s' % (kind, p.stderr))
        refs[kind] = proxy.traces()[0]
    phases = cutproxy.imap_phases(refs['plain'])
    names = sorted(set(ph[0] for ph in phases))
    print('  IMAP phases seen: %s' % ', '.join(names))
    # Dovecot announces MULTIAPPEND: the batch goes as one command, its
    # messages' literals one after another, one tagged OK for them all
    for need in ('greeting', 'login', 'append-cmd', 'append-literal', 'multiappend-next',
                 'multiappend-literal', 'append-ok'):
        t.require(need in names, 'the reference session has a %s phase' % need)
    # APPEND is where the import's durability lives: first
    order = ('multiappend-literal', 'append-literal', 'append-ok', 'multiappend-next',
             'append-cont', 'append-cmd', 'login', 'greeting', 'namespace', 'list',
             'create', 'capability', 'examine', 'search', 'status', 'logout')
    points = [(d, o, ph, 'none', plain)
              for d, o, ph in cutproxy.cut_points(phases, n_plain, rnd, order)]
    points += [(d, o, ph, 'implicit', tls)
               for d, o, ph in cutproxy.even_points(refs['tls'], n_tls, rnd)]
    for i, (d, off, phase, mode, proxy) in enumerate(points):
        imap_case(t, tally, src, store, next(free), proxy, d, off, modes(i), phase, tls=mode)
    tally.save()
    print('  %d IMAP store cuts: %d lost, %d duplicated, %d crashes'
          % (tally.cases, tally.lost, tally.duplicated, tally.crashes))
    t.check(tally.cases == len(points) and tally.cases >= n_cuts(), 'every cut ran')


# ---------------------------------------------------------------- upstream SMTP

FROM = 'alice@example.com'


def smtp_conf(t, name, port, tls='none', ca_file=None):
    smtp = ['host = "localhost"', 'port = %d' % port, 'tls = "%s"' % tls,
            'user = "relay"', 'password = "relaypw"', 'timeout = 20']
    if tls == 'none':
        smtp.append('allow_plaintext = true')
    if ca_file:
        smtp.append('ca_file = %s' % h.cq(ca_file))
    acct = ('account "work" {\n  local_user = "alice"\n'
            '  pop3 {\n    host = "localhost"\n    port = %d\n    tls = "none"\n'
            '    user = "alice"\n    password = "x"\n    allow_plaintext = true\n  }\n'
            '  smtp {\n    %s\n  }\n  addresses = { "%s" }\n  sent_folder = "Sent"\n}\n'
            % (h.free_port(), '\n    '.join(smtp), FROM))
    relay = ('relay {\n  listen = { "127.0.0.1:%d" }\n  retry_initial = 1\n'
             '  queue_lifetime = 3600\n}\n' % h.free_port())
    return h.write_config(t.path('conf-%s' % name), h.config_text(
        t.path('state', name), t.path('dest', name, 'Maildir'), [acct], relay))


def smtp_message(name, n):
    body = ''.join('line %d of message %s, with some filler text to make it longer\n'
                   % (i, name) for i in range(400))
    return ('From: Alice <%s>\nTo: bob@example.net\nSubject: %s/%d\nMessage-ID: <%s.%d@x>\n\n'
            '%s.dot line\n' % (FROM, name, n, name, n, body)).encode()


def delivered(up, name):
    """How many copies of each message of case name the upstream has."""
    out = {}
    for m in up.messages():
        subj = h.header(m['content'], 'Subject') or ''
        if subj.startswith(name + '/'):
            out[subj] = out.get(subj, 0) + 1
    return out


def queue_rows(state_dir):
    db = os.path.join(state_dir, 'state.db')
    con = sqlite3.connect(db, timeout=60)
    try:
        return con.execute('SELECT id, state FROM outbox').fetchall()
    finally:
        con.close()


def smtp_case(t, tally, up, name, proxy, d, off, mode, phase, tls='none'):
    conf = smtp_conf(t, name, proxy.port, tls=tls, ca_file=t.certs.ca_file)
    what = '%s cut %s@%d (%s, %s)' % (name, d, off, phase, mode)
    for k in (1, 2):
        p = t.run_bridge(conf, 'sendmail', 'bob@example.net', input=smtp_message(name, k))
        t.require(p.returncode == 0, 'sendmail: %s' % p.stderr)
    proxy.arm(d, off, mode)
    p = t.run_bridge(conf, '-q', 'queue', 'flush', timeout=120)
    crash = fc.crashed(p)
    t.check(proxy.cut is not None, '%s: the cut never happened' % what)
    cut_at = proxy.cut
    proxy.disarm()
    after_cut = delivered(up, name)
    rows = sorted(queue_rows(t.path('state', name)))
    # SMTP's own window: the upstream has a message whose reply we never
    # read, so our queue still holds it; the retry sends it again
    window = sum(1 for k, (rid, state) in enumerate(rows, 1)
                 if state == 0 and after_cut.get('%s/%d' % (name, k), 0) > 0)
    for _ in range(3):
        time.sleep(1.1)     # retry_initial = 1
        q = t.run_bridge(conf, '-q', 'queue', 'flush', timeout=120)
        crash = crash or fc.crashed(q)
        if not [r for r in queue_rows(t.path('state', name)) if r[1] == 0]:
            break
    left = [r for r in queue_rows(t.path('state', name)) if r[1] == 0]
    t.check(not left, '%s: %d still queued after the clean flushes' % (what, len(left)))
    got = delivered(up, name)
    lost = sum(1 for k in (1, 2) if got.get('%s/%d' % (name, k), 0) == 0)
    extra = sum(max(0, v - 1) for v in got.values())
    inherent = min(extra, window)
    dup = extra - inherent
    t.check(lost == 0, '%s: %d lost' % (what, lost))
    t.check(dup == 0, '%s: %d delivered twice outside the SMTP window' % (what, dup))
    t.check(phase in ('data-reply', 'tls') or window == 0,
            '%s: upstream had a message still queued after a cut outside the reply '
            'to the data' % what)
    tally.case(lost=lost, dup=dup, crash=crash, inherent=inherent,
               note=None if lost + dup == 0 else what)
    print('    %s: conn %s cut; after it %s, in the end %s%s'
          % (what, cut_at and cut_at['conn'], after_cut, got,
             ' (%d in the SMTP window)' % inherent if inherent else ''))


def test_smtp_upstream_cuts(t):
    n_plain, n_stls, n_tls = split(n_cuts())
    certs = t.certs
    up_plain = Upstream(t, name='up-plain').start()
    up_tls = Upstream(t, name='up-tls', starttls=(certs.cert, certs.key)).start()
    plain = cutproxy.CutProxy(t, up_plain.port)
    tls = cutproxy.CutProxy(t, up_tls.port)
    tally = fc.Tally('cuts-smtp', 'network cut: upstream SMTP')
    rnd = random.Random(23)
    refs = {}
    # (the names of the reference cases are as long as the others', so that
    # every session carries the same number of bytes)
    for name, kind, proxy, mode, up in (('r001', 'plain', plain, 'none', up_plain),
                                        ('r002', 'tls', tls, 'starttls', up_tls)):
        proxy.clear()
        conf = smtp_conf(t, name, proxy.port, tls=mode, ca_file=certs.ca_file)
        for k in (1, 2):
            p = t.run_bridge(conf, 'sendmail', 'bob@example.net', input=smtp_message(name, k))
            t.require(p.returncode == 0, 'sendmail: %s' % p.stderr)
        p = t.run_bridge(conf, '-q', 'queue', 'flush')
        t.require(p.returncode == 0 and len(delivered(up, name)) == 2,
                  'reference %s flush: %s' % (kind, p.stderr))
        refs[kind] = [tr for tr in proxy.traces() if tr.count['c2s'] > 0][0]
    phases = cutproxy.smtp_phases(refs['plain'])
    names = sorted(set(ph[0] for ph in phases))
    print('  SMTP phases seen: %s' % ', '.join(names))
    for need in ('greeting', 'ehlo', 'auth', 'mail', 'rcpt', 'data', 'data-end',
                 'data-reply'):
        t.require(need in names, 'the reference session has a %s phase' % need)
    order = ('data', 'data-reply', 'data-end', 'rcpt', 'mail', 'auth', 'ehlo', 'greeting',
             'data-cmd', 'quit')
    points = [(d, o, ph, 'none', plain, up_plain)
              for d, o, ph in cutproxy.cut_points(phases, n_plain, rnd, order)]
    # STARTTLS: the plaintext part and the first bytes of the handshake
    st = [ph for ph in cutproxy.smtp_phases(refs['tls'])
          if ph[0] in ('greeting', 'ehlo', 'starttls')][:5]
    end = max(ph[3] for ph in st if ph[0] == 'starttls' and ph[1] == 'c2s')
    st.append(('starttls-handshake', 'c2s', end, end + 200))
    points += [(d, o, 'starttls/' + ph, 'starttls', tls, up_tls)
               for d, o, ph in cutproxy.cut_points(st, n_stls, rnd)]
    points += [(d, o, ph, 'starttls', tls, up_tls)
               for d, o, ph in cutproxy.even_points(refs['tls'], n_tls, rnd)]
    for i, (d, off, phase, mode, proxy, up) in enumerate(points):
        smtp_case(t, tally, up, 'q%03d' % i, proxy, d, off, modes(i), phase, tls=mode)
    tally.save()
    print('  %d SMTP cuts: %d lost, %d duplicated, %d inherent duplicates, %d crashes'
          % (tally.cases, tally.lost, tally.duplicated, tally.inherent, tally.crashes))
    t.check(tally.cases == len(points) and tally.cases >= n_cuts(), 'every cut ran')


if __name__ == '__main__':
    h.main()
