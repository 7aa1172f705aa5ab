/* The VHDX write side (disk/vhdx_create.c, disk/vhdx_write.c):
 *   - encoders: decode(encode(x)) with the reader's decoders, also for the
 *     parent locator of a Windows-made checkpoint from the corpus;
 *   - create_child: the layout, the locator (relative_path beside and
 *     below, absolute_win32_path, no volume_path), parent_linkage, fresh
 *     GUIDs, the parent's geometry, no file replaced;
 *   - VD_OPEN_RDWR only for an empty delta create_child made; headers
 *     updated on open and before the first change;
 *   - writes through chain/ against a byte model (512 and 4096-byte
 *     sectors, threads); flush ordering: before a flush a read-only reopen
 *     sees the parent, after it the writes; whole blocks end FULLY_PRESENT;
 *     close leaves a clean log;
 *   - a crash at every point of a flush (the file copied as it is then):
 *     the copy opens and reads as before the flush or as after it, a torn
 *     log entry is ignored, an entry that wraps around the ring replays;
 *   - a flush in many rounds over several chunks (bitmap entries in other
 *     BAT sectors than the blocks'): every round leaves a file that opens;
 *   - discard: whole blocks ZERO and punched, anything else -ENOTSUP. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "chain/chain.h"
#include "disk/endian.h"
#include "disk/vhdx.h"
#include "test_util.h"
#include "tests/tools/vhdx_gen.h"

static int setup(void **state)
{
	(void)state;
	tu_dir_new("vhdxw");
	tu_log_capture();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	vhdx_test_round_cap = 0;
	vhdx_test_crash_at = VHDX_CRASH_NONE;
	vhdx_test_crash_round = 0;
	free(tu_log_release());
	assert_int_equal(tu_dir_remove(), 0);
	return 0;
}

static uint64_t rnd(uint64_t *s)
{
	return vxg_rand(s);
}

/* A VHDX base at tu_path("%s", name) and its model (malloc'd, size bytes). */
static uint8_t *base_make(const char *name, struct vxg_opts o, unsigned writes, unsigned zero)
{
	struct vxg_layer l;
	uint8_t *model = calloc(1, o.size);

	assert_non_null(model);
	assert_int_equal(vxg_init(&l, &o), 0);
	vxg_random(&l, o.seed, writes, 64, zero);
	assert_int_equal(vxg_file_write(&l, tu_path("%s", name)), 0);
	vxg_view(&l, model);
	vxg_free(&l);
	return model;
}

/* The chain of base with a new delta "d.avhdx" on top (no periodic flush). */
static struct vd_chain *delta_chain(const char *base)
{
	struct vd_delta_opts o = {.path = tu_path("d.avhdx"), .flush_ms = 3600 * 1000};
	struct vd_chain *c;

	assert_int_equal(vd_chain_open(tu_path("%s", base), 0, &c), 0);
	assert_int_equal(vd_chain_delta_add(c, &o), 0);
	assert_int_equal(vd_chain_depth(c), 2);
	return c;
}

/* Writes len seeded bytes at off through the chain and into the model. */
static void cw(struct vd_chain *c, uint8_t *model, uint64_t off, size_t len, uint64_t seed)
{
	uint8_t *b = malloc(len);

	assert_non_null(b);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(rnd(&seed) >> 24);
	assert_int_equal(vd_chain_write(c, b, len, off), 0);
	memcpy(model + off, b, len);
	free(b);
}

/* The file at path, opened read-only as a chain (parents outside its
 * directory allowed when outside), reads as model. */
static void file_check_in(const char *path, const uint8_t *model, uint64_t size, bool outside)
{
	struct vd_policy pol;
	struct vd_chain_opts opts = {.policy = &pol};
	struct vd_chain *c;
	uint8_t *b = malloc(size);
	unsigned top;

	assert_non_null(b);
	tu_log_capture();
	vd_policy_init(&pol);
	assert_int_equal(vd_policy_add_image(&pol, path), 0);
	pol.allow_outside = outside;
	if (vd_chain_open_opts(path, &opts, &c) != 0)
		fail_msg("%s does not open: %s", path, tu_log_text());
	top = vd_chain_depth(c) - 1;
	assert_int_equal(vd_chain_read(c, top, b, size, 0), 0);
	if (memcmp(b, model, size)) {
		uint64_t k = 0;
		while (b[k] == model[k])
			k++;
		fail_msg("%s differs from the model at byte %llu", path, (unsigned long long)k);
	}
	vd_chain_close(c);
	vd_policy_free(&pol);
	free(b);
}

static void file_check(const char *path, const uint8_t *model, uint64_t size)
{
	file_check_in(path, model, size, false);
}

static void copy_file(const char *from, const char *to)
{
	size_t n;
	uint8_t *b = tu_load(from, &n);

	tu_write_file(to, b, n);
	free(b);
}

static void header_read(const char *path, int which, struct vhdx_header *h)
{
	uint8_t buf[VHDX_HEADER_SIZE];
	const char *why;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(
	    vd_pread_full(fd, buf, sizeof(buf), which == 1 ? VHDX_HEADER1_OFF : VHDX_HEADER2_OFF),
	    0);
	close(fd);
	assert_int_equal(vhdx_header_decode(buf, 64 * VHDX_MiB, h, &why), 0);
}

/* BAT entry of payload block b of the (read-only) image at path. */
static uint64_t bat_entry(const char *path, uint64_t b)
{
	struct vd_image *img;
	struct vhdx_state *st;
	uint64_t e = 0;

	assert_int_equal(vd_image_open(path, 0, &img), 0);
	st = img->priv;
	assert_int_equal(vhdx_bat_get(st, vhdx_bat_payload_index(&st->geom, b), &e), 0);
	vd_image_close(img);
	return e;
}

/* --- encoders ------------------------------------------------------------ */

