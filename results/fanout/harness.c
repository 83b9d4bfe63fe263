/* harness: receive-only WebSocket fan-out client for results/fanout.
 *
 * Single thread, level-triggered epoll, no external libraries.
 * Opens --conns WebSocket connections to one server (plain HTTP/1.1 upgrade,
 * fixed Sec-WebSocket-Key, 101 and Sec-WebSocket-Accept verified), then
 * only receives. Connection i listens on channel i % --channels.
 *
 *   --mode uws   binary publications: bytes 0..8 CLOCK_MONOTONIC ns of the
 *                publish (LE int64), bytes 8..16 per-channel sequence (LE).
 *                Path "/bench" (one channel) or "/bench<k>".
 *   --mode gw    Centrifugo client protocol v2 JSON: after the upgrade sends
 *                one text frame `{"id":1,"connect":{}}\n{"id":2,"subscribe":
 *                {"channel":"bench"}}` (masked) and waits for the subscribe
 *                reply; answers app pings `{}` with `{}`; publications are
 *                `{"push":{"channel":..,"pub":{"data":{"t":NS,"s":SEQ,..}}}}`.
 *
 * WebSocket pings are answered with pongs in both modes. A text frame may
 * hold several newline-separated replies (Centrifugo's JSON batching).
 *
 * Phases: connect (bounded number in flight) -> all ready: touch
 * --ready-file -> --warmup s -> measured window of --duration s -> print the
 * RESULT line, touch --done-file -> keep receiving (for loss / total
 * counts) until SIGTERM/SIGINT or --linger s -> print the FINAL line.
 *
 * At both ends of the window it samples the server's utime+stime
 * (/proc/PID/stat), its context switches, /proc/stat for CPUs 0 and 1, its
 * own rusage and, with --metrics HOST:PORT, the gateway's
 * gateway_pubsub_deliveries_total.
 *
 * Latency = receive time (CLOCK_MONOTONIC right after the read() that
 * returned the frame) - publish time in the message, into a log-linear
 * histogram (64 sub-buckets per power of two: < 1.6 % relative error).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---------- options ---------- */
static const char *o_host = "127.0.0.1";
static int o_port = 9101;
static const char *o_path = NULL; /* default: per mode */
static int o_mode_gw = 0;
static int o_conns = 500;
static int o_channels = 1;
static int o_inflight = 200;
static double o_connect_timeout = 120;
static double o_warmup = 5, o_duration = 10, o_linger = 60;
static int o_server_pid = 0;
static const char *o_metrics = NULL;
static const char *o_ready_file = NULL, *o_done_file = NULL;
static const char *o_label = "run";
static const char *o_hist_file = NULL;
static int o_separate_frames = 0;
static int o_window_signals = 0; /* SIGUSR1 / SIGUSR2 to --server-pid at window start / end (uws_pubsub) */

/* ---------- time ---------- */
static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void logf_(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[harness] ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---------- histogram (ns) ---------- */
#define SUB_BITS 6
#define SUB (1 << SUB_BITS)
#define NBUCKETS (2 * SUB + 50 * SUB)
static uint64_t hist[NBUCKETS];
static uint64_t hist_n, hist_max, hist_min = UINT64_MAX;
static double hist_sum;

static int bucket_of(uint64_t v) {
    if (v < 2 * SUB) return (int)v;
    int e = 63 - __builtin_clzll(v); /* >= SUB_BITS + 1 */
    int sub = (int)((v >> (e - SUB_BITS)) & (SUB - 1));
    int idx = 2 * SUB + (e - SUB_BITS - 1) * SUB + sub;
    return idx < NBUCKETS ? idx : NBUCKETS - 1;
}
static uint64_t bucket_lo(int idx) {
    if (idx < 2 * SUB) return (uint64_t)idx;
    int e = (idx - 2 * SUB) / SUB + SUB_BITS + 1;
    int sub = (idx - 2 * SUB) % SUB;
    return ((uint64_t)1 << e) + ((uint64_t)sub << (e - SUB_BITS));
}
static uint64_t bucket_mid(int idx) {
    if (idx < 2 * SUB) return (uint64_t)idx;
    int e = (idx - 2 * SUB) / SUB + SUB_BITS + 1;
    return bucket_lo(idx) + (((uint64_t)1 << (e - SUB_BITS)) >> 1);
}
static void hist_add(uint64_t v) {
    hist[bucket_of(v)]++;
    hist_n++;
    hist_sum += (double)v;
    if (v > hist_max) hist_max = v;
    if (v < hist_min) hist_min = v;
}
static uint64_t hist_q(double q) {
    if (!hist_n) return 0;
    uint64_t rank = (uint64_t)(q * (double)hist_n);
    if (rank >= hist_n) rank = hist_n - 1;
    uint64_t acc = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        acc += hist[i];
        if (acc > rank) {
            uint64_t m = bucket_mid(i);
            return m > hist_max ? hist_max : m;
        }
    }
    return hist_max;
}

