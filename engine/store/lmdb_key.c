/*
 * lmdb_key.c: the lookup of a hashed identifier of the embedded store
 * (layout in lmdb.c) among the records that share its hash, the messages
 * that name a record, LMDB errors as MM_E* codes, the order of namespace
 * names. Any thread: nothing here keeps state.
 */
#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "../lib/error.h"
#include "lmdb_impl.h"

int mm_lmdb_fail(int mrc, const char *what)
{
	int err;

	switch (mrc) {
	case MDB_MAP_FULL:
	case ENOSPC:
	case EDQUOT:
		err = MM_ENOSPC;
		break;
	case EIO:
		err = MM_EIO;
		break;
	case ENOMEM:
		err = MM_ENOMEM;
		break;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
	case MDB_INCOMPATIBLE:
		err = MM_ECORRUPT;
		break;
	case MDB_READERS_FULL:
	case MDB_MAP_RESIZED:
		err = MM_EAGAIN;
		break;
	default:
		err = MM_ESTORE;
		break;
	}
	return mm_diag_set(err, "lmdb: %s: %s", what, mdb_strerror(mrc));
}

int64_t mm_lmdb_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Names a key in messages: printable bytes as they are, others as \xHH,
 * the first 48 bytes at most. */
static void key_describe(const lmdb_key_t *k, char *out, size_t cap)
{
	char esc[48 * 4 + 4];
	size_t i, o = 0;

	for (i = 0; i < k->idlen && i < 48; i++) {
		uint8_t c = k->id[i];

		if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
			esc[o++] = (char)c;
		else
			o += (size_t)snprintf(esc + o, sizeof(esc) - o, "\\x%02x", c);
	}
	if (i < k->idlen)
		o += (size_t)snprintf(esc + o, sizeof(esc) - o, "...");
	esc[o] = '\0';
	snprintf(out, cap, "ns '%s' entity '%s' bucket %lld", k->ns, esc, (long long)k->bucket);
}

int mm_lmdb_corrupt(const lmdb_key_t *k, const char *why)
{
	char what[300];

	key_describe(k, what, sizeof(what));
	return mm_diag_set(MM_ECORRUPT, "lmdb: corrupt record for %s: %s", what, why);
}

/*
 * Looks the record of key k up in txn. A hashed key matches every record
 * whose key is k plus a SEQ; the one whose value holds the identifier right
 * after expire_ms is the identifier's. When none does, k gets the SEQ after
 * the last candidate, where a put disturbs no other identifier.
 * On return k is complete, *found tells whether val holds the record (valid
 * until the next write in txn). Returns 0 or an MM_E* code.
 */
int mm_lmdb_find(MDB_txn *txn, MDB_dbi dbi, lmdb_key_t *k, MDB_val *val, int *found)
{
	MDB_cursor *cur = NULL;
	MDB_val key = {k->len, k->b};
	MDB_cursor_op op = MDB_SET_RANGE;
	size_t next = 0;
	int rc = 0, mrc;

	*found = 0;
	if (!k->hashed) {
		mrc = mdb_get(txn, dbi, &key, val);
		if (mrc == 0)
			*found = 1;
		else if (mrc != MDB_NOTFOUND)
			return mm_lmdb_fail(mrc, "get");
		return 0;
	}
	put_u16be(k->b + k->len, 0);
	key.mv_size = k->len + 2;
	if ((mrc = mdb_cursor_open(txn, dbi, &cur)))
		return mm_lmdb_fail(mrc, "open cursor");
	for (;; op = MDB_NEXT) {
		const uint8_t *kp;

		mrc = mdb_cursor_get(cur, &key, val, op);
		if (mrc == MDB_NOTFOUND)
			break;
		if (mrc) {
			rc = mm_lmdb_fail(mrc, "cursor");
			goto out;
		}
		kp = key.mv_data;
		if (key.mv_size < k->len || memcmp(kp, k->b, k->len) != 0)
			break;
		if (key.mv_size != k->len + 2) {
			rc = mm_lmdb_corrupt(k, "hashed key of the wrong length");
			goto out;
		}
		if (val->mv_size < 8 + k->idlen) {
			rc = mm_lmdb_corrupt(k, "value too short for a hashed identifier");
			goto out;
		}
		next = get_u16be(kp + k->len) + 1;
		if (memcmp((const uint8_t *)val->mv_data + 8, k->id, k->idlen) == 0) {
			*found = 1;
			break;
		}
	}
	if (!*found) {
		if (next > 0xffff) {
			rc = mm_diag_set(MM_ERANGE,
					 "lmdb: 65536 identifiers of ns '%s' share a hash", k->ns);
			goto out;
		}
		put_u16be(k->b + k->len, next);
	} else {
		put_u16be(k->b + k->len, next - 1);
	}
	k->len += 2;
out:
	mdb_cursor_close(cur);
	return rc;
}

/*
 * Deltas are applied in key order (namespace, then identifier length and
 * bytes, as the keys are laid out): B-tree inserts in key order touch each
 * page once, which made a 100k-key flush about twice as fast as inserting in
 * the runtime's hash-table order. Sorting runs on the apply's
 * pool thread, so it costs the event loop nothing.
 */
int mm_lmdb_cmp_names(const char *ans, const char *bns)
{
	/* A flush's items share their namespace's name: the lengths are only
	 * measured (a strlen per comparison) when the pointers differ. */
	size_t anl = strlen(ans), bnl = strlen(bns);

	if (anl != bnl)
		return anl < bnl ? -1 : 1;
	return memcmp(ans, bns, anl);
}
