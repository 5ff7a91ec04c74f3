/*
 * hll_tool: drives the HLL monoid from the shell so tests/spec/
 * hll_valkey_spec.lua can compare it with a real Valkey/Redis server.
 *
 *   hll_tool encode < elements     hex of the encoding of the elements, one
 *                                  per line (the newline is not part of it)
 *   hll_tool count HEX             our estimate for an encoding
 *   hll_tool registers HEX         FNV-1a 64 of the 16384 register values,
 *                                  so two encodings compare by registers
 *   hll_tool merge HEX HEX         hex of the merge of two encodings
 *
 * HEX is any HYLL string in hex, ours or the server's. Output goes to stdout
 * followed by a newline; errors go to stderr with exit status 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "lib/error.h"
#include "monoid/hll.h"

static const mm_monoid_t hll = {.vt = &mm_monoid_hll_vtable};

static int fail(const char *what, int rc)
{
	fprintf(stderr, "hll_tool: %s: %s: %s\n", what, mm_err_name(rc), mm_diag_msg());
	return 1;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes a hex argument into st (which must be init()ed). */
static int decode_hex(const char *hex, void *st)
{
	size_t len = strlen(hex), i;
	mm_buf_t raw = {0};
	int rc;

	if (len % 2 != 0) {
		fprintf(stderr, "hll_tool: odd-length hex string\n");
		return 1;
	}
	rc = mm_buf_reserve(&raw, len / 2);
	if (rc)
		return fail("decode", rc);
	for (i = 0; i < len; i += 2) {
		int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);

		if (hi < 0 || lo < 0) {
			fprintf(stderr, "hll_tool: bad hex digit at offset %zu\n", i);
			mm_buf_free(&raw);
			return 1;
		}
		raw.p[raw.len++] = (uint8_t)(hi << 4 | lo);
	}
	rc = hll.vt->decode(&hll, st, raw.p, raw.len);
	mm_buf_free(&raw);
	return rc ? fail("decode", rc) : 0;
}

static int print_hex(const void *st)
{
	mm_buf_t out = {0};
	size_t i;
	int rc = hll.vt->encode(&hll, st, &out);

	if (rc)
		return fail("encode", rc);
	for (i = 0; i < out.len; i++)
		printf("%02x", out.p[i]);
	printf("\n");
	mm_buf_free(&out);
	return 0;
}

static int cmd_encode(void *st)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;

	while ((n = getline(&line, &cap, stdin)) >= 0) {
		mm_value_t v = {.type = MM_VAL_STRING, .s = line};

		v.len = (size_t)n;
		if (v.len > 0 && line[v.len - 1] == '\n')
			v.len--;
		rc = hll.vt->add(&hll, st, &v);
		if (rc)
			break;
	}
	free(line);
	return rc ? fail("add", rc) : print_hex(st);
}

static int cmd_registers(const void *st)
{
	uint8_t regs[MM_HLL_REGISTERS];
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	mm_hll_registers(&hll, st, regs);
	for (i = 0; i < sizeof(regs); i++) {
		h ^= regs[i];
		h *= 0x100000001b3ULL;
	}
	printf("%016llx\n", (unsigned long long)h);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t st[MM_STATE_MAX / 8], other[MM_STATE_MAX / 8];
	uint64_t est;
	int rc = 1;

	hll.vt->init(&hll, st);
	hll.vt->init(&hll, other);
	if (argc == 2 && strcmp(argv[1], "encode") == 0) {
		rc = cmd_encode(st);
	} else if (argc == 3 && strcmp(argv[1], "count") == 0) {
		rc = decode_hex(argv[2], st);
		if (rc == 0) {
			mm_hll_count(&hll, st, &est);
			printf("%llu\n", (unsigned long long)est);
		}
	} else if (argc == 3 && strcmp(argv[1], "registers") == 0) {
		rc = decode_hex(argv[2], st);
		if (rc == 0)
			rc = cmd_registers(st);
	} else if (argc == 4 && strcmp(argv[1], "merge") == 0) {
		rc = decode_hex(argv[2], st);
		if (rc == 0)
			rc = decode_hex(argv[3], other);
		if (rc == 0)
			rc = hll.vt->merge(&hll, st, other);
		if (rc < 0)
			rc = fail("merge", rc);
		else if (rc == 0)
			rc = print_hex(st);
	} else {
		fprintf(stderr, "usage: hll_tool encode < elements | count HEX | registers HEX |"
				" merge HEX HEX\n");
	}
	hll.vt->destroy(&hll, st);
	hll.vt->destroy(&hll, other);
	return rc;
}
