/* mkvhdx: writes VHDX test images (bases, differencing children, pending
 * logs) with tests/tools/vhdx_gen.h, plus the exact raw model of what each
 * one must read as. qemu-img makes neither differencing VHDX nor dirty logs.
 *
 *   mkvhdx OUT SIZE [--block BYTES] [--sector 512|4096] [--physical 512|4096]
 *          [--fixed] [--parent PARENT.vhdx [--linkage2] [--no-relative]]
 *          [--seed S] [--writes N] [--max-len SECTORS] [--zero-blocks N]
 *          [--log | --corrupt-log] [--bad-header 1|2] [--model OUT.raw [--over BELOW.raw]]
 *
 * --parent makes a differencing child whose parent_linkage is the parent's
 * DataWriteGuid (read with the vdcore reader) and whose locator holds
 * relative_path (the parent's base name, unless --no-relative), a
 * volume_path and an absolute_win32_path naming a Windows machine's copy
 * (both fall back to the base name); --linkage2 moves the real id into
 * parent_linkage2 and puts a stale one in parent_linkage (as Hyper-V does
 * mid-merge). --writes random sector runs (short runs ending mid-bitmap-
 * byte, whole blocks, runs across blocks), --zero-blocks blocks set to
 * ZERO/UNMAPPED/UNDEFINED in turn. --log leaves a pending log (stale
 * metadata in place); --corrupt-log a log whose every entry has a bad
 * CRC-32C over metadata that is current. --model writes this layer's view over
 * --over (the parent's model) or zeros.
 *
 * Exit status 0 on success, 1 on error, 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/tools/vhdx_gen.h"

static int usage(void)
{
	fprintf(stderr,
		"usage: mkvhdx OUT SIZE [--block BYTES] [--sector 512|4096] [--physical N] "
		"[--fixed]\n"
		"              [--parent PARENT [--linkage2] [--no-relative]] [--seed S] "
		"[--writes N]\n"
		"              [--max-len SECTORS] [--zero-blocks N] [--log | --corrupt-log]\n"
		"              [--bad-header 1|2]\n"
		"              [--model OUT.raw [--over BELOW.raw]]\n");
	return 2;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

int main(int argc, char **argv)
{
	struct vxg_opts o = {0};
	struct vxg_layer l;
	const char *out, *parent = NULL, *model = NULL, *over = NULL;
	unsigned writes = 0, zero_blocks = 0;
	uint64_t max_len = 64;
	bool linkage2 = false, relative = true;
	char vol[512], absp[512];
	int r;

	if (argc < 3)
		return usage();
	out = argv[1];
	o.size = strtoull(argv[2], NULL, 0);
	o.seed = 1;
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--fixed"))
			o.fixed = true;
		else if (!strcmp(a, "--log"))
			o.pending_log = true;
		else if (!strcmp(a, "--corrupt-log"))
			o.pending_log = o.corrupt_log = true;
		else if (!strcmp(a, "--linkage2"))
			linkage2 = true;
		else if (!strcmp(a, "--no-relative"))
			relative = false;
		else if (!v)
			return usage();
		else if (i++, !strcmp(a, "--block"))
			o.block = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--sector"))
			o.lss = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--physical"))
			o.pss = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--parent"))
			parent = v;
		else if (!strcmp(a, "--seed"))
			o.seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--writes"))
			writes = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--max-len"))
			max_len = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--zero-blocks"))
			zero_blocks = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--bad-header"))
			o.bad_header = atoi(v);
		else if (!strcmp(a, "--model"))
			model = v;
		else if (!strcmp(a, "--over"))
			over = v;
		else
			return usage();
	}
	if (!max_len)
		return usage();
	if (parent) {
		struct vd_image *p;
		char b[37];
		if (vd_image_open(parent, 0, &p) < 0)
			return 1;
		o.diff = true;
		snprintf(o.linkage, sizeof(o.linkage), "{%s}", vd_id_format(&p->id, b));
		vd_image_close(p);
		if (linkage2) {
			memcpy(o.linkage2, o.linkage, sizeof(o.linkage));
			snprintf(o.linkage, sizeof(o.linkage), "{0badc0de-0000-4000-8000-%012llx}",
				 (unsigned long long)o.seed);
		}
		snprintf(vol, sizeof(vol),
			 "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\Hyper-V\\%s",
			 base_name(parent));
		snprintf(absp, sizeof(absp), "C:\\Users\\Public\\Hyper-V\\%s", base_name(parent));
		o.relative_path = relative ? base_name(parent) : NULL;
		o.volume_path = vol;
		o.absolute_path = absp;
	}
	r = vxg_init(&l, &o);
	if (r < 0) {
		fprintf(stderr, "mkvhdx: bad size or geometry\n");
		return 2;
	}
	if (writes || zero_blocks)
		vxg_random(&l, o.seed, writes, max_len, zero_blocks);
	r = vxg_file_write(&l, out);
	if (r < 0) {
		fprintf(stderr, "mkvhdx: %s: %s\n", out, strerror(-r));
		vxg_free(&l);
		return 1;
	}
	if (model) {
		uint8_t *view = calloc(1, o.size);
		int fd;
		if (!view)
			return 1;
		if (over) {
			fd = open(over, O_RDONLY);
			if (fd < 0 || pread(fd, view, o.size, 0) < 0) {
				fprintf(stderr, "mkvhdx: %s: %s\n", over, strerror(errno));
				return 1;
			}
			close(fd);
		}
		vxg_view(&l, view);
		fd = open(model, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || vd_pwrite_full(fd, view, o.size, 0) < 0 || close(fd) < 0) {
			fprintf(stderr, "mkvhdx: %s: cannot write\n", model);
			return 1;
		}
		free(view);
	}
	vxg_free(&l);
	return 0;
}
