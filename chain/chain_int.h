/* The chain's state, shared by chain.c (discovery, reads, describe) and
 * cow.c (the writable delta). Not for front ends: they see struct vd_chain
 * as opaque (chain/chain.h). */
#ifndef VD_CHAIN_INT_H
#define VD_CHAIN_INT_H

#include "chain/chain.h"

struct vd_cow;

struct vd_chain {
	struct vd_image **layers;    /* [0] base ... [depth-1] top; owned */
	struct vd_chain_link *links; /* links[i]: how layers[i] found its parent layers[i-1] */
	unsigned depth;
	unsigned flags;
	struct vd_policy *policy; /* the caller's, or own_policy */
	struct vd_policy own_policy;
	const struct vd_chain_opts *opts; /* during open only */
	char **warnings;		  /* validation warnings, for chain.json */
	unsigned n_warnings;
	struct vd_cow *cow;	    /* the writable delta (the top layer), or NULL */
	struct timespec mount_time; /* set by the front end, for chain.json */
	bool has_mount_time;
	/* vd_chain_inputs_check(): last check (CLOCK_MONOTONIC ns) and a sticky
	 * "an input changed" flag; both atomic */
	int64_t inputs_checked_ns;
	int inputs_changed;
	/* Where resolution of the top level may start (chain.c, chain_skip):
	 * per block of 1 << skip_shift bytes, the highest layer that holds
	 * anything in it (every layer above is unallocated there), or
	 * VD_SKIP_UNKNOWN. Made on first use (atomic pointer) or, writable,
	 * with the delta; bytes atomic; NULL for a one-layer chain or without
	 * memory. skip_shift is set before the map is published. */
	uint8_t *skip;
	unsigned skip_shift;
	/* Prefetch for a sequential reader (chain.c, chain_prefetch): where
	 * the last read ended, and how far the kernel was asked to read ahead;
	 * both atomic. */
	uint64_t ra_next;
	uint64_t ra_done;
};

/* chain.c: a write or discard of [off, off + len) is about to reach the top
 * layer: resolution of those blocks starts at the top again. Call before the
 * write, so a reader never skips data the top may hold. */
void vd_chain_skip_touch(struct vd_chain *c, uint64_t off, uint64_t len);

/* chain.c: replaces the skip map with a new one, all unknown (the layers
 * changed; a writable chain gets its map here). Not concurrent with reads. */
void vd_chain_skip_reset(struct vd_chain *c);

/* cow.c: stops the flusher, flushes and frees the writable state (the delta
 * image itself is closed with the other layers). NULL-safe. */
void vd_cow_close(struct vd_chain *c);

/* cow.c: adds the writable delta's members to chain.json. */
void vd_cow_describe(struct vd_chain *c, struct vd_json *j);

#endif
