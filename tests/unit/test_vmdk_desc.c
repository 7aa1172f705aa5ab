/* Unit tests of the VMDK text descriptor parser (disk/vmdk_desc.c): good
 * descriptors in every spelling we accept, and one malformed descriptor per
 * check, each of which must give -EINVAL with a logged line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "disk/vmdk_desc.h"

#define HDR "# Disk DescriptorFile\nversion=1\nCID=0a1b2c3d\nparentCID=ffffffff\n"

static int parse(const char *text, struct vmdk_desc *d)
{
	return vmdk_desc_parse(text, strlen(text), "t.vmdk", d);
}

static void test_monolithic_flat_lf(void **state)
{
	struct vmdk_desc d;
	const char *t = HDR "createType=\"monolithicFlat\"\n\n# Extent description\n"
			    "RW 20480 FLAT \"disk-flat.vmdk\" 0\n\n#DDB\n"
			    "ddb.adapterType = \"buslogic\"\nddb.geometry.heads = \"4\"\n"
			    "ddb.uuid = \"60 00 C2 9a 1d 7b 49 44-dc 53 e6 d3 e5 89 7b 0d\"\n"
			    "ddb.longContentID = \"c30e9133f6a8e34df61188c50a1b2c3d\"\n"
			    "ddb.toolsVersion = \"1\"\n";
	(void)state;
	assert_int_equal(parse(t, &d), 0);
	assert_string_equal(d.create_type, "monolithicFlat");
	assert_int_equal(d.version, 1);
	assert_int_equal(d.cid, 0x0a1b2c3d);
	assert_string_equal(d.cid_text, "0a1b2c3d");
	assert_int_equal(d.parent_cid, VMDK_CID_NONE);
	assert_null(d.parent_hint);
	assert_int_equal(d.n_extents, 1);
	assert_int_equal(d.extents[0].type, VMDK_EXT_FLAT);
	assert_int_equal(d.extents[0].access, VMDK_ACCESS_RW);
	assert_int_equal(d.extents[0].sectors, 20480);
	assert_int_equal(d.extents[0].offset, 0);
	assert_string_equal(d.extents[0].name, "disk-flat.vmdk");
	assert_int_equal(d.extents[0].line, 8);
	assert_int_equal(d.total_sectors, 20480);
	assert_int_equal(d.n_ddb, 5); /* the whole DDB */
	assert_string_equal(d.ddb[4].key, "toolsVersion");
	assert_string_equal(d.ddb[0].key, "adapterType");
	assert_string_equal(d.ddb[0].value, "buslogic");
	assert_string_equal(d.ddb[2].value, "60 00 C2 9a 1d 7b 49 44-dc 53 e6 d3 e5 89 7b 0d");
	vmdk_desc_free(&d);
}

/* Every ddb.* entry is kept, each key once (the last value wins, keys match
 * case-insensitively), up to VMDK_DESC_MAX_DDB. */
static void test_ddb_whole(void **state)
{
	struct vmdk_desc d;
	struct vd_buf t = {0};

	(void)state;
	vd_buf_printf(&t, HDR "createType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0\n"
			      "ddb.adapterType = \"ide\"\nddb.thinProvisioned = \"1\"\n"
			      "ddb.ADAPTERTYPE = \"lsilogic\"\n");
	assert_int_equal(parse(t.data, &d), 0);
	assert_int_equal(d.n_ddb, 2);
	assert_string_equal(d.ddb[0].key, "adapterType");
	assert_string_equal(d.ddb[0].value, "lsilogic");
	assert_string_equal(d.ddb[1].key, "thinProvisioned");
	vmdk_desc_free(&d);
	for (unsigned i = 0; i < VMDK_DESC_MAX_DDB + 100; i++)
		vd_buf_printf(&t, "ddb.k%u = \"%u\"\n", i, i);
	assert_int_equal(parse(t.data, &d), 0);
	assert_int_equal(d.n_ddb, VMDK_DESC_MAX_DDB);
	assert_string_equal(d.ddb[VMDK_DESC_MAX_DDB - 1].key, "k1021");
	vmdk_desc_free(&d);
	vd_buf_free(&t);
}