/* ---------- connections ---------- */
enum { S_IDLE, S_CONNECTING, S_HTTP, S_SUBSCRIBING, S_READY, S_CLOSED };

struct conn {
    int fd;
    uint8_t state;
    uint16_t channel;
    int64_t last_seq; /* -1: none yet */
    uint32_t win_recv;
    char *carry;
    uint32_t carry_len, carry_cap;
};

static struct conn *conns;
static int epfd;
static int n_started, n_inflight, n_ready, n_failed;
static int phase; /* 0 connect, 1 warmup, 2 measure, 3 linger */
static volatile sig_atomic_t got_signal;

/* counters: total since start, and for the measured window */
static uint64_t tot_pubs, tot_lost, tot_dup, tot_bytes;
static uint64_t win_pubs, win_lost, win_dup, win_neg, win_bytes, win_reads;
static uint64_t n_app_pings, n_ws_pings, n_reply_errors, n_other, n_closed_by_server, n_close_frames;
static uint64_t n_unparsed, n_send_fail, n_masked, n_fragments;
static int close_codes[8][2]; /* code, count */
static int logged_other, logged_errors, logged_closes;

static const char *WS_KEY = "dGhlIHNhbXBsZSBub25jZQ==";
static const char *WS_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

static void chan_name(int k, char *out, size_t n) {
    if (o_channels == 1)
        snprintf(out, n, "bench");
    else
        snprintf(out, n, "bench%d", k);
}

static void carry_set(struct conn *c, const char *p, size_t n) {
    if (n > c->carry_cap) {
        size_t cap = c->carry_cap ? c->carry_cap : 2048;
        while (cap < n) cap *= 2;
        c->carry = realloc(c->carry, cap);
        if (!c->carry) { perror("realloc"); exit(1); }
        c->carry_cap = (uint32_t)cap;
    }
    memmove(c->carry, p, n);
    c->carry_len = (uint32_t)n;
}
static void carry_append(struct conn *c, const char *p, size_t n) {
    size_t need = c->carry_len + n;
    if (need > c->carry_cap) {
        size_t cap = c->carry_cap ? c->carry_cap : 2048;
        while (cap < need) cap *= 2;
        c->carry = realloc(c->carry, cap);
        if (!c->carry) { perror("realloc"); exit(1); }
        c->carry_cap = (uint32_t)cap;
    }
    memcpy(c->carry + c->carry_len, p, n);
    c->carry_len = (uint32_t)need;
}

static void conn_close(struct conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->state == S_READY) n_ready--;
    if (c->state == S_CONNECTING || c->state == S_HTTP || c->state == S_SUBSCRIBING) {
        n_inflight--;
        n_failed++;
    }
    c->fd = -1;
    c->state = S_CLOSED;
    free(c->carry);
    c->carry = NULL;
    c->carry_len = c->carry_cap = 0;
}

/* A masked client frame (FIN set). */
static void send_frame(struct conn *c, int opcode, const char *data, size_t len) {
    unsigned char buf[512];
    static const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t h = 0;
    if (len > sizeof(buf) - 8) { n_send_fail++; return; }
    buf[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        buf[h++] = (unsigned char)(0x80 | len);
    } else {
        buf[h++] = 0x80 | 126;
        buf[h++] = (unsigned char)(len >> 8);
        buf[h++] = (unsigned char)len;
    }
    memcpy(buf + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < len; i++) buf[h + i] = (unsigned char)data[i] ^ mask[i & 3];
    ssize_t w = write(c->fd, buf, h + len);
    if (w != (ssize_t)(h + len)) n_send_fail++;
}

static void mark_ready(struct conn *c) {
    c->state = S_READY;
    n_inflight--;
    n_ready++;
}

