/* Zlib streams of stored blocks read straight into place (disk/stored.h),
 * against an exact model: streams are built here with chosen block sizes
 * (the Adler-32 from zlib, not from the library under test) after a 12-byte
 * marker, and the read must give the data exactly, or decline (0) and leave
 * it to the inflating reader. It never gives 1 with other bytes: guesses
 * that are right, off by a few bytes either way at every header, with empty
 * blocks, off by too much, with another number of blocks, torn; a stream cut
 * short by EOF; every header field, the trailer and a data byte damaged;
 * blocks that are not stored; and a random search of all of these. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "disk/endian.h"
#include "disk/stored.h"
#include "disk/util.h"
#include "test_util.h"

#define OUT 65536u
#define PRE 12u

static uint8_t data[OUT];
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

/* Writes f.bin: PRE marker bytes (0xa5), then a zlib stream of n stored
 * blocks of len[i] bytes holding data[0, sum). Returns the stream's length. */
static size_t write_stream(const uint32_t *len, unsigned n)
{
	size_t cap = PRE + vd_stored_zlen(n, OUT), p = PRE, sum = 0;
	uint8_t *b = malloc(cap);
	uLong a = adler32(0, Z_NULL, 0);

	assert_non_null(b);
	memset(b, 0xa5, PRE);
	b[p++] = 0x78;
	b[p++] = 0x01;
	for (unsigned i = 0; i < n; i++) {
		b[p++] = i + 1 == n; /* BFINAL, BTYPE 00 */
		vd_put_le16(b + p, (uint16_t)len[i]);
		vd_put_le16(b + p + 2, (uint16_t)~len[i]);
		p += 4;
		memcpy(b + p, data + sum, len[i]);
		p += len[i];
		sum += len[i];
	}
	a = adler32(a, data, (uInt)sum);
	b[p++] = (uint8_t)(a >> 24), b[p++] = (uint8_t)(a >> 16);
	b[p++] = (uint8_t)(a >> 8), b[p++] = (uint8_t)a;
	tu_write_file(tu_path("f.bin"), b, p);
	free(b);
	return p - PRE;
}

static void guess(struct vd_stored_guess *g, const uint32_t *len, unsigned n)
{
	memset(g, 0, sizeof(*g));
	g->n = n;
	memcpy(g->len, len, n * sizeof(*len));
}

/* vd_stored_read of f.bin with guess gl (gn blocks): its result; on 1, the
 * output must be data, zlen the stream's and the guess the real layout. */
static int read_with(const uint32_t *gl, unsigned gn, size_t zwant, const uint32_t *real,
		     unsigned rn)
{
	struct vd_stored_guess g;
	uint8_t *out = malloc(OUT), pre[PRE];
	uint64_t zlen = 0;
	int fd = open(tu_path("f.bin"), O_RDONLY), r;

	assert_true(fd >= 0 && out);
	guess(&g, gl, gn);
	memset(out, 0x11, OUT);
	r = vd_stored_read(fd, 0, pre, PRE, out, OUT, &g, &zlen);
	close(fd);
	assert_true(r == 0 || r == 1);
	if (r == 1) {
		assert_memory_equal(out, data, OUT);
		assert_int_equal(zlen, zwant);
		assert_int_equal(pre[0], 0xa5);
		assert_int_equal(g.n, rn);
		assert_memory_equal(g.len, real, rn * sizeof(*real));
	}
	free(out);
	return r;
}

static int setup(void **st)
{
	(void)st;
	for (unsigned i = 0; i < OUT; i++)
		data[i] = (uint8_t)next_rand();
	return 0;
}

/* zlib's own layout of random data: 4 blocks of about 16,384 bytes. */
static const uint32_t zl[4] = {16391, 16389, 16393, 16363};

static void test_exact_guess(void **st)
{
	size_t z;

	(void)st;
	z = write_stream(zl, 4);
	assert_int_equal(read_with(zl, 4, z, zl, 4), 1);
	/* level 0: 65,535 + 1; one block; 1 MiB grains have 17 */
	{
		const uint32_t l0[2] = {65535, 1};

		z = write_stream(l0, 2);
		assert_int_equal(read_with(l0, 2, z, l0, 2), 1);
	}
}

/* Headers a few bytes before or after the guessed places, at every header
 * and in both directions, and an empty block. */
