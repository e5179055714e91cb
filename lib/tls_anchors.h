/* Trust anchors for one certificate verification, taken from PEM files
 * (the system bundle, a ca_file) without parsing all of them: a bundle of
 * ~150 certificates costs ~60 M instructions and ~4 MB to parse, per
 * process, while a verification only ever looks at the anchors whose
 * subject is the issuer (or the subject) of a certificate of the chain.
 * Each file is read once per process (cached by path and file identity)
 * and indexed by the raw DER subject of each certificate; a verification
 * adds to its trust list exactly the certificates whose subject equals,
 * byte for byte, an issuer or subject name of the chain -- the names
 * GnuTLS's trust list looks anchors up by. Loading a subset of a file can
 * only make a verification stricter, never let through a chain the whole
 * file would refuse. */
#ifndef POP3BRIDGE_TLS_ANCHORS_H
#define POP3BRIDGE_TLS_ANCHORS_H

#include <stddef.h>

#include <gnutls/x509.h>

/* The PEM bundle GnuTLS itself reads as the system trust store on Debian
 * (its build's default trust store file). */
#define TLS_ANCHORS_SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

/* Adds to list the certificates of the PEM file at path ("CERTIFICATE"
 * and "X509 CERTIFICATE" blocks, as GnuTLS reads them) that can anchor
 * chain[0..n): those whose subject is the issuer or the subject of one of
 * them, and any whose subject could not be read (never one left out by
 * mistake). *in_file receives how many certificates the file holds.
 * Returns 0, or -1 with *why allocated ("PATH: reason": the file cannot
 * be read). Thread-safe. */
int tls_anchors_add(gnutls_x509_trust_list_t list, const char *path,
    gnutls_x509_crt_t *chain, unsigned n, size_t *in_file, char **why);

/* Reads and indexes the PEM file at path now, if it is not cached with
 * its current identity: a process that forks a child per pass calls it
 * before the fork, so that every child finds the index made (copy on
 * write) instead of decoding the bundle again (~13 M instructions for
 * the system one). The children still check the file's identity and read
 * it again if it changed. 0, or -1 with *why allocated. Thread-safe. */
int tls_anchors_preload(const char *path, char **why);

#endif