static void on_publication(struct conn *c, int64_t t_ns, int64_t seq, int has_seq, size_t bytes, int64_t now) {
    tot_pubs++;
    tot_bytes += bytes;
    uint64_t lost = 0, dup = 0;
    if (has_seq) {
        if (c->last_seq >= 0) {
            if (seq == c->last_seq + 1) {
            } else if (seq > c->last_seq + 1) {
                lost = (uint64_t)(seq - c->last_seq - 1);
            } else {
                dup = 1;
            }
        }
        if (seq > c->last_seq) c->last_seq = seq;
    }
    tot_lost += lost;
    tot_dup += dup;
    if (phase == 2) {
        win_pubs++;
        win_bytes += bytes;
        win_lost += lost;
        win_dup += dup;
        c->win_recv++;
        int64_t d = now - t_ns;
        if (d < 0) { win_neg++; d = 0; }
        hist_add((uint64_t)d);
    }
}

static int64_t parse_int_after(const char *p, size_t len, const char *key, int *ok) {
    const char *k = memmem(p, len, key, strlen(key));
    *ok = 0;
    if (!k) return 0;
    const char *q = k + strlen(key), *end = p + len;
    while (q < end && *q == ' ') q++;
    int neg = 0;
    if (q < end && *q == '-') { neg = 1; q++; }
    int64_t v = 0;
    int digits = 0;
    while (q < end && *q >= '0' && *q <= '9') { v = v * 10 + (*q - '0'); q++; digits++; }
    if (!digits) return 0;
    *ok = 1;
    return neg ? -v : v;
}

static void on_text_line(struct conn *c, const char *p, size_t len, int64_t now) {
    if (len == 0) return;
    if (len == 2 && p[0] == '{' && p[1] == '}') {
        n_app_pings++;
        send_frame(c, 1, "{}", 2);
        return;
    }
    if (len > 8 && memcmp(p, "{\"push\":", 8) == 0) {
        if (memmem(p, len, "\"pub\":", 6)) {
            int ok_t, ok_s;
            int64_t t = parse_int_after(p, len, "\"t\":", &ok_t);
            int64_t s = parse_int_after(p, len, "\"s\":", &ok_s);
            if (!ok_t) { n_unparsed++; return; }
            on_publication(c, t, s, ok_s, len, now);
            return;
        }
        n_other++;
        if (logged_other++ < 5) logf_("conn %ld: other push: %.*s", (long)(c - conns), (int)(len > 300 ? 300 : len), p);
        return;
    }
    if (memmem(p, len, "\"error\"", 7)) {
        n_reply_errors++;
        if (logged_errors++ < 5) logf_("conn %ld: error reply: %.*s", (long)(c - conns), (int)(len > 300 ? 300 : len), p);
        return;
    }
    if (c->state == S_SUBSCRIBING && memmem(p, len, "\"subscribe\"", 11)) {
        mark_ready(c);
        return;
    }
    if (memmem(p, len, "\"connect\"", 9)) return;
    n_other++;
    if (logged_other++ < 5) logf_("conn %ld: other text: %.*s", (long)(c - conns), (int)(len > 300 ? 300 : len), p);
}

static void on_frame(struct conn *c, int opcode, int fin, char *payload, size_t len, int64_t now) {
    if (!fin || opcode == 0) {
        /* The servers under test send whole small frames; count and skip fragments. */
        n_fragments++;
        return;
    }
    switch (opcode) {
    case 1: { /* text: one or more newline-separated JSON replies */
        size_t start = 0;
        for (size_t i = 0; i <= len; i++) {
            if (i == len || payload[i] == '\n') {
                on_text_line(c, payload + start, i - start, now);
                start = i + 1;
            }
        }
        break;
    }
    case 2: /* binary: uWS publication */
        if (len >= 16) {
            int64_t t, s;
            memcpy(&t, payload, 8);
            memcpy(&s, payload + 8, 8);
            on_publication(c, t, s, 1, len, now);
        } else {
            n_unparsed++;
        }
        break;
    case 8: {
        int code = len >= 2 ? ((unsigned char)payload[0] << 8 | (unsigned char)payload[1]) : 1005;
        n_close_frames++;
        int i;
        for (i = 0; i < 8 && close_codes[i][1] && close_codes[i][0] != code; i++) {}
        if (i < 8) { close_codes[i][0] = code; close_codes[i][1]++; }
        if (logged_closes++ < 5)
            logf_("conn %ld: close frame code %d reason '%.*s'", (long)(c - conns), code,
                  (int)(len > 2 ? (len - 2 > 200 ? 200 : len - 2) : 0), payload + 2);
        break;
    }
    case 9:
        n_ws_pings++;
        send_frame(c, 10, payload, len);
        break;
    case 10:
        break;
    default:
        n_unparsed++;
    }
}

