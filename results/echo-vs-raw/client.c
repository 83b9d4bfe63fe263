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
 * Alternating mode (several servers in one run, interleaved in short slices
 * so the box's drift falls on all of them alike):
 *
 *   client alt HOST CONNS SIZE SLICE_S CYCLES RATE NAME=ws|raw:PORT:PID ...
 *
 * connects CONNS connections to every server, then runs CYCLES cycles (plus
 * one unmeasured warm-up cycle). A cycle loads each server once, in a new
 * random order: its connections run the closed or open loop above for
 * SETTLE_S (0.25 s) unmeasured, then SLICE_S measured; then no new message
 * starts and the slice ends when every echo is back. Only the loaded
 * server works during its slice, the others are idle. CPU is each server's
 * threads' schedstat run time (ns). Per server, pooled over the cycles, one
 * line:
 *
 *   alt name=.. mode=.. msgs=.. rate=.. ns_per_msg=.. p50_us=.. p90_us=..
 *       p99_us=.. client_ns_per_msg=.. skipped=..
 *
 * and for every pair of servers A (listed later) and B, the cycle-by-cycle
 * ratio of their CPU per message:
 *
 *   ratio A/B pooled=.. median=.. ci95=LO-HI min=.. max=.. cycles=..
 *
 * (ci95: the order statistics around the median that cover it with 95 %
 * confidence, distribution-free), and over the whole run other_cpu_pct
 * (as above, the host's steal included) and steal_pct (time the host took
 * from this VM's CPUs), in % of one CPU.
 *
 * CONNS may be NxD: each connection then sends D messages back to back (one
 * write) and starts its next batch once all D echoes are back (the closed
 * loop; the open loop's slots start batches). CPU and counts are per
 * message, round trips per batch.
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
#include <math.h>
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
#define MAX_TARGETS 4
#define MAX_CYCLES 1000
#define SETTLE_S 0.25

struct conn {
	int fd;
	int t;                /* its server (index into targets) */
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
	int echoes;           /* ws: echoes of the current batch received */
};

/* One server under load. */
struct target {
	const char *name;
	int ws;              /* WebSocket (1) or raw TCP (0) */
	int port, pid;
	unsigned char *msg;  /* what each connection sends (frame or raw) */
	size_t msg_len;
	int first;           /* its first connection */
	uint64_t hist[HIST_US + 1];
	uint64_t done_msgs;  /* echoes counted (the measured window's, once it opened) */
	uint64_t skipped;    /* open loop: slots whose connection was busy */
	uint64_t in_flight;  /* messages sent and not yet echoed */
	/* alternating mode: per cycle, CPU (schedstat ns) and echoes measured */
	uint64_t cyc_cpu[MAX_CYCLES], cyc_msgs[MAX_CYCLES];
	uint64_t client_ns;
};

static struct target targets[MAX_TARGETS];
static int ntargets;
static struct conn *conns;
static int nconns; /* per target */
static size_t size;
static int ep;
static int active = -1;     /* the target whose loop runs (-1: none, draining) */
static uint64_t total_msgs; /* since the start, warm-up included */
static double rate;         /* open loop: msg/s per connection (0: closed loop) */
static int depth = 1;       /* messages per batch (CONNS given as NxD) */

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

static uint64_t server_sched_ns(int pid)
{
	uint64_t stat, sched;
	server_cpu(pid, &stat, &sched);
	return sched;
}

/* Busy time of all CPUs (/proc/stat) and this process's own CPU, in ns:
 * what neither the server nor the client used is other work on the box.
 * STEAL_NS, if given: the part of the busy time the host took from this
 * VM's CPUs. */
static void box_cpu(uint64_t *busy_ns, uint64_t *self_ns, uint64_t *steal_ns)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
			 &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
		fail("bad /proc/stat", -1);
	fclose(f);
	/* user nice system idle iowait irq softirq steal */
	*busy_ns = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * (1000000000ull / sysconf(_SC_CLK_TCK));
	if (steal_ns)
		*steal_ns = v[7] * (1000000000ull / sysconf(_SC_CLK_TCK));
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
	const struct target *tg = &targets[c->t];
	while (c->send_off < tg->msg_len) {
		ssize_t w = write(c->fd, tg->msg + c->send_off, tg->msg_len - c->send_off);
		if (w < 0) {
			if (errno == EAGAIN)
				break;
			if (errno == EINTR)
				continue;
			fail(strerror(errno), i);
		}
		c->send_off += w;
	}
	set_events(c, c->send_off < tg->msg_len);
}

static void start_message(struct conn *c, int i, uint64_t t)
{
	c->send_off = 0;
	c->busy = 1;
	c->sent_at = t;
	c->raw_left = size * depth;
	c->msg_bytes = 0;
	c->echoes = 0;
	targets[c->t].in_flight++;
	flush_send(c, i);
}

static void message_done(struct conn *c, int i)
{
	struct target *tg = &targets[c->t];
	uint64_t t = now_ns();
	uint64_t us = (t - c->sent_at) / 1000;
	tg->hist[us < HIST_US ? us : HIST_US]++;
	tg->done_msgs += depth;
	tg->in_flight--;
	total_msgs += depth;
	c->busy = 0;
	if (rate == 0 && active == c->t)
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
			c->msg_bytes = 0;
			if (++c->echoes < depth)
				continue;
			if (n > 0)
				fail("data beyond the echo (more than 1 message in flight?)", i);
			message_done(c, i);
		}
	}
}

