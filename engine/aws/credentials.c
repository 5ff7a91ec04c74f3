/*
 * credentials.c: static and container credentials, with their refresh on the
 * loop (see credentials.h for the order they are looked for in).
 *
 * The container endpoint answers with temporary keys that expire (typically
 * after hours). A timer refreshes them five minutes early, so requests in
 * flight are never signed with a key about to expire; a failed refresh keeps
 * the old key (still valid for minutes) and tries again every 10 s.
 */
#include "credentials.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../codec/json.h"
#include "../lib/log.h"
#include "../lib/error.h"
#include "../lib/time.h"
#include "awsjson.h"

#define CONTAINER_HOST "http://169.254.170.2"
#define REFRESH_EARLY_MS 300000 /* refresh five minutes before expiry */
#define RETRY_MS 10000
#define FETCH_TIMEOUT_MS 5000

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Frees a secret after overwriting it, so it does not linger in freed memory. */
static void free_secret(char **p)
{
	if (*p) {
		memset(*p, 0, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

/* Takes the keys out of a container endpoint's answer. */
static int creds_parse(mm_aws_creds_t *c, const uint8_t *p, size_t n)
{
	mm_jtree_t t = {0};
	const mm_jnode_t *ak, *sk, *tok, *exp;
	int64_t exp_ms = 0;
	int rc;

	if ((rc = mm_jtree_parse(&t, (const char *)p, n)))
		goto out;
	ak = mm_jnode_get(t.root, "AccessKeyId");
	sk = mm_jnode_get(t.root, "SecretAccessKey");
	tok = mm_jnode_get(t.root, "Token");
	exp = mm_jnode_get(t.root, "Expiration");
	if (!ak || ak->type != MM_JSON_STRING || !sk || sk->type != MM_JSON_STRING) {
		rc = mm_diag_set(MM_EINVAL, "%s: container credentials lack AccessKeyId or "
					    "SecretAccessKey", c->who);
		goto out;
	}
	if (exp && exp->type == MM_JSON_STRING && mm_time_parse_rfc3339(exp->s, exp->len, &exp_ms))
		exp_ms = 0;
	free_secret(&c->akid);
	free_secret(&c->secret);
	free_secret(&c->token);
	c->akid = strdup(ak->s);
	c->secret = strdup(sk->s);
	c->token = tok && tok->type == MM_JSON_STRING ? strdup(tok->s) : NULL;
	c->expires_ms = exp_ms;
	if (!c->akid || !c->secret)
		rc = mm_diag_set(MM_ENOMEM, "%s: out of memory", c->who);
out:
	mm_jtree_free(&t);
	return rc;
}

/* Reads the container endpoint's settings; 0 = none configured, 1 = set up. */
static int container_setup(mm_aws_creds_t *c)
{
	const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *tok = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	const char *file = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	char buf[4096];
	int rc;

	if (full && *full) {
		c->url = strdup(full);
	} else if (rel && *rel) {
		mm_buf_t u = {0};

		if ((rc = mm_buf_printf(&u, "%s%s%c", CONTAINER_HOST, rel, 0)))
			return rc;
		c->url = (char *)u.p;
	} else {
		return 0;
	}
	if (c->url == NULL)
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", c->who);
	if (file && *file) {
		FILE *f = fopen(file, "rb");
		size_t n;

		if (f == NULL)
			return mm_diag_set(MM_EINVAL, "%s: cannot read %s", c->who,
					   "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			n--;
		buf[n] = '\0';
		tok = buf;
	}
	if (tok && *tok) {
		mm_buf_t h = {0};

		if ((rc = mm_buf_printf(&h, "Authorization: %s%c", tok, 0)))
			return rc;
		c->auth = (char *)h.p;
	}
	return 1;
}

static void on_timer(uv_timer_t *t);

/* Arms the refresh five minutes before expiry (at least a second from now,
 * so credentials that are already short-lived cannot make us spin). */
static void arm(mm_aws_creds_t *c)
{
	int64_t delay;

	if (c->closing || c->url == NULL || c->expires_ms == 0)
		return;
	delay = c->expires_ms - REFRESH_EARLY_MS - now_ms();
	if (delay < 1000)
		delay = 1000;
	uv_timer_start(&c->timer, on_timer, (uint64_t)delay, 0);
}

/* The first fetch's outcome goes to its caller (mm_aws_creds_fetch). */
static void fetch_done(mm_aws_creds_t *c, const mm_http_response_t *res, int rc)
{
	void (*done)(void *, int, const char *) = c->fetched;
	char detail[256];

	c->fetched = NULL;
	if (rc == 0)
		arm(c);
	if (rc && res->status)
		snprintf(detail, sizeof(detail), "%s: container credentials endpoint: %s", c->who,
			 res->error);
	else if (rc)
		snprintf(detail, sizeof(detail), "%s: container credentials endpoint answered %ld",
			 c->who, res->code);
	if (!c->closing)
		done(c->fetched_arg, rc, rc ? detail : "");
}

static void on_response(void *arg, const mm_http_response_t *res)
{
	mm_aws_creds_t *c = arg;
	int ok;

	c->refreshing = 0;
	ok = res->status == 0 && res->code == 200 && creds_parse(c, res->body, res->len) == 0;
	if (c->fetched) {
		fetch_done(c, res, ok ? 0 : MM_EIO);
		return;
	}
	if (ok) {
		mm_log(MM_LOG_INFO, c->who, "refreshed container credentials");
		arm(c);
		return;
	}
	mm_log(MM_LOG_WARN, c->who, "refreshing container credentials failed (%s, HTTP %ld); "
	       "retrying in 10 s", res->status ? res->error : "bad answer", res->code);
	if (!c->closing)
		uv_timer_start(&c->timer, on_timer, RETRY_MS, 0);
}

static void on_timer(uv_timer_t *t)
{
	mm_aws_creds_t *c = t->data;
	const char *hdrs[1] = {c->auth};
	mm_http_request_t req = {.method = "GET", .url = c->url, .headers = hdrs,
				 .nheaders = c->auth ? 1 : 0, .timeout_ms = FETCH_TIMEOUT_MS};

	if (c->refreshing)
		return;
	if (mm_http_request(c->http, &req, on_response, c) == 0)
		c->refreshing = 1;
	else
		uv_timer_start(&c->timer, on_timer, RETRY_MS, 0);
}

int mm_aws_creds_find(mm_aws_creds_t *c, const char *who)
{
	const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
	const char *tok = getenv("AWS_SESSION_TOKEN");
	int rc;

	c->who = who;
	if (ak && *ak && sk && *sk) {
		c->akid = strdup(ak);
		c->secret = strdup(sk);
		c->token = tok && *tok ? strdup(tok) : NULL;
		if (!c->akid || !c->secret)
			return mm_diag_set(MM_ENOMEM, "%s: out of memory", who);
		return 0;
	}
	if ((rc = container_setup(c)) < 0)
		return rc;
	if (rc == 0)
		return mm_diag_set(MM_EINVAL,
				   "%s: no AWS credentials: set AWS_ACCESS_KEY_ID and "
				   "AWS_SECRET_ACCESS_KEY (any values for a local emulator) or run "
				   "where AWS_CONTAINER_CREDENTIALS_FULL_URI/_RELATIVE_URI is set",
				   who);
	return 1;
}

int mm_aws_creds_fetch(mm_aws_creds_t *c, void (*done)(void *arg, int status, const char *detail),
		       void *arg)
{
	const char *hdrs[1] = {c->auth};
	mm_http_request_t req = {.method = "GET", .url = c->url, .headers = hdrs,
				 .nheaders = c->auth ? 1 : 0, .timeout_ms = FETCH_TIMEOUT_MS};
	int rc;

	if (c->url == NULL || c->refreshing)
		return mm_diag_set(MM_EINVAL, "%s: no container credentials to fetch", c->who);
	if ((rc = mm_http_request(c->http, &req, on_response, c)))
		return rc;
	c->refreshing = 1;
	c->fetched = done;
	c->fetched_arg = arg;
	return 0;
}

void mm_aws_creds_start(mm_aws_creds_t *c, uv_loop_t *loop, mm_http_t *http)
{
	c->http = http;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	arm(c);
}

static void on_closed(uv_handle_t *h)
{
	mm_aws_creds_t *c = h->data;

	c->closed(c->closed_arg);
}

void mm_aws_creds_close(mm_aws_creds_t *c, void (*closed)(void *arg), void *arg)
{
	c->closing = 1;
	c->closed = closed;
	c->closed_arg = arg;
	uv_close((uv_handle_t *)&c->timer, on_closed);
}

void mm_aws_creds_free(mm_aws_creds_t *c)
{
	free_secret(&c->akid);
	free_secret(&c->secret);
	free_secret(&c->token);
	free_secret(&c->auth);
	free(c->url);
	c->url = NULL;
}
