"""Integration-test harness for pop3bridge (Python 3 standard library only).

Everything runs on 127.0.0.1, on free high ports, with throwaway Dovecot
instances. This module only gathers the names of the modules that do the
work, so that a test needs one import; each module imports only those
above it in this list (no cycles), and module state (the processes to stop,
the PKI, the mail uid) lives in exactly one of them:

    processes.py  free_port(), free_ports(n), port_open(port), poll(pred, timeout),
                  wait_for(pred, timeout), tail(path), group_alive(pgid),
                  stop_process(p), stop_all()
    pki.py        Certs(dir), default_certs()   test CA; server, wrong-name,
                                                self-signed certs
    dovecot.py    Dovecot(workdir, users=, cert=, key=, ca_file=, uidl_format=,
                          protocols=, mail_root=, extra_conf=)
                      .start() .stop() .restart(**changes) .set_user(user, pw)
                      .ports .ca_file .maildir(user) .log_path
                  mail_ids(), MAIL_USER, make_maildir(path, subfolders),
                  seed(dovecot, user, messages), maildir_files(path, folder)
    corpus.py     make_message(i, ...), make_corpus(n, seed), big_message(mb),
                  header(body, name), canonical(b), body_hash(b), pop3_view(b),
                  imap_view(b), BASE_DATE
    clients.py    pop3_connect/pop3_session/pop3_stat/pop3_uidls/pop3_retr_all(
                      dovecot, user, pw, tls=False)
                  imap_connect/imap_session/imap_list/imap_fetch_all/imap_count(
                      dovecot, user, pw, ...)
                  imap_mailboxes(m), mailbox_name(), mutf7_encode(), mutf7_decode()
    bridge.py     REPO, bridge_binary(), write_config(path, text), cq(s),
                  account_block(), config_text(), config_with_store(), maildir_store(),
                  run_bridge(config, *args), start_bridge(config, *args),
                  sanitizer_report(text)
    runner.py     main(), run_test(), Context, TestFailure, Skip, TestTimeout

A test module:

    import harness
    def test_something(t):
        src = t.dovecot('src')
        harness.seed(src, 'alice', [harness.make_message(1)])
        t.check(harness.pop3_stat(src, 'alice', 'secret')[0] == 1, 'one message')
    if __name__ == '__main__':
        harness.main()

Each test prints exactly one "PASS name", "FAIL name: reason" or
"SKIP name: reason" line; everything else it prints is indented. t is a
Context (t.tmp, t.check, t.require, t.dovecot, t.run_bridge, ...). In a test
module, `ASAN = False` makes tests/run run it once (not again with the ASan
binary) and `TIMEOUT = N` sets the seconds each test may take (300).
"""

# Every name below is imported to be re-exported.

from processes import (children, descendants, free_port, free_ports, group_alive, poll,
                       port_open, proc_stat, stop_all, stop_process, tail, track, untrack,
                       wait_for, wait_nowait)
from pki import Certs, default_certs
from dovecot import (MAIL_USER, Dovecot, DovecotError, dovecot_path, mail_ids, maildir_files,
                     make_maildir, make_traversable, seed)
from corpus import (BASE_DATE, big_message, body_hash, canonical, header, imap_view,
                    make_corpus, make_message, pop3_view)
from clients import (imap_connect, imap_count, imap_fetch_all, imap_list, imap_mailboxes,
                     imap_session, mailbox_name, mutf7_decode, mutf7_encode, pop3_connect,
                     pop3_retr_all, pop3_session, pop3_stat, pop3_uidls)
# for helpers that parse LIST replies themselves (imap_mailboxes does it now)
from clients import _LIST_RE, _unq
from bridge import (HERE, REPO, account_block, bridge_binary, config_text, config_with_store,
                    cq, maildir_store, run_bridge, sanitizer_report, start_bridge, write_config)
from runner import Context, Skip, TestFailure, TestTimeout, main, run_test
import outboxdb
