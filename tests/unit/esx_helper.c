/* Helpers shared by the VMDK ESXi/stream backend unit tests; see esx_helper.h. */
#include "esx_helper.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/chain.h"

int esx_run(const char *fmt, ...)
{
	char exe[PATH_MAX], *user;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	va_list ap;
	int st;

	if (n <= 0)
		return -1;
	exe[n] = 0;
	va_start(ap, fmt);
	st = vasprintf(&user, fmt, ap);
	va_end(ap);
	if (st < 0)
		return -1;
	st = tu_sh("cd '%s' && T='%s' && %s", tu_dir(), dirname(exe), user);
	free(user);
	return st;
}

int esx_extent_open(const struct vmdk_extent_ops *ops, const char *path, uint64_t sectors,
		    struct vmdk_extent *e)
{
	int ret;

	memset(e, 0, sizeof(*e));
	e->ops = ops;
	e->sectors = sectors;
	e->path = strdup(path);
	e->image_path = e->path;
	e->own_fd = true;
	e->fd = vd_open_ro(path);
	if (e->fd < 0 || !e->path) {
		ret = e->fd < 0 ? e->fd : -ENOMEM;
		goto fail;
	}
	if (vd_fd_size(e->fd, &e->file_size) < 0) {
		ret = -EIO;
		goto fail;
	}
	ret = ops->open(e);
	if (ret == 0)
		return 0;
	if (e->priv) {
		fprintf(stderr, "%s: %s open() failed but left its state behind\n", path,
			ops->name);
		abort();
	}
fail:
	if (e->fd >= 0)
		vd_close(e->fd);
	free(e->path);
	memset(e, 0, sizeof(*e));
	e->fd = -1;
	return ret;
}

void esx_extent_close(struct vmdk_extent *e)
{
	if (e->ops && e->ops->close)
		e->ops->close(e);
	if (e->fd >= 0)
		vd_close(e->fd);
	free(e->path);
	memset(e, 0, sizeof(*e));
	e->fd = -1;
}

int esx_extent_read_all(struct vmdk_extent *e, size_t chunk, uint8_t **out, uint8_t *mask)
{
	uint64_t size = e->sectors * 512, off = 0;
	uint8_t *buf = calloc(size ? size : 1, 1);

	*out = buf;
	if (!buf)
		return -ENOMEM;
	while (off < size) {
		uint64_t want = size - off < chunk ? size - off : chunk, pnum = 0;
		int st = esx_status(e, off, want, &pnum);

		if (st < 0)
			return st;
		if (pnum == 0 || pnum > want || st > VD_ZERO)
			return -ERANGE;
		if (st == VD_DATA) {
			int ret = vmdk_extent_read(e, buf + off, pnum, off);
			if (ret < 0)
				return ret;
		}
		if (mask)
			for (uint64_t s = off / 512; s < (off + pnum + 511) / 512; s++)
				mask[s] = (uint8_t)st;
		off += pnum;
	}
	return 0;
}

char *esx_describe(struct vmdk_extent *e)
{
	struct vd_json j = {0};

	vd_json_obj_begin(&j, NULL);
	e->ops->describe(e, &j);
	vd_json_obj_end(&j);
	return j.buf.data;
}

int esx_vmfs_base(uint64_t sectors)
{
	return esx_run("head -c %llu /dev/urandom >b-flat.vmdk && printf '"
		       "# Disk DescriptorFile\\nversion=1\\nCID=0badcafe\\n"
		       "parentCID=ffffffff\\ncreateType=\"vmfs\"\\n"
		       "RW %llu VMFS \"b-flat.vmdk\"\\n' >b.vmdk",
		       (unsigned long long)sectors * 512, (unsigned long long)sectors);
}

int esx_chain_check(const char *top, unsigned depth, const char *const *models, const char *needle)
{
	struct vd_chain *c = NULL;
	struct vd_json j = {0};
	int ret = vd_chain_open(tu_path("%s", top), 0, &c);

	if (ret < 0)
		return ret;
	if (vd_chain_depth(c) != depth) {
		fprintf(stderr, "%s: depth %u, expected %u\n", top, vd_chain_depth(c), depth);
		ret = 1;
		goto out;
	}
	for (unsigned i = 0; i < depth && ret == 0; i++) {
		size_t mlen;
		uint8_t *model = tu_read_file(tu_path("%s", models[i]), &mlen), *got;

		got = model ? malloc(mlen ? mlen : 1) : NULL;
		if (!got || vd_chain_size(c, i) != mlen) {
			fprintf(stderr, "%s: level %u: size or model %s wrong\n", top, i,
				models[i]);
			ret = 1;
		} else {
			ret = vd_chain_read(c, i, got, mlen, 0);
			if (ret == 0 && memcmp(got, model, mlen)) {
				fprintf(stderr, "%s: level %u differs from %s\n", top, i,
					models[i]);
				ret = 1;
			}
		}
		free(got);
		free(model);
	}
	if (ret == 0) {
		ret = vd_chain_describe(c, &j);
		if (ret == 0 && needle && (!j.buf.data || !strstr(j.buf.data, needle))) {
			fprintf(stderr, "%s: chain JSON lacks %s:\n%s\n", top, needle, j.buf.data);
			ret = 1;
		}
		vd_buf_free(&j.buf);
	}
out:
	vd_chain_close(c);
	return ret;
}

static void check_collect(void *ctx, const char *path, const char *msg)
{
	vd_buf_printf(ctx, "%s: %s\n", path, msg);
}

int esx_check(struct vmdk_extent *e, char **text)
{
	struct vd_buf b = {0};
	struct vd_check chk = {.report = check_collect, .ctx = &b};
	int r = e->ops->check ? e->ops->check(e, &chk) : -ENOTSUP;

	*text = b.data ? b.data : strdup("");
	return r < 0 ? r : (int)chk.problems;
}

uint64_t esx_json_u64(const char *js, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\": ", key);
	p = strstr(js, pat);
	if (!p)
		abort();
	return strtoull(p + strlen(pat), NULL, 10);
}
