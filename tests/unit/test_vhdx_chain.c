/* VHDX chains through vd_chain_open + vd_chain_read against the generator's
 * exact model: 1, 3 and 16 layers, block sizes 1/2/32/256 MiB, 512 and
 * 4096-byte logical sectors, sizes that are not a whole number of blocks,
 * ZERO/UNMAPPED/UNDEFINED blocks, runs ending mid-bitmap-byte, pending logs
 * (replayed in memory; the file unchanged; wrong without the replay),
 * corrupt logs (refused; --force opens them with a warning), parent
 * identity (parent_linkage, parent_linkage2, mismatch, --force), missing
 * parents (the error names the locator paths tried) and a VHD parent under
 * a VHDX child (mixed chains refused). */
#include <errno.h>
#include <fcntl.h>
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
#include "disk/vhd.h"
#include "disk/vhdx.h"
#include "test_util.h"
#include "tests/tools/vhdx_gen.h"

/* A chain under construction: the model of the top layer's view. */
struct gchain {
	uint8_t *view[33];
	uint64_t size[33];
	char name[33][32];
	unsigned n;
};

/* Adds a layer over the chain's top (a base when empty) and writes it. */
static void layer_add(struct gchain *c, struct vxg_opts o, unsigned writes, uint64_t max_len,
		      unsigned zero)
{
	struct vxg_layer l;
	unsigned i = c->n;

	snprintf(c->name[i], sizeof(c->name[i]), "l%02u.%s", i, i ? "avhdx" : "vhdx");
	if (i) {
		struct vd_image *p;
		char b[37];
		assert_int_equal(vd_image_open(tu_path("%s", c->name[i - 1]), 0, &p), 0);
		o.diff = true;
		snprintf(o.linkage, sizeof(o.linkage), "{%s}", vd_id_format(&p->id, b));
		vd_image_close(p);
		o.relative_path = c->name[i - 1];
		o.absolute_path = "\\\\?\\C:\\vm\\nowhere.vhdx";
	}
	assert_int_equal(vxg_init(&l, &o), 0);
	vxg_random(&l, o.seed, writes, max_len, zero);
	assert_int_equal(vxg_file_write(&l, tu_path("%s", c->name[i])), 0);
	c->view[i] = calloc(1, o.size);
	assert_non_null(c->view[i]);
	if (i)
		memcpy(c->view[i], c->view[i - 1], vd_min_u64(o.size, c->size[i - 1]));
	vxg_view(&l, c->view[i]);
	c->size[i] = o.size;
	c->n++;
	vxg_free(&l);
}

static void gchain_free(struct gchain *c)
{
	for (unsigned i = 0; i < c->n; i++)
		free(c->view[i]);
	c->n = 0;
}

/* Every level of the chain opened from its top equals the model, read in
 * odd-sized chunks at odd offsets too. */
static void gchain_check(struct gchain *c)
{
	struct vd_chain *ch;
	uint8_t *buf;

	assert_int_equal(vd_chain_open(tu_path("%s", c->name[c->n - 1]), 0, &ch), 0);
	assert_int_equal(vd_chain_depth(ch), c->n);
	for (unsigned lv = 0; lv < c->n; lv++) {
		uint64_t size = c->size[lv], step = 1000 * 1000 + 7;
		assert_int_equal(vd_chain_size(ch, lv), size);
		buf = malloc(size);
		assert_non_null(buf);
		assert_int_equal(vd_chain_read(ch, lv, buf, size, 0), 0);
		if (memcmp(buf, c->view[lv], size)) {
			uint64_t k = 0;
			while (buf[k] == c->view[lv][k])
				k++;
			fail_msg("level %u differs from the model at byte %llu", lv,
				 (unsigned long long)k);
		}
		for (uint64_t off = 333; off < size; off += step) {
			size_t n = (size_t)vd_min_u64(step / 3, size - off);
			assert_int_equal(vd_chain_read(ch, lv, buf, n, off), 0);
			assert_memory_equal(buf, c->view[lv] + off, n);
		}
		free(buf);
	}
	vd_chain_close(ch);
}

static void test_chain_1(void **state)
{
	struct gchain c = {0};

	layer_add(&c,
		  (struct vxg_opts){.size = 7 * VHDX_MiB + 5 * 512, .block = VHDX_MiB, .seed = 1},
		  30, 64, 3);
	gchain_check(&c);
	gchain_free(&c);
}

