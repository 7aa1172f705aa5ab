/* VMDK text descriptor parser (VMware Virtual Disk Format 5.0, "The Descriptor File").
 *
 * The text is hostile: it is parsed line by line with explicit bounds, never
 * with sscanf or strstr over the whole buffer. Keys and enum words are
 * case-insensitive (VMware says so), CRLF is tolerated, comments and blank
 * lines are skipped. Every extent line keeps its place, whatever its access
 * or type: the disk size is the sum of all SECTORS (QEMU drops RDONLY,
 * NOACCESS and ZERO lines and shifts later extents; we do not copy that).
 * Unknown header keys are ignored; a line that is neither a key=value pair
 * nor an extent is an error, so a garbled descriptor is not half-understood. */
#include "disk/vmdk_desc.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DESC_MAX_TOTAL_SECTORS (1ull << 54) /* 2^63 bytes */

struct create_type {
	const char *name; /* as accepted, case-insensitive */
	const char *canon;
	bool raw; /* raw device mapping / device: refused */
};

static const struct create_type create_types[] = {
    {"monolithicSparse", "monolithicSparse", false},
    {"monolithicFlat", "monolithicFlat", false},
    {"twoGbMaxExtentSparse", "twoGbMaxExtentSparse", false},
    {"2GbMaxExtentSparse", "twoGbMaxExtentSparse", false},
    {"twoGbMaxExtentFlat", "twoGbMaxExtentFlat", false},
    {"2GbMaxExtentFlat", "twoGbMaxExtentFlat", false},
    {"streamOptimized", "streamOptimized", false},
    {"vmfs", "vmfs", false},
    {"vmfsSparse", "vmfsSparse", false},
    {"seSparse", "seSparse", false},
    {"vmfsSeSparse", "seSparse", false},
    {"vmfsThin", "vmfsThin", false},
    {"vmfsPreallocated", "vmfsPreallocated", false},
    {"vmfsEagerZeroedThick", "vmfsEagerZeroedThick", false},
    {"custom", "custom", false},
    {"vmfsRDM", NULL, true},
    {"vmfsRawDeviceMap", NULL, true},
    {"vmfsRDMP", NULL, true},
    {"vmfsPassthroughRawDeviceMap", NULL, true},
    {"vmfsRaw", NULL, true},
    {"fullDevice", NULL, true},
    {"partitionedDevice", NULL, true},
};

static const char *const type_names[] = {
    [VMDK_EXT_FLAT] = "FLAT",
    [VMDK_EXT_SPARSE] = "SPARSE",
    [VMDK_EXT_ZERO] = "ZERO",
    [VMDK_EXT_VMFS] = "VMFS",
    [VMDK_EXT_VMFSSPARSE] = "VMFSSPARSE",
    [VMDK_EXT_SESPARSE] = "SESPARSE",
    [VMDK_EXT_VMFSRDM] = "VMFSRDM",
    [VMDK_EXT_VMFSRAW] = "VMFSRAW",
};

static const char *const access_names[] = {
    [VMDK_ACCESS_RW] = "RW",
    [VMDK_ACCESS_RDONLY] = "RDONLY",
    [VMDK_ACCESS_NOACCESS] = "NOACCESS",
};

const char *vmdk_extent_type_name(enum vmdk_extent_type t)
{
	return (unsigned)t < sizeof(type_names) / sizeof(type_names[0]) ? type_names[t] : "?";
}

const char *vmdk_access_name(enum vmdk_access a)
{
	return (unsigned)a < sizeof(access_names) / sizeof(access_names[0]) ? access_names[a] : "?";
}

struct parser {
	const char *path;
	unsigned line;
	struct vmdk_desc *d;
	unsigned extents_cap;
	unsigned ddb_cap;
	bool ddb_full; /* VMDK_DESC_MAX_DDB reached (warned once) */
};

static int perr(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(struct parser *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->line)
		vd_log_err("vmdk: %s: descriptor line %u: %s", p->path, p->line, msg);
	else
		vd_log_err("vmdk: %s: descriptor: %s", p->path, msg);
	return -EINVAL;
}

/* A [s, e) slice of the text. */
struct span {
	const char *s, *e;
};

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static struct span span_trim(struct span v)
{
	while (v.s < v.e && (is_blank(*v.s) || *v.s == '\r'))
		v.s++;
	while (v.e > v.s && (is_blank(v.e[-1]) || v.e[-1] == '\r'))
		v.e--;
	return v;
}

