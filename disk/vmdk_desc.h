/* VMDK text descriptor parser (VMware Virtual Disk Format 5.0, "The Descriptor File"). Not a public
 * API: used by vmdk.c and the unit tests. */
#ifndef VD_VMDK_DESC_H
#define VD_VMDK_DESC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "disk/vmdk.h"

#define VMDK_DESC_MAX (1u << 20)     /* bytes of descriptor text we accept (QEMU: 1 MiB - 1) */
#define VMDK_DESC_MAX_EXTENTS 32768u /* a 62 TiB disk split at 2 GiB needs ~31744 */
#define VMDK_CID_NONE 0xffffffffu    /* parentCID of a base disk */

struct vmdk_desc_extent {
	enum vmdk_access access;
	enum vmdk_extent_type type;
	uint64_t sectors;
	uint64_t offset; /* OFFSET (sectors), FLAT/VMFS only; 0 when absent */
	char *name;	 /* file name as written, unquoted; NULL for ZERO */
	unsigned line;	 /* line number in the descriptor, for messages */
};

#define VMDK_DESC_MAX_DDB 1024u /* ddb.* entries kept (real descriptors have 10-30) */

/* A ddb.* entry, kept for describe(); each key once (a repeated key replaces
 * the value). */
struct vmdk_ddb {
	char *key; /* without the "ddb." prefix, as written */
	char *value;
};

struct vmdk_desc {
	unsigned version;
	char *encoding; /* NULL when absent */
	uint32_t cid;
	uint32_t parent_cid; /* VMDK_CID_NONE for a base */
	char cid_text[9];    /* as written, for describe() */
	char parent_cid_text[9];
	const char *create_type; /* canonical spelling, static */
	char *parent_hint;	 /* parentFileNameHint as written, or NULL */
	struct vmdk_desc_extent *extents;
	unsigned n_extents;
	uint64_t total_sectors; /* sum of all SECTORS */
	struct vmdk_ddb *ddb;
	unsigned n_ddb;
};

/* Parses len bytes of descriptor text (parsing stops at the first NUL, so an
 * embedded NUL-padded descriptor can be passed whole). path is only used in
 * messages. Fills *out (zeroed first); on failure logs one line naming path,
 * the line number and the problem, frees what it allocated and returns
 * -EINVAL (-ENOMEM on allocation failure). Refused: missing createType or
 * CID, unknown createType or extent type, raw device mappings, no extents or
 * more than VMDK_DESC_MAX_EXTENTS, len > VMDK_DESC_MAX, parentCID without a
 * parentFileNameHint. Caller frees with vmdk_desc_free(). */
int vmdk_desc_parse(const char *text, size_t len, const char *path, struct vmdk_desc *out);

/* Writes d as descriptor text into *out (zeroed first; the caller frees it
 * with vd_buf_free), in the layout VMware writes: header keys (CID and
 * parentCID as 8 hex digits, isNativeSnapshot="no"), extent lines, DDB.
 * vmdk_desc_parse() of the result gives d back. Pure; returns 0, -EINVAL
 * when a field cannot be written (a quote or line break in a string, an
 * empty name, a bad extent or DDB key) or -ENOMEM. */
int vmdk_desc_encode(const struct vmdk_desc *d, struct vd_buf *out);

/* True when v can be written as a quoted descriptor value (no quote, no
 * line break). */
bool vmdk_desc_value_ok(const char *v);

/* The parsed descriptor of a VMDK image (vmdk.c), or NULL when the image
 * has none of its own (a KDMV piece opened alone). Owned by img. */
const struct vmdk_desc *vmdk_image_desc(const struct vd_image *img);

/* Frees everything owned by d (not d itself); safe on a zeroed or half-filled d. */
void vmdk_desc_free(struct vmdk_desc *d);

/* Canonical name of an extent type / access mode, for messages and JSON. */
const char *vmdk_extent_type_name(enum vmdk_extent_type t);
const char *vmdk_access_name(enum vmdk_access a);

/* True when the first len bytes look like the start of a text descriptor:
 * "# Disk DescriptorFile" or a createType= line among the first lines. No I/O. */
bool vmdk_desc_sniff(const uint8_t *head, size_t len);

#endif
