/* Unit tests of the VMDK write side: the header and descriptor encoders
 * (decode(encode(x)) = x, also on real VMware files from the corpus), the
 * delta create_child() makes (layout, descriptor, never replacing a file),
 * what opens for writing and what is refused, the flush ordering (GT entries
 * reach the file only at flush, after the data; reopening read-only in
 * between sees the parent), discard, write errors, and many threads writing
 * and reading at once. When qemu-img is installed, it checks and reads the
 * deltas too. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "chain/chain.h"
#include "disk/endian.h"
#include "disk/vmdk.h"
#include "disk/vmdk_desc.h"
#include "test_util.h"
#include "vmdk_gen_helper.h"

#define GRAIN (64u * 1024)
#define PCAP 13000 /* parent sectors: 101.5625 grains, the last one partial */
#define PDESC                                                                                      \
	"# Disk DescriptorFile\nversion=1\nCID=5eed0001\nparentCID=ffffffff\n"                     \
	"createType=\"monolithicSparse\"\n\nRW 13000 SPARSE \"p.vmdk\"\n\n#DDB\n"                  \
	"ddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"12\"\n"                        \
	"ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n"                            \
	"ddb.virtualHWVersion = \"14\"\n"                                                          \
	"ddb.uuid = \"60 00 C2 9f 48 66 ae a5-2f 18 d3 03 0b a9 14 ff\"\n"                         \
	"ddb.longContentID = \"0123456789abcdef0123456789abcdef\"\n"

/* The parent: grains 0, 7 and the last (partial) one allocated. */
static const char *parent_make(struct kgen *g, const char *name)
{
	const char *p = tu_path("%s", name);
	static char path[4096];

	kgen_init(g, PCAP, 128, 1, 0x3, PDESC);
	kgen_alloc(g, 0, 1);
	kgen_alloc(g, 7, 2);
	kgen_alloc(g, 101, 3);
	kgen_write(g, p);
	snprintf(path, sizeof(path), "%s", p);
	return path;
}

/* The chain from child (its parent may lie in another directory, as with
 * --delta) reads as model. */
static void chain_equals(const char *child, const char *parent, const uint8_t *model)
{
	struct vd_policy pol;
	struct vd_chain_opts opts = {.policy = &pol};
	struct vd_chain *c;
	uint8_t *buf;
	uint64_t size;

	vd_policy_init(&pol);
	assert_int_equal(vd_policy_add_image(&pol, child), 0);
	assert_int_equal(vd_policy_add_image(&pol, parent), 0);
	assert_int_equal(vd_chain_open_opts(child, &opts, &c), 0);
	assert_int_equal(vd_chain_depth(c), 2);
	size = vd_chain_size(c, 1);
	buf = malloc(size);
	assert_non_null(buf);
	assert_int_equal(vd_chain_read(c, 1, buf, size, 0), 0);
	assert_memory_equal(buf, model, size);
	free(buf);
	vd_chain_close(c);
	vd_policy_free(&pol);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 37 + i * 11 + (i >> 8));
}

/* --- encoders ------------------------------------------------------------ */

static void hdr_equal(const struct vmdk_kdmv_header *a, const struct vmdk_kdmv_header *b)
{
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->capacity, b->capacity);
	assert_int_equal(a->grain_size, b->grain_size);
	assert_int_equal(a->desc_offset, b->desc_offset);
	assert_int_equal(a->desc_size, b->desc_size);
	assert_int_equal(a->num_gtes_per_gt, b->num_gtes_per_gt);
	assert_int_equal(a->rgd_offset, b->rgd_offset);
	assert_int_equal(a->gd_offset, b->gd_offset);
	assert_int_equal(a->overhead, b->overhead);
	assert_int_equal(a->unclean_shutdown, b->unclean_shutdown);
	assert_int_equal(a->compress_algorithm, b->compress_algorithm);
}

static void test_kdmv_roundtrip(void **state)
{
	static const uint64_t caps[] = {1, 127, 128, 131072, 204800, 4194304, 1ull << 32};
	struct vmdk_kdmv_header h, d;
	uint8_t buf[512], again[512];
	const char *shared = getenv("VD_SHARED");
	(void)state;

	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		vmdk_delta_header(caps[i], &h);
		h.unclean_shutdown = (uint8_t)(i & 1);
		vmdk_kdmv_encode(&h, buf);
		assert_int_equal(vmdk_kdmv_decode(buf, "x", &d), 0);
		hdr_equal(&h, &d);
	}
	/* a stream header: every field set */
	h = (struct vmdk_kdmv_header){.version = 3,
				      .flags = 0x30001,
				      .capacity = 22441,
				      .grain_size = 128,
				      .desc_offset = 1,
				      .desc_size = 20,
				      .num_gtes_per_gt = 512,
				      .gd_offset = VMDK_GD_AT_END,
				      .overhead = 128,
				      .unclean_shutdown = 1,
				      .compress_algorithm = 1};
	vmdk_kdmv_encode(&h, buf);
	assert_int_equal(vmdk_kdmv_decode(buf, "x", &d), 0);
	hdr_equal(&h, &d);
	/* encode(decode(x)) = x on files VMware's vdiskmanager made */
	if (shared) {
		static const char *const files[] = {"monolithicSparse.vmdk",
						    "twoGbMaxExtentSparse-s001.vmdk",
						    "streamOptimized.vmdk"};
		char path[4096];

		for (size_t i = 0; i < 3; i++) {
			snprintf(path, sizeof(path), "%s/corpus/vmdk-rs/%s", shared, files[i]);
			if (access(path, R_OK) != 0)
				continue;
			tu_peek(path, 0, buf, sizeof(buf));
			assert_int_equal(vmdk_kdmv_decode(buf, path, &d), 0);
			vmdk_kdmv_encode(&d, again);
			assert_memory_equal(buf, again, sizeof(buf));
		}
	}
}

/* The layout QEMU and VMware give these sizes (formats.md 2.2): a 64 MiB
 * disk has RGD {22, 26} at 21, GD {31, 35} at 30, overHead 128. */
