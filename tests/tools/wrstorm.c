/* wrstorm: write workloads for the copy-on-write tests, through a file (a
 * writable vdmount disk), with an exact model.
 *
 *   wrstorm storm FILE MODEL SEED [THREADS [OPS]]
 *       THREADS threads write random ranges of the sizes the tests need (1,
 *       511, 512, 4096, 64 KiB + 1, 2 MiB + 3 bytes) at random offsets,
 *       each inside its own slice of the disk; then one thread writes
 *       ranges across the slices' borders over earlier writes, the last
 *       sector and the last byte. Every write is mirrored into MODEL (a raw
 *       file of the disk's size holding what the disk held before). Ends
 *       with fsync.
 *   wrstorm log FILE LOG SEED
 *       Writes records of 100,000 bytes (unaligned to any cow unit) one after
 *       another from offset 0, with an fsync after every 3rd; after each
 *       fsync returns, appends the number of records it covers to LOG (and
 *       fsyncs LOG). Runs until a write fails (the daemon was killed) or the
 *       disk is full; exit 0 either way.
 *   wrstorm check FILE LOG SEED
 *       Reads back the records LOG says were fsync'd: exit 0 when every one
 *       holds its pattern.
 * Patterns come from SEED and the position, so nothing else is needed to
 * check them. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECORD 100000u

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(rng(&s) >> 32);
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

struct storm {
	int fd, mfd;
	uint64_t size, seed;
	unsigned threads, ops;
	int failed;
};

struct worker {
	struct storm *s;
	unsigned idx;
};

static const uint64_t sizes[] = {1, 511, 512, 4096, 65537, (2u << 20) + 3};

/* One write of buf at off into both the disk and the model. */
static int both(struct storm *s, const uint8_t *buf, size_t len, uint64_t off)
{
	if (pwrite_all(s->fd, buf, len, off) < 0) {
		fprintf(stderr, "wrstorm: write of %zu at %" PRIu64 ": %s\n", len, off,
			strerror(errno));
		return -1;
	}
	if (pwrite_all(s->mfd, buf, len, off) < 0) {
		fprintf(stderr, "wrstorm: model write: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct storm *s = w->s;
	uint64_t slice = s->size / s->threads, lo = slice * w->idx, r = s->seed + w->idx * 7919;
	uint8_t *buf = malloc(sizes[5]);

	if (!buf)
		return (void *)1;
	for (unsigned i = 0; i < s->ops && !s->failed; i++) {
		uint64_t len = sizes[rng(&r) % 6], off;

		if (len > slice)
			len = slice;
		off = lo + rng(&r) % (slice - len + 1);
		fill(buf, len, rng(&r));
		if (both(s, buf, len, off) < 0) {
			s->failed = 1;
			break;
		}
	}
	free(buf);
	return NULL;
}

static int cmd_storm(int argc, char **argv)
{
	struct storm s = {0};
	pthread_t th[64];
	struct worker w[64];
	struct stat st;
	uint8_t *buf;
	uint64_t r;

	if (argc < 5)
		return 2;
	s.seed = strtoull(argv[4], NULL, 0);
	s.threads = argc > 5 ? (unsigned)atoi(argv[5]) : 4;
	s.ops = argc > 6 ? (unsigned)atoi(argv[6]) : 200;
	if (s.threads < 1 || s.threads > 64)
		return 2;
	s.fd = open(argv[2], O_WRONLY);
	s.mfd = open(argv[3], O_WRONLY);
	if (s.fd < 0 || s.mfd < 0 || fstat(s.mfd, &st) < 0) {
		perror("wrstorm: open");
		return 1;
	}
	s.size = (uint64_t)st.st_size;
	for (unsigned i = 0; i < s.threads; i++) {
		w[i] = (struct worker){&s, i};
		if (pthread_create(&th[i], NULL, worker_main, &w[i]))
			return 1;
	}
	for (unsigned i = 0; i < s.threads; i++)
		pthread_join(th[i], NULL);
	/* Across the slices, over earlier writes; the last sector and byte. */
	buf = malloc(sizes[5]);
	r = s.seed ^ 0x5555;
	for (unsigned i = 0; buf && !s.failed && i < s.ops / 2; i++) {
		uint64_t len = sizes[rng(&r) % 6],
			 border = s.size / s.threads * (1 + rng(&r) % s.threads);
		uint64_t off = border > len / 2 ? border - len / 2 : 0;

		if (off + len > s.size)
			off = s.size - len;
		fill(buf, len, rng(&r));
		s.failed |= both(&s, buf, len, off) < 0;
	}
	if (buf && !s.failed) {
		fill(buf, 512, 1);
		s.failed |= both(&s, buf, 512, s.size - 512) < 0;
		fill(buf, 1, 2);
		s.failed |= both(&s, buf, 1, s.size - 1) < 0;
	}
	free(buf);
	if (!s.failed && (fsync(s.fd) < 0 || fsync(s.mfd) < 0)) {
		perror("wrstorm: fsync");
		s.failed = 1;
	}
	close(s.fd);
	close(s.mfd);
	return s.failed;
}

static int cmd_log(int argc, char **argv)
{
	uint64_t seed, n = 0;
	uint8_t buf[RECORD];
	int fd, lfd;

	if (argc < 5)
		return 2;
	seed = strtoull(argv[4], NULL, 0);
	fd = open(argv[2], O_WRONLY);
	lfd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
	if (fd < 0 || lfd < 0) {
		perror("wrstorm: open");
		return 1;
	}
	for (;; n++) {
		char line[32];

		fill(buf, RECORD, seed + n);
		if (pwrite_all(fd, buf, RECORD, n * RECORD) < 0)
			break;
		if (n % 3 != 2)
			continue;
		if (fsync(fd) < 0)
			break;
		snprintf(line, sizeof(line), "%" PRIu64 "\n", n + 1);
		if (write(lfd, line, strlen(line)) < 0 || fsync(lfd) < 0)
			break;
	}
	close(fd);
	close(lfd);
	return 0;
}

static int cmd_check(int argc, char **argv)
{
	uint8_t want[RECORD], got[RECORD];
	uint64_t seed, n = 0, v;
	char line[64];
	FILE *f;
	int fd;

	if (argc < 5)
		return 2;
	seed = strtoull(argv[4], NULL, 0);
	f = fopen(argv[3], "r");
	fd = open(argv[2], O_RDONLY);
	if (!f || fd < 0) {
		perror("wrstorm: open");
		return 1;
	}
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%" SCNu64, &v) == 1)
			n = v;
	fclose(f);
	for (uint64_t i = 0; i < n; i++) {
		fill(want, RECORD, seed + i);
		if (pread(fd, got, RECORD, (off_t)(i * RECORD)) != (ssize_t)RECORD ||
		    memcmp(want, got, RECORD)) {
			fprintf(stderr,
				"wrstorm: record %" PRIu64 " of %" PRIu64 " fsync'd is wrong\n", i,
				n);
			return 1;
		}
	}
	printf("%" PRIu64 " fsync'd records intact\n", n);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "storm"))
		return cmd_storm(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "log"))
		return cmd_log(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "check"))
		return cmd_check(argc, argv);
	fprintf(stderr, "usage: wrstorm storm FILE MODEL SEED [THREADS [OPS]]\n"
			"       wrstorm log FILE LOG SEED\n"
			"       wrstorm check FILE LOG SEED\n");
	return 2;
}
