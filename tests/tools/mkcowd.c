/* mkcowd: writes a vmfsSparse (COWD) extent for tests (layout as QEMU's block/vmdk.c reads it),
 * since qemu-img cannot create one.
 *
 *   mkcowd OUT SECTORS GRAIN [--write OFF:LEN:SEED]... [--model OUT.raw [--over P.raw]]
 *          [--mask OUT.mask] [--descriptor DESC [--parent P_DESC --parent-cid HEX] --cid HEX]
 *
 * Layout: 2048-byte header, GD at sector 4, then for each GD entry that maps a
 * written grain: its 4096-entry GT followed by its grains in virtual order (as
 * ESXi allocates on demand). Unwritten GTs and grains stay 0 (unallocated). */
#include "gen_common.h"

#define GT_ENTRIES 4096u

int main(int argc, char **argv)
{
	struct gen_model m;
	uint64_t per_gt, ngd, gd_sectors, next, gb;
	uint8_t hdr[2048] = {0};
	uint8_t *gd, *gt;
	int fd;

	gen_parse(&m, argc, argv, true, 0);
	if (m.grain > 2048)
		gen_die("GRAIN must be at most 2048 sectors");
	gb = m.grain * 512;
	per_gt = GT_ENTRIES * m.grain;
	ngd = (m.sectors + per_gt - 1) / per_gt;
	gd_sectors = (ngd * 4 + 511) / 512;
	gd = calloc(gd_sectors, 512);
	gt = malloc(GT_ENTRIES * 4);
	if (!gd || !gt)
		gen_die("out of memory");
	fd = open(m.out, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		gen_die("%s: cannot create: %s", m.out, strerror(errno));

	next = 4 + gd_sectors;
	for (uint64_t i = 0; i < ngd; i++) {
		uint64_t g0 = i * GT_ENTRIES, gt_sector = next;
		bool used = false;

		for (uint64_t k = 0; k < GT_ENTRIES && g0 + k < m.grains; k++)
			used |= m.gstate[g0 + k] == GEN_DATA;
		if (!used)
			continue;
		memset(gt, 0, GT_ENTRIES * 4);
		next += GT_ENTRIES * 4 / 512;
		for (uint64_t k = 0; k < GT_ENTRIES && g0 + k < m.grains; k++) {
			if (m.gstate[g0 + k] != GEN_DATA)
				continue;
			vd_put_le32(gt + k * 4, (uint32_t)next);
			if (vd_pwrite_full(fd, m.data + (g0 + k) * gb,
					   vd_min_u64(gb, (m.sectors - (g0 + k) * m.grain) * 512),
					   next * 512) < 0)
				gen_die("%s: write failed", m.out);
			next += m.grain;
		}
		vd_put_le32(gd + i * 4, (uint32_t)gt_sector);
		if (vd_pwrite_full(fd, gt, GT_ENTRIES * 4, gt_sector * 512) < 0)
			gen_die("%s: write failed", m.out);
	}

	memcpy(hdr, "COWD", 4);
	vd_put_le32(hdr + 4, 1);
	vd_put_le32(hdr + 8, 3);
	vd_put_le32(hdr + 12, (uint32_t)m.sectors);
	vd_put_le32(hdr + 16, (uint32_t)m.grain);
	vd_put_le32(hdr + 20, 4);
	vd_put_le32(hdr + 24, (uint32_t)ngd);
	vd_put_le32(hdr + 28, (uint32_t)next);
	vd_put_le32(hdr + 1060, 1); /* generation */
	if (vd_pwrite_full(fd, hdr, sizeof(hdr), 0) < 0 ||
	    vd_pwrite_full(fd, gd, gd_sectors * 512, 4 * 512) < 0 ||
	    ftruncate(fd, (off_t)next * 512))
		gen_die("%s: write failed", m.out);
	close(fd);
	gen_write_model(&m);
	gen_write_descriptor(&m, "vmfsSparse", "VMFSSPARSE");
	free(gd);
	free(gt);
	free(m.data);
	free(m.gstate);
	return 0;
}
