/* vdmount --info / --json / --check / --hash: inspection without mounting.
 *
 * A thin front end over the core API (like squashfuse_ls next to
 * squashfuse): it opens chains with vd_chain_open() and reads them through
 * views, knows no format, and uses no FUSE. main() hands the whole command
 * line here first; fs_inspect_main() answers -1 when no inspection option is
 * present, so mounting goes on untouched.
 *
 * Exit status: --info/--json/--hash 0 when every chain opened and was read,
 * 1 otherwise. --check 0 when clean, 1 when a problem was found (including
 * a chain that does not open because its metadata is inconsistent), 2 when
 * a file cannot be read at all (missing, unreadable, I/O error). */
#include "fs/inspect.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "chain/part.h"
#include "fs/vm.h"

enum inspect_mode { MODE_NONE, MODE_INFO, MODE_JSON, MODE_CHECK, MODE_HASH };

struct inspect_opts {
	enum inspect_mode mode;
	bool changes, force, inputs;
	const char *algo;
};

static void inspect_usage(FILE *f)
{
	fprintf(f, "usage: vdmount --info [--changes] [--force] IMAGE...\n"
		   "       vdmount --json [--force] IMAGE...\n"
		   "       vdmount --check IMAGE...\n"
		   "       vdmount --hash [--algo sha256|sha1|md5] [--force] IMAGE...\n"
		   "       vdmount --hash --inputs [--algo sha256|sha1|md5] IMAGE...\n");
}

static const char *human(uint64_t v, char buf[32])
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double d = (double)v;
	unsigned u = 0;

	while (d >= 1024 && u < 5) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, 32, "%" PRIu64 " B", v);
	else
		snprintf(buf, 32, "%.1f %s", d, unit[u]);
	return buf;
}

static const char *time_text(time_t t, char buf[32])
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, 32, "?");
	return buf;
}

/* --- --info ---------------------------------------------------------------- */

static void info_partitions(struct vd_chain *c)
{
	unsigned top = vd_chain_depth(c) - 1;
	struct vd_part_table *t = NULL;
	static const char *const schemes[] = {"none", "MBR", "GPT"};
	char g[37], h[32];

	if (vd_part_scan(c, top, &t) < 0) {
		printf("partitions: cannot read the partition table\n");
		return;
	}
	printf("partitions (merged disk): %s", schemes[t->scheme]);
	if (t->scheme != VD_PART_NONE)
		printf(", %" PRIu32 "-byte sectors%s%s", t->sector_size,
		       t->hybrid ? ", hybrid MBR" : "",
		       t->backup_used ? ", backup GPT header" : "");
	printf("\n");
	if (t->note)
		printf("  note: %s\n", t->note);
	for (unsigned i = 0; i < t->n_warnings; i++)
		printf("  warning: %s\n", t->warnings[i]);
	if (t->n)
		printf("  %-5s %14s %14s %-10s  %-24s %s\n", "file", "start", "size", "", "type",
		       "filesystem");
	for (unsigned i = 0; i < t->n; i++) {
		const struct vd_part *p = &t->parts[i];
		struct vd_view v = vd_view_part(c, top, p);
		const char *fs = vd_view_fs_sniff(&v);
		const char *tn;
		char type[40];

		if (t->scheme == VD_PART_GPT) {
			tn = vd_gpt_type_name(p->gpt.type_guid);
			snprintf(type, sizeof(type), "%s",
				 tn ? tn : vd_guid_format(p->gpt.type_guid, g));
		} else {
			tn = vd_mbr_type_name(p->mbr_type);
			snprintf(type, sizeof(type), "%02x %s%s", p->mbr_type, tn ? tn : "",
				 p->logical ? " (logical)" : "");
		}
		printf("  p%-4u %14" PRIu64 " %14" PRIu64 " %-10s  %-24s %s%s%s%s\n", p->number,
		       p->start, p->size, human(p->size, h), type, fs ? fs : "-",
		       t->scheme == VD_PART_GPT && p->gpt.name[0] ? " \"" : "",
		       t->scheme == VD_PART_GPT ? p->gpt.name : "",
		       t->scheme == VD_PART_GPT && p->gpt.name[0] ? "\"" : "");
	}
	vd_part_table_free(t);
}

