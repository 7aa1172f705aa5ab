/* streamOptimized extent backend: VMware-layout streams from mkstream (zlib
 * and raw deflate, incompressible grains, a final partial grain, no footer so
 * the markers are scanned, small grains), a qemu-layout stream from qemu-img,
 * the grain cache (a sequential read inflates each grain once), inflating
 * ahead, a GD too large to check at open (read lazily), memory that follows
 * the file and not the capacity it claims (mkclaims), truncation, and every
 * stream header, marker and footer check reached by a poked field. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "disk/endian.h"
#include "esx_helper.h"

#define RAW_BYTES (7822u * 512u) /* 61 grains + a partial one of 14 sectors */
#define SECTORS (RAW_BYTES / 512u)

static uint8_t *raw;

/* Writes r.raw: random grains (incompressible), text-like grains, zero gaps. */
static void make_raw(void)
{
	uint64_t x = 88172645463325252ull;

	if (raw)
		return;
	raw = calloc(RAW_BYTES, 1);
	assert_non_null(raw);
	for (uint32_t i = 0; i < RAW_BYTES; i++) {
		uint32_t g = i / 65536;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		if (g % 4 == 0)
			raw[i] = (uint8_t)x;
		else if (g % 4 == 1)
			raw[i] = (uint8_t)("vdmount stream test "[i % 20]);
		else if (g % 4 == 2 && i % 4096 == 7)
			raw[i] = 1;
	}
	raw[RAW_BYTES - 1] = 0x5a;
	tu_write_file(tu_path("r.raw"), raw, RAW_BYTES);
}

static void mk(const char *opts)
{
	make_raw();
	assert_int_equal(esx_run("\"$T/mkstream\" r.raw s.vmdk %s", opts), 0);
}

static int open_s(struct vmdk_extent *e)
{
	return esx_extent_open(&vmdk_stream_ops, tu_path("s.vmdk"), SECTORS, e);
}

/* Reads s.vmdk whole in chunk-sized requests and compares with r.raw;
 * `stored` grains were read straight from their stored blocks: every whole
 * grain that deflate kept stored but the first (disk/stored.h: its layout is
 * the guess for the next) and any it could not read as guessed. */
static void check(const char *layout, size_t chunk, uint64_t stored)
{
	uint64_t loads;
	struct vmdk_extent e;
	uint8_t *got;
	char *js, want[64];

	assert_int_equal(open_s(&e), 0);
	assert_int_equal(esx_extent_read_all(&e, chunk, &got, NULL), 0);
	assert_memory_equal(got, raw, RAW_BYTES);
	free(got);
	js = esx_describe(&e);
	snprintf(want, sizeof(want), "\"layout\": \"%s\"", layout);
	assert_non_null(strstr(js, want));
	/* the cache: a sequential read loads every grain once, inflated or
	 * read straight (small requests do not load a grain per request); the
	 * read-ahead worker racing the reader may load one a second time,
	 * rarely */
	assert_int_equal(esx_json_u64(js, "grains_read_stored"), stored);
	loads = esx_json_u64(js, "grains_inflated") + stored;
	assert_true(loads >= esx_json_u64(js, "compressed_grains"));
	assert_true(loads <= esx_json_u64(js, "compressed_grains") + 2);
	free(js);
	esx_extent_close(&e);
}

static void test_vmware_layouts(void **st)
{
	(void)st;
	/* 16 random grains of 64 KiB: zlib stores each in 4 blocks of sizes
	 * that differ from one grain to the next */
	mk("");
	check("vmware", 4096, 15);
	check("vmware", 1 << 20, 15);
	check("vmware", 1536, 15);
	mk("--raw-deflate"); /* no zlib stream: inflated */
	check("vmware", 65536, 0);
	mk("--store 0"); /* every grain stored (65,535 + 1 bytes); the last one partial */
	check("vmware", 65536, 45);
	mk("--grain 8");
	check("vmware", 3000, 255);
	mk("--grain 2048 --store 0"); /* 1 MiB grains: 17 blocks */
	check("vmware", 1 << 20, 2);
	mk("--no-footer");
	check("scanned", 65536, 15);
}

