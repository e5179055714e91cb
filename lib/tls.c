/* Certificate chain and host-name verification for libetpan's TLS streams,
 * which check nothing themselves (doc/DESIGN.md, libetpan trap 1). */
#include "lib/tls.h"

#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "lib/log.h"
#include "lib/tls_anchors.h"
#include "lib/xmalloc.h"

#define TLS_CHAIN_MAX	16	/* certificates accepted from a server */
#define TLS_CACHE_MAX	32	/* distinct trust lists kept for reuse */

/* Where the system store is not the bundle lib/tls_anchors.c indexes,
 * GnuTLS loads it whole (~150 certificates parsed): keep each such trust
 * list (system store plus one ca_file, identified by path and file
 * identity) for the life of the process. GnuTLS only reads a trust list
 * while verifying, so threads share them. A ca_file changed on disk gets a
 * new entry; past TLS_CACHE_MAX entries lists are built per call and
 * freed. */
struct anchors {
	char *ca_file;		/* "" for the system store alone */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	gnutls_x509_trust_list_t list;
};

static struct anchors cache[TLS_CACHE_MAX];
static size_t ncache;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static const struct {
	unsigned bit;
	const char *why;
} reasons[] = {
	{ GNUTLS_CERT_SIGNER_NOT_FOUND, "signer unknown" },
	{ GNUTLS_CERT_UNEXPECTED_OWNER, "issued for another host name" },
	{ GNUTLS_CERT_EXPIRED, "expired" },
	{ GNUTLS_CERT_NOT_ACTIVATED, "not yet valid" },
	{ GNUTLS_CERT_REVOKED, "revoked" },
	{ GNUTLS_CERT_SIGNER_NOT_CA, "signer is not a CA" },
	{ GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE, "signer constraints violated" },
	{ GNUTLS_CERT_INSECURE_ALGORITHM, "insecure algorithm" },
	{ GNUTLS_CERT_SIGNATURE_FAILURE, "bad signature" },
	{ GNUTLS_CERT_PURPOSE_MISMATCH, "not meant for TLS servers" },
	{ GNUTLS_CERT_UNKNOWN_CRIT_EXTENSIONS, "unknown critical extension" },
};

/* True when host is a numeric IPv4 or IPv6 address; its raw bytes go to
 * addr (16 bytes, may be NULL) and their count to *len. */
static bool
ip_literal(const char *host, unsigned char *addr, unsigned *len)
{
	unsigned char buf[16];

	if (addr == NULL)
		addr = buf;
	if (inet_pton(AF_INET, host, addr) == 1) {
		if (len != NULL)
			*len = 4;
		return true;
	}
	if (inet_pton(AF_INET6, host, addr) == 1) {
		if (len != NULL)
			*len = 16;
		return true;
	}
	return false;
}

void
tls_sni_callback(struct mailstream_ssl_context *ctx, void *data)
{
	char *host = data;

	/* RFC 6066 section 3: a server name is a DNS name, never an address. */
	if (host == NULL || *host == '\0' || ip_literal(host, NULL, NULL))
		return;
	mailstream_ssl_set_server_name(ctx, host);
}

mailstream *
tls_stream_open(int fd, bool implicit_tls, const char *host, unsigned timeout,
    size_t chunk)
{
	mailstream_low *low;
	mailstream *s;

	if (implicit_tls) {
		low = mailstream_low_ssl_open_with_callback_timeout(fd, timeout,
		    tls_sni_callback, (void *)host);
		if (low == NULL) {
			close(fd);
			return NULL;
		}
	} else if ((low = mailstream_low_socket_open(fd)) == NULL)
		fatalx("tls: out of memory");
	mailstream_low_set_timeout(low, timeout);
	if ((s = mailstream_new(low, chunk)) == NULL)
		fatalx("tls: out of memory");
	return s;
}

int
tls_stream_starttls(mailstream *s, const char *host, unsigned timeout)
{
	mailstream_low *plain = mailstream_get_low(s), *tls;

	tls = mailstream_low_tls_open_with_callback_timeout(mailstream_low_get_fd(plain),
	    timeout, tls_sni_callback, (void *)host);
	if (tls == NULL)
		return -1;
	/* The plain layer only wrapped the socket the TLS layer now owns:
	 * free it without closing the descriptor. */
	mailstream_low_free(plain);
	mailstream_set_low(s, tls);
	mailstream_low_set_timeout(tls, timeout);
	return 0;
}

