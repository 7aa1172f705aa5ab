/* Harness: the VHDX log on its own (disk/vhdx_log.c): entry validation,
 * the search for the active sequence (2.3.3), the replay overlay, and reads
 * through it.
 *
 * Input: byte 0 is where the ring starts to be filled (in 4 KiB sectors of
 * the 1 MiB log: the input wraps around its end), byte 1 the megabytes of
 * file after the log (the FlushedFileOffset check), 16 bytes of LogGuid,
 * then the log's bytes. The log lies at 1 MiB in a sparse file served by
 * memfs (zeros elsewhere). Log entries whose CRC-32C is stored as 0 get
 * theirs (unless they wrap).
 *
 * Checked after a replay: the overlay's extents are sorted, non-empty and
 * disjoint, and vhdx_file_read() and vhdx_overlay_touches() agree with a
 * naive composition of the file and the extents at random ranges. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "disk/vhdx.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void overlay_check(const struct vhdx_overlay *ov, int fd, uint64_t file_size,
			  struct fz_rng *r)
{
	uint64_t limit = ov->file_end > file_size ? ov->file_end : file_size;

	for (size_t i = 0; i < ov->n; i++) {
		if (ov->ext[i].len == 0)
			fz_fail("vhdx log: empty overlay extent %zu", i);
		if (i && ov->ext[i].off < ov->ext[i - 1].off + ov->ext[i - 1].len)
			fz_fail("vhdx log: overlay extents %zu and %zu overlap or are unsorted",
				i - 1, i);
		if (ov->ext[i].off + ov->ext[i].len > ov->file_end)
			fz_fail("vhdx log: overlay extent past the replayed end of the file");
	}
	for (unsigned k = 0; k < 16; k++) {
		uint8_t buf[8192], file[8192];
		uint64_t off, len = 1 + fz_rng_below(r, sizeof(buf)), n;
		bool touch = false;
		int ret;

		/* near an extent's edge, or anywhere up to the end */
		if (ov->n && fz_rng_below(r, 2)) {
			const struct vhdx_extent *x = &ov->ext[fz_rng_below(r, ov->n)];
			uint64_t edge = fz_rng_below(r, 2) ? x->off : x->off + x->len;
			off = edge > 4096 ? edge - fz_rng_below(r, 4096) : 0;
		} else {
			off = fz_rng_below(r, limit);
		}
		ret = vhdx_file_read(fd, file_size, ov, buf, (size_t)len, off);
		if (off + len > limit) {
			if (ret != -EIO)
				fz_fail("vhdx log: read past the replayed end returned %d", ret);
			continue;
		}
		if (ret < 0)
			fz_fail("vhdx log: read of %" PRIu64 " at %" PRIu64 " failed: %d", len, off,
				ret);
		/* the file's bytes (zeros past its end), then every extent over them:
		 * extents are disjoint (checked above), so order does not matter */
		n = off < file_size ? vd_min_u64(len, file_size - off) : 0;
		memset(file, 0, sizeof(file));
		if (n && vd_pread_full(fd, file, (size_t)n, off) < 0)
			fz_fail("memfs: cannot read the file");
		for (size_t i = 0; i < ov->n; i++) {
			const struct vhdx_extent *x = &ov->ext[i];
			uint64_t a = x->off > off ? x->off : off;
			uint64_t b = vd_min_u64(x->off + x->len, off + len);

			if (a >= b)
				continue;
			if (x->data)
				memcpy(file + (a - off), x->data + (a - x->off), (size_t)(b - a));
			else
				memset(file + (a - off), 0, (size_t)(b - a));
		}
		if (memcmp(buf, file, (size_t)len))
			fz_fail("vhdx log: read of %" PRIu64 " at %" PRIu64
				" differs from the file under the overlay",
				len, off);
		for (size_t i = 0; i < ov->n; i++)
			touch |=
			    ov->ext[i].off < off + len && off < ov->ext[i].off + ov->ext[i].len;
		touch |= off + len > file_size;
		if (vhdx_overlay_touches(ov, file_size, off, len) != touch)
			fz_fail("vhdx log: overlay_touches(%" PRIu64 ", %" PRIu64 ") is wrong", off,
				len);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char path[] = FZ_ROOT "/log.vhdx";
	const uint32_t log_len = VHDX_MiB;
	struct vhdx_header h = {.version = 1, .log_length = log_len, .log_offset = VHDX_MiB};
	struct vhdx_overlay ov = {0};
	struct vhdx_log_info info = {0};
	struct vd_image img = {0};
	uint64_t file_size;
	struct fz_rng r;
	char why[256];
	int ret;

	fz_init();
	fz_fs_reset();
	if (size < 18)
		return 0;
	fz_rng_init(&r, data, size);
	file_size = 2 * VHDX_MiB + (uint64_t)(data[1] % 8) * VHDX_MiB;
	memcpy(h.log_guid, data + 2, 16);
	/* the ring from sector data[0] on, wrapping; at most one ring's worth */
	{
		size_t n = size - 18 < log_len ? size - 18 : log_len;
		uint32_t at = (uint32_t)data[0] * 4096 % log_len;
		size_t first = n < log_len - at ? n : log_len - at;
		uint8_t *ring = malloc(n ? n : 1);

		if (!ring)
			fz_fail("out of memory");
		memcpy(ring, data + 18, n);
		fz_vhdx_fix_checksums(ring, first, VHDX_MiB + at);
		fz_vhdx_fix_checksums(ring + first, n - first, VHDX_MiB);
		if (fz_fs_place(path, VHDX_MiB + at, ring, first) < 0 ||
		    fz_fs_place(path, VHDX_MiB, ring + first, n - first) < 0 ||
		    fz_fs_place(path, file_size, NULL, 0) < 0)
			fz_fail("memfs: cannot add the file");
		free(ring);
	}
	/* something recognisable where the log does not lie */
	for (uint64_t o = 0; o < file_size; o += VHDX_MiB / 4) {
		uint8_t mark[64];

		memset(mark, (int)(o >> 18) + 1, sizeof(mark));
		if ((o < VHDX_MiB || o >= 2 * VHDX_MiB) && fz_fs_place(path, o, mark, 64) < 0)
			fz_fail("memfs: cannot add the file");
	}
	img.path = (char *)path;
	img.fd = vd_open_ro(path);
	img.file_size = file_size;
	if (img.fd < 0)
		fz_fail("memfs: cannot open the file");
	ret = vhdx_log_replay(&img, &h, &ov, &info, why, sizeof(why));
	if (ret < 0) {
		fz_check_ret(ret, "vhdx_log_replay");
		if (!why[0] || ov.n || ov.ext || ov.store)
			fz_fail("vhdx log: failed (%d) without a reason or with an overlay left",
				ret);
	} else {
		if (!info.replayed || info.entries == 0 || info.head_seq < info.tail_seq ||
		    info.head_seq - info.tail_seq + 1 != info.entries)
			fz_fail("vhdx log: replayed %u entries, sequence %" PRIu64 "-%" PRIu64,
				info.entries, info.tail_seq, info.head_seq);
		if (ov.file_end < file_size)
			fz_fail("vhdx log: replayed end %" PRIu64 " before the file's end",
				ov.file_end);
		fz_exercised++;
		overlay_check(&ov, img.fd, file_size, &r);
		vhdx_overlay_free(&ov);
	}
	vd_close(img.fd);
	fz_fs_reset();
	return 0;
}
