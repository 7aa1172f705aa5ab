/* .vmx and .vmsd parsing (chain/vmx.c) on text written here: a two-disk VM
 * with a CD-ROM and an absent disk, a snapshot tree with two branches,
 * escapes, create times with a negative low word, and every refusal (no
 * disk, duplicate uid, dangling parent or current, a parent cycle, numbers
 * that are not numbers, oversized input). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chain/vmx.h"

static const char VMX[] = ".encoding = \"UTF-8\"\n"
			  "# a comment = \"not a key\"\n"
			  "displayName = \"Web |22prod|22 |7C 1\"\n"
			  "scsi0.present = \"TRUE\"\n"
			  "scsi0:0.present = \"TRUE\"\n"
			  "scsi0:0.fileName = \"web-000002.vmdk\"\n"
			  "SATA0:1.Present = \"true\"\n"
			  "sata0:1.fileName = \"/vmfs/volumes/ds/data.vmdk\"\n"
			  "ide1:0.present = \"TRUE\"\n"
			  "ide1:0.deviceType = \"cdrom-image\"\n"
			  "ide1:0.fileName = \"install.iso\"\n"
			  "scsi0:3.present = \"FALSE\"\n"
			  "scsi0:3.fileName = \"old.vmdk\"\n"
			  "  nvme0:0.fileName=unquoted.vmdk  \r\n"
			  "nvme0:0.present = \"TRUE\"\n"
			  "snapshot.fileName = \"web.vmsd\"\n"
			  "line without an equals sign\n";

static const char VMSD[] = ".encoding = \"UTF-8\"\n"
			   "snapshot.lastUID = \"7\"\n"
			   "snapshot.current = \"5\"\n"
			   "snapshot0.uid = \"1\"\n"
			   "snapshot0.displayName = \"Base install\"\n"
			   "snapshot0.createTimeHigh = \"395000\"\n"
			   "snapshot0.createTimeLow = \"-1294967296\"\n"
			   "snapshot0.numDisks = \"2\"\n"
			   "snapshot0.disk0.fileName = \"web.vmdk\"\n"
			   "snapshot0.disk0.node = \"scsi0:0\"\n"
			   "snapshot0.disk1.fileName = \"data.vmdk\"\n"
			   "snapshot0.disk1.node = \"sata0:1\"\n"
			   "snapshot3.uid = \"5\"\n"
			   "snapshot3.parent = \"1\"\n"
			   "snapshot3.displayName = \"Before patch\"\n"
			   "snapshot3.description = \"KB 123|0A\"\n"
			   "snapshot3.createTimeHigh = \"396000\"\n"
			   "snapshot3.createTimeLow = \"12345\"\n"
			   "snapshot3.disk0.fileName = \"web-000001.vmdk\"\n"
			   "snapshot3.disk0.node = \"scsi0:0\"\n"
			   "snapshot1.uid = \"7\"\n"
			   "snapshot1.parent = \"1\"\n"
			   "snapshot1.displayName = \"Other branch\"\n"
			   "snapshot1.disk0.fileName = \"web-000003.vmdk\"\n"
			   "snapshot1.disk0.node = \"scsi0:0\"\n"
			   "snapshot99999.uid = \"9\"\n" /* index past the cap: ignored */
			   "snapshot.numSnapshots = \"3\"\n";

static void test_vmx(void **state)
{
	struct vd_vmx v;
	const char *why = NULL;

	(void)state;
	assert_int_equal(vd_vmx_parse(VMX, strlen(VMX), &v, &why), 0);
	assert_string_equal(v.display_name, "Web \"prod\" | 1");
	assert_string_equal(v.vmsd, "web.vmsd");
	assert_int_equal(v.n_disks, 3);
	assert_string_equal(v.disks[0].node, "scsi0:0");
	assert_string_equal(v.disks[0].file, "web-000002.vmdk");
	assert_string_equal(v.disks[1].node, "sata0:1");
	assert_string_equal(v.disks[1].file, "/vmfs/volumes/ds/data.vmdk");
	assert_string_equal(v.disks[2].node, "nvme0:0");
	assert_string_equal(v.disks[2].file, "unquoted.vmdk");
	vd_vmx_free(&v);

	static const char none[] =
	    "scsi0:0.present = \"FALSE\"\nscsi0:0.fileName = \"a.vmdk\"\n"
	    "scsi0.fileName = \"not-a-node.vmdk\"\nscsi0:x.fileName = \"b\"\n";
	assert_int_equal(vd_vmx_parse(none, strlen(none), &v, &why), -EINVAL);
	assert_non_null(strstr(why, "no present hard disk"));
	vd_vmx_free(&v);
	static const char nul[] = "a = \"b\"\0c = \"d\"\n";
	assert_int_equal(vd_vmx_parse(nul, sizeof(nul) - 1, &v, &why), -EINVAL);
	vd_vmx_free(&v);
	char *big = malloc(VD_VMX_MAX_TEXT + 2);
	assert_non_null(big);
	memset(big, '#', VD_VMX_MAX_TEXT + 1);
	assert_int_equal(vd_vmx_parse(big, VD_VMX_MAX_TEXT + 1, &v, &why), -EINVAL);
	free(big);
	vd_vmx_free(&v);
}

