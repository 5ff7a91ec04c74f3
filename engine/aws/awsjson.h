/*
 * awsjson.h: reading AWS JSON-protocol responses (DynamoDB, and later
 * Kinesis): a small read-only tree built on the strict scanner's
 * mm_json_parse (binary "B" values decode with mm_base64_decode, lib/text.h).
 *
 * AWS answers are small, nested and looked up by member name, which a tree
 * serves better than the scanner's flat top-level lookup. Nodes and the
 * unescaped strings live in an arena owned by the tree; parsing again reuses
 * the arena, so a client that keeps one tree per connection slot allocates
 * nothing in the steady state.
 *
 * Pure C: any thread, one thread at a time per tree.
 */
#ifndef MM_AWSJSON_H
#define MM_AWSJSON_H

#include <stddef.h>
#include <stdint.h>

#include "../codec/json.h"
#include "../lib/buf.h"

typedef struct mm_jnode {
	int type;                 /* enum mm_json_type */
	const char *key;          /* member name when the parent is an object, else NULL */
	size_t key_len;
	const char *s;            /* STRING: unescaped bytes; NUMBER: the raw token */
	size_t len;
	struct mm_jnode *child;   /* first element or member */
	struct mm_jnode *next;    /* next sibling */
	size_t n;                 /* number of children */
} mm_jnode_t;

typedef struct mm_jtree {
	mm_jnode_t *root;         /* after a successful parse */
	/* private */
	struct mm_jchunk *chunks; /* arena */
	mm_jnode_t *stack[MM_JSON_MAX_DEPTH + 1];
	int depth;
	const char *key;
	size_t key_len;
	mm_buf_t scratch;
} mm_jtree_t;

/* Parses p[0..n) into t (zero it before first use). Previous nodes are
 * invalidated. Returns 0, MM_EJSON / MM_EUTF8 (with detail) or MM_ENOMEM. */
int mm_jtree_parse(mm_jtree_t *t, const char *p, size_t n);

/* Releases the arena. */
void mm_jtree_free(mm_jtree_t *t);

/* Releases the arena if it holds more than max_bytes (after one huge answer),
 * so a long-lived tree keeps only what typical answers need. Invalidates the
 * nodes when it does. */
void mm_jtree_trim(mm_jtree_t *t, size_t max_bytes);

/* The member `key` of an object node, or NULL (also when obj is NULL or not
 * an object). */
const mm_jnode_t *mm_jnode_get(const mm_jnode_t *obj, const char *key);

/* 1 if node is a STRING equal to s. */
int mm_jnode_is(const mm_jnode_t *node, const char *s);

#endif
