/* .vmx and .vmsd parsing (pure). Both files are first split into key/value
 * pairs (dict_parse), then read by name. Snapshot entries are collected by
 * their snapshotN index into a sparse table of at most VD_VMSD_MAX_SNAPSHOTS
 * slots, compacted at the end; every index and count is bounded before use. */
#include "chain/vmx.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct kv {
	char *key, *value;
};

struct dict {
	struct kv *kv;
	unsigned n, cap;
};

static void dict_free(struct dict *d)
{
	for (unsigned i = 0; i < d->n; i++) {
		free(d->kv[i].key);
		free(d->kv[i].value);
	}
	free(d->kv);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A copy of [p, p+n) with surrounding quotes removed and |XX escapes decoded. */
static char *value_dup(const char *p, size_t n)
{
	char *out, *o;

	if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
		p++;
		n -= 2;
	}
	out = o = malloc(n + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int h, l;
		/* "|22" is '"'; "|00" would end the string early: kept as text. */
		if (p[i] == '|' && i + 2 < n && (h = hexval(p[i + 1])) >= 0 &&
		    (l = hexval(p[i + 2])) >= 0 && (h || l)) {
			*o++ = (char)(h << 4 | l);
			i += 2;
		} else {
			*o++ = p[i];
		}
	}
	*o = 0;
	return out;
}

static int dict_parse(const char *text, size_t len, struct dict *d, const char **why)
{
	const char *p = text, *end = text + len;

	memset(d, 0, sizeof(*d));
	if (len > VD_VMX_MAX_TEXT) {
		*why = "file larger than 1 MiB";
		return -EINVAL;
	}
	if (memchr(text, 0, len)) {
		*why = "NUL byte in a text file";
		return -EINVAL;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end, *eq, *ks, *ke, *vs, *ve;

		ks = p;
		p = nl ? nl + 1 : end;
		while (ks < le && isspace((unsigned char)*ks))
			ks++;
		ve = le;
		while (ve > ks && isspace((unsigned char)ve[-1]))
			ve--;
		if (ks == ve || *ks == '#')
			continue;
		eq = memchr(ks, '=', (size_t)(ve - ks));
		if (!eq)
			continue; /* VMware ignores lines it cannot read; so do we */
		ke = eq;
		while (ke > ks && isspace((unsigned char)ke[-1]))
			ke--;
		vs = eq + 1;
		while (vs < ve && isspace((unsigned char)*vs))
			vs++;
		if (ke == ks)
			continue;
		if (d->n == d->cap) {
			unsigned cap = d->cap ? 2 * d->cap : 64;
			struct kv *nk = realloc(d->kv, cap * sizeof(*nk));
			if (!nk)
				return -ENOMEM;
			d->kv = nk;
			d->cap = cap;
		}
		d->kv[d->n].key = strndup(ks, (size_t)(ke - ks));
		d->kv[d->n].value = value_dup(vs, (size_t)(ve - vs));
		d->n++;
		if (!d->kv[d->n - 1].key || !d->kv[d->n - 1].value)
			return -ENOMEM;
	}
	return 0;
}

/* The last value of key (VMware lets a later line override), or NULL. */
static const char *dict_get(const struct dict *d, const char *key)
{
	for (unsigned i = d->n; i-- > 0;)
		if (!strcasecmp(d->kv[i].key, key))
			return d->kv[i].value;
	return NULL;
}

/* Parses a decimal index in [0, max) at *p, advancing it. */
static bool index_parse(const char **p, unsigned max, unsigned *out)
{
	unsigned v = 0;
	const char *s = *p;

	if (!isdigit((unsigned char)*s))
		return false;
	while (isdigit((unsigned char)*s)) {
		v = v * 10 + (unsigned)(*s++ - '0');
		if (v >= max)
			return false;
	}
	*p = s;
	*out = v;
	return true;
}

