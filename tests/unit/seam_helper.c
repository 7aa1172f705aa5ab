/* The seam tests' scenario; see seam_helper.h. */
#include "seam_helper.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain.h"
#include "esx_helper.h"

#define SEAM_MAX_CHAINS 16
#define SEAM_CHUNK 4096

static void nothing(void)
{
}

enum seam_phase seam_phase;
void (*seam_enter)(void) = nothing;
void (*seam_leave)(void) = nothing;

static char last_error[256];

/* Keeps the last error line for messages; prints nothing (thousands of runs
 * fail on purpose). */
static void seam_sink(void *ctx, enum vd_log_level lvl, const char *msg)
{
	(void)ctx;
	if (lvl == VD_LOG_ERR)
		snprintf(last_error, sizeof(last_error), "%s", msg);
}

unsigned seam_chains(const char *const **tops)
{
	static char *paths[SEAM_MAX_CHAINS];
	static unsigned n;
	char name[PATH_MAX], top[PATH_MAX], *list;
	FILE *f;

	*tops = (const char *const *)paths;
	if (n)
		return n;
	vd_log_set_sink(seam_sink, NULL);
	if (esx_run("\"$T/fuzz/mkseeds\" chains seams") != 0)
		return 0;
	list = strdup(tu_path("seams/chains.txt"));
	f = list ? fopen(list, "r") : NULL;
	while (f && n < SEAM_MAX_CHAINS && fscanf(f, "%255s %255s", name, top) == 2) {
		if (asprintf(&paths[n], "%s/seams/%s/%s", tu_dir(), name, top) < 0)
			abort();
		n++;
	}
	if (f)
		fclose(f);
	free(list);
	return n;
}

/* Reads level i whole, in SEAM_CHUNK pieces, into buf. */
static int level_read(struct vd_chain *c, unsigned i, uint8_t *buf, uint64_t size,
		      enum seam_phase phase)
{
	seam_phase = phase;
	for (uint64_t off = 0; off < size; off += SEAM_CHUNK) {
		size_t n = (size_t)vd_min_u64(SEAM_CHUNK, size - off);
		int r;

		seam_enter();
		r = vd_chain_read(c, i, buf + off, n, off);
		seam_leave();
		if (r < 0)
			return r;
	}
	return 0;
}

void seam_run(const char *top, struct seam_outcome *o)
{
	unsigned errs = vd_log_error_count();
	struct vd_chain *c = NULL;
	struct vd_json j = {0};

	memset(o, 0, sizeof(*o));
	last_error[0] = '\0';
	seam_phase = SEAM_OPEN;
	seam_enter();
	o->open_rc = vd_chain_open(top, 0, &c);
	seam_leave();
	if (o->open_rc == 0) {
		o->depth = vd_chain_depth(c);
		for (unsigned i = 0; i < o->depth && i < SEAM_MAX_LEVELS; i++) {
			uint64_t size = vd_chain_size(c, i);
			uint8_t *again = malloc(size ? size : 1);

			o->size[i] = size;
			o->data[i] = malloc(size ? size : 1);
			if (!o->data[i] || !again)
				abort();
			o->read_rc[i] = level_read(c, i, o->data[i], size, SEAM_READ);
			/* Once more: a fault in the first pass must not have left
			 * anything behind (a failed table load cached as zeros, a
			 * half-filled cache slot) that changes what is read now. */
			o->reread_rc[i] = level_read(c, i, again, size, SEAM_REREAD);
			o->reread_data[i] = again;
		}
		seam_phase = SEAM_DESCRIBE;
		seam_enter();
		o->describe_rc = vd_chain_describe(c, &j);
		seam_leave();
		if (o->describe_rc == 0 && j.buf.data && !(o->json = strdup(j.buf.data)))
			abort();
		seam_phase = SEAM_CLOSE;
		seam_enter();
		vd_buf_free(&j.buf);
		vd_chain_close(c);
		seam_leave();
	}
	seam_phase = SEAM_IDLE;
	o->errors = vd_log_error_count() - errs;
	snprintf(o->last_error, sizeof(o->last_error), "%s", last_error);
}

