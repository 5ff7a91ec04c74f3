/*
 * kafka_mock: a Kafka cluster for tests, in its own process.
 *
 *   kafka_mock [NBROKERS]
 *
 * Starts librdkafka's mock cluster (rdkafka_mock.h) with NBROKERS brokers
 * (default 1) listening on 127.0.0.1, prints its bootstrap list as the first
 * line on stdout and runs until killed. Any client (murmur, kcat) reaches it
 * over TCP like a real cluster, so specs can start one broker process and
 * several workers around it.
 *
 * Control. Each line read from stdin is one command; the helper answers on
 * stdout with "ok N" (N counts commands from 1) or "error N: why", so a spec
 * that writes a command can wait for its answer in the output. At the end of
 * stdin the cluster keeps running.
 *
 *   topic NAME PARTITIONS [REPLICAS]   create a topic
 *   errors API ERR...                  the next requests of API fail with the
 *                                      ERRs in order, on any broker
 *   broker_errors ID API ERR RTT_MS... the same on one broker, with delays
 *   clear API                          forget errors pushed for API
 *   down ID | up ID                    take a broker down / bring it back
 *   rtt ID MS                          delay every response of a broker
 *   coordinator group|transaction KEY ID
 *                                      move a group's (transaction's) coordinator
 *   leader TOPIC PARTITION ID          move a partition's leader
 *
 * API is a Kafka request name (Produce, Fetch, ListOffsets, Metadata,
 * OffsetCommit, OffsetFetch, FindCoordinator, JoinGroup, Heartbeat,
 * LeaveGroup, SyncGroup) or its number; ERR is a librdkafka error name
 * without the RD_KAFKA_RESP_ERR_ prefix (NOT_COORDINATOR, _TRANSPORT for a
 * disconnect, ...) or its number.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_ARGS 64

static const struct {
	const char *name;
	int key;
} apis[] = {
	{"Produce", 0},       {"Fetch", 1},        {"ListOffsets", 2},  {"Metadata", 3},
	{"OffsetCommit", 8},  {"OffsetFetch", 9},  {"FindCoordinator", 10},
	{"JoinGroup", 11},    {"Heartbeat", 12},   {"LeaveGroup", 13},  {"SyncGroup", 14},
	{"ApiVersions", 18},  {"InitProducerId", 22},
};

static int parse_int(const char *s, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(s, &end, 10);
	return errno == 0 && end != s && *end == '\0' ? 0 : -1;
}

static int parse_api(const char *s, int16_t *out)
{
	long v;

	for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++)
		if (strcasecmp(s, apis[i].name) == 0) {
			*out = (int16_t)apis[i].key;
			return 0;
		}
	if (parse_int(s, &v) == 0 && v >= 0 && v < 1000) {
		*out = (int16_t)v;
		return 0;
	}
	return -1;
}

static int parse_err(const char *s, rd_kafka_resp_err_t *out)
{
	const struct rd_kafka_err_desc *descs;
	size_t n;
	long v;

	if (parse_int(s, &v) == 0) {
		*out = (rd_kafka_resp_err_t)v;
		return 0;
	}
	rd_kafka_get_err_descs(&descs, &n);
	for (size_t i = 0; i < n; i++)
		if (descs[i].name != NULL && strcasecmp(descs[i].name, s) == 0) {
			*out = descs[i].code;
			return 0;
		}
	return -1;
}

/* Runs one command; returns NULL or what was wrong with it. */
static const char *run_command(rd_kafka_mock_cluster_t *mc, char **argv, int argc)
{
	rd_kafka_resp_err_t errs[MAX_ARGS];
	rd_kafka_resp_err_t rc = RD_KAFKA_RESP_ERR_NO_ERROR;
	int16_t api;
	long a, b;

	if (argc == 0)
		return "empty command";
	if (strcmp(argv[0], "topic") == 0) {
		if ((argc != 3 && argc != 4) || parse_int(argv[2], &a) || a < 1 ||
		    (argc == 4 && parse_int(argv[3], &b)))
			return "usage: topic NAME PARTITIONS [REPLICAS]";
		rc = rd_kafka_mock_topic_create(mc, argv[1], (int)a, argc == 4 ? (int)b : 1);
	} else if (strcmp(argv[0], "errors") == 0) {
		if (argc < 3 || parse_api(argv[1], &api))
			return "usage: errors API ERR...";
		for (int i = 2; i < argc; i++)
			if (parse_err(argv[i], &errs[i - 2]))
				return "unknown error name";
		rd_kafka_mock_push_request_errors_array(mc, api, (size_t)(argc - 2), errs);
	} else if (strcmp(argv[0], "broker_errors") == 0) {
		if (argc < 5 || (argc - 3) % 2 != 0 || parse_int(argv[1], &a) ||
		    parse_api(argv[2], &api))
			return "usage: broker_errors ID API ERR RTT_MS...";
		/* The mock takes (err, rtt) pairs as varargs only: push them one
		 * pair at a time, which keeps their order on the stack. */
		for (int i = 3; i + 1 < argc; i += 2) {
			rd_kafka_resp_err_t e;

			if (parse_err(argv[i], &e) || parse_int(argv[i + 1], &b))
				return "bad ERR or RTT_MS";
			rc = rd_kafka_mock_broker_push_request_error_rtts(mc, (int32_t)a, api, 1, e,
									  (int)b);
			if (rc)
				break;
		}
	} else if (strcmp(argv[0], "clear") == 0) {
		if (argc != 2 || parse_api(argv[1], &api))
			return "usage: clear API";
		rd_kafka_mock_clear_request_errors(mc, api);
	} else if (strcmp(argv[0], "down") == 0 || strcmp(argv[0], "up") == 0) {
		if (argc != 2 || parse_int(argv[1], &a))
			return "usage: down|up ID";
		rc = argv[0][0] == 'd' ? rd_kafka_mock_broker_set_down(mc, (int32_t)a)
				       : rd_kafka_mock_broker_set_up(mc, (int32_t)a);
	} else if (strcmp(argv[0], "rtt") == 0) {
		if (argc != 3 || parse_int(argv[1], &a) || parse_int(argv[2], &b))
			return "usage: rtt ID MS";
		rc = rd_kafka_mock_broker_set_rtt(mc, (int32_t)a, (int)b);
	} else if (strcmp(argv[0], "coordinator") == 0) {
		if (argc != 4 || parse_int(argv[3], &a))
			return "usage: coordinator group|transaction KEY ID";
		rc = rd_kafka_mock_coordinator_set(mc, argv[1], argv[2], (int32_t)a);
	} else if (strcmp(argv[0], "leader") == 0) {
		if (argc != 4 || parse_int(argv[2], &a) || parse_int(argv[3], &b))
			return "usage: leader TOPIC PARTITION ID";
		rc = rd_kafka_mock_partition_set_leader(mc, argv[1], (int32_t)a, (int32_t)b);
	} else {
		return "unknown command";
	}
	return rc ? rd_kafka_err2str(rc) : NULL;
}

