#include "bridge/relay_data.h"

/* Position in the input: at the start of a line, after a dot that starts
 * a line, after ".\r" at the start of a line, inside a line, after a CR
 * inside a line. A CR is held back until we know what follows it. */
enum { BOL, DOT, DOTCR, TEXT, CR };

void
relay_data_init(struct relay_data *d)
{
	d->st = BOL;
	d->bare_eol = false;
	d->done = false;
}

/* One byte inside a line (state TEXT or CR). */
static void
text_byte(struct relay_data *d, char c, char *out, size_t *o)
{
	if (d->st == CR) {
		if (c == '\n') {
			out[(*o)++] = '\r';
			out[(*o)++] = '\n';
			d->st = BOL;
			return;
		}
		d->bare_eol = true;     /* CR not followed by LF */
		out[(*o)++] = '\r';
		d->st = TEXT;
	}
	if (c == '\r') {
		d->st = CR;
		return;
	}
	if (c == '\n')
		d->bare_eol = true;     /* stays inside the line: not an end */
	out[(*o)++] = c;
}

size_t
relay_data_decode(struct relay_data *d, const char *in, size_t n, char *out, size_t *out_n)
{
	size_t i, o = 0;

	for (i = 0; i < n && !d->done; i++) {
		char c = in[i];

		switch (d->st) {
		case BOL:
			if (c == '.') {
				d->st = DOT;
				continue;
			}
			d->st = TEXT;
			break;
		case DOT:
			if (c == '\r') {
				d->st = DOTCR;
				continue;
			}
			d->st = TEXT;   /* the stuffed dot is dropped */
			break;
		case DOTCR:
			if (c == '\n') {
				d->done = true;
				continue;
			}
			d->st = CR;     /* ".\rX": a line "." + bare CR */
			break;
		}
		text_byte(d, c, out, &o);
	}
	*out_n = o;
	return i;
}
