/* seSparse extent backend against mksesparse's exact model (data, zero and
 * unmapped grains, clusters past 4095 to exercise the split cluster field), the
 * real ESXi extent from the corpus, a cross-check with qemu-img, and every
 * seSparse header and table check reached by a poked field. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "esx_helper.h"

#define SECTORS 300001u	  /* not a whole number of grains */
#define GT0 (16ull * 512) /* first GT: GD @8 is one sector, rounded up to 16 */

/* Generates s.vmdk (+ model, mask, descriptor) once; later calls restore the
 * pristine copy, which is much cheaper than regenerating the 150 MB model. */
static void gen(void)
{
	static bool made;

	if (made) {
		assert_int_equal(esx_run("cp --sparse=always s.orig s.vmdk"), 0);
		return;
	}
	assert_int_equal(esx_run("\"$T/mksesparse\" s.vmdk %u --write 0:8192:1 "
				 "--write 20000000:100000:2 --zero 8192:4096 --unmap 12288:4096 "
				 "--write 100000000:4096:5 --write %u:512:6 --cluster-start 5000 "
				 "--model s.raw --mask s.mask --descriptor sd.vmdk && "
				 "cp --sparse=always s.vmdk s.orig",
				 SECTORS, SECTORS * 512 - 512),
			 0);
	made = true;
}

static int open_s(struct vmdk_extent *e)
{
	return esx_extent_open(&vmdk_sesparse_ops, tu_path("s.vmdk"), SECTORS, e);
}

static void test_model(void **st)
{
	struct vmdk_extent e;
	uint8_t *got, *model, *mask, *state = malloc(SECTORS);
	size_t mlen, klen;
	static const size_t chunks[] = {65536, 1536, 4096, SECTORS * 512ull};

	(void)st;
	gen();
	model = tu_read_file(tu_path("s.raw"), &mlen);
	mask = tu_read_file(tu_path("s.mask"), &klen);
	assert_non_null(model);
	assert_non_null(mask);
	assert_int_equal(open_s(&e), 0);
	for (unsigned c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		assert_int_equal(esx_extent_read_all(&e, chunks[c], &got, state), 0);
		assert_memory_equal(got, model, mlen);
		for (unsigned s = 0; s < SECTORS; s++) {
			if (s >= 16 && s < 32)
				assert_int_equal(state[s], VD_ZERO);
			else
				assert_int_equal(state[s], mask[s] ? VD_DATA : VD_UNALLOC);
		}
		free(got);
	}
	esx_extent_close(&e);
	free(model);
	free(mask);
	free(state);
}

static void test_qemu_agrees(void **st)
{
	(void)st;
	if (esx_run("command -v qemu-img >/dev/null") != 0)
		skip();
	gen();
	assert_int_equal(esx_run("qemu-img convert -O raw sd.vmdk q.raw && cmp q.raw s.raw"), 0);
}

static void test_corpus(void **st)
{
	const char *shared = getenv("VD_SHARED");
	struct vmdk_extent e;
	uint8_t *got;

	(void)st;
	if (!shared || esx_run("test -f '%s/corpus/dissect.hypervisor/sesparse.vmdk.gz'", shared))
		skip();
	assert_int_equal(esx_run("gzip -dc '%s/corpus/dissect.hypervisor/sesparse.vmdk.gz' "
				 ">real.vmdk",
				 shared),
			 0);
	assert_int_equal(esx_extent_open(&vmdk_sesparse_ops, tu_path("real.vmdk"), 1048576, &e), 0);
	assert_int_equal(esx_extent_read_all(&e, 1 << 20, &got, NULL), 0);
	/* corpus note: 16 MiB of 0x61 then zeros */
	for (size_t i = 0; i < 1048576ull * 512; i++)
		if (got[i] != (i < (16u << 20) ? 0x61 : 0))
			fail_msg("byte %zu is 0x%02x", i, got[i]);
	free(got);
	esx_extent_close(&e);
}

/* Pokes a u64 at off into a fresh file and expects open() to return want. */
static void poke_open(uint64_t off, uint64_t v, int want)
{
	struct vmdk_extent e;
	unsigned errs = vd_log_error_count();
	int ret;

	gen();
	tu_poke_le64(tu_path("s.vmdk"), off, v);
	ret = open_s(&e);
	assert_int_equal(ret, want);
	if (ret == 0)
		esx_extent_close(&e);
	else
		assert_int_equal(vd_log_error_count(), errs + 1);
}

static void test_bad_headers(void **st)
{
	(void)st;
	for (unsigned i = 0; i < 26; i++) {
		if (i == 2)
			continue;
		/* every field must be non-zero or a fixed constant */
		poke_open(8 * i, i >= 5 && i <= 9 ? 1 : 0, -EINVAL);
	}
	poke_open(0, 0xcafecafe, -EINVAL);     /* magic */
	poke_open(8, 0x100000001ull, -EINVAL); /* version */
	poke_open(24, 16, -EINVAL);	       /* grain_size */
	poke_open(32, 128, -EINVAL);	       /* grain_table_size */
	poke_open(16, SECTORS - 1, -EINVAL);   /* capacity < SECTORS */
	poke_open(16, 0, -EINVAL);	       /* capacity 0 */
	poke_open(400, 1, -EINVAL);	       /* const padding */
	poke_open(80, 1ull << 40, -EINVAL);    /* volatile header past EOF */
	poke_open(512, 0xcafebabe, -EINVAL);   /* volatile magic (dissect's mistake) */
	poke_open(512 + 24, 1, -EINVAL);       /* replay_journal */
	poke_open(512 + 200, 7, -EINVAL);      /* volatile padding */
	poke_open(128, 1ull << 50, -EINVAL);   /* GD past EOF */
	poke_open(152, 65, -EINVAL);	       /* grain_tables_size not a multiple of 64 */
	poke_open(8 * 512, 0x2000000000000000ull, -EINVAL); /* GDE tag */
	poke_open(8 * 512, 0x1000000000000005ull, -EINVAL); /* GT index out of region */
	poke_open(8 * 512, 0, 0);			    /* GDE 0 is fine */
}

