/*
 * conn.h: what server.c shares with the protocol files http1.c and h2.c.
 * Not a public interface.
 *
 * A connection owns its socket, its timer and the protocol state; an
 * exchange (one request and its response) points back to its connection
 * while both live. When a connection closes with exchanges still in a
 * handler, they are orphaned (conn = NULL) and freed when they finish.
 */
#ifndef MM_NET_CONN_H
#define MM_NET_CONN_H

#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "../lib/arena.h"
#include "server.h"

typedef struct mm_conn mm_conn_t;

struct mm_net_ex {
	mm_net_req_t req;
	mm_net_res_t res;
	mm_arena_t arena;       /* the request's strings and headers */
	mm_conn_t *conn;        /* NULL once orphaned */
	int32_t stream_id;      /* HTTP/2 */
	size_t sent;            /* HTTP/2: body bytes handed to nghttp2 */
	int head;               /* HEAD: send no body */
	int in_handler;         /* dispatched and not finished yet */
	int refused;            /* HTTP/2: over a limit; reset, never dispatched */
	int received;           /* HTTP/2: the client ended the stream */
	uint64_t deadline;      /* HTTP/2: loop time by which it must be received */
	mm_buf_t h2_hdrs;       /* HTTP/2: "name\0value\0" as received */
	size_t h2_header_bytes;
	mm_net_ex_t *next;      /* the connection's list of exchanges in flight */
};

typedef struct mm_route {
	char *path;
	unsigned flags;
	mm_route_fn fn;
	void *arg;
	struct mm_route *next;
} mm_route_t;

struct mm_server {
	uv_tcp_t tcp;
	uv_loop_t *loop;
	mm_server_options_t opt;  /* strings below are owned copies */
	char *token;
	char **cors;
	mm_route_t *routes;
	char *prefix;
	mm_net_handler_fn handler;
	void *handler_arg;
	mm_conn_t *conns;
	mm_server_stats_t stats;
	int closing;
	size_t pending_closes;
	void (*done)(void *);
	void *done_arg;
};

enum { CONN_UNDECIDED, CONN_HTTP1, CONN_HTTP2 };

struct mm_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	mm_server_t *srv;
	mm_conn_t *prev, *next;
	int proto;
	int closing;
	int counted;            /* closed by mm_server_close, which waits for it */
	int handles;            /* open handles; freed at 0 */
	int reading;            /* uv_read_start is in effect */
	mm_buf_t in;            /* received bytes not yet given to the parser */
	size_t in_off;
	mm_net_ex_t *exs;       /* exchanges in flight */
	/* HTTP/1.1 */
	http_parser parser;
	mm_net_ex_t *cur;       /* the request being parsed */
	mm_buf_t h1_url, h1_hdrs; /* raw URL; "name\0value\0" pairs */
	int h1_last_was_value;
	size_t h1_header_bytes;
	int h1_waiting;         /* a response is pending: parsing paused */
	int h1_parsing;         /* inside mm_http1_input (no re-entry) */
	int h1_close_after;     /* close once the pending response is written */
	int h1_error;           /* the status of a request refused while parsing */
	/* HTTP/2 */
	nghttp2_session *h2;
};

/* server.c: for the protocol files. */
void mm_conn_close(mm_conn_t *c);
int mm_conn_write(mm_conn_t *c, const void *p, size_t n);
void mm_conn_timer(mm_conn_t *c, uint64_t ms);  /* 0 stops it */
void mm_conn_read(mm_conn_t *c, int on);
mm_net_ex_t *mm_net_ex_new(mm_conn_t *c);
/* Moves the body collected in ex->res.body into the arena as ex->req.body.
 * Returns 0 or MM_ENOMEM. */
int mm_net_ex_take_body(mm_net_ex_t *ex);
void mm_net_ex_free(mm_net_ex_t *ex);
/* Routes, checks the token and CORS, answers or hands to the handler. */
void mm_server_dispatch(mm_server_t *srv, mm_net_ex_t *ex);

/* http1.c */
void mm_http1_init(mm_conn_t *c);
void mm_http1_input(mm_conn_t *c);   /* parses c->in from in_off */
void mm_http1_respond(mm_conn_t *c, mm_net_ex_t *ex);
void mm_http1_free(mm_conn_t *c);

/* h2.c */
int mm_h2_init(mm_conn_t *c);
void mm_h2_input(mm_conn_t *c);
void mm_h2_respond(mm_conn_t *c, mm_net_ex_t *ex);
void mm_h2_free(mm_conn_t *c);
/* The connection's timer fired: resets the streams that missed their
 * deadline and returns 1 if the connection lives on, 0 if it is to close. */
int mm_h2_timeout(mm_conn_t *c);

#endif