static void test_vmsd_tree(void **state)
{
	struct vd_vmsd s;
	const struct vd_snapshot *a, *b, *c;
	const char *why = NULL;

	(void)state;
	assert_int_equal(vd_vmsd_parse(VMSD, strlen(VMSD), &s, &why), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.current, 5);
	a = vd_vmsd_find(&s, 1);
	b = vd_vmsd_find(&s, 5);
	c = vd_vmsd_find(&s, 7);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_null(vd_vmsd_find(&s, 9));
	/* Ordered by snapshotN index: 0, 1, 3. */
	assert_ptr_equal(&s.snaps[0], a);
	assert_ptr_equal(&s.snaps[1], c);
	assert_ptr_equal(&s.snaps[2], b);
	/* Two branches below the root. */
	assert_int_equal(a->parent, 0);
	assert_int_equal(b->parent, 1);
	assert_int_equal(c->parent, 1);
	assert_string_equal(b->name, "Before patch");
	assert_string_equal(b->description, "KB 123\n");
	assert_null(a->description);
	/* createTimeLow is a signed 32-bit decimal: -1294967296 is 3000000000. */
	assert_true(a->create_us == (int64_t)(395000ull << 32 | 3000000000ull));
	assert_true(b->create_us == (int64_t)(396000ull << 32 | 12345ull));
	assert_int_equal(c->create_us, 0);
	assert_int_equal(a->n_disks, 2);
	assert_string_equal(a->disks[1].node, "sata0:1");
	/* Which snapshot froze which file. */
	assert_ptr_equal(vd_vmsd_froze(&s, "scsi0:0", "web-000001.vmdk"), b);
	assert_ptr_equal(vd_vmsd_froze(&s, NULL, "data.vmdk"), a);
	assert_null(vd_vmsd_froze(&s, "scsi0:0", "data.vmdk"));
	assert_null(vd_vmsd_froze(&s, "scsi0:0", "web-000002.vmdk"));
	vd_vmsd_free(&s);
}

static void expect_bad(const char *text, const char *needle)
{
	struct vd_vmsd s;
	const char *why = NULL;

	assert_int_equal(vd_vmsd_parse(text, strlen(text), &s, &why), -EINVAL);
	assert_non_null(why);
	if (!strstr(why, needle))
		fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", text, why, needle);
	vd_vmsd_free(&s);
}

static void test_vmsd_refusals(void **state)
{
	struct vd_vmsd s;
	const char *why = NULL;

	(void)state;
	expect_bad("snapshot0.uid = \"1\"\nsnapshot1.uid = \"1\"\n", "same uid");
	expect_bad("snapshot0.uid = \"1\"\nsnapshot0.parent = \"4\"\n", "names no snapshot");
	expect_bad("snapshot0.uid = \"1\"\nsnapshot0.parent = \"2\"\n"
		   "snapshot1.uid = \"2\"\nsnapshot1.parent = \"1\"\n",
		   "cycle");
	expect_bad("snapshot.current = \"3\"\nsnapshot0.uid = \"1\"\n", "current");
	expect_bad("snapshot.current = \"x\"\n", "not a number");
	expect_bad("snapshot0.uid = \"0\"\n", "positive");
	expect_bad("snapshot0.uid = \"1x\"\n", "positive");
	expect_bad("snapshot0.uid = \"1\"\nsnapshot0.parent = \"-1\"\n", "parent is not");
	expect_bad("snapshot0.uid = \"1\"\nsnapshot0.createTimeLow = \"99999999999\"\n",
		   "create time");
	expect_bad("snapshot0.displayName = \"no uid\"\n", "without a uid");
	/* No snapshot at all is a valid (empty) dictionary. */
	assert_int_equal(vd_vmsd_parse("snapshot.lastUID = \"0\"\n", 23, &s, &why), 0);
	assert_int_equal(s.n, 0);
	vd_vmsd_free(&s);
}

/* Slots are allocated per index used (not all up front): the last index and disk
 * work, sparse indices leave no gap in the list, and the index past the
 * last one is ignored as an unknown key. */
static void test_vmsd_sparse_indices(void **state)
{
	static const char text[] = "snapshot1023.uid = \"7\"\n"
				   "snapshot1023.disk255.fileName = \"last.vmdk\"\n"
				   "snapshot1023.disk255.node = \"scsi0:0\"\n"
				   "snapshot5.uid = \"6\"\nsnapshot1024.uid = \"8\"\n"
				   "snapshot5.disk256.fileName = \"ignored.vmdk\"\n";
	struct vd_vmsd s;
	const char *why = NULL;

	(void)state;
	assert_int_equal(vd_vmsd_parse(text, strlen(text), &s, &why), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.snaps[0].uid, 6);
	assert_int_equal(s.snaps[0].n_disks, 0);
	assert_int_equal(s.snaps[1].uid, 7);
	assert_int_equal(s.snaps[1].n_disks, 1);
	assert_string_equal(s.snaps[1].disks[0].file, "last.vmdk");
	assert_ptr_equal(vd_vmsd_froze(&s, "scsi0:0", "last.vmdk"), &s.snaps[1]);
	vd_vmsd_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vmx),
	    cmocka_unit_test(test_vmsd_tree),
	    cmocka_unit_test(test_vmsd_refusals),
	    cmocka_unit_test(test_vmsd_sparse_indices),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