static void test_chain_3(void **state)
{
	struct gchain c = {0};
	uint64_t size = 13 * VHDX_MiB + 3 * 512;

	layer_add(&c, (struct vxg_opts){.size = size, .block = 2 * VHDX_MiB, .seed = 2}, 30, 64, 2);
	layer_add(&c, (struct vxg_opts){.size = size, .block = VHDX_MiB, .seed = 3}, 60, 40, 2);
	layer_add(&c,
		  (struct vxg_opts){.size = size + 2 * VHDX_MiB, .block = 2 * VHDX_MiB, .seed = 4},
		  60, 17, 1);
	gchain_check(&c);
	gchain_free(&c);
}

static void test_chain_16(void **state)
{
	struct gchain c = {0};

	for (unsigned i = 0; i < 16; i++)
		layer_add(&c,
			  (struct vxg_opts){.size = 6 * VHDX_MiB + 4096,
					    .block = VHDX_MiB,
					    .lss = 4096,
					    .seed = 100 + i},
			  12, 9, i % 3 == 2);
	gchain_check(&c);
	gchain_free(&c);
}

/* 32 MiB and 256 MiB blocks: chunk ratios 128 and 16 (2 chunks below). */
static void test_big_blocks(void **state)
{
	struct gchain c = {0};

	layer_add(
	    &c, (struct vxg_opts){.size = 100 * VHDX_MiB + 512, .block = 32 * VHDX_MiB, .seed = 5},
	    20, 300, 1);
	layer_add(
	    &c, (struct vxg_opts){.size = 100 * VHDX_MiB + 512, .block = 32 * VHDX_MiB, .seed = 6},
	    40, 70, 0);
	gchain_check(&c);
	gchain_free(&c);
	layer_add(&c,
		  (struct vxg_opts){
		      .size = 300 * VHDX_MiB, .block = 256 * VHDX_MiB, .lss = 4096, .seed = 7},
		  10, 200, 0);
	layer_add(&c,
		  (struct vxg_opts){
		      .size = 300 * VHDX_MiB, .block = 256 * VHDX_MiB, .lss = 4096, .seed = 8},
		  30, 20, 1);
	gchain_check(&c);
	gchain_free(&c);
}

static void test_fixed(void **state)
{
	struct gchain c = {0};

	layer_add(&c,
		  (struct vxg_opts){
		      .size = 5 * VHDX_MiB + 512, .block = VHDX_MiB, .fixed = true, .seed = 9},
		  20, 64, 0);
	layer_add(&c, (struct vxg_opts){.size = 5 * VHDX_MiB + 512, .block = VHDX_MiB, .seed = 10},
		  20, 30, 1);
	gchain_check(&c);
	gchain_free(&c);
}

/* Pending logs in every layer of a 3-layer chain: replayed in memory, the
 * files unchanged, chain.json saying so; and the same files with LogGuid
 * cleared read differently (so the replay is what made them right). */