static void test_crlf_encoding_first_case(void **state)
{
	struct vmdk_desc d;
	const char *t = "encoding=\"windows-1252\"\r\n# Disk DescriptorFile\r\nVERSION=3\r\n"
			"cid=695f7fa\r\nParentCid=1234ABCD\r\n"
			"parentFileNameHint=\"C:\\VMs\\My Disk\\base.vmdk\"\r\n"
			"CREATETYPE = \"2GbMaxExtentSparse\"\r\n"
			"  rw 4192256 sparse \"My Disk-s001.vmdk\"  \r\n"
			"RW 8 SPARSE \"My Disk-s002.vmdk\"\r\n\r\n"
			"# The disk Data Base\r\nDDB.ADAPTERTYPE=\"ide\"\r\n";
	(void)state;
	assert_int_equal(parse(t, &d), 0);
	assert_string_equal(d.encoding, "windows-1252");
	assert_int_equal(d.version, 3);
	assert_int_equal(d.cid, 0x0695f7fa);
	assert_string_equal(d.cid_text, "695f7fa");
	assert_int_equal(d.parent_cid, 0x1234abcd);
	assert_string_equal(d.parent_cid_text, "1234ABCD");
	assert_string_equal(d.parent_hint, "C:\\VMs\\My Disk\\base.vmdk");
	assert_string_equal(d.create_type, "twoGbMaxExtentSparse");
	assert_int_equal(d.n_extents, 2);
	assert_string_equal(d.extents[0].name, "My Disk-s001.vmdk");
	assert_int_equal(d.extents[0].sectors, 4192256);
	assert_int_equal(d.extents[1].sectors, 8);
	assert_int_equal(d.total_sectors, 4192264);
	assert_int_equal(d.n_ddb, 1);
	assert_string_equal(d.ddb[0].value, "ide");
	vmdk_desc_free(&d);
}

static void test_every_extent_kind(void **state)
{
	struct vmdk_desc d;
	const char *t = HDR "createType=\"custom\"\n"
			    "RW 100 FLAT \"a b.img\" 7\n"
			    "RDONLY 200 SPARSE \"s.vmdk\"\n"
			    "NOACCESS 300 ZERO\n"
			    "RW 400 VMFS \"v-flat.vmdk\"\n"
			    "RW 500 VMFSSPARSE \"d-delta.vmdk\"\n"
			    "RW 600 SESPARSE \"d-sesparse.vmdk\"\n"
			    "RW 700 ZERO\n";
	static const enum vmdk_extent_type types[] = {
	    VMDK_EXT_FLAT,	 VMDK_EXT_SPARSE,   VMDK_EXT_ZERO, VMDK_EXT_VMFS,
	    VMDK_EXT_VMFSSPARSE, VMDK_EXT_SESPARSE, VMDK_EXT_ZERO,
	};
	(void)state;
	assert_int_equal(parse(t, &d), 0);
	assert_int_equal(d.n_extents, 7);
	for (unsigned i = 0; i < 7; i++) {
		assert_int_equal(d.extents[i].type, types[i]);
		assert_int_equal(d.extents[i].sectors, 100 * (i + 1));
	}
	assert_string_equal(d.extents[0].name, "a b.img");
	assert_int_equal(d.extents[0].offset, 7);
	assert_int_equal(d.extents[1].access, VMDK_ACCESS_RDONLY);
	assert_int_equal(d.extents[2].access, VMDK_ACCESS_NOACCESS);
	assert_null(d.extents[2].name);
	assert_int_equal(d.total_sectors, 2800);
	assert_string_equal(vmdk_extent_type_name(VMDK_EXT_VMFSSPARSE), "VMFSSPARSE");
	assert_string_equal(vmdk_access_name(VMDK_ACCESS_NOACCESS), "NOACCESS");
	vmdk_desc_free(&d);
}