static void test_delta_layout(void **state)
{
	struct vmdk_kdmv_header h;
	uint8_t gd[8];
	(void)state;

	vmdk_delta_header(131072, &h);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.flags, 0x7);
	assert_int_equal(h.grain_size, 128);
	assert_int_equal(h.desc_offset, 1);
	assert_int_equal(h.desc_size, 20);
	assert_int_equal(h.rgd_offset, 21);
	assert_int_equal(h.gd_offset, 30);
	assert_int_equal(h.overhead, 128);
	vmdk_gd_encode(h.rgd_offset, 2, gd);
	assert_int_equal(vd_get_le32(gd), 22);
	assert_int_equal(vd_get_le32(gd + 4), 26);
	vmdk_gd_encode(h.gd_offset, 2, gd);
	assert_int_equal(vd_get_le32(gd), 31);
	assert_int_equal(vd_get_le32(gd + 4), 35);
	/* 2 GiB (a QEMU split extent): rgd 21, gd 278, overHead 640 */
	vmdk_delta_header(4194304, &h);
	assert_int_equal(h.gd_offset, 278);
	assert_int_equal(h.overhead, 640);
	/* 2 TiB: 65536 GTs, every GT sector still fits a u32 GTE */
	vmdk_delta_header(1ull << 32, &h);
	assert_int_equal(h.gd_offset, 21 + 512 + 65536 * 4);
	assert_true(h.overhead % 128 == 0 && h.overhead >= h.gd_offset + 512 + 65536 * 4);
}

static void desc_equal(const struct vmdk_desc *a, const struct vmdk_desc *b)
{
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->cid, b->cid);
	assert_int_equal(a->parent_cid, b->parent_cid);
	assert_string_equal(a->create_type, b->create_type);
	assert_true((a->encoding == NULL) == (b->encoding == NULL));
	if (a->encoding)
		assert_string_equal(a->encoding, b->encoding);
	assert_true((a->parent_hint == NULL) == (b->parent_hint == NULL));
	if (a->parent_hint)
		assert_string_equal(a->parent_hint, b->parent_hint);
	assert_int_equal(a->n_extents, b->n_extents);
	for (unsigned i = 0; i < a->n_extents; i++) {
		assert_int_equal(a->extents[i].access, b->extents[i].access);
		assert_int_equal(a->extents[i].type, b->extents[i].type);
		assert_int_equal(a->extents[i].sectors, b->extents[i].sectors);
		assert_int_equal(a->extents[i].offset, b->extents[i].offset);
		assert_true((a->extents[i].name == NULL) == (b->extents[i].name == NULL));
		if (a->extents[i].name)
			assert_string_equal(a->extents[i].name, b->extents[i].name);
	}
	assert_int_equal(a->n_ddb, b->n_ddb);
	for (unsigned i = 0; i < a->n_ddb; i++) {
		assert_string_equal(a->ddb[i].key, b->ddb[i].key);
		assert_string_equal(a->ddb[i].value, b->ddb[i].value);
	}
}

static void test_desc_roundtrip(void **state)
{
	struct vmdk_desc_extent x[] = {
	    {VMDK_ACCESS_RW, VMDK_EXT_SPARSE, 4192256, 0, "a b-s001.vmdk", 0},
	    {VMDK_ACCESS_RDONLY, VMDK_EXT_FLAT, 100, 63, "../x/f.vmdk", 0},
	    {VMDK_ACCESS_NOACCESS, VMDK_EXT_ZERO, 7, 0, NULL, 0},
	    {VMDK_ACCESS_RW, VMDK_EXT_VMFS, 1, 0, "vm-flat.vmdk", 0},
	    {VMDK_ACCESS_RW, VMDK_EXT_VMFSSPARSE, 9, 0, "vm-000001-delta.vmdk", 0},
	    {VMDK_ACCESS_RW, VMDK_EXT_SESPARSE, 9, 0, "vm-000001-sesparse.vmdk", 0},
	};
	struct vmdk_ddb ddb[] = {{"adapterType", "lsilogic"},
				 {"geometry.cylinders", "1023"},
				 {"uuid", "60 00 C2 9f 48 66 ae a5-2f 18 d3 03 0b a9 14 ff"},
				 {"virtualHWVersion", "14"}};
	struct vmdk_desc d = {.version = 1,
			      .encoding = "windows-1252",
			      .cid = 0xabc,
			      .parent_cid = 0xfffffffe,
			      .create_type = "custom",
			      .parent_hint = "C:\\VMs\\base dir\\vm.vmdk",
			      .extents = x,
			      .n_extents = 6,
			      .ddb = ddb,
			      .n_ddb = 4},
			 got, again;
	struct vd_buf b, b2;
	const char *shared = getenv("VD_SHARED");
	(void)state;

	assert_int_equal(vmdk_desc_encode(&d, &b), 0);
	assert_non_null(strstr(b.data, "CID=00000abc\nparentCID=fffffffe\n"));
	assert_int_equal(vmdk_desc_parse(b.data, b.len, "x", &got), 0);
	desc_equal(&d, &got);
	assert_string_equal(got.cid_text, "00000abc");
	vmdk_desc_free(&got);
	vd_buf_free(&b);
	/* No hint, no encoding, no DDB: a base. */
	d.encoding = d.parent_hint = NULL;
	d.parent_cid = VMDK_CID_NONE;
	d.n_ddb = 0;
	d.n_extents = 1;
	assert_int_equal(vmdk_desc_encode(&d, &b), 0);
	assert_int_equal(vmdk_desc_parse(b.data, b.len, "x", &got), 0);
	desc_equal(&d, &got);
	vmdk_desc_free(&got);
	vd_buf_free(&b);
	/* Real descriptors: parse, encode, parse gives the same thing. */
	if (shared) {
		static const char *const files[] = {"twoGbMaxExtentSparse.vmdk",
						    "monolithicFlat.vmdk", "vmfs_thick.vmdk",
						    "vmfs_thick-000001.vmdk"};
		char path[4096];

		for (size_t i = 0; i < 4; i++) {
			size_t len;
			uint8_t *text;

			snprintf(path, sizeof(path), "%s/corpus/vmdk-rs/%s", shared, files[i]);
			if (access(path, R_OK) != 0)
				continue;
			text = tu_load(path, &len);
			assert_int_equal(vmdk_desc_parse((char *)text, len, path, &got), 0);
			assert_int_equal(vmdk_desc_encode(&got, &b), 0);
			assert_int_equal(vmdk_desc_parse(b.data, b.len, path, &again), 0);
			desc_equal(&got, &again);
			assert_int_equal(vmdk_desc_encode(&again, &b2), 0);
			assert_string_equal(b.data, b2.data);
			vmdk_desc_free(&got);
			vmdk_desc_free(&again);
			vd_buf_free(&b);
			vd_buf_free(&b2);
			free(text);
		}
	}
}

