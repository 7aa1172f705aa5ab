/* Harness: zlib streams of stored blocks read straight into place
 * (disk/stored.c), against zlib's own inflate.
 *
 * Input: byte 0 the number of guessed blocks (mod 65), bytes 1-2 the output
 * length less one (LE), two bytes (LE) per guessed block size (the last one
 * made to fill the output when it can), then the file: a 12-byte marker and
 * the stream. Checked:
 *   - vd_stored_read answers 0 or 1; on 1 the marker is the file's first 12
 *     bytes, and zlib's uncompress() of the stream's zlen bytes gives
 *     exactly the output;
 *   - when vd_stored_learn takes a layout from the file's stream, a read
 *     guessing it answers 1 exactly when uncompress() of that layout's
 *     length gives the output length (the Adler-32 decides), and learns it
 *     back. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "disk/endian.h"
#include "disk/stored.h"
#include "disk/util.h"
#include "fuzz.h"

#define PRE 12u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t out[65536], ref[65536];

/* vd_stored_read of /fz/f with guess g; checks a 1 against uncompress(). */
static int read_check(const uint8_t *file, size_t flen, size_t out_len, struct vd_stored_guess *g)
{
	uint8_t pre[PRE];
	uint64_t zlen = 0;
	uLongf rlen = out_len;
	int fd = vd_open_ro(FZ_ROOT "/f"), r;

	if (fd < 0)
		fz_fail("stored: cannot open the served file: %d", fd);
	memset(out, 0xee, out_len);
	r = vd_stored_read(fd, 0, pre, PRE, out, out_len, g, &zlen);
	vd_close(fd);
	if (r != 0 && r != 1)
		fz_fail("stored: vd_stored_read answered %d", r);
	if (r == 0)
		return 0;
	fz_exercised++;
	if (zlen > flen - PRE || memcmp(pre, file, PRE))
		fz_fail("stored: zlen %llu past the file, or the marker not the file's",
			(unsigned long long)zlen);
	if (uncompress(ref, &rlen, file + PRE, (uLong)zlen) != Z_OK || rlen != out_len ||
	    memcmp(ref, out, out_len))
		fz_fail("stored: read %zu bytes straight that zlib does not inflate so", out_len);
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vd_stored_guess g = {0}, learnt = {0};
	size_t out_len, p = 3, flen;
	unsigned n;
	uint64_t sum = 0;

	fz_init();
	fz_fs_reset();
	if (size < 3)
		return 0;
	n = data[0] % (VD_STORED_MAX + 1);
	out_len = (size_t)vd_get_le16(data + 1) + 1;
	if (size < p + 2 * n + PRE)
		return 0;
	for (unsigned i = 0; i < n; i++, p += 2) {
		g.len[i] = vd_get_le16(data + p);
		if (i + 1 == n && sum <= out_len && out_len - sum <= 65535)
			g.len[i] = (uint32_t)(out_len - sum);
		sum += g.len[i];
	}
	g.n = n;
	flen = size - p;
	if (fz_fs_add(FZ_ROOT "/f", data + p, flen) < 0)
		fz_fail("stored: cannot serve the file");
	read_check(data + p, flen, out_len, &g);

	vd_stored_learn(&learnt, data + p + PRE, flen - PRE, out_len);
	if (learnt.n) {
		uint64_t zlen = vd_stored_zlen(learnt.n, out_len);
		uLongf rlen = out_len;
		bool good = zlen <= flen - PRE &&
			    uncompress(ref, &rlen, data + p + PRE, (uLong)zlen) == Z_OK &&
			    rlen == out_len;
		struct vd_stored_guess again = learnt;

		if (read_check(data + p, flen, out_len, &again) != good)
			fz_fail("stored: a read guessing the learnt layout answered %d, zlib %d",
				!good, good);
		if (again.n != learnt.n || memcmp(again.len, learnt.len, learnt.n * 4))
			fz_fail("stored: the read changed the layout it guessed right");
	}
	fz_fs_reset();
	return 0;
}
