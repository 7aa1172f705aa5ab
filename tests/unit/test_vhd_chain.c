/* VHD chains end to end through vd_chain_open + vd_chain_read: writer-made
 * differencing chains (1, 2 and 16 layers) against an in-memory model, the
 * mid-byte bitmap run that libvhdi gets wrong, qemu-made fixed and dynamic
 * images against `qemu-img convert`, parent discovery (renamed, moved,
 * missing, id mismatch, --force) and the shared corpus. */
#include <errno.h>
#include <glob.h>
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
#include "test_util.h"

static uint64_t rng_step(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void img_write(const char *path, uint8_t *model, uint64_t off, size_t len, uint8_t *data)
{
	assert_int_equal(tu_image_write(path, data, len, off), 0);
	if (model)
		memcpy(model + off, data, len);
}

static void make_child(const char *parent, const char *child)
{
	assert_int_equal(tu_image_child(parent, child), 0);
}

/* count random writes in one RDWR session: short runs, whole blocks and
 * block-straddling runs of random bytes; mirrored into model. */
static void random_writes(const char *path, uint8_t *model, uint64_t seed, int count)
{
	struct vd_image *img;
	uint64_t s = seed * 2654435761u + 1, sectors, spb;
	uint8_t *buf;

	assert_int_equal(vd_image_open(path, VD_OPEN_RDWR, &img), 0);
	sectors = img->size / 512;
	spb = img->alloc_unit / 512;
	buf = malloc((spb > 64 ? spb : 64) * 512);
	assert_non_null(buf);
	for (int w = 0; w < count; w++) {
		uint64_t off, len, kind = rng_step(&s) % 3;
		if (kind == 0) {
			off = rng_step(&s) % (sectors / spb) * spb;
			len = spb;
		} else if (kind == 1) {
			off = (1 + rng_step(&s) % (sectors / spb - 1)) * spb - 1 - rng_step(&s) % 9;
			len = 2 + rng_step(&s) % 20;
		} else {
			off = rng_step(&s) % sectors;
			len = 1 + rng_step(&s) % 64;
		}
		if (len > sectors - off)
			len = sectors - off;
		for (uint64_t i = 0; i < len * 512; i++)
			buf[i] = (uint8_t)(rng_step(&s) >> 24);
		assert_int_equal(img->ops->write(img, buf, len * 512, off * 512), 0);
		memcpy(model + off * 512, buf, len * 512);
	}
	vd_image_close(img);
	free(buf);
}

/* Every level of the chain opened at top equals models[level], read both in
 * whole and at random unaligned spans. */
static void chain_verify(const char *top, uint8_t **models, unsigned depth, uint64_t size)
{
	struct vd_chain *c;
	uint8_t *buf = malloc(size);
	uint64_t s = 99;

	assert_non_null(buf);
	assert_int_equal(vd_chain_open(top, 0, &c), 0);
	assert_int_equal(vd_chain_depth(c), depth);
	for (unsigned l = 0; l < depth; l++) {
		assert_int_equal(vd_chain_size(c, l), size);
		assert_int_equal(vd_chain_read(c, l, buf, size, 0), 0);
		assert_memory_equal(buf, models[l], size);
		for (int i = 0; i < 50; i++) {
			uint64_t off = rng_step(&s) % size, len = 1 + rng_step(&s) % 70000;
			if (len > size - off)
				len = size - off;
			assert_int_equal(vd_chain_read(c, l, buf, len, off), 0);
			assert_memory_equal(buf, models[l] + off, len);
		}
	}
	vd_chain_close(c);
	free(buf);
}

static void chain_test(unsigned depth, uint64_t size, uint32_t block)
{
	uint8_t **models = calloc(depth, sizeof(*models));
	char name[32], prev[256];

	assert_non_null(models);
	snprintf(prev, sizeof(prev), "%s", tu_path("l00.vhd"));
	unlink(prev); /* left by an earlier chain_test: creation never replaces */
	assert_int_equal(vhd_create_dynamic(prev, size, block), 0);
	for (unsigned l = 0; l < depth; l++) {
		models[l] = malloc(size);
		assert_non_null(models[l]);
		if (l == 0) {
			memset(models[0], 0, size);
		} else {
			snprintf(name, sizeof(name), "l%02u.vhd", l);
			unlink(tu_path("%s", name));
			make_child(prev, tu_path("%s", name));
			snprintf(prev, sizeof(prev), "%s", tu_path("%s", name));
			memcpy(models[l], models[l - 1], size);
		}
		random_writes(prev, models[l], l + 1, 40);
	}
	chain_verify(prev, models, depth, size);
	for (unsigned l = 0; l < depth; l++)
		free(models[l]);
	free(models);
}

static void test_chain_1(void **state)
{
	/* a base with an odd block size and a size that is not a block multiple */
	chain_test(1, (3u << 20) + 512 * 5, 64u << 10);
	(void)state;
}

static void test_chain_2(void **state)
{
	chain_test(2, 8u << 20, 2u << 20);
	(void)state;
}

static void test_chain_16(void **state)
{
	chain_test(16, 4u << 20, 256u << 10);
	(void)state;
}

/* create_child never replaces an existing file, and leaves no temporary. */
static void test_create_child_no_clobber(void **state)
{
	char *text;

	(void)state;
	assert_int_equal(vhd_create_dynamic(tu_path("nc-base.vhd"), 1u << 20, 512u << 10), 0);
	tu_write_text(tu_path("nc-child.vhd"), "precious");
	assert_int_equal(tu_image_child(tu_path("nc-base.vhd"), tu_path("nc-child.vhd")), -EEXIST);
	text = (char *)tu_load(tu_path("nc-child.vhd"), NULL);
	assert_string_equal(text, "precious");
	free(text);
	glob_t g;
	assert_int_equal(glob(tu_path("nc-child.vhd.tmp*"), 0, NULL, &g), GLOB_NOMATCH);
}

/* libvhdi's bug: a bitmap run that ends mid-byte. Parent 0xAA everywhere in
 * block 0; child writes sectors 3..5 only: sectors 0-2 and 6.. are parent. */
static void test_midbyte_run(void **state)
{
	uint8_t model[64 * 512], data[3 * 512], buf[sizeof(model)];
	struct vd_chain *c;
	uint64_t n;
	int owner;

	assert_int_equal(vhd_create_dynamic(tu_path("mb-base.vhd"), 1u << 20, 512u << 10), 0);
	memset(model, 0xAA, sizeof(model));
	img_write(tu_path("mb-base.vhd"), NULL, 0, sizeof(model), model);
	make_child(tu_path("mb-base.vhd"), tu_path("mb-child.vhd"));
	memset(data, 0x5C, sizeof(data));
	img_write(tu_path("mb-child.vhd"), model, 3 * 512, sizeof(data), data);
	assert_int_equal(vd_chain_open(tu_path("mb-child.vhd"), 0, &c), 0);
	assert_int_equal(vd_chain_read(c, 1, buf, sizeof(buf), 0), 0);
	assert_memory_equal(buf, model, sizeof(buf));
	assert_int_equal(buf[6 * 512], 0xAA); /* first clear bit after the run */
	/* the child layer itself: UNALLOC 0-2, DATA 3-5, UNALLOC from 6 */
	{
		struct vd_image *top = vd_chain_layer(c, 1);
		assert_int_equal(vd_image_block_status(top, 0, 1u << 20, &n, NULL), VD_UNALLOC);
		assert_int_equal(n, 3 * 512);
		assert_int_equal(vd_image_block_status(top, 3 * 512, 1u << 20, &n, NULL), VD_DATA);
		assert_int_equal(n, 3 * 512);
		assert_int_equal(vd_image_block_status(top, 4 * 512 + 7, 100, &n, NULL), VD_DATA);
		assert_int_equal(n, 100);
		assert_int_equal(vd_image_block_status(top, 6 * 512, 512u << 10, &n, NULL),
				 VD_UNALLOC);
		assert_int_equal(n, (512u << 10) - 6 * 512);
	}
	assert_int_equal(vd_chain_block_status(c, 1, 6 * 512, 512, &n, &owner), VD_DATA);
	assert_int_equal(owner, 0);
	{
		struct vd_json j = {0};
		assert_int_equal(vd_chain_describe(c, &j), 0);
		assert_non_null(strstr(j.buf.data, "\"disk_type\": \"differencing\""));
		assert_non_null(strstr(j.buf.data, "\"kind\": \"W2ru\""));
		assert_non_null(strstr(j.buf.data, "\"parent_name\": \"mb-base.vhd\""));
		assert_non_null(strstr(j.buf.data, "\"bat_entries_used\": 1"));
		vd_buf_free(&j.buf);
	}
	vd_chain_close(c);
	(void)state;
}

static bool have(const char *tool)
{
	return tu_sh("command -v %s >/dev/null 2>&1", tool) == 0;
}

/* Runs a shell command that must succeed. */
#define sh(...) assert_int_equal(tu_sh(__VA_ARGS__), 0)

/* The top of the chain at path reads exactly as the bytes of raw. */
static void expect_raw(const char *path, const uint8_t *raw, uint64_t size)
{
	struct vd_chain *c;
	uint8_t *buf = malloc(size);

	assert_non_null(buf);
	assert_int_equal(vd_chain_open(path, 0, &c), 0);
	assert_int_equal(vd_chain_size(c, vd_chain_depth(c) - 1), size);
	assert_int_equal(vd_chain_read(c, vd_chain_depth(c) - 1, buf, size, 0), 0);
	assert_memory_equal(buf, raw, size);
	vd_chain_close(c);
	free(buf);
}

static void test_qemu_images(void **state)
{
	const char *q = "-f vpc";
	size_t size;
	uint8_t *raw;

	if (!have("qemu-img") || !have("qemu-io"))
		skip();
	for (int i = 0; i < 2; i++) {
		const char *sub = i ? "dynamic" : "fixed";
		sh("qemu-img create -q %s -o subformat=%s %s 8M", q, sub, tu_path("q.vhd"));
		sh("qemu-io %s -c 'write -P 0x11 0 1M' -c 'write -P 0x22 3M 4097k' "
		   "-c 'write -P 0x33 7M 512' %s >/dev/null",
		   q, tu_path("q.vhd"));
		sh("qemu-img convert %s -O raw %s %s", q, tu_path("q.vhd"), tu_path("q.raw"));
		raw = tu_load(tu_path("q.raw"), &size);
		expect_raw(tu_path("q.vhd"), raw, size);
		free(raw);
	}
	/* a differencing child over the qemu dynamic base */
	make_child(tu_path("q.vhd"), tu_path("qc.vhd"));
	raw = tu_load(tu_path("q.raw"), &size);
	random_writes(tu_path("qc.vhd"), raw, 7, 60);
	expect_raw(tu_path("qc.vhd"), raw, size);
	free(raw);
	(void)state;
}

static void ftr_uuid_poke(const char *path)
{
	uint8_t b[VHD_FOOTER_SIZE];

	for (int k = 0; k < 2; k++) {
		uint64_t off = k ? 0 : tu_file_size(path) - VHD_FOOTER_SIZE;
		tu_peek(path, off, b, sizeof(b));
		b[VHD_FTR_UUID + 5] ^= 0x40;
		vd_put_be32(b + VHD_FTR_CHECKSUM, vhd_checksum(b, sizeof(b), VHD_FTR_CHECKSUM));
		tu_poke(path, off, b, sizeof(b));
	}
}

/* The write contract: until flush, the file's tables do not point at new
 * data (a crash loses unflushed writes, never exposes garbage); the writer's
 * own handle sees its writes at once; after flush they are on disk. */
static void test_flush_ordering(void **state)
{
	uint8_t model[1u << 20], parent[1u << 20], data[4096], buf[4096];
	struct vd_image *w;
	uint64_t fsize;

	(void)state;
	memset(parent, 0, sizeof(parent));
	assert_int_equal(vhd_create_dynamic(tu_path("fo-base.vhd"), sizeof(parent), 64u << 10), 0);
	memset(data, 0x11, sizeof(data));
	img_write(tu_path("fo-base.vhd"), parent, 0, sizeof(data), data);
	make_child(tu_path("fo-base.vhd"), tu_path("fo-child.vhd"));
	memcpy(model, parent, sizeof(model));

	assert_int_equal(vd_image_open(tu_path("fo-child.vhd"), VD_OPEN_RDWR, &w), 0);
	memset(data, 0x22, sizeof(data));
	assert_int_equal(w->ops->write(w, data, 1024, 512), 0);	       /* inside an old block */
	assert_int_equal(w->ops->write(w, data, 4096, 300 * 1024), 0); /* a new one */
	memcpy(model + 512, data, 1024);
	memcpy(model + 300 * 1024, data, 4096);
	/* read-your-writes through the writer's own handle */
	assert_int_equal(vd_image_read(w, buf, 1024, 512, NULL), 0);
	assert_memory_equal(buf, data, 1024);
	/* not flushed: another reader sees the parent only */
	expect_raw(tu_path("fo-child.vhd"), parent, sizeof(parent));
	assert_int_equal(w->ops->flush(w), 0);
	expect_raw(tu_path("fo-child.vhd"), model, sizeof(model));
	vd_image_close(w);
	expect_raw(tu_path("fo-child.vhd"), model, sizeof(model));

	/* A crash while a block was being appended: no footer at EOF, the last
	 * block running to the end of the file (refused before), or data past
	 * it. The reader uses the copy at offset 0 (a warning) and serves the
	 * flushed state. */
	sh("cp %s %s && truncate -s -512 %s", tu_path("fo-child.vhd"), tu_path("fo-cut.vhd"),
	   tu_path("fo-cut.vhd"));
	expect_raw(tu_path("fo-cut.vhd"), model, sizeof(model));
	{
		struct stat sb;
		assert_int_equal(stat(tu_path("fo-child.vhd"), &sb), 0);
		fsize = (uint64_t)sb.st_size;
	}
	sh("cp %s %s && truncate -s %llu %s && head -c 70000 /dev/urandom >> %s",
	   tu_path("fo-child.vhd"), tu_path("fo-torn.vhd"), (unsigned long long)(fsize - 512),
	   tu_path("fo-torn.vhd"), tu_path("fo-torn.vhd"));
	expect_raw(tu_path("fo-torn.vhd"), model, sizeof(model));
}

static void test_discovery(void **state)
{
	uint8_t model[1u << 20], data[4096];
	struct vd_chain *c;
	char moved[300];

	memset(model, 0, sizeof(model));
	sh("mkdir -p %s/a", tu_dir());
	assert_int_equal(vhd_create_dynamic(tu_path("a/p.vhd"), sizeof(model), 64u << 10), 0);
	memset(data, 0x61, sizeof(data));
	img_write(tu_path("a/p.vhd"), model, 8192, sizeof(data), data);
	make_child(tu_path("a/p.vhd"), tu_path("a/c.vhd"));
	memset(data, 0x62, 512);
	img_write(tu_path("a/c.vhd"), model, 8192 + 1024, 512, data);
	expect_raw(tu_path("a/c.vhd"), model, sizeof(model));

	/* moved chain: the relative W2ru locator finds it (the old dir is gone) */
	snprintf(moved, sizeof(moved), "%s/b/deeper", tu_dir());
	sh("mkdir -p %s/b && cp -r %s/a %s && rm -rf %s/a", tu_dir(), tu_dir(), moved, tu_dir());
	assert_int_equal(vd_chain_open(tu_path("b/deeper/c.vhd"), 0, &c), 0);
	assert_string_equal(vd_chain_link(c, 1)->hint_kind, "W2ru");
	vd_chain_close(c);
	expect_raw(tu_path("b/deeper/c.vhd"), model, sizeof(model));

	/* the child moved away from its parent: the absolute MacX locator names
	 * a file outside the child's directory, which confinement refuses unless
	 * --allow-outside or a --search directory says otherwise */
	sh("mkdir -p %s/elsewhere && mv %s/b/deeper/c.vhd %s/elsewhere/", tu_dir(), tu_dir(),
	   tu_dir());
	sh("mv %s/b/deeper %s/a", tu_dir(), tu_dir()); /* where the absolute locators point */
	assert_int_equal(vd_chain_open(tu_path("elsewhere/c.vhd"), 0, &c), -ENOENT);
	{
		struct vd_policy pol;
		struct vd_chain_opts o = {.policy = &pol};

		vd_policy_init(&pol);
		assert_int_equal(vd_policy_add_image(&pol, tu_path("elsewhere/c.vhd")), 0);
		pol.allow_outside = true;
		assert_int_equal(vd_chain_open_opts(tu_path("elsewhere/c.vhd"), &o, &c), 0);
		assert_string_equal(vd_chain_link(c, 1)->hint_kind, "MacX");
		vd_chain_close(c);
		assert_int_equal(pol.n_exceptions, 1);
		pol.allow_outside = false;
		assert_int_equal(vd_policy_add_search(&pol, tu_path("a")), 0);
		assert_int_equal(vd_chain_open_opts(tu_path("elsewhere/c.vhd"), &o, &c), 0);
		assert_string_equal(vd_chain_link(c, 1)->hint_kind, "W2ru");
		assert_non_null(strstr(vd_chain_link(c, 1)->how, "--search"));
		vd_chain_close(c);
		vd_policy_free(&pol);
	}
	sh("mv %s/elsewhere/c.vhd %s/a/", tu_dir(), tu_dir());

	/* a renamed parent (issue 4): the header's parent name is still the old
	 * name, the locators name the file as it is now; the W2ru locator finds it */
	{
		uint8_t hb[VHD_HEADER_SIZE];

		tu_peek(tu_path("a/c.vhd"), VHD_FOOTER_SIZE, hb, sizeof(hb));
		memset(hb + VHD_HDR_PARENT_NAME, 0, VHD_HDR_PARENT_NAME_LEN);
		assert_true(vd_utf8_to_utf16("old-name.vhd", true, hb + VHD_HDR_PARENT_NAME,
					     VHD_HDR_PARENT_NAME_LEN) > 0);
		vd_put_be32(hb + VHD_HDR_CHECKSUM, vhd_checksum(hb, sizeof(hb), VHD_HDR_CHECKSUM));
		tu_poke(tu_path("a/c.vhd"), VHD_FOOTER_SIZE, hb, sizeof(hb));
	}
	assert_int_equal(vd_chain_open(tu_path("a/c.vhd"), 0, &c), 0);
	assert_string_equal(vd_chain_link(c, 1)->hint_kind, "W2ru");
	vd_chain_close(c);
	expect_raw(tu_path("a/c.vhd"), model, sizeof(model));

	/* a parent renamed behind the child's back: nothing names the new file,
	 * so it is not found; a child made afterwards finds it */
	sh("mv %s/a/p.vhd %s/a/renamed.vhd", tu_dir(), tu_dir());
	assert_int_equal(vd_chain_open(tu_path("a/c.vhd"), 0, &c), -ENOENT);
	make_child(tu_path("a/renamed.vhd"), tu_path("a/c2.vhd"));
	assert_int_equal(vd_chain_open(tu_path("a/c2.vhd"), 0, &c), 0);
	assert_string_equal(vd_chain_link(c, 1)->hint_kind, "W2ru");
	vd_chain_close(c);

	/* id mismatch: refused, opened with VD_CHAIN_FORCE */
	ftr_uuid_poke(tu_path("a/renamed.vhd"));
	assert_int_equal(vd_chain_open(tu_path("a/c2.vhd"), 0, &c), -EINVAL);
	assert_int_equal(vd_chain_open(tu_path("a/c2.vhd"), VD_CHAIN_FORCE, &c), 0);
	assert_int_equal(vd_chain_warning_count(c), 1);
	vd_chain_close(c);
	(void)state;
}

/* Reads the whole disk through sha256sum; returns the hex digest. */
static void chain_sha256(struct vd_chain *c, char out[65])
{
	char cmd[300];
	uint64_t size = vd_chain_size(c, vd_chain_depth(c) - 1);
	uint8_t *buf = malloc(1u << 20);
	FILE *f;

	assert_non_null(buf);
	snprintf(cmd, sizeof(cmd), "sha256sum > %s", tu_path("sha.txt"));
	f = popen(cmd, "w");
	assert_non_null(f);
	for (uint64_t off = 0; off < size; off += 1u << 20) {
		size_t n = (size_t)vd_min_u64(1u << 20, size - off);
		assert_int_equal(vd_chain_read(c, vd_chain_depth(c) - 1, buf, n, off), 0);
		assert_int_equal(fwrite(buf, 1, n, f), n);
	}
	assert_int_equal(pclose(f), 0);
	f = fopen(tu_path("sha.txt"), "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%64s", out), 1);
	fclose(f);
	free(buf);
}

