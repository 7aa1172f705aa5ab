/* Reading a zlib stream (RFC 1950) made of deflate stored blocks (RFC 1951,
 * 3.2.4) straight into place.
 *
 * Deflate keeps data it cannot shrink (random data, data already compressed
 * or encrypted) in stored blocks: a 5-byte header (BFINAL/BTYPE byte, LEN,
 * NLEN) and LEN bytes of the data as they are. Inflating such a stream is a
 * copy, and a copy more than a reader of an uncompressed image makes. Here
 * the file is read with one preadv(2) that scatters the block payloads into
 * the output and only the headers and the Adler-32 into a scratch buffer.
 *
 * Where the headers are is known only once each one is read, so the read
 * follows a guess: the block sizes of the last such stream read (zlib's
 * deflate cuts blocks every 16,383 symbols, so one grain of random data has
 * four blocks whose sizes differ by a few bytes from the next grain's). The
 * real headers are then parsed out of what was read, and the few bytes that a
 * header's real place put elsewhere are moved where they belong. A stream
 * with another number of blocks, or any other data, is not read so (the
 * caller inflates it). The output is checked against the stream's Adler-32
 * as inflating would. */
#ifndef VD_STORED_H
#define VD_STORED_H

#include <stddef.h>
#include <stdint.h>

#define VD_STORED_MAX 64u /* stored blocks of a stream read straight into place */
#define ZLIB_HEAD 2u	  /* RFC 1950 2.2: CMF, FLG */
#define ZLIB_ADLER 4u	  /* RFC 1950 2.2: ADLER32, big-endian */
#define STORED_HEAD 5u	  /* RFC 1951 3.2.4: BFINAL/BTYPE (then byte-aligned), LEN, NLEN */

/* Length of a zlib stream of n stored blocks that hold out_len bytes. */
static inline uint64_t vd_stored_zlen(unsigned n, uint64_t out_len)
{
	return ZLIB_HEAD + (uint64_t)STORED_HEAD * n + out_len + ZLIB_ADLER;
}

/* The layout expected of the next stream: the sizes of its n blocks (n == 0:
 * none known yet). Shared by the threads reading one image; each field is
 * read and written atomically, and a torn guess is only a wrong guess. */
struct vd_stored_guess {
	uint32_t n;
	uint32_t len[VD_STORED_MAX];
};

/* Notes the layout of zlib stream z (zlen bytes) in *g when it is stored
 * blocks only, out_len bytes of them, and ends with its Adler-32 at
 * z + zlen. Anything else leaves *g as it is. */
void vd_stored_learn(struct vd_stored_guess *g, const uint8_t *z, size_t zlen, size_t out_len);

/* Reads pre_len bytes at off into pre (the caller's marker before the
 * stream), then the zlib stream after them, laid out as *g guesses, into
 * out (out_len bytes of output). Returns 1 when out holds the stream's
 * whole output, its Adler-32 checked, and *zlen its length (the caller
 * checks it against its marker); 0 when the file does not hold a stream so
 * laid out (out and pre are then undefined: inflate it instead); -errno when
 * the read failed. Learns the layout it found. */
int vd_stored_read(int fd, uint64_t off, uint8_t *pre, size_t pre_len, uint8_t *out, size_t out_len,
		   struct vd_stored_guess *g, uint64_t *zlen);

#endif
