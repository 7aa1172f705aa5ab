/* seekmap: prints the data extents of a file as lseek(SEEK_DATA/SEEK_HOLE)
 * reports them, one "offset length" line (bytes, decimal) per extent. A test
 * tool for comparing a FUSE file's holes with `qemu-img map`.
 *
 *   seekmap FILE
 *
 * Exit status 0 on success, 1 on an lseek/open error, 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct stat st;
	off_t off = 0, data, hole;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: seekmap FILE\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "seekmap: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	while (off < st.st_size) {
		data = lseek(fd, off, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break;
		hole = data < 0 ? -1 : lseek(fd, data, SEEK_HOLE);
		if (data < 0 || hole < 0 || hole <= data) {
			fprintf(stderr, "seekmap: %s: lseek at %jd: %s\n", argv[1], (intmax_t)off,
				data < 0 || hole < 0 ? strerror(errno) : "hole not after data");
			return 1;
		}
		printf("%jd %jd\n", (intmax_t)data, (intmax_t)(hole - data));
		off = hole;
	}
	close(fd);
	return 0;
}
