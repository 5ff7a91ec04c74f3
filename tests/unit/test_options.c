/*
 * test_options.c: mm_options_apply (defaults, every type, strict parsing,
 * the unknown-key and bad-value messages) and mm_options_doc.
 */
#include <stddef.h>

#include "lib/error.h"
#include "lib/options.h"
#include "unit.h"

struct cfg {
	const char *path;
	int64_t retries;
	uint64_t map_size;
	int sync;
	int64_t ttl_ms;
	double ratio;
	const char *label;
};

static const mm_option_t rows[] = {
	{MM_OPT_STRING, "path", "./data", offsetof(struct cfg, path), "Directory of the store"},
	{MM_OPT_INT, "retries", "3", offsetof(struct cfg, retries), "Attempts | before giving up"},
	{MM_OPT_SIZE, "map_size", "1g", offsetof(struct cfg, map_size), "Maximum size"},
	{MM_OPT_BOOL, "sync", "true", offsetof(struct cfg, sync), "fsync on commit"},
	{MM_OPT_DURATION_MS, "ttl", "7d", offsetof(struct cfg, ttl_ms), "Time to live"},
	{MM_OPT_DOUBLE, "ratio", "0.5", offsetof(struct cfg, ratio), "Fill ratio"},
	{MM_OPT_STRING, "label", NULL, offsetof(struct cfg, label), "Optional label"},
	{0},
};

/* Applies one key/value pair over the defaults. */
static int apply1(struct cfg *c, const char *key, const char *value)
{
	mm_kv_t kv = {key, value};

	return mm_options_apply(rows, "lmdb", &kv, 1, c);
}

TEST(defaults)
{
	struct cfg c;

	memset(&c, 0xa5, sizeof(c)); /* garbage that defaults must overwrite */
	REQUIRE(mm_options_apply(rows, "lmdb", NULL, 0, &c) == 0);
	CHECK(strcmp(c.path, "./data") == 0);
	CHECK_EQ_INT(c.retries, 3);
	CHECK(c.map_size == 1ULL << 30);
	CHECK_EQ_INT(c.sync, 1);
	CHECK_EQ_INT(c.ttl_ms, 7 * 86400000LL);
	CHECK(c.ratio == 0.5);
	CHECK(c.label == NULL);
}

TEST(values)
{
	const char *label = "primary";
	mm_kv_t kv[] = {
		{"path", "/var/lib/murmur"},
		{"retries", "-12"},
		{"map_size", "64K"},
		{"sync", "No"},
		{"ttl", "1d12h"},
		{"ratio", "1e-3"},
		{"label", label},
		{"retries", "5"},
	};
	struct cfg c;

	REQUIRE(mm_options_apply(rows, "lmdb", kv, sizeof(kv) / sizeof(kv[0]), &c) == 0);
	CHECK(strcmp(c.path, "/var/lib/murmur") == 0);
	CHECK(c.label == label);    /* strings are borrowed, not copied */
	CHECK_EQ_INT(c.retries, 5); /* the last of repeated keys wins */
	CHECK(c.map_size == 65536);
	CHECK_EQ_INT(c.sync, 0);
	CHECK_EQ_INT(c.ttl_ms, 36 * 3600000LL);
	CHECK(c.ratio == 1e-3);

	CHECK(apply1(&c, "map_size", "4096") == 0 && c.map_size == 4096);
	CHECK(apply1(&c, "map_size", "16m") == 0 && c.map_size == 16ULL << 20);
	CHECK(apply1(&c, "map_size", "2G") == 0 && c.map_size == 2ULL << 30);
	CHECK(apply1(&c, "map_size", "17179869183g") == 0 && c.map_size == 17179869183ULL << 30);
	CHECK(apply1(&c, "map_size", "18446744073709551615") == 0 && c.map_size == UINT64_MAX);
	CHECK(apply1(&c, "retries", "9223372036854775807") == 0 && c.retries == INT64_MAX);
	CHECK(apply1(&c, "retries", "-9223372036854775808") == 0 && c.retries == INT64_MIN);
	CHECK(apply1(&c, "retries", "0") == 0 && c.retries == 0);
	CHECK(apply1(&c, "sync", "1") == 0 && c.sync == 1);
	CHECK(apply1(&c, "sync", "FALSE") == 0 && c.sync == 0);
	CHECK(apply1(&c, "sync", "yes") == 0 && c.sync == 1);
	CHECK(apply1(&c, "ttl", "500ms") == 0 && c.ttl_ms == 500);
	CHECK(apply1(&c, "ratio", "-2") == 0 && c.ratio == -2.0);
	CHECK(apply1(&c, "path", "") == 0 && strcmp(c.path, "") == 0);
}