static bool span_eq(struct span v, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(v.e - v.s) == n && strncasecmp(v.s, word, n) == 0;
}

static char *span_dup(struct span v)
{
	return strndup(v.s, (size_t)(v.e - v.s));
}

/* Cuts the next whitespace-separated word off *v. */
static struct span span_word(struct span *v)
{
	struct span w;

	*v = span_trim(*v);
	w.s = v->s;
	while (v->s < v->e && !is_blank(*v->s))
		v->s++;
	w.e = v->s;
	return w;
}

/* Unquotes a value in place if it starts with a quote; an opening quote without
 * its closing one, or text after the closing quote, is an error. */
static int value_unquote(struct parser *p, struct span *v, const char *what)
{
	const char *q;

	if (v->s == v->e || *v->s != '"')
		return 0;
	q = memchr(v->s + 1, '"', (size_t)(v->e - v->s - 1));
	if (!q)
		return perr(p, "unterminated quote in %s", what);
	if (q + 1 != v->e)
		return perr(p, "unexpected text after the quoted %s", what);
	v->s++;
	v->e = q;
	return 0;
}

static int parse_u64(struct span v, uint64_t *out)
{
	uint64_t r = 0;

	if (v.s == v.e)
		return -EINVAL;
	for (const char *c = v.s; c < v.e; c++) {
		if (!isdigit((unsigned char)*c) || vd_mul_ovf(r, 10, &r) ||
		    vd_add_ovf(r, (uint64_t)(*c - '0'), &r))
			return -EINVAL;
	}
	*out = r;
	return 0;
}

static int parse_cid(struct parser *p, struct span v, const char *key, uint32_t *out, char text[9])
{
	uint32_t r = 0;

	if (v.s == v.e || v.e - v.s > 8)
		return perr(p, "%s must be 1 to 8 hex digits", key);
	for (const char *c = v.s; c < v.e; c++) {
		if (!isxdigit((unsigned char)*c))
			return perr(p, "%s must be 1 to 8 hex digits", key);
		r = r << 4 |
		    (uint32_t)(isdigit((unsigned char)*c) ? *c - '0'
							  : tolower((unsigned char)*c) - 'a' + 10);
	}
	memcpy(text, v.s, (size_t)(v.e - v.s));
	text[v.e - v.s] = '\0';
	*out = r;
	return 0;
}

static int parse_create_type(struct parser *p, struct span v)
{
	for (size_t i = 0; i < sizeof(create_types) / sizeof(create_types[0]); i++) {
		if (!span_eq(v, create_types[i].name))
			continue;
		if (create_types[i].raw)
			return perr(p, "createType \"%.*s\": raw device mappings are not supported",
				    (int)(v.e - v.s), v.s);
		p->d->create_type = create_types[i].canon;
		return 0;
	}
	return perr(p, "unknown createType \"%.*s\"", (int)(v.e - v.s > 64 ? 64 : v.e - v.s), v.s);
}

/* Keeps every ddb.* entry for describe() (chain.json shows the whole DDB). A
 * key given again replaces its value, compared case-insensitively as VMware
 * does, so the JSON object has each key once. The count is capped: a 1 MiB
 * descriptor could otherwise hold 100,000 entries, and the duplicate search
 * is linear. */