static void test_qemu_layout(void **st)
{
	(void)st;
	make_raw();
	if (esx_run("command -v qemu-img >/dev/null") != 0)
		skip();
	assert_int_equal(esx_run("qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "
				 "r.raw s.vmdk"),
			 0);
	check("qemu", 65536, 15);
	check("qemu", 512, 15);
	/* and the VMware-layout file reads the same in qemu-img */
	mk("--store 0");
	assert_int_equal(esx_run("qemu-img convert -O raw s.vmdk q.raw && cmp q.raw r.raw"), 0);
}

static void test_block_status(void **st)
{
	struct vmdk_extent e;
	uint64_t pnum;

	(void)st;
	mk("");
	assert_int_equal(open_s(&e), 0);
	/* grains 0, 1 data; grain 2 holds 1-bytes (data); grain 3 is zero */
	assert_int_equal(esx_status(&e, 100, 4 * 65536, &pnum), VD_DATA);
	assert_int_equal(pnum, 3 * 65536 - 100);
	assert_int_equal(esx_status(&e, 3 * 65536 + 5, 65536 * 2, &pnum), VD_UNALLOC);
	assert_int_equal(pnum, 65536 - 5);
	esx_extent_close(&e);
}

static void expect_open(int want)
{
	struct vmdk_extent e;
	unsigned errs = vd_log_error_count();
	int ret = open_s(&e);

	assert_int_equal(ret, want);
	if (ret == 0)
		esx_extent_close(&e);
	else
		assert_true(vd_log_error_count() > errs);
}

/* Expects open to succeed and a whole read to fail with -EIO. */
static void expect_read_eio(void)
{
	struct vmdk_extent e;
	uint8_t *got;

	assert_int_equal(open_s(&e), 0);
	assert_int_equal(esx_extent_read_all(&e, 65536, &got, NULL), -EIO);
	free(got);
	esx_extent_close(&e);
}

static uint64_t file_size(const char *name)
{
	return tu_file_size(tu_path("%s", name));
}

/* Returns the file offset of the first grain marker (sector overHead = 128). */
#define GRAIN0 (128u * 512u)

static void test_truncated(void **st)
{
	(void)st;
	mk("");
	assert_int_equal(truncate(tu_path("s.vmdk"), 1 << 20), 0);
	expect_open(-EINVAL); /* no footer, scan runs into EOF: refused */
	mk("");
	assert_int_equal(truncate(tu_path("s.vmdk"), 100 * 512), 0);
	expect_open(-EINVAL); /* overHead past EOF */
	mk("");
	assert_int_equal(truncate(tu_path("s.vmdk"), 1000), 0);
	expect_open(-EINVAL);
	if (esx_run("command -v qemu-img >/dev/null") == 0) {
		assert_int_equal(esx_run("qemu-img convert -f raw -O vmdk -o "
					 "subformat=streamOptimized r.raw s.vmdk"),
				 0);
		assert_int_equal(truncate(tu_path("s.vmdk"), 1 << 20), 0);
		expect_open(-EINVAL); /* GT entries past EOF */
	}
}

static void test_bad_header_footer(void **st)
{
	uint64_t foot;

	(void)st;
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), 0, 0x12345678);
	expect_open(-EINVAL); /* magic (vmdk_kdmv_decode) */
	mk("");
	tu_poke(tu_path("s.vmdk"), 77, "\0", 1);
	expect_open(-EINVAL); /* compressAlgorithm 0 */
	mk("");
	tu_poke_le64(tu_path("s.vmdk"), 64, 1ull << 40);
	expect_open(-EINVAL); /* overHead past EOF */
	mk("");
	{
		struct vmdk_extent e;
		assert_int_equal(
		    esx_extent_open(&vmdk_stream_ops, tu_path("s.vmdk"), SECTORS + 1, &e),
		    -EINVAL); /* capacity < SECTORS */
	}
	mk("");
	foot = file_size("s.vmdk") - 1024;
	tu_poke_le64(tu_path("s.vmdk"), foot + 12, SECTORS + 128);
	expect_open(-EINVAL); /* footer capacity != header capacity */
	mk("");
	tu_poke_le64(tu_path("s.vmdk"), foot + 56, ~0ull);
	expect_open(-EINVAL); /* footer gdOffset = GD_AT_END */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), foot, 0);
	expect_open(0); /* footer magic damaged: no footer, scanning works (EOS present) */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), foot - 512 + 12, 9);
	expect_open(0); /* footer marker type damaged: likewise */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), foot + 512 + 12, 9);
	expect_open(-EINVAL); /* no EOS: no footer, and the scan runs into EOF */
	mk("");
	tu_poke_le64(tu_path("s.vmdk"), foot + 56, 1ull << 30);
	expect_open(0); /* GD past EOF: falls back to scanning, with a warning */
	mk("");
	assert_int_equal(esx_run("truncate -s +100 s.vmdk"), 0);
	expect_open(0); /* not a sector multiple: no footer check, scan to EOS */
}