int main(int argc, char **argv)
{
	char errstr[512], line[4096];
	rd_kafka_mock_cluster_t *mc;
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	unsigned long seq = 0;
	long nbrokers = 1;

	if (argc > 2 || (argc == 2 && (parse_int(argv[1], &nbrokers) || nbrokers < 1 ||
				       nbrokers > 16))) {
		fprintf(stderr, "usage: kafka_mock [NBROKERS (1..16)]\n");
		return 2;
	}
	/* The cluster needs a client instance for its bookkeeping; it is never
	 * used to produce. */
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "kafka_mock: %s\n", errstr);
		return 1;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL) {
		fprintf(stderr, "kafka_mock: %s\n", errstr);
		return 1;
	}
	mc = rd_kafka_mock_cluster_new(rk, (int)nbrokers);
	if (mc == NULL) {
		fprintf(stderr, "kafka_mock: cannot create the mock cluster\n");
		rd_kafka_destroy(rk);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
	while (fgets(line, sizeof(line), stdin) != NULL) {
		char *args[MAX_ARGS], *save = NULL, *tok;
		const char *why;
		int n = 0;

		seq++;
		for (tok = strtok_r(line, " \t\r\n", &save); tok != NULL && n < MAX_ARGS;
		     tok = strtok_r(NULL, " \t\r\n", &save))
			args[n++] = tok;
		if (n == 0) {
			seq--;
			continue;
		}
		why = run_command(mc, args, n);
		if (why)
			printf("error %lu: %s\n", seq, why);
		else
			printf("ok %lu\n", seq);
	}
	/* The brokers run on librdkafka's threads: wait here to be killed. */
	for (;;)
		pause();
}
