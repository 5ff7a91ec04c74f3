/*
 * test_lambda_event.c: the Lambda event decoders (Kinesis, SQS, DynamoDB
 * Streams), DynamoDB JSON into plain JSON, and sequence number order.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lib/error.h"
#include "source/lambda_event.h"
#include "unit.h"

static int span_is(const mm_lambda_event_t *ev, mm_lspan_t s, const char *want)
{
	return s.len == strlen(want) && memcmp(mm_lambda_span(ev, s), want, s.len) == 0;
}

#define KREC(seq, data)                                                                            \
	"{\"kinesis\":{\"partitionKey\":\"p\",\"sequenceNumber\":\"" seq "\",\"data\":\"" data   \
	"\",\"approximateArrivalTimestamp\":1545084650.987},\"eventSource\":\"aws:kinesis\","      \
	"\"eventID\":\"shardId-000000000006:" seq "\",\"eventSourceARN\":\"arn:s\"}"

TEST(kinesis_records)
{
	/* eyJhIjoxfQ== is {"a":1}; the second record's data is not base64. */
	static const char ev_json[] = "{\"Records\":[" KREC("49590338271490256608559692538361571095921575989136588898",
						      "eyJhIjoxfQ==") "," KREC("49590338271490256608559692538361571095921575989136588899", "{\\\"a\\\":1}") "]}";
	mm_lambda_event_t ev = {0};

	REQUIRE(mm_lambda_event_decode(&ev, ev_json, strlen(ev_json)) == 0);
	CHECK(ev.kind == MM_LAMBDA_KINESIS && ev.n == 2);
	CHECK(span_is(&ev, ev.recs[0].data, "{\"a\":1}"));
	CHECK(span_is(&ev, ev.recs[0].shard, "shardId-000000000006"));
	CHECK(span_is(&ev, ev.recs[0].id, "shardId-000000000006:49590338271490256608559692538361571095921575989136588898"));
	CHECK(span_is(&ev, ev.recs[0].item, "49590338271490256608559692538361571095921575989136588898"));
	CHECK(ev.recs[0].ts_ms == 1545084650987);
	CHECK(ev.recs[0].bad == NULL);
	/* Not base64: kept with its raw text, for the dead-letter destination. */
	CHECK(ev.recs[1].bad != NULL && span_is(&ev, ev.recs[1].data, "{\"a\":1}"));
	CHECK(span_is(&ev, ev.source, "arn:s"));
	mm_lambda_event_free(&ev);
}

TEST(kinesis_refuses_mixed_shards_and_unknown_events)
{
	static const char two[] = "{\"Records\":[" KREC("1", "eyJhIjoxfQ==") ","
				  "{\"kinesis\":{\"sequenceNumber\":\"2\",\"data\":\"\"},\"eventSource\":"
				  "\"aws:kinesis\",\"eventID\":\"shardId-2:2\"}]}";
	mm_lambda_event_t ev = {0};

	CHECK(mm_lambda_event_decode(&ev, two, strlen(two)) == MM_EINVAL);
	CHECK(mm_lambda_event_decode(&ev, "{\"foo\":1}", 9) == MM_EINVAL);
	CHECK(mm_lambda_event_decode(&ev, "{\"Records\":[{\"eventSource\":\"aws:s3\"}]}", 38) == MM_EINVAL);
	CHECK(mm_lambda_event_decode(&ev, "not json", 8) != 0);
	CHECK(mm_lambda_event_decode(&ev, "{\"Records\":[]}", 14) == 0 && ev.n == 0);
	mm_lambda_event_free(&ev);
}

TEST(kinesis_refuses_sequence_numbers_that_are_not_decimal)
{
	/* A sequence number becomes the shard's stored position: one that is
	 * not 1..128 decimal digits would be stored and then refused by every
	 * later read (found by fuzz_lambda_event). */
	static const char letters[] = "{\"Records\":[" KREC("495<03", "eyJhIjoxfQ==") "]}";
	static const char digits129[] = "{\"Records\":[" KREC("1234567890123456789012345678901234567890"
				"1234567890123456789012345678901234567890123456789012345678901234567890"
				"1234567890123456789", "eyJhIjoxfQ==") "]}";
	static const char digits128[] = "{\"Records\":[" KREC("1234567890123456789012345678901234567890"
				"1234567890123456789012345678901234567890123456789012345678901234567890"
				"123456789012345678", "eyJhIjoxfQ==") "]}";
	mm_lambda_event_t ev = {0};

	CHECK(mm_lambda_event_decode(&ev, letters, strlen(letters)) == MM_EINVAL);
	CHECK(mm_lambda_event_decode(&ev, digits129, strlen(digits129)) == MM_EINVAL);
	CHECK(mm_lambda_event_decode(&ev, digits128, strlen(digits128)) == 0 && ev.n == 1);
	mm_lambda_event_free(&ev);
}

