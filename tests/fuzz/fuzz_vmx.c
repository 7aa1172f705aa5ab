/* Harness: the VMware .vmx and .vmsd parsers (chain/vmx.c). Input: text,
 * parsed as both. What callers rely on after a successful parse is checked:
 * a .vmx has disks with a node and a file; a .vmsd's uids are unique and
 * non-zero, every parent and the current snapshot exist, parents form no
 * cycle, and the lookups find what the lists hold. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chain/vmx.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *base(const char *p)
{
	const char *s = strrchr(p, '/'), *b = strrchr(p, '\\');

	if (b && (!s || b > s))
		s = b;
	return s ? s + 1 : p;
}

static void vmx_check(const char *text, size_t len)
{
	struct vd_vmx v;
	const char *why = NULL;
	int r = vd_vmx_parse(text, len, &v, &why);

	if (r < 0) {
		fz_check_ret(r, "vd_vmx_parse");
		if (r == -EINVAL && !why)
			fz_fail("vmx: refused without a reason");
		vd_vmx_free(&v);
		return;
	}
	fz_exercised++;
	if (v.n_disks == 0 || !v.disks)
		fz_fail("vmx: accepted without a disk");
	for (unsigned i = 0; i < v.n_disks; i++)
		if (!v.disks[i].node || !v.disks[i].file || !v.disks[i].node[0])
			fz_fail("vmx: disk %u has no node or file", i);
	vd_vmx_free(&v);
}

static void vmsd_check(const char *text, size_t len)
{
	struct vd_vmsd s;
	const char *why = NULL;
	int r = vd_vmsd_parse(text, len, &s, &why);

	if (r < 0) {
		fz_check_ret(r, "vd_vmsd_parse");
		if (r == -EINVAL && !why)
			fz_fail("vmsd: refused without a reason");
		vd_vmsd_free(&s);
		return;
	}
	fz_exercised++;
	if (s.current && !vd_vmsd_find(&s, s.current))
		fz_fail("vmsd: current snapshot %u does not exist", s.current);
	for (unsigned i = 0; i < s.n; i++) {
		const struct vd_snapshot *p = &s.snaps[i];
		unsigned steps = 0;

		if (p->uid == 0 || vd_vmsd_find(&s, p->uid) != p || !p->name)
			fz_fail("vmsd: snapshot %u (uid %u) not found by its uid or unnamed", i,
				p->uid);
		/* following parents ends at a root within n steps */
		for (const struct vd_snapshot *q = p; q->parent; steps++) {
			q = vd_vmsd_find(&s, q->parent);
			if (!q)
				fz_fail("vmsd: snapshot uid %u has a missing parent", p->uid);
			if (steps > s.n)
				fz_fail("vmsd: a parent cycle through uid %u", p->uid);
		}
		for (unsigned k = 0; k < p->n_disks; k++) {
			const struct vd_snapshot *f;

			if (!p->disks[k].node || !p->disks[k].file)
				fz_fail("vmsd: snapshot uid %u disk %u has no node or file", p->uid,
					k);
			f = vd_vmsd_froze(&s, p->disks[k].node, base(p->disks[k].file));
			if (!f)
				fz_fail("vmsd: the disk %s of uid %u is not found by vd_vmsd_froze",
					p->disks[k].file, p->uid);
		}
	}
	vd_vmsd_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;

	fz_init();
	/* an exact-size copy without a terminating NUL: the parsers take a
	 * length, and ASan sees any read past it */
	text = malloc(size ? size : 1);
	if (!text)
		fz_fail("out of memory");
	memcpy(text, data, size);
	vmx_check(text, size);
	vmsd_check(text, size);
	free(text);
	return 0;
}
