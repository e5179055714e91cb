#include "bridge/progress.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/xmalloc.h"

#define BAR_WIDTH 20

struct row {
	char *name;
	struct sync_progress sp;
	double started;
};

struct progress {
	FILE *out;
	struct row *rows;
	size_t n, drawn;        /* rows, and lines on screen now */
};

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
human(char *buf, size_t len, double bytes)
{
	static const char *const unit[] = { "B", "kB", "MB", "GB", "TB" };
	int u = 0;

	while (bytes >= 1000 && u < 4) {
		bytes /= 1000;
		u++;
	}
	snprintf(buf, len, u == 0 ? "%.0f %s" : "%.1f %s", bytes, unit[u]);
}

static void
clock_text(char *buf, size_t len, double secs)
{
	long s = secs < 0 ? 0 : (long)(secs + 0.5);

	if (s >= 3600)
		snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
}

char *
progress_line(const char *name, const struct sync_progress *sp, double secs)
{
	char done[32], total[32], rate[32], eta[64], bar[BAR_WIDTH + 1];
	double frac = sp->bytes_total > 0 ? (double)sp->bytes_done / (double)sp->bytes_total :
	    sp->msgs_total > 0 ? (double)sp->msgs_done / (double)sp->msgs_total : 1;
	double bps = secs > 0.05 ? (double)sp->bytes_done / secs : 0;
	int fill;

	if (frac > 1)
		frac = 1;
	fill = (int)(frac * BAR_WIDTH + 0.5);
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, '.', (size_t)(BAR_WIDTH - fill));
	bar[BAR_WIDTH] = '\0';
	human(done, sizeof done, (double)sp->bytes_done);
	human(total, sizeof total, (double)sp->bytes_total);
	human(rate, sizeof rate, bps);
	if (sp->finished)
		clock_text(eta, sizeof eta, secs);
	else if (bps > 0)
		clock_text(eta, sizeof eta, (double)(sp->bytes_total - sp->bytes_done) / bps);
	else
		strcpy(eta, "?");
	return xasprintf("%s [%s] %lu/%lu messages, %s of %s, %s/s, %s %s", name, bar,
	    sp->msgs_done, sp->msgs_total, done, total, rate, sp->finished ? "in" : "ETA", eta);
}

struct progress *
progress_start(FILE *out)
{
	struct progress *pr = xcalloc(1, sizeof *pr);

	pr->out = out;
	return pr;
}

/* Moves up over the block and clears it. */
static void
erase(struct progress *pr)
{
	if (pr->drawn > 0)
		fprintf(pr->out, "\r\033[%zuA\033[J", pr->drawn);
	pr->drawn = 0;
}

static void
draw(struct progress *pr)
{
	double t = now();

	erase(pr);
	for (size_t i = 0; i < pr->n; i++) {
		char *l = progress_line(pr->rows[i].name, &pr->rows[i].sp, t - pr->rows[i].started);

		fprintf(pr->out, "%s\033[K\n", l);
		free(l);
	}
	pr->drawn = pr->n;
	fflush(pr->out);
}

static struct row *
find(struct progress *pr, const char *name)
{
	for (size_t i = 0; i < pr->n; i++)
		if (strcmp(pr->rows[i].name, name) == 0)
			return &pr->rows[i];
	return NULL;
}

static void
remove_row(struct progress *pr, struct row *r)
{
	free(r->name);
	memmove(r, r + 1, (size_t)(pr->rows + pr->n - (r + 1)) * sizeof *r);
	pr->n--;
}

void
progress_update(struct progress *pr, const char *name, const struct sync_progress *sp)
{
	struct row *r = find(pr, name);

	if (r == NULL) {
		pr->rows = xreallocarray(pr->rows, pr->n + 1, sizeof *pr->rows);
		r = &pr->rows[pr->n++];
		r->name = xstrdup(name);
		r->started = now();
	}
	r->sp = *sp;
	if (!sp->finished) {
		draw(pr);
		return;
	}
	/* The last state stays on screen, above the block. */
	{
		char *l = progress_line(name, sp, now() - r->started);

		erase(pr);
		fprintf(pr->out, "%s\033[K\n", l);
		free(l);
		remove_row(pr, r);
		draw(pr);
	}
}

void
progress_drop(struct progress *pr, const char *name)
{
	struct row *r = find(pr, name);

	if (r != NULL) {
		remove_row(pr, r);
		draw(pr);
	}
}

void
progress_print(struct progress *pr, const char *text, size_t len)
{
	erase(pr);
	fwrite(text, 1, len, pr->out);
	draw(pr);
}

void
progress_end(struct progress *pr)
{
	if (pr == NULL)
		return;
	erase(pr);
	fflush(pr->out);
	for (size_t i = 0; i < pr->n; i++)
		free(pr->rows[i].name);
	free(pr->rows);
	free(pr);
}
