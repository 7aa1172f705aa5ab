/* Zlib streams of deflate stored blocks, read straight into place
 * (disk/stored.h). */
#include "disk/stored.h"

#include <libdeflate.h>
#include <stdbool.h>
#include <string.h>

#include "disk/endian.h"
#include "disk/util.h"

/* Bytes a guessed layout may leave out of place: a header's real place is
 * a few bytes from the guessed one (4 blocks: 60-120 bytes seen); more
 * means another layout altogether, and inflating is cheaper. */
#define STORED_FIX_MAX 2048u

/* A zlib stream as read: its bytes in the order of iov. */
struct zview {
	const struct iovec *iov;
	int n;
};

/* Copies len bytes at stream position q of v (inside it) into dst. */
static void zview_copy(const struct zview *v, uint64_t q, size_t len, uint8_t *dst)
{
	for (int i = 0; i < v->n && len; i++) {
		size_t l = v->iov[i].iov_len, k;

		if (q >= l) {
			q -= l;
			continue;
		}
		k = vd_min_u64(l - q, len);
		memcpy(dst, (const uint8_t *)v->iov[i].iov_base + q, k);
		dst += k;
		len -= k;
		q = 0;
	}
}

/* The blocks of the ztot-byte zlib stream in v when it is stored blocks
 * only (at most VD_STORED_MAX), out_len bytes of them, then the Adler-32
 * that ends it: their sizes into len; returns their number, or 0. */
static unsigned stored_walk(const struct zview *v, uint64_t ztot, size_t out_len, uint32_t *len)
{
	uint8_t h[STORED_HEAD];
	uint64_t q = ZLIB_HEAD, got = 0;
	unsigned n = 0;

	if (ztot < ZLIB_HEAD + STORED_HEAD + ZLIB_ADLER)
		return 0;
	zview_copy(v, 0, ZLIB_HEAD, h);
	/* deflate, window <= 32 KiB, check bits, no preset dictionary */
	if ((h[0] & 0x0f) != 8 || h[0] >> 4 > 7 || (h[0] << 8 | h[1]) % 31 || (h[1] & 0x20))
		return 0;
	for (bool final = false; !final;) {
		uint16_t l;

		if (n == VD_STORED_MAX || q + STORED_HEAD + ZLIB_ADLER > ztot)
			return 0;
		zview_copy(v, q, STORED_HEAD, h);
		l = vd_get_le16(h + 1);
		if ((h[0] >> 1 & 3) != 0 || (l ^ vd_get_le16(h + 3)) != 0xffff || l > out_len - got)
			return 0;
		final = h[0] & 1;
		len[n++] = l;
		got += l;
		q += STORED_HEAD + l;
	}
	return got == out_len && q + ZLIB_ADLER == ztot ? n : 0;
}

/* Records n block sizes as the guess, unless it holds them already (the
 * threads reading one image would take turns writing the same line). */
static void guess_set(struct vd_stored_guess *g, const uint32_t *len, unsigned n)
{
	bool same = __atomic_load_n(&g->n, __ATOMIC_RELAXED) == n;

	for (unsigned i = 0; same && i < n; i++)
		same = __atomic_load_n(&g->len[i], __ATOMIC_RELAXED) == len[i];
	if (same)
		return;
	for (unsigned i = 0; i < n; i++)
		__atomic_store_n(&g->len[i], len[i], __ATOMIC_RELAXED);
	__atomic_store_n(&g->n, n, __ATOMIC_RELAXED);
}

void vd_stored_learn(struct vd_stored_guess *g, const uint8_t *z, size_t zlen, size_t out_len)
{
	struct iovec iov = {.iov_base = (void *)z, .iov_len = zlen};
	struct zview v = {&iov, 1};
	uint32_t len[VD_STORED_MAX];
	unsigned n = stored_walk(&v, zlen, out_len, len);

	if (n)
		guess_set(g, len, n);
}

/* Headers before output byte x: one per block that starts at or before it
 * (start[i], i < n, increasing; start[0] = 0). */
