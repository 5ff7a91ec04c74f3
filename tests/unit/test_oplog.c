/*
 * test_oplog.c: the log of a generation's adds while its dedup ids are not
 * settled (engine/core/oplog.h): which claim each add belongs to, the adds
 * of a record rejected after some of them, the values kept byte for byte
 * across the buffer's growth, and reset.
 */
#include <stdio.h>
#include <string.h>

#include "core/oplog.h"
#include "unit.h"

static mm_value_t str(const char *s, int64_t ts, uint64_t seq)
{
	return (mm_value_t){.type = MM_VAL_STRING, .s = s, .len = strlen(s), .ts_ms = ts, .seq = seq};
}

TEST(tags_and_results)
{
	mm_oplog_t l = {0};
	mm_value_t v = str("item", 5, 7), n = {.type = MM_VAL_INT, .i = -3, .d = -3.0}, out;
	mm_idhash_t h = {11, 12}, h3 = {31, 32};

	/* Record 0: no id (untagged). Record 1: an id, two adds, claimed.
	 * Record 2: an id, one add, then rejected: its add stays, untagged.
	 * Record 3: an id, claimed. */
	mm_oplog_begin(&l);
	CHECK_EQ_INT(mm_oplog_add(&l, 0, "k0", 2, 0, 0, &n), 0);
	mm_oplog_begin(&l);
	CHECK_EQ_INT(mm_oplog_add(&l, 1, "k1", 2, 3, 99, &v), 0);
	CHECK_EQ_INT(mm_oplog_add(&l, 1, "k2", 2, 3, 99, &v), 0);
	CHECK_EQ_INT(mm_oplog_claim(&l, "id-1", 4, &h), 0);
	mm_oplog_begin(&l);
	CHECK_EQ_INT(mm_oplog_add(&l, 1, "k3", 2, 0, 0, &n), 0);
	mm_oplog_begin(&l);
	CHECK_EQ_INT(mm_oplog_add(&l, 1, "k4", 2, 0, 0, &v), 0);
	CHECK_EQ_INT(mm_oplog_claim(&l, "id-3", 4, &h3), 0);
	mm_oplog_begin(&l);
	CHECK(l.n == 5 && l.nclaims == 2);
	/* Each claim carries its id's hash to the store. */
	CHECK(l.claims[0].hash.h0 == 11 && l.claims[0].hash.h1 == 12);
	CHECK(l.claims[1].hash.h0 == 31 && l.claims[1].hash.h1 == 32);
	CHECK(l.ops[0].claim == MM_OPLOG_NO_CLAIM);
	CHECK(l.ops[1].claim == 0 && l.ops[2].claim == 0);
	CHECK(l.ops[3].claim == MM_OPLOG_NO_CLAIM);
	CHECK(l.ops[4].claim == 1);

	l.claims[0].result = MM_CLAIM_DUPLICATE;
	l.claims[1].result = MM_CLAIM_WON;
	CHECK(mm_oplog_keeps(&l, 0) && !mm_oplog_keeps(&l, 1) && !mm_oplog_keeps(&l, 2));
	CHECK(mm_oplog_keeps(&l, 3) && mm_oplog_keeps(&l, 4));
	l.claims[1].result = MM_CLAIM_STOLEN;
	CHECK(mm_oplog_keeps(&l, 4));

	mm_oplog_value(&l, 2, &out);
	CHECK(out.type == MM_VAL_STRING && out.len == 4 && memcmp(out.s, "item", 4) == 0);
	CHECK(out.ts_ms == 5 && out.seq == 7);
	CHECK(l.ops[2].bucket == 3 && l.ops[2].expire_ms == 99);
	CHECK(memcmp(l.data.p + l.ops[2].key_off, "k2", 2) == 0);
	mm_oplog_value(&l, 3, &out);
	CHECK(out.type == MM_VAL_INT && out.i == -3 && out.d == -3.0 && out.s == NULL);

	mm_oplog_reset(&l);
	CHECK(l.n == 0 && l.nclaims == 0 && l.open == 0 && !l.on);
	mm_oplog_free(&l);
}

TEST(growth_keeps_bytes)
{
	mm_oplog_t l = {0};
	char key[32], item[64];
	mm_value_t out;
	mm_idhash_t h = {1, 2};
	int ok = 1;

	for (int i = 0; i < 5000; i++) {
		mm_value_t v;

		snprintf(key, sizeof(key), "key-%d", i);
		snprintf(item, sizeof(item), "item-%d-%0*d", i, i % 40, 0);
		v = str(item, i, (uint64_t)i);
		mm_oplog_begin(&l);
		ok &= mm_oplog_add(&l, i % 2, key, strlen(key), i, 0, &v) == 0;
		if (i % 2)
			ok &= mm_oplog_claim(&l, "x", 1, &h) == 0;
	}
	CHECK(ok && l.n == 5000 && l.nclaims == 2500);
	for (size_t i = 0; i < l.n && ok; i++) {
		snprintf(key, sizeof(key), "key-%zu", i);
		snprintf(item, sizeof(item), "item-%zu-%0*d", i, (int)(i % 40), 0);
		mm_oplog_value(&l, i, &out);
		ok &= l.ops[i].klen == strlen(key) && memcmp(l.data.p + l.ops[i].key_off, key, strlen(key)) == 0;
		ok &= out.len == strlen(item) && memcmp(out.s, item, out.len) == 0 && out.seq == i;
		ok &= l.ops[i].claim == (i % 2 ? i / 2 : MM_OPLOG_NO_CLAIM);
	}
	CHECK(ok);
	mm_oplog_free(&l);
}

int main(void)
{
	RUN(tags_and_results);
	RUN(growth_keeps_bytes);
	UNIT_DONE();
}