static int info_layer(struct vd_chain *c, unsigned i, bool changes)
{
	struct vd_image *img = vd_chain_layer(c, i);
	const struct vd_chain_link *link = vd_chain_link(c, i);
	struct timespec mt;
	char *name = fs_layer_name(c, i, &mt);
	uint64_t data = 0, zero = 0;
	char idb[37], h[32], tb[32];
	const char *idname = img->id.len == 4 ? "CID" : "unique id";
	struct stat st;
	int r;

	printf("layer %s%s\n", name ? name : "?", i == 0 ? " (base)" : "");
	free(name);
	printf("  file:           %s\n", img->path);
	printf("  layer time:     %s\n", time_text(mt.tv_sec, tb));
	if (fstat(img->fd, &st) == 0)
		printf("  file size:      %" PRIu64 " (%s), modified %s\n", img->file_size,
		       human(img->file_size, h), time_text(st.st_mtim.tv_sec, tb));
	printf("  format:         %s %s\n", img->ops->name, img->subformat ? img->subformat : "");
	printf("  virtual size:   %" PRIu64 " (%s)\n", img->size, human(img->size, h));
	printf("  grain/block:    %" PRIu64 "\n", img->alloc_unit);
	r = vd_chain_layer_usage(c, i, &data, &zero);
	if (r == 0)
		printf("  allocated:      %" PRIu64 " (%s) data, %" PRIu64 " zeroed\n", data,
		       human(data, h), zero);
	else
		printf("  allocated:      unknown (%s)\n", strerror(-r));
	printf("  %s:%*s%s\n", idname, (int)(15 - strlen(idname)), "",
	       img->id.len ? vd_id_format(&img->id, idb) : "-");
	if (img->has_parent) {
		printf("  parent %s:%*s%s\n", idname, (int)(8 - strlen(idname)), "",
		       vd_id_format(&img->parent_id, idb));
		for (unsigned k = 0; k < img->n_hints; k++) {
			bool used = link && link->hint_kind == img->hints[k].kind;
			printf("  parent hint:    %s \"%s\"%s%s\n", img->hints[k].kind,
			       img->hints[k].path, used ? " -> " : "",
			       used ? vd_chain_layer(c, i - 1)->path : "");
		}
		if (link)
			printf("  link:           %s id %s, timestamps %s\n",
			       link->id_match ? "parent" : "MISMATCHED parent",
			       link->id_match ? "matches" : "(forced)",
			       link->stamp_match ? "agree" : "DISAGREE");
	}
	if (changes) {
		struct vd_buf b = {0};
		r = vd_chain_changes(c, i, &b);
		printf("  changes:\n");
		for (char *line = b.data, *nl; r == 0 && line && *line; line = nl + 1) {
			nl = strchr(line, '\n');
			if (!nl)
				break;
			printf("    %.*s\n", (int)(nl - line), line);
		}
		vd_buf_free(&b);
		if (r < 0)
			return r;
	}
	return 0;
}

static int do_info(struct vd_chain *c, const char *image, const struct inspect_opts *o)
{
	unsigned depth = vd_chain_depth(c);
	char h[32];
	int ret = 0;

	fs_vm_print(c, stdout);
	printf("image %s: %u layer%s, virtual size %" PRIu64 " (%s)\n", image, depth,
	       depth == 1 ? "" : "s", vd_chain_size(c, depth - 1),
	       human(vd_chain_size(c, depth - 1), h));
	for (unsigned i = 0; i < depth; i++)
		if (info_layer(c, i, o->changes) < 0)
			ret = 1;
	printf("validation: %s\n", vd_chain_warning_count(c) ? "warnings" : "ok");
	for (unsigned i = 0; i < vd_chain_warning_count(c); i++)
		printf("  warning: %s\n", vd_chain_warning(c, i));
	info_partitions(c);
	return ret;
}

/* --- --json ------------------------------------------------------------------ */

static int do_json(struct vd_chain *c)
{
	struct vd_json j = {0};
	int r = vd_chain_describe(c, &j);

	/* Byte for byte what a mount shows as chain.json. */
	if (r == 0)
		printf("%.*s\n", (int)j.buf.len, j.buf.data);
	else
		vd_log_err("cannot describe the chain: %s", strerror(-r));
	vd_buf_free(&j.buf);
	return r < 0;
}

/* --- --check ------------------------------------------------------------------ */

static void check_print(void *ctx, const char *path, const char *msg)
{
	(void)ctx;
	printf("problem: %s: %s\n", path, msg);
}

