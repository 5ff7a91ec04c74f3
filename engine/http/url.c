/*
 * url.c: splits an http:// or https:// URL (see url.h). Only what a client
 * needs: the scheme, the host (a name, an IPv4 literal or a bracketed IPv6
 * literal), the port and the request target. User info and fragments are
 * refused rather than half-understood, and so is a URL with a space or a
 * control character: the target goes into the request line as it is, where
 * a CR or LF would let a URL write headers of its own.
 */
#include "url.h"

#include <string.h>
#include <strings.h>

#include "../lib/error.h"

int mm_http_url_parse(const char *url, mm_http_url_t *out)
{
	const char *p, *hp, *end;
	long port = 0;

	if (strncasecmp(url, "http://", 7) == 0) {
		out->tls = 0;
		p = url + 7;
	} else if (strncasecmp(url, "https://", 8) == 0) {
		out->tls = 1;
		p = url + 8;
	} else {
		return mm_diag_set(MM_EINVAL, "http: '%s' is not an http:// or https:// URL", url);
	}
	for (end = p; *end; end++)
		if ((unsigned char)*end <= ' ' || *end == 0x7f)
			return mm_diag_set(MM_EINVAL, "http: a URL may not hold spaces or control "
					   "characters (percent-encode them)");
	end = p + strcspn(p, "/?#");
	if (*end == '#' || memchr(p, '@', (size_t)(end - p)) != NULL || strchr(end, '#'))
		return mm_diag_set(MM_EINVAL, "http: '%s': user info and fragments are not supported",
				   url);
	out->hostport = p;
	out->hostport_len = (size_t)(end - p);
	if (*p == '[') {
		hp = memchr(p, ']', (size_t)(end - p));
		if (hp == NULL)
			goto bad;
		out->host = p + 1;
		out->host_len = (size_t)(hp - p - 1);
		hp++;
	} else {
		hp = memchr(p, ':', (size_t)(end - p));
		if (hp == NULL)
			hp = end;
		out->host = p;
		out->host_len = (size_t)(hp - p);
	}
	if (out->host_len == 0)
		goto bad;
	if (hp < end) {
		if (*hp != ':' || hp + 1 == end)
			goto bad;
		for (hp++; hp < end; hp++) {
			if (*hp < '0' || *hp > '9' || (port = port * 10 + (*hp - '0')) > 65535)
				goto bad;
		}
		if (port == 0)
			goto bad;
	}
	out->port = port ? (int)port : out->tls ? 443 : 80;
	if (*end == '\0') {
		out->path = "/";
		out->path_len = 1;
	} else {
		out->path = end;
		out->path_len = strlen(end);
	}
	return 0;
bad:
	return mm_diag_set(MM_EINVAL, "http: '%s': bad host or port", url);
}
