/*
 * json_lex.h: the number grammar shared by the scanner (json.c) and the
 * number conversions (json_number.c). Private to engine/codec.
 */
#ifndef MM_JSON_LEX_H
#define MM_JSON_LEX_H

static inline int is_digit(unsigned char c)
{
	return (unsigned)(c - '0') < 10;
}

/* Returns the end of the number token at p, or NULL when it is malformed (then
 * *bad is the offending position, possibly end). */
static inline const unsigned char *scan_number(const unsigned char *p, const unsigned char *end,
					       const unsigned char **bad)
{
	if (*p == '-')
		p++;
	if (p < end && *p == '0') {
		p++;
	} else if (p < end && is_digit(*p)) {
		while (++p < end && is_digit(*p))
			;
	} else {
		*bad = p;
		return NULL;
	}
	if (p < end && *p == '.') {
		if (++p == end || !is_digit(*p)) {
			*bad = p;
			return NULL;
		}
		while (++p < end && is_digit(*p))
			;
	}
	if (p < end && (*p | 0x20) == 'e') {
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || !is_digit(*p)) {
			*bad = p;
			return NULL;
		}
		while (++p < end && is_digit(*p))
			;
	}
	return p;
}

#endif