static bool
anchors_match(const struct anchors *a, const char *ca_file, const struct stat *st)
{
	if (strcmp(a->ca_file, ca_file) != 0)
		return false;
	if (*ca_file == '\0')
		return true;
	return a->dev == st->st_dev && a->ino == st->st_ino && a->size == st->st_size &&
	    a->mtime.tv_sec == st->st_mtim.tv_sec && a->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Builds a trust list of the system store plus ca_file ("" for none). */
static int
anchors_load(const char *ca_file, gnutls_x509_trust_list_t *out, char **why)
{
	gnutls_x509_trust_list_t list;
	int nsys, n;

	if (gnutls_x509_trust_list_init(&list, 0) < 0) {
		*why = xstrdup("cannot create a trust list");
		return -1;
	}
	nsys = gnutls_x509_trust_list_add_system_trust(list, 0, 0);
	if (*ca_file != '\0') {
		n = gnutls_x509_trust_list_add_trust_file(list, ca_file, NULL,
		    GNUTLS_X509_FMT_PEM, 0, 0);
		if (n <= 0) {
			gnutls_x509_trust_list_deinit(list, 1);
			*why = xasprintf("ca_file %s: %s", ca_file,
			    n < 0 ? gnutls_strerror(n) : "no PEM certificate in it");
			return -1;
		}
	} else if (nsys <= 0) {
		gnutls_x509_trust_list_deinit(list, 1);
		*why = xstrdup("no system trust store (is ca-certificates installed?)");
		return -1;
	}
	*out = list;
	return 0;
}

/* Finds or loads the trust list for ca_file ("" for none). *owned is set
 * when the list was not cached and the caller must free it. */
static int
anchors_get(const char *ca_file, gnutls_x509_trust_list_t *out, bool *owned, char **why)
{
	struct stat st;
	struct anchors *a;
	size_t i;
	int rv = 0;

	memset(&st, 0, sizeof st);
	if (*ca_file != '\0' && stat(ca_file, &st) == -1) {
		*why = xasprintf("ca_file %s: %s", ca_file, strerror(errno));
		return -1;
	}
	*owned = false;
	pthread_mutex_lock(&cache_lock);
	for (i = 0; i < ncache; i++)
		if (anchors_match(&cache[i], ca_file, &st)) {
			*out = cache[i].list;
			goto out;
		}
	if ((rv = anchors_load(ca_file, out, why)) == -1)
		goto out;
	if (ncache == TLS_CACHE_MAX) {
		*owned = true;
		goto out;
	}
	a = &cache[ncache++];
	a->ca_file = xstrdup(ca_file);
	a->dev = st.st_dev;
	a->ino = st.st_ino;
	a->size = st.st_size;
	a->mtime = st.st_mtim;
	a->list = *out;
out:
	pthread_mutex_unlock(&cache_lock);
	return rv;
}

/* The trust list for verifying chain crt[0..n): the anchors of the system
 * bundle and of ca_file ("" for none) that can anchor this chain
 * (lib/tls_anchors.h), in a list of its own (*owned); without the bundle,
 * GnuTLS's whole system store (anchors_get). */
static int
trust_for(const char *ca_file, gnutls_x509_crt_t *crt, unsigned n,
    gnutls_x509_trust_list_t *out, bool *owned, char **why)
{
	gnutls_x509_trust_list_t list;
	size_t nsys = 0, nca = 0;
	char *serr = NULL;
	int rv = 0;

	if (gnutls_x509_trust_list_init(&list, 0) < 0) {
		*why = xstrdup("cannot create a trust list");
		return -1;
	}
	if (tls_anchors_add(list, TLS_ANCHORS_SYSTEM_BUNDLE, crt, n, &nsys, &serr) == -1) {
		free(serr);
		gnutls_x509_trust_list_deinit(list, 1);
		return anchors_get(ca_file, out, owned, why);
	}
	if (*ca_file != '\0') {
		if (tls_anchors_add(list, ca_file, crt, n, &nca, &serr) == -1) {
			*why = xasprintf("ca_file %s", serr);
			free(serr);
			rv = -1;
		} else if (nca == 0) {
			*why = xasprintf("ca_file %s: no PEM certificate in it", ca_file);
			rv = -1;
		}
	} else if (nsys == 0) {
		*why = xstrdup("no system trust store (is ca-certificates installed?)");
		rv = -1;
	}
	if (rv == -1) {
		gnutls_x509_trust_list_deinit(list, 1);
		return -1;
	}
	*out = list;
	*owned = true;
	return 0;
}

/* Imports the DER chain libetpan hands over (carray of MMAPString). */
static int
chain_import(carray *chain, gnutls_x509_crt_t *crt, unsigned *n, char **why)
{
	MMAPString *der;
	gnutls_datum_t d;
	unsigned i, count = carray_count(chain);

	*n = 0;
	if (count == 0) {
		*why = xstrdup("no certificate presented");
		return -1;
	}
	if (count > TLS_CHAIN_MAX)
		count = TLS_CHAIN_MAX;
	for (i = 0; i < count; i++) {
		der = carray_get(chain, i);
		d.data = (unsigned char *)der->str;
		d.size = der->len;
		if (gnutls_x509_crt_init(&crt[i]) < 0)
			goto bad;
		*n = i + 1;
		if (gnutls_x509_crt_import(crt[i], &d, GNUTLS_X509_FMT_DER) < 0)
			goto bad;
	}
	return 0;
bad:
	*why = xasprintf("certificate %u of the chain cannot be parsed", i + 1);
	return -1;
}

/* A short reason for a verification status, e.g. "signer unknown". */
static char *
status_text(unsigned status)
{
	gnutls_datum_t out;
	char buf[512] = "";
	size_t i;

	for (i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
		if (status & reasons[i].bit) {
			if (buf[0] != '\0')
				strncat(buf, ", ", sizeof buf - strlen(buf) - 1);
			strncat(buf, reasons[i].why, sizeof buf - strlen(buf) - 1);
		}
	if (buf[0] != '\0')
		return xstrdup(buf);
	if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509,
	    &out, 0) < 0)
		return xasprintf("verification status 0x%x", status);
	snprintf(buf, sizeof buf, "%s", (char *)out.data);
	gnutls_free(out.data);
	return xstrdup(buf);
}

