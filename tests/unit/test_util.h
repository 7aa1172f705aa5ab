/* What every unit test needs and each used to write again: a temporary
 * directory and paths in it, whole-file, poke and peek helpers, a shell
 * runner, a capture of the library's log (through vd_log_set_sink), and a
 * write through a format driver. Linked into every unit test and into the
 * fuzz harnesses' common code, so it does not use cmocka: a step of a test's
 * own setup that cannot be done (a file that cannot be written) prints a line
 * naming the file and aborts, which fails the test. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* ---- the temporary directory ---------------------------------------------- */

/* Makes a fresh directory $TMPDIR/vd_<tag>_XXXXXX (/tmp without TMPDIR) the
 * current one and returns its path. */
const char *tu_dir_new(const char *tag);
/* The current directory; one tagged "test" is made on first use. Whatever is
 * current at exit is removed (by the process that made it). */
const char *tu_dir(void);
/* Removes the current directory and everything below it (symbolic links are
 * removed, not followed); the next tu_dir() makes a new one. Returns 0, or -1
 * after printing what could not be removed. */
int tu_dir_remove(void);
/* "<tu_dir()>/<fmt ...>", in one of 8 static buffers used in turn. */
const char *tu_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- files ------------------------------------------------------------------ */

/* The whole file, malloc'd with a NUL after its *len bytes (len may be NULL);
 * NULL with errno set if it cannot be read. */
uint8_t *tu_read_file(const char *path, size_t *len);
/* The same for a file that must be there: aborts if it cannot be read. */
uint8_t *tu_load(const char *path, size_t *len);
/* Creates or truncates path and writes the bytes, or the text. */
void tu_write_file(const char *path, const void *p, size_t n);
void tu_write_text(const char *path, const char *text);
/* Overwrites n bytes at off of an existing file, and little-endian integers. */
void tu_poke(const char *path, uint64_t off, const void *p, size_t n);
void tu_poke_le32(const char *path, uint64_t off, uint32_t v);
void tu_poke_le64(const char *path, uint64_t off, uint64_t v);
/* Reads n bytes at off (all of them, or aborts). */
void tu_peek(const char *path, uint64_t off, void *p, size_t n);
uint64_t tu_file_size(const char *path);

/* ---- the shell -------------------------------------------------------------- */

/* Runs the command with /bin/sh; returns its exit status, 128 + the signal
 * that killed it, or -1 if it could not be run. */
int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, for what the command writes to stdout (malloc'd); NULL unless it
 * exits 0. */
char *tu_sh_output(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the log -------------------------------------------------------------- */

/* From now on the library's log lines are kept (as stderr shows them:
 * "vdmount: error: ...\n") instead of printed; a call while capturing empties
 * what was kept. Safe against logging from several threads. */
void tu_log_capture(void);
/* What was kept so far. */
const char *tu_log_text(void);
/* Stops capturing (lines go to stderr again), prints what was kept to stderr
 * and returns it (malloc'd). */
char *tu_log_release(void);

/* ---- images ------------------------------------------------------------------ */

/* Opens path read-write through its driver, writes len bytes of fill (or
 * of p) at off and closes it; returns 0 or the first -errno. */
int tu_image_write(const char *path, const void *p, size_t len, uint64_t off);
int tu_image_fill(const char *path, uint64_t off, size_t len, uint8_t fill);
/* Opens parent read-only (or aborts) and makes a delta of it at child;
 * returns vd_image_create_child()'s result. */
int tu_image_child(const char *parent, const char *child);

#endif
