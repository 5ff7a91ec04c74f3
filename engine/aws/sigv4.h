/*
 * sigv4.h: AWS Signature Version 4, with the SHA-256 and HMAC-SHA256 it is
 * built on.
 *
 * The signer turns a request (method, path, query, headers, body) and a set of
 * credentials into the Authorization header (header signing) or the extra query
 * parameters of a presigned URL (query signing), following the AWS reference
 * "Create a signed AWS API request" step by step: canonical request, string to
 * sign, derived signing key, signature. It exposes the intermediate texts so
 * that tests can compare each step with the official test suite
 * (tests/unit/test_sigv4.c runs every case of ../shared/aws-sigv4-test-suite).
 *
 * Why our own signer: libcurl 7.88's CURLOPT_AWS_SIGV4 sends X-Amz-Date twice
 * when the caller sets it and signs headers the caller removed, which real AWS
 * rejects, and it cannot show its intermediate steps to a test.
 *
 * A signer (mm_sigv4_t) owns reusable buffers and a cache of the derived
 * signing key (valid for one date, region, service and secret), so signing a
 * stream of DynamoDB requests costs three SHA-256 passes over small texts and
 * no allocation once the buffers have grown.
 *
 * Pure C, no global state: any thread, one thread at a time per mm_sigv4_t.
 */
#ifndef MM_SIGV4_H
#define MM_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"

/* ---- SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) ---- */

typedef struct mm_sha256 {
	uint32_t h[8];
	uint64_t total;   /* bytes hashed so far */
	uint8_t block[64];
	size_t nblock;    /* bytes waiting in block */
} mm_sha256_t;

void mm_sha256_init(mm_sha256_t *c);
void mm_sha256_update(mm_sha256_t *c, const void *p, size_t n);
void mm_sha256_final(mm_sha256_t *c, uint8_t out[32]);
void mm_sha256(const void *p, size_t n, uint8_t out[32]);
void mm_hmac_sha256(const void *key, size_t klen, const void *msg, size_t n, uint8_t out[32]);

/* HMAC-SHA256 for a key that signs many messages: mm_hmac_sha256_key hashes
 * the padded key into the two states once, and mm_hmac_sha256_with finishes
 * each message from copies of them (two SHA-256 blocks fewer per message). */
typedef struct mm_hmac_sha256_key {
	mm_sha256_t inner, outer;
} mm_hmac_sha256_key_t;

void mm_hmac_sha256_key(mm_hmac_sha256_key_t *hk, const void *key, size_t klen);
void mm_hmac_sha256_with(const mm_hmac_sha256_key_t *hk, const void *msg, size_t n,
			 uint8_t out[32]);

/* Writes 2n lowercase hex digits and a NUL to out (2n + 1 bytes). */
void mm_hex_lower(const uint8_t *p, size_t n, char *out);

/* ---- the signer ---- */

/* A header as the caller will send it. Names are matched case-insensitively. */
typedef struct mm_sigv4_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
} mm_sigv4_header_t;

typedef struct mm_sigv4_request {
	const char *method;                /* "GET", "POST", ... */
	const char *path;                  /* as sent, without the query; "" means "/" */
	size_t path_len;
	const char *query;                 /* the text after '?', or NULL */
	size_t query_len;
	const mm_sigv4_header_t *headers;  /* must include Host; not X-Amz-Date */
	size_t nheaders;
	const void *body;
	size_t body_len;
} mm_sigv4_request_t;

typedef struct mm_sigv4_params {
	const char *access_key;
	const char *secret_key;
	const char *session_token;  /* NULL when the credentials have none */
	const char *region;         /* "us-east-1" */
	const char *service;        /* "dynamodb" */
	int64_t time_s;             /* signing time, seconds since the epoch (UTC) */
	int normalize_path;         /* remove dot segments and empty segments (all but S3) */
	int sign_body;              /* add and sign x-amz-content-sha256 (header signing) */
	int omit_session_token;     /* leave the token out of the signature; sent after it */
	int64_t expires_s;          /* query signing: X-Amz-Expires */
} mm_sigv4_params_t;

