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

int mm_aws_rpc_sign(mm_sigv4_t *sig, const mm_aws_creds_t *c, const mm_aws_rpc_t *rpc,
		    const void *body, size_t len, mm_buf_t *hdr, const char *ptrs[8])
{
	/* The lines are appended, not formatted: vsnprintf cost about 600
	 * instructions a line, five lines a request. */
	static const char *const names[] = {"Host: ", "Content-Type: ", "X-Amz-Target: ",
					    "X-Amz-Date: ", "Authorization: ", "X-Amz-Security-Token: "};
	static const size_t nl[] = {6, 14, 14, 12, 15, 22};
	const char *v[6] = {rpc->host, rpc->content_type, rpc->target, NULL, NULL, c->token};
	size_t off[8], vl[6] = {strlen(rpc->host), strlen(rpc->content_type), strlen(rpc->target),
				16, 0, c->token ? strlen(c->token) : 0};
	mm_sigv4_params_t p = {.access_key = c->akid, .secret_key = c->secret,
			       .session_token = c->token, .region = rpc->region,
			       .service = rpc->service, .time_s = rpc->time_s, .normalize_path = 1};
	int n = 0, rc;

	if ((rc = mm_sigv4_sign_post(sig, rpc->content_type, rpc->host, rpc->target, body, len, &p)))
		return rc;
	v[3] = sig->amz_date;
	v[4] = (const char *)sig->authorization.p;
	vl[4] = sig->authorization.len;
	hdr->len = 0;
	for (int i = 0; i < 6; i++) {
		if (v[i] == NULL)
			continue;
		off[n++] = hdr->len;
		if ((rc = mm_buf_append(hdr, names[i], nl[i])) ||
		    (rc = mm_buf_append(hdr, v[i], vl[i])) || (rc = mm_buf_put_u8(hdr, 0)))
			return rc;
	}
	for (int i = 0; i < n; i++)
		ptrs[i] = (const char *)hdr->p + off[i];
	return n;
}
