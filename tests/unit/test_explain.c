/*
 * test_explain.c: dry runs through the C path of a pipeline (engine/core/explain.h):
 * what the pipeline's own extraction produced, and rejections with run's
 * reasons and messages.
 */
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "core/explain.h"
#include "lib/error.h"
#include "monoid/window.h"
#include "unit.h"

#define DAY_MS 86400000LL

/* now: 2026-11-22T12:00:00Z. */
static const int64_t now_ms = 1795348800000LL;

/* sum of "n" by "page_id", daily buckets kept 7 days, dedup on "id". */
static mm_explainer_t *open_fast(void)
{
	mm_pipeline_config_t cfg;
	mm_explainer_t *ex = NULL;

	memset(&cfg, 0, sizeof(cfg));
	if (mm_monoid_init(&cfg.monoid, "sum", &(mm_monoid_params_t){0}) != 0)
		return NULL;
	cfg.name = strdup("fast");
	cfg.key_kind = MM_PART_FIELD;
	cfg.keys[cfg.nkeys++] = strdup("page_id");
	cfg.value_kind = MM_PART_FIELD;
	cfg.value_field = strdup("n");
	cfg.time_kind = MM_PART_FIELD;
	cfg.time_field = strdup("ts");
	cfg.time_unit = 'a';
	cfg.gran_ms = DAY_MS;
	cfg.retention_ms = 7 * DAY_MS;
	cfg.id_kind = MM_PART_FIELD;
	cfg.id_field = strdup("id");
	cfg.dedup_ttl_ms = DAY_MS;
	cfg.max_record = 100;
	cfg.compat = strdup("sum");
	if (mm_explainer_open(&cfg, &ex) != 0)
		return NULL;
	return ex;
}

static const mm_explain_t *explain(mm_explainer_t *ex, const char *line)
{
	const mm_explain_t *x = NULL;

	if (mm_explainer_record(ex, line, strlen(line), now_ms, &x) != 0)
		return NULL;
	return x;
}

static int str_is(const mm_explain_t *x, size_t off, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(mm_explain_str(x, off), want, len) == 0;
}

static int detail_is(const mm_explain_t *x, const char *want)
{
	return str_is(x, x->detail_off, x->detail_len, want);
}

TEST(accepted_record_shows_what_was_extracted)
{
	mm_explainer_t *ex = open_fast();
	const mm_explain_t *x;
	int64_t ts;

	REQUIRE(ex != NULL);
	x = explain(ex, "{\"page_id\":\"a\\u0062\",\"n\":5,\"ts\":\"2026-11-22T10:00:00Z\",\"id\":\"e1\"}");
	REQUIRE(x != NULL);
	CHECK_EQ_INT(x->outcome, MM_EXPLAIN_ACCEPTED);
	CHECK_EQ_INT(x->nkeys, 1);
	CHECK(str_is(x, x->key_off[0], x->key_len[0], "ab")); /* unescaped as run stores it */
	CHECK_EQ_INT(x->value.type, MM_VAL_INT);
	CHECK_EQ_INT(x->value.i, 5);
	CHECK(x->have_time);
	REQUIRE(mm_time_parse_rfc3339("2026-11-22T10:00:00Z", 20, &ts) == 0);
	CHECK_EQ_INT(x->ts_ms, ts);
	CHECK_EQ_INT(x->bucket, mm_window_bucket(DAY_MS, ts));
	CHECK(x->have_id);
	CHECK(str_is(x, x->id_off, x->id_len, "e1"));

	/* The same id again is a duplicate, as run would count it. */
	x = explain(ex, "{\"page_id\":\"a\",\"n\":1,\"ts\":\"2026-11-22T10:00:00Z\",\"id\":\"e1\"}");
	REQUIRE(x != NULL);
	CHECK_EQ_INT(x->outcome, MM_EXPLAIN_DUPLICATE);
	CHECK_EQ_INT(x->nkeys, 0);
	mm_explainer_close(ex);
}

TEST(rejections_carry_run_reasons_and_messages)
{
	static const struct {
		const char *line;
		int reason, code;
		const char *detail; /* NULL: not compared */
	} cases[] = {
		{"{\"page_id\":", MM_REJ_JSON, MM_EJSON, NULL},
		{"{\"page_id\":\"\xff\"}", MM_REJ_UTF8, MM_EUTF8, NULL},
		{"[1]", MM_REJ_NOTOBJ, MM_ENOTOBJ, NULL},
		{"{\"n\":1,\"ts\":\"2026-11-22T10:00:00Z\"}", MM_REJ_MISSING, MM_EMISSING,
		 "missing key field 'page_id'"},
		{"{\"page_id\":\"a\",\"n\":\"x\",\"ts\":\"2026-11-22T10:00:00Z\"}", MM_REJ_TYPE, MM_ETYPE,
		 "value field 'n' must be a number for sum"},
		{"{\"page_id\":\"a\",\"n\":1,\"ts\":\"2020-01-01T00:00:00Z\"}", MM_REJ_RANGE, MM_ERANGE, NULL},
		{"{\"page_id\":\"a\",\"n\":1,\"ts\":\"2026-11-22T10:00:00Z\",\"pad\":\"................................................................\"}",
		 MM_REJ_TOOBIG, MM_ETOOBIG, "record of 122 bytes exceeds max_record 100"},
	};
	mm_explainer_t *ex = open_fast();

	REQUIRE(ex != NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const mm_explain_t *x = explain(ex, cases[i].line);

		REQUIRE(x != NULL);
		CHECK_EQ_INT(x->outcome, MM_EXPLAIN_REJECTED);
		CHECK_EQ_INT(x->reason, cases[i].reason);
		CHECK_EQ_INT(x->code, cases[i].code);
		CHECK(x->detail_len > 0);
		if (cases[i].detail && !detail_is(x, cases[i].detail))
			printf("#   case %zu: detail '%.*s'\n", i, (int)x->detail_len,
			       mm_explain_str(x, x->detail_off));
		CHECK(cases[i].detail == NULL || detail_is(x, cases[i].detail));
	}
	/* The pipeline's own counters saw what run would count. */
	{
		const mm_pipeline_stats_t *st = &mm_explainer_pipeline(ex)->stats;

		CHECK_EQ_INT(st->records, 7);
		CHECK_EQ_INT(st->accepted, 0);
		for (int r = MM_REJ_JSON; r <= MM_REJ_RANGE; r++)
			CHECK_EQ_INT(st->rejected[r], 1);
	}
	mm_explainer_close(ex);
}

TEST(lua_pipelines_are_refused_on_the_c_path)
{
	mm_explainer_t *ex = open_fast();

	REQUIRE(ex != NULL);
	mm_explainer_pipeline(ex)->uses_lua = 1;
	{
		const mm_explain_t *x = NULL;

		CHECK_EQ_INT(mm_explainer_record(ex, "{}", 2, now_ms, &x), MM_EINVAL);
	}
	mm_explainer_close(ex);
	mm_explainer_close(NULL);
}

int main(void)
{
	RUN(accepted_record_shows_what_was_extracted);
	RUN(rejections_carry_run_reasons_and_messages);
	RUN(lua_pipelines_are_refused_on_the_c_path);
	UNIT_DONE();
}