static void test_bad_tables(void **st)
{
	uint64_t gd_sec, gt_sec;
	size_t len;
	uint8_t *f;

	(void)st;
	mk("");
	f = tu_read_file(tu_path("s.vmdk"), &len);
	gd_sec = vd_get_le64(f + len - 1024 + 56);
	gt_sec = vd_get_le32(f + gd_sec * 512);
	free(f);
	tu_poke_le32(tu_path("s.vmdk"), gd_sec * 512, 0x7fffffff);
	expect_open(-EINVAL); /* GDE past EOF */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), gt_sec * 512, 5);
	expect_open(-EINVAL); /* GTE before overHead */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), gt_sec * 512, 0x7fffffff);
	expect_open(-EINVAL); /* GTE past EOF */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), gt_sec * 512, 1);
	expect_open(-EINVAL); /* GTE 1 without the zeroed-grain flag */
}

static void test_bad_grains(void **st)
{
	(void)st;
	mk("");
	tu_poke_le64(tu_path("s.vmdk"), GRAIN0, 128);
	expect_read_eio(); /* marker lba */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), GRAIN0 + 8, 0x7fffffff);
	expect_read_eio(); /* marker size > compressBound */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), GRAIN0 + 8, 0);
	expect_read_eio(); /* marker size 0 */
	mk("");
	tu_poke(tu_path("s.vmdk"), GRAIN0 + 12 + 40, "garbage!garbage!", 16);
	expect_read_eio(); /* corrupt deflate data */
	mk("");
	tu_poke_le32(tu_path("s.vmdk"), GRAIN0 + 8, 100);
	expect_read_eio(); /* compressed data cut short */
}

/* A grain that inflates to more than a grain: halve the grain size in the
 * header and footer of a stream whose grain 0 is 64 KiB of data. */
static void test_zip_bomb(void **st)
{
	uint64_t foot;

	(void)st;
	mk("");
	foot = file_size("s.vmdk") - 1024;
	tu_poke_le64(tu_path("s.vmdk"), 20, 64);
	tu_poke_le64(tu_path("s.vmdk"), foot + 20, 64);
	{
		struct vmdk_extent e;
		uint8_t buf[512];
		uint64_t pnum;

		assert_int_equal(open_s(&e), 0);
		assert_int_equal(esx_status(&e, 0, 512, &pnum), VD_DATA);
		assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), 0), -EIO);
		esx_extent_close(&e);
	}
}

static void test_corpus(void **st)
{
	const char *shared = getenv("VD_SHARED");

	(void)st;
	if (!shared ||
	    esx_run("test -f '%s/corpus/govmomi/ttylinux-pc_i486-16.1-disk1.vmdk'", shared))
		skip();
	assert_int_equal(
	    esx_run("cp '%s/corpus/govmomi/ttylinux-pc_i486-16.1-disk1.vmdk' s.vmdk", shared), 0);
	{
		struct vmdk_extent e;
		assert_int_equal(esx_extent_open(&vmdk_stream_ops, tu_path("s.vmdk"), 61440, &e),
				 -EINVAL);
	}
}

/* A stream through vdcore's chain layer, alone and as the base of a hosted
 * sparse delta made by qemu-img (expected raw from qemu-img convert). */
