/* Unit tests of the VMDK offset map with flat, ZERO, RDONLY and NOACCESS
 * extents: the size is the sum of every SECTORS, each extent lands at the
 * right offset, reads straddling extents match a model, NOACCESS gives -EIO,
 * truncated flat files are refused. Also qemu-img's monolithicFlat and the
 * real-world corpus (skipped when absent). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "chain/chain.h"
#include "test_util.h"
#include "vmdk_gen_helper.h"

/* Writes a flat file of n sectors whose bytes encode their own offset and seed. */
static void flat_file(const char *name, uint64_t sectors, uint8_t seed, uint8_t *model)
{
	size_t n = sectors * 512;
	struct kgen g = {0};

	g.file = malloc(n);
	g.len = n;
	assert_non_null(g.file);
	for (size_t i = 0; i < n; i++)
		g.file[i] = (uint8_t)(i / 512 * 3 + i * 5 + seed);
	if (model)
		memcpy(model, g.file, n);
	kgen_write(&g, tu_path("%s", name));
	free(g.file);
}

#define S1 100
#define S2 8  /* ZERO */
#define S3 50 /* RDONLY FLAT with OFFSET 10 */
#define S4 16 /* NOACCESS */
#define S5 30 /* VMFS */
#define TOTAL (S1 + S2 + S3 + S4 + S5)

static uint8_t model[TOTAL * 512];

static void make_multi(void)
{
	uint8_t tmp[(S3 + 10) * 512];

	memset(model, 0, sizeof(model));
	flat_file("m-f001.vmdk", S1, 1, model);
	flat_file("m f003.vmdk", S3 + 10, 3, tmp);
	memcpy(model + (S1 + S2) * 512, tmp + 10 * 512, S3 * 512);
	flat_file("m-f005.vmdk", S5, 5, model + (S1 + S2 + S3 + S4) * 512);
	tu_write_text(tu_path("m.vmdk"),
		      "# Disk DescriptorFile\r\nversion=1\r\nCID=abcdef01\r\nparentCID=ffffffff\r\n"
		      "createType=\"twoGbMaxExtentFlat\"\r\n\r\n# Extent description\r\n"
		      "RW 100 FLAT \"m-f001.vmdk\" 0\r\nRW 8 ZERO\r\n"
		      "RDONLY 50 FLAT \"m f003.vmdk\" 10\r\nNOACCESS 16 FLAT \"missing.vmdk\" 0\r\n"
		      "RW 30 VMFS \"m-f005.vmdk\"\r\n");
}

static void test_offsets_and_size(void **state)
{
	struct vd_image *img;
	uint64_t n;
	(void)state;
	make_multi();
	assert_int_equal(vd_image_open(tu_path("m.vmdk"), 0, &img), 0);
	assert_int_equal(img->size, TOTAL * 512);
	assert_string_equal(img->subformat, "twoGbMaxExtentFlat");
	assert_int_equal(img->cow_unit, 512);
	assert_int_equal(img->alloc_unit, 0);
	assert_int_equal(vd_image_block_status(img, 0, TOTAL * 512, &n, NULL), VD_DATA);
	assert_int_equal(n, S1 * 512);
	assert_int_equal(
	    vd_image_block_status(img, S1 * 512 + 3, TOTAL * 512 - S1 * 512 - 3, &n, NULL),
	    VD_ZERO);
	assert_int_equal(n, S2 * 512 - 3);
	assert_int_equal(vd_image_block_status(img, (S1 + S2) * 512, 10, &n, NULL), VD_DATA);
	assert_int_equal(n, 10);
	assert_int_equal(vd_image_block_status(img, (S1 + S2 + S3) * 512,
					       TOTAL * 512 - (S1 + S2 + S3) * 512, &n, NULL),
			 VD_DATA);
	assert_int_equal(n, S4 * 512);
	assert_int_equal(vd_image_block_status(img, (TOTAL - 1) * 512, 512, &n, NULL), VD_DATA);
	assert_int_equal(n, 512);
	vd_image_close(img);
}

