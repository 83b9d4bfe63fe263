/*
 * Single-threaded epoll echo load client for results/echo-vs-raw/run.sh.
 *
 *   client MODE HOST PORT CONNS SIZE WARMUP_S WINDOW_S [SERVER_PID [RATE]]
 *
 * MODE ws:  HTTP upgrade to ws://HOST:PORT/echo, then each connection sends
 *           one masked binary frame of SIZE bytes and waits for the whole
 *           unmasked echo frame (2- or 4-byte header, 8-byte lengths parsed
 *           too) before sending the next: 1 message in flight per connection.
 * MODE raw: each connection sends SIZE bytes and waits until SIZE bytes
 *           came back.
 *
 * RATE (messages per second per connection, default 0): 0 is the closed
 * loop above; otherwise an open loop in the shape of seed 000's load
 * (4,000 connections x 2 msg/s): send slots are spread evenly over time and
 * over the connections in turn (slot k at k / (RATE * CONNS) s goes to
 * connection k mod CONNS), a slot whose connection still waits for its
 * previous echo is skipped (counted: skipped=..), and each round trip is
 * timed from its slot's scheduled time (no coordinated omission).
 *
 * Runs WARMUP_S seconds, then a window of WINDOW_S seconds. At the window's
 * start and end it prints "window start" / "window end" and, given
 * SERVER_PID, reads that process's utime+stime (/proc/PID/stat) and the sum
 * of its threads' run time (/proc/PID/task/x/schedstat, ns). The last line:
 *
 *   result mode=.. size=.. conns=.. secs=.. msgs=.. rate=.. p50_us=.. p99_us=..
 *          cpu_ns=.. ns_per_msg=.. sched_ns=.. sched_ns_per_msg=.. total_msgs=..
 *          client_ns_per_msg=.. other_cpu_pct=..
 *
 * other_cpu_pct: busy time of all CPUs (/proc/stat) minus the server's and
 * the client's own CPU over the window, in % of one CPU: other work on the
 * box (a run with a large value was disturbed).
 *
 * Partial reads and writes are handled; any connection error, early EOF or
 * unexpected frame is fatal (exit 1): a run with a broken connection is not
 * a measurement. Build: gcc -O2 -o client client.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_US 200000 /* 1 us buckets up to 200 ms; beyond: last bucket */

struct conn {
	int fd;
	int busy;             /* a message is in flight */
	size_t send_off;      /* bytes of the current message already written */
	int want_out;         /* EPOLLOUT armed */
	uint64_t sent_at;     /* ns, when the current message was started */
	/* receive side */
	size_t raw_left;      /* raw: bytes of the echo still to come */
	unsigned char hdr[14];
	size_t hdr_have, hdr_need;
	uint64_t payload_left;
	int in_payload;
	uint64_t msg_bytes;   /* ws: payload bytes of the message so far */
};

static int ws_mode;
static size_t size;
static unsigned char *msg;   /* what each connection sends (frame or raw) */
static size_t msg_len;
static int ep;
static uint64_t hist[HIST_US + 1];
static uint64_t done_msgs;
static uint64_t total_msgs; /* since the start, warm-up included */
static double rate;         /* open loop: msg/s per connection (0: closed loop) */
static uint64_t skipped;    /* open loop: slots whose connection was busy */

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void fail(const char *what, int i)
{
	fprintf(stderr, "connection %d: %s\n", i, what);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* utime+stime of PID in ns, and the sum of its threads' schedstat run time. */
static void server_cpu(int pid, uint64_t *stat_ns, uint64_t *sched_ns)
{
	char path[64], buf[1024];
	*stat_ns = *sched_ns = 0;
	if (pid <= 0)
		return;
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		die(path);
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* comm may hold spaces */
	if (!p)
		fail("bad /proc stat", -1);
	unsigned long utime, stime;
	/* after ") ": state(3) ... utime is field 14, stime 15 */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		   &utime, &stime) != 2)
		fail("bad /proc stat", -1);
	*stat_ns = (uint64_t)(utime + stime) * (1000000000ull / sysconf(_SC_CLK_TCK));

	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		die(path);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char tp[320];
		snprintf(tp, sizeof tp, "/proc/%d/task/%s/schedstat", pid, e->d_name);
		FILE *t = fopen(tp, "r");
		if (!t)
			continue; /* thread just exited */
		unsigned long long run = 0;
		if (fscanf(t, "%llu", &run) == 1)
			*sched_ns += run;
		fclose(t);
	}
	closedir(d);
}