static int ddb_keep(struct parser *p, struct span key, struct span val)
{
	struct vmdk_desc *d = p->d;
	char *k, *v;

	for (unsigned i = 0; i < d->n_ddb; i++) {
		if (!span_eq(key, d->ddb[i].key))
			continue;
		v = span_dup(val);
		if (!v)
			return -ENOMEM;
		free(d->ddb[i].value);
		d->ddb[i].value = v;
		return 0;
	}
	if (d->n_ddb == VMDK_DESC_MAX_DDB) {
		if (!p->ddb_full)
			vd_log_warn("vmdk: %s: descriptor line %u: more than %u ddb entries; the "
				    "rest are not kept",
				    p->path, p->line, VMDK_DESC_MAX_DDB);
		p->ddb_full = true;
		return 0;
	}
	if (d->n_ddb == p->ddb_cap) {
		unsigned cap = p->ddb_cap ? 2 * p->ddb_cap : 16;
		struct vmdk_ddb *nd = realloc(d->ddb, cap * sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		d->ddb = nd;
		p->ddb_cap = cap;
	}
	k = span_dup(key);
	v = span_dup(val);
	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	d->ddb[d->n_ddb].key = k;
	d->ddb[d->n_ddb].value = v;
	d->n_ddb++;
	return 0;
}

static int parse_keyval(struct parser *p, struct span line, const char *eq, unsigned *seen)
{
	struct vmdk_desc *d = p->d;
	struct span key = span_trim((struct span){line.s, eq});
	struct span val = span_trim((struct span){eq + 1, line.e});
	static const char *const once[] = {"version",	"encoding",   "CID",
					   "parentCID", "createType", "parentFileNameHint"};
	uint64_t v;
	int r;

	r = value_unquote(p, &val, "value");
	if (r < 0)
		return r;
	if (key.e - key.s > 4 && strncasecmp(key.s, "ddb.", 4) == 0)
		return ddb_keep(p, (struct span){key.s + 4, key.e}, val);
	for (unsigned i = 0; i < sizeof(once) / sizeof(once[0]); i++) {
		if (!span_eq(key, once[i]))
			continue;
		if (*seen & (1u << i))
			return perr(p, "duplicate %s", once[i]);
		*seen |= 1u << i;
	}
	if (span_eq(key, "version")) {
		if (parse_u64(val, &v) < 0 || v < 1 || v > 3)
			return perr(p, "unsupported descriptor version \"%.*s\"",
				    (int)(val.e - val.s > 32 ? 32 : val.e - val.s), val.s);
		d->version = (unsigned)v;
	} else if (span_eq(key, "encoding")) {
		d->encoding = span_dup(val);
		if (!d->encoding)
			return -ENOMEM;
	} else if (span_eq(key, "CID")) {
		return parse_cid(p, val, "CID", &d->cid, d->cid_text);
	} else if (span_eq(key, "parentCID")) {
		return parse_cid(p, val, "parentCID", &d->parent_cid, d->parent_cid_text);
	} else if (span_eq(key, "createType")) {
		return parse_create_type(p, val);
	} else if (span_eq(key, "parentFileNameHint")) {
		if (val.s == val.e)
			return perr(p, "empty parentFileNameHint");
		d->parent_hint = span_dup(val);
		if (!d->parent_hint)
			return -ENOMEM;
	}
	return 0;
}

static int extent_type_parse(struct parser *p, struct span w, enum vmdk_extent_type *out)
{
	for (unsigned i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
		if (!span_eq(w, type_names[i]))
			continue;
		if (i == VMDK_EXT_VMFSRDM || i == VMDK_EXT_VMFSRAW)
			return perr(p, "%s extent: raw device mappings are not supported",
				    type_names[i]);
		*out = (enum vmdk_extent_type)i;
		return 0;
	}
	return perr(p, "unknown extent type \"%.*s\"", (int)(w.e - w.s > 32 ? 32 : w.e - w.s), w.s);
}

static int extent_push(struct parser *p, struct vmdk_desc_extent *x)
{
	struct vmdk_desc *d = p->d;

	if (d->n_extents >= VMDK_DESC_MAX_EXTENTS)
		return perr(p, "more than %u extents", VMDK_DESC_MAX_EXTENTS);
	if (d->n_extents == p->extents_cap) {
		unsigned cap = p->extents_cap ? p->extents_cap * 2 : 8;
		struct vmdk_desc_extent *n = realloc(d->extents, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		d->extents = n;
		p->extents_cap = cap;
	}
	d->extents[d->n_extents++] = *x;
	return 0;
}

/* ACCESS SECTORS TYPE ["FILENAME" [OFFSET]] */
static int parse_extent(struct parser *p, struct span rest, enum vmdk_access access)
{
	struct vmdk_desc_extent x = {.access = access, .line = p->line};
	struct span w;
	int r;

	w = span_word(&rest);
	if (parse_u64(w, &x.sectors) < 0 || x.sectors == 0)
		return perr(p, "extent SECTORS must be a positive decimal number");
	if (vd_add_ovf(p->d->total_sectors, x.sectors, &p->d->total_sectors) ||
	    p->d->total_sectors > DESC_MAX_TOTAL_SECTORS)
		return perr(p, "extents add up to more than 2^63 bytes");
	w = span_word(&rest);
	if (w.s == w.e)
		return perr(p, "extent line without a type");
	r = extent_type_parse(p, w, &x.type);
	if (r < 0)
		return r;
	rest = span_trim(rest);
	if (rest.s < rest.e) {
		const char *q;

		if (*rest.s != '"')
			return perr(p, "extent file name must be quoted");
		q = memchr(rest.s + 1, '"', (size_t)(rest.e - rest.s - 1));
		if (!q)
			return perr(p, "unterminated quote in extent file name");
		if (q == rest.s + 1)
			return perr(p, "empty extent file name");
		if (x.type != VMDK_EXT_ZERO) {
			x.name = span_dup((struct span){rest.s + 1, q});
			if (!x.name)
				return -ENOMEM;
		}
		rest.s = q + 1;
		if (rest.s < rest.e && !is_blank(*rest.s)) {
			r = perr(p, "unexpected text after the extent file name");
			goto fail;
		}
		w = span_word(&rest);
		if (w.s < w.e) {
			if (x.type != VMDK_EXT_FLAT && x.type != VMDK_EXT_VMFS) {
				r = perr(p, "an OFFSET is only allowed on FLAT and VMFS extents");
				goto fail;
			}
			if (parse_u64(w, &x.offset) < 0 || x.offset > DESC_MAX_TOTAL_SECTORS) {
				r = perr(p, "extent OFFSET must be a decimal sector number");
				goto fail;
			}
		}
		if (span_trim(rest).s < rest.e) {
			r = perr(p, "unexpected text at the end of the extent line");
			goto fail;
		}
	}
	if (x.type != VMDK_EXT_ZERO && !x.name)
		return perr(p, "%s extent without a file name", type_names[x.type]);
	r = extent_push(p, &x);
	if (r < 0)
		goto fail;
	return 0;
fail:
	free(x.name);
	return r;
}

static int parse_line(struct parser *p, struct span line, unsigned *seen)
{
	struct span rest = line, w;
	const char *eq;
	static const enum vmdk_access acc[] = {VMDK_ACCESS_RW, VMDK_ACCESS_RDONLY,
					       VMDK_ACCESS_NOACCESS};

	line = span_trim(line);
	if (line.s == line.e || *line.s == '#')
		return 0;
	rest = line;
	w = span_word(&rest);
	for (unsigned i = 0; i < 3; i++)
		if (rest.s < rest.e && span_eq(w, access_names[acc[i]]))
			return parse_extent(p, rest, acc[i]);
	eq = memchr(line.s, '=', (size_t)(line.e - line.s));
	if (!eq || eq == line.s)
		return perr(p, "neither a key=value pair nor an extent line");
	return parse_keyval(p, line, eq, seen);
}

static int desc_check(struct parser *p)
{
	struct vmdk_desc *d = p->d;

	p->line = 0;
	if (!d->create_type)
		return perr(p, "no createType");
	if (!d->cid_text[0])
		return perr(p, "no CID");
	if (d->n_extents == 0)
		return perr(p, "no extent lines");
	if (d->parent_cid != VMDK_CID_NONE && !d->parent_hint)
		return perr(p, "parentCID %s but no parentFileNameHint", d->parent_cid_text);
	return 0;
}

int vmdk_desc_parse(const char *text, size_t len, const char *path, struct vmdk_desc *out)
{
	struct parser p = {.path = path, .d = out};
	const char *s, *end;
	unsigned seen = 0;
	int r;

	memset(out, 0, sizeof(*out));
	out->parent_cid = VMDK_CID_NONE;
	snprintf(out->parent_cid_text, sizeof(out->parent_cid_text), "ffffffff");
	out->version = 1;
	if (len > VMDK_DESC_MAX) {
		r = perr(&p, "larger than %u bytes", VMDK_DESC_MAX);
		goto fail;
	}
	end = text + strnlen(text, len);
	for (s = text; s < end;) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *e = nl ? nl : end;

		p.line++;
		r = parse_line(&p, (struct span){s, e}, &seen);
		if (r < 0) {
			if (r == -ENOMEM)
				vd_log_err("vmdk: %s: out of memory parsing the descriptor", path);
			goto fail;
		}
		s = nl ? nl + 1 : end;
	}
	r = desc_check(&p);
	if (r < 0)
		goto fail;
	return 0;
fail:
	vmdk_desc_free(out);
	return r;
}

void vmdk_desc_free(struct vmdk_desc *d)
{
	for (unsigned i = 0; i < d->n_extents; i++)
		free(d->extents[i].name);
	free(d->extents);
	for (unsigned i = 0; i < d->n_ddb; i++) {
		free(d->ddb[i].key);
		free(d->ddb[i].value);
	}
	free(d->ddb);
	free(d->encoding);
	free(d->parent_hint);
	memset(d, 0, sizeof(*d));
}

bool vmdk_desc_value_ok(const char *v)
{
	for (; *v; v++)
		if (*v == '"' || *v == '\n' || *v == '\r')
			return false;
	return true;
}

static bool ddb_key_ok(const char *k)
{
	if (!*k)
		return false;
	for (; *k; k++)
		if (!isalnum((unsigned char)*k) && *k != '.' && *k != '_')
			return false;
	return true;
}

int vmdk_desc_encode(const struct vmdk_desc *d, struct vd_buf *out)
{
	struct vd_buf b = {0};

	if (!d->create_type || (d->encoding && !vmdk_desc_value_ok(d->encoding)) ||
	    (d->parent_hint && (!*d->parent_hint || !vmdk_desc_value_ok(d->parent_hint))) ||
	    d->n_extents == 0)
		return -EINVAL;
	vd_buf_printf(&b, "# Disk DescriptorFile\nversion=%u\n", d->version);
	if (d->encoding)
		vd_buf_printf(&b, "encoding=\"%s\"\n", d->encoding);
	/* CID before parentCID: QEMU finds both with strstr(). Eight digits, so
	 * that a tool updating the CID in place never moves the text. */
	vd_buf_printf(&b, "CID=%08" PRIx32 "\nparentCID=%08" PRIx32 "\n", d->cid, d->parent_cid);
	vd_buf_printf(&b, "isNativeSnapshot=\"no\"\ncreateType=\"%s\"\n", d->create_type);
	if (d->parent_hint)
		vd_buf_printf(&b, "parentFileNameHint=\"%s\"\n", d->parent_hint);
	/* Never a blank line right before an extent line: QEMU's sscanf()
	 * skips it and reads that extent twice. */
	vd_buf_printf(&b, "\n# Extent description\n");
	for (unsigned i = 0; i < d->n_extents; i++) {
		const struct vmdk_desc_extent *x = &d->extents[i];

		if (x->sectors == 0 || (unsigned)x->access >= 3 ||
		    (unsigned)x->type >= sizeof(type_names) / sizeof(type_names[0]) ||
		    x->type == VMDK_EXT_VMFSRDM || x->type == VMDK_EXT_VMFSRAW ||
		    (x->type == VMDK_EXT_ZERO) != !x->name ||
		    (x->name && (!*x->name || !vmdk_desc_value_ok(x->name))) ||
		    (x->offset && x->type != VMDK_EXT_FLAT && x->type != VMDK_EXT_VMFS))
			goto bad;
		vd_buf_printf(&b, "%s %" PRIu64 " %s", access_names[x->access], x->sectors,
			      type_names[x->type]);
		if (x->name)
			vd_buf_printf(&b, " \"%s\"", x->name);
		if (x->offset)
			vd_buf_printf(&b, " %" PRIu64, x->offset);
		vd_buf_printf(&b, "\n");
	}
	vd_buf_printf(&b, "\n# The Disk Data Base\n#DDB\n\n");
	for (unsigned i = 0; i < d->n_ddb; i++) {
		if (!ddb_key_ok(d->ddb[i].key) || !vmdk_desc_value_ok(d->ddb[i].value))
			goto bad;
		vd_buf_printf(&b, "ddb.%s = \"%s\"\n", d->ddb[i].key, d->ddb[i].value);
	}
	if (b.oom) {
		vd_buf_free(&b);
		return -ENOMEM;
	}
	*out = b;
	return 0;
bad:
	vd_buf_free(&b);
	return -EINVAL;
}

static bool line_starts(const char *s, const char *e, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(e - s) >= n && strncasecmp(s, word, n) == 0;
}

bool vmdk_desc_sniff(const uint8_t *head, size_t len)
{
	const char *s = (const char *)head;
	const char *end = s + strnlen(s, len < 4096 ? len : 4096);

	for (unsigned n = 0; s < end && n < 32; n++) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *e = nl ? nl : end;

		while (s < e && is_blank(*s))
			s++;
		if (line_starts(s, e, "# Disk DescriptorFile"))
			return true;
		if (line_starts(s, e, "createType")) {
			s += strlen("createType");
			while (s < e && is_blank(*s))
				s++;
			if (s < e && *s == '=')
				return true;
		}
		s = nl ? nl + 1 : end;
	}
	return false;
}
