/* lib/tls_anchors.c: a PEM bundle indexed by subject gives a trust list
 * the anchors a chain can use, and only those; certificates made here
 * with GnuTLS (ECDSA P-256: quick to make, also under ASan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "lib/tls_anchors.h"
#include "tests/unit/check.h"

struct cert {
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
};

/* A certificate for dn, signed by issuer (NULL: self-signed), a CA or a
 * TLS server for localhost. */
static void
make(struct cert *c, const char *dn, const struct cert *issuer, bool ca, unsigned serial)
{
	time_t now = time(NULL);
	unsigned char sn[2] = { (unsigned char)(serial >> 8), (unsigned char)serial };
	const char *bad = NULL;
	gnutls_datum_t der;

	CHECK(gnutls_x509_privkey_init(&c->key) == 0);
	CHECK(gnutls_x509_privkey_generate(c->key, GNUTLS_PK_ECDSA,
	    GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) == 0);
	CHECK(gnutls_x509_crt_init(&c->crt) == 0);
	gnutls_x509_crt_set_version(c->crt, 3);
	gnutls_x509_crt_set_serial(c->crt, sn, sizeof sn);
	gnutls_x509_crt_set_activation_time(c->crt, now - 3600);
	gnutls_x509_crt_set_expiration_time(c->crt, now + 86400);
	CHECK(gnutls_x509_crt_set_dn(c->crt, dn, &bad) == 0);
	gnutls_x509_crt_set_key(c->crt, c->key);
	gnutls_x509_crt_set_basic_constraints(c->crt, ca, -1);
	if (ca)
		gnutls_x509_crt_set_key_usage(c->crt, GNUTLS_KEY_KEY_CERT_SIGN |
		    GNUTLS_KEY_CRL_SIGN);
	else {
		gnutls_x509_crt_set_subject_alt_name(c->crt, GNUTLS_SAN_DNSNAME, "localhost",
		    9, GNUTLS_FSAN_SET);
		gnutls_x509_crt_set_key_purpose_oid(c->crt, GNUTLS_KP_TLS_WWW_SERVER, 0);
	}
	CHECK(gnutls_x509_crt_sign2(c->crt, issuer ? issuer->crt : c->crt,
	    issuer ? issuer->key : c->key, GNUTLS_DIG_SHA256, 0) == 0);
	/* As a peer's chain arrives: imported from DER (GnuTLS keeps the raw
	 * names it matches by only for imported certificates). */
	CHECK(gnutls_x509_crt_export2(c->crt, GNUTLS_X509_FMT_DER, &der) == 0);
	gnutls_x509_crt_deinit(c->crt);
	CHECK(gnutls_x509_crt_init(&c->crt) == 0);
	CHECK(gnutls_x509_crt_import(c->crt, &der, GNUTLS_X509_FMT_DER) == 0);
	gnutls_free(der.data);
}

static void
drop(struct cert *c)
{
	gnutls_x509_crt_deinit(c->crt);
	gnutls_x509_privkey_deinit(c->key);
}

static void
put_pem(FILE *f, gnutls_x509_crt_t crt)
{
	gnutls_datum_t pem;

	CHECK(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem) == 0);
	fwrite(pem.data, 1, pem.size, f);
	gnutls_free(pem.data);
}

/* The CAs in list, counted; *has set when one equals want. */
static unsigned
list_cas(gnutls_x509_trust_list_t list, gnutls_x509_crt_t want, bool *has)
{
	gnutls_x509_trust_list_iter_t it = NULL;
	gnutls_x509_crt_t crt;
	unsigned n = 0;

	*has = false;
	while (gnutls_x509_trust_list_iter_get_ca(list, &it, &crt) == 0) {
		n++;
		if (want != NULL && gnutls_x509_crt_equals(crt, want))
			*has = true;
		gnutls_x509_crt_deinit(crt);
	}
	gnutls_x509_trust_list_iter_deinit(it);
	return n;
}

static unsigned
verify(gnutls_x509_trust_list_t list, gnutls_x509_crt_t *chain, unsigned n)
{
	unsigned status = ~0u;

	CHECK(gnutls_x509_trust_list_verify_crt(list, chain, n, 0, &status, NULL) == 0);
	return status;
}