static void test_log_replay(void **state)
{
	struct gchain c = {0};
	uint64_t size = 9 * VHDX_MiB + 512;
	struct vd_json j = {0};
	struct vd_chain *ch;
	uint8_t *before, *after, *buf;
	size_t n1, n2;

	layer_add(
	    &c, (struct vxg_opts){.size = size, .block = VHDX_MiB, .seed = 21, .pending_log = true},
	    30, 64, 2);
	layer_add(
	    &c, (struct vxg_opts){.size = size, .block = VHDX_MiB, .seed = 22, .pending_log = true},
	    40, 30, 1);
	layer_add(
	    &c,
	    (struct vxg_opts){.size = size, .block = 2 * VHDX_MiB, .seed = 23, .pending_log = true},
	    40, 30, 0);
	before = tu_load(tu_path("%s", c.name[2]), &n1);
	gchain_check(&c);
	after = tu_load(tu_path("%s", c.name[2]), &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	assert_int_equal(vd_chain_open(tu_path("%s", c.name[2]), 0, &ch), 0);
	assert_int_equal(vd_chain_describe(ch, &j), 0);
	assert_non_null(strstr(j.buf.data, "\"replayed_in_memory\": true"));
	assert_null(strstr(j.buf.data, "\"entries_replayed\": 0"));
	vd_buf_free(&j.buf);
	vd_chain_close(ch);

	/* LogGuid cleared in both headers: no replay, stale metadata. */
	for (uint64_t h = VHDX_HEADER1_OFF; h <= VHDX_HEADER2_OFF; h += VHDX_HEADER1_OFF) {
		memset(after + h + VHDX_HDR_LOG_GUID, 0, 16);
		vd_put_le32(after + h + VHDX_HDR_CHECKSUM,
			    vhdx_checksum(after + h, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM));
	}
	tu_write_file(tu_path("nolog.avhdx"), after, n2);
	rename(tu_path("nolog.avhdx"), tu_path("%s", c.name[2]));
	buf = malloc(size);
	if (vd_chain_open(tu_path("%s", c.name[2]), 0, &ch) == 0) {
		assert_int_equal(vd_chain_read(ch, 2, buf, size, 0), 0);
		assert_true(memcmp(buf, c.view[2], size) != 0);
		vd_chain_close(ch);
	}
	tu_write_file(tu_path("%s", c.name[2]), before, n1);
	free(buf);
	free(before);
	free(after);
	gchain_free(&c);
}

/* A corrupt log: refused naming the file; with --force opened without the
 * replay, with a warning that content may be stale (here the metadata in
 * place is current, so the content is the model's). */
static void test_log_corrupt(void **state)
{
	struct gchain c = {0};
	struct vd_chain *ch;
	struct vd_json j = {0};
	uint8_t *b, *buf;
	size_t n;

	layer_add(&c, (struct vxg_opts){.size = 4 * VHDX_MiB, .block = VHDX_MiB, .seed = 31}, 10,
		  64, 0);
	b = tu_load(tu_path("%s", c.name[0]), &n);
	for (uint64_t h = VHDX_HEADER1_OFF; h <= VHDX_HEADER2_OFF; h += VHDX_HEADER1_OFF) {
		memset(b + h + VHDX_HDR_LOG_GUID, 0x5A, 16);
		vd_put_le32(b + h + VHDX_HDR_CHECKSUM,
			    vhdx_checksum(b + h, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM));
	}
	memcpy(b + VHDX_MiB, "loge", 4); /* an entry that fails its checks */
	vd_put_le32(b + VHDX_MiB + VHDX_LOG_ENTRY_LENGTH, 4096);
	vd_put_le64(b + VHDX_MiB + VHDX_LOG_ENTRY_SEQ, 5);
	memset(b + VHDX_MiB + VHDX_LOG_ENTRY_GUID, 0x5A, 16);
	tu_write_file(tu_path("corrupt.vhdx"), b, n);
	free(b);
	tu_log_capture();
	assert_int_equal(vd_chain_open(tu_path("corrupt.vhdx"), 0, &ch), -EINVAL);
	assert_non_null(strstr(tu_log_text(), "corrupt.vhdx: corrupt log"));
	assert_non_null(strstr(tu_log_text(), "CRC-32C"));
	tu_log_capture();
	assert_int_equal(vd_chain_open(tu_path("corrupt.vhdx"), VD_CHAIN_FORCE, &ch), 0);
	assert_non_null(strstr(tu_log_text(), "warning: "));
	assert_non_null(strstr(tu_log_text(), "may be stale"));
	assert_int_equal(vd_chain_describe(ch, &j), 0);
	assert_non_null(strstr(j.buf.data, "\"corrupt_log_ignored\": true"));
	buf = malloc(c.size[0]);
	assert_int_equal(vd_chain_read(ch, 0, buf, c.size[0], 0), 0);
	assert_memory_equal(buf, c.view[0], c.size[0]);
	free(buf);
	vd_buf_free(&j.buf);
	vd_chain_close(ch);
	gchain_free(&c);

	layer_add(&c,
		  (struct vxg_opts){
		      .size = 4 * VHDX_MiB, .block = VHDX_MiB, .seed = 32, .pending_log = true},
		  10, 64, 0);
	/* FlushedFileOffset past EOF: truncated (2.3.3) */
	b = tu_load(tu_path("%s", c.name[0]), &n);
	tu_write_file(tu_path("trunc.vhdx"), b, n);
	{
		int fd = open(tu_path("trunc.vhdx"), O_RDWR);
		uint8_t g[16];
		uint64_t best = 0, at = 0;
		struct vhdx_log_entry e;
		const char *why;
		memcpy(g, b + VHDX_HEADER2_OFF + VHDX_HDR_LOG_GUID, 16);
		for (uint64_t k = 0; k < VHDX_MiB; k += 4096)
			if (vhdx_log_entry_check(b + VHDX_MiB + k, VHDX_MiB - k, VHDX_MiB, g, &e,
						 &why) == 0 &&
			    e.seq > best) {
				best = e.seq;
				at = VHDX_MiB + k;
			}
		assert_true(at != 0);
		vd_put_le64(b + at + VHDX_LOG_ENTRY_FLUSHED, 1ull << 40);
		vd_put_le32(b + at + 4, vhdx_checksum(b + at, vd_get_le32(b + at + 8), 4));
		assert_int_equal(vd_pwrite_full(fd, b + at, 4096, at), 0);
		close(fd);
	}
	free(b);
	tu_log_capture();
	assert_int_equal(vd_chain_open(tu_path("trunc.vhdx"), 0, &ch), -EINVAL);
	assert_non_null(strstr(tu_log_text(), "truncated"));
	gchain_free(&c);
}

/* Identity (2.6.2.6.3): parent_linkage2 accepted, a mismatch refused (and
 * mounted under --force with a warning), a missing parent names every
 * locator path tried, a VHD parent is refused as a mixed chain. */
static void test_identity(void **state)
{
	struct vxg_opts o = {.size = 4 * VHDX_MiB, .block = VHDX_MiB, .seed = 41};
	struct vxg_layer l;
	struct vd_chain *ch;
	struct vd_image *p;
	char b[37];

	assert_int_equal(vxg_init(&l, &o), 0);
	vxg_random(&l, 41, 10, 64, 0);
	assert_int_equal(vxg_file_write(&l, tu_path("p.vhdx")), 0);
	vxg_free(&l);
	assert_int_equal(vd_image_open(tu_path("p.vhdx"), 0, &p), 0);
	o.diff = true;
	o.seed = 42;
	o.relative_path = "p.vhdx";
	o.volume_path = "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\vm\\p.vhdx";
	o.absolute_path = "\\\\?\\D:\\vm\\p.vhdx";
	/* linkage2 right, linkage stale */
	snprintf(o.linkage2, sizeof(o.linkage2), "{%s}", vd_id_format(&p->id, b));
	snprintf(o.linkage, sizeof(o.linkage), "{11111111-2222-4333-8444-555555555555}");
	vd_image_close(p);
	assert_int_equal(vxg_init(&l, &o), 0);
	vxg_random(&l, 42, 10, 64, 0);
	assert_int_equal(vxg_file_write(&l, tu_path("c2.avhdx")), 0);
	vxg_free(&l);
	assert_int_equal(vd_chain_open(tu_path("c2.avhdx"), 0, &ch), 0);
	assert_true(vd_chain_link(ch, 1)->id_match);
	assert_string_equal(vd_chain_link(ch, 1)->hint_kind, "relative_path");
	vd_chain_close(ch);
	/* neither matches */
	o.linkage2[0] = 0;
	assert_int_equal(vxg_init(&l, &o), 0);
	assert_int_equal(vxg_file_write(&l, tu_path("c1.avhdx")), 0);
	vxg_free(&l);
	tu_log_capture();
	assert_int_equal(vd_chain_open(tu_path("c1.avhdx"), 0, &ch), -EINVAL);
	assert_non_null(strstr(tu_log_text(), "unique id 11111111-2222-4333-8444-555555555555"));
	assert_int_equal(vd_chain_open(tu_path("c1.avhdx"), VD_CHAIN_FORCE, &ch), 0);
	assert_false(vd_chain_link(ch, 1)->id_match);
	vd_chain_close(ch);
	/* parent gone: every locator path is named */
	o.relative_path = "gone.vhdx";
	o.volume_path = "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\vm\\gone2.vhdx";
	o.absolute_path = "\\\\?\\D:\\vm\\gone3.vhdx";
	assert_int_equal(vxg_init(&l, &o), 0);
	assert_int_equal(vxg_file_write(&l, tu_path("orphan.avhdx")), 0);
	vxg_free(&l);
	tu_log_capture();
	assert_int_equal(vd_chain_open(tu_path("orphan.avhdx"), 0, &ch), -ENOENT);
	assert_non_null(strstr(tu_log_text(), "parent not found"));
	assert_non_null(strstr(tu_log_text(), "relative_path \"gone.vhdx\""));
	assert_non_null(strstr(tu_log_text(), tu_path("gone2.vhdx")));
	assert_non_null(strstr(tu_log_text(), tu_path("gone3.vhdx")));
	/* volume_path falls back to the base name */
	o.relative_path = NULL;
	o.volume_path = "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\vm\\p.vhdx";
	assert_int_equal(vd_image_open(tu_path("p.vhdx"), 0, &p), 0);
	snprintf(o.linkage, sizeof(o.linkage), "{%s}", vd_id_format(&p->id, b));
	vd_image_close(p);
	assert_int_equal(vxg_init(&l, &o), 0);
	assert_int_equal(vxg_file_write(&l, tu_path("byvol.avhdx")), 0);
	vxg_free(&l);
	assert_int_equal(vd_chain_open(tu_path("byvol.avhdx"), 0, &ch), 0);
	assert_string_equal(vd_chain_link(ch, 1)->hint_kind, "volume_path");
	vd_chain_close(ch);
	/* a VHD named as the parent: mixed chains are refused */
	assert_int_equal(vhd_create_dynamic(tu_path("v.vhd"), 4 * VHDX_MiB, 2 * VHDX_MiB), 0);
	o.relative_path = "v.vhd";
	assert_int_equal(vxg_init(&l, &o), 0);
	assert_int_equal(vxg_file_write(&l, tu_path("mixed.avhdx")), 0);
	vxg_free(&l);
	tu_log_capture();
	assert_int_equal(vd_chain_open(tu_path("mixed.avhdx"), 0, &ch), -EINVAL);
	assert_non_null(
	    strstr(tu_log_text(), "is vhd, not vhdx: mixed-format chains are not supported"));
}

/* Lookups for a 32-layer chain cost about what one layer's do: each layer
 * answers from its cached BAT page and bitmap slice, never from disk, once
 * warm (counted as BAT page loads, not timed). */
static void test_deep_cached(void **state)
{
	struct gchain c = {0};
	struct vd_chain *ch;
	uint8_t *buf = malloc(VHDX_MiB);

	for (unsigned i = 0; i < 32; i++)
		layer_add(
		    &c, (struct vxg_opts){.size = 4 * VHDX_MiB, .block = VHDX_MiB, .seed = 60 + i},
		    4, 8, 0);
	assert_int_equal(vd_chain_open(tu_path("%s", c.name[c.n - 1]), 0, &ch), 0);
	for (int pass = 0; pass < 3; pass++)
		for (uint64_t off = 0; off < 4 * VHDX_MiB; off += VHDX_MiB)
			assert_int_equal(vd_chain_read(ch, c.n - 1, buf, VHDX_MiB, off), 0);
	for (unsigned i = 0; i < c.n; i++) {
		struct vhdx_state *st = vd_chain_layer(ch, i)->priv;
		uint64_t held, loads;
		vd_tcache_stats(&st->bat, &held, &loads);
		assert_true(loads <= 1); /* one BAT page per layer, loaded once */
		if (i) {
			vd_tcache_stats(&st->sb, &held, &loads);
			assert_true(loads <= 1);
		}
	}
	vd_chain_close(ch);
	free(buf);
	gchain_free(&c);
}

static int setup(void **state)
{
	tu_dir_new("vhdx_chain");
	tu_log_capture();
	return 0;
}

static int teardown(void **state)
{
	free(tu_log_release());
	return tu_dir_remove();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_chain_1),	cmocka_unit_test(test_chain_3),
	    cmocka_unit_test(test_chain_16),	cmocka_unit_test(test_big_blocks),
	    cmocka_unit_test(test_fixed),	cmocka_unit_test(test_log_replay),
	    cmocka_unit_test(test_log_corrupt), cmocka_unit_test(test_identity),
	    cmocka_unit_test(test_deep_cached),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
