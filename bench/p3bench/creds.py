"""The bench's fixed test credentials (loopback-only throwaway servers),
in a module of their own so that the reference clients need nothing else."""

PASSWORD = 'secret'                 # every POP3/IMAP/relay user's password
MASTER = 'p3b-master'               # the IMAP store's Dovecot master login
MASTER_PW = 'm4ster-secret'
