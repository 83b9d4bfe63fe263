/* publisher: the gateway side's timer publisher for results/fanout.
 *
 * The gateway has no server-side timer, so this process plays uWS's timer:
 * every 1/--rate s it POSTs one publication per channel to the server HTTP
 * API (`POST /api/publish`, `X-API-Key`) over ONE keep-alive connection,
 * the requests of one tick written together (pipelined). Responses are read
 * without blocking and checked (`200` and a body with "result").
 *
 * The publication data is exactly --size bytes of JSON:
 *   {"t":<CLOCK_MONOTONIC ns just before the request is formatted>,
 *    "s":<sequence of this channel's publication, from 0>,"p":"xxx..."}
 * Channels: "bench" when --channels 1, else "bench0" .. "bench<C-1>".
 *
 * Ticks are scheduled on absolute CLOCK_MONOTONIC times; a tick more than a
 * period late is not caught up (counted as "slipped"), like a uSockets
 * timer whose expirations coalesce.
 *
 * Usage: publisher --port 9465 --key KEY --rate 10 --size 100 [--channels 1]
 *                  [--host 127.0.0.1] [--duration S (0: until SIGTERM)]
 * Prints one PUBLISHER line with counters on exit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static char rbuf[1 << 20];
static size_t rlen;
static uint64_t n_sent, n_ok, n_err, n_non200, n_slipped, max_outstanding;
static int logged;
/* send times of unanswered requests (responses come in order), for the API response time */
#define FIFO 65536
static int64_t fifo[FIFO];
static uint64_t fifo_head, fifo_tail;
static int64_t resp_max_ns, late_max_ns;
static double resp_sum_ns;
static uint64_t resp_n;

static void response_done(void) {
    if (fifo_tail == fifo_head) return;
    int64_t d = mono_ns() - fifo[fifo_tail++ % FIFO];
    if (d > resp_max_ns) resp_max_ns = d;
    resp_sum_ns += (double)d;
    resp_n++;
}

/* Consumes complete responses from rbuf. Returns -1 on a malformed one. */
static int parse_responses(void) {
    size_t off = 0;
    for (;;) {
        char *head_end = memmem(rbuf + off, rlen - off, "\r\n\r\n", 4);
        if (!head_end) break;
        size_t head_len = (size_t)(head_end - (rbuf + off)) + 4;
        int status = 0;
        if (sscanf(rbuf + off, "HTTP/1.%*d %d", &status) != 1) return -1;
        long clen = 0;
        for (char *p = rbuf + off; p < rbuf + off + head_len; p++) {
            if ((*p == '\n') && strncasecmp(p + 1, "content-length:", 15) == 0) {
                clen = atol(p + 16);
                break;
            }
        }
        if (rlen - off < head_len + (size_t)clen) break;
        char *body = rbuf + off + head_len;
        int ok = status == 200 && memmem(body, (size_t)clen, "\"result\"", 8) != NULL;
        response_done();
        if (ok) {
            n_ok++;
        } else {
            n_err++;
            if (status != 200) n_non200++;
            if (logged++ < 5)
                fprintf(stderr, "[publisher] failed publish: status %d body %.*s\n", status, (int)(clen > 300 ? 300 : clen),
                        body);
        }
        off += head_len + (size_t)clen;
    }
    memmove(rbuf, rbuf + off, rlen - off);
    rlen -= off;
    return 0;
}