static void test_chain(void **st)
{
	static const char *const alone[] = {"r.raw"};
	static const char *const pair[] = {"r.raw", "c.raw"};

	(void)st;
	mk("");
	assert_int_equal(esx_chain_check("s.vmdk", 1, alone, "\"layout\": \"vmware\""), 0);
	if (esx_run("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0)
		skip();
	for (int qemu = 0; qemu < 2; qemu++) {
		if (qemu)
			assert_int_equal(esx_run("qemu-img convert -f raw -O vmdk -o "
						 "subformat=streamOptimized r.raw s.vmdk"),
					 0);
		assert_int_equal(
		    esx_run("rm -f c.vmdk && qemu-img create -q -f vmdk -b s.vmdk "
			    "-F vmdk c.vmdk && qemu-io -f vmdk -c 'write -P 0x33 70000 "
			    "200000' -c 'write -P 0x44 3000000 4096' c.vmdk >/dev/null && "
			    "qemu-img convert -O raw c.vmdk c.raw"),
		    0);
		assert_int_equal(
		    esx_chain_check("c.vmdk", 2, pair,
				    qemu ? "\"layout\": \"qemu\"" : "\"layout\": \"vmware\""),
		    0);
	}
}

static bool json_is_null(const char *js, const char *key)
{
	char pat[64];

	snprintf(pat, sizeof(pat), "\"%s\": null", key);
	return strstr(js, pat) != NULL;
}

/* A stream with more GTs than are checked at open (70 MiB in 512-byte
 * grains: 280 GD entries): its GTs are read lazily, so the grains are not
 * counted at open and a bad entry fails only the reads of its grain. */
#define BIG_SECTORS (70u * 2048u)
static void test_large_gd_is_lazy(void **st)
{
	struct vmdk_extent e;
	uint8_t *got, *want, buf[512];
	uint64_t gd_sec, gt_sec, bad = 69u * 2048u + 7u;
	size_t len;
	char *js;

	(void)st;
	assert_int_equal(
	    esx_run("truncate -s 70M big.raw && "
		    "head -c 65536 /dev/urandom | dd of=big.raw conv=notrunc status=none && "
		    "head -c 5000 /dev/urandom | dd of=big.raw bs=1 seek=3146000 "
		    "conv=notrunc status=none && "
		    "head -c 9000 /dev/urandom | dd of=big.raw bs=512 seek=%u "
		    "conv=notrunc status=none && \"$T/mkstream\" big.raw s.vmdk --grain 1",
		    69u * 2048u),
	    0);
	want = tu_read_file(tu_path("big.raw"), &len);
	assert_int_equal(len, BIG_SECTORS * 512u);
	assert_int_equal(esx_extent_open(&vmdk_stream_ops, tu_path("s.vmdk"), BIG_SECTORS, &e), 0);
	js = esx_describe(&e);
	assert_true(json_is_null(js, "compressed_grains"));
	assert_int_equal(esx_json_u64(js, "gd_entries"), 280);
	free(js);
	assert_int_equal(esx_extent_read_all(&e, 1 << 20, &got, NULL), 0);
	assert_memory_equal(got, want, len);
	free(got);
	esx_extent_close(&e);

	/* a GT entry before overHead, in the last GT: open works, that grain fails */
	got = tu_read_file(tu_path("s.vmdk"), &len);
	gd_sec = vd_get_le64(got + len - 1024 + 56);
	gt_sec = vd_get_le32(got + gd_sec * 512 + bad / 512 * 4);
	free(got);
	tu_poke_le32(tu_path("s.vmdk"), gt_sec * 512 + bad % 512 * 4, 5);
	assert_int_equal(esx_extent_open(&vmdk_stream_ops, tu_path("s.vmdk"), BIG_SECTORS, &e), 0);
	assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), bad * 512), -EIO);
	assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), (bad + 1) * 512), 0);
	assert_memory_equal(buf, want + (bad + 1) * 512, sizeof(buf));
	assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), 512), 0);
	assert_memory_equal(buf, want + 512, sizeof(buf));
	esx_extent_close(&e);
	free(want);
}

static uint64_t rss_kb(void)
{
	char line[256];
	uint64_t kb = 0;
	FILE *f = fopen("/proc/self/status", "r");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %" SCNu64, &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* A few KiB claiming 2^26 or 2^32 sectors in 512-byte grains, scanned or
 * with a GD: memory follows the file (main held 4 bytes per claimed grain:
 * 256 MiB for 2^26, and refused 2^32), and the one grain reads back. */
static void test_huge_claims(void **st)
{
	static const struct {
		const char *kind;
		uint64_t cap, data;
	} cases[] = {{"scan", 1ull << 26, 3},
		     {"scan", 1ull << 32, 4000000000ull},
		     {"stream", 1ull << 32, 700}};
	uint8_t buf[512];

	(void)st;
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vmdk_extent e;
		uint64_t before = rss_kb();

		assert_int_equal(esx_run("\"$T/mkclaims\" h.vmdk %s %llu 1 --data %llu",
					 cases[i].kind, (unsigned long long)cases[i].cap,
					 (unsigned long long)cases[i].data),
				 0);
		assert_int_equal(
		    esx_extent_open(&vmdk_stream_ops, tu_path("h.vmdk"), cases[i].cap, &e), 0);
		assert_true(rss_kb() < before + 16 * 1024);
		assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), cases[i].data * 512), 0);
		for (unsigned k = 0; k < sizeof(buf); k++)
			assert_int_equal(buf[k], (cases[i].data + 1) & 0xff);
		assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), (cases[i].data + 1) * 512),
				 0);
		assert_true(buf[0] == 0 && buf[511] == 0);
		esx_extent_close(&e);
	}
}

