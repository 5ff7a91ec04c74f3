/* awsrpc.c: endpoint, settings and signing shared by the AWS JSON clients
 * (awsrpc.h). */
#include "awsrpc.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

const char *mm_aws_env_or(const char *v, const char *a, const char *b)
{
	const char *e;

	if (v && *v)
		return v;
	if (a && (e = getenv(a)) && *e)
		return e;
	if (b && (e = getenv(b)) && *e)
		return e;
	return NULL;
}

int mm_aws_endpoint(const char *who, const char *ep, char **url, char **host)
{
	const char *p = strstr(ep, "://"), *h, *end;
	mm_buf_t u = {0};

	if (p == NULL || !((p - ep == 4 && strncmp(ep, "http", 4) == 0) ||
			   (p - ep == 5 && strncmp(ep, "https", 5) == 0)))
		return mm_diag_set(MM_EINVAL, "%s: endpoint '%s' must start with http:// or https://",
				   who, ep);
	h = p + 3;
	end = h + strcspn(h, "/?#");
	if (end == h || (*end && strcmp(end, "/") != 0))
		return mm_diag_set(MM_EINVAL, "%s: endpoint '%s' must be scheme://host[:port] "
				   "without a path", who, ep);
	if (mm_buf_printf(&u, "%.*s/%c", (int)(end - ep), ep, 0) ||
	    (*host = strndup(h, (size_t)(end - h))) == NULL) {
		mm_buf_free(&u);
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", who);
	}
	*url = (char *)u.p;
	return 0;
}

/* Writes "name" "value" NUL at *at and moves it past them. */
static inline void put_line(uint8_t **at, const char *name, size_t nl, const char *v, size_t vl)
{
	memcpy(*at, name, nl);
	memcpy(*at + nl, v, vl);
	(*at)[nl + vl] = '\0';
	*at += nl + vl + 1;
}

int mm_aws_rpc_sign(mm_sigv4_t *sig, const mm_aws_creds_t *c, const mm_aws_rpc_t *rpc,
		    const void *body, size_t len, mm_buf_t *hdr, const char *ptrs[8])
{
	size_t hl = strlen(rpc->host), cl = strlen(rpc->content_type), tl = strlen(rpc->target),
	       kl = c->token ? strlen(c->token) : 0, al;
	mm_sigv4_params_t p = {.access_key = c->akid, .secret_key = c->secret,
			       .session_token = c->token, .region = rpc->region,
			       .service = rpc->service, .time_s = rpc->time_s, .normalize_path = 1};
	uint8_t *at;
	int n = 5, rc;

	if ((rc = mm_sigv4_sign_post(sig, rpc->content_type, rpc->host, rpc->target, body, len, &p)))
		return rc;
	al = sig->authorization.len;
	/* One reservation and the lines written in a row, with the names' lengths
	 * known here: formatting cost about 600 instructions a line, and a loop
	 * of appends over a table of names 400 a request. */
	hdr->len = 0;
	if ((rc = mm_buf_reserve(hdr, 6 + hl + 14 + cl + 14 + tl + 12 + 16 + 15 + al + 22 + kl + 6)))
		return rc;
	at = hdr->p;
	ptrs[0] = (const char *)at;
	put_line(&at, "Host: ", 6, rpc->host, hl);
	ptrs[1] = (const char *)at;
	put_line(&at, "Content-Type: ", 14, rpc->content_type, cl);
	ptrs[2] = (const char *)at;
	put_line(&at, "X-Amz-Target: ", 14, rpc->target, tl);
	ptrs[3] = (const char *)at;
	put_line(&at, "X-Amz-Date: ", 12, sig->amz_date, 16);
	ptrs[4] = (const char *)at;
	put_line(&at, "Authorization: ", 15, (const char *)sig->authorization.p, al);
	if (c->token) {
		ptrs[n++] = (const char *)at;
		put_line(&at, "X-Amz-Security-Token: ", 22, c->token, kl);
	}
	hdr->len = (size_t)(at - hdr->p);
	return n;
}
