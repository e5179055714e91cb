"""The test PKI (standard library and the openssl command): a private CA and
the server certificates the tests present, good and bad.

    Certs(dir)          the files in dir, made once and then reused
    default_certs()     the Certs of this run ($P3B_CERTS, else a temp dir)

default_certs() caches its Certs in this module: import it by its one name
(`pki`, or through `harness`) so that a program makes one PKI."""

import atexit
import errno
import os
import random
import shutil
import subprocess
import tempfile

# The leaf certificates: file stem, subject CN, subjectAltName, and whether
# the test CA signs it (else it is self-signed). The openssl config and the
# commands below are made from this one table.
_LEAVES = (
    ('server', 'localhost', 'DNS:localhost,IP:127.0.0.1', True),
    ('wrong', 'wrong.example', 'DNS:wrong.example', True),
    ('selfsigned', 'localhost', 'DNS:localhost,IP:127.0.0.1', False),
)


def _openssl_cnf():
    """openssl.cnf: [v3_ca] for the CA, one extensions section per leaf."""
    lines = ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', 'CN = pop3bridge test',
             '[v3_ca]', 'basicConstraints = critical,CA:TRUE',
             'keyUsage = critical,keyCertSign,cRLSign', 'subjectKeyIdentifier = hash']
    for name, _, san, signed in _LEAVES:
        lines += ['[%s]' % name, 'basicConstraints = critical,CA:FALSE',
                  'keyUsage = critical,digitalSignature,keyEncipherment',
                  'extendedKeyUsage = serverAuth', 'subjectAltName = ' + san,
                  'subjectKeyIdentifier = hash']
        if signed:
            lines.append('authorityKeyIdentifier = keyid,issuer')
    return '\n'.join(lines) + '\n'


class Certs:
    """Test PKI in dir, made with the openssl command (RSA 2048, 30 days):

    ca_file                   a private CA (trusted only when given as ca_file)
    cert, key                 DNS:localhost,IP:127.0.0.1, serverAuth, signed by the CA
    wrong_cert, wrong_key     DNS:wrong.example, signed by the same CA
    selfsigned_cert, selfsigned_key   self-signed, DNS:localhost,IP:127.0.0.1

    The files are made once: if dir already holds them they are reused. The
    directory is filled under a temporary name and renamed into place, so
    programs running in parallel may share one dir."""

    FILES = tuple(stem + ext for stem in ('ca',) + tuple(l[0] for l in _LEAVES)
                  for ext in ('.pem', '.key'))

    def __init__(self, dir):
        self.dir = os.path.abspath(dir)
        if not self._complete(self.dir):
            self._make()
        j = lambda f: os.path.join(self.dir, f)
        self.ca_file, self.ca_key = j('ca.pem'), j('ca.key')
        self.cert, self.key = j('server.pem'), j('server.key')
        self.wrong_cert, self.wrong_key = j('wrong.pem'), j('wrong.key')
        self.selfsigned_cert, self.selfsigned_key = j('selfsigned.pem'), j('selfsigned.key')

    @classmethod
    def _complete(cls, d):
        return all(os.path.isfile(os.path.join(d, f)) for f in cls.FILES)

    def _make(self):
        parent = os.path.dirname(self.dir)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix='.certs-', dir=parent)
        try:
            self._generate(tmp)
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, self.dir)  # replaces an empty dir, fails on a full one
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not self._complete(self.dir):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _generate(d):
        def run(*args):
            p = subprocess.run(['openssl'] + list(args), cwd=d, capture_output=True)
            if p.returncode != 0:
                raise RuntimeError('openssl %s failed: %s' % (args[0], p.stderr.decode(errors='replace')))

        with open(os.path.join(d, 'openssl.cnf'), 'w') as f:
            f.write(_openssl_cnf())
        for name in ('ca',) + tuple(l[0] for l in _LEAVES):
            run('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
                '-out', name + '.key')
        run('req', '-x509', '-new', '-config', 'openssl.cnf', '-extensions', 'v3_ca',
            '-key', 'ca.key', '-subj', '/O=pop3bridge tests/CN=pop3bridge test CA',
            '-days', '30', '-sha256', '-out', 'ca.pem')
        for name, cn, _, signed in _LEAVES:
            subj = '/O=pop3bridge tests/CN=' + cn
            if signed:
                run('req', '-new', '-config', 'openssl.cnf', '-key', name + '.key',
                    '-subj', subj, '-out', name + '.csr')
                run('x509', '-req', '-in', name + '.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
                    '-set_serial', str(random.getrandbits(63)), '-days', '30', '-sha256',
                    '-extfile', 'openssl.cnf', '-extensions', name, '-out', name + '.pem')
            else:
                run('req', '-x509', '-new', '-config', 'openssl.cnf', '-extensions', name,
                    '-key', name + '.key', '-subj', subj,
                    '-days', '30', '-sha256', '-out', name + '.pem')
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)


_default_certs = None


def default_certs():
    """The Certs of this run: in $P3B_CERTS when set (tests/run shares one
    across programs), else in a temp dir removed when the process exits."""
    global _default_certs
    if _default_certs is None:
        d = os.environ.get('P3B_CERTS')
        if not d:
            base = tempfile.mkdtemp(prefix='p3b-certs-')
            os.chmod(base, 0o755)
            atexit.register(shutil.rmtree, base, True)
            d = os.path.join(base, 'certs')
        _default_certs = Certs(d)
    return _default_certs