static void test_shifted_guess(void **st)
{
	const uint32_t g1[4] = {16389, 16391, 16395, 16361};	/* -2, +2, +2 */
	const uint32_t g2[4] = {16400, 16380, 16380, 16376};	/* +9, 0, -13 */
	const uint32_t g3[4] = {16383, 16383, 16383, 16387};	/* all off */
	const uint32_t e4[5] = {16391, 0, 16389, 16393, 16363}; /* an empty block */
	const uint32_t g4[5] = {16380, 10, 16400, 16393, 16353};
	size_t z;

	(void)st;
	z = write_stream(zl, 4);
	assert_int_equal(read_with(g1, 4, z, zl, 4), 1);
	assert_int_equal(read_with(g2, 4, z, zl, 4), 1);
	assert_int_equal(read_with(g3, 4, z, zl, 4), 1);
	z = write_stream(e4, 5);
	assert_int_equal(read_with(g4, 5, z, e4, 5), 1);
}

/* Guesses that cannot be used: declined, never wrong. */
static void test_declined(void **st)
{
	const uint32_t far[2] = {1, 65535}, real2[2] = {65535, 1};
	const uint32_t three[3] = {20000, 20000, 25536}, torn[4] = {16391, 16389, 16393, 16000};
	const uint32_t big[4] = {16391, 16389, 16393, 16364};
	size_t z;

	(void)st;
	z = write_stream(real2, 2);
	assert_int_equal(read_with(far, 2, z, real2, 2), 0); /* 65,534 bytes off */
	z = write_stream(zl, 4);
	assert_int_equal(read_with(three, 3, z, zl, 4), 0); /* another number of blocks */
	assert_int_equal(read_with(torn, 4, z, zl, 4), 0);  /* sizes that do not add up */
	assert_int_equal(read_with(big, 4, z, zl, 4), 0);
	assert_int_equal(read_with(zl, 0, z, zl, 4), 0); /* no guess */
	/* cut short: the last byte of the Adler-32 missing */
	assert_int_equal(truncate(tu_path("f.bin"), (off_t)(PRE + z - 1)), 0);
	assert_int_equal(read_with(zl, 4, z, zl, 4), 0);
}

/* XORs byte off of f.bin with mask. */
static void flip(uint64_t off, uint8_t mask)
{
	int fd = open(tu_path("f.bin"), O_RDWR);
	uint8_t v;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &v, 1, (off_t)off), 1);
	v ^= mask;
	assert_int_equal(pwrite(fd, &v, 1, (off_t)off), 1);
	close(fd);
}

/* Each field of the framing, the trailer and a data byte damaged: declined
 * (the inflating reader then reports it). */
static void test_damage(void **st)
{
	static const struct {
		unsigned k;
		uint8_t mask;
	} hits[] = {
	    {0, 0x01},		  /* BFINAL: early, or missing at the end */
	    {0, 0x02},		  /* BTYPE 01: fixed Huffman */
	    {0, 0x04},		  /* BTYPE 10: dynamic Huffman */
	    {1, 0x01},		  /* LEN */
	    {2, 0x80}, {3, 0x10}, /* NLEN */
	    {4, 0x01},
	};
	uint64_t p = PRE + ZLIB_HEAD;
	size_t z = write_stream(zl, 4);

	(void)st;
	for (unsigned i = 0; i < 4; i++) {
		for (unsigned h = 0; h < sizeof(hits) / sizeof(hits[0]); h++) {
			flip(p + hits[h].k, hits[h].mask);
			assert_int_equal(read_with(zl, 4, z, zl, 4), 0);
			flip(p + hits[h].k, hits[h].mask);
		}
		p += STORED_HEAD + zl[i];
	}
	assert_int_equal(read_with(zl, 4, z, zl, 4), 1); /* all put back */
	flip(PRE, 0x01);				 /* compression method 9 */
	assert_int_equal(read_with(zl, 4, z, zl, 4), 0);
	flip(PRE, 0x01);
	flip(PRE + 1, 0x02); /* check bits */
	assert_int_equal(read_with(zl, 4, z, zl, 4), 0);
	flip(PRE + 1, 0x02);
	tu_poke(tu_path("f.bin"), PRE, "\x78\xbb", 2); /* check bits right, FDICT set */
	assert_int_equal(read_with(zl, 4, z, zl, 4), 0);
	tu_poke(tu_path("f.bin"), PRE, "\x78\x01", 2);
	flip(PRE + 5000, 0x40); /* a data byte */
	assert_int_equal(read_with(zl, 4, z, zl, 4), 0);
	flip(PRE + 5000, 0x40);
	flip(PRE + z - 1, 0x40); /* the Adler-32 */
	assert_int_equal(read_with(zl, 4, z, zl, 4), 0);
	flip(PRE + z - 1, 0x40);
	assert_int_equal(read_with(zl, 4, z, zl, 4), 1);
}

