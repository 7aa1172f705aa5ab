/* Copy-on-write (chain/cow.c) against the fake driver, whose write op checks
 * the contract of disk/disk.h: whole sectors only, and a grain the delta does
 * not hold arrives whole. Expected bytes come from a byte model built from
 * the layers below plus every write. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "chain/chain.h"
#include "fake_helper.h"
#include "test_util.h"

#define SIZE (1u << 20)
#define GRAIN 65536u

static int setup(void **state)
{
	(void)state;
	fake_dir_begin("cow");
	fake_contract_breaks = 0;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fake_dir_end();
	return 0;
}

/* A 2-layer fake chain: base (tag 1, data in grains 0-5), top (tag 2, data
 * in grains 3-4, zero in grain 8); model[] gets what the top shows. */
static struct vd_chain *chain_make(uint8_t *model)
{
	struct vd_chain *c;
	FILE *f = fopen(tu_path("base.fake"), "w");

	assert_non_null(f);
	fprintf(f, "FAKEDISK\nsize %u\ngrain %u\ntag 1\nid 1000\ndata 0 6\n", SIZE, GRAIN);
	fclose(f);
	f = fopen(tu_path("top.fake"), "w");
	assert_non_null(f);
	fprintf(f,
		"FAKEDISK\nsize %u\ngrain %u\ntag 2\nid 2000\nparentid 1000\nparent base.fake\n"
		"data 3 2\nzero 8 1\n",
		SIZE, GRAIN);
	fclose(f);
	for (uint64_t i = 0; i < SIZE; i++) {
		uint64_t g = i / GRAIN;
		model[i] = g >= 3 && g < 5   ? fake_byte(2, i)
			   : g < 6 && g != 8 ? fake_byte(1, i)
					     : 0;
	}
	assert_int_equal(vd_chain_open(tu_path("top.fake"), 0, &c), 0);
	return c;
}

