/* PEM bundles indexed by subject: see tls_anchors.h. */
#include "lib/tls_anchors.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "lib/xmalloc.h"

#define ANCHORS_FILES_MAX 32            /* distinct files kept for reuse */
#define ANCHORS_FILE_MAX (64 << 20)     /* a bundle larger than this is refused */

struct pem_cert {
	gnutls_datum_t der;                 /* gnutls_malloc'd */
	size_t subject_off, subject_len;    /* the subject's TLV in der; 0 length:
	                                       unknown, always added */
};

struct anchor_file {
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct pem_cert *certs;
	size_t n;
};

static struct anchor_file files[ANCHORS_FILES_MAX];
static size_t nfiles;
static pthread_mutex_t files_lock = PTHREAD_MUTEX_INITIALIZER;

/* One DER tag-length at p[0..n): the header's and the content's length. */
static bool
der_tl(const unsigned char *p, size_t n, unsigned char tag, size_t *hdr, size_t *len)
{
	size_t k, l = 0;

	if (n < 2 || p[0] != tag)
		return false;
	if (p[1] < 0x80) {
		*hdr = 2;
		l = p[1];
	} else {
		k = p[1] & 0x7f;
		if (k == 0 || k > 4 || n < 2 + k)
			return false;
		for (size_t i = 0; i < k; i++)
			l = l << 8 | p[2 + i];
		*hdr = 2 + k;
	}
	if (l > n - *hdr)
		return false;
	*len = l;
	return true;
}

/* Finds the subject Name in a DER certificate: Certificate SEQUENCE >
 * tbsCertificate SEQUENCE > [0] version (optional), serialNumber INTEGER,
 * signature SEQUENCE, issuer SEQUENCE, validity SEQUENCE, subject
 * SEQUENCE (RFC 5280, section 4.1). */
static bool
der_subject(const unsigned char *p, size_t n, size_t *off, size_t *slen)
{
	static const unsigned char skip[] = { 0x02, 0x30, 0x30, 0x30 };
	const unsigned char *q;
	size_t h, l, left;

	if (!der_tl(p, n, 0x30, &h, &l))
		return false;
	q = p + h;
	left = l;
	if (!der_tl(q, left, 0x30, &h, &l))
		return false;
	q += h;
	left = l;
	if (left > 0 && q[0] == 0xa0) {
		if (!der_tl(q, left, 0xa0, &h, &l))
			return false;
		q += h + l;
		left -= h + l;
	}
	for (size_t i = 0; i < sizeof skip; i++) {
		if (!der_tl(q, left, skip[i], &h, &l))
			return false;
		q += h + l;
		left -= h + l;
	}
	if (!der_tl(q, left, 0x30, &h, &l))
		return false;
	*off = (size_t)(q - p);
	*slen = h + l;
	return true;
}

/* The next "-----BEGIN label-----" block of a certificate label in
 * text[*at..n), decoded. 1 one decoded (c filled), 0 no more, -1 a block
 * GnuTLS cannot decode (skipped). */
static int
next_block(const char *text, size_t n, size_t *at, struct pem_cert *c)
{
	static const char *const labels[] = { "CERTIFICATE", "X509 CERTIFICATE" };
	const char *p = text + *at, *end = text + n, *b, *e;
	gnutls_datum_t in;
	size_t ll;

	for (;;) {
		b = memmem(p, (size_t)(end - p), "-----BEGIN ", 11);
		if (b == NULL) {
			*at = n;
			return 0;
		}
		p = b + 11;
		for (size_t i = 0; i < 2; i++) {
			ll = strlen(labels[i]);
			if ((size_t)(end - p) < ll + 5 || memcmp(p, labels[i], ll) != 0 ||
			    memcmp(p + ll, "-----", 5) != 0)
				continue;
			e = memmem(p, (size_t)(end - p), "-----END ", 9);
			e = e != NULL ? e + 9 + ll + 5 : end;
			if (e > end)
				e = end;
			*at = (size_t)(e - text);
			in.data = (unsigned char *)b;
			in.size = (unsigned)(e - b);
			memset(c, 0, sizeof *c);
			if (gnutls_pem_base64_decode2(labels[i], &in, &c->der) < 0)
				return -1;
			if (!der_subject(c->der.data, c->der.size, &c->subject_off, &c->subject_len))
				c->subject_len = 0;
			return 1;
		}
	}
}