/* Parses whole frames from buf; returns bytes consumed. */
static size_t parse_frames(struct conn *c, char *buf, size_t n, int64_t now) {
    size_t off = 0;
    while (n - off >= 2) {
        unsigned char b0 = (unsigned char)buf[off], b1 = (unsigned char)buf[off + 1];
        size_t h = 2;
        uint64_t plen = b1 & 0x7f;
        if (plen == 126) {
            if (n - off < 4) break;
            plen = ((uint64_t)(unsigned char)buf[off + 2] << 8) | (unsigned char)buf[off + 3];
            h = 4;
        } else if (plen == 127) {
            if (n - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | (unsigned char)buf[off + 2 + i];
            h = 10;
        }
        int masked = b1 & 0x80;
        if (masked) h += 4;
        if (plen > (64u << 20)) {
            logf_("conn %ld: absurd frame length %" PRIu64 ", closing", (long)(c - conns), plen);
            conn_close(c);
            return n;
        }
        if (n - off < h + plen) break;
        char *payload = buf + off + h;
        if (masked) {
            n_masked++;
            unsigned char *mk = (unsigned char *)buf + off + h - 4;
            for (uint64_t i = 0; i < plen; i++) payload[i] ^= (char)mk[i & 3];
        }
        on_frame(c, b0 & 0x0f, b0 & 0x80, payload, (size_t)plen, now);
        if (c->state == S_CLOSED) return n;
        off += h + plen;
    }
    return off;
}

static void on_ws_data(struct conn *c, char *buf, size_t n, int64_t now) {
    if (c->carry_len) {
        carry_append(c, buf, n);
        size_t used = parse_frames(c, c->carry, c->carry_len, now);
        if (c->state == S_CLOSED) return;
        carry_set(c, c->carry + used, c->carry_len - used);
    } else {
        size_t used = parse_frames(c, buf, n, now);
        if (c->state == S_CLOSED) return;
        if (used < n) carry_set(c, buf + used, n - used);
    }
}

static void send_upgrade(struct conn *c) {
    char req[512], path[128];
    int k = (int)(c - conns);
    if (o_path) {
        snprintf(path, sizeof path, "%s", o_path);
    } else if (o_mode_gw) {
        snprintf(path, sizeof path, "/connection/websocket");
    } else {
        char ch[32];
        chan_name(c->channel, ch, sizeof ch);
        snprintf(path, sizeof path, "/%s", ch);
    }
    int len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                       path, o_host, o_port, WS_KEY);
    if (write(c->fd, req, (size_t)len) != len) {
        logf_("conn %d: upgrade write failed: %s", k, strerror(errno));
        conn_close(c);
        return;
    }
    c->state = S_HTTP;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void after_upgrade(struct conn *c) {
    if (!o_mode_gw) {
        mark_ready(c);
        return;
    }
    char ch[32], cmd[256];
    chan_name(c->channel, ch, sizeof ch);
    if (o_separate_frames) {
        send_frame(c, 1, "{\"id\":1,\"connect\":{}}", 21);
        int n = snprintf(cmd, sizeof cmd, "{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}", ch);
        send_frame(c, 1, cmd, (size_t)n);
    } else {
        int n = snprintf(cmd, sizeof cmd, "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"%s\"}}", ch);
        send_frame(c, 1, cmd, (size_t)n);
    }
    c->state = S_SUBSCRIBING;
}

static int logged_http;
static void on_http_data(struct conn *c, char *buf, size_t n, int64_t now) {
    carry_append(c, buf, n);
    char *end = memmem(c->carry, c->carry_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->carry_len > 8192) { logf_("conn %ld: oversized HTTP response", (long)(c - conns)); conn_close(c); }
        return;
    }
    size_t head = (size_t)(end - c->carry) + 4;
    char saved = c->carry[head - 1];
    c->carry[head - 1] = 0;
    int ok = strncmp(c->carry, "HTTP/1.1 101", 12) == 0;
    char *acc = strcasestr(c->carry, "\nsec-websocket-accept:");
    if (ok) {
        ok = 0;
        if (acc) {
            acc += 22;
            while (*acc == ' ') acc++;
            ok = strncmp(acc, WS_ACCEPT, strlen(WS_ACCEPT)) == 0;
        }
    }
    if (!ok) {
        if (logged_http++ < 5) logf_("conn %ld: upgrade refused: %.200s", (long)(c - conns), c->carry);
        conn_close(c);
        return;
    }
    c->carry[head - 1] = saved;
    /* Frames that came with the 101 stay in carry and are parsed now. */
    carry_set(c, c->carry + head, c->carry_len - head);
    after_upgrade(c);
    if (c->state == S_CLOSED || !c->carry_len) return;
    size_t used = parse_frames(c, c->carry, c->carry_len, now);
    if (c->state == S_CLOSED) return;
    carry_set(c, c->carry + used, c->carry_len - used);
}

