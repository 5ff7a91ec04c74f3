/*
 * test_kafka_lib.c: librdkafka loaded on first use (engine/source/kafka_lib.c).
 *
 * The loader fills every slot of the table with the function of the same
 * name, the very one this test (linked against librdkafka) calls directly;
 * mm_rdk_load() does that once. A library that cannot be found, or one that
 * lacks librdkafka's functions, is an MM_ENOTSUP whose message names the
 * library, the missing function and the package to install, and leaves the
 * table empty.
 */
#include <stdlib.h>
#include <string.h>

#include "lib/error.h"
#include "source/kafka_lib.h"
#include "unit.h"

static int table_empty(const mm_rdk_t *t)
{
	static const mm_rdk_t zero;

	return memcmp(t, &zero, sizeof(*t)) == 0;
}

TEST(every_function_resolved)
{
	mm_rdk_t t;

	memset(&t, 0xa5, sizeof(t));
	REQUIRE(mm_rdk_open(MM_RDK_SONAME, &t) == 0);
#define SAME(n) CHECK(t.n == rd_kafka_##n);
	MM_RDK_FUNCS(SAME)
#undef SAME
	CHECK(strcmp(t.err2name(RD_KAFKA_RESP_ERR__TRANSPORT), "_TRANSPORT") == 0);
}

TEST(load_once)
{
	CHECK(mm_rdk_load() == 0);
	CHECK(mm_rdk.new == rd_kafka_new);
	CHECK(mm_rdk_load() == 0);
	CHECK(mm_rdk.topic_partition_list_new == rd_kafka_topic_partition_list_new);
}

TEST(library_missing)
{
	mm_rdk_t t;

	memset(&t, 0xa5, sizeof(t));
	mm_diag_clear();
	CHECK_EQ_INT(mm_rdk_open("libmm-no-such-library.so.1", &t), MM_ENOTSUP);
	CHECK_EQ_INT(mm_diag_code(), MM_ENOTSUP);
	CHECK(strstr(mm_diag_msg(), "libmm-no-such-library.so.1 could not be loaded") != NULL);
	CHECK(strstr(mm_diag_msg(), "apt-get install librdkafka1") != NULL);
	CHECK(table_empty(&t));
}

TEST(function_missing)
{
	mm_rdk_t t;

	/* A library every system has, which defines none of librdkafka's. */
	memset(&t, 0xa5, sizeof(t));
	mm_diag_clear();
	CHECK_EQ_INT(mm_rdk_open("libm.so.6", &t), MM_ENOTSUP);
	CHECK(strstr(mm_diag_msg(), "libm.so.6 has no function rd_kafka_assign") != NULL);
	CHECK(strstr(mm_diag_msg(), "apt-get install librdkafka1") != NULL);
	CHECK(table_empty(&t));
}

int main(void)
{
	RUN(every_function_resolved);
	RUN(load_once);
	RUN(library_missing);
	RUN(function_missing);
	UNIT_DONE();
}
