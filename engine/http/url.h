/*
 * url.h: the parts of an http:// or https:// URL the client needs.
 *
 * Pure C, any thread. The parts point into the caller's string (no copies);
 * they stay valid as long as it does.
 */
#ifndef MM_HTTP_URL_H
#define MM_HTTP_URL_H

#include <stddef.h>

typedef struct mm_http_url {
	int tls;               /* 1 for https:// */
	const char *host;      /* without brackets for an IPv6 literal */
	size_t host_len;
	const char *hostport;  /* the Host header's value: host[:port] as written */
	size_t hostport_len;
	int port;              /* the explicit port, or 80 / 443 */
	const char *path;      /* path and query, "/" when the URL has none */
	size_t path_len;
} mm_http_url_t;

/* Splits url ("http[s]://host[:port][/path][?query]", no user info, no
 * fragment). Returns 0 or MM_EINVAL with a diag detail. */
int mm_http_url_parse(const char *url, mm_http_url_t *out);

#endif
