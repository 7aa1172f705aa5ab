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
};

/* cow.c: stops the flusher, flushes and frees the writable state (the delta
 * image itself is closed with the other layers). NULL-safe. */
void vd_cow_close(struct vd_chain *c);

/* cow.c: adds the writable delta's members to chain.json. */
void vd_cow_describe(struct vd_chain *c, struct vd_json *j);

#endif
