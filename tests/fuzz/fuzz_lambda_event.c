/*
 * fuzz_lambda_event.c: arbitrary bytes as the event body Lambda hands the
 * runtime (mm_lambda_event_decode, engine/source/lambda_event.c: Kinesis,
 * SQS and DynamoDB Streams batches), and as two Kinesis sequence numbers.
 *
 * fuzz-link: engine/source/lambda_event.c
 *
 * Checked on every input:
 *   - the decoder returns 0 or one of its documented errors (MM_EINVAL,
 *     MM_EJSON, MM_EUTF8, MM_ENOMEM), never anything else;
 *   - on success every span of every record lies inside ev->bytes, the
 *     kind is one of the three shapes (or none for an empty Records array,
 *     which has no record to name one), a Kinesis batch names one shard for
 *     all its records and each sequence number is decimal digits;
 *   - decoding the same body again into the same (reset) event gives the
 *     same records byte for byte: no state leaks from one invocation into
 *     the next, as the runtime reuses one event for its whole life;
 *   - the sequence comparison is antisymmetric and reflexive.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/error.h"
#include "source/lambda_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sign(int v)
{
	return (v > 0) - (v < 0);
}

static int span_ok(const mm_lambda_event_t *ev, mm_lspan_t s)
{
	return s.off <= ev->bytes.len && s.len <= ev->bytes.len - s.off;
}

static void check_records(const mm_lambda_event_t *ev)
{
	if (ev->kind == 0 && ev->n == 0)
		return;
	if (ev->kind != MM_LAMBDA_KINESIS && ev->kind != MM_LAMBDA_SQS && ev->kind != MM_LAMBDA_DYNAMODB)
		abort();
	for (size_t i = 0; i < ev->n; i++) {
		const mm_lambda_record_t *r = &ev->recs[i];

		if (!span_ok(ev, r->data) || !span_ok(ev, r->id) || !span_ok(ev, r->item) ||
		    !span_ok(ev, r->shard) || !span_ok(ev, r->seq))
			abort();
		if (ev->kind != MM_LAMBDA_KINESIS)
			continue;
		if (r->shard.len != ev->recs[0].shard.len ||
		    memcmp(mm_lambda_span(ev, r->shard), mm_lambda_span(ev, ev->recs[0].shard), r->shard.len) != 0)
			abort();
		for (size_t k = 0; k < r->seq.len; k++)
			if (mm_lambda_span(ev, r->seq)[k] < '0' || mm_lambda_span(ev, r->seq)[k] > '9')
				abort();
	}
}

static int same_span(const mm_lambda_event_t *a, mm_lspan_t x, const mm_lambda_event_t *b, mm_lspan_t y)
{
	return x.len == y.len && memcmp(mm_lambda_span(a, x), mm_lambda_span(b, y), x.len) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static mm_lambda_event_t reused;
	mm_lambda_event_t fresh = {0};
	int rc, rc2;
	size_t half = size / 2;
	const char *p = (const char *)data;

	rc = mm_lambda_event_decode(&fresh, p, size);
	if (rc != 0 && rc != MM_EINVAL && rc != MM_EJSON && rc != MM_EUTF8 && rc != MM_ENOMEM)
		abort();
	rc2 = mm_lambda_event_decode(&reused, p, size);
	if (rc2 != rc)
		abort();
	if (rc == 0) {
		check_records(&fresh);
		if (reused.kind != fresh.kind || reused.n != fresh.n || reused.skipped != fresh.skipped)
			abort();
		for (size_t i = 0; i < fresh.n; i++) {
			const mm_lambda_record_t *a = &fresh.recs[i], *b = &reused.recs[i];

			if (!same_span(&fresh, a->data, &reused, b->data) || !same_span(&fresh, a->id, &reused, b->id) ||
			    !same_span(&fresh, a->item, &reused, b->item) || a->ts_ms != b->ts_ms ||
			    (a->bad == NULL) != (b->bad == NULL))
				abort();
		}
	}
	mm_lambda_event_free(&fresh);

	if (sign(mm_lambda_seq_cmp(p, half, p + half, size - half)) !=
		    -sign(mm_lambda_seq_cmp(p + half, size - half, p, half)) ||
	    mm_lambda_seq_cmp(p, half, p, half) != 0)
		abort();
	return 0;
}