void seam_outcome_free(struct seam_outcome *o)
{
	for (unsigned i = 0; i < SEAM_MAX_LEVELS; i++) {
		free(o->data[i]);
		free(o->reread_data[i]);
	}
	free(o->json);
	memset(o, 0, sizeof(*o));
}

bool seam_same(const struct seam_outcome *a, const struct seam_outcome *b)
{
	if (a->open_rc != b->open_rc || a->depth != b->depth || a->describe_rc != b->describe_rc)
		return false;
	for (unsigned i = 0; i < a->depth && i < SEAM_MAX_LEVELS; i++) {
		if (a->read_rc[i] != b->read_rc[i] || a->reread_rc[i] != b->reread_rc[i] ||
		    a->size[i] != b->size[i])
			return false;
		if (!a->read_rc[i] && memcmp(a->data[i], b->data[i], a->size[i]))
			return false;
	}
	return !a->json == !b->json && (!a->json || !strcmp(a->json, b->json));
}

static bool is_errno(int r)
{
	return r < 0 && r >= -4095;
}

bool seam_clean(const struct seam_outcome *a, const struct seam_outcome *b, int want_err,
		const char *what)
{
	const char *why = NULL;

	if (b->open_rc < 0) {
		if (!is_errno(b->open_rc))
			why = "open failed with a value that is not -errno";
		else if (!b->errors)
			why = "open failed without logging an error";
		else if (want_err && b->open_rc != want_err)
			why = "open failed with the wrong error";
	} else if (a->open_rc < 0) {
		why = "open succeeded where the clean run failed";
	} else if (b->depth != a->depth) {
		why = "a chain of another depth";
	} else {
		for (unsigned i = 0; i < a->depth && i < SEAM_MAX_LEVELS && !why; i++) {
			if (b->read_rc[i] < 0 && !is_errno(b->read_rc[i]))
				why = "a read failed with a value that is not -errno";
			else if (b->read_rc[i] < 0 && want_err && b->read_rc[i] != want_err &&
				 b->read_rc[i] != a->read_rc[i])
				why = "a read failed with the wrong error";
			else if (b->read_rc[i] < 0 && !want_err && !b->errors)
				why = "a read failed without logging an error";
			else if (!b->read_rc[i] &&
				 (a->read_rc[i] || memcmp(a->data[i], b->data[i], a->size[i])))
				why = "a read succeeded with other bytes than the clean run";
			else if (b->fault_phase == SEAM_REREAD && b->reread_rc[i] < 0 &&
				 (!is_errno(b->reread_rc[i]) ||
				  (want_err && b->reread_rc[i] != want_err &&
				   b->reread_rc[i] != a->reread_rc[i]) ||
				  (!want_err && !b->errors)))
				why = "a read failed uncleanly";
			else if (b->fault_phase != SEAM_REREAD &&
				 b->reread_rc[i] != a->reread_rc[i])
				why = "reading again after the fault failed: state left behind";
			else if (!b->reread_rc[i] && !a->reread_rc[i] &&
				 memcmp(a->reread_data[i], b->reread_data[i], a->size[i]))
				why = "reading again after the fault gave other bytes";
		}
		if (!why && b->describe_rc < 0 && !is_errno(b->describe_rc))
			why = "describe failed with a value that is not -errno";
		if (!why && b->describe_rc < 0 && want_err && b->describe_rc != want_err)
			why = "describe failed with the wrong error";
	}
	if (!why)
		return true;
	printf("%s: %s (open %d, reads %d/%d, describe %d; last error: %s)\n", what, why,
	       b->open_rc, b->read_rc[0], b->reread_rc[0], b->describe_rc, b->last_error);
	return false;
}