static int connect_one(const struct sockaddr_in *sa, const char *host, int ws, int i)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0)
		die("connect");
	if (ws) {
		char req[512];
		int n = snprintf(req, sizeof req,
				 "GET /echo HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
				 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
				 "Sec-WebSocket-Version: 13\r\n\r\n",
				 host, ntohs(sa->sin_port));
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

/* The Q quantile of a histogram's round trips (there is one per batch). */
static uint64_t percentile(const uint64_t *hist, double q)
{
	uint64_t total = 0, seen = 0;
	for (int us = 0; us <= HIST_US; us++)
		total += hist[us];
	uint64_t want = (uint64_t)(q * total);
	for (int us = 0; us <= HIST_US; us++) {
		seen += hist[us];
		if (seen > want)
			return us;
	}
	return HIST_US;
}

/* The message of a target: a masked binary frame (ws) or SIZE plain bytes (raw). */
static void make_message(struct target *tg)
{
	tg->msg = malloc((size + 8) * depth);
	size_t h = 0;
	if (tg->ws) {
		static const unsigned char key[4] = { 0x12, 0x34, 0x56, 0x78 };
		tg->msg[h++] = 0x82; /* FIN, binary */
		if (size < 126) {
			tg->msg[h++] = 0x80 | size;
		} else {
			tg->msg[h++] = 0x80 | 126;
			tg->msg[h++] = size >> 8;
			tg->msg[h++] = size & 0xff;
		}
		memcpy(tg->msg + h, key, 4);
		h += 4;
		for (size_t k = 0; k < size; k++)
			tg->msg[h + k] = (unsigned char)('a' + k % 26) ^ key[k % 4];
	} else {
		for (size_t k = 0; k < size; k++)
			tg->msg[k] = (unsigned char)('a' + k % 26);
	}
	tg->msg_len = h + size;
	for (int k = 1; k < depth; k++)
		memcpy(tg->msg + k * (h + size), tg->msg, h + size);
	tg->msg_len *= depth;
}

/* Connects every target's connections (targets[].first set here). */
static void connect_all(const char *host)
{
	conns = calloc((size_t)nconns * ntargets, sizeof *conns);
	for (int t = 0; t < ntargets; t++) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(targets[t].port) };
		if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
			fprintf(stderr, "HOST must be an IPv4 address\n");
			exit(2);
		}
		targets[t].first = t * nconns;
		for (int i = t * nconns; i < (t + 1) * nconns; i++) {
			struct conn *c = &conns[i];
			c->fd = connect_one(&sa, host, targets[t].ws, i);
			c->t = t;
			c->hdr_need = 2;
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
			if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
				die("epoll_ctl");
		}
	}
}

/* Open loop state of the active target: slot k at slot_t0 + k * slot_ns. */
static uint64_t slot_t0, slot_ns, slot;

/* Makes T the loaded target (-1: none) from time T0: starts its closed loop
 * or its open loop's schedule. */
static void activate(int t, uint64_t t0)
{
	active = t;
	if (t < 0)
		return;
	slot_t0 = t0;
	slot = 0;
	slot_ns = rate > 0 ? (uint64_t)(1e9 / (rate * nconns)) : 0;
	if (rate > 0 && slot_ns == 0)
		slot_ns = 1;
	if (rate == 0)
		for (int i = targets[t].first; i < targets[t].first + nconns; i++)
			if (!conns[i].busy)
				start_message(&conns[i], i, t0);
}

