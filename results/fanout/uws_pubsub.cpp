/* uws_pubsub: the uWebSockets side of the fan-out benchmark (results/fanout).
 *
 * A minimal uWS pub/sub server in the reference's shape: every WebSocket is
 * subscribed on open to one topic, and a uSockets timer publishes N binary
 * messages per second per topic, each `--size` bytes:
 *
 *   bytes 0..8   CLOCK_MONOTONIC time of the publish call, ns, little-endian int64
 *   bytes 8..16  sequence number of this topic's publication (0, 1, 2 ...), LE uint64
 *   bytes 16..   'x' padding up to --size
 *
 * The topic is chosen by the URL path: "/bench" (or any path when
 * --channels 1) subscribes to "bench"; "/bench<k>" subscribes to
 * "bench<k>" (0 <= k < --channels). With --channels C > 1, every tick
 * publishes one message to each of bench0 .. bench<C-1>.
 *
 * No compression, no automatic pings, no idle timeout (the gateway run has
 * its keep-alive pings switched off too), maxBackpressure 1 MiB (the
 * gateway's pubsub.client_queue_max_bytes default); a message refused by
 * backpressure is counted as dropped.
 *
 * Usage: uws_pubsub --port 9101 --rate 10 --size 100 [--channels 1]
 * SIGTERM / SIGINT: print counters on stdout and exit (checked at the
 * next timer tick).
 */
#include "App.h"

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <time.h>
#include <vector>

struct PerSocketData {
    int channel; /* -1: "bench" */
};

static volatile sig_atomic_t stop_requested = 0, window_mark = 0;
static void on_signal(int) { stop_requested = 1; }
/* The harness (--window-signals) sends SIGUSR1 when its measured window
 * starts and SIGUSR2 when it ends; the server then reports the timer's
 * behaviour for the window alone. */
static void on_usr(int sig) { window_mark = sig == SIGUSR1 ? 1 : 2; }

static int opt_port = 9101, opt_rate = 10, opt_size = 100, opt_channels = 1;
static uWS::App *app_ptr = nullptr;
static std::vector<std::string> topics;
static std::vector<uint64_t> seqs;
static std::string payload;
static uint64_t published = 0, publish_calls_without_subscribers = 0;
static uint64_t opened = 0, closed = 0, dropped = 0, ticks = 0;
static int64_t last_tick_ns = 0, max_tick_gap_ns = 0;
static int in_window = 0;
static uint64_t win_ticks = 0, win_published = 0;
static int64_t win_max_gap_ns = 0;
static struct us_listen_socket_t *listen_socket = nullptr;

static int64_t mono_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void print_stats(const char *when) {
    printf("UWS %s published=%llu ticks=%llu no_subscribers=%llu opened=%llu closed=%llu dropped=%llu"
           " max_tick_gap_ms=%.3f window_ticks=%llu window_published=%llu window_max_tick_gap_ms=%.3f\n", when,
           (unsigned long long) published, (unsigned long long) ticks,
           (unsigned long long) publish_calls_without_subscribers, (unsigned long long) opened,
           (unsigned long long) closed, (unsigned long long) dropped, (double) max_tick_gap_ns / 1e6,
           (unsigned long long) win_ticks, (unsigned long long) win_published, (double) win_max_gap_ns / 1e6);
    fflush(stdout);
}

static void on_tick(struct us_timer_t *t) {
    if (stop_requested) {
        print_stats("final");
        /* Exit directly: closing 10,000 sockets gracefully is not measured. */
        _exit(0);
    }
    ticks++;
    /* Late timer expirations coalesce (one callback): the gap shows it. */
    int64_t t_now = mono_ns();
    int64_t gap = last_tick_ns ? t_now - last_tick_ns : 0;
    if (gap > max_tick_gap_ns) max_tick_gap_ns = gap;
    last_tick_ns = t_now;
    if (window_mark == 1) { /* window start: this gap belongs to before it */
        window_mark = 0;
        in_window = 1;
    } else if (window_mark == 2) {
        window_mark = 0;
        in_window = 0;
        print_stats("window");
    } else if (in_window) {
        win_ticks++;
        win_published += topics.size();
        if (gap > win_max_gap_ns) win_max_gap_ns = gap;
    }
    for (size_t k = 0; k < topics.size(); k++) {
        int64_t now = mono_ns();
        uint64_t seq = seqs[k]++;
        memcpy(&payload[0], &now, 8);
        memcpy(&payload[8], &seq, 8);
        if (app_ptr->publish(topics[k], payload, uWS::OpCode::BINARY, false)) {
            published++;
        } else {
            publish_calls_without_subscribers++;
        }
    }
    (void) t;
}