static bool u32_parse(const char *s, uint32_t *out)
{
	char *e;
	unsigned long v;

	if (!s || !isdigit((unsigned char)*s))
		return false;
	v = strtoul(s, &e, 10);
	if (*e || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool is_true(const char *v)
{
	return v && (!strcasecmp(v, "TRUE") || !strcasecmp(v, "yes") || !strcmp(v, "1"));
}

/* "scsi0:0" style device nodes: a bus name, digits, ':', digits. */
static bool node_ok(const char *k, size_t n)
{
	static const char *const buses[] = {"scsi", "sata", "ide", "nvme"};

	for (unsigned b = 0; b < 4; b++) {
		size_t bl = strlen(buses[b]);
		const char *p = k + bl, *e = k + n;
		if (n <= bl || strncasecmp(k, buses[b], bl))
			continue;
		if (p == e || !isdigit((unsigned char)*p))
			return false;
		while (p < e && isdigit((unsigned char)*p))
			p++;
		if (p == e || *p++ != ':' || p == e)
			return false;
		while (p < e && isdigit((unsigned char)*p))
			p++;
		return p == e;
	}
	return false;
}

static int disk_add(struct vd_vm_disk **v, unsigned *n, const char *node, size_t node_len,
		    const char *file)
{
	struct vd_vm_disk *nv = realloc(*v, (*n + 1) * sizeof(*nv));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n].node = strndup(node, node_len);
	nv[*n].file = strdup(file);
	(*n)++;
	return nv[*n - 1].node && nv[*n - 1].file ? 0 : -ENOMEM;
}

int vd_vmx_parse(const char *text, size_t len, struct vd_vmx *out, const char **why)
{
	struct dict d;
	int r;

	memset(out, 0, sizeof(*out));
	r = dict_parse(text, len, &d, why);
	for (unsigned i = 0; r == 0 && i < d.n; i++) {
		const char *k = d.kv[i].key, *dot = strchr(k, '.');
		char key[96];
		size_t nl;

		if (!dot || strcasecmp(dot, ".fileName") || !node_ok(k, (size_t)(dot - k)))
			continue;
		nl = (size_t)(dot - k);
		if (nl + 16 > sizeof(key))
			continue;
		/* Not a hard disk: a CD-ROM image or a device that is not present. */
		snprintf(key, sizeof(key), "%.*s.deviceType", (int)nl, k);
		const char *type = dict_get(&d, key);
		if (type && strncasecmp(type, "scsi-hardDisk", 13) &&
		    strncasecmp(type, "disk", 4) && strncasecmp(type, "ata-hardDisk", 12))
			continue;
		snprintf(key, sizeof(key), "%.*s.present", (int)nl, k);
		if (!is_true(dict_get(&d, key)))
			continue;
		r = disk_add(&out->disks, &out->n_disks, k, nl, d.kv[i].value);
	}
	if (r == 0 && !out->n_disks) {
		*why = "no present hard disk (no <bus>N:M.fileName with <bus>N:M.present = TRUE)";
		r = -EINVAL;
	}
	if (r == 0) {
		const char *v = dict_get(&d, "displayName");
		if (v && !(out->display_name = strdup(v)))
			r = -ENOMEM;
		v = dict_get(&d, "snapshot.fileName");
		if (r == 0 && v && !(out->vmsd = strdup(v)))
			r = -ENOMEM;
	}
	dict_free(&d);
	return r;
}

static void disks_free(struct vd_vm_disk *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		free(v[i].node);
		free(v[i].file);
	}
	free(v);
}

void vd_vmx_free(struct vd_vmx *v)
{
	disks_free(v->disks, v->n_disks);
	free(v->display_name);
	free(v->vmsd);
	memset(v, 0, sizeof(*v));
}

/* One snapshotN.<field> or snapshotN.diskM.<field> line into slot N. */
struct slot {
	struct vd_snapshot s;
	char *dfile[VD_VMSD_MAX_DISKS], *dnode[VD_VMSD_MAX_DISKS];
	uint32_t high, low;
	bool has_uid;
};

static int slot_set(struct slot *sl, const char *field, const char *v, const char **why)
{
	const char *f = field;
	unsigned m;

	if (!strncasecmp(f, "disk", 4)) {
		f += 4;
		if (!index_parse(&f, VD_VMSD_MAX_DISKS, &m) || *f != '.')
			return 0; /* numDisks and unknown keys */
		f++;
		char **dst = !strcasecmp(f, "fileName") ? &sl->dfile[m]
			     : !strcasecmp(f, "node")	? &sl->dnode[m]
							: NULL;
		if (!dst)
			return 0;
		free(*dst);
		*dst = strdup(v);
		return *dst ? 0 : -ENOMEM;
	}
	if (!strcasecmp(f, "uid")) {
		if (!u32_parse(v, &sl->s.uid) || !sl->s.uid) {
			*why = "snapshot uid is not a positive number";
			return -EINVAL;
		}
		sl->has_uid = true;
	} else if (!strcasecmp(f, "parent")) {
		if (!u32_parse(v, &sl->s.parent)) {
			*why = "snapshot parent is not a number";
			return -EINVAL;
		}
	} else if (!strcasecmp(f, "displayName")) {
		free(sl->s.name);
		if (!(sl->s.name = strdup(v)))
			return -ENOMEM;
	} else if (!strcasecmp(f, "description")) {
		free(sl->s.description);
		if (!(sl->s.description = strdup(v)))
			return -ENOMEM;
	} else if (!strcasecmp(f, "createTimeHigh") || !strcasecmp(f, "createTimeLow")) {
		/* Written as signed 32-bit decimals. */
		char *e;
		long long x = strtoll(v, &e, 10);
		if (*e || x < INT32_MIN || x > UINT32_MAX) {
			*why = "snapshot create time is not a 32-bit number";
			return -EINVAL;
		}
		*(strcasecmp(f, "createTimeHigh") ? &sl->low : &sl->high) = (uint32_t)x;
	}
	return 0;
}

static void slot_free(struct slot *sl)
{
	for (unsigned m = 0; m < VD_VMSD_MAX_DISKS; m++) {
		free(sl->dfile[m]);
		free(sl->dnode[m]);
	}
}