/* Deflate data that is not stored blocks (zlib level 6 on text), and a
 * stream that ends in a compressed block: declined; learning from them
 * leaves the guess alone. */
static void test_not_stored(void **st)
{
	static uint8_t text[OUT], z[OUT + 1024];
	uLongf zl_len = sizeof(z);
	struct vd_stored_guess g;

	(void)st;
	for (unsigned i = 0; i < OUT; i++)
		text[i] = (uint8_t) "stored blocks only "[i % 19];
	assert_int_equal(compress2(z, &zl_len, text, OUT, 6), Z_OK);
	guess(&g, zl, 4);
	vd_stored_learn(&g, z, zl_len, OUT);
	assert_int_equal(g.n, 4);
	assert_memory_equal(g.len, zl, sizeof(zl));
	/* and learning a stored stream takes its layout */
	{
		const uint32_t l0[2] = {65535, 1};
		size_t n = write_stream(l0, 2);
		uint8_t *f = tu_load(tu_path("f.bin"), NULL);

		vd_stored_learn(&g, f + PRE, n, OUT);
		assert_int_equal(g.n, 2);
		assert_memory_equal(g.len, l0, sizeof(l0));
		vd_stored_learn(&g, f + PRE, n - 1, OUT); /* no room for the Adler-32 */
		vd_stored_learn(&g, f + PRE, n, OUT - 1); /* another size */
		assert_int_equal(g.n, 2);
		free(f);
	}
}

/* Random layouts and guesses, near and far: whatever the read answers, a 1
 * is the data (read_with checks it), and a guess near enough is taken. */
static void test_random(void **st)
{
	unsigned taken = 0;

	(void)st;
	for (int round = 0; round < 400; round++) {
		uint32_t real[VD_STORED_MAX], gl[VD_STORED_MAX];
		unsigned n = 1 + (unsigned)(next_rand() % 8), spread = (unsigned)(next_rand() % 3);
		uint64_t left = OUT;
		size_t z;
		bool near = true;
		int64_t drift = 0;

		for (unsigned i = 0; i < n; i++) {
			uint64_t l =
			    i + 1 == n ? left : vd_min_u64(left, OUT / n + next_rand() % 64);

			real[i] = (uint32_t)l;
			left -= l;
		}
		if (real[n - 1] > 65535)
			continue; /* a stored block holds at most 65,535 bytes */
		z = write_stream(real, n);
		/* the guess: each boundary moved by up to 2^(4 * spread) bytes */
		for (unsigned i = 0; i + 1 < n; i++) {
			int64_t d =
			    (int64_t)(next_rand() % (2u << (4 * spread))) - (1 << (4 * spread));
			int64_t l = (int64_t)real[i] + d - drift;

			if (l < 0 || l > 65535)
				l = real[i];
			gl[i] = (uint32_t)l;
			drift += (int64_t)gl[i] - (int64_t)real[i];
			near = near && (drift < 0 ? -drift : drift) < 64;
		}
		gl[n - 1] = (uint32_t)((int64_t)real[n - 1] - drift);
		if ((int64_t)real[n - 1] - drift < 0 || gl[n - 1] > 65535)
			continue;
		if (read_with(gl, n, z, real, n) == 1)
			taken++;
		else
			assert_false(near);
	}
	assert_true(taken > 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exact_guess), cmocka_unit_test(test_shifted_guess),
	    cmocka_unit_test(test_declined),	cmocka_unit_test(test_damage),
	    cmocka_unit_test(test_not_stored),	cmocka_unit_test(test_random),
	};

	tu_dir();
	return cmocka_run_group_tests(tests, setup, NULL);
}