static void expect_encode_refused(struct vmdk_desc *d)
{
	struct vd_buf b;

	assert_int_equal(vmdk_desc_encode(d, &b), -EINVAL);
}

static void test_desc_encode_refuses(void **state)
{
	struct vmdk_desc_extent x = {VMDK_ACCESS_RW, VMDK_EXT_SPARSE, 10, 0, "a.vmdk", 0};
	struct vmdk_ddb ddb = {"adapterType", "ide"};
	struct vmdk_desc d = {.version = 1,
			      .create_type = "monolithicSparse",
			      .extents = &x,
			      .n_extents = 1,
			      .ddb = &ddb,
			      .n_ddb = 1};
	struct vd_buf b;
	(void)state;

	assert_int_equal(vmdk_desc_encode(&d, &b), 0);
	vd_buf_free(&b);
	d.parent_hint = "a\"b.vmdk";
	expect_encode_refused(&d);
	d.parent_hint = "a\nb.vmdk";
	expect_encode_refused(&d);
	d.parent_hint = "";
	expect_encode_refused(&d);
	d.parent_hint = NULL;
	x.name = "x\r.vmdk";
	expect_encode_refused(&d);
	x.name = "";
	expect_encode_refused(&d);
	x.name = NULL; /* SPARSE without a file */
	expect_encode_refused(&d);
	x.name = "a.vmdk";
	x.offset = 5; /* OFFSET on a SPARSE extent */
	expect_encode_refused(&d);
	x.offset = 0;
	x.type = VMDK_EXT_VMFSRDM;
	expect_encode_refused(&d);
	x.type = VMDK_EXT_ZERO; /* ZERO with a file */
	expect_encode_refused(&d);
	x.type = VMDK_EXT_SPARSE;
	x.sectors = 0;
	expect_encode_refused(&d);
	x.sectors = 10;
	ddb.key = "a key";
	expect_encode_refused(&d);
	ddb.key = "adapterType";
	ddb.value = "i\"de";
	expect_encode_refused(&d);
	ddb.value = "ide";
	d.create_type = NULL;
	expect_encode_refused(&d);
}

/* --- create_child ---------------------------------------------------------- */

static void test_create_child(void **state)
{
	struct kgen g;
	const char *parent;
	char child[4096], *text;
	struct vmdk_kdmv_header h, want;
	struct vmdk_desc d;
	struct vd_image *img;
	uint8_t hdr[512], gd[512], wgd[512];
	uint64_t n_gt = 1;
	(void)state;

	assert_int_equal(mkdir(tu_path("pdir"), 0755), 0);
	assert_int_equal(mkdir(tu_path("cdir"), 0755), 0);
	parent = parent_make(&g, "pdir/p.vmdk");
	snprintf(child, sizeof(child), "%s", tu_path("cdir/c.vmdk"));
	assert_int_equal(tu_image_child(parent, child), 0);

	tu_peek(child, 0, hdr, sizeof(hdr));
	assert_int_equal(vmdk_kdmv_decode(hdr, child, &h), 0);
	vmdk_delta_header(PCAP, &want);
	hdr_equal(&want, &h);
	assert_int_equal(tu_file_size(child), h.overhead * 512);
	tu_peek(child, h.rgd_offset * 512, gd, sizeof(gd));
	vmdk_gd_encode(h.rgd_offset, n_gt, wgd);
	assert_memory_equal(gd, wgd, 4);
	assert_true(vd_mem_is_zero(gd + 4, 508));
	tu_peek(child, h.gd_offset * 512, gd, sizeof(gd));
	vmdk_gd_encode(h.gd_offset, n_gt, wgd);
	assert_memory_equal(gd, wgd, 4);

	text = calloc(1, 20 * 512 + 1);
	assert_non_null(text);
	tu_peek(child, 512, text, 20 * 512);
	assert_int_equal(vmdk_desc_parse(text, 20 * 512, child, &d), 0);
	assert_string_equal(d.create_type, "monolithicSparse");
	assert_string_equal(d.encoding, "UTF-8");
	assert_int_equal(d.parent_cid, 0x5eed0001);
	assert_true(d.cid != 0x5eed0001 && d.cid != VMDK_CID_NONE);
	assert_string_equal(d.parent_hint, "../pdir/p.vmdk");
	assert_int_equal(d.n_extents, 1);
	assert_int_equal(d.extents[0].type, VMDK_EXT_SPARSE);
	assert_int_equal(d.extents[0].sectors, PCAP);
	assert_string_equal(d.extents[0].name, "c.vmdk");
	/* the parent's DDB, a new longContentID ending in the CID */
	for (unsigned i = 0; i < d.n_ddb; i++) {
		const char *k = d.ddb[i].key, *v = d.ddb[i].value;

		if (!strcmp(k, "adapterType"))
			assert_string_equal(v, "lsilogic");
		else if (!strcmp(k, "geometry.heads"))
			assert_string_equal(v, "255");
		else if (!strcmp(k, "virtualHWVersion"))
			assert_string_equal(v, "14");
		else if (!strcmp(k, "uuid"))
			assert_string_equal(v, "60 00 C2 9f 48 66 ae a5-2f 18 d3 03 0b a9 14 ff");
		else if (!strcmp(k, "longContentID"))
			assert_string_equal(v + 24, d.cid_text);
	}
	assert_int_equal(d.n_ddb, 7);
	vmdk_desc_free(&d);
	free(text);

	/* It opens (read-only) as an empty delta of its parent, as a chain too. */
	assert_int_equal(vd_image_open(child, 0, &img), 0);
	assert_true(img->has_parent);
	assert_memory_equal(img->parent_id.bytes, "\x5e\xed\x00\x01", 4);
	assert_int_equal(img->size, (uint64_t)PCAP * 512);
	assert_int_equal(img->cow_unit, GRAIN);
	vd_image_close(img);
	chain_equals(child, parent, g.model);
	if (tu_sh("command -v qemu-img >/dev/null") == 0) {
		assert_int_equal(tu_sh("qemu-img check -q '%s'", child), 0);
		assert_int_equal(tu_sh("qemu-img convert -O raw '%s' '%s.raw' && "
				       "qemu-img convert -O raw '%s' '%s.praw' && cmp -s "
				       "'%s.raw' '%s.praw'",
				       child, child, parent, child, child, child),
				 0);
	}
	kgen_free(&g);
}

