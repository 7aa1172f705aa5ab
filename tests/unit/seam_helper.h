/* The scenario the seam tests (test_faults.c: I/O faults, test_alloc.c:
 * allocation failures) run over and over: every seed chain of mkseeds (one
 * per format and layout: hosted sparse deltas and a three-level chain, flat,
 * split with ZERO and NOACCESS extents, stream, COWD and seSparse deltas over
 * an ESXi base, a legacy-charset descriptor, VHD differencing and fixed),
 * written as plain files, is opened, every level is read whole, the chain is
 * described and closed. The outcome is kept so that a run with a fault
 * injected can be compared with a clean one. */
#ifndef SEAM_HELPER_H
#define SEAM_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEAM_MAX_LEVELS 4

/* Where seam_run() is; a test records it when its fault fires. */
enum seam_phase { SEAM_IDLE, SEAM_OPEN, SEAM_READ, SEAM_REREAD, SEAM_DESCRIBE, SEAM_CLOSE };
extern enum seam_phase seam_phase;

struct seam_outcome {
	int open_rc;
	unsigned depth;
	int read_rc[SEAM_MAX_LEVELS];
	uint8_t *data[SEAM_MAX_LEVELS]; /* the level's bytes when read_rc is 0 */
	int reread_rc[SEAM_MAX_LEVELS]; /* the same level read again */
	uint8_t *reread_data[SEAM_MAX_LEVELS];
	uint64_t size[SEAM_MAX_LEVELS];
	int describe_rc;
	char *json;		     /* chain.json when describe_rc is 0 */
	unsigned errors;	     /* error lines logged during the run */
	enum seam_phase fault_phase; /* set by the test: where its fault fired (IDLE: never) */
	char last_error[256];
};

/* Writes the seed chains (once per process) and returns their number;
 * *tops gets the path of each chain's top file. */
unsigned seam_chains(const char *const **tops);

/* Called around every call into the library (open, each read, describe,
 * close), so that a test can count or fail only what the library does. */
extern void (*seam_enter)(void);
extern void (*seam_leave)(void);

/* Runs the scenario on top: open, read every level whole twice, describe,
 * close. The result is filled in whatever happens; free it with
 * seam_outcome_free(). */
void seam_run(const char *top, struct seam_outcome *o);
void seam_outcome_free(struct seam_outcome *o);

/* True when b matches a (same results, same bytes, same JSON). */
bool seam_same(const struct seam_outcome *a, const struct seam_outcome *b);

/* Checks b, a run with one fault injected, against a, the clean run: a
 * failed open returned a plausible -errno and logged an error line, and
 * whatever succeeded gave a's bytes; unless the fault fired in the second
 * pass of reads, that pass must succeed as in a. With want_err 0 (I/O faults) a failed read must
 * have logged an error; otherwise (allocation failures) every failure must be exactly want_err.
 * Prints what is wrong and returns false. */
bool seam_clean(const struct seam_outcome *a, const struct seam_outcome *b, int want_err,
		const char *what);

#endif