static void expect_model(struct vd_chain *c, const uint8_t *model)
{
	uint8_t *buf = malloc(SIZE);

	assert_non_null(buf);
	assert_int_equal(vd_chain_read(c, vd_chain_depth(c) - 1, buf, SIZE, 0), 0);
	for (uint64_t i = 0; i < SIZE; i++)
		if (buf[i] != model[i])
			fail_msg("byte %llu: %u, want %u", (unsigned long long)i, buf[i], model[i]);
	free(buf);
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Random writes of every shape (1 byte to 3 grains, any offset, across
 * held, unallocated and zeroed grains, the last byte): the disk equals the
 * model, the layers below do not change, and the driver never saw a write
 * that breaks its contract. */
static void test_random_writes(void **state)
{
	static uint8_t model[SIZE], below[SIZE], buf[3 * GRAIN + 7];
	struct vd_delta_opts o = {0};
	struct vd_chain *c = chain_make(model);
	uint64_t s = 12345;

	(void)state;
	memcpy(below, model, SIZE);
	assert_false(vd_chain_writable(c));
	assert_int_equal(vd_chain_write(c, "x", 1, 0), -EROFS);
	assert_int_equal(vd_chain_delta_add(c, &o), 0);
	assert_true(vd_chain_writable(c));
	assert_int_equal(vd_chain_depth(c), 3);
	assert_non_null(strstr(vd_chain_delta_path(c), "top-vdm-000001.fake"));
	for (int i = 0; i < 400; i++) {
		uint64_t len = 1 + rng(&s) % (i % 4 == 0 ? sizeof(buf) : 700);
		uint64_t off = rng(&s) % (SIZE - len + 1);

		if (i == 399)
			off = SIZE - (len = 1);
		for (uint64_t k = 0; k < len; k++)
			buf[k] = (uint8_t)rng(&s);
		assert_int_equal(vd_chain_write(c, buf, len, off), 0);
		memcpy(model + off, buf, len);
	}
	expect_model(c, model);
	assert_int_equal(fake_contract_breaks, 0);
	/* the old top, now layer 2, reads as before */
	{
		uint8_t *b = malloc(SIZE);
		assert_int_equal(vd_chain_read(c, 1, b, SIZE, 0), 0);
		assert_memory_equal(b, below, SIZE);
		free(b);
	}
	assert_int_equal(vd_chain_write(c, buf, 2, SIZE - 1), -ENOSPC);
	vd_chain_close(c);
}

/* Reads between the writes: the chain's skip map, filled by the reads
 * ("the base holds this block"), must not hide what the delta gets later. */
static void test_reads_between_writes(void **state)
{
	static uint8_t model[SIZE], buf[2 * GRAIN];
	struct vd_delta_opts o = {0};
	struct vd_chain *c = chain_make(model);
	uint64_t s = 777;

	(void)state;
	assert_int_equal(vd_chain_delta_add(c, &o), 0);
	expect_model(c, model);
	for (int i = 0; i < 64; i++) {
		uint64_t len = 1 + rng(&s) % sizeof(buf), off = rng(&s) % (SIZE - len + 1);

		for (uint64_t k = 0; k < len; k++)
			buf[k] = (uint8_t)rng(&s);
		if (i % 8 == 7) {
			assert_int_equal(vd_chain_discard(c, off, len), 0);
			memset(model + off, 0, len);
		} else {
			assert_int_equal(vd_chain_write(c, buf, len, off), 0);
			memcpy(model + off, buf, len);
		}
		expect_model(c, model);
	}
	vd_chain_close(c);
}

struct poke {
	struct vd_chain *c;
	unsigned idx;
};

/* Each thread writes single bytes into the same two grains the delta does
 * not hold yet: without the per-grain lock two copy-ups of one grain lose
 * each other's bytes. */
static void *poker(void *arg)
{
	struct poke *p = arg;

	for (unsigned k = 0; k < 64; k++) {
		uint64_t off = 10 * GRAIN + (k * 8 + p->idx) * 97;
		uint8_t v = (uint8_t)(p->idx * 31 + k);

		if (vd_chain_write(p->c, &v, 1, off) < 0)
			return (void *)1;
	}
	return NULL;
}

static void test_concurrent_copy_up(void **state)
{
	static uint8_t model[SIZE];
	struct vd_delta_opts o = {0};
	struct vd_chain *c = chain_make(model);
	pthread_t th[8];
	struct poke p[8];
	void *ret;

	(void)state;
	assert_int_equal(vd_chain_delta_add(c, &o), 0);
	fake_write_delay_us = 200;
	for (unsigned t = 0; t < 8; t++) {
		p[t] = (struct poke){c, t};
		assert_int_equal(pthread_create(&th[t], NULL, poker, &p[t]), 0);
	}
	for (unsigned t = 0; t < 8; t++) {
		assert_int_equal(pthread_join(th[t], &ret), 0);
		assert_null(ret);
		for (unsigned k = 0; k < 64; k++)
			model[10 * GRAIN + (k * 8 + t) * 97] = (uint8_t)(t * 31 + k);
	}
	fake_write_delay_us = 0;
	expect_model(c, model);
	assert_int_equal(fake_contract_breaks, 0);
	vd_chain_close(c);
}

/* Discard without a driver discard op writes zeros; flush reaches the
 * driver only when something was written; --at drops the layers above. */
static void test_discard_flush_at(void **state)
{
	static uint8_t model[SIZE];
	struct vd_delta_opts o = {.at = 1};
	struct vd_chain *c = chain_make(model);
	unsigned long flushes;

	(void)state;
	assert_int_equal(vd_chain_delta_add(c, &o), 0);
	assert_int_equal(vd_chain_depth(c), 2); /* base + the new delta */
	assert_non_null(strstr(vd_chain_delta_path(c), "base-vdm-000001.fake"));
	for (uint64_t i = 0; i < SIZE; i++) /* the top's grains are gone from view */
		model[i] = i / GRAIN < 6 ? fake_byte(1, i) : 0;
	expect_model(c, model);
	assert_int_equal(vd_chain_discard(c, GRAIN / 2, 2 * GRAIN + 3), 0);
	memset(model + GRAIN / 2, 0, 2 * GRAIN + 3);
	expect_model(c, model);
	flushes = fake_flush_calls;
	assert_int_equal(vd_chain_flush(c), 0);
	assert_int_equal(fake_flush_calls, flushes + 1);
	assert_int_equal(vd_chain_flush(c), 0); /* nothing new: no driver call */
	assert_int_equal(fake_flush_calls, flushes + 1);
	assert_int_equal(fake_contract_breaks, 0);
	vd_chain_close(c);

	/* an existing file is never replaced; the next free number is used */
	c = chain_make(model);
	o = (struct vd_delta_opts){.path = tu_path("top.fake")};
	assert_int_equal(vd_chain_delta_add(c, &o), -EEXIST);
	o = (struct vd_delta_opts){0};
	assert_int_equal(vd_chain_delta_add(c, &o), 0);
	assert_non_null(strstr(vd_chain_delta_path(c), "top-vdm-000001.fake"));
	assert_int_equal(vd_chain_delta_add(c, &o), -EBUSY);
	vd_chain_close(c);
	c = chain_make(model);
	assert_int_equal(vd_chain_delta_add(c, &o), 0);
	assert_non_null(strstr(vd_chain_delta_path(c), "top-vdm-000002.fake"));
	vd_chain_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_random_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reads_between_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_copy_up, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_discard_flush_at, setup, teardown),
	};
	return cmocka_run_group_tests_name("cow", tests, NULL, NULL);
}
