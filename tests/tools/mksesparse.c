/* mksesparse: writes a seSparse extent for tests (layout as QEMU's block/vmdk.c reads it), since
 * qemu-img cannot create one.
 *
 *   mksesparse OUT SECTORS [--write OFF:LEN:SEED]... [--zero OFF:LEN]... [--unmap OFF:LEN]...
 *              [--cluster-start N] [--model OUT.raw [--over P.raw]] [--mask OUT.mask]
 *              [--descriptor DESC [--parent P_DESC --parent-cid HEX] --cid HEX]
 *
 * Layout: const header @0, volatile header @1, journal header @2, journal @4,
 * GD @8, then the GT region (one 64-sector GT per GD entry that maps anything),
 * free bitmap, backmap and the grains region. Data grains get clusters
 * N, N+1, ... in virtual order (--cluster-start exercises the split cluster
 * field); --zero gives type-2 and --unmap type-1 entries. */
#include "gen_common.h"

#define GT_ENTRIES 4096u
#define GT_SECTORS 64u

static uint64_t round8(uint64_t v)
{
	return (v + 7) & ~7ull;
}

int main(int argc, char **argv)
{
	struct gen_model m;
	uint64_t cluster0 = 0, ngd, gd_sectors, gt_off, n_gts = 0, n_data = 0, bitmap_off,
		 grains_off, grains_size, cl;
	uint8_t hdr[512] = {0}, vol[512] = {0}, *gd, *gt;
	uint64_t f[26] = {0};
	int fd;

	/* --cluster-start is ours; strip it before the common parser. */
	for (int i = 1; i + 1 < argc; i++) {
		if (!strcmp(argv[i], "--cluster-start")) {
			cluster0 = strtoull(argv[i + 1], NULL, 0);
			memmove(argv + i, argv + i + 2, (size_t)(argc - i - 1) * sizeof(*argv));
			argc -= 2;
			break;
		}
	}
	gen_parse(&m, argc, argv, false, 8);
	ngd = (m.grains + GT_ENTRIES - 1) / GT_ENTRIES;
	gd_sectors = (ngd * 8 + 511) / 512;
	for (uint64_t i = 0; i < ngd; i++) {
		bool used = false;

		for (uint64_t k = i * GT_ENTRIES; k < (i + 1) * GT_ENTRIES && k < m.grains; k++) {
			used |= m.gstate[k] != GEN_ABSENT;
			n_data += m.gstate[k] == GEN_DATA;
		}
		n_gts += used;
	}
	gt_off = round8(8 + gd_sectors);
	bitmap_off = gt_off + (n_gts ? n_gts : 1) * GT_SECTORS;
	grains_off = round8(bitmap_off + 2);
	grains_size = (cluster0 + (n_data ? n_data : 1)) * 8;

	gd = calloc(gd_sectors, 512);
	gt = malloc(GT_ENTRIES * 8);
	if (!gd || !gt)
		gen_die("out of memory");
	fd = open(m.out, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		gen_die("%s: cannot create: %s", m.out, strerror(errno));

	cl = cluster0;
	for (uint64_t i = 0, gti = 0; i < ngd; i++) {
		bool used = false;

		memset(gt, 0, GT_ENTRIES * 8);
		for (uint64_t k = 0; k < GT_ENTRIES && i * GT_ENTRIES + k < m.grains; k++) {
			uint64_t g = i * GT_ENTRIES + k, ent = 0;

			switch (m.gstate[g]) {
			case GEN_UNMAPPED:
				ent = 1ull << 60;
				break;
			case GEN_ZERO:
				ent = 2ull << 60;
				break;
			case GEN_DATA:
				ent = 3ull << 60 | (cl & 0xfff) << 48 | cl >> 12;
				if (vd_pwrite_full(fd, m.data + g * 4096,
						   vd_min_u64(4096, (m.sectors - g * 8) * 512),
						   (grains_off + cl * 8) * 512) < 0)
					gen_die("%s: write failed", m.out);
				cl++;
				break;
			default:
				continue;
			}
			vd_put_le64(gt + k * 8, ent);
			used = true;
		}
		if (!used)
			continue;
		vd_put_le64(gd + i * 8, 0x10000000ull << 32 | gti);
		if (vd_pwrite_full(fd, gt, GT_ENTRIES * 8, (gt_off + gti * GT_SECTORS) * 512) < 0)
			gen_die("%s: write failed", m.out);
		gti++;
	}

	f[0] = 0xcafebabe;
	f[1] = 0x0000000200000001ull;
	f[2] = m.sectors;
	f[3] = 8;
	f[4] = GT_SECTORS;
	f[10] = 1, f[11] = 1;			     /* volatile header */
	f[12] = 2, f[13] = 2;			     /* journal header */
	f[14] = 4, f[15] = 4;			     /* journal */
	f[16] = 8, f[17] = gd_sectors;		     /* grain directory */
	f[18] = gt_off, f[19] = bitmap_off - gt_off; /* grain tables */
	f[20] = bitmap_off, f[21] = 1;		     /* free bitmap */
	f[22] = bitmap_off + 1, f[23] = 1;	     /* backmap */
	f[24] = grains_off, f[25] = grains_size;
	for (int i = 0; i < 26; i++)
		vd_put_le64(hdr + 8 * i, f[i]);
	vd_put_le64(vol, 0xcafecafe);
	vd_put_le64(vol + 8, n_gts);
	vd_put_le64(vol + 16, 1);
	if (vd_pwrite_full(fd, hdr, 512, 0) < 0 || vd_pwrite_full(fd, vol, 512, 512) < 0 ||
	    vd_pwrite_full(fd, gd, gd_sectors * 512, 8 * 512) < 0 ||
	    ftruncate(fd, (off_t)((grains_off + grains_size) * 512)))
		gen_die("%s: write failed", m.out);
	close(fd);
	gen_write_model(&m);
	gen_write_descriptor(&m, "seSparse", "SESPARSE");
	free(gd);
	free(gt);
	free(m.data);
	free(m.gstate);
	return 0;
}