static void check_note(void *ctx, const char *path, const char *msg)
{
	(void)ctx;
	printf("note: %s: %s\n", path, msg);
}

static int do_check(struct vd_chain *c, const char *image)
{
	struct vd_check chk = {.report = check_print, .note = check_note};

	for (unsigned i = 0; i < vd_chain_warning_count(c); i++) {
		chk.problems++;
		printf("problem: %s\n", vd_chain_warning(c, i));
	}
	for (unsigned i = 0; i < vd_chain_depth(c); i++) {
		struct vd_image *img = vd_chain_layer(c, i);
		int r;

		if (!img->ops->check) {
			printf("note: %s: %s images have no metadata check\n", img->path,
			       img->ops->name);
			continue;
		}
		r = img->ops->check(img, &chk);
		if (r < 0) {
			printf("%s: cannot be read (%s)\n", img->path, strerror(-r));
			return 2;
		}
	}
	if (chk.problems)
		printf("%s: %u problem%s\n", image, chk.problems, chk.problems == 1 ? "" : "s");
	else
		printf("%s: clean\n", image);
	return chk.problems ? 1 : 0;
}

/* --- --hash ------------------------------------------------------------------- */

#define HASH_CHUNK (1u << 20)

struct progress {
	bool tty;
	const char *name;
	uint64_t total, done;
	int64_t start, last; /* vd_mono_ns() */
};

/* Seconds from a to b (CLOCK_MONOTONIC ns). */
static double since(int64_t a, int64_t b)
{
	return (double)(b - a) / 1e9;
}

/* On a terminal: a bar with bytes, rate and ETA, redrawn 5 times a second.
 * Otherwise: "progress NAME DONE TOTAL" lines, one a second and at the end. */
static void progress_show(struct progress *p, bool final)
{
	int64_t now = vd_mono_ns();
	double el, rate;
	char a[32], b[32], r[32];

	if (!final && since(p->last, now) < (p->tty ? 0.2 : 1.0))
		return;
	p->last = now;
	if (!p->tty) {
		fprintf(stderr, "progress %s %" PRIu64 " %" PRIu64 "\n", p->name, p->done,
			p->total);
		return;
	}
	el = since(p->start, now);
	rate = el > 0 ? (double)p->done / el : 0;
	unsigned pct = p->total ? (unsigned)(100.0 * (double)p->done / (double)p->total) : 100;
	double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
	char bar[31];
	for (unsigned i = 0; i < 30; i++)
		bar[i] = i < pct * 30 / 100 ? '#' : '.';
	bar[30] = 0;
	fprintf(stderr, "\r%-24.24s [%s] %3u%% %s/%s %s/s ETA %u:%02u%s", p->name, bar, pct,
		human(p->done, a), human(p->total, b), human((uint64_t)rate, r),
		(unsigned)(eta / 60), (unsigned)eta % 60, final ? "\n" : "");
	fflush(stderr);
}

/* Digest of a view. Holes are hashed as zeros without reading: the chain
 * zero-fills ranges no layer holds, and those cost a table lookup. */