static void test_create_type_spellings(void **state)
{
	static const char *const in[][2] = {
	    {"monolithicSparse", "monolithicSparse"},
	    {"twoGbMaxExtentFlat", "twoGbMaxExtentFlat"},
	    {"2GbMaxExtentFlat", "twoGbMaxExtentFlat"},
	    {"streamOptimized", "streamOptimized"},
	    {"vmfs", "vmfs"},
	    {"VMFSSPARSE", "vmfsSparse"},
	    {"vmfsSeSparse", "seSparse"},
	    {"vmfsThin", "vmfsThin"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		struct vmdk_desc d;
		char t[256];

		snprintf(t, sizeof(t), HDR "createType=\"%s\"\nRW 1 ZERO\n", in[i][0]);
		assert_int_equal(parse(t, &d), 0);
		assert_string_equal(d.create_type, in[i][1]);
		vmdk_desc_free(&d);
	}
}

/* An embedded descriptor is NUL-padded: parsing stops at the first NUL. */
static void test_nul_padding(void **state)
{
	struct vmdk_desc d;
	char t[1024] = HDR "createType=\"monolithicSparse\"\nRW 64 SPARSE \"x.vmdk\"\n";
	(void)state;
	memcpy(t + 900, "garbage line\n", 13);
	assert_int_equal(vmdk_desc_parse(t, sizeof(t), "t.vmdk", &d), 0);
	assert_int_equal(d.n_extents, 1);
	vmdk_desc_free(&d);
}

static void expect_bad(const char *t)
{
	struct vmdk_desc d;
	unsigned errs = vd_log_error_count();

	assert_int_equal(parse(t, &d), -EINVAL);
	assert_int_equal(vd_log_error_count(), errs + 1);
	assert_null(d.extents);
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
	    /* missing createType */
	    HDR "RW 1 ZERO\n",
	    /* missing CID */
	    "createType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0\n",
	    /* no extents */
	    HDR "createType=\"monolithicFlat\"\n",
	    /* bad SECTORS */
	    HDR "createType=\"monolithicFlat\"\nRW abc FLAT \"f\" 0\n",
	    HDR "createType=\"monolithicFlat\"\nRW 0 FLAT \"f\" 0\n",
	    HDR "createType=\"monolithicFlat\"\nRW -5 FLAT \"f\" 0\n",
	    HDR "createType=\"monolithicFlat\"\nRW 99999999999999999999999 FLAT \"f\" 0\n",
	    HDR "createType=\"custom\"\nRW 18014398509481984 ZERO\nRW 1 ZERO\n",
	    /* unterminated quotes */
	    HDR "createType=\"monolithicFlat\"\nRW 1 FLAT \"f 0\n",
	    HDR "createType=\"monolithicFlat\nRW 1 FLAT \"f\" 0\n",
	    HDR "createType=\"monolithicFlat\"x\nRW 1 FLAT \"f\" 0\n",
	    /* unquoted or empty file name, junk after it */
	    HDR "createType=\"monolithicFlat\"\nRW 1 FLAT f 0\n",
	    HDR "createType=\"monolithicFlat\"\nRW 1 FLAT \"\" 0\n",
	    HDR "createType=\"monolithicFlat\"\nRW 1 FLAT \"f\"0\n",
	    HDR "createType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0 junk\n",
	    HDR "createType=\"monolithicFlat\"\nRW 1 FLAT \"f\" x\n",
	    /* file name missing, offset where not allowed */
	    HDR "createType=\"monolithicFlat\"\nRW 1 FLAT\n",
	    HDR "createType=\"monolithicSparse\"\nRW 1 SPARSE \"s\" 0\n",
	    /* unknown types */
	    HDR "createType=\"monolithicFlat\"\nRW 1 FLOT \"f\" 0\n",
	    HDR "createType=\"monolithicFlat\"\nRW 1\n",
	    HDR "createType=\"weirdSparse\"\nRW 1 ZERO\n",
	    /* raw device mappings */
	    HDR "createType=\"vmfsRDM\"\nRW 1 VMFSRDM \"r\"\n",
	    HDR "createType=\"fullDevice\"\nRW 1 FLAT \"/dev/sda\" 0\n",
	    HDR "createType=\"partitionedDevice\"\nRW 1 FLAT \"/dev/sda\" 0\n",
	    HDR "createType=\"vmfsRaw\"\nRW 1 VMFS \"r\"\n",
	    HDR "createType=\"vmfs\"\nRW 1 VMFSRAW \"r\"\n",
	    HDR "createType=\"vmfs\"\nRW 1 VMFSRDM \"r\"\n",
	    /* identity */
	    "CID=fffffffe\nparentCID=12345678\ncreateType=\"monolithicSparse\"\nRW 1 SPARSE "
	    "\"s\"\n",
	    "CID=123456789\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0\n",
	    "CID=12g4\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0\n",
	    "CID=\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0\n",
	    HDR "CID=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0\n",
	    HDR "createType=\"monolithicFlat\"\ncreateType=\"vmfs\"\nRW 1 FLAT \"f\" 0\n",
	    HDR "parentFileNameHint=\"\"\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0\n",
	    /* version, garbage line */
	    "version=7\nCID=1\ncreateType=\"monolithicFlat\"\nRW 1 FLAT \"f\" 0\n",
	    HDR "createType=\"monolithicFlat\"\nthis is not a descriptor line\nRW 1 FLAT \"f\" 0\n",
	    HDR "createType=\"monolithicFlat\"\n=value\nRW 1 FLAT \"f\" 0\n",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("malformed #%zu\n", i);
		expect_bad(bad[i]);
	}
}