static void
test_anchors_by_subject(void)
{
	char dir[] = "/tmp/p3b-tls.XXXXXX", path[64], none[80];
	struct cert ca1, ca2, mid, leaf;
	gnutls_x509_trust_list_t list;
	gnutls_x509_crt_t chain[2];
	size_t in_file = 0;
	char *why = NULL;
	bool has;
	FILE *f;

	if (!check_tmpdir(dir)) {
		CHECK(false);
		return;
	}
	make(&ca1, "CN=Test Root One,O=pop3bridge", NULL, true, 1);
	make(&ca2, "CN=Test Root Two,O=pop3bridge", NULL, true, 2);
	make(&mid, "CN=Test Intermediate,O=pop3bridge", &ca1, true, 3);
	make(&leaf, "CN=localhost", &mid, false, 4);
	snprintf(path, sizeof path, "%s/bundle.pem", dir);
	CHECK((f = fopen(path, "w")) != NULL);
	fputs("# junk before\n", f);
	put_pem(f, ca2.crt);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
	fputs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", f);
	put_pem(f, ca1.crt);
	fclose(f);

	/* The chain leaf <- intermediate: only root one anchors it. */
	chain[0] = leaf.crt;
	chain[1] = mid.crt;
	CHECK(gnutls_x509_trust_list_init(&list, 0) == 0);
	CHECK_INT(tls_anchors_add(list, path, chain, 2, &in_file, &why), 0);
	CHECK_INT(in_file, 2);
	CHECK_INT(list_cas(list, ca1.crt, &has), 1);
	CHECK(has);
	CHECK_INT(verify(list, chain, 2), 0);
	gnutls_x509_trust_list_deinit(list, 1);

	/* Without the intermediate nothing in the file can anchor the leaf:
	 * nothing is added, and the chain is refused as it would be with
	 * the whole file. */
	CHECK(gnutls_x509_trust_list_init(&list, 0) == 0);
	CHECK_INT(tls_anchors_add(list, path, chain, 1, &in_file, &why), 0);
	CHECK_INT(list_cas(list, NULL, &has), 0);
	CHECK((verify(list, chain, 1) & GNUTLS_CERT_SIGNER_NOT_FOUND) != 0);
	gnutls_x509_trust_list_deinit(list, 1);

	/* A root sent in the chain finds itself. */
	chain[0] = ca2.crt;
	CHECK(gnutls_x509_trust_list_init(&list, 0) == 0);
	CHECK_INT(tls_anchors_add(list, path, chain, 1, &in_file, &why), 0);
	CHECK_INT(list_cas(list, ca2.crt, &has), 1);
	CHECK(has);
	gnutls_x509_trust_list_deinit(list, 1);

	snprintf(none, sizeof none, "%s/missing.pem", dir);
	CHECK(gnutls_x509_trust_list_init(&list, 0) == 0);
	CHECK_INT(tls_anchors_add(list, none, chain, 1, &in_file, &why), -1);
	CHECK(why != NULL && strstr(why, "missing.pem") != NULL);
	free(why);
	gnutls_x509_trust_list_deinit(list, 1);

	drop(&ca1);
	drop(&ca2);
	drop(&mid);
	drop(&leaf);
	check_rm_tree(dir);
}

/* A file indexed ahead (tls_anchors_preload, as a parent does before it
 * forks its passes) is still checked at use: changed on disk, it is read
 * again. A missing one is an error with its path. */
static void
test_preload(void)
{
	char dir[] = "/tmp/p3b-tls.XXXXXX", path[64], none[80];
	struct cert ca1, ca2;
	gnutls_x509_trust_list_t list;
	gnutls_x509_crt_t chain[1];
	size_t in_file = 0;
	char *why = NULL;
	bool has;
	FILE *f;

	if (!check_tmpdir(dir)) {
		CHECK(false);
		return;
	}
	make(&ca1, "CN=Preload Root One,O=pop3bridge", NULL, true, 11);
	make(&ca2, "CN=Preload Root Two,O=pop3bridge", NULL, true, 12);
	snprintf(path, sizeof path, "%s/bundle.pem", dir);
	CHECK((f = fopen(path, "w")) != NULL);
	put_pem(f, ca1.crt);
	fclose(f);
	CHECK_INT(tls_anchors_preload(path, &why), 0);
	chain[0] = ca1.crt;
	CHECK(gnutls_x509_trust_list_init(&list, 0) == 0);
	CHECK_INT(tls_anchors_add(list, path, chain, 1, &in_file, &why), 0);
	CHECK_INT(in_file, 1);
	CHECK_INT(list_cas(list, ca1.crt, &has), 1);
	CHECK(has);
	gnutls_x509_trust_list_deinit(list, 1);

	/* Replaced by a bundle of two: the index made ahead is not used. */
	CHECK((f = fopen(path, "w")) != NULL);
	put_pem(f, ca2.crt);
	put_pem(f, ca1.crt);
	fclose(f);
	chain[0] = ca2.crt;
	CHECK(gnutls_x509_trust_list_init(&list, 0) == 0);
	CHECK_INT(tls_anchors_add(list, path, chain, 1, &in_file, &why), 0);
	CHECK_INT(in_file, 2);
	CHECK_INT(list_cas(list, ca2.crt, &has), 1);
	CHECK(has);
	gnutls_x509_trust_list_deinit(list, 1);

	snprintf(none, sizeof none, "%s/missing.pem", dir);
	CHECK_INT(tls_anchors_preload(none, &why), -1);
	CHECK(why != NULL && strstr(why, "missing.pem") != NULL);
	free(why);
	drop(&ca1);
	drop(&ca2);
	check_rm_tree(dir);
}

/* Every certificate of the system bundle, as a chain of its own, finds
 * itself: the index reads each subject as GnuTLS does. */
static void
test_system_bundle_subjects(void)
{
	const char *path = TLS_ANCHORS_SYSTEM_BUNDLE;
	gnutls_x509_crt_t *crts = NULL;
	gnutls_x509_trust_list_t list;
	gnutls_datum_t pem;
	unsigned n = 0, bad = 0;
	size_t in_file = 0;
	char *why = NULL;
	bool has;

	if (access(path, R_OK) != 0) {
		printf("  (no %s: skipped)\n", path);
		return;
	}
	CHECK(gnutls_load_file(path, &pem) == 0);
	CHECK(gnutls_x509_crt_list_import2(&crts, &n, &pem, GNUTLS_X509_FMT_PEM, 0) == 0);
	gnutls_free(pem.data);
	CHECK(n > 0);
	for (unsigned i = 0; i < n; i++) {
		CHECK(gnutls_x509_trust_list_init(&list, 0) == 0);
		CHECK_INT(tls_anchors_add(list, path, &crts[i], 1, &in_file, &why), 0);
		list_cas(list, crts[i], &has);
		bad += !has;
		gnutls_x509_trust_list_deinit(list, 1);
		gnutls_x509_crt_deinit(crts[i]);
	}
	gnutls_free(crts);
	CHECK_INT(in_file, n);
	CHECK_INT(bad, 0);
}

int
main(void)
{
	gnutls_global_init();
	TEST(test_anchors_by_subject);
	TEST(test_preload);
	TEST(test_system_bundle_subjects);
	gnutls_global_deinit();
	CHECK_DONE();
}