static void test_reads_straddle(void **state)
{
	struct vd_chain *c;
	uint8_t buf[TOTAL * 512];
	static const uint64_t cuts[][2] = {
	    {0, S1 * 512},		    /* extent 1 */
	    {S1 * 512 - 5, 600},	    /* into ZERO */
	    {S1 * 512 - 1, (S2 + 3) * 512}, /* across ZERO into RDONLY */
	    {(S1 + S2) * 512, S3 * 512},
	    {(S1 + S2 + S3 + S4) * 512 - 0, S5 * 512},
	    {(S1 + S2 + S3 + S4) * 512 + 1, S5 * 512 - 1},
	};
	(void)state;
	make_multi();
	assert_int_equal(vd_chain_open(tu_path("m.vmdk"), 0, &c), 0);
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		memset(buf, 0xee, sizeof(buf));
		assert_int_equal(vd_chain_read(c, 0, buf, cuts[i][1], cuts[i][0]), 0);
		assert_memory_equal(buf, model + cuts[i][0], cuts[i][1]);
	}
	vd_chain_close(c);
}

static void test_noaccess_eio(void **state)
{
	struct vd_chain *c;
	uint8_t buf[2048];
	unsigned errs;
	(void)state;
	make_multi();
	assert_int_equal(vd_chain_open(tu_path("m.vmdk"), 0, &c), 0);
	errs = vd_log_error_count();
	assert_int_equal(vd_chain_read(c, 0, buf, 512, (S1 + S2 + S3) * 512), -EIO);
	assert_int_equal(vd_log_error_count(), errs + 1);
	/* a read that reaches into it from the RDONLY extent fails as a whole */
	assert_int_equal(vd_chain_read(c, 0, buf, 2048, (S1 + S2 + S3) * 512 - 1024), -EIO);
	vd_chain_close(c);
}

static void expect_open_einval(const char *desc_text)
{
	struct vd_image *img = NULL;
	unsigned errs = vd_log_error_count();

	tu_write_text(tu_path("bad.vmdk"), desc_text);
	assert_int_equal(vd_image_open(tu_path("bad.vmdk"), 0, &img), -EINVAL);
	assert_null(img);
	assert_int_equal(vd_log_error_count(), errs + 1);
}

static void test_flat_refusals(void **state)
{
	struct vd_image *img = NULL;
	(void)state;
	flat_file("short.img", 10, 0, NULL);
	/* shorter than SECTORS */
	expect_open_einval("CID=1\ncreateType=\"monolithicFlat\"\nRW 11 FLAT \"short.img\" 0\n");
	/* OFFSET pushes the end past EOF */
	expect_open_einval("CID=1\ncreateType=\"monolithicFlat\"\nRW 10 FLAT \"short.img\" 1\n");
	expect_open_einval("CID=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"short.img\" "
			   "18014398509481984\n");
	/* missing extent file: -ENOENT, one line naming it */
	tu_write_text(tu_path("bad.vmdk"),
		      "CID=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"nope.img\" 0\n");
	assert_int_equal(vd_image_open(tu_path("bad.vmdk"), 0, &img), -ENOENT);
	/* an extent file opened directly: COWD */
	tu_write_text(tu_path("cowd.vmdk"), "COWD\x01");
	assert_int_equal(vd_image_open(tu_path("cowd.vmdk"), 0, &img), -EINVAL);
	tu_write_text(tu_path("kdmv.vmdk"), "KDMV\x01");
	assert_int_equal(vd_image_open(tu_path("kdmv.vmdk"), 0, &img), -EINVAL);
	/* absolute path allowed */
	{
		char t[1024];

		snprintf(t, sizeof(t),
			 "CID=1\ncreateType=\"monolithicFlat\"\nRW 10 FLAT \"%s\" 0\n",
			 tu_path("short.img"));
		tu_write_text(tu_path("abs.vmdk"), t);
		assert_int_equal(vd_image_open(tu_path("abs.vmdk"), 0, &img), 0);
		assert_int_equal(img->size, 5120);
		vd_image_close(img);
	}
}