/* Busy time of all CPUs (/proc/stat) and this process's own CPU, in ns:
 * what neither the server nor the client used is other work on the box. */
static void box_cpu(uint64_t *busy_ns, uint64_t *self_ns)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
			 &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
		fail("bad /proc/stat", -1);
	fclose(f);
	/* user nice system idle iowait irq softirq steal */
	*busy_ns = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * (1000000000ull / sysconf(_SC_CLK_TCK));
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	*self_ns = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
		   (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static void set_events(struct conn *c, int out)
{
	if (c->want_out == out)
		return;
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c };
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die("epoll_ctl");
	c->want_out = out;
}

/* Writes what is left of the current message; arms EPOLLOUT if it did not all go. */
static void flush_send(struct conn *c, int i)
{
	while (c->send_off < msg_len) {
		ssize_t w = write(c->fd, msg + c->send_off, msg_len - c->send_off);
		if (w < 0) {
			if (errno == EAGAIN)
				break;
			if (errno == EINTR)
				continue;
			fail(strerror(errno), i);
		}
		c->send_off += w;
	}
	set_events(c, c->send_off < msg_len);
}

static void start_message(struct conn *c, int i, uint64_t t)
{
	c->send_off = 0;
	c->busy = 1;
	c->sent_at = t;
	c->raw_left = size;
	c->msg_bytes = 0;
	flush_send(c, i);
}

static void message_done(struct conn *c, int i)
{
	uint64_t t = now_ns();
	uint64_t us = (t - c->sent_at) / 1000;
	hist[us < HIST_US ? us : HIST_US]++;
	done_msgs++;
	total_msgs++;
	c->busy = 0;
	if (rate == 0)
		start_message(c, i, t);
}

/* Feeds received bytes of a WebSocket connection through the frame parser. */
static void ws_input(struct conn *c, int i, const unsigned char *p, size_t n)
{
	while (n > 0) {
		if (!c->in_payload) {
			size_t take = c->hdr_need - c->hdr_have;
			if (take > n)
				take = n;
			memcpy(c->hdr + c->hdr_have, p, take);
			c->hdr_have += take;
			p += take;
			n -= take;
			if (c->hdr_have < c->hdr_need)
				continue;
			if (c->hdr_need == 2) {
				unsigned len7 = c->hdr[1] & 0x7f;
				if (c->hdr[1] & 0x80)
					fail("masked frame from the server", i);
				c->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
				if (c->hdr_have < c->hdr_need)
					continue;
			}
			unsigned len7 = c->hdr[1] & 0x7f;
			uint64_t len = len7;
			if (len7 == 126)
				len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
			else if (len7 == 127) {
				len = 0;
				for (int k = 2; k < 10; k++)
					len = len << 8 | c->hdr[k];
			}
			c->payload_left = len;
			c->in_payload = 1;
			if ((c->hdr[0] & 0x0f) <= 0x2)
				c->msg_bytes += len; /* data or continuation */
		}
		size_t take = c->payload_left < n ? (size_t)c->payload_left : n;
		c->payload_left -= take;
		p += take;
		n -= take;
		if (c->payload_left > 0)
			continue;
		/* a whole frame */
		unsigned op = c->hdr[0] & 0x0f, fin = c->hdr[0] & 0x80;
		c->in_payload = 0;
		c->hdr_have = 0;
		c->hdr_need = 2;
		if (op == 0x9 || op == 0xA)
			continue; /* ping/pong: not expected in a 15 s run; ignored */
		if (op != 0x2 && op != 0x0)
			fail(op == 0x8 ? "close frame from the server" : "unexpected frame", i);
		if (fin) {
			if (c->msg_bytes != size)
				fail("echo of the wrong size", i);
			if (n > 0)
				fail("data beyond the echo (more than 1 message in flight?)", i);
			message_done(c, i);
		}
	}
}