static void test_encoders(void **state)
{
	struct vhdx_regions rt = {.bat = {.offset = 3 * VHDX_MiB, .length = 5 * VHDX_MiB},
				  .meta = {.offset = 2 * VHDX_MiB, .length = VHDX_MiB}},
			    back;
	struct vhdx_locator l = {.linkage = "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}",
				 .linkage2 = "{00000000-0000-0000-0000-000000000000}",
				 .relative_path = "..\\..\\path2\\sub3\\parent.vhdx",
				 .volume_path = "\\\\?\\Volume{26A21BDA-A627-11D7-9931-"
						"806E6F6E6963}\\path2\\sub3\\parent.vhdx",
				 .absolute_win32_path =
				     "\\\\?\\d:\\path2\\sub3\\p\xc3\xa4rent.vhdx"};
	struct vhdx_locator ld;
	struct vhdx_params p = {.block_size = 32 * VHDX_MiB,
				.has_parent = true,
				.size = 10 * VHDX_MiB + 4096,
				.logical = 4096,
				.physical = 512},
			   pd;
	struct vhdx_item_map map;
	const char *why;
	uint8_t *buf = calloc(1, 2 * VHDX_MiB), *items[6];
	uint8_t loc[4096];
	long n;

	(void)state;
	assert_non_null(buf);
	rt.bat.required = rt.meta.required = true;
	vhdx_region_table_encode(&rt, buf);
	assert_int_equal(vhdx_region_table_decode(buf, &back, &why), 0);
	assert_int_equal(back.count, 2);
	assert_int_equal(back.bat.offset, rt.bat.offset);
	assert_int_equal(back.bat.length, rt.bat.length);
	assert_int_equal(back.meta.offset, rt.meta.offset);
	assert_int_equal(back.meta.length, rt.meta.length);
	assert_true(back.bat.required && back.meta.required);

	n = vhdx_locator_encode(&l, loc, sizeof(loc));
	assert_true(n > 0);
	assert_int_equal(vhdx_locator_decode(loc, (uint32_t)n, &ld, &why), 0);
	assert_int_equal(ld.n_keys, 5);
	assert_string_equal(ld.linkage, l.linkage);
	assert_string_equal(ld.linkage2, l.linkage2);
	assert_string_equal(ld.relative_path, l.relative_path);
	assert_string_equal(ld.volume_path, l.volume_path);
	assert_string_equal(ld.absolute_win32_path, l.absolute_win32_path);
	vhdx_locator_free(&ld);
	/* a subset, as create_child writes it */
	l.linkage2 = l.volume_path = NULL;
	n = vhdx_locator_encode(&l, loc, sizeof(loc));
	assert_int_equal(vhdx_locator_decode(loc, (uint32_t)n, &ld, &why), 0);
	assert_int_equal(ld.n_keys, 3);
	assert_null(ld.volume_path);
	assert_null(ld.linkage2);
	assert_string_equal(ld.absolute_win32_path, l.absolute_win32_path);
	vhdx_locator_free(&ld);
	assert_int_equal(vhdx_locator_encode(&l, loc, 100), -E2BIG);
	l.relative_path = "";
	assert_int_equal(vhdx_locator_encode(&l, loc, sizeof(loc)), -EINVAL);
	l.relative_path = "bad \xff utf-8";
	assert_int_equal(vhdx_locator_encode(&l, loc, sizeof(loc)), -EINVAL);
	l.relative_path = ".\\p.vhdx";
	n = vhdx_locator_encode(&l, loc, sizeof(loc));

	for (int k = 0; k < 16; k++)
		p.page83[k] = (uint8_t)(k * 17 + 3);
	assert_int_equal(vhdx_metadata_encode(&p, loc, (uint32_t)n, buf, 1000), -E2BIG);
	assert_int_equal(vhdx_metadata_encode(&p, loc, (uint32_t)n, buf, VHDX_MiB), 0);
	assert_int_equal(vhdx_metadata_table_decode(buf, VHDX_MiB, &map, &why), 0);
	assert_true(map.present[VHDX_IT_LOCATOR]);
	for (int k = 0; k < 6; k++)
		items[k] = buf + map.off[k];
	assert_int_equal(vhdx_params_decode((const uint8_t *const *)items, &map, &pd, &why), 0);
	assert_int_equal(pd.block_size, p.block_size);
	assert_true(pd.has_parent);
	assert_false(pd.leave_allocated);
	assert_int_equal(pd.size, p.size);
	assert_int_equal(pd.logical, 4096);
	assert_int_equal(pd.physical, 512);
	assert_memory_equal(pd.page83, p.page83, 16);
	assert_int_equal(pd.loc_length, n);
	assert_int_equal(vhdx_locator_decode(items[VHDX_IT_LOCATOR], pd.loc_length, &ld, &why), 0);
	assert_string_equal(ld.relative_path, ".\\p.vhdx");
	vhdx_locator_free(&ld);
	/* a base: five items, no locator */
	p.has_parent = false;
	p.leave_allocated = true;
	assert_int_equal(vhdx_metadata_encode(&p, NULL, 0, buf, VHDX_MiB), 0);
	assert_int_equal(vhdx_metadata_table_decode(buf, VHDX_MiB, &map, &why), 0);
	assert_false(map.present[VHDX_IT_LOCATOR]);
	for (int k = 0; k < 6; k++)
		items[k] = buf + map.off[k];
	assert_int_equal(vhdx_params_decode((const uint8_t *const *)items, &map, &pd, &why), 0);
	assert_true(pd.leave_allocated && !pd.has_parent);

	/* the file type identifier */
	assert_int_equal(vhdx_ident_encode("vdmount t\xc3\xa9st", buf), 0);
	assert_memory_equal(buf, "vhdxfile", 8);
	{
		char *creator;
		assert_int_equal(vd_utf16_to_utf8(buf + 8, 512, false, &creator), 0);
		assert_string_equal(creator, "vdmount t\xc3\xa9st");
		free(creator);
	}
	/* GUID text */
	{
		uint8_t g[16];
		char t[VHDX_GUID_TEXT];
		struct vd_id id, id2;
		assert_int_equal(vhdx_guid_new(g), 0);
		assert_false(vhdx_guid_is_zero(g));
		assert_int_equal(g[7] >> 4, 4); /* version 4 */
		vhdx_guid_format(g, t);
		assert_int_equal(strlen(t), 38);
		assert_int_equal(vhdx_guid_parse(t, &id), 0);
		vhdx_guid_to_id(g, &id2);
		assert_memory_equal(id.bytes, id2.bytes, 16);
	}
	free(buf);
}