static void test_qemu_flat(void **state)
{
	char raw[600];
	(void)state;
	if (tu_sh("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0)
		skip();
	assert_int_equal(tu_sh("cd '%s' && qemu-img create -q -f vmdk -o subformat=monolithicFlat"
			       " qf.vmdk 3M && qemu-io -f vmdk -c 'write -P 0x5a 65000 70000'"
			       " qf.vmdk >/dev/null && qemu-img convert -f vmdk -O raw qf.vmdk"
			       " qf.raw",
			       tu_dir()),
			 0);
	snprintf(raw, sizeof(raw), "%s", tu_path("qf.raw"));
	assert_int_equal(kgen_compare_chain(tu_path("qf.vmdk"), 0, raw), 0);
}

/* Directory of this test executable; vdcat is built next to it. */
static const char *exe_dir(void)
{
	static char d[512];
	ssize_t n = readlink("/proc/self/exe", d, sizeof(d) - 1);
	char *slash;

	if (n <= 0)
		return ".";
	d[n] = '\0';
	slash = strrchr(d, '/');
	if (slash)
		*slash = '\0';
	return d;
}

/* The real-world corpus, unpacked into a temp dir, read with vdcat and
 * compared with the sha256 in expected.tsv. */
static void test_corpus(void **state)
{
	const char *shared = getenv("VD_SHARED");
	const char *vdcat_dir = exe_dir();
	static const char *const ok[] = {
	    "vmdk-rs/monolithicSparse.vmdk",
	    "vmdk-rs/monolithicFlat.vmdk",
	    "vmdk-rs/twoGbMaxExtentSparse.vmdk",
	    "vmdk-rs/twoGbMaxExtentFlat.vmdk",
	    "vmdk-rs/vmfs_thick.vmdk",
	    "dfvfs/ext2.vmdk",
	    "dfvfs/image.vmdk",
	};
	(void)state;
	if (!shared ||
	    tu_sh("test -f '%s/corpus/unpack.sh' && test -x '%s/vdcat'", shared, vdcat_dir) != 0)
		skip();
	assert_int_equal(tu_sh("sh '%s/corpus/unpack.sh' '%s/corpus' >/dev/null", shared, tu_dir()),
			 0);
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		print_message("corpus %s\n", ok[i]);
		assert_int_equal(tu_sh("cd '%s/corpus' && want=$(awk -F'\\t' '$1==\"%s\"{print $4}'"
				       " '%s/corpus/expected.tsv') && got=$(%s/vdcat %s |"
				       " sha256sum | cut -c1-64) && test \"$want\" = \"$got\"",
				       tu_dir(), ok[i], shared, vdcat_dir, ok[i]),
				 0);
	}
	assert_int_equal(tu_sh("cd '%s/corpus' && ! %s/vdcat vmdk-rs/vmfs_thick-000001.vmdk"
			       " >/dev/null 2>&1 && ! %s/vdcat qemu/afl9.vmdk >/dev/null 2>&1",
			       tu_dir(), vdcat_dir, vdcat_dir),
			 0);
}

/* Writes descriptor text to name, opens it and compares the disk with want. */
static void expect_flat_desc(const char *name, const char *text, const uint8_t *want, size_t n)
{
	uint8_t buf[16 * 512];
	struct vd_chain *c;

	tu_write_text(tu_path("%s", name), text);
	assert_int_equal(vd_chain_open(tu_path("%s", name), 0, &c), 0);
	assert_int_equal(vd_chain_read(c, 0, buf, n, 0), 0);
	assert_memory_equal(buf, want, n);
	vd_chain_close(c);
}

#define FLAT_DESC(enc, cid, name, ddb)                                                             \
	"# Disk DescriptorFile\n" enc "version=1\nCID=" cid "\nparentCID=ffffffff\n"               \
	"createType=\"monolithicFlat\"\nRW 16 FLAT \"" name "\" 0\n" ddb

/* Names in a legacy charset (encoding= / ddb.encoding): the file on disk is
 * found under its UTF-8 spelling; the bytes as written still work. */
static void test_encoded_names(void **state)
{
	uint8_t want[16 * 512], buf[sizeof(want)];
	struct vd_chain *c;
	struct kgen b, d;
	(void)state;

	/* windows-1252 "Caf\xe9" is UTF-8 "Caf\xc3\xa9" on disk */
	flat_file("Caf\xc3\xa9-flat.vmdk", 16, 7, want);
	expect_flat_desc(
	    "cp1252.vmdk",
	    FLAT_DESC("encoding=\"windows-1252\"\n", "11111111", "Caf\xe9-flat.vmdk", ""), want,
	    sizeof(want));
	/* GBK "\xc4\xe3\xba\xc3" (ni hao) via ddb.encoding */
	flat_file("\xe4\xbd\xa0\xe5\xa5\xbd-flat.vmdk", 16, 9, want);
	expect_flat_desc(
	    "gbk.vmdk",
	    FLAT_DESC("", "22222222", "\xc4\xe3\xba\xc3-flat.vmdk", "ddb.encoding = \"GBK\"\n"),
	    want, sizeof(want));
	/* a file really named with the legacy bytes is still found as written */
	flat_file("Na\xefve-flat.vmdk", 16, 11, want);
	expect_flat_desc(
	    "raw.vmdk",
	    FLAT_DESC("encoding=\"windows-1252\"\n", "33333333", "Na\xefve-flat.vmdk", ""), want,
	    sizeof(want));

	/* a windows-1252 parent hint naming a parent stored under UTF-8 */
	kgen_init(&b, 16, 8, 1, 0x3,
		  "CID=aaaaaaaa\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n"
		  "RW 16 SPARSE \"x.vmdk\"\n");
	kgen_alloc(&b, 0, 0x42);
	kgen_write(&b, tu_path("B\xc3\xa4se.vmdk"));
	kgen_init(&d, 16, 8, 1, 0x3,
		  "encoding=\"windows-1252\"\nCID=bbbbbbbb\nparentCID=aaaaaaaa\n"
		  "parentFileNameHint=\"B\xe4se.vmdk\"\ncreateType=\"monolithicSparse\"\n"
		  "RW 16 SPARSE \"y.vmdk\"\n");
	kgen_write(&d, tu_path("delta.vmdk"));
	assert_int_equal(vd_chain_open(tu_path("delta.vmdk"), 0, &c), 0);
	assert_int_equal(vd_chain_depth(c), 2);
	assert_string_equal(vd_chain_link(c, 1)->hint_kind, "parentFileNameHint (UTF-8)");
	assert_int_equal(vd_chain_read(c, 1, buf, 8 * 512, 0), 0);
	assert_memory_equal(buf, b.model, 8 * 512);
	vd_chain_close(c);
	kgen_free(&b);
	kgen_free(&d);

	/* TSCII turns byte 0x82 into four Tamil characters (12 bytes of UTF-8).
	 * The old conversion allocated 4n + 1 bytes for n input bytes and put
	 * the NUL after the output: a name whose output fills exactly that
	 * (two 0x82 and five ASCII bytes: 24 + 5 = 29 = 4 * 7 + 1) wrote one
	 * byte past the buffer (ASan heap-buffer-overflow before the fix).
	 * Every mix up to 24 bytes must give a clean "cannot open". */
	for (unsigned n = 1; n <= 24; n++) {
		for (unsigned k = 0; k <= n; k++) {
			char name[64], text[256];
			struct vd_image *img;
			int r;

			memset(name, 'a', n);
			memset(name, 0x82, k);
			name[n] = 0;
			snprintf(text, sizeof(text),
				 "# Disk DescriptorFile\nencoding=\"TSCII\"\nversion=1\n"
				 "CID=44444444\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
				 "RW 16 FLAT \"%s\" 0\n",
				 name);
			tu_write_text(tu_path("tscii.vmdk"), text);
			r = vd_image_open(tu_path("tscii.vmdk"), 0, &img);
			assert_true(r == -ENOENT || r == -ENAMETOOLONG);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_offsets_and_size), cmocka_unit_test(test_reads_straddle),
	    cmocka_unit_test(test_noaccess_eio),     cmocka_unit_test(test_flat_refusals),
	    cmocka_unit_test(test_qemu_flat),	     cmocka_unit_test(test_corpus),
	    cmocka_unit_test(test_encoded_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
