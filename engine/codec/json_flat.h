/*
 * json_flat.h: the C path's walk of an event-shaped object, included by
 * json.c once for each instruction set it is compiled for (the baseline's,
 * and AVX2 chosen at run time), with FLAT_NAME the function's name,
 * FLAT_TARGET its target attribute (or nothing) and FLAT_WIN the window
 * mask (json_string.h), and once more for each with FLAT_WHOLE set, for the
 * Lua path's field plans (mm_json_scan_flat_planned). Private to json.c.
 *
 * It takes the members of the common shape, `"key":"value"` followed by
 * `,"` or the closing brace, each from one window mask: the key ends at the
 * window's first special byte, the value's opening quote is its second (the
 * colon between is plain) and the value ends at its third; all three must be
 * quotes, so the strings hold no escape, control or non-ASCII byte. At the
 * first member of any other shape (or one that does not fit in a window,
 * or a requested member seen again), it hands the rest of the document
 * to flat_rest (json.c), which validates it member by member with the walk's
 * string code. So the loop makes no call and keeps its state in registers.
 * Returns what mm_json_scan_planned returns.
 *
 * With FLAT_WHOLE, it also keeps every key it takes and refuses what
 * scan_flat_impl's `keys` refuses: a key seen twice (0 here), more than
 * FLAT_KEYS of them (left to flat_whole). A member taken here has no
 * escaped key and no number, the other things `keys` turns away. At the
 * first member it does not take, flat_whole goes on member by member from
 * there with the keys taken so far. It returns what
 * mm_json_scan_flat_planned returns.
 */
static FLAT_TARGET int FLAT_NAME(const char *doc, size_t n, mm_json_field_t *fields,
				 const mm_json_plan_t *plan)
{
	const unsigned char *d = (const unsigned char *)doc, *end = d + n, *last = end - 1;
	const unsigned char *p = NULL, *b, *q, *e;
	uint64_t lens = plan->lens, m, h, t;
	uint16_t pair;
	mm_json_field_t *f;
	size_t klen;
	int i, nfields = plan->nfields;
#if FLAT_WHOLE
	flat_keys_t keys;
	uint64_t bit;

	keys.n = 0;
	keys.seen = 0;
#endif

	fields_clear(fields, nfields);
	if (n < WIN || d[0] != '{' || d[1] != '"' || *last != '}')
		goto rest;
	p = d + 1;
	for (;;) {
		/* p is at a key's opening quote, before the closing brace. */
		b = p + 1;
		if (__builtin_expect(b + WIN <= end, 1))
			m = FLAT_WIN(b);
		else
			m = FLAT_WIN(end - WIN) >> ((WIN - (size_t)(end - b)) << MASK_SHIFT);
		if (__builtin_expect(m == 0, 0))
			break;
		/* Pairs are read from a quote, which is never the last byte
		 * ('}'), and a third byte only after a pair that is not the
		 * end either. */
		klen = WIN_AT(m);
		q = b + klen;
		memcpy(&pair, q, 2);
		if (__builtin_expect(pair != FLAT_PAIR('"', ':') || q[2] != '"', 0))
			break;
		m &= m - 1;
		m &= m - 1;
		if (__builtin_expect(m == 0, 0))
			break;
		e = b + WIN_AT(m);
		memcpy(&pair, e, 2);
		if (__builtin_expect(pair != FLAT_PAIR('"', ',') || e[2] != '"', 0) &&
		    (pair != FLAT_PAIR('"', '}') || e + 1 != last))
			break;
#if FLAT_WHOLE
		/* A key seen before ends the scan here; one past FLAT_KEYS,
		 * in scan_flat_impl. This member's key is taken once the
		 * member is, below: scan_flat_impl reads a member left to it
		 * from its start. */
		bit = flat_key_bit(b, klen);
		if (flat_key_seen(&keys, b, klen, bit))
			return 0;
		if (keys.n == FLAT_KEYS)
			break;
#endif
		/* The member is taken: its key looked up by the plan's
		 * loads (key_loads), its value filed. A requested member
		 * seen again is left to flat_rest, and so is a key longer
		 * than 16 bytes whose middle, which the loads do not hold,
		 * is not the matched name's. */
		if (lens >> klen & 1) {
			key_loads(b, klen, end, &h, &t);
			for (i = 0; i < nfields; i++)
				if (((((h ^ plan->names[i].head) | (t ^ plan->names[i].tail)) &
				      plan->names[i].mask) |
				     (plan->names[i].len ^ klen)) == 0)
					break;
			if (i < nfields) {
				f = fields + i;
				if (f->type != MM_JSON_ABSENT ||
				    (klen > 16 && memcmp(f->name + 8, b + 8, klen - 16) != 0))
					break;
				f->type = MM_JSON_STRING;
				f->p = (const char *)q + 3;
				f->len = (size_t)(e - q) - 3;
				f->escaped = 0;
			}
		}
#if FLAT_WHOLE
		flat_key_take(&keys, b, klen, bit);
#endif
		p = e + 2;
		if (p > last) {
			if (plan->same_names)
				flat_same_names(fields, nfields);
			return FLAT_WHOLE;
		}
	}
rest:
#if FLAT_WHOLE
	return flat_whole(doc, n, fields, plan, p, &keys);
#else
	return flat_rest(doc, n, fields, plan, p);
#endif
}

#undef FLAT_NAME
#undef FLAT_WHOLE
#undef FLAT_TARGET
#undef FLAT_WIN
