/*
 * lambda_event.h: the events AWS Lambda hands a function, decoded into
 * records for the "lambda" source (lambda.c).
 *
 * Three batch shapes are understood, told apart by Records[0].eventSource:
 *   aws:kinesis   Records[].kinesis.data (base64 of the record), partitionKey,
 *                 sequenceNumber, approximateArrivalTimestamp (epoch seconds);
 *                 the shard is the part of eventID before ':'
 *                 ("shardId-000000000006:4959..."). Record id: the eventID,
 *                 "<shard>:<sequence number>"; item identifier for
 *                 batchItemFailures: the sequence number.
 *   aws:sqs       Records[].body (the record as it is), messageId (both the
 *                 record id and the item identifier), attributes.SentTimestamp
 *                 (epoch ms).
 *   aws:dynamodb  Records[].dynamodb.NewImage in DynamoDB JSON, turned into a
 *                 plain JSON object (S -> string, N -> number, BOOL, NULL,
 *                 M -> object, L -> array, SS/NS/BS -> arrays, B stays its
 *                 base64 text); record id: eventID; item identifier:
 *                 dynamodb.SequenceNumber. REMOVE records carry no NewImage
 *                 and are skipped (counted in `skipped`).
 *
 * A record whose payload cannot be decoded (kinesis.data that is not
 * canonical base64, a NewImage that is not DynamoDB JSON, a missing field)
 * is kept with `bad` set and its raw text as data, so the engine sends it to
 * the dead-letter destination instead of failing the batch. An event that is
 * not one of these shapes is an error (MM_EINVAL): the runtime reports it to
 * Lambda as an invocation error.
 *
 * Ownership: the decoded bytes live in ev->bytes and the records point into
 * it by offset; mm_lambda_event_reset keeps the memory for the next event,
 * mm_lambda_event_free releases it. Pure C: any thread.
 */
#ifndef MM_LAMBDA_EVENT_H
#define MM_LAMBDA_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "../aws/awsjson.h"
#include "../lib/buf.h"

enum mm_lambda_kind {
	MM_LAMBDA_KINESIS = 1,
	MM_LAMBDA_SQS,
	MM_LAMBDA_DYNAMODB,
};

/* A span of ev->bytes. */
typedef struct mm_lspan {
	size_t off, len;
} mm_lspan_t;

typedef struct mm_lambda_record {
	mm_lspan_t data;  /* the record delivered to the pipelines */
	mm_lspan_t id;    /* identity in its source (MM_REC_ID) */
	mm_lspan_t item;  /* itemIdentifier in batchItemFailures */
	mm_lspan_t shard; /* Kinesis: the shard id; else empty */
	mm_lspan_t seq;   /* Kinesis: the sequence number; else empty */
	int64_t ts_ms;    /* arrival time in epoch ms, 0 if unknown */
	const char *bad;  /* why data could not be decoded, or NULL */
} mm_lambda_record_t;

typedef struct mm_lambda_event {
	int kind;                  /* enum mm_lambda_kind */
	mm_lambda_record_t *recs;
	size_t n, cap;
	uint64_t skipped;          /* records without a payload (DynamoDB REMOVE) */
	mm_lspan_t source;         /* eventSourceARN of the first record */
	mm_buf_t bytes;
	mm_jtree_t tree;
} mm_lambda_event_t;

/* Decodes the event body p[0..n) into ev (zeroed before first use; earlier
 * records are dropped). Returns 0, MM_EINVAL (not a Kinesis, SQS or
 * DynamoDB Streams batch, or records of several Kinesis shards), MM_EJSON /
 * MM_EUTF8 (the body is not JSON) or MM_ENOMEM, with a diagnostic. */
int mm_lambda_event_decode(mm_lambda_event_t *ev, const char *p, size_t n);

/* The bytes of a span. */
static inline const char *mm_lambda_span(const mm_lambda_event_t *ev, mm_lspan_t s)
{
	return (const char *)ev->bytes.p + s.off;
}

void mm_lambda_event_free(mm_lambda_event_t *ev);

/* Compares two Kinesis sequence numbers (decimal strings of up to 128
 * digits, beyond any integer type): <0, 0 or >0. Leading zeros do not count. */
int mm_lambda_seq_cmp(const char *a, size_t alen, const char *b, size_t blen);

/* Appends the JSON of a DynamoDB attribute map (an "M" value's members, or an
 * Item) as a plain JSON object to out. Returns 0, MM_EINVAL (not DynamoDB
 * JSON, with a diagnostic) or MM_ENOMEM. */
int mm_lambda_ddb_to_json(const mm_jnode_t *map, mm_buf_t *out);

#endif
