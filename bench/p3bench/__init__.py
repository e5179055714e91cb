"""The library of bench/run, a package so that its module names (corpus,
servers, report ...) never shadow the integration-test modules of the same
names that tests/integration/harness.py imports. It imports nothing here:
the reference clients (bench/ref_*.py) import p3bench.creds alone.

    context   what the scenarios of a run share (options, servers, corpora)
    scratch   the loop-mounted ext4 and the tmpfs the files live on
    corpus    deterministic messages, seeding, the digest checks
    servers   Dovecot source and IMAP store, smtp-sink, aiosmtpd
    tools     pop3bridge, mpop, fetchmail, getmail6 configured per run
    measure   running one measured command; memory of a process tree
    report    Markdown tables, the summary, the machine
    creds     the throwaway credentials
    scen_*    one module per scenario: run(bench) -> report.Section"""

import os

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