/* Moves slot's fields into its snapshot (disks in diskM order). */
static int slot_finish(struct slot *sl, const char **why)
{
	int r = 0;

	if (!sl->has_uid) {
		*why = "snapshot entry without a uid";
		return -EINVAL;
	}
	if (!sl->s.name && !(sl->s.name = strdup("")))
		return -ENOMEM;
	sl->s.create_us = (int64_t)((uint64_t)sl->high << 32 | sl->low);
	for (unsigned m = 0; m < VD_VMSD_MAX_DISKS && r == 0; m++)
		if (sl->dfile[m])
			r = disk_add(&sl->s.disks, &sl->s.n_disks, sl->dnode[m] ? sl->dnode[m] : "",
				     sl->dnode[m] ? strlen(sl->dnode[m]) : 0, sl->dfile[m]);
	return r;
}

static void snap_free(struct vd_snapshot *s)
{
	free(s->name);
	free(s->description);
	disks_free(s->disks, s->n_disks);
}

/* uids unique, parents and current exist, no parent cycle. */
static int vmsd_validate(const struct vd_vmsd *s, const char **why)
{
	for (unsigned i = 0; i < s->n; i++) {
		const struct vd_snapshot *p = &s->snaps[i];
		unsigned steps = 0;

		for (unsigned k = 0; k < i; k++)
			if (s->snaps[k].uid == p->uid) {
				*why = "two snapshots have the same uid";
				return -EINVAL;
			}
		while (p->parent) {
			p = vd_vmsd_find(s, p->parent);
			if (!p) {
				*why = "a snapshot's parent uid names no snapshot";
				return -EINVAL;
			}
			if (++steps > s->n) {
				*why = "snapshot parents form a cycle";
				return -EINVAL;
			}
		}
	}
	if (s->current && !vd_vmsd_find(s, s->current)) {
		*why = "snapshot.current names no snapshot";
		return -EINVAL;
	}
	return 0;
}

int vd_vmsd_parse(const char *text, size_t len, struct vd_vmsd *out, const char **why)
{
	/* A slot (4 KiB: its disks' names) exists only for an index the file
	 * uses: the memory follows the file, not VD_VMSD_MAX_SNAPSHOTS. */
	struct slot **slots = NULL;
	struct dict d;
	unsigned top = 0;
	int r;

	memset(out, 0, sizeof(*out));
	r = dict_parse(text, len, &d, why);
	if (r == 0 && !(slots = calloc(VD_VMSD_MAX_SNAPSHOTS, sizeof(*slots))))
		r = -ENOMEM;
	for (unsigned i = 0; r == 0 && i < d.n; i++) {
		const char *k = d.kv[i].key;
		unsigned idx;

		if (!strcasecmp(k, "snapshot.current")) {
			if (!u32_parse(d.kv[i].value, &out->current)) {
				*why = "snapshot.current is not a number";
				r = -EINVAL;
			}
			continue;
		}
		if (strncasecmp(k, "snapshot", 8))
			continue;
		k += 8;
		if (!index_parse(&k, VD_VMSD_MAX_SNAPSHOTS, &idx) || *k != '.')
			continue; /* snapshot.lastUID, snapshot.numSnapshots, ... */
		if (!slots[idx] && !(slots[idx] = calloc(1, sizeof(**slots)))) {
			r = -ENOMEM;
			break;
		}
		if (idx + 1 > top)
			top = idx + 1;
		r = slot_set(slots[idx], k + 1, d.kv[i].value, why);
	}
	if (r == 0 && top && !(out->snaps = calloc(top, sizeof(*out->snaps))))
		r = -ENOMEM;
	for (unsigned i = 0; r == 0 && i < top; i++) {
		if (!slots[i])
			continue;
		r = slot_finish(slots[i], why);
		out->snaps[out->n++] = slots[i]->s;
		memset(&slots[i]->s, 0, sizeof(slots[i]->s));
	}
	if (r == 0)
		r = vmsd_validate(out, why);
	for (unsigned i = 0; slots && i < top; i++) {
		if (!slots[i])
			continue;
		slot_free(slots[i]);
		snap_free(&slots[i]->s);
		free(slots[i]);
	}
	free(slots);
	dict_free(&d);
	return r;
}

void vd_vmsd_free(struct vd_vmsd *s)
{
	for (unsigned i = 0; i < s->n; i++)
		snap_free(&s->snaps[i]);
	free(s->snaps);
	memset(s, 0, sizeof(*s));
}

const struct vd_snapshot *vd_vmsd_find(const struct vd_vmsd *s, uint32_t uid)
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->snaps[i].uid == uid)
			return &s->snaps[i];
	return NULL;
}

static const char *base_name(const char *p)
{
	const char *b = p;

	for (; *p; p++)
		if (*p == '/' || *p == '\\')
			b = p + 1;
	return b;
}

const struct vd_snapshot *vd_vmsd_froze(const struct vd_vmsd *s, const char *node, const char *base)
{
	for (unsigned i = 0; i < s->n; i++)
		for (unsigned k = 0; k < s->snaps[i].n_disks; k++) {
			const struct vd_vm_disk *dk = &s->snaps[i].disks[k];
			if ((!node || !dk->node[0] || !strcasecmp(dk->node, node)) &&
			    !strcmp(base_name(dk->file), base))
				return &s->snaps[i];
		}
	return NULL;
}
