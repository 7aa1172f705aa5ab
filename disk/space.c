/* File-space accounting shared by the metadata checks. Spans are sorted by
 * start; one pass finds overlaps (each span against the furthest-reaching
 * span before it) and the gaps of the union inside [from, to). */
#include "disk/space.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#define REPORTS_MAX 10 /* overlap lines printed before summarising */

int vd_space_add(struct vd_space *s, uint8_t kind, uint32_t idx, uint64_t start, uint64_t len)
{
	if (s->too_many)
		return 0;
	if (s->n == VD_SPACE_MAX) {
		s->too_many = true;
		return 0;
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 256;
		struct vd_span *ns = realloc(s->spans, cap * sizeof(*ns));
		if (!ns)
			return -ENOMEM;
		s->spans = ns;
		s->cap = cap;
	}
	s->spans[s->n++] = (struct vd_span){start, (uint32_t)len, idx, kind};
	return 0;
}

static int span_cmp(const void *a, const void *b)
{
	const struct vd_span *x = a, *y = b;

	if (x->start != y->start)
		return (x->start > y->start) - (x->start < y->start);
	return (x->kind > y->kind) - (x->kind < y->kind);
}

int vd_space_check(struct vd_space *s, uint64_t from, uint64_t to, uint64_t min_gap,
		   struct vd_check *chk, const char *path)
{
	const struct vd_span *far = NULL; /* the span reaching furthest so far */
	uint64_t covered = from, leaked = 0, overlaps = 0;

	if (s->too_many) {
		vd_log_warn("%s: more than %u allocations: overlap and leak checks skipped", path,
			    VD_SPACE_MAX);
		vd_space_free(s);
		return 0;
	}
	if (s->n > 1)
		qsort(s->spans, s->n, sizeof(*s->spans), span_cmp);
	for (size_t i = 0; i < s->n; i++) {
		const struct vd_span *p = &s->spans[i];
		uint64_t end = p->start + p->len;

		if (far && p->start < far->start + far->len) {
			if (++overlaps <= REPORTS_MAX)
				vd_check_report(chk, path,
						"%s %" PRIu32 " (at byte %" PRIu64
						") overlaps %s %" PRIu32 " (at byte %" PRIu64 ")%s",
						s->kinds[p->kind], p->idx, p->start,
						s->kinds[far->kind], far->idx, far->start,
						p->kind == far->kind ? ": space used twice" : "");
		}
		if (!far || end > far->start + far->len)
			far = p;
		if (p->start > covered && covered < to &&
		    vd_min_u64(p->start, to) - covered >= min_gap)
			leaked += vd_min_u64(p->start, to) - covered;
		if (end > covered)
			covered = end;
	}
	if (covered < to && to - covered >= min_gap)
		leaked += to - covered;
	if (overlaps > REPORTS_MAX)
		vd_check_report(chk, path, "%" PRIu64 " more overlaps not listed",
				overlaps - REPORTS_MAX);
	if (leaked)
		vd_check_report(chk, path,
				"%" PRIu64 " bytes between byte %" PRIu64 " and %" PRIu64
				" are used by nothing (leaked space)",
				leaked, from, to);
	vd_space_free(s);
	return 0;
}

void vd_space_free(struct vd_space *s)
{
	free(s->spans);
	s->spans = NULL;
	s->n = s->cap = 0;
}