#define CORPUS_SHA_MAX (4ull << 30) /* hashing 136 GB of zeros would take minutes */

static void test_corpus(void **state)
{
	const char *shared = getenv("VD_SHARED");
	char line[1024], tsv[512], unpacked[300];
	FILE *f;
	int n_ok = 0;

	if (!shared)
		skip();
	snprintf(tsv, sizeof(tsv), "%s/corpus/expected.tsv", shared);
	f = fopen(tsv, "r");
	if (!f)
		skip();
	snprintf(unpacked, sizeof(unpacked), "%s/corpus", tu_dir());
	sh("sh %s/corpus/unpack.sh %s >/dev/null", shared, unpacked);
	while (fgets(line, sizeof(line), f)) {
		char name[256], verdict[32], sizes[32], sha[80], path[600], got[65];
		struct vd_chain *c = NULL;
		size_t len;
		int r;

		if (sscanf(line, "%255s %31s %31s %79s", name, verdict, sizes, sha) != 4)
			continue;
		len = strlen(name);
		if (len < 4 || strcmp(name + len - 4, ".vhd"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", unpacked, name);
		r = vd_chain_open(path, 0, &c);
		if (strcmp(verdict, "ok")) {
			print_message("corpus %s: expected failure, got %d\n", name, r);
			assert_true(r < 0);
			continue;
		}
		assert_int_equal(r, 0);
		assert_int_equal(vd_chain_size(c, vd_chain_depth(c) - 1),
				 strtoull(sizes, NULL, 10));
		if (strtoull(sizes, NULL, 10) <= CORPUS_SHA_MAX) {
			chain_sha256(c, got);
			assert_string_equal(got, sha);
		} else {
			print_message("corpus %s: size checked, sha256 skipped (too large)\n",
				      name);
		}
		vd_chain_close(c);
		n_ok++;
	}
	fclose(f);
	assert_true(n_ok > 0);
	(void)state;
}

/* dfvfs/fat-differential.vhd's parent is absent: "parent not found" naming
 * the locators tried. */
static void test_corpus_missing_parent(void **state)
{
	const char *shared = getenv("VD_SHARED");
	char path[400], out[400], *log;
	struct vd_chain *c;
	int r;

	if (!shared)
		skip();
	snprintf(path, sizeof(path), "%s/corpus/dfvfs/fat-differential.vhd.gz", shared);
	if (access(path, R_OK))
		skip();
	snprintf(out, sizeof(out), "%s", tu_path("fat-differential.vhd"));
	sh("gzip -dc %s > %s", path, out);
	/* capture the open's one error line */
	tu_log_capture();
	r = vd_chain_open(out, 0, &c);
	log = tu_log_release();
	assert_int_equal(r, -ENOENT);
	*strchrnul(log, '\n') = '\0';
	assert_non_null(strstr(log, "parent not found"));
	assert_non_null(strstr(log, "W2ru") ? strstr(log, "W2ru") : strstr(log, "W2ku"));
	free(log);
	(void)state;
}

/* vd_chain_inputs_check(c) fails with -EIO and logs needle. */
static void expect_inputs_changed(struct vd_chain *c, const char *needle)
{
	char *log;
	int r;

	tu_log_capture();
	r = vd_chain_inputs_check(c);
	log = tu_log_release();
	assert_int_equal(r, -EIO);
	assert_non_null(strstr(log, needle));
	free(log);
}

/* A layer's file changed in place after open: vd_chain_inputs_check says
 * -EIO (sticky), at most a second after the change, and names the file. */
static void test_inputs_changed(void **state)
{
	struct vd_chain *c;
	struct timespec t[2] = {{0, UTIME_OMIT}, {12345, 0}};
	const char *base = tu_path("ic-base.vhd"), *top = tu_path("ic-top.vhd");

	(void)state;
	unlink(base);
	unlink(top);
	assert_int_equal(vhd_create_dynamic(base, 1u << 20, 512u << 10), 0);
	make_child(base, top);
	assert_int_equal(vd_chain_open(top, 0, &c), 0);
	assert_int_equal(vd_chain_inputs_check(c), 0);
	assert_int_equal(utimensat(AT_FDCWD, base, t, 0), 0); /* the base's mtime */
	assert_int_equal(vd_chain_inputs_check(c), 0);	      /* checked < 1 s ago */
	usleep(1100 * 1000);
	expect_inputs_changed(c, "ic-base.vhd: it was modified");
	assert_int_equal(vd_chain_inputs_check(c), -EIO); /* sticky */
	vd_chain_close(c);

	/* a size change, in the top file this time; an unchanged chain stays 0 */
	assert_int_equal(vd_chain_open(top, 0, &c), 0);
	usleep(1100 * 1000);
	assert_int_equal(vd_chain_inputs_check(c), 0);
	assert_int_equal(truncate(top, 1000), 0);
	usleep(1100 * 1000);
	expect_inputs_changed(c, "ic-top.vhd: its size was");
	vd_chain_close(c);
}

static int setup(void **state)
{
	(void)state;
	tu_dir_new("vhdchain");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return tu_dir_remove();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_chain_1),
	    cmocka_unit_test(test_chain_2),
	    cmocka_unit_test(test_chain_16),
	    cmocka_unit_test(test_midbyte_run),
	    cmocka_unit_test(test_create_child_no_clobber),
	    cmocka_unit_test(test_inputs_changed),
	    cmocka_unit_test(test_flush_ordering),
	    cmocka_unit_test(test_qemu_images),
	    cmocka_unit_test(test_discovery),
	    cmocka_unit_test(test_corpus),
	    cmocka_unit_test(test_corpus_missing_parent),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