/* One epoll wait (at most 50 ms, or until the next open-loop slot) and its
 * events, then the open loop's due slots. */
static void poll_once(void)
{
	static unsigned char scratch[65536];
	struct epoll_event evs[512];
	struct timespec wait = { .tv_nsec = 50000000 };
	if (rate > 0 && active >= 0) {
		uint64_t next = slot_t0 + slot * slot_ns, t = now_ns();
		wait.tv_nsec = next > t ? (long)(next - t < 50000000 ? next - t : 50000000) : 0;
	}
	int n = epoll_pwait2(ep, evs, 512, &wait, NULL);
	if (n < 0) {
		if (errno == EINTR)
			return;
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
		if (targets[c->t].ws) {
			ws_input(c, i, scratch, r);
		} else {
			if ((size_t)r > c->raw_left)
				fail("more bytes than sent", i);
			c->raw_left -= r;
			if (c->raw_left == 0)
				message_done(c, i);
		}
	}
	if (rate > 0 && active >= 0) {
		struct target *tg = &targets[active];
		uint64_t t = now_ns();
		for (; slot_t0 + slot * slot_ns <= t; slot++) {
			int i = tg->first + (int)(slot % nconns);
			if (conns[i].busy)
				tg->skipped++;
			else
				start_message(&conns[i], i, slot_t0 + slot * slot_ns);
		}
	}
}

/* Forgets the target's echoes so far: its measured window opens. */
static void open_window(struct target *tg)
{
	memset(tg->hist, 0, sizeof tg->hist);
	tg->done_msgs = 0;
	tg->skipped = 0;
}

/* The original single-server run: warm-up, one window, one result line. */
static int run_single(char **argv, double warmup, double window)
{
	struct target *tg = &targets[0];
	uint64_t t0 = now_ns();
	activate(0, t0);
	uint64_t warm_end = t0 + (uint64_t)(warmup * 1e9);
	uint64_t win_end = warm_end + (uint64_t)(window * 1e9);
	uint64_t win_start_t = 0, cpu0 = 0, sched0 = 0, box0 = 0, self0 = 0;
	int in_window = 0;
	for (;;) {
		poll_once();
		uint64_t t = now_ns();
		if (!in_window && t >= warm_end) {
			server_cpu(tg->pid, &cpu0, &sched0);
			box_cpu(&box0, &self0, NULL);
			win_start_t = now_ns();
			open_window(tg);
			in_window = 1;
			printf("window start\n");
			fflush(stdout);
		} else if (in_window && t >= win_end) {
			uint64_t cpu1, sched1, box1, self1;
			uint64_t msgs = tg->done_msgs;
			uint64_t secs_ns = now_ns() - win_start_t;
			server_cpu(tg->pid, &cpu1, &sched1);
			box_cpu(&box1, &self1, NULL);
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
			       (unsigned long long)percentile(tg->hist, 0.50),
			       (unsigned long long)percentile(tg->hist, 0.99),
			       (unsigned long long)(cpu1 - cpu0), msgs ? (double)(cpu1 - cpu0) / msgs : 0.0,
			       (unsigned long long)(sched1 - sched0),
			       msgs ? (double)(sched1 - sched0) / msgs : 0.0,
			       (unsigned long long)total_msgs,
			       msgs ? (double)(self1 - self0) / msgs : 0.0, tg->pid > 0 ? other : 0.0,
			       (unsigned long long)percentile(tg->hist, 0.90),
			       (unsigned long long)tg->skipped);
			fflush(stdout);
			return 0;
		}
	}
}

/* Runs the loop until time END. */
static void run_until(uint64_t end)
{
	while (now_ns() < end)
		poll_once();
}