static void usage() {
    fprintf(stderr, "usage: uws_pubsub --port P --rate PUBS_PER_S_PER_TOPIC --size BYTES [--channels C]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 >= argc) usage();
        int v = atoi(argv[++i]);
        if (a == "--port") opt_port = v;
        else if (a == "--rate") opt_rate = v;
        else if (a == "--size") opt_size = v;
        else if (a == "--channels") opt_channels = v;
        else usage();
    }
    if (opt_rate < 1 || opt_rate > 1000 || opt_size < 16 || opt_channels < 1) usage();
    int period_ms = 1000 / opt_rate;
    if (period_ms * opt_rate != 1000) {
        fprintf(stderr, "uws_pubsub: --rate must divide 1000 (timer period in whole ms)\n");
        return 2;
    }

    payload.assign((size_t) opt_size, 'x');
    if (opt_channels == 1) {
        topics.push_back("bench");
    } else {
        for (int k = 0; k < opt_channels; k++) topics.push_back("bench" + std::to_string(k));
    }
    seqs.assign(topics.size(), 0);

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, on_usr);
    signal(SIGUSR2, on_usr);

    uWS::App app;
    app.ws<PerSocketData>("/*", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 16 * 1024,
        .idleTimeout = 0,
        .maxBackpressure = 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = false,
        .upgrade = [](auto *res, auto *req, auto *context) {
            int channel = -1;
            std::string_view url = req->getUrl();
            if (opt_channels > 1 && url.size() > 6 && url.substr(0, 6) == "/bench") {
                channel = atoi(std::string(url.substr(6)).c_str());
                if (channel < 0 || channel >= opt_channels) channel = 0;
            } else if (opt_channels > 1) {
                channel = 0;
            }
            res->template upgrade<PerSocketData>({.channel = channel},
                req->getHeader("sec-websocket-key"),
                req->getHeader("sec-websocket-protocol"),
                req->getHeader("sec-websocket-extensions"),
                context);
        },
        .open = [](auto *ws) {
            opened++;
            int ch = ws->getUserData()->channel;
            ws->subscribe(ch < 0 ? std::string_view(topics[0]) : std::string_view(topics[(size_t) ch]));
        },
        .message = [](auto * /*ws*/, std::string_view /*message*/, uWS::OpCode /*opCode*/) {},
        .dropped = [](auto * /*ws*/, std::string_view /*message*/, uWS::OpCode /*opCode*/) { dropped++; },
        .close = [](auto * /*ws*/, int /*code*/, std::string_view /*message*/) { closed++; },
    }).listen("127.0.0.1", opt_port, [](auto *ls) {
        listen_socket = ls;
    });
    if (!listen_socket) {
        fprintf(stderr, "uws_pubsub: cannot listen on 127.0.0.1:%d\n", opt_port);
        return 1;
    }
    app_ptr = &app;

    struct us_loop_t *loop = (struct us_loop_t *) uWS::Loop::get();
    struct us_timer_t *timer = us_create_timer(loop, 0, 0);
    us_timer_set(timer, on_tick, period_ms, period_ms);

    printf("UWS listening 127.0.0.1:%d rate=%d/s/topic size=%d topics=%zu period_ms=%d\n", opt_port, opt_rate,
           opt_size, topics.size(), period_ms);
    fflush(stdout);
    app.run();
    print_stats("loop-ended");
    return 0;
}
