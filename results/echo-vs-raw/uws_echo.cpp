/* uws_echo: uWebSockets (C++, uSockets' epoll loop) as a third server of the
 * echo benchmarks (results/echo-vs-raw/run.sh, results/low-rate/run.sh),
 * beside the gateway and the raw io_uring echo. Built by build-uws.sh.
 *
 * One thread, one event loop. Every path is upgraded (client.c asks for
 * /echo); each message is sent back as it came: ws->send(message, opCode).
 *
 * Settings, chosen so that only the echo itself is compared:
 *   no compression, no TLS;
 *   maxPayloadLength 16 MiB (the gateway's limits.max_message_bytes);
 *   idleTimeout 0 = off (the gateway's timeouts.idle_ms is 120 s, never
 *     reached in these runs);
 *   sendPingsAutomatically off: the gateway pings a connection only after
 *     timeouts.ping_interval_ms = 30 s without receiving anything, which
 *     never happens in these runs (every connection sends at least every
 *     few seconds), so neither server pings;
 *   maxBackpressure 16 MiB, closeOnBackpressureLimit off (with one message
 *     in flight per connection it never fills).
 *
 * Usage: uws_echo PORT    (0: an ephemeral port)
 * Prints "listening on 127.0.0.1:PORT" (the actual port) on stdout, flushed,
 * once listening: the line raw_echo prints, which the scripts wait for.
 * SIGTERM / SIGINT: default action (exit).
 */
#include "App.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>

struct PerSocketData {};

int main(int argc, char **argv) {
    char *end = nullptr;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc != 2 || *argv[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "usage: uws_echo PORT   (0: ephemeral)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct us_listen_socket_t *listen_socket = nullptr;
    uWS::App app;
    app.ws<PerSocketData>("/*", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 16 * 1024 * 1024,
        .idleTimeout = 0,
        .maxBackpressure = 16 * 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = false,
        .message = [](auto *ws, std::string_view message, uWS::OpCode opCode) {
            ws->send(message, opCode);
        },
    }).listen("127.0.0.1", (int) port, [&listen_socket](auto *ls) {
        listen_socket = ls;
    });
    if (!listen_socket) {
        fprintf(stderr, "uws_echo: cannot listen on 127.0.0.1:%ld\n", port);
        return 1;
    }
    printf("listening on 127.0.0.1:%d\n", us_socket_local_port(0, (struct us_socket_t *) listen_socket));
    fflush(stdout);
    app.run();
    return 0;
}