/* Hash states after each 64-byte block of the first bytes of a text
 * (head), so that a text starting with the same blocks resumes from there. */
#define MM_SIGV4_MEMO_BLOCKS 4
typedef struct mm_sigv4_memo {
	uint32_t h[MM_SIGV4_MEMO_BLOCKS][8]; /* the hash words after each block */
	uint8_t head[64 * MM_SIGV4_MEMO_BLOCKS];
	size_t blocks;              /* how many of h[] and head[] hold */
} mm_sigv4_memo_t;

/*
 * Signer state and results. Zero it before first use; mm_sigv4_free releases
 * it. After a successful sign call the fields below hold that call's results
 * until the next call.
 */
typedef struct mm_sigv4 {
	mm_buf_t canonical;         /* the canonical request */
	mm_buf_t string_to_sign;
	mm_buf_t signed_headers;    /* "host;x-amz-date" */
	mm_buf_t authorization;     /* header signing: the Authorization value;
	                             * query signing: the query string to send
	                             * (the request's own parameters included) */
	char signature[65];
	char amz_date[17];          /* "YYYYMMDDTHHMMSSZ": send it as X-Amz-Date */
	char content_sha256[65];    /* hex SHA-256 of the body */
	/* private: scratch space and the signing-key cache */
	mm_buf_t scratch;           /* encoded query keys and values */
	mm_buf_t headers_text;      /* the canonical header lines */
	void *hdrs;                 /* sorted header entries */
	size_t hdrs_cap;
	void *params;               /* sorted query parameters */
	size_t params_cap;
	char key_scope[160];        /* date/region/service the key was derived for */
	char *key_secret;           /* the secret it was derived from (a copy) */
	mm_hmac_sha256_key_t key;   /* the signing key, ready for HMAC */
	int key_valid;
	/* The states after each of the first blocks of the last body, the
	 * last canonical request and the last string to sign (keyed), for the
	 * next ones that start with the same blocks: a burst of requests
	 * shares them. */
	mm_sigv4_memo_t body_memo, canon_memo, sts_memo;
	int64_t date_time;          /* the time amz_date was formatted for */
	int date_valid;
	/* mm_sigv4_sign_post's: canonical, signed_headers and authorization
	 * are its texts for values of these lengths (content type, host,
	 * target, token) and with a token signed or not, so that the next call
	 * with the same values writes only the date, the body's hash and the
	 * signature over them. The other sign calls clear post_valid. */
	size_t post_lens[4];
	int post_token, post_valid;
} mm_sigv4_t;

/*
 * Header signing. On success the caller sends the request with the headers it
 * passed plus X-Amz-Date: s->amz_date, Authorization: s->authorization, and,
 * when a session token is set, X-Amz-Security-Token (signed unless
 * omit_session_token), and with sign_body x-amz-content-sha256:
 * s->content_sha256. Returns 0, MM_EINVAL (no Host header, bad time,
 * missing credentials) or MM_ENOMEM.
 */
int mm_sigv4_sign_headers(mm_sigv4_t *s, const mm_sigv4_request_t *req,
			  const mm_sigv4_params_t *p);

/*
 * Header signing of the request every AWS JSON-protocol call makes: POST /
 * without a query, signing the headers Content-Type, Host and X-Amz-Target
 * (values NUL-terminated). Its results are mm_sigv4_sign_headers' for that
 * request, and so are its errors; the canonical request is written straight
 * from the known header names instead of being sorted and canonicalised
 * line by line (about 5 000 instructions of a DynamoDB request), and a
 * value with white space in it, which canonicalisation would change, takes
 * the general path.
 */
int mm_sigv4_sign_post(mm_sigv4_t *s, const char *content_type, const char *host,
		       const char *target, const void *body, size_t len,
		       const mm_sigv4_params_t *p);

/*
 * Query signing (presigned URL): s->authorization holds the full query string
 * to send, the request's parameters and the X-Amz-* ones, ending with
 * X-Amz-Signature. Same errors.
 */
int mm_sigv4_sign_query(mm_sigv4_t *s, const mm_sigv4_request_t *req,
			const mm_sigv4_params_t *p);

void mm_sigv4_free(mm_sigv4_t *s);

#endif