TEST(bad_values)
{
	static const struct {
		const char *key, *value;
	} bad[] = {
		{"retries", ""},
		{"retries", "3x"},
		{"retries", " 3"},
		{"retries", "+3"},
		{"retries", "-"},
		{"retries", "1.0"},
		{"retries", "9223372036854775808"},
		{"retries", "-9223372036854775809"},
		{"map_size", ""},
		{"map_size", "k"},
		{"map_size", "-1"},
		{"map_size", "1kb"},
		{"map_size", "1t"},
		{"map_size", "17179869184g"},
		{"map_size", "18446744073709551616"},
		{"sync", ""},
		{"sync", "on"},
		{"sync", "2"},
		{"sync", "truee"},
		{"ttl", "7"},
		{"ttl", "7 d"},
		{"ttl", ""},
		{"ratio", ""},
		{"ratio", "nan"},
		{"ratio", "inf"},
		{"ratio", "1e999"},
		{"ratio", " 1"},
		{"ratio", "1 "},
		{"ratio", "0x"},
		{"ratio", "1,5"},
		{"path", NULL},
	};
	struct cfg c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (apply1(&c, bad[i].key, bad[i].value) != MM_EINVAL) {
			printf("#   accepted %s=%s\n", bad[i].key, bad[i].value);
			CHECK(0);
		}
	}
	CHECK(apply1(&c, "map_size", "12q") == MM_EINVAL);
	CHECK(strcmp(mm_diag_msg(), "lmdb: option 'map_size': bad value '12q' "
				    "(expected a size such as 4096, 64k, 16m or 1g)") == 0);
	CHECK(apply1(&c, "ttl", "soon") == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "lmdb: option 'ttl': bad value 'soon'") == mm_diag_msg());
}

TEST(unknown_key)
{
	static const mm_option_t none[] = {{0}};
	struct cfg c;

	CHECK(apply1(&c, "mapsize", "1g") == MM_EINVAL);
	CHECK(strcmp(mm_diag_msg(), "lmdb: unknown option 'mapsize' (expected one of: path, "
				    "retries, map_size, sync, ttl, ratio, label)") == 0);
	CHECK(apply1(&c, NULL, "1") == MM_EINVAL);
	CHECK(apply1(&c, "Path", "x") == MM_EINVAL); /* names are case-sensitive */
	{
		mm_kv_t kv = {"x", "1"};

		CHECK(mm_options_apply(none, NULL, &kv, 1, &c) == MM_EINVAL);
		CHECK(strcmp(mm_diag_msg(), "options: unknown option 'x' (expected one of: )") ==
		      0);
	}
}

TEST(bad_rows)
{
	struct cfg c;
	mm_option_t broken[] = {
		{MM_OPT_INT, "retries", "three", offsetof(struct cfg, retries), "Attempts"},
		{0},
	};

	CHECK(mm_options_apply(broken, "lmdb", NULL, 0, &c) == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "bad default 'three'") != NULL);
	broken[0].def = NULL;
	broken[0].type = 42;
	CHECK(mm_options_apply(broken, "lmdb", NULL, 0, &c) == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "unknown type") != NULL);
}

TEST(doc)
{
	mm_buf_t b = {0};
	static const char want[] = "| Option | Type | Default | Description |\n"
				   "| --- | --- | --- | --- |\n"
				   "| `path` | string | `./data` | Directory of the store |\n"
				   "| `retries` | int | `3` | Attempts \\| before giving up |\n"
				   "| `map_size` | size | `1g` | Maximum size |\n"
				   "| `sync` | bool | `true` | fsync on commit |\n"
				   "| `ttl` | duration | `7d` | Time to live |\n"
				   "| `ratio` | double | `0.5` | Fill ratio |\n"
				   "| `label` | string | - | Optional label |\n";

	REQUIRE(mm_options_doc(rows, &b) == 0);
	CHECK(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0);
	if (b.len != strlen(want) || memcmp(b.p, want, b.len) != 0)
		printf("# %.*s\n", (int)b.len, (char *)b.p);
	mm_buf_free(&b);
}

int main(void)
{
	RUN(defaults);
	RUN(values);
	RUN(bad_values);
	RUN(unknown_key);
	RUN(bad_rows);
	RUN(doc);
	UNIT_DONE();
}
