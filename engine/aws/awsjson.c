/*
 * awsjson.c: a read-only JSON tree on mm_json_parse (see awsjson.h).
 *
 * The visitor keeps a stack of open containers; every value becomes a node
 * appended to the container on top (children are linked through `next`, with
 * the container remembering its last child through the stack's tail
 * pointers). The arena is a list of chunks; parsing again rewinds every chunk
 * instead of freeing them.
 */
#include "awsjson.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

typedef struct mm_jchunk {
	struct mm_jchunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
} mm_jchunk_t;

#define JCHUNK_MIN 8192

/* The first chunk with room for n (a multiple of 16) bytes, or a new one. */
static void *arena_more(mm_jtree_t *t, size_t n)
{
	mm_jchunk_t *c;

	for (c = t->chunks; c != NULL; c = c->next)
		if (c->cap - c->used >= n)
			break;
	if (c == NULL) {
		size_t cap = n > JCHUNK_MIN ? n : JCHUNK_MIN;

		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = t->chunks;
		t->chunks = c;
	}
	c->used += n;
	return c->data + c->used - n;
}

/* Nodes and texts of an answer fit in its tree's first chunk but for big
 * ones: that chunk is tried inline, a node or a text being the allocation
 * of every value (a call each was a fifth of a tree's parse). */
static inline void *arena_alloc(mm_jtree_t *t, size_t n)
{
	mm_jchunk_t *c = t->chunks;

	n = (n + 15) & ~(size_t)15;
	if (c != NULL && c->cap - c->used >= n) {
		c->used += n;
		return c->data + c->used - n;
	}
	return arena_more(t, n);
}

static char *arena_copy(mm_jtree_t *t, const char *s, size_t n)
{
	char *p = arena_alloc(t, n + 1);

	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

/* Tail pointers of the open containers, parallel to t->stack. */
typedef struct jbuild {
	mm_jtree_t *t;
	mm_jnode_t *tail[MM_JSON_MAX_DEPTH + 1];
} jbuild_t;

static mm_jnode_t *jb_add(jbuild_t *b, int type)
{
	mm_jtree_t *t = b->t;
	mm_jnode_t *n = arena_alloc(t, sizeof(*n)), *parent;

	if (n == NULL)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->type = type;
	if (t->key) {
		/* jb_key copied the name into the arena already. */
		n->key = t->key;
		n->key_len = t->key_len;
		t->key = NULL;
	}
	if (t->depth == 0) {
		t->root = n;
		return n;
	}
	parent = t->stack[t->depth - 1];
	if (b->tail[t->depth - 1])
		b->tail[t->depth - 1]->next = n;
	else
		parent->child = n;
	b->tail[t->depth - 1] = n;
	parent->n++;
	return n;
}

static int jb_scalar(void *ud, int type, const char *s, size_t len)
{
	jbuild_t *b = ud;
	mm_jnode_t *n = jb_add(b, type);

	if (n == NULL)
		return MM_ENOMEM;
	if (s) {
		n->s = arena_copy(b->t, s, len);
		if (n->s == NULL)
			return MM_ENOMEM;
		n->len = len;
	}
	return 0;
}

static int jb_null(void *ud)
{
	return jb_scalar(ud, MM_JSON_NULL, NULL, 0);
}

static int jb_bool(void *ud, int v)
{
	return jb_scalar(ud, v ? MM_JSON_TRUE : MM_JSON_FALSE, NULL, 0);
}

static int jb_number(void *ud, const char *raw, size_t len)
{
	return jb_scalar(ud, MM_JSON_NUMBER, raw, len);
}

static int jb_string(void *ud, const char *s, size_t len)
{
	return jb_scalar(ud, MM_JSON_STRING, s, len);
}

static int jb_key(void *ud, const char *s, size_t len)
{
	jbuild_t *b = ud;

	/* The scanner's scratch is overwritten by the value: copy the name now. */
	b->t->key = arena_copy(b->t, s, len);
	b->t->key_len = len;
	return b->t->key ? 0 : MM_ENOMEM;
}

static int jb_begin(void *ud, int is_object)
{
	jbuild_t *b = ud;
	mm_jnode_t *n = jb_add(b, is_object ? MM_JSON_OBJECT : MM_JSON_ARRAY);

	if (n == NULL)
		return MM_ENOMEM;
	if (b->t->depth > MM_JSON_MAX_DEPTH)
		return mm_diag_set(MM_EJSON, "json: nesting too deep");
	b->t->stack[b->t->depth] = n;
	b->tail[b->t->depth] = NULL;
	b->t->depth++;
	return 0;
}

static int jb_end(void *ud, int is_object)
{
	jbuild_t *b = ud;

	b->t->depth--;
	return 0;
}

int mm_jtree_parse(mm_jtree_t *t, const char *p, size_t n)
{
	static const mm_json_visitor_t vis = {
		.on_null = jb_null, .on_bool = jb_bool, .on_number = jb_number,
		.on_string = jb_string, .on_key = jb_key, .on_begin = jb_begin, .on_end = jb_end,
	};
	jbuild_t b;
	mm_jchunk_t *c;
	int rc;

	for (c = t->chunks; c != NULL; c = c->next)
		c->used = 0;
	t->root = NULL;
	t->depth = 0;
	t->key = NULL;
	b.t = t;
	rc = mm_json_parse_buf(p, n, &vis, &b, &t->scratch);
	if (rc == MM_ENOMEM)
		return mm_diag_set(MM_ENOMEM, "json: out of memory building a tree");
	if (rc)
		t->root = NULL;
	return rc;
}

void mm_jtree_free(mm_jtree_t *t)
{
	mm_jchunk_t *c, *next;

	for (c = t->chunks; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	mm_buf_free(&t->scratch);
	memset(t, 0, sizeof(*t));
}

void mm_jtree_trim(mm_jtree_t *t, size_t max_bytes)
{
	size_t total = t->scratch.cap;
	mm_jchunk_t *c;

	for (c = t->chunks; c != NULL; c = c->next)
		total += c->cap;
	if (total > max_bytes)
		mm_jtree_free(t);
}

const mm_jnode_t *mm_jnode_get(const mm_jnode_t *obj, const char *key)
{
	const mm_jnode_t *c;
	size_t len;

	if (obj == NULL || obj->type != MM_JSON_OBJECT)
		return NULL;
	len = strlen(key);
	for (c = obj->child; c != NULL; c = c->next)
		if (c->key_len == len && memcmp(c->key, key, len) == 0)
			return c;
	return NULL;
}

int mm_jnode_is(const mm_jnode_t *node, const char *s)
{
	size_t len = strlen(s);

	return node && node->type == MM_JSON_STRING && node->len == len &&
	       memcmp(node->s, s, len) == 0;
}