static int hash_view(const struct vd_view *v, const EVP_MD *md, const char *name, bool tty,
		     char hex[2 * EVP_MAX_MD_SIZE + 1])
{
	struct progress p = {.tty = tty, .name = name, .total = v->size};
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t *buf = malloc(HASH_CHUNK);
	int r = 0;

	if (!ctx || !buf || !EVP_DigestInit_ex(ctx, md, NULL)) {
		r = -ENOMEM;
		goto out;
	}
	p.start = vd_mono_ns();
	p.last = p.start;
	while (p.done < v->size) {
		size_t n = (size_t)vd_min_u64(HASH_CHUNK, v->size - p.done);
		r = vd_view_read(v, buf, n, p.done);
		if (r < 0)
			goto out;
		if (!EVP_DigestUpdate(ctx, buf, n)) {
			r = -EIO;
			goto out;
		}
		p.done += n;
		progress_show(&p, false);
	}
	progress_show(&p, true);
	if (!EVP_DigestFinal_ex(ctx, dig, &dlen)) {
		r = -EIO;
		goto out;
	}
	for (unsigned i = 0; i < dlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", dig[i]);
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

/* Prints sha256sum-style lines ("HEX  disk", "HEX  layers/NN-x") so that
 * `sha256sum -c` run in a mount of the same chain verifies them. */
static int do_hash(struct vd_chain *c, const char *image, const EVP_MD *md, const char *prefix)
{
	unsigned top = vd_chain_depth(c) - 1;
	char hex[2 * EVP_MAX_MD_SIZE + 1], top_hex[2 * EVP_MAX_MD_SIZE + 1] = "";
	bool tty = isatty(STDERR_FILENO);

	for (unsigned i = 0; i <= top; i++) {
		char *name = fs_layer_name(c, i, NULL), *label = NULL;
		struct vd_view v = vd_view_disk(c, i);
		int r = -ENOMEM;

		if (name && asprintf(&label, "%slayers/%s", prefix, name) >= 0)
			r = hash_view(&v, md, label, tty, hex);
		else
			label = NULL;
		if (r < 0) {
			vd_log_err("%s: cannot hash %s: %s", image, label ? label : "a layer",
				   strerror(-r));
			free(name);
			free(label);
			return 1;
		}
		printf("%s  %s\n", hex, label);
		fflush(stdout);
		if (i == top)
			memcpy(top_hex, hex, sizeof(hex));
		free(name);
		free(label);
	}
	/* The merged disk is the top layer's view: same bytes, hashed once. */
	printf("%s  %sdisk\n", top_hex, prefix);
	return 0;
}

/* --hash --inputs: one line per input file of the chain (each layer's file
 * and extent files, base first), "HEX  /canonical/path", which `sha256sum
 * -c` verifies anywhere: the examiner's record of the evidence files
 * themselves, next to the digests of what they hold. */
struct input_hash {
	const EVP_MD *md;
	const char *image;
	uint8_t *buf;
};

#define INPUT_CHUNK (1u << 20)

static int hash_input(void *ctx, const char *path, int fd, const struct vd_file_info *fi)
{
	struct input_hash *h = ctx;
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = md && EVP_DigestInit_ex(md, h->md, NULL) ? 0 : -ENOMEM;

	for (uint64_t off = 0; r == 0 && off < fi->size;) {
		size_t n = (size_t)vd_min_u64(INPUT_CHUNK, fi->size - off);

		r = vd_pread_full(fd, h->buf, n, off);
		if (r == 0 && !EVP_DigestUpdate(md, h->buf, n))
			r = -EIO;
		off += n;
	}
	if (r == 0 && !EVP_DigestFinal_ex(md, dig, &dlen))
		r = -EIO;
	EVP_MD_CTX_free(md);
	if (r < 0) {
		vd_log_err("%s: cannot hash %s: %s", h->image, path, strerror(-r));
		return r;
	}
	for (unsigned i = 0; i < dlen; i++)
		printf("%02x", dig[i]);
	printf("  %s\n", fi->canonical ? fi->canonical : path);
	fflush(stdout);
	return 0;
}

static int do_hash_inputs(struct vd_chain *c, const char *image, const EVP_MD *md)
{
	struct input_hash h = {md, image, malloc(INPUT_CHUNK)};
	int r = h.buf ? 0 : -ENOMEM;

	for (unsigned i = 0; r == 0 && i < vd_chain_depth(c); i++)
		r = vd_image_inputs(vd_chain_layer(c, i), hash_input, &h);
	free(h.buf);
	if (r == -ENOMEM)
		vd_log_err("%s: out of memory", image);
	return r < 0 ? 1 : 0;
}

/* --- dispatch -------------------------------------------------------------------- */

static int inspect_parse(int argc, char **argv, struct inspect_opts *o)
{
	static const struct option longopts[] = {
	    {"info", no_argument, NULL, 'I'},	 {"json", no_argument, NULL, 'J'},
	    {"check", no_argument, NULL, 'C'},	 {"hash", no_argument, NULL, 'H'},
	    {"changes", no_argument, NULL, 'c'}, {"algo", required_argument, NULL, 'a'},
	    {"force", no_argument, NULL, 'F'},	 {"inputs", no_argument, NULL, 'i'},
	    {"help", no_argument, NULL, 'h'},	 {NULL, 0, NULL, 0},
	};
	enum inspect_mode m;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'I':
		case 'J':
		case 'C':
		case 'H':
			m = ch == 'I'	? MODE_INFO
			    : ch == 'J' ? MODE_JSON
			    : ch == 'C' ? MODE_CHECK
					: MODE_HASH;
			if (o->mode != MODE_NONE && o->mode != m) {
				fprintf(stderr, "vdmount: error: --info, --json, --check and "
						"--hash exclude each other\n");
				return -EINVAL;
			}
			o->mode = m;
			break;
		case 'c':
			o->changes = true;
			break;
		case 'a':
			o->algo = optarg;
			break;
		case 'F':
			o->force = true;
			break;
		case 'i':
			o->inputs = true;
			break;
		case 'h':
			inspect_usage(stdout);
			exit(0);
		default:
			inspect_usage(stderr);
			return -EINVAL;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "vdmount: error: need at least one IMAGE\n");
		inspect_usage(stderr);
		return -EINVAL;
	}
	if (o->changes && o->mode != MODE_INFO) {
		fprintf(stderr, "vdmount: error: --changes goes with --info\n");
		return -EINVAL;
	}
	if (o->inputs && o->mode != MODE_HASH) {
		fprintf(stderr, "vdmount: error: --inputs goes with --hash\n");
		return -EINVAL;
	}
	if (o->algo && o->mode != MODE_HASH) {
		fprintf(stderr, "vdmount: error: --algo goes with --hash\n");
		return -EINVAL;
	}
	return 0;
}