/* Stops the active target's loop and waits (at most 5 s) for its echoes. */
static void drain(void)
{
	int t = active;
	activate(-1, 0);
	uint64_t give_up = now_ns() + 5000000000ull;
	while (targets[t].in_flight > 0) {
		if (now_ns() > give_up) {
			fprintf(stderr, "%s: %llu echoes still missing 5 s after the slice\n", targets[t].name,
				(unsigned long long)targets[t].in_flight);
			exit(1);
		}
		poll_once();
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Slices: every target once per cycle in a new random order. */
static int run_alternating(double slice, int cycles)
{
	uint64_t box0 = 0, self0 = 0, box1, self1, wall0 = 0, steal0 = 0, servers0[MAX_TARGETS];
	srand48(now_ns());
	/* cycle -1 warms every server up, unmeasured */
	for (int cyc = -1; cyc < cycles; cyc++) {
		int order[MAX_TARGETS];
		for (int t = 0; t < ntargets; t++)
			order[t] = t;
		for (int t = ntargets - 1; t > 0; t--) {
			int j = (int)(drand48() * (t + 1));
			int x = order[t];
			order[t] = order[j];
			order[j] = x;
		}
		if (cyc == 0) {
			for (int t = 0; t < ntargets; t++) {
				open_window(&targets[t]);
				servers0[t] = server_sched_ns(targets[t].pid);
			}
			box_cpu(&box0, &self0, &steal0);
			wall0 = now_ns();
		}
		for (int k = 0; k < ntargets; k++) {
			struct target *tg = &targets[order[k]];
			uint64_t t0 = now_ns();
			activate(order[k], t0);
			run_until(t0 + (uint64_t)(SETTLE_S * 1e9));
			/* measured: the echoes from here to the end of the slice's drain */
			uint64_t msgs0 = tg->done_msgs, cpu0 = server_sched_ns(tg->pid);
			uint64_t b, s0, s1;
			box_cpu(&b, &s0, NULL);
			run_until(now_ns() + (uint64_t)(slice * 1e9));
			drain();
			uint64_t cpu = server_sched_ns(tg->pid) - cpu0;
			box_cpu(&b, &s1, NULL);
			if (cyc >= 0) {
				tg->cyc_cpu[cyc] = cpu;
				tg->cyc_msgs[cyc] = tg->done_msgs - msgs0;
				tg->client_ns += s1 - s0;
			}
		}
	}
	uint64_t steal1;
	box_cpu(&box1, &self1, &steal1);
	/* CPU used by neither the servers nor this client over the measured
	 * cycles, in % of one CPU (a large value: the run was disturbed) */
	double other = (double)(box1 - box0) - (double)(self1 - self0);
	for (int t = 0; t < ntargets; t++)
		other -= (double)(server_sched_ns(targets[t].pid) - servers0[t]);
	double wall = (double)(now_ns() - wall0);
	other = other / wall * 100;
	double steal = (double)(steal1 - steal0) / wall * 100;

	for (int t = 0; t < ntargets; t++) {
		struct target *tg = &targets[t];
		uint64_t cpu = 0, msgs = 0;
		for (int c = 0; c < cycles; c++) {
			cpu += tg->cyc_cpu[c];
			msgs += tg->cyc_msgs[c];
		}
		printf("alt name=%s mode=%s size=%zu conns=%d cycles=%d slice_s=%.2f msgs=%llu "
		       "ns_per_msg=%.0f p50_us=%llu p90_us=%llu p99_us=%llu client_ns_per_msg=%.0f skipped=%llu\n",
		       tg->name, tg->ws ? "ws" : "raw", size, nconns, cycles, slice, (unsigned long long)msgs,
		       msgs ? (double)cpu / msgs : 0.0, (unsigned long long)percentile(tg->hist, 0.50),
		       (unsigned long long)percentile(tg->hist, 0.90),
		       (unsigned long long)percentile(tg->hist, 0.99),
		       msgs ? (double)tg->client_ns / msgs : 0.0, (unsigned long long)tg->skipped);
	}
	for (int a = 1; a < ntargets; a++) {
		for (int b = 0; b < a; b++) {
			static double r[MAX_CYCLES];
			const struct target *A = &targets[a], *B = &targets[b];
			double ca = 0, ma = 0, cb = 0, mb = 0;
			for (int c = 0; c < cycles; c++) {
				r[c] = ((double)A->cyc_cpu[c] / A->cyc_msgs[c]) / ((double)B->cyc_cpu[c] / B->cyc_msgs[c]);
				ca += A->cyc_cpu[c];
				ma += A->cyc_msgs[c];
				cb += B->cyc_cpu[c];
				mb += B->cyc_msgs[c];
			}
			qsort(r, cycles, sizeof r[0], cmp_double);
			double med = cycles % 2 ? r[cycles / 2] : (r[cycles / 2 - 1] + r[cycles / 2]) / 2;
			/* distribution-free 95 % interval of the median: the order
			 * statistics n/2 -+ 0.98 sqrt(n) (normal approximation of the
			 * binomial; 1-based ranks, hence the -1 on both) */
			int lo = (int)floor(cycles / 2.0 - 0.98 * sqrt(cycles)) - 1;
			int hi = (int)ceil(cycles / 2.0 + 0.98 * sqrt(cycles)) - 1;
			if (lo < 0)
				lo = 0;
			if (hi > cycles - 1)
				hi = cycles - 1;
			printf("ratio %s/%s pooled=%.3f median=%.3f ci95=%.3f-%.3f min=%.3f max=%.3f cycles=%d\n",
			       A->name, B->name, (ca / ma) / (cb / mb), med, r[lo], r[hi], r[0], r[cycles - 1], cycles);
		}
	}
	printf("other_cpu_pct=%.1f steal_pct=%.1f\n", other, steal);
	return 0;
}

/* CONNS or CONNSxDEPTH. */
static void parse_conns(const char *arg)
{
	char *end;
	nconns = (int)strtol(arg, &end, 10);
	if (*end == 'x')
		depth = (int)strtol(end + 1, &end, 10);
	if (*end || depth < 1 || depth > 1024) {
		fprintf(stderr, "CONNS: N or NxD (D messages per batch, 1 to 1024)\n");
		exit(2);
	}
}

int main(int argc, char **argv)
{
	int alt = argc > 1 && strcmp(argv[1], "alt") == 0;
	if ((!alt && argc < 8) || (alt && argc < 9)) {
		fprintf(stderr,
			"usage: %s ws|raw HOST PORT CONNS SIZE WARMUP_S WINDOW_S [SERVER_PID [RATE]]\n"
			"       %s alt HOST CONNS SIZE SLICE_S CYCLES RATE NAME=ws|raw:PORT:PID ...\n",
			argv[0], argv[0]);
		return 2;
	}
	const char *host = argv[2];
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");

	if (!alt) {
		struct target *tg = &targets[0];
		tg->name = argv[1];
		tg->ws = strcmp(argv[1], "ws") == 0;
		if (!tg->ws && strcmp(argv[1], "raw") != 0) {
			fprintf(stderr, "mode must be ws or raw\n");
			return 2;
		}
		tg->port = atoi(argv[3]);
		parse_conns(argv[4]);
		size = strtoul(argv[5], NULL, 10);
		tg->pid = argc > 8 ? atoi(argv[8]) : 0;
		rate = argc > 9 ? atof(argv[9]) : 0;
		ntargets = 1;
	} else {
		parse_conns(argv[3]);
		size = strtoul(argv[4], NULL, 10);
		rate = atof(argv[7]);
		ntargets = argc - 8;
		if (ntargets < 2 || ntargets > MAX_TARGETS) {
			fprintf(stderr, "alt: 2 to %d servers\n", MAX_TARGETS);
			return 2;
		}
		for (int t = 0; t < ntargets; t++) {
			struct target *tg = &targets[t];
			char *spec = argv[8 + t], *eq = strchr(spec, '='), mode[8];
			if (!eq || sscanf(eq + 1, "%7[a-z]:%d:%d", mode, &tg->port, &tg->pid) != 3 ||
			    (strcmp(mode, "ws") != 0 && strcmp(mode, "raw") != 0) || tg->pid <= 0) {
				fprintf(stderr, "bad server %s: want NAME=ws|raw:PORT:PID\n", spec);
				return 2;
			}
			*eq = 0;
			tg->name = spec;
			tg->ws = strcmp(mode, "ws") == 0;
		}
	}
	if (nconns <= 0 || size == 0 || size > 65535) {
		fprintf(stderr, "need CONNS > 0 and 0 < SIZE <= 65535\n");
		return 2;
	}
	for (int t = 0; t < ntargets; t++)
		make_message(&targets[t]);
	connect_all(host);
	printf("connected %d\n", nconns * ntargets);
	fflush(stdout);
	if (!alt)
		return run_single(argv, atof(argv[6]), atof(argv[7]));
	int cycles = atoi(argv[6]);
	if (cycles < 1 || cycles > MAX_CYCLES) {
		fprintf(stderr, "alt: 1 to %d cycles\n", MAX_CYCLES);
		return 2;
	}
	return run_alternating(atof(argv[5]), cycles);
}
