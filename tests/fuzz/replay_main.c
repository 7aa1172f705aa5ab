/* A main() for harnesses built without libFuzzer (gcc trees, coverage):
 * runs LLVMFuzzerTestOneInput once on every file named on the command line,
 * directories expanded (sorted, not recursive). ctest uses it to replay the
 * committed corpus and regression inputs in every build; scripts/fuzz.sh
 * uses it to measure line coverage.
 *
 *   fuzz_<name> [-q] [-o] FILE|DIR...     exit 0 when every input ran
 *
 * -o: the inputs named after it must each get past the parsers (the
 * harness counts fz_exercised up): a seed that no longer opens is an
 * error, for seeds exist to reach the code behind the open. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
extern unsigned fz_exercised;

static unsigned runs;
static int quiet, must_open;

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return 1;
	}
	do {
		if (len == cap) {
			uint8_t *nb = realloc(buf, cap ? cap * 2 : 65536);

			if (!nb)
				abort();
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	if (!quiet)
		fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
	/* an exact-size copy, so ASan sees reads past the input's end */
	uint8_t *in = malloc(len ? len : 1);
	if (!in)
		abort();
	memcpy(in, buf, len);
	free(buf);
	unsigned before = fz_exercised;

	LLVMFuzzerTestOneInput(in, len);
	free(in);
	runs++;
	if (must_open && fz_exercised == before) {
		fprintf(stderr, "replay: %s: did not get past the open (-o)\n", path);
		return 1;
	}
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0;
	int bad = 0;

	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	while ((de = readdir(d))) {
		char **nn;

		if (de->d_name[0] == '.' || !strcmp(de->d_name, "README.md"))
			continue;
		nn = realloc(names, (n + 1) * sizeof(*names));
		if (!nn || asprintf(&nn[n], "%s/%s", dir, de->d_name) < 0)
			abort();
		names = nn;
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < n; i++) {
		struct stat st;

		if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
			bad |= run_file(names[i]);
		free(names[i]);
	}
	free(names);
	return bad;
}

int main(int argc, char **argv)
{
	int bad = 0;

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (!strcmp(argv[i], "-q")) {
			quiet = 1;
			continue;
		}
		if (!strcmp(argv[i], "-o")) {
			must_open = 1;
			continue;
		}
		if (stat(argv[i], &st) < 0) {
			/* a corpus directory may not exist yet (a new harness) */
			if (errno == ENOENT)
				continue;
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			bad = 1;
		} else if (S_ISDIR(st.st_mode)) {
			bad |= run_dir(argv[i]);
		} else {
			bad |= run_file(argv[i]);
		}
	}
	fprintf(stderr, "replay: %u inputs ran\n", runs);
	return bad;
}