/* Log entries of 1, 126 (one descriptor sector) and 300 data sectors
 * (three): what the reader's check accepts, and a flipped bit it refuses. */
static void test_log_entry_encode(void **state)
{
	static const uint32_t counts[] = {1, 126, 127, 300};
	uint8_t guid[16];

	(void)state;
	assert_int_equal(vhdx_guid_new(guid), 0);
	assert_int_equal(vhdx_log_entry_size(126), 127 * 4096);
	assert_int_equal(vhdx_log_entry_size(127), 129 * 4096);
	assert_int_equal(vhdx_log_entry_max_desc(512 * 1024), 126);
	for (uint32_t b = 4096; b <= 4 * VHDX_MiB; b += 4096 * 7) {
		uint32_t m = vhdx_log_entry_max_desc(b);
		assert_true(vhdx_log_entry_size(m) <= b);
		assert_true(vhdx_log_entry_size(m + 1) > b);
	}
	for (unsigned t = 0; t < 4; t++) {
		uint32_t n = counts[t];
		struct vhdx_log_entry h = {.n_desc = n,
					   .seq = 0x100000007ull + t,
					   .tail = 8192,
					   .flushed = 7 * VHDX_MiB,
					   .last = 9 * VHDX_MiB},
				      back;
		size_t len = vhdx_log_entry_size(n);
		uint8_t *out = malloc(len), *data = malloc((size_t)n * 4096);
		const uint8_t **dp = malloc(n * sizeof(*dp));
		uint64_t *offs = malloc(n * sizeof(*offs)), s = t + 1;
		const char *why;

		assert_non_null(out);
		memcpy(h.log_guid, guid, 16);
		for (uint32_t i = 0; i < n; i++) {
			for (int k = 0; k < 4096; k += 8)
				vd_put_le64(data + (size_t)i * 4096 + k, rnd(&s));
			dp[i] = data + (size_t)i * 4096;
			offs[i] = (3 + i) * VHDX_MiB + 4096ull * i;
		}
		vhdx_log_entry_encode(&h, offs, dp, out);
		assert_int_equal(vhdx_log_entry_check(out, len, 4 * VHDX_MiB, guid, &back, &why),
				 0);
		assert_int_equal(back.n_desc, n);
		assert_int_equal(back.seq, h.seq);
		assert_int_equal(back.tail, h.tail);
		assert_int_equal(back.length, len);
		assert_int_equal(back.flushed, h.flushed);
		assert_int_equal(back.last, h.last);
		/* each data sector rebuilds to its 4 KiB (2.3.1.4) */
		for (uint32_t i = 0; i < n; i++) {
			const uint8_t *d = out + 64 + 32 * (size_t)i;
			const uint8_t *sec = out + (len / 4096 - n + i) * 4096;
			assert_memory_equal(d + 8, dp[i], 8);
			assert_memory_equal(sec + 8, dp[i] + 8, 4084);
			assert_memory_equal(d + 4, dp[i] + 4092, 4);
			assert_int_equal(vd_get_le64(d + 16), offs[i]);
		}
		out[len - 100] ^= 1;
		assert_int_equal(vhdx_log_entry_check(out, len, 4 * VHDX_MiB, guid, &back, &why),
				 -EINVAL);
		free(out);
		free(data);
		free(dp);
		free(offs);
	}
}

/* The locator of a real Hyper-V checkpoint, decoded, encoded again and
 * decoded: the same keys and values. */
static void test_locator_windows(void **state)
{
	const char *shared = getenv("VD_SHARED");
	char path[512];
	struct vd_image *img = NULL;
	struct vhdx_locator ld;
	uint8_t loc[8192];
	const char *why;
	long n;

	(void)state;
	if (!shared)
		skip();
	snprintf(path, sizeof(path), "%s/corpus/dissect.hypervisor/differencing.avhdx.gz", shared);
	if (access(path, R_OK))
		skip();
	assert_int_equal(tu_sh("gzip -dc '%s' > '%s'", path, tu_path("w.avhdx")), 0);
	/* its parent is not in the corpus: the image itself opens */
	assert_int_equal(vd_image_open(tu_path("w.avhdx"), 0, &img), 0);
	{
		struct vhdx_state *st = img->priv;
		n = vhdx_locator_encode(&st->loc, loc, sizeof(loc));
		assert_true(n > 0);
		assert_int_equal(vhdx_locator_decode(loc, (uint32_t)n, &ld, &why), 0);
		assert_int_equal(ld.n_keys, st->loc.n_keys);
		assert_string_equal(ld.linkage, st->loc.linkage);
		assert_string_equal(ld.linkage2, st->loc.linkage2);
		assert_string_equal(ld.relative_path, st->loc.relative_path);
		assert_string_equal(ld.volume_path, st->loc.volume_path);
		assert_string_equal(ld.absolute_win32_path, st->loc.absolute_win32_path);
		vhdx_locator_free(&ld);
	}
	vd_image_close(img);
}

/* --- create_child ---------------------------------------------------------- */