static int connect_one(const struct sockaddr_in *sa, const char *host, int port, int i)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0)
		die("connect");
	if (ws_mode) {
		char req[512];
		int n = snprintf(req, sizeof req,
				 "GET /echo HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
				 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
				 "Sec-WebSocket-Version: 13\r\n\r\n",
				 host, port);
		if (write(fd, req, n) != n)
			die("write upgrade");
		char resp[4096];
		size_t have = 0;
		for (;;) {
			ssize_t r = read(fd, resp + have, sizeof resp - 1 - have);
			if (r <= 0)
				fail("upgrade: no response", i);
			have += r;
			resp[have] = 0;
			char *end = strstr(resp, "\r\n\r\n");
			if (end) {
				if (strncmp(resp, "HTTP/1.1 101", 12) != 0)
					fail("upgrade refused", i);
				if ((size_t)(end + 4 - resp) != have)
					fail("data after the 101 response", i);
				break;
			}
			if (have == sizeof resp - 1)
				fail("upgrade response too long", i);
		}
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		die("fcntl");
	return fd;
}

static uint64_t percentile(uint64_t total, double q)
{
	uint64_t want = (uint64_t)(q * total), seen = 0;
	for (int us = 0; us <= HIST_US; us++) {
		seen += hist[us];
		if (seen > want)
			return us;
	}
	return HIST_US;
}

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: %s ws|raw HOST PORT CONNS SIZE WARMUP_S WINDOW_S [SERVER_PID [RATE]]\n", argv[0]);
		return 2;
	}
	ws_mode = strcmp(argv[1], "ws") == 0;
	if (!ws_mode && strcmp(argv[1], "raw") != 0) {
		fprintf(stderr, "mode must be ws or raw\n");
		return 2;
	}
	const char *host = argv[2];
	int port = atoi(argv[3]);
	int nconns = atoi(argv[4]);
	size = strtoul(argv[5], NULL, 10);
	double warmup = atof(argv[6]), window = atof(argv[7]);
	int pid = argc > 8 ? atoi(argv[8]) : 0;
	rate = argc > 9 ? atof(argv[9]) : 0;
	if (nconns <= 0 || size == 0 || size > 65535) {
		fprintf(stderr, "need CONNS > 0 and 0 < SIZE <= 65535\n");
		return 2;
	}

	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);

	/* The message: a masked binary frame (ws) or SIZE plain bytes (raw). */
	msg = malloc(size + 8);
	size_t h = 0;
	if (ws_mode) {
		static const unsigned char key[4] = { 0x12, 0x34, 0x56, 0x78 };
		msg[h++] = 0x82; /* FIN, binary */
		if (size < 126) {
			msg[h++] = 0x80 | size;
		} else {
			msg[h++] = 0x80 | 126;
			msg[h++] = size >> 8;
			msg[h++] = size & 0xff;
		}
		memcpy(msg + h, key, 4);
		h += 4;
		for (size_t k = 0; k < size; k++)
			msg[h + k] = (unsigned char)('a' + k % 26) ^ key[k % 4];
	} else {
		for (size_t k = 0; k < size; k++)
			msg[k] = (unsigned char)('a' + k % 26);
	}
	msg_len = h + size;

	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "HOST must be an IPv4 address\n");
		return 2;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	struct conn *conns = calloc(nconns, sizeof *conns);
	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		c->fd = connect_one(&sa, host, port, i);
		c->hdr_need = 2;
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
			die("epoll_ctl");
	}
	printf("connected %d\n", nconns);
	fflush(stdout);

	uint64_t t0 = now_ns();
	/* open loop: slot k at t0 + k * slot_ns, to connection k mod nconns */
	uint64_t slot_ns = rate > 0 ? (uint64_t)(1e9 / (rate * nconns)) : 0, slot = 0;
	if (rate > 0 && slot_ns == 0)
		slot_ns = 1;
	if (rate == 0)
		for (int i = 0; i < nconns; i++)
			start_message(&conns[i], i, t0);

	uint64_t warm_end = t0 + (uint64_t)(warmup * 1e9);
	uint64_t win_end = warm_end + (uint64_t)(window * 1e9);
	uint64_t win_start_t = 0, cpu0 = 0, sched0 = 0, box0 = 0, self0 = 0;
	int in_window = 0;
	static unsigned char scratch[65536];
	struct epoll_event evs[512];
	for (;;) {
		struct timespec wait = { .tv_nsec = 50000000 };
		if (rate > 0) {
			uint64_t next = t0 + slot * slot_ns, t = now_ns();
			wait.tv_nsec = next > t ? (long)(next - t < 50000000 ? next - t : 50000000) : 0;
		}
		int n = epoll_pwait2(ep, evs, 512, &wait, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int k = 0; k < n; k++) {
			struct conn *c = evs[k].data.ptr;
			int i = (int)(c - conns);
			if (evs[k].events & EPOLLOUT)
				flush_send(c, i);
			if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				continue;
			ssize_t r = read(c->fd, scratch, sizeof scratch);
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR)
					continue;
				fail(strerror(errno), i);
			}
			if (r == 0)
				fail("closed by the server", i);
			if (ws_mode) {
				ws_input(c, i, scratch, r);
			} else {
				if ((size_t)r > c->raw_left)
					fail("more bytes than sent", i);
				c->raw_left -= r;
				if (c->raw_left == 0)
					message_done(c, i);
			}
		}
		uint64_t t = now_ns();
		for (; rate > 0 && t0 + slot * slot_ns <= t; slot++) {
			int i = (int)(slot % nconns);
			if (conns[i].busy)
				skipped++;
			else
				start_message(&conns[i], i, t0 + slot * slot_ns);
		}
		if (!in_window && t >= warm_end) {
			server_cpu(pid, &cpu0, &sched0);
			box_cpu(&box0, &self0);
			win_start_t = now_ns();
			memset(hist, 0, sizeof hist);
			done_msgs = 0;
			skipped = 0;
			in_window = 1;
			printf("window start\n");
			fflush(stdout);
		} else if (in_window && t >= win_end) {
			uint64_t cpu1, sched1, box1, self1;
			uint64_t msgs = done_msgs;
			uint64_t secs_ns = now_ns() - win_start_t;
			server_cpu(pid, &cpu1, &sched1);
			box_cpu(&box1, &self1);
			/* CPU used by neither the server nor this client, in % of one CPU */
			double other = ((double)(box1 - box0) - (double)(cpu1 - cpu0) - (double)(self1 - self0)) /
				       secs_ns * 100;
			printf("window end\n");
			double secs = secs_ns / 1e9;
			printf("result mode=%s size=%zu conns=%d secs=%.3f msgs=%llu rate=%.0f "
			       "p50_us=%llu p99_us=%llu cpu_ns=%llu ns_per_msg=%.0f sched_ns=%llu "
			       "sched_ns_per_msg=%.0f total_msgs=%llu client_ns_per_msg=%.0f other_cpu_pct=%.0f "
			       "p90_us=%llu skipped=%llu\n",
			       argv[1], size, nconns, secs, (unsigned long long)msgs, msgs / secs,
			       (unsigned long long)percentile(msgs, 0.50),
			       (unsigned long long)percentile(msgs, 0.99),
			       (unsigned long long)(cpu1 - cpu0), msgs ? (double)(cpu1 - cpu0) / msgs : 0.0,
			       (unsigned long long)(sched1 - sched0),
			       msgs ? (double)(sched1 - sched0) / msgs : 0.0,
			       (unsigned long long)total_msgs,
			       msgs ? (double)(self1 - self0) / msgs : 0.0, pid > 0 ? other : 0.0,
			       (unsigned long long)percentile(msgs, 0.90), (unsigned long long)skipped);
			fflush(stdout);
			return 0;
		}
	}
}