static struct sockaddr_in server_addr;

static void start_connect(int k) {
    struct conn *c = &conns[k];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        logf_("socket(): %s (conn %d)", strerror(errno), k);
        c->state = S_CLOSED;
        n_failed++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = S_CONNECTING;
    n_inflight++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)k};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 && errno != EINPROGRESS) {
        logf_("connect(): %s (conn %d)", strerror(errno), k);
        conn_close(c);
    }
}

/* ---------- sampling ---------- */
struct cpu_line { uint64_t user, nice, sys, idle, iowait, irq, softirq, steal; };
struct sample {
    int64_t t_ns;
    double server_cpu_s; /* utime+stime */
    double server_sched_s; /* sum of threads' schedstat run time */
    long long server_vcsw, server_nvcsw, server_rss_kb;
    double self_cpu_s;
    struct cpu_line cpu[2];
    double metric_deliveries;
    uint64_t pubs;
};

static double proc_cpu_s(int pid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* after ")": field 3 (state) ... utime is field 14, stime 15 */
    unsigned long long ut = 0, st = 0;
    char state;
    if (sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &ut, &st) != 3) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Context switches summed over all threads (/proc/PID/task/TID/status); RSS of the process. */
static void proc_status(int pid, long long *vcsw, long long *nvcsw, long long *rss) {
    char path[96], line[256];
    *vcsw = *nvcsw = *rss = -1;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return;
    *vcsw = *nvcsw = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/status", pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f)) {
            if (!strncmp(line, "voluntary_ctxt_switches:", 24)) *vcsw += atoll(line + 24);
            else if (!strncmp(line, "nonvoluntary_ctxt_switches:", 27)) *nvcsw += atoll(line + 27);
        }
        fclose(f);
    }
    closedir(d);
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) *rss = atoll(line + 6);
    fclose(f);
}

/* On-CPU time of all threads, ns-precise (first field of /proc/PID/task/TID/schedstat). */
static double proc_sched_s(int pid) {
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    double sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/schedstat", pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        unsigned long long ns = 0;
        if (fscanf(f, "%llu", &ns) == 1) sum += (double)ns / 1e9;
        fclose(f);
    }
    closedir(d);
    return sum;
}

static void read_cpus(struct cpu_line out[2]) {
    memset(out, 0, 2 * sizeof *out);
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        int id;
        struct cpu_line c;
        if (sscanf(line, "cpu%d %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                   " %" SCNu64, &id, &c.user, &c.nice, &c.sys, &c.idle, &c.iowait, &c.irq, &c.softirq, &c.steal) == 9 &&
            id >= 0 && id < 2)
            out[id] = c;
    }
    fclose(f);
}

/* GET /metrics and sum gateway_pubsub_deliveries_total (all label sets). -1 on failure. */
static double fetch_metric(const char *hostport, const char *name) {
    char host[128];
    snprintf(host, sizeof host, "%s", hostport);
    char *colon = strrchr(host, ':');
    if (!colon) return -1;
    *colon = 0;
    int port = atoi(colon + 1);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    char req[256];
    int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", hostport);
    if (write(fd, req, (size_t)n) != n) { close(fd); return -1; }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (len == cap) { cap *= 2; buf = realloc(buf, cap + 1); }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    double sum = -1;
    size_t nl = strlen(name);
    for (char *line = buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (!strncmp(line, name, nl) && (line[nl] == ' ' || line[nl] == '{')) {
            char *v = strrchr(line, ' ');
            if (v) sum = (sum < 0 ? 0 : sum) + atof(v + 1);
        }
        line = next;
    }
    free(buf);
    return sum;
}