/* After a first request, the rest of a small stream is inflated ahead on the
 * worker, but for the grains deflate could not shrink (the random ones,
 * every fourth: inflating them is a copy, which the reader does as cheaply);
 * reading it then inflates nothing twice and hits the cache. */
static void test_inflate_ahead(void **st)
{
	struct vmdk_extent e;
	uint8_t *got, buf[4096];
	uint64_t n, ahead = 0;
	char *js;

	(void)st;
	mk("");
	assert_int_equal(open_s(&e), 0);
	assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), 0), 0);
	js = esx_describe(&e);
	n = esx_json_u64(js, "compressed_grains");
	free(js);
	/* every data grain but the random ones (0, 4, ..., 60: each is
	 * followed by a text grain, whose marker bounds its size) */
	for (int i = 0; i < 500 && ahead < n - 16; i++) {
		usleep(10000);
		js = esx_describe(&e);
		ahead = esx_json_u64(js, "grains_inflated_ahead");
		free(js);
	}
	usleep(50000); /* and no more */
	js = esx_describe(&e);
	assert_int_equal(esx_json_u64(js, "grains_inflated_ahead"), n - 16);
	free(js);
	assert_int_equal(esx_extent_read_all(&e, 65536, &got, NULL), 0);
	assert_memory_equal(got, raw, RAW_BYTES);
	free(got);
	js = esx_describe(&e);
	assert_int_equal(esx_json_u64(js, "grains_inflated"), n - 15);
	assert_int_equal(esx_json_u64(js, "grains_read_stored"), 15);
	assert_true(esx_json_u64(js, "cache_hits") >= n - 16);
	free(js);
	esx_extent_close(&e);
}

/* A fork while the worker inflates ahead (vdmount reads partition tables,
 * then daemonizes): the child has no worker and must still read everything,
 * not wait for a table its parent's worker was loading. */
static void test_fork_while_ahead(void **st)
{
	(void)st;
	mk("");
	for (int round = 0; round < 32; round++) {
		struct vmdk_extent e;
		uint8_t buf[4096];
		int status;
		pid_t pid;

		assert_int_equal(open_s(&e), 0);
		/* two requests in a row start the worker; fork at once, and after
		 * a growing pause, to meet it mid-table in some rounds */
		assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), 0), 0);
		assert_int_equal(vmdk_extent_read(&e, buf, sizeof(buf), sizeof(buf)), 0);
		usleep((useconds_t)(round % 8) * 150);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			uint8_t *got;

			alarm(30); /* a reader waiting for a worker it does not have */
			if (esx_extent_read_all(&e, 65536, &got, NULL) != 0 ||
			    memcmp(got, raw, RAW_BYTES) != 0)
				_exit(1);
			_exit(0);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
		esx_extent_close(&e);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vmware_layouts),
	    cmocka_unit_test(test_qemu_layout),
	    cmocka_unit_test(test_block_status),
	    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_bad_header_footer),
	    cmocka_unit_test(test_bad_tables),
	    cmocka_unit_test(test_bad_grains),
	    cmocka_unit_test(test_zip_bomb),
	    cmocka_unit_test(test_corpus),
	    cmocka_unit_test(test_chain),
	    cmocka_unit_test(test_large_gd_is_lazy),
	    cmocka_unit_test(test_huge_claims),
	    cmocka_unit_test(test_inflate_ahead),
	    cmocka_unit_test(test_fork_while_ahead),
	};
	int ret = cmocka_run_group_tests(tests, NULL, NULL);

	free(raw);
	return ret;
}