/* A 2 TiB parent (a ZERO extent): the delta's GTs are holes. */
static void test_create_child_large(void **state)
{
	char parent[4096], child[4096];
	struct stat s;
	struct vd_chain *c;
	struct vd_image *img;
	uint8_t buf[4096];
	(void)state;

	snprintf(parent, sizeof(parent), "%s", tu_path("big.vmdk"));
	tu_write_text(parent, "CID=1\ncreateType=\"custom\"\nRW 4294967296 ZERO\n");
	snprintf(child, sizeof(child), "%s", tu_path("big-d.vmdk"));
	assert_int_equal(tu_image_child(parent, child), 0);
	assert_int_equal(stat(child, &s), 0);
	assert_true((uint64_t)s.st_size > 256u << 20); /* two areas of 65536 GTs */
	assert_true((uint64_t)s.st_blocks * 512 < 2u << 20);
	assert_int_equal(vd_chain_open(child, 0, &c), 0);
	assert_int_equal(vd_chain_depth(c), 2);
	assert_int_equal(vd_chain_size(c, 1), 1ull << 41);
	assert_int_equal(vd_chain_read(c, 1, buf, sizeof(buf), (1ull << 41) - sizeof(buf)), 0);
	assert_true(vd_mem_is_zero(buf, sizeof(buf)));
	vd_chain_close(c);
	assert_int_equal(vd_image_open(child, VD_OPEN_RDWR, &img), 0);
	vd_image_close(img);
	unlink(child);
}

static void expect_create_fails(const char *parent, const char *child, int err, const char *msg)
{
	int r;
	char *log;

	tu_log_capture();
	r = tu_image_child(parent, child);
	log = tu_log_release();

	assert_int_equal(r, err);
	if (!strstr(log, msg))
		fail_msg("expected \"%s\" in: %s", msg, log);
	free(log);
}

static unsigned dir_entries(const char *dir)
{
	char *out = tu_sh_output("ls -A '%s' | wc -l", dir);
	unsigned n = 0;

	assert_non_null(out);
	assert_int_equal(sscanf(out, "%u", &n), 1);
	free(out);
	return n;
}