static void test_too_many_extents(void **state)
{
	struct vd_buf b = {0};
	(void)state;
	vd_buf_printf(&b, HDR "createType=\"custom\"\n");
	for (unsigned i = 0; i <= VMDK_DESC_MAX_EXTENTS; i++)
		vd_buf_printf(&b, "RW 1 ZERO\n");
	assert_false(b.oom);
	assert_true(b.len < VMDK_DESC_MAX);
	expect_bad(b.data);
	vd_buf_free(&b);
}

static void test_too_large(void **state)
{
	size_t n = VMDK_DESC_MAX + 1;
	char *t = malloc(n + 1);
	struct vmdk_desc d;
	(void)state;
	assert_non_null(t);
	memset(t, '#', n);
	memcpy(t, HDR "createType=\"custom\"\nRW 1 ZERO\n#", strlen(HDR) + 31);
	t[n] = '\0';
	assert_int_equal(vmdk_desc_parse(t, n, "t.vmdk", &d), -EINVAL);
	free(t);
}

static void test_sniff(void **state)
{
	static const char *const yes[] = {
	    "# Disk DescriptorFile\nversion=1\n",
	    "encoding=\"UTF-8\"\r\nversion=1\r\nCID=1\r\ncreateType = \"vmfs\"\r\n",
	    "\n\n  CREATETYPE=\"monolithicFlat\"\n",
	};
	static const char *const no[] = {
	    "hello world\n",
	    "createTypeX=1\n",
	    "",
	};
	(void)state;
	for (size_t i = 0; i < 3; i++)
		assert_true(vmdk_desc_sniff((const uint8_t *)yes[i], strlen(yes[i])));
	for (size_t i = 0; i < 3; i++)
		assert_false(vmdk_desc_sniff((const uint8_t *)no[i], strlen(no[i])));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_monolithic_flat_lf),
	    cmocka_unit_test(test_ddb_whole),
	    cmocka_unit_test(test_crlf_encoding_first_case),
	    cmocka_unit_test(test_every_extent_kind),
	    cmocka_unit_test(test_create_type_spellings),
	    cmocka_unit_test(test_nul_padding),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_too_many_extents),
	    cmocka_unit_test(test_too_large),
	    cmocka_unit_test(test_sniff),
	};

	vd_log_set_level(VD_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