TEST(sqs_records)
{
	static const char j[] = "{\"Records\":[{\"messageId\":\"m-1\",\"body\":\"{\\\"x\\\":2}\","
				"\"attributes\":{\"SentTimestamp\":\"1545082649183\"},\"eventSource\":\"aws:sqs\"},"
				"{\"messageId\":\"m-2\",\"eventSource\":\"aws:sqs\"}]}";
	mm_lambda_event_t ev = {0};

	REQUIRE(mm_lambda_event_decode(&ev, j, strlen(j)) == 0);
	CHECK(ev.kind == MM_LAMBDA_SQS && ev.n == 2);
	CHECK(span_is(&ev, ev.recs[0].data, "{\"x\":2}") && span_is(&ev, ev.recs[0].item, "m-1"));
	CHECK(ev.recs[0].ts_ms == 1545082649183);
	CHECK(ev.recs[1].bad != NULL); /* no body */
	mm_lambda_event_free(&ev);
}

TEST(dynamodb_stream_records)
{
	static const char j[] =
		"{\"Records\":[{\"eventID\":\"e1\",\"eventName\":\"INSERT\",\"eventSource\":\"aws:dynamodb\","
		"\"dynamodb\":{\"ApproximateCreationDateTime\":1479499740,\"SequenceNumber\":\"1110\","
		"\"NewImage\":{\"id\":{\"S\":\"a\\\"b\"},\"n\":{\"N\":\"42\"},\"f\":{\"N\":\".5\"},"
		"\"ok\":{\"BOOL\":true},\"z\":{\"NULL\":true},\"m\":{\"M\":{\"k\":{\"L\":[{\"N\":\"1\"},"
		"{\"S\":\"x\"}]}}},\"ss\":{\"SS\":[\"p\",\"q\"]},\"ns\":{\"NS\":[\"1\",\"2\"]}}}},"
		"{\"eventID\":\"e2\",\"eventName\":\"REMOVE\",\"eventSource\":\"aws:dynamodb\","
		"\"dynamodb\":{\"SequenceNumber\":\"1111\",\"OldImage\":{}}},"
		"{\"eventID\":\"e3\",\"eventSource\":\"aws:dynamodb\",\"dynamodb\":{\"SequenceNumber\":"
		"\"1112\",\"NewImage\":{\"bad\":{\"X\":1}}}}]}";
	mm_lambda_event_t ev = {0};

	REQUIRE(mm_lambda_event_decode(&ev, j, strlen(j)) == 0);
	CHECK(ev.kind == MM_LAMBDA_DYNAMODB && ev.n == 2 && ev.skipped == 1);
	CHECK(span_is(&ev, ev.recs[0].data,
		      "{\"id\":\"a\\\"b\",\"n\":42,\"f\":\".5\",\"ok\":true,\"z\":null,"
		      "\"m\":{\"k\":[1,\"x\"]},\"ss\":[\"p\",\"q\"],\"ns\":[1,2]}"));
	CHECK(span_is(&ev, ev.recs[0].id, "e1") && span_is(&ev, ev.recs[0].item, "1110"));
	CHECK(ev.recs[0].ts_ms == 1479499740000);
	CHECK(ev.recs[1].bad != NULL && span_is(&ev, ev.recs[1].id, "e3"));
	mm_lambda_event_free(&ev);
}

TEST(sequence_number_order)
{
	CHECK(mm_lambda_seq_cmp("9", 1, "10", 2) < 0);
	CHECK(mm_lambda_seq_cmp("0010", 4, "10", 2) == 0);
	CHECK(mm_lambda_seq_cmp("49590338271490256608559692538361571095921575989136588899", 56,
				"49590338271490256608559692538361571095921575989136588898", 56) > 0);
	CHECK(mm_lambda_seq_cmp("", 0, "1", 1) < 0);
}

int main(void)
{
	RUN(kinesis_records);
	RUN(kinesis_refuses_mixed_shards_and_unknown_events);
	RUN(sqs_records);
	RUN(dynamodb_stream_records);
	RUN(kinesis_refuses_sequence_numbers_that_are_not_decimal);
	RUN(sequence_number_order);
	UNIT_DONE();
}