static void test_create_child(void **state)
{
	struct vxg_opts o = {.size = 9 * VHDX_MiB + 3 * 4096,
			     .block = 4 * VHDX_MiB,
			     .lss = 4096,
			     .pss = 512,
			     .seed = 3};
	uint8_t *model = base_make("base.vhdx", o, 20, 1), *before, *after;
	struct vd_image *p, *c1, *c2;
	struct vhdx_state *ps, *cs;
	struct vhdx_header h1, h2;
	char text[VHDX_GUID_TEXT], abs[400], *real;
	size_t n1, n2;

	(void)state;
	assert_int_equal(vd_image_open(tu_path("base.vhdx"), 0, &p), 0);
	ps = p->priv;
	assert_int_equal(mkdir(tu_path("sub"), 0755), 0);
	assert_int_equal(p->ops->create_child(p, tu_path("c1.avhdx")), 0);
	assert_int_equal(p->ops->create_child(p, tu_path("sub/c2.avhdx")), 0);
	assert_int_equal(vd_image_open(tu_path("c1.avhdx"), 0, &c1), 0);
	assert_int_equal(vd_image_open(tu_path("sub/c2.avhdx"), 0, &c2), 0);
	cs = c1->priv;
	assert_string_equal(c1->subformat, "differencing");
	assert_int_equal(c1->size, p->size);
	assert_int_equal(c1->cow_unit, 4096);
	assert_int_equal(cs->par.block_size, 4 * VHDX_MiB);
	assert_int_equal(cs->par.logical, 4096);
	assert_int_equal(cs->par.physical, 512);
	assert_memory_equal(cs->par.page83, ps->par.page83, 16);
	assert_string_equal(cs->creator, "vdmount " VD_VERSION);
	/* layout */
	assert_int_equal(cs->hdr.log_offset, VHDX_MiB);
	assert_int_equal(cs->hdr.log_length, VHDX_MiB);
	assert_true(vhdx_guid_is_zero(cs->hdr.log_guid));
	assert_int_equal(cs->rt.meta.offset, 2 * VHDX_MiB);
	assert_int_equal(cs->rt.bat.offset, 3 * VHDX_MiB);
	assert_true(cs->rt.bat.required && cs->rt.meta.required);
	assert_int_equal(c1->file_size, 3 * VHDX_MiB + cs->rt.bat.length);
	assert_int_equal(cs->blocks_present + cs->blocks_partial + cs->blocks_zero, 0);
	header_read(tu_path("c1.avhdx"), 1, &h1);
	header_read(tu_path("c1.avhdx"), 2, &h2);
	assert_int_equal(h2.seq, h1.seq + 1);
	assert_memory_equal(h1.data_write, h2.data_write, 16);
	/* identity: parent_linkage is the parent's DataWriteGuid; own GUIDs fresh */
	vhdx_guid_format(ps->hdr.data_write, text);
	assert_string_equal(cs->loc.linkage, text);
	assert_memory_equal(c1->parent_id.bytes, p->id.bytes, 16);
	assert_memory_not_equal(cs->hdr.data_write, ps->hdr.data_write, 16);
	assert_memory_not_equal(cs->hdr.data_write, ((struct vhdx_state *)c2->priv)->hdr.data_write,
				16);
	assert_memory_not_equal(cs->hdr.file_write, ((struct vhdx_state *)c2->priv)->hdr.file_write,
				16);
	/* locator: relative beside and below, absolute on Z:, no volume path */
	assert_string_equal(cs->loc.relative_path, ".\\base.vhdx");
	assert_string_equal(((struct vhdx_state *)c2->priv)->loc.relative_path, "..\\base.vhdx");
	assert_null(cs->loc.volume_path);
	assert_null(cs->loc.linkage2);
	real = realpath(tu_dir(), NULL);
	snprintf(abs, sizeof(abs), "\\\\?\\Z:%s/base.vhdx", real);
	free(real);
	for (char *q = abs + 6; *q; q++)
		if (*q == '/')
			*q = '\\';
	assert_string_equal(cs->loc.absolute_win32_path, abs);
	vd_image_close(c1);
	vd_image_close(c2);
	/* both read as the parent; the one below finds it too */
	file_check(tu_path("c1.avhdx"), model, o.size);
	file_check_in(tu_path("sub/c2.avhdx"), model, o.size, true);
	/* a child of sub/c2 moved up beside base finds c2 by its absolute path
	 * (its relative one now leads nowhere) */
	assert_int_equal(vd_image_open(tu_path("sub/c2.avhdx"), 0, &c2), 0);
	assert_int_equal(c2->ops->create_child(c2, tu_path("sub/g.avhdx")), 0);
	vd_image_close(c2);
	copy_file(tu_path("sub/g.avhdx"), tu_path("g.avhdx"));
	file_check(tu_path("g.avhdx"), model, o.size);

	/* never replaces a file */
	before = tu_read_file(tu_path("c1.avhdx"), &n1);
	tu_log_capture();
	assert_int_equal(p->ops->create_child(p, tu_path("c1.avhdx")), -EEXIST);
	assert_non_null(strstr(tu_log_text(), "exists already"));
	after = tu_read_file(tu_path("c1.avhdx"), &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	assert_int_equal(p->ops->create_child(p, tu_path("base.vhdx")), -EEXIST);
	free(before);
	free(after);
	vd_image_close(p);
	free(model);
}

/* A fixed parent's child gets 2 MiB blocks. */
static void test_create_over_fixed(void **state)
{
	struct vxg_opts o = {
	    .size = 6 * VHDX_MiB, .block = 32 * VHDX_MiB, .fixed = true, .seed = 4};
	uint8_t *model = base_make("fixed.vhdx", o, 10, 0);
	struct vd_image *p, *c;

	(void)state;
	assert_int_equal(vd_image_open(tu_path("fixed.vhdx"), 0, &p), 0);
	assert_int_equal(p->ops->create_child(p, tu_path("f.avhdx")), 0);
	assert_int_equal(vd_image_open(tu_path("f.avhdx"), 0, &c), 0);
	assert_int_equal(((struct vhdx_state *)c->priv)->par.block_size, 2 * VHDX_MiB);
	vd_image_close(c);
	vd_image_close(p);
	file_check(tu_path("f.avhdx"), model, o.size);
	free(model);
}

/* --- opening for writing ------------------------------------------------------ */

static void expect_rdwr_refused(const char *path, const char *why)
{
	struct vd_image *img = NULL;

	tu_log_capture();
	assert_int_equal(vd_image_open(path, VD_OPEN_RDWR, &img), -EROFS);
	assert_null(img);
	if (!strstr(tu_log_text(), why))
		fail_msg("expected \"%s\" in: %s", why, tu_log_text());
}

static void test_rdwr(void **state)
{
	struct vxg_opts o = {.size = 4 * VHDX_MiB, .block = VHDX_MiB, .seed = 5};
	uint8_t *model = base_make("base.vhdx", o, 10, 0), sector[512];
	struct vd_image *p, *d;
	struct vhdx_header h0, h1, h2;
	struct vxg_layer l;
	char lk[40], b[37];

	(void)state;
	assert_int_equal(vd_image_open(tu_path("base.vhdx"), 0, &p), 0);
	assert_int_equal(p->ops->create_child(p, tu_path("d.avhdx")), 0);
	expect_rdwr_refused(tu_path("base.vhdx"), "not a differencing disk");
	/* an empty child made by another writer (mkvhdx): laid out otherwise */
	o = (struct vxg_opts){.size = 4 * VHDX_MiB, .block = VHDX_MiB, .diff = true, .seed = 6};
	snprintf(lk, sizeof(lk), "{%s}", vd_id_format(&p->id, b));
	memcpy(o.linkage, lk, sizeof(lk));
	o.relative_path = "base.vhdx";
	assert_int_equal(vxg_init(&l, &o), 0);
	assert_int_equal(vxg_file_write(&l, tu_path("other.avhdx")), 0);
	vxg_free(&l);
	expect_rdwr_refused(tu_path("other.avhdx"), "not laid out as vdmount lays out");
	/* ours, with its log pending (a crashed session): refused */
	o.pending_log = true;
	assert_int_equal(vxg_init(&l, &o), 0);
	vxg_random(&l, 6, 5, 8, 0);
	assert_int_equal(vxg_file_write(&l, tu_path("dirty.avhdx")), 0);
	vxg_free(&l);
	expect_rdwr_refused(tu_path("dirty.avhdx"), "its log needs replaying");

	/* ours, empty: accepted; the headers get a new FileWriteGuid at once, a
	 * new DataWriteGuid only with the first write */
	header_read(tu_path("d.avhdx"), 2, &h0);
	assert_int_equal(vd_image_open(tu_path("d.avhdx"), VD_OPEN_RDWR, &d), 0);
	header_read(tu_path("d.avhdx"), 1, &h1);
	header_read(tu_path("d.avhdx"), 2, &h2);
	assert_int_equal(h2.seq, h0.seq + 2);
	assert_int_equal(h1.seq, h0.seq + 1);
	assert_memory_not_equal(h2.file_write, h0.file_write, 16);
	assert_memory_equal(h1.file_write, h2.file_write, 16);
	assert_memory_equal(h2.data_write, h0.data_write, 16);
	memset(sector, 0x5A, sizeof(sector));
	assert_int_equal(d->ops->write(d, sector, sizeof(sector), 512), 0);
	header_read(tu_path("d.avhdx"), 2, &h1);
	assert_memory_not_equal(h1.data_write, h0.data_write, 16);
	assert_memory_equal(h1.file_write, h2.file_write, 16);
	assert_true(vhdx_guid_is_zero(h1.log_guid));
	vd_image_close(d);
	memcpy(model + 512, sector, sizeof(sector));
	file_check(tu_path("d.avhdx"), model, 4 * VHDX_MiB);
	/* written and closed: it holds data now, and is never written again */
	expect_rdwr_refused(tu_path("d.avhdx"), "holds data already");
	vd_image_close(p);
	free(model);
}

/* --- writes, flush ordering ------------------------------------------------------ */

/* Random writes of odd sizes through the chain; before the flush a
 * read-only reopen reads the parent, after it the model. */
static void write_model_run(struct vxg_opts o, unsigned rounds)
{
	uint8_t *parent = base_make("base.vhdx", o, 30, 2), *model = malloc(o.size);
	static const size_t sizes[] = {1, 511, 512, 4096, 65537, (2u << 20) + 3};
	struct vd_chain *c = delta_chain("base.vhdx");
	uint64_t s = o.seed * 77 + 1;

	assert_non_null(model);
	memcpy(model, parent, o.size);
	for (unsigned r = 0; r < rounds; r++) {
		for (unsigned i = 0; i < 40; i++) {
			size_t len = sizes[rnd(&s) % 6];
			uint64_t off;

			if (len > o.size)
				len = (size_t)o.size;
			off = rnd(&s) % (o.size - len + 1);
			if (i == 7) /* the last byte */
				off = o.size - (len = 1);
			cw(c, model, off, len, rnd(&s));
		}
		if (r == 0) /* nothing is in the file's tables before the flush */
			file_check(tu_path("d.avhdx"), parent, o.size);
		assert_int_equal(vd_chain_flush(c), 0);
		file_check(tu_path("d.avhdx"), model, o.size);
	}
	vd_chain_close(c);
	file_check(tu_path("d.avhdx"), model, o.size);
	{
		struct vhdx_header h1, h2;
		header_read(tu_path("d.avhdx"), 1, &h1);
		header_read(tu_path("d.avhdx"), 2, &h2);
		assert_true(vhdx_guid_is_zero(h1.log_guid) && vhdx_guid_is_zero(h2.log_guid));
	}
	free(parent);
	free(model);
}

static void test_write_512(void **state)
{
	(void)state;
	write_model_run(
	    (struct vxg_opts){.size = 23 * VHDX_MiB + 7 * 512, .block = VHDX_MiB, .seed = 7}, 4);
}

static void test_write_4096(void **state)
{
	(void)state;
	write_model_run(
	    (struct vxg_opts){
		.size = 21 * VHDX_MiB + 4096, .block = 2 * VHDX_MiB, .lss = 4096, .seed = 8},
	    3);
}

/* A block written whole in chain-sized pieces ends FULLY_PRESENT at the
 * flush; one written in part stays PARTIALLY_PRESENT; one written whole at
 * once by the driver is FULLY_PRESENT at once. */
static void test_promotion(void **state)
{
	struct vxg_opts o = {.size = 8 * VHDX_MiB, .block = VHDX_MiB, .seed = 9};
	uint8_t *model = base_make("base.vhdx", o, 10, 0);
	struct vd_chain *c = delta_chain("base.vhdx");
	struct vd_image *d = vd_chain_layer(c, 1);
	uint8_t *blk = malloc(VHDX_MiB);

	(void)state;
	for (uint64_t off = 0; off < VHDX_MiB; off += 128 * 1024)
		cw(c, model, 2 * VHDX_MiB + off, 128 * 1024, off + 1);
	cw(c, model, 5 * VHDX_MiB + 4096, 8192, 99);
	memset(blk, 0x77, VHDX_MiB);
	assert_int_equal(d->ops->write(d, blk, VHDX_MiB, 6 * VHDX_MiB), 0);
	memcpy(model + 6 * VHDX_MiB, blk, VHDX_MiB);
	assert_int_equal(vd_chain_flush(c), 0);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 2) & 7, VHDX_PAYLOAD_FULLY_PRESENT);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 5) & 7, VHDX_PAYLOAD_PARTIALLY_PRESENT);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 6) & 7, VHDX_PAYLOAD_FULLY_PRESENT);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 0) & 7, VHDX_PAYLOAD_NOT_PRESENT);
	/* the contract: a sector not held arrives whole */
	tu_log_capture();
	assert_int_equal(d->ops->write(d, blk, 100, 7 * VHDX_MiB + 3), -EINVAL);
	assert_int_equal(d->ops->write(d, blk, 100, 5 * VHDX_MiB + 100 * 512 + 7), -EINVAL);
	assert_non_null(strstr(tu_log_text(), "does not hold"));
	/* ... and a held one takes any bytes */
	assert_int_equal(d->ops->write(d, blk, 100, 5 * VHDX_MiB + 4096 + 3), 0);
	memcpy(model + 5 * VHDX_MiB + 4096 + 3, blk, 100);
	vd_chain_close(c);
	file_check(tu_path("d.avhdx"), model, o.size);
	free(blk);
	free(model);
}