/* Reads what is there (timeout_ms 0: don't wait). Returns -1 if the connection ended. */
static int read_some(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0) return 0;
    for (;;) {
        if (rlen == sizeof rbuf) return -1;
        ssize_t r = recv(fd, rbuf + rlen, sizeof rbuf - rlen, MSG_DONTWAIT);
        if (r == 0) return -1;
        if (r < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        rlen += (size_t)r;
        if (parse_responses() < 0) return -1;
    }
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *key = "", *path = "/api/publish";
    int port = 9465, rate = 10, size = 100, channels = 1;
    double duration = 0;
    static struct option lo[] = {{"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},    {"key", 1, 0, 'k'},
                                 {"rate", 1, 0, 'r'},     {"size", 1, 0, 's'},    {"channels", 1, 0, 'c'},
                                 {"duration", 1, 0, 'd'}, {"path", 1, 0, 'P'},    {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'k': key = optarg; break;
        case 'r': rate = atoi(optarg); break;
        case 's': size = atoi(optarg); break;
        case 'c': channels = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'P': path = optarg; break;
        default:
            fprintf(stderr, "usage: publisher --port P --key K --rate R --size B [--channels C] [--duration S]\n");
            return 2;
        }
    }
    if (rate < 1 || size < 1 || size > 60000 || channels < 1) {
        fprintf(stderr, "publisher: bad --rate/--size/--channels\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        fprintf(stderr, "publisher: connect %s:%d: %s\n", host, port, strerror(errno));
        return 1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    int64_t *seq = calloc((size_t)channels, sizeof *seq);
    size_t cap = (size_t)channels * ((size_t)size + 512);
    char *out = malloc(cap), *body = malloc((size_t)size + 256), *pad = malloc((size_t)size + 1);
    memset(pad, 'x', (size_t)size);
    pad[size] = 0;

    int64_t period = 1000000000LL / rate;
    int64_t t0 = mono_ns(), next = t0;
    int failed = 0;
    while (!stop && (duration <= 0 || (double)(mono_ns() - t0) / 1e9 < duration)) {
        struct timespec ts = {.tv_sec = next / 1000000000LL, .tv_nsec = next % 1000000000LL};
        /* wait for the tick, reading responses meanwhile */
        while (!stop && mono_ns() < next) {
            int64_t left_ms = (next - mono_ns()) / 1000000;
            if (left_ms >= 2) {
                if (read_some(fd, (int)(left_ms - 1)) < 0) { failed = 1; break; }
            } else {
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
        }
        if (failed || stop) break;
        int64_t late = mono_ns() - next;
        if (late > late_max_ns) late_max_ns = late;
        size_t len = 0;
        for (int k = 0; k < channels; k++) {
            char chname[32];
            if (channels == 1) snprintf(chname, sizeof chname, "bench");
            else snprintf(chname, sizeof chname, "bench%d", k);
            int64_t t = mono_ns();
            fifo[fifo_head++ % FIFO] = t;
            int blen = snprintf(body, (size_t)size + 256, "{\"channel\":\"%s\",\"data\":{\"t\":%" PRId64 ",\"s\":%" PRId64 ",\"p\":\"", chname, t, seq[k]);
            /* data = from {"t" to the closing } : exactly `size` bytes when possible */
            int data_prefix = blen - (int)(strlen(chname) + 21); /* strlen("{\"channel\":\"\",\"data\":") = 21 */
            int padn = size - data_prefix - 2;
            if (padn < 0) padn = 0;
            blen += snprintf(body + blen, (size_t)size + 256 - (size_t)blen, "%.*s\"}}", padn, pad);
            len += (size_t)snprintf(out + len, cap - len,
                                    "POST %s HTTP/1.1\r\nHost: %s:%d\r\nX-API-Key: %s\r\nContent-Type: application/json\r\n"
                                    "Content-Length: %d\r\n\r\n%s",
                                    path, host, port, key, blen, body);
            seq[k]++;
        }
        if (write_all(fd, out, len) < 0) {
            fprintf(stderr, "publisher: write: %s\n", strerror(errno));
            failed = 1;
            break;
        }
        n_sent += (uint64_t)channels;
        uint64_t outstanding = n_sent - n_ok - n_err;
        if (outstanding > max_outstanding) max_outstanding = outstanding;
        if (read_some(fd, 0) < 0) { failed = 1; break; }
        next += period;
        int64_t now = mono_ns();
        if (now > next + period) {
            n_slipped++;
            next = now;
        }
    }
    /* collect the outstanding responses */
    int64_t deadline = mono_ns() + 3000000000LL;
    while (!failed && n_ok + n_err < n_sent && mono_ns() < deadline) {
        if (read_some(fd, 100) < 0) { failed = 1; break; }
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
    printf("PUBLISHER sent=%" PRIu64 " ok=%" PRIu64 " err=%" PRIu64 " non200=%" PRIu64 " unanswered=%" PRIu64
           " slipped=%" PRIu64 " max_outstanding=%" PRIu64 " seconds=%.2f connection_failed=%d"
           " tick_late_max_ms=%.3f api_resp_mean_ms=%.3f api_resp_max_ms=%.3f\n",
           n_sent, n_ok, n_err, n_non200, n_sent - n_ok - n_err, n_slipped, max_outstanding, secs, failed,
           (double)late_max_ns / 1e6, resp_n ? resp_sum_ns / (double)resp_n / 1e6 : 0, (double)resp_max_ns / 1e6);
    fflush(stdout);
    close(fd);
    return failed ? 1 : 0;
}