/* Verifies the chain for host and the TLS server purpose; 0 when trusted,
 * else -1 with *why set to the reason. */
static int
chain_verify(gnutls_x509_trust_list_t list, gnutls_x509_crt_t *crt, unsigned n,
    const char *host, char **why)
{
	gnutls_typed_vdata_st vd[2];
	unsigned char ip[16];
	unsigned iplen = 0, status = 0;
	bool is_ip = ip_literal(host, ip, &iplen);
	int r;

	vd[0].type = is_ip ? GNUTLS_DT_IP_ADDRESS : GNUTLS_DT_DNS_HOSTNAME;
	vd[0].data = is_ip ? ip : (unsigned char *)host;
	vd[0].size = is_ip ? iplen : 0;
	vd[1].type = GNUTLS_DT_KEY_PURPOSE_OID;
	vd[1].data = (unsigned char *)GNUTLS_KP_TLS_WWW_SERVER;
	vd[1].size = 0;
	r = gnutls_x509_trust_list_verify_crt2(list, crt, n, vd, 2, 0, &status, NULL);
	if (r < 0) {
		*why = xstrdup(gnutls_strerror(r));
		return -1;
	}
	/* Belt and braces: the leaf itself must name the host. */
	if (status == 0 && (is_ip ? !gnutls_x509_crt_check_ip(crt[0], ip, iplen, 0) :
	    !gnutls_x509_crt_check_hostname2(crt[0], host, 0)))
		status = GNUTLS_CERT_INVALID | GNUTLS_CERT_UNEXPECTED_OWNER;
	if (status != 0) {
		*why = status_text(status);
		return -1;
	}
	return 0;
}

int
tls_verify(mailstream *s, const char *host, const char *ca_file, char **err)
{
	gnutls_x509_crt_t crt[TLS_CHAIN_MAX];
	gnutls_x509_trust_list_t list;
	carray *chain;
	char *why = NULL;
	unsigned i, n = 0;
	bool owned = false;
	int rv = -1;

	/* A plain socket stream has no chain: never "verified" by accident. */
	if ((chain = mailstream_get_certificate_chain(s)) == NULL) {
		why = xstrdup("no certificate chain (not a TLS connection?)");
		goto out;
	}
	if (chain_import(chain, crt, &n, &why) == -1 ||
	    trust_for(ca_file != NULL ? ca_file : "", crt, n, &list, &owned, &why) == -1)
		goto out;
	rv = chain_verify(list, crt, n, host, &why);
	if (owned)
		gnutls_x509_trust_list_deinit(list, 1);
out:
	for (i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crt[i]);
	if (chain != NULL)
		mailstream_certificate_chain_free(chain);
	if (rv == -1 && err != NULL)
		*err = xasprintf("certificate for %s not trusted: %s", host, why);
	free(why);
	return rv;
}