static void take_sample(struct sample *s) {
    s->t_ns = mono_ns();
    s->pubs = tot_pubs;
    s->server_cpu_s = o_server_pid ? proc_cpu_s(o_server_pid) : -1;
    s->server_sched_s = o_server_pid ? proc_sched_s(o_server_pid) : -1;
    if (o_server_pid) proc_status(o_server_pid, &s->server_vcsw, &s->server_nvcsw, &s->server_rss_kb);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->self_cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                    ru.ru_stime.tv_usec / 1e6;
    read_cpus(s->cpu);
    s->metric_deliveries = o_metrics ? fetch_metric(o_metrics, "gateway_pubsub_deliveries_total") : -1;
}

static double cpu_busy_pct(const struct cpu_line *a, const struct cpu_line *b, double *steal_pct) {
    double tot_a = (double)(a->user + a->nice + a->sys + a->idle + a->iowait + a->irq + a->softirq + a->steal);
    double tot_b = (double)(b->user + b->nice + b->sys + b->idle + b->iowait + b->irq + b->softirq + b->steal);
    double idle = (double)((b->idle + b->iowait) - (a->idle + a->iowait));
    double tot = tot_b - tot_a;
    if (tot <= 0) { *steal_pct = 0; return 0; }
    *steal_pct = 100.0 * (double)(b->steal - a->steal) / tot;
    return 100.0 * (tot - idle) / tot;
}

static void touch(const char *path) {
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}

static void on_signal(int sig) { got_signal = sig; }

static void print_final(const char *why) {
    printf("FINAL label=%s why=%s conns_ready=%d conns_failed=%d total_pubs=%" PRIu64 " total_lost=%" PRIu64
           " total_dup=%" PRIu64 " closed_by_server=%" PRIu64 " close_frames=%" PRIu64 " app_pings=%" PRIu64
           " ws_pings=%" PRIu64 " reply_errors=%" PRIu64 " other=%" PRIu64 " unparsed=%" PRIu64
           " fragments=%" PRIu64 " masked=%" PRIu64 " send_fail=%" PRIu64,
           o_label, why, n_ready, n_failed, tot_pubs, tot_lost, tot_dup, n_closed_by_server, n_close_frames,
           n_app_pings, n_ws_pings, n_reply_errors, n_other, n_unparsed, n_fragments, n_masked, n_send_fail);
    for (int i = 0; i < 8 && close_codes[i][1]; i++) printf(" close_%d=%d", close_codes[i][0], close_codes[i][1]);
    printf("\n");
    fflush(stdout);
}