static unsigned heads_before(const uint64_t *start, unsigned n, uint64_t x)
{
	unsigned k = 0;

	while (k < n && start[k] <= x)
		k++;
	return k;
}

/* Puts right the output bytes that the guessed block starts (gs) left out
 * of place, given the real ones (rs): output byte x is stream byte
 * ZLIB_HEAD + STORED_HEAD * heads_before(x) + x, and the read put there the
 * byte the guessed heads_before named instead. The two differ only between
 * a real and a guessed start. Gathers every byte first, then writes them:
 * the sources are the bytes as read. Returns false when too many are off. */
static bool stored_fix(const struct zview *v, uint8_t *out, const uint64_t *rs, const uint64_t *gs,
		       unsigned n)
{
	uint8_t tmp[STORED_FIX_MAX];
	size_t t = 0;

	for (int pass = 0; pass < 2; pass++) {
		t = 0;
		for (unsigned i = 1; i < n; i++) {
			uint64_t a = rs[i] < gs[i] ? rs[i] : gs[i],
				 e = rs[i] < gs[i] ? gs[i] : rs[i];

			if (e - a > STORED_FIX_MAX - t)
				return false;
			if (pass == 1) {
				memcpy(out + a, tmp + t, e - a);
				t += e - a;
				continue;
			}
			for (uint64_t x = a; x < e;) {
				unsigned h = heads_before(rs, n, x);
				uint64_t run = vd_min_u64(e, h < n ? rs[h] : e) - x;

				zview_copy(v, ZLIB_HEAD + (uint64_t)STORED_HEAD * h + x, run,
					   tmp + t);
				t += run;
				x += run;
			}
		}
	}
	return true;
}

int vd_stored_read(int fd, uint64_t off, uint8_t *pre, size_t pre_len, uint8_t *out, size_t out_len,
		   struct vd_stored_guess *g, uint64_t *zlen)
{
	uint8_t s[ZLIB_HEAD + STORED_HEAD * VD_STORED_MAX + ZLIB_ADLER];
	struct iovec iov[2 + 2 * VD_STORED_MAX];
	uint64_t gs[VD_STORED_MAX], rs[VD_STORED_MAX], sum = 0, ztot;
	uint32_t len[VD_STORED_MAX];
	unsigned n = __atomic_load_n(&g->n, __ATOMIC_RELAXED), k, real;
	struct zview v;
	int c = 0;

	if (n == 0 || n > VD_STORED_MAX)
		return 0;
	/* the guess: block i's header into s, its payload into out */
	iov[c++] = (struct iovec){pre, pre_len};
	iov[c++] = (struct iovec){s, ZLIB_HEAD + STORED_HEAD};
	for (k = 0; k < n; k++) {
		len[k] = __atomic_load_n(&g->len[k], __ATOMIC_RELAXED);
		gs[k] = sum;
		if (len[k] > out_len - sum)
			return 0; /* torn while another thread wrote it */
		iov[c++] = (struct iovec){out + sum, len[k]};
		sum += len[k];
		iov[c++] = (struct iovec){s + ZLIB_HEAD + STORED_HEAD * (k + 1),
					  k + 1 < n ? STORED_HEAD : ZLIB_ADLER};
	}
	if (sum != out_len)
		return 0;
	/* A read error or EOF may only mean that this stream is shorter than
	 * guessed: the caller's inflating read reports what is wrong. */
	if (vd_preadv_full(fd, iov, c, off) < 0)
		return 0;
	ztot = vd_stored_zlen(n, out_len);
	v = (struct zview){iov + 1, c - 1};
	real = stored_walk(&v, ztot, out_len, len);
	if (real != n)
		return 0;
	for (k = 0, sum = 0; k < n; k++) {
		rs[k] = sum;
		sum += len[k];
	}
	if (memcmp(rs, gs, n * sizeof(*rs)) && !stored_fix(&v, out, rs, gs, n))
		return 0;
	if (libdeflate_adler32(1, out, out_len) != vd_get_be32(s + ZLIB_HEAD + STORED_HEAD * n))
		return 0;
	guess_set(g, len, n);
	*zlen = ztot;
	return 1;
}