static void test_create_child_refuses(void **state)
{
	struct kgen g;
	const char *parent;
	char dir[4096], existing[4096];
	uint8_t *before, *after;
	size_t n1, n2;
	unsigned entries;
	(void)state;

	snprintf(dir, sizeof(dir), "%s", tu_path("refuse"));
	assert_int_equal(mkdir(dir, 0755), 0);
	parent = parent_make(&g, "refuse/p.vmdk");
	/* an existing file is never replaced */
	snprintf(existing, sizeof(existing), "%s", tu_path("refuse/taken.vmdk"));
	tu_write_text(existing, "anyone's data\n");
	before = tu_load(existing, &n1);
	entries = dir_entries(dir);
	expect_create_fails(parent, existing, -EEXIST, "exists already");
	after = tu_load(existing, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	assert_int_equal(dir_entries(dir), entries); /* no temporary file left */
	free(before);
	free(after);
	/* a name the descriptor cannot hold */
	snprintf(existing, sizeof(existing), "%s", tu_path("refuse/q\"uote.vmdk"));
	expect_create_fails(parent, existing, -EINVAL, "quote");
	assert_int_equal(dir_entries(dir), entries);
	/* a directory that does not exist */
	expect_create_fails(parent, tu_path("nowhere/c.vmdk"), -ENOENT, "cannot resolve");
	/* a parent larger than a hosted sparse extent */
	snprintf(existing, sizeof(existing), "%s", tu_path("huge.vmdk"));
	tu_write_text(existing, "CID=1\ncreateType=\"custom\"\nRW 4294967297 ZERO\n");
	expect_create_fails(existing, tu_path("huge-d.vmdk"), -EFBIG, "2 TiB");
	/* a KDMV piece without a descriptor has no CID to name */
	kgen_free(&g);
	kgen_init(&g, 1000, 128, 1, 3, NULL);
	snprintf(existing, sizeof(existing), "%s", tu_path("piece.vmdk"));
	kgen_write(&g, existing);
	expect_create_fails(existing, tu_path("piece-d.vmdk"), -EINVAL, "no descriptor");
	kgen_free(&g);
}

/* --- opening for writing --------------------------------------------------- */

static void expect_rdwr_refused(const char *path, int err, const char *msg)
{
	struct vd_image *img = NULL;
	int r;
	char *log;

	tu_log_capture();
	r = vd_image_open(path, VD_OPEN_RDWR, &img);
	log = tu_log_release();

	assert_int_equal(r, err);
	assert_null(img);
	if (!strstr(log, msg))
		fail_msg("expected \"%s\" in: %s", msg, log);
	free(log);
}

static void test_open_rdwr_refuses(void **state)
{
	struct kgen g;
	const char *parent = parent_make(&g, "rw-p.vmdk");
	char child[4096], copy[4096];
	uint8_t one = 1, v1[4] = {1, 0, 0, 0}, bad[4] = {99, 0, 0, 0};
	struct vmdk_kdmv_header h;
	(void)state;

	/* a base, a descriptor file, a QEMU-made delta: refused */
	expect_rdwr_refused(parent, -EROFS, "only a monolithicSparse delta");
	tu_write_text(tu_path("rw-text.vmdk"),
		      "CID=1\nparentCID=5eed0001\nparentFileNameHint=\"rw-p.vmdk\"\n"
		      "createType=\"monolithicSparse\"\nRW 13000 SPARSE \"rw-p.vmdk\"\n");
	expect_rdwr_refused(tu_path("rw-text.vmdk"), -EROFS, "a descriptor file");
	snprintf(child, sizeof(child), "%s", tu_path("rw-c.vmdk"));
	assert_int_equal(tu_image_child(parent, child), 0);
	vmdk_delta_header(PCAP, &h);
	snprintf(copy, sizeof(copy), "%s", tu_path("rw-x.vmdk"));
	/* version 1 (QEMU's and vdiskmanager's layout is otherwise the same) */
	assert_int_equal(tu_sh("cp '%s' '%s'", child, copy), 0);
	tu_poke(copy, 4, v1, 4);
	expect_rdwr_refused(copy, -EINVAL, "not laid out as a delta vdmount makes");
	/* a GD entry that points elsewhere */
	assert_int_equal(tu_sh("cp '%s' '%s'", child, copy), 0);
	tu_poke(copy, h.gd_offset * 512, bad, 4);
	expect_rdwr_refused(copy, -EINVAL, "grain directory does not point");
	assert_int_equal(tu_sh("cp '%s' '%s'", child, copy), 0);
	tu_poke(copy, h.rgd_offset * 512, bad, 4);
	expect_rdwr_refused(copy, -EINVAL, "redundant grain directory does not point");
	/* not closed cleanly */
	assert_int_equal(tu_sh("cp '%s' '%s'", child, copy), 0);
	tu_poke(copy, 72, &one, 1);
	expect_rdwr_refused(copy, -EINVAL, "not closed cleanly");
	/* the real thing opens */
	struct vd_image *img;
	assert_int_equal(vd_image_open(child, VD_OPEN_RDWR, &img), 0);
	vd_image_close(img);
	/* and a read-only image refuses writes */
	assert_int_equal(vd_image_open(child, 0, &img), 0);
	assert_int_equal(vd_image_write(img, "x", 1, 0), -EROFS);
	assert_int_equal(vd_image_discard(img, 0, GRAIN), -EROFS);
	assert_int_equal(vd_image_flush(img), 0);
	vd_image_close(img);
	kgen_free(&g);
}

/* Any byte of a delta's metadata damaged: opening it for writing refuses
 * it or writes it consistently; never a crash. */
static void test_rdwr_damaged(void **state)
{
	struct kgen g;
	const char *parent = parent_make(&g, "dmg-p.vmdk");
	char child[4096], copy[4096];
	uint8_t *w = malloc(GRAIN);
	unsigned opened = 0, seed = 12345;
	(void)state;

	snprintf(child, sizeof(child), "%s", tu_path("dmg-c.vmdk"));
	snprintf(copy, sizeof(copy), "%s", tu_path("dmg-x.vmdk"));
	assert_int_equal(tu_image_child(parent, child), 0);
	fill(w, GRAIN, 9);
	for (unsigned i = 0; i < 150; i++) {
		struct vd_image *img = NULL;
		uint8_t v;
		uint64_t off;
		int r;
		char *log;

		seed = seed * 1103515245 + 12345;
		/* the header, the descriptor, both GDs (GTs are holes) */
		off = i % 3 == 0 ? (seed >> 8) % 512 : (seed >> 8) % (40 * 512);
		v = (uint8_t)(seed >> 3);
		assert_int_equal(tu_sh("cp '%s' '%s'", child, copy), 0);
		tu_poke(copy, off, &v, 1);
		tu_log_capture();
		r = vd_image_open(copy, VD_OPEN_RDWR, &img);
		if (r == 0) {
			opened++;
			r = vd_image_write(img, w, GRAIN, 2 * GRAIN);
			if (r == 0)
				r = vd_image_flush(img);
			vd_image_close(img);
			assert_int_equal(r, 0);
		}
		log = tu_log_release();
		free(log);
	}
	assert_true(opened > 0 && opened < 150);
	kgen_free(&g);
	free(w);
}

/* --- writing ------------------------------------------------------------- */

/* A delta of a fresh parent_make() parent, open for writing, and two
 * buffers of two grains (w: what is written, r: what is read back). */
struct delta {
	char path[4096];
	struct kgen parent;
	struct vd_image *img;
	struct vmdk_kdmv_header h;
	uint8_t *w, *r;
};

static void delta_open(struct delta *d, const char *name)
{
	char pname[256];

	snprintf(pname, sizeof(pname), "%s-p.vmdk", name);
	parent_make(&d->parent, pname);
	snprintf(d->path, sizeof(d->path), "%s", tu_path("%s", name));
	assert_int_equal(tu_image_child(tu_path("%s", pname), d->path), 0);
	assert_int_equal(vd_image_open(d->path, VD_OPEN_RDWR, &d->img), 0);
	vmdk_delta_header(PCAP, &d->h);
	d->w = calloc(2, GRAIN);
	d->r = calloc(2, GRAIN);
	assert_non_null(d->w);
	assert_non_null(d->r);
}

/* Writes grain 0 (d->w filled from seed) and flushes; returns the file's
 * size then. */
static uint64_t grain0_flushed(struct delta *d, unsigned seed)
{
	fill(d->w, GRAIN, seed);
	assert_int_equal(vd_image_write(d->img, d->w, GRAIN, 0), 0);
	assert_int_equal(vd_image_flush(d->img), 0);
	return tu_file_size(d->path);
}

/* Frees what delta_open() made (the image is closed by the test). */
static void delta_done(struct delta *d)
{
	kgen_free(&d->parent);
	free(d->w);
	free(d->r);
}

/* GT entry of grain g as on disk: primary (redundant when rgd). */
static uint32_t gte_on_disk(const struct delta *d, uint64_t g, bool rgd)
{
	uint64_t gt0 = (rgd ? d->h.rgd_offset : d->h.gd_offset) + 1;
	uint8_t b[4];

	tu_peek(d->path, (gt0 + g / 512 * 4) * 512 + g % 512 * 4, b, 4);
	return vd_get_le32(b);
}

static uint8_t unclean_on_disk(const struct delta *d)
{
	uint8_t b;

	tu_peek(d->path, 72, &b, 1);
	return b;
}

static int state_of(struct vd_image *img, uint64_t off, uint64_t len, uint64_t *pnum)
{
	struct vd_map map;

	return vd_image_block_status(img, off, len, pnum, &map);
}

static void test_flush_ordering(void **state)
{
	struct delta d;
	struct vd_image *ro;
	uint64_t n, size0;
	(void)state;

	delta_open(&d, "order.vmdk");
	uint8_t *w = d.w, *r = d.r;
	size0 = tu_file_size(d.path);
	assert_int_equal(unclean_on_disk(&d), 0);
	fill(w, 2 * GRAIN, 1);
	assert_int_equal(vd_image_write(d.img, w, 2 * GRAIN, 3 * GRAIN), 0);
	/* read-your-writes at once */
	assert_int_equal(state_of(d.img, 3 * GRAIN, 2 * GRAIN, &n), VD_DATA);
	assert_int_equal(n, 2 * GRAIN);
	assert_int_equal(vd_image_read(d.img, r, 2 * GRAIN, 3 * GRAIN, NULL), 0);
	assert_memory_equal(w, r, 2 * GRAIN);
	/* the data is in the file, the header says unclean, the GTs say nothing */
	assert_int_equal(tu_file_size(d.path), size0 + 2 * GRAIN);
	assert_int_equal(unclean_on_disk(&d), 1);
	assert_int_equal(gte_on_disk(&d, 3, false), 0);
	assert_int_equal(gte_on_disk(&d, 3, true), 0);
	assert_int_equal(vd_image_open(d.path, 0, &ro), 0);
	assert_int_equal(state_of(ro, 3 * GRAIN, 2 * GRAIN, &n), VD_UNALLOC);
	vd_image_close(ro);
	/* after a flush both GT copies point at the data */
	assert_int_equal(vd_image_flush(d.img), 0);
	assert_int_equal(gte_on_disk(&d, 3, false), size0 / 512);
	assert_int_equal(gte_on_disk(&d, 4, false), size0 / 512 + 128);
	assert_int_equal(gte_on_disk(&d, 3, true), size0 / 512);
	assert_int_equal(gte_on_disk(&d, 4, true), size0 / 512 + 128);
	assert_int_equal(vd_image_open(d.path, 0, &ro), 0);
	assert_int_equal(state_of(ro, 3 * GRAIN, 2 * GRAIN, &n), VD_DATA);
	assert_int_equal(n, 2 * GRAIN);
	memset(r, 0, 2 * GRAIN);
	assert_int_equal(vd_image_read(ro, r, 2 * GRAIN, 3 * GRAIN, NULL), 0);
	assert_memory_equal(w, r, 2 * GRAIN);
	vd_image_close(ro);
	/* an overwrite goes in place: no new grain, no GT change */
	assert_int_equal(vd_image_write(d.img, "hello", 5, 3 * GRAIN + 1000), 0);
	memcpy(w + 1000, "hello", 5);
	assert_int_equal(tu_file_size(d.path), size0 + 2 * GRAIN);
	assert_int_equal(vd_image_read(d.img, r, 2 * GRAIN, 3 * GRAIN, NULL), 0);
	assert_memory_equal(w, r, 2 * GRAIN);
	/* a clean close clears the flag */
	vd_image_close(d.img);
	assert_int_equal(unclean_on_disk(&d), 0);
	assert_int_equal(gte_on_disk(&d, 3, false), size0 / 512);
	assert_int_equal(vd_image_open(d.path, 0, &ro), 0);
	assert_int_equal(vd_image_read(ro, r, 2 * GRAIN, 3 * GRAIN, NULL), 0);
	assert_memory_equal(w, r, 2 * GRAIN);
	vd_image_close(ro);
	/* an image opened for writing and closed unchanged stays as it was */
	assert_int_equal(vd_image_open(d.path, VD_OPEN_RDWR, &d.img), 0);
	vd_image_close(d.img);
	assert_int_equal(unclean_on_disk(&d), 0);
	delta_done(&d);
}

/* Close without flushing first: the close flushes. */
static void test_close_flushes(void **state)
{
	struct delta d;
	struct vd_image *ro;
	(void)state;

	delta_open(&d, "closeflush.vmdk");
	uint8_t *w = d.w, *r = d.r;
	fill(w, GRAIN, 2);
	assert_int_equal(vd_image_write(d.img, w, GRAIN, 0), 0);
	vd_image_close(d.img);
	assert_int_equal(unclean_on_disk(&d), 0);
	assert_int_not_equal(gte_on_disk(&d, 0, false), 0);
	assert_int_equal(vd_image_open(d.path, 0, &ro), 0);
	assert_int_equal(vd_image_read(ro, r, GRAIN, 0, NULL), 0);
	assert_memory_equal(w, r, GRAIN);
	vd_image_close(ro);
	delta_done(&d);
}

static void expect_write_fails(struct vd_image *img, const void *p, size_t n, uint64_t off, int err,
			       const char *msg)
{
	int r;
	char *log;

	tu_log_capture();
	r = vd_image_write(img, p, n, off);
	log = tu_log_release();

	assert_int_equal(r, err);
	if (!strstr(log, msg))
		fail_msg("expected \"%s\" in: %s", msg, log);
	free(log);
}

/* Whole grains only where the delta holds nothing; the last grain is
 * partial and is stored whole. */
static void test_write_granularity(void **state)
{
	struct delta d;
	uint64_t size0, n, last = 101ull * GRAIN, tail = (uint64_t)PCAP * 512 - last;
	(void)state;

	delta_open(&d, "gran.vmdk");
	uint8_t *w = d.w, *r = d.r;
	size0 = tu_file_size(d.path);
	expect_write_fails(d.img, w, 100, 5 * GRAIN, -EINVAL, "only part of a grain");
	expect_write_fails(d.img, w, GRAIN, 5 * GRAIN + 512, -EINVAL, "whole grains only");
	expect_write_fails(d.img, w, 512, (uint64_t)PCAP * 512, -EINVAL, "past the end");
	assert_int_equal(tu_file_size(d.path), size0);
	fill(w, GRAIN, 3);
	assert_int_equal(vd_image_write(d.img, w, tail, last), 0);
	assert_int_equal(tu_file_size(d.path), size0 + GRAIN);
	assert_int_equal(state_of(d.img, last, tail, &n), VD_DATA);
	assert_int_equal(n, tail);
	/* now the partial grain takes single bytes */
	assert_int_equal(vd_image_write(d.img, "z", 1, (uint64_t)PCAP * 512 - 1), 0);
	w[tail - 1] = 'z';
	assert_int_equal(vd_image_read(d.img, r, tail, last, NULL), 0);
	assert_memory_equal(w, r, tail);
	vd_image_close(d.img);
	if (tu_sh("command -v qemu-img >/dev/null") == 0)
		assert_int_equal(tu_sh("qemu-img check -q '%s'", d.path), 0);
	delta_done(&d);
}

static void test_discard(void **state)
{
	struct delta d;
	struct vd_image *ro;
	uint64_t n, size0;
	char *log;
	(void)state;

	delta_open(&d, "discard.vmdk");
	uint8_t *w = d.w, *r = d.r;
	size0 = grain0_flushed(&d, 4);
	/* grain 0 allocated, 1 not, 7 is data in the parent */
	assert_int_equal(vd_image_discard(d.img, 0, 2 * GRAIN), 0);
	assert_int_equal(vd_image_discard(d.img, 7 * GRAIN, GRAIN), 0);
	assert_int_equal(state_of(d.img, 0, 2 * GRAIN, &n), VD_ZERO);
	assert_int_equal(n, 2 * GRAIN);
	assert_int_equal(state_of(d.img, 7 * GRAIN, GRAIN, &n), VD_ZERO);
	tu_log_capture();
	assert_int_equal(vd_image_discard(d.img, 3 * GRAIN, 4096), -EINVAL);
	assert_int_equal(vd_image_discard(d.img, 512, GRAIN), -EINVAL);
	log = tu_log_release();
	free(log);
	assert_int_equal(gte_on_disk(&d, 1, false), 0);
	assert_int_equal(vd_image_flush(d.img), 0);
	assert_int_equal(gte_on_disk(&d, 0, false), 1);
	assert_int_equal(gte_on_disk(&d, 1, true), 1);
	assert_int_equal(gte_on_disk(&d, 7, false), 1);
	assert_int_equal(tu_file_size(d.path), size0);
	/* the whole partial last grain can be discarded */
	assert_int_equal(
	    vd_image_discard(d.img, 101ull * GRAIN, (uint64_t)PCAP * 512 - 101ull * GRAIN), 0);
	/* a zeroed grain written again gets a new grain */
	fill(w, GRAIN, 5);
	assert_int_equal(vd_image_write(d.img, w, GRAIN, GRAIN), 0);
	assert_int_equal(tu_file_size(d.path), size0 + GRAIN);
	vd_image_close(d.img);
	assert_int_equal(vd_image_open(d.path, 0, &ro), 0);
	assert_int_equal(state_of(ro, 0, GRAIN, &n), VD_ZERO);
	assert_int_equal(state_of(ro, GRAIN, GRAIN, &n), VD_DATA);
	assert_int_equal(vd_image_read(ro, r, GRAIN, GRAIN, NULL), 0);
	assert_memory_equal(w, r, GRAIN);
	assert_int_equal(state_of(ro, 101ull * GRAIN, 1024, &n), VD_ZERO);
	vd_image_close(ro);
	/* QEMU reads zeroed grains as zeros, not the parent's data */
	if (tu_sh("command -v qemu-img >/dev/null") == 0) {
		assert_int_equal(tu_sh("qemu-img check -q '%s'", d.path), 0);
		assert_int_equal(tu_sh("qemu-img convert -O raw '%s' '%s.raw' && "
				       "cmp -s -n 65536 -i %u:0 '%s.raw' /dev/zero && "
				       "cmp -s -n 65536 -i %u:0 '%s.raw' /dev/zero",
				       d.path, d.path, 0, d.path, 7 * GRAIN, d.path),
				 0);
	}
	delta_done(&d);
}

/* A write that fails (here: past RLIMIT_FSIZE, as ENOSPC would) goes to the
 * writer and leaves the delta consistent; its space is given back. */
static void test_write_error(void **state)
{
	struct delta d;
	struct vd_image *ro;
	struct rlimit old, lim;
	uint64_t size0, n;
	(void)state;

	delta_open(&d, "fsize.vmdk");
	uint8_t *w = d.w, *r = d.r;
	size0 = grain0_flushed(&d, 6);
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = size0 + 4096;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	expect_write_fails(d.img, w, GRAIN, 2 * GRAIN, -EFBIG, "cannot write");
	assert_int_equal(state_of(d.img, 2 * GRAIN, GRAIN, &n), VD_UNALLOC);
	/* in-place overwrites and flushes still work */
	assert_int_equal(vd_image_write(d.img, "ok", 2, 10), 0);
	assert_int_equal(vd_image_flush(d.img), 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	/* the space of the failed grain was given back */
	assert_int_equal(vd_image_write(d.img, w, GRAIN, 3 * GRAIN), 0);
	assert_int_equal(tu_file_size(d.path), size0 + GRAIN);
	vd_image_close(d.img);
	memcpy(w + 10, "ok", 2);
	assert_int_equal(vd_image_open(d.path, 0, &ro), 0);
	assert_int_equal(vd_image_read(ro, r, GRAIN, 0, NULL), 0);
	assert_memory_equal(w, r, GRAIN);
	assert_int_equal(state_of(ro, 2 * GRAIN, GRAIN, &n), VD_UNALLOC);
	assert_int_equal(state_of(ro, 3 * GRAIN, GRAIN, &n), VD_DATA);
	vd_image_close(ro);
	delta_done(&d);
}

/* --- threads ------------------------------------------------------------- */

#define THREADS 6
#define PER_THREAD 16 /* grains: THREADS * PER_THREAD <= 101 */

struct worker {
	struct vd_image *img;
	unsigned id;
	int phase; /* 0: allocate whole grains, 1: overwrite parts */
	int err;
};

static uint64_t grain_of(unsigned id, unsigned k)
{
	return (uint64_t)k * THREADS + id; /* interleaved: neighbours race */
}

static void *writer(void *arg)
{
	struct worker *w = arg;
	uint8_t *buf = malloc(GRAIN);

	for (unsigned k = 0; k < PER_THREAD && !w->err; k++) {
		uint64_t g = grain_of(w->id, k);

		if (w->phase == 0) {
			memset(buf, (int)(g + 1), GRAIN);
			w->err = vd_image_write(w->img, buf, GRAIN, g * GRAIN);
		} else {
			memset(buf, (int)(g + 101), 4096);
			w->err = vd_image_write(w->img, buf, 4096, g * GRAIN + 8192);
		}
		if (k % 5 == 4 && !w->err)
			w->err = vd_image_flush(w->img);
	}
	free(buf);
	return NULL;
}

struct reader {
	struct vd_image *img;
	volatile int stop;
	int bad;
	unsigned seen;
};

/* Every grain is the parent's (UNALLOC) or whole: never half written. */
static void *reader(void *arg)
{
	struct reader *rd = arg;
	uint8_t *buf = malloc(GRAIN);

	while (!rd->stop && !rd->bad) {
		for (uint64_t g = 0; g < THREADS * PER_THREAD; g++) {
			struct vd_map map;
			uint64_t n;
			int st = vd_image_block_status(rd->img, g * GRAIN, GRAIN, &n, &map);

			if (st == VD_UNALLOC)
				continue;
			if (st != VD_DATA || n != GRAIN ||
			    vd_image_read(rd->img, buf, GRAIN, g * GRAIN, &map) < 0) {
				rd->bad = 1;
				break;
			}
			for (size_t i = 0; i < GRAIN; i++)
				if (buf[i] != (uint8_t)(g + 1))
					rd->bad = 2;
			rd->seen++;
		}
	}
	free(buf);
	return NULL;
}

static void test_threads(void **state)
{
	struct delta d;
	struct worker w[THREADS];
	struct reader rd = {0};
	pthread_t t[THREADS], tr;
	uint64_t size0, phys[THREADS * PER_THREAD];
	uint8_t *buf = malloc(GRAIN);
	struct vd_image *ro;
	(void)state;

	delta_open(&d, "threads.vmdk");
	size0 = tu_file_size(d.path);
	rd.img = d.img;
	assert_int_equal(pthread_create(&tr, NULL, reader, &rd), 0);
	for (int phase = 0; phase < 2; phase++) {
		for (unsigned i = 0; i < THREADS; i++) {
			w[i] = (struct worker){d.img, i, phase, 0};
			assert_int_equal(pthread_create(&t[i], NULL, writer, &w[i]), 0);
		}
		for (unsigned i = 0; i < THREADS; i++) {
			assert_int_equal(pthread_join(t[i], NULL), 0);
			assert_int_equal(w[i].err, 0);
		}
		if (phase == 0) {
			rd.stop = 1;
			assert_int_equal(pthread_join(tr, NULL), 0);
			assert_int_equal(rd.bad, 0);
		}
	}
	/* every grain has its own place, the file grew by exactly that */
	assert_int_equal(tu_file_size(d.path), size0 + (uint64_t)THREADS * PER_THREAD * GRAIN);
	for (uint64_t g = 0; g < THREADS * PER_THREAD; g++) {
		struct vd_map map;
		uint64_t n;

		assert_int_equal(vd_image_block_status(d.img, g * GRAIN, GRAIN, &n, &map), VD_DATA);
		phys[g] = map.off;
		for (uint64_t h = 0; h < g; h++)
			assert_true(phys[h] != phys[g]);
	}
	vd_image_close(d.img);
	assert_int_equal(vd_image_open(d.path, 0, &ro), 0);
	for (uint64_t g = 0; g < THREADS * PER_THREAD; g++) {
		assert_int_equal(vd_image_read(ro, buf, GRAIN, g * GRAIN, NULL), 0);
		for (size_t i = 0; i < GRAIN; i++) {
			uint8_t want = (uint8_t)(i >= 8192 && i < 8192 + 4096 ? g + 101 : g + 1);

			if (buf[i] != want)
				fail_msg("grain %" PRIu64 " byte %zu: %u, expected %u", g, i,
					 buf[i], want);
		}
	}
	vd_image_close(ro);
	if (tu_sh("command -v qemu-img >/dev/null") == 0)
		assert_int_equal(tu_sh("qemu-img check -q '%s'", d.path), 0);
	delta_done(&d);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kdmv_roundtrip),
	    cmocka_unit_test(test_delta_layout),
	    cmocka_unit_test(test_desc_roundtrip),
	    cmocka_unit_test(test_desc_encode_refuses),
	    cmocka_unit_test(test_create_child),
	    cmocka_unit_test(test_create_child_large),
	    cmocka_unit_test(test_create_child_refuses),
	    cmocka_unit_test(test_open_rdwr_refuses),
	    cmocka_unit_test(test_rdwr_damaged),
	    cmocka_unit_test(test_flush_ordering),
	    cmocka_unit_test(test_close_flushes),
	    cmocka_unit_test(test_write_granularity),
	    cmocka_unit_test(test_discard),
	    cmocka_unit_test(test_write_error),
	    cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