/* Reads and indexes the file open as fd into f. */
static int
index_file(int fd, const struct stat *sb, struct anchor_file *f, char **why)
{
	char *text;
	size_t got = 0, at = 0, cap = 0;
	ssize_t r;
	struct pem_cert c;
	int k;

	if (sb->st_size > ANCHORS_FILE_MAX) {
		*why = xasprintf("%s: larger than %d MiB", f->path, ANCHORS_FILE_MAX >> 20);
		return -1;
	}
	text = xmalloc((size_t)sb->st_size + 1);
	while (got < (size_t)sb->st_size &&
	    ((r = read(fd, text + got, (size_t)sb->st_size - got)) > 0 ||
	    (r < 0 && errno == EINTR)))
		if (r > 0)
			got += (size_t)r;
	while ((k = next_block(text, got, &at, &c)) != 0) {
		if (k == -1)
			continue;
		if (f->n == cap) {
			cap = cap ? cap * 2 : 64;
			f->certs = xreallocarray(f->certs, cap, sizeof *f->certs);
		}
		f->certs[f->n++] = c;
	}
	free(text);
	return 0;
}

/* The cached index of path, read now when missing or changed on disk. */
static struct anchor_file *
file_get(const char *path, char **why)
{
	struct anchor_file *f, fresh;
	struct stat sb;
	size_t i;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 || fstat(fd, &sb) == -1) {
		*why = xasprintf("%s: %s", path, strerror(errno));
		if (fd != -1)
			close(fd);
		return NULL;
	}
	for (i = 0; i < nfiles; i++) {
		f = &files[i];
		if (strcmp(f->path, path) == 0 && f->dev == sb.st_dev && f->ino == sb.st_ino &&
		    f->size == sb.st_size && f->mtime.tv_sec == sb.st_mtim.tv_sec &&
		    f->mtime.tv_nsec == sb.st_mtim.tv_nsec) {
			close(fd);
			return f;
		}
	}
	memset(&fresh, 0, sizeof fresh);
	fresh.path = xstrdup(path);
	fresh.dev = sb.st_dev;
	fresh.ino = sb.st_ino;
	fresh.size = sb.st_size;
	fresh.mtime = sb.st_mtim;
	if (index_file(fd, &sb, &fresh, why) == -1) {
		close(fd);
		free(fresh.path);
		return NULL;
	}
	close(fd);
	/* Past the cache's size the oldest entry makes room: its certificates
	 * are copied into trust lists, never referenced by them. */
	if (nfiles == ANCHORS_FILES_MAX) {
		for (i = 0; i < files[0].n; i++)
			gnutls_free(files[0].certs[i].der.data);
		free(files[0].certs);
		free(files[0].path);
		memmove(&files[0], &files[1], (ANCHORS_FILES_MAX - 1) * sizeof files[0]);
		nfiles--;
	}
	files[nfiles] = fresh;
	return &files[nfiles++];
}

/* The issuer and subject names of the chain, for matching (gnutls_malloc'd). */
static size_t
chain_names(gnutls_x509_crt_t *chain, unsigned n, gnutls_datum_t *names)
{
	size_t k = 0;

	for (unsigned i = 0; i < n; i++) {
		if (gnutls_x509_crt_get_raw_issuer_dn(chain[i], &names[k]) == 0)
			k++;
		if (gnutls_x509_crt_get_raw_dn(chain[i], &names[k]) == 0)
			k++;
	}
	return k;
}

static bool
names_have(const gnutls_datum_t *names, size_t k, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < k; i++)
		if (names[i].size == len && memcmp(names[i].data, p, len) == 0)
			return true;
	return false;
}

int
tls_anchors_add(gnutls_x509_trust_list_t list, const char *path,
    gnutls_x509_crt_t *chain, unsigned n, size_t *in_file, char **why)
{
	gnutls_datum_t *names = xcalloc(2 * (size_t)n + 1, sizeof *names);
	size_t k = chain_names(chain, n, names);
	struct anchor_file *f;
	int rv = -1;

	*in_file = 0;
	pthread_mutex_lock(&files_lock);
	if ((f = file_get(path, why)) != NULL) {
		*in_file = f->n;
		for (size_t i = 0; i < f->n; i++) {
			const struct pem_cert *c = &f->certs[i];

			if (c->subject_len == 0 || names_have(names, k,
			    c->der.data + c->subject_off, c->subject_len))
				gnutls_x509_trust_list_add_trust_mem(list, &c->der, NULL,
				    GNUTLS_X509_FMT_DER, 0, 0);
		}
		rv = 0;
	}
	pthread_mutex_unlock(&files_lock);
	for (size_t i = 0; i < k; i++)
		gnutls_free(names[i].data);
	free(names);
	return rv;
}

int
tls_anchors_preload(const char *path, char **why)
{
	int rv;

	pthread_mutex_lock(&files_lock);
	rv = file_get(path, why) != NULL ? 0 : -1;
	pthread_mutex_unlock(&files_lock);
	return rv;
}