static void test_grain_dir_too_small(void **st)
{
	struct vmdk_extent e;

	(void)st;
	/* 300001 sectors need 10 GD entries; shrink nothing, but claim the disk is
	 * huge: 2^40 sectors need 2^25 GD entries > 1 sector of GD. */
	gen();
	tu_poke_le64(tu_path("s.vmdk"), 16, 1ull << 40);
	assert_int_equal(esx_extent_open(&vmdk_sesparse_ops, tu_path("s.vmdk"), 1ull << 40, &e),
			 -EINVAL);
}

/* Pokes GT entry k of GT 0 and expects block_status and read of grain k to fail. */
static void poke_gte(unsigned k, uint64_t v)
{
	struct vmdk_extent e;
	uint8_t buf[4096];
	uint64_t pnum;

	gen();
	tu_poke_le64(tu_path("s.vmdk"), GT0 + 8 * k, v);
	assert_int_equal(open_s(&e), 0);
	assert_int_equal(esx_status(&e, 4096ull * k, 4096, &pnum), -EIO);
	assert_int_equal(vmdk_extent_read(&e, buf, 4096, 4096ull * k), -EIO);
	/* other grains still read */
	assert_int_equal(esx_status(&e, 4096ull * (k + 40), 4096, &pnum), VD_UNALLOC);
	esx_extent_close(&e);
}

static void test_bad_gtes(void **st)
{
	(void)st;
	poke_gte(0, 0x0000000000000001ull);			 /* type 0 with bits */
	poke_gte(0, 0x4000000000000000ull);			 /* unknown type */
	poke_gte(0, 0xf000000000000000ull);			 /* unknown type */
	poke_gte(1, 0x3000000000000000ull | 0xffffffffffffull);	 /* cluster huge */
	poke_gte(1, 0x3000000000000000ull | 0xfffull << 48 | 1); /* cluster past grains_size */
}

/* check(): clean as generated; a grain used twice; a bad entry. */
static void test_check(void **st)
{
	struct vmdk_extent e;
	uint8_t *f;
	size_t len;
	char *text;

	(void)st;
	gen();
	assert_int_equal(open_s(&e), 0);
	assert_int_equal(esx_check(&e, &text), 0);
	free(text);
	esx_extent_close(&e);
	f = tu_read_file(tu_path("s.vmdk"), &len);
	assert_non_null(f);
	tu_poke(tu_path("s.vmdk"), GT0 + 8, f + GT0, 8);
	free(f);
	assert_int_equal(open_s(&e), 0);
	assert_int_equal(esx_check(&e, &text), 1);
	assert_non_null(strstr(text, "space used twice"));
	free(text);
	esx_extent_close(&e);
	gen();
	tu_poke_le64(tu_path("s.vmdk"), GT0, 0x4000000000000000ull);
	assert_int_equal(open_s(&e), 0);
	assert_int_equal(esx_check(&e, &text), 1);
	assert_non_null(strstr(text, "grain 0: table entry 0x4000000000000000 points outside"));
	free(text);
	esx_extent_close(&e);
}

static void test_gt_past_eof(void **st)
{
	struct vmdk_extent e;
	uint64_t pnum;

	(void)st;
	gen();
	/* grain_tables_offset moved so GT 0 lies past EOF, caught on first touch. */
	tu_poke_le64(tu_path("s.vmdk"), 144, 1ull << 30);
	assert_int_equal(open_s(&e), 0);
	assert_int_equal(esx_status(&e, 0, 4096, &pnum), -EIO);
	esx_extent_close(&e);
}

static void test_describe(void **st)
{
	struct vmdk_extent e;
	char *js;

	(void)st;
	gen();
	assert_int_equal(open_s(&e), 0);
	js = esx_describe(&e);
	assert_non_null(strstr(js, "\"gd_entries\": 10"));
	free(js);
	esx_extent_close(&e);
}

/* vmfs flat base + two seSparse deltas through vdcore's chain layer. */
static void test_chain(void **st)
{
	static const char *const models[] = {"b-flat.vmdk", "m1.raw", "m2.raw"};

	(void)st;
	assert_int_equal(esx_vmfs_base(SECTORS), 0);
	assert_int_equal(
	    esx_run("\"$T/mksesparse\" d1-sesparse.vmdk %u --write 0:100000:1 "
		    "--zero 200000:8192 --model m1.raw --over b-flat.vmdk "
		    "--descriptor d1.vmdk --parent b.vmdk --parent-cid 0badcafe --cid 1 && "
		    "\"$T/mksesparse\" d2-sesparse.vmdk %u --write 50000:100000:3 "
		    "--unmap 0:4096 --model m2.raw --over m1.raw --descriptor d2.vmdk "
		    "--parent d1.vmdk --parent-cid 1 --cid 2",
		    SECTORS, SECTORS),
	    0);
	assert_int_equal(esx_chain_check("d2.vmdk", 3, models, "\"gd_entries\": 10"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_model),
	    cmocka_unit_test(test_qemu_agrees),
	    cmocka_unit_test(test_corpus),
	    cmocka_unit_test(test_bad_headers),
	    cmocka_unit_test(test_grain_dir_too_small),
	    cmocka_unit_test(test_bad_gtes),
	    cmocka_unit_test(test_gt_past_eof),
	    cmocka_unit_test(test_check),
	    cmocka_unit_test(test_describe),
	    cmocka_unit_test(test_chain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