static bool inspect_wanted(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "--info") || !strcmp(argv[i], "--json") ||
		    !strcmp(argv[i], "--check") || !strcmp(argv[i], "--hash"))
			return true;
	return false;
}

/* (Over 80 lines on purpose: parse, expand VM inputs, then one loop that
 * opens each image and dispatches on the mode, with one exit status rule.) */
int fs_inspect_main(int argc, char **argv)
{
	struct inspect_opts o = {.algo = NULL};
	const EVP_MD *md = NULL;
	char **images;
	unsigned n_img;
	int ret = 0, n, shown = 0;

	if (!inspect_wanted(argc, argv))
		return -1;
	if (inspect_parse(argc, argv, &o) < 0)
		return 2;
	images = argv + optind;
	n_img = (unsigned)(argc - optind);
	if (o.mode == MODE_HASH) {
		const char *a = o.algo ? o.algo : "sha256";
		if (strcmp(a, "sha256") && strcmp(a, "sha1") && strcmp(a, "md5")) {
			fprintf(stderr, "vdmount: error: --algo %s: use sha256, sha1 or md5\n", a);
			return 2;
		}
		md = EVP_get_digestbyname(a);
		if (!md) {
			fprintf(stderr, "vdmount: error: libcrypto has no %s digest\n", a);
			return 2;
		}
	}
	if (fs_vm_expand(&images, &n_img) < 0) {
		fs_vm_release();
		return o.mode == MODE_CHECK ? 2 : 1;
	}
	n = (int)n_img;
	if (o.mode == MODE_JSON && n > 1)
		printf("[\n");
	for (unsigned i = 0; i < n_img; i++) {
		struct vd_chain *c = NULL;
		unsigned flags = o.force || o.mode == MODE_CHECK ? VD_CHAIN_FORCE : 0;
		int r = vd_chain_open(images[i], flags, &c), rc;
		char *prefix = NULL;

		if (r < 0) {
			/* Inconsistent metadata is a finding for --check; a file that
			 * cannot be read at all is not. */
			rc = o.mode == MODE_CHECK && r != -EINVAL && r != -ELOOP ? 2 : 1;
			if (o.mode == MODE_CHECK)
				printf("%s: %s\n", images[i],
				       rc == 2 ? "cannot be read"
					       : "problem: the chain does not open");
			ret = rc > ret ? rc : ret;
			continue;
		}
		switch (o.mode) {
		case MODE_INFO:
			if (shown++)
				printf("\n");
			rc = do_info(c, images[i], &o);
			break;
		case MODE_JSON:
			if (shown++)
				printf(",\n");
			rc = do_json(c);
			break;
		case MODE_CHECK:
			rc = do_check(c, images[i]);
			break;
		default:
			/* Several images: name the lines as a multi-image mount does. */
			if (n > 1) {
				char *stem = fs_disk_stem(c);
				if (!stem || asprintf(&prefix, "%s/", stem) < 0)
					prefix = NULL;
				free(stem);
			}
			if (o.inputs)
				rc = do_hash_inputs(c, images[i], md);
			else
				rc = do_hash(c, images[i], md, prefix ? prefix : "");
			free(prefix);
			break;
		}
		ret = rc > ret ? rc : ret;
		vd_chain_close(c);
	}
	if (o.mode == MODE_JSON && n > 1)
		printf("]\n");
	fs_vm_release();
	return ret;
}