struct thr {
	struct vd_chain *c;
	uint8_t *model;
	uint64_t base, seed;
};

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	uint64_t s = t->seed;

	for (int i = 0; i < 60; i++) {
		uint64_t off = t->base + rnd(&s) % (3 * VHDX_MiB);
		size_t len = 1 + rnd(&s) % 20000;
		uint8_t *b = malloc(len);

		for (size_t k = 0; k < len; k++)
			b[k] = (uint8_t)(rnd(&s) >> 16);
		if (vd_chain_write(t->c, b, len, off) != 0)
			abort();
		memcpy(t->model + off, b, len);
		free(b);
		if (i % 20 == 19 && vd_chain_flush(t->c) != 0)
			abort();
	}
	return NULL;
}

/* Four threads writing their own quarter (sharing blocks, bitmap sectors
 * and BAT sectors), flushing as they go. */
static void test_threads(void **state)
{
	struct vxg_opts o = {.size = 16 * VHDX_MiB, .block = VHDX_MiB, .seed = 10};
	uint8_t *model = base_make("base.vhdx", o, 20, 1);
	struct vd_chain *c = delta_chain("base.vhdx");
	pthread_t th[4];
	struct thr t[4];

	(void)state;
	for (int i = 0; i < 4; i++) {
		t[i] = (struct thr){c, model, (uint64_t)i * 4 * VHDX_MiB, 1000 + (uint64_t)i};
		assert_int_equal(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	vd_chain_close(c);
	file_check(tu_path("d.avhdx"), model, o.size);
	free(model);
}

/* --- crashes in a flush ---------------------------------------------------------- */

/* Per logical sector, the copy reads as a or as b; returns how many read as b
 * (and differ from a). */
static uint64_t either(const char *path, const uint8_t *a, const uint8_t *b, uint64_t size,
		       uint32_t lss)
{
	struct vd_chain *c;
	uint8_t *got = malloc(size);
	uint64_t as_b = 0;

	assert_non_null(got);
	if (vd_chain_open(path, 0, &c) != 0)
		fail_msg("%s does not open after the crash: %s", path, tu_log_text());
	assert_int_equal(vd_chain_read(c, vd_chain_depth(c) - 1, got, size, 0), 0);
	vd_chain_close(c);
	for (uint64_t k = 0; k < size; k += lss) {
		bool is_a = !memcmp(got + k, a + k, lss), is_b = !memcmp(got + k, b + k, lss);
		if (!is_a && !is_b)
			fail_msg("%s: sector at %llu reads as neither state", path,
				 (unsigned long long)k);
		as_b += is_b && !is_a;
	}
	free(got);
	return as_b;
}

/* Flush 1 makes state s1 (writes in new sectors and blocks); flush 2 adds
 * more in new sectors and blocks and a discarded block, and is "killed" at
 * point at: a copy of the file then must read as s1 (before the entry is
 * durable) or s2 (after), never anything else. */
static void crash_run(enum vhdx_crash_point at, bool first, bool want_new)
{
	struct vxg_opts o = {.size = 12 * VHDX_MiB, .block = VHDX_MiB, .seed = 11};
	uint8_t *s0 = base_make("base.vhdx", o, 30, 1), *s1 = malloc(o.size), *s2 = malloc(o.size);
	struct vd_chain *c = delta_chain("base.vhdx");
	const uint8_t *before = first ? s0 : s1, *after = first ? s1 : s2;
	uint64_t n;

	memcpy(s1, s0, o.size);
	for (int i = 0; i < 10; i++)
		cw(c, s1, (uint64_t)i * 1000 * 1000 / 3 * 2, 3000 + 512 * (uint64_t)i, 500 + i);
	cw(c, s1, 3 * VHDX_MiB, VHDX_MiB, 600);
	if (first) {
		vhdx_test_crash_at = at;
		assert_int_equal(vd_chain_flush(c), -EINTR);
	} else {
		assert_int_equal(vd_chain_flush(c), 0);
		memcpy(s2, s1, o.size);
		cw(c, s2, 8 * VHDX_MiB + 1234, 70000, 700);	  /* a new block */
		cw(c, s2, 20 * 1000 * 1000 / 3 + 4000, 512, 701); /* a new sector */
		assert_int_equal(vd_chain_discard(c, 9 * VHDX_MiB, VHDX_MiB), 0);
		memset(s2 + 9 * VHDX_MiB, 0, VHDX_MiB);
		vhdx_test_crash_at = at;
		assert_int_equal(vd_chain_flush(c), -EINTR);
	}
	copy_file(tu_path("d.avhdx"), tu_path("crash.avhdx"));
	n = either(tu_path("crash.avhdx"), before, after, o.size, 512);
	if (want_new)
		file_check(tu_path("crash.avhdx"), after, o.size);
	else
		assert_int_equal(n, 0);
	/* a crashed writer writes nothing more, not even at close */
	vd_chain_close(c);
	file_check(tu_path("d.avhdx"), want_new ? after : before, o.size);
	unlink(tu_path("d.avhdx"));
	free(s0);
	free(s1);
	free(s2);
}

static void test_crash_first_flush(void **state)
{
	(void)state;
	/* the header names the log only once the entry is durable */
	crash_run(VHDX_CRASH_DATA_SYNCED, true, false);
	crash_run(VHDX_CRASH_ENTRY_TORN, true, false);
	crash_run(VHDX_CRASH_ENTRY_SYNCED, true, false);
	crash_run(VHDX_CRASH_HEADER, true, true);
	crash_run(VHDX_CRASH_APPLY_HALF, true, true);
	crash_run(VHDX_CRASH_APPLIED, true, true);
}

static void test_crash_later_flush(void **state)
{
	(void)state;
	crash_run(VHDX_CRASH_DATA_SYNCED, false, false);
	/* a torn entry after the active one is ignored: the previous state */
	crash_run(VHDX_CRASH_ENTRY_TORN, false, false);
	crash_run(VHDX_CRASH_ENTRY_SYNCED, false, true);
	crash_run(VHDX_CRASH_HEADER, false, true);
	crash_run(VHDX_CRASH_APPLY_HALF, false, true);
	crash_run(VHDX_CRASH_APPLIED, false, true);
}

/* Flushes until the next entry wraps around the end of the 1 MiB ring;
 * that flush killed before anything is applied replays from the wrapped
 * entry. */
static void test_log_wrap(void **state)
{
	struct vxg_opts o = {.size = 64 * VHDX_MiB, .block = VHDX_MiB, .seed = 12};
	uint8_t *model = base_make("base.vhdx", o, 10, 0), *old = malloc(o.size);
	struct vd_chain *c = delta_chain("base.vhdx");
	uint64_t s = 5, pos = 0;
	struct vd_json j = {0};

	(void)state;
	for (int i = 0;; i++) {
		/* each flush dirties about 10 bitmap sectors and a few BAT sectors */
		memcpy(old, model, o.size);
		for (int k = 0; k < 10; k++)
			cw(c, model, (rnd(&s) % (o.size / 4096)) * 4096, 4096, rnd(&s));
		vd_buf_free(&j.buf);
		memset(&j, 0, sizeof(j));
		assert_int_equal(vd_chain_describe(c, &j), 0);
		pos = strtoull(strstr(j.buf.data, "\"next_log_offset\": ") + 19, NULL, 10);
		assert_true(i < 400);
		if (pos + 16 * 4096 > VHDX_MiB && pos + 5 * 4096 < VHDX_MiB)
			break; /* this flush's entry (about 15 sectors) wraps */
		assert_int_equal(vd_chain_flush(c), 0);
	}
	vd_buf_free(&j.buf);
	vhdx_test_crash_at = VHDX_CRASH_HEADER;
	assert_int_equal(vd_chain_flush(c), -EINTR);
	copy_file(tu_path("d.avhdx"), tu_path("crash.avhdx"));
	file_check(tu_path("crash.avhdx"), model, o.size);
	vd_chain_close(c);
	free(model);
	free(old);
}

/* The six ranges of test_rounds in the file at path: each reads as its
 * data or as zeros (or, strict, as its data). */
static void rounds_check(const char *path, const uint64_t *at, uint8_t *const *data, bool strict,
			 unsigned round)
{
	uint8_t *got = malloc(VHDX_MiB), *zero = calloc(1, VHDX_MiB);
	struct vd_chain *rc;

	tu_log_capture();
	if (vd_chain_open(path, 0, &rc) != 0)
		fail_msg("killed after round %u: the copy does not open: %s", round, tu_log_text());
	for (int i = 0; i < 6; i++) {
		size_t n = i % 2 ? VHDX_MiB : 8192;

		assert_int_equal(vd_chain_read(rc, 1, got, n, at[i]), 0);
		if (memcmp(got, data[i], n) && (strict || memcmp(got, zero, n)))
			fail_msg("round %u: range %d reads as neither state", round, i);
	}
	vd_chain_close(rc);
	free(got);
	free(zero);
}

/* A flush in rounds of two sectors over three chunks (4 GiB each with 512-
 * byte sectors; the disk is sparse): partial blocks need their chunk's
 * bitmap entry, which lies in another BAT sector. Killed after each round,
 * the copy opens (a PARTIALLY_PRESENT entry never reaches the file before
 * its bitmap entry) and reads each written range as before or after. */
static void test_rounds(void **state)
{
	const uint64_t size = 9 * 1024 * VHDX_MiB, chunk = 4096 * VHDX_MiB;
	struct vxg_opts o = {.size = size, .block = VHDX_MiB, .seed = 13};
	static const uint64_t at[] = {5 * VHDX_MiB + 4096,
				      7 * VHDX_MiB,
				      chunk + 5 * VHDX_MiB + 512,
				      chunk + 600 * VHDX_MiB,
				      2 * chunk + 3 * VHDX_MiB + 9 * 512,
				      2 * chunk - VHDX_MiB};
	uint8_t *data[6];
	struct vxg_layer l;
	unsigned round;

	(void)state;
	assert_int_equal(vxg_init(&l, &o), 0); /* an empty base: reads zeros */
	assert_int_equal(vxg_file_write(&l, tu_path("base.vhdx")), 0);
	vxg_free(&l);
	for (int i = 0; i < 6; i++) {
		uint64_t sd = 900 + (uint64_t)i;
		data[i] = malloc(VHDX_MiB);
		for (size_t k = 0; k < VHDX_MiB; k++)
			data[i][k] = (uint8_t)(rnd(&sd) >> 8);
	}
	for (round = 1;; round++) {
		struct vd_chain *c = delta_chain("base.vhdx");
		int r;

		for (int i = 0; i < 6; i++) /* odd ones are whole blocks */
			assert_int_equal(vd_chain_write(c, data[i], i % 2 ? VHDX_MiB : 8192, at[i]),
					 0);
		vhdx_test_round_cap = 2;
		vhdx_test_crash_at = VHDX_CRASH_APPLIED;
		vhdx_test_crash_round = round;
		r = vd_chain_flush(c);
		if (r == 0) /* fewer rounds than that: the flush is whole */
			vhdx_test_crash_at = VHDX_CRASH_NONE;
		else
			copy_file(tu_path("d.avhdx"), tu_path("crash.avhdx"));
		vd_chain_close(c);
		if (r == 0) {
			rounds_check(tu_path("d.avhdx"), at, data, true, round);
			break;
		}
		assert_int_equal(r, -EINTR);
		rounds_check(tu_path("crash.avhdx"), at, data, false, round);
		unlink(tu_path("d.avhdx"));
		assert_true(round < 60);
	}
	assert_true(round > 5);
	for (int i = 0; i < 6; i++)
		free(data[i]);
}

/* --- discard ----------------------------------------------------------------- */

static uint64_t file_blocks(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	return (uint64_t)sb.st_blocks;
}

static void test_discard(void **state)
{
	struct vxg_opts o = {.size = 10 * VHDX_MiB + 3 * 512, .block = VHDX_MiB, .seed = 14};
	uint8_t *model = base_make("base.vhdx", o, 40, 0);
	struct vd_chain *c = delta_chain("base.vhdx");
	struct vd_image *d = vd_chain_layer(c, 1);
	uint64_t before;

	(void)state;
	cw(c, model, 2 * VHDX_MiB + 4096, 3 * VHDX_MiB, 1);
	cw(c, model, 10 * VHDX_MiB, 3 * 512, 2); /* the short last block */
	assert_int_equal(vd_chain_flush(c), 0);
	before = file_blocks(tu_path("d.avhdx"));
	/* blocks 3 and 4 whole (ZERO), ragged ends written as zeros, block 7 (the
	 * parent's) hidden, and the short last block as a whole one */
	assert_int_equal(vd_chain_discard(c, 2 * VHDX_MiB + 100 * 512, 3 * VHDX_MiB), 0);
	memset(model + 2 * VHDX_MiB + 100 * 512, 0, 3 * VHDX_MiB);
	assert_int_equal(vd_chain_discard(c, 7 * VHDX_MiB, VHDX_MiB), 0);
	memset(model + 7 * VHDX_MiB, 0, VHDX_MiB);
	assert_int_equal(d->ops->discard(d, 10 * VHDX_MiB, 3 * 512), 0);
	memset(model + 10 * VHDX_MiB, 0, 3 * 512);
	/* anything but whole blocks is left to the caller */
	assert_int_equal(d->ops->discard(d, 512, 4096), -ENOTSUP);
	assert_int_equal(d->ops->discard(d, VHDX_MiB, VHDX_MiB + 512), -ENOTSUP);
	assert_int_equal(vd_chain_flush(c), 0);
	file_check(tu_path("d.avhdx"), model, o.size);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 3) & 7, VHDX_PAYLOAD_ZERO);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 4) & 7, VHDX_PAYLOAD_ZERO);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 7) & 7, VHDX_PAYLOAD_ZERO);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 10) & 7, VHDX_PAYLOAD_ZERO);
	/* the discarded blocks' space was given back */
	assert_true(file_blocks(tu_path("d.avhdx")) < before);
	/* a write into a ZERO block: a new block, zeros around the write */
	cw(c, model, 3 * VHDX_MiB + 4096, 512, 3);
	assert_int_equal(vd_chain_flush(c), 0);
	assert_int_equal(bat_entry(tu_path("d.avhdx"), 3) & 7, VHDX_PAYLOAD_FULLY_PRESENT);
	vd_chain_close(c);
	file_check(tu_path("d.avhdx"), model, o.size);
	free(model);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_encoders, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_log_entry_encode, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_locator_windows, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_child, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_over_fixed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rdwr, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_512, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_4096, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_promotion, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_first_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crash_later_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_log_wrap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rounds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
	};
	return cmocka_run_group_tests_name("vhdx_write", tests, NULL, NULL);
}