static void usage(void) {
    fprintf(stderr,
            "usage: harness --mode uws|gw --port P [--host 127.0.0.1] [--path PATH] --conns N [--channels C]\n"
            "               [--inflight 200] [--connect-timeout 120] [--warmup 5] [--duration 10] [--linger 60]\n"
            "               [--server-pid PID] [--metrics HOST:PORT] [--ready-file F] [--done-file F]\n"
            "               [--label L] [--hist-file F] [--separate-frames] [--window-signals]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option lo[] = {
        {"host", 1, 0, 'h'},        {"port", 1, 0, 'p'},         {"path", 1, 0, 'P'},
        {"mode", 1, 0, 'm'},        {"conns", 1, 0, 'n'},        {"channels", 1, 0, 'c'},
        {"inflight", 1, 0, 'i'},    {"connect-timeout", 1, 0, 'T'}, {"warmup", 1, 0, 'w'},
        {"duration", 1, 0, 'd'},    {"linger", 1, 0, 'l'},       {"server-pid", 1, 0, 's'},
        {"metrics", 1, 0, 'M'},     {"ready-file", 1, 0, 'r'},   {"done-file", 1, 0, 'D'},
        {"label", 1, 0, 'L'},       {"hist-file", 1, 0, 'H'},    {"separate-frames", 0, 0, 'S'},
        {"window-signals", 0, 0, 'W'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': o_host = optarg; break;
        case 'p': o_port = atoi(optarg); break;
        case 'P': o_path = optarg; break;
        case 'm':
            if (!strcmp(optarg, "gw")) o_mode_gw = 1;
            else if (!strcmp(optarg, "uws")) o_mode_gw = 0;
            else usage();
            break;
        case 'n': o_conns = atoi(optarg); break;
        case 'c': o_channels = atoi(optarg); break;
        case 'i': o_inflight = atoi(optarg); break;
        case 'T': o_connect_timeout = atof(optarg); break;
        case 'w': o_warmup = atof(optarg); break;
        case 'd': o_duration = atof(optarg); break;
        case 'l': o_linger = atof(optarg); break;
        case 's': o_server_pid = atoi(optarg); break;
        case 'M': o_metrics = optarg; break;
        case 'r': o_ready_file = optarg; break;
        case 'D': o_done_file = optarg; break;
        case 'L': o_label = optarg; break;
        case 'H': o_hist_file = optarg; break;
        case 'S': o_separate_frames = 1; break;
        case 'W': o_window_signals = 1; break;
        default: usage();
        }
    }
    if (o_conns < 1 || o_channels < 1 || o_channels > 65535 || o_inflight < 1) usage();

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)o_conns + 64) {
        logf_("RLIMIT_NOFILE %llu too low for %d connections", (unsigned long long)rl.rlim_cur, o_conns);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)o_port);
    if (inet_pton(AF_INET, o_host, &server_addr.sin_addr) != 1) { logf_("bad host %s", o_host); return 2; }

    conns = calloc((size_t)o_conns, sizeof *conns);
    for (int k = 0; k < o_conns; k++) {
        conns[k].fd = -1;
        conns[k].state = S_IDLE;
        conns[k].channel = (uint16_t)(k % o_channels);
        conns[k].last_seq = -1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);

    static char rbuf[65536];
    struct epoll_event evs[1024];
    int64_t t_start = mono_ns(), t_phase = t_start, t_progress = t_start;
    uint64_t progress_pubs = 0;
    struct sample s0 = {0}, s1 = {0};
    logf_("%s: %d connections to %s:%d (%s), %d channel(s)", o_label, o_conns, o_host, o_port,
          o_mode_gw ? "gateway/Centrifugo JSON" : "uWS binary", o_channels);

    for (;;) {
        /* keep o_inflight handshakes going */
        while (phase == 0 && n_started < o_conns && n_inflight < o_inflight) start_connect(n_started++);

        int n = epoll_wait(epfd, evs, 1024, 50);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            if (c->state == S_CLOSED || c->fd < 0) continue;
            if (c->state == S_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    if (n_failed < 5) logf_("conn %ld: connect failed: %s", (long)(c - conns), strerror(err));
                    conn_close(c);
                } else {
                    send_upgrade(c);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(c->fd, rbuf, sizeof rbuf);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    if (phase >= 1 || c->state == S_READY) n_closed_by_server++;
                    conn_close(c);
                    break;
                }
                if (r < 0) break;
                int64_t now = mono_ns();
                if (phase == 2) win_reads++;
                if (c->state == S_HTTP) on_http_data(c, rbuf, (size_t)r, now);
                else on_ws_data(c, rbuf, (size_t)r, now);
                if (c->state == S_CLOSED || (size_t)r < sizeof rbuf) break;
            }
        }

        int64_t now = mono_ns();
        if (now - t_progress >= 5000000000LL) {
            double dt = (double)(now - t_progress) / 1e9;
            logf_("t=%.0fs phase=%d ready=%d inflight=%d failed=%d pubs/s=%.0f lost=%" PRIu64 " dup=%" PRIu64,
                  (double)(now - t_start) / 1e9, phase, n_ready, n_inflight, n_failed,
                  (double)(tot_pubs - progress_pubs) / dt, tot_lost, tot_dup);
            t_progress = now;
            progress_pubs = tot_pubs;
        }
        if (got_signal) {
            if (phase < 3) logf_("signal %d before the window ended", (int)got_signal);
            print_final(phase < 3 ? "signal-early" : "signal");
            return phase < 3 ? 1 : 0;
        }
        if (phase == 0) {
            int settled = n_started == o_conns && n_inflight == 0;
            if (settled || (double)(now - t_start) / 1e9 > o_connect_timeout) {
                logf_("connect phase done in %.2fs: ready=%d failed=%d inflight=%d", (double)(now - t_start) / 1e9,
                      n_ready, n_failed, n_inflight);
                printf("READY label=%s conns_ready=%d conns_failed=%d connect_s=%.2f\n", o_label, n_ready, n_failed,
                       (double)(now - t_start) / 1e9);
                fflush(stdout);
                if (n_ready == 0) { print_final("no-connections"); return 1; }
                touch(o_ready_file);
                phase = 1;
                t_phase = now;
            }
        } else if (phase == 1 && (double)(now - t_phase) / 1e9 >= o_warmup) {
            take_sample(&s0);
            win_pubs = win_lost = win_dup = win_neg = win_bytes = win_reads = 0;
            memset(hist, 0, sizeof hist);
            hist_n = hist_max = 0;
            hist_min = UINT64_MAX;
            hist_sum = 0;
            for (int k = 0; k < o_conns; k++) conns[k].win_recv = 0;
            phase = 2;
            t_phase = mono_ns();
            if (o_window_signals && o_server_pid) kill(o_server_pid, SIGUSR1);
            logf_("window start (%d connections ready)", n_ready);
        } else if (phase == 2 && (double)(now - s0.t_ns) / 1e9 >= o_duration) {
            phase = 3;
            take_sample(&s1);
            if (o_window_signals && o_server_pid) kill(o_server_pid, SIGUSR2);
            double win = (double)(s1.t_ns - s0.t_ns) / 1e9;
            double cpu = s1.server_cpu_s - s0.server_cpu_s;
            double self = s1.self_cpu_s - s0.self_cpu_s;
            int silent = 0;
            for (int k = 0; k < o_conns; k++)
                if (conns[k].state == S_READY && conns[k].win_recv == 0) silent++;
            double st0, st1;
            double b0 = cpu_busy_pct(&s0.cpu[0], &s1.cpu[0], &st0);
            double b1 = cpu_busy_pct(&s0.cpu[1], &s1.cpu[1], &st1);
            double mdel = (s0.metric_deliveries >= 0 && s1.metric_deliveries >= 0)
                              ? s1.metric_deliveries - s0.metric_deliveries : -1;
            printf("RESULT label=%s conns_ready=%d window_s=%.3f deliveries=%" PRIu64 " dps=%.1f"
                   " server_cpu_s=%.3f cpu_us_per_delivery=%.3f busy_pct=%.1f sched_us_per_delivery=%.3f"
                   " p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f min_ms=%.3f mean_ms=%.3f"
                   " lost=%" PRIu64 " dup=%" PRIu64 " neg=%" PRIu64 " silent_conns=%d"
                   " client_cpu_pct=%.1f cpu0_busy_pct=%.1f cpu0_steal_pct=%.1f cpu1_busy_pct=%.1f"
                   " server_nvcsw=%lld server_vcsw=%lld server_rss_kb=%lld metric_deliveries=%.0f bytes=%" PRIu64
                   " reads=%" PRIu64 " deliveries_per_read=%.3f\n",
                   o_label, n_ready, win, win_pubs, (double)win_pubs / win, cpu,
                   win_pubs ? cpu * 1e6 / (double)win_pubs : 0, 100.0 * cpu / win,
                   win_pubs ? (s1.server_sched_s - s0.server_sched_s) * 1e6 / (double)win_pubs : 0,
                   (double)hist_q(0.5) / 1e6, (double)hist_q(0.9) / 1e6, (double)hist_q(0.99) / 1e6,
                   (double)hist_q(0.999) / 1e6, (double)hist_max / 1e6,
                   hist_n ? (double)hist_min / 1e6 : 0, hist_n ? hist_sum / (double)hist_n / 1e6 : 0, win_lost,
                   win_dup, win_neg, silent, 100.0 * self / win, b0, st0, b1,
                   s1.server_nvcsw - s0.server_nvcsw, s1.server_vcsw - s0.server_vcsw, s1.server_rss_kb, mdel,
                   win_bytes, win_reads, win_reads ? (double)win_pubs / (double)win_reads : 0);
            fflush(stdout);
            if (o_hist_file) {
                FILE *f = fopen(o_hist_file, "w");
                if (f) {
                    fprintf(f, "# bucket_low_ns count\n");
                    for (int i = 0; i < NBUCKETS; i++)
                        if (hist[i]) fprintf(f, "%" PRIu64 " %" PRIu64 "\n", bucket_lo(i), hist[i]);
                    fclose(f);
                }
            }
            touch(o_done_file);
            t_phase = now;
        } else if (phase == 3 && (double)(now - t_phase) / 1e9 >= o_linger) {
            print_final("linger-timeout");
            return 0;
        }
    }
}
