//! Every metric family the gateway exports, declared once: its name, type
//! and help text. Registration (`telemetry::WorkerMetrics`), descriptions
//! (`# HELP`/`# TYPE`) and hand-rendered series all read from here, so a
//! name cannot drift between two places.

/// A metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Explicit buckets.
    Histogram,
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Prometheus name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// `# HELP` text.
    pub help: &'static str,
}

/// Histograms kept as [`super::histogram::LocalHistogram`]s and rendered
/// by hand (not registered with the recorder).
pub const LOCAL_HISTOGRAMS: [Family; 2] = [MESSAGE_LATENCY, UPSTREAM_DURATION];

macro_rules! families {
    ($($(#[$attr:meta])* $id:ident = $name:literal, $kind:ident, $help:literal;)*) => {
        $(
            $(#[$attr])*
            pub const $id: Family = Family { name: $name, kind: Kind::$kind, help: $help };
        )*
        /// Every family, in exposition order of their descriptions.
        pub const ALL: &[Family] = &[$($id),*];
    };
}

families! {
    BUILD_INFO = "gateway_build_info", Gauge,
        "Always 1; labels carry the gateway version and build profile.";
    CONNECTIONS_LIMIT = "gateway_connections_limit", Gauge,
        "Configured server.max_connections (across all workers).";
    CONNECTIONS_ACTIVE = "gateway_connections_active", Gauge,
        "Client connections open (HTTP, WebSocket or closing) on the worker.";
    CONNECTIONS_ACCEPTED_TOTAL = "gateway_connections_accepted_total", Counter,
        "Client connections accepted.";
    CONNECTIONS_CLOSED_TOTAL = "gateway_connections_closed_total", Counter,
        "Client connections closed, by reason (normal, error, timeout, slow_consumer, shutdown).";
    WEBSOCKET_UPGRADES_TOTAL = "gateway_websocket_upgrades_total", Counter,
        "Handshakes answered with 101 Switching Protocols.";
    HEALTH_CHECKS_TOTAL = "gateway_health_checks_total", Counter,
        "Health checks answered with 200.";
    HANDSHAKE_REJECTIONS_TOTAL = "gateway_handshake_rejections_total", Counter,
        "Requests refused before the upgrade, by HTTP status.";
    MESSAGES_RECEIVED_TOTAL = "gateway_messages_received_total", Counter,
        "Complete WebSocket messages received.";
    MESSAGES_SENT_TOTAL = "gateway_messages_sent_total", Counter,
        "WebSocket messages queued for sending.";
    MESSAGE_RECEIVED_BYTES_TOTAL = "gateway_message_received_bytes_total", Counter,
        "Payload bytes of WebSocket messages received.";
    MESSAGE_SENT_BYTES_TOTAL = "gateway_message_sent_bytes_total", Counter,
        "Payload bytes of WebSocket messages queued for sending.";
    FRAMES_RECEIVED_TOTAL = "gateway_frames_received_total", Counter,
        "WebSocket frames received, by opcode class.";
    FRAMES_SENT_TOTAL = "gateway_frames_sent_total", Counter,
        "WebSocket frames queued for sending, by opcode class.";
    CLOSE_FRAMES_SENT_TOTAL = "gateway_close_frames_sent_total", Counter,
        "Close frames sent, by close code (none = empty payload).";
    CLOSE_FRAMES_RECEIVED_TOTAL = "gateway_close_frames_received_total", Counter,
        "Close frames received, by close code (none = empty payload).";
    ABNORMAL_CLOSURES_TOTAL = "gateway_abnormal_closures_total", Counter,
        "WebSockets that ended without a close frame from the peer (1006).";
    ENGINE_ACCEPT_ERRORS_TOTAL = "gateway_engine_accept_errors_total", Counter,
        "Accept completions that failed (e.g. EMFILE).";
    ENGINE_RECV_ENOBUFS_TOTAL = "gateway_engine_recv_enobufs_total", Counter,
        "Multishot receives ended by an empty provided-buffer ring (ENOBUFS), re-armed.";
    ENGINE_RECV_REARMS_TOTAL = "gateway_engine_recv_rearms_total", Counter,
        "Multishot receives ended by the kernel for another reason, re-armed.";
    ENGINE_RECV_ERRORS_TOTAL = "gateway_engine_recv_errors_total", Counter,
        "Receive completions with a socket error.";
    ENGINE_SEND_ERRORS_TOTAL = "gateway_engine_send_errors_total", Counter,
        "Send completions with a socket error.";
    ENGINE_STALE_COMPLETIONS_TOTAL = "gateway_engine_stale_completions_total", Counter,
        "Completions for a released or reused slot, ignored (nonzero is an engine bug).";
    ENGINE_CQ_OVERFLOW_TOTAL = "gateway_engine_cq_overflow_total", Counter,
        "Completions the kernel dropped because the completion queue was full.";
    ENGINE_CQ_OVERFLOW_ITERATIONS_TOTAL = "gateway_engine_cq_overflow_iterations_total", Counter,
        "Loop iterations that found completions waiting in the kernel's CQ overflow list.";
    ENGINE_COMPLETIONS_TOTAL = "gateway_engine_completions_total", Counter,
        "Completions reaped from the ring.";
    ENGINE_LOOP_ITERATIONS_TOTAL = "gateway_engine_loop_iterations_total", Counter,
        "Event loop iterations (ring waits).";
    ENGINE_SQ_BACKLOG_ENTRIES = "gateway_engine_sq_backlog_entries", Gauge,
        "Submissions waiting for room in the submission queue.";
    ENGINE_SQ_BACKLOG_PEAK_ENTRIES = "gateway_engine_sq_backlog_peak_entries", Gauge,
        "Most submissions ever waiting for room in the submission queue.";
    ENGINE_SEND_QUEUE_BYTES = "gateway_engine_send_queue_bytes", Gauge,
        "Bytes queued for sending and not yet sent, over the worker's connections.";
    ENGINE_TIMER_ENTRIES = "gateway_engine_timer_entries", Gauge,
        "Entries in the worker's timing wheel.";
    ENGINE_SLOTS_IN_USE = "gateway_engine_slots_in_use", Gauge,
        "Connection slots held (client, admin and closing connections), until their last completion.";
    HANDSHAKE_DURATION = "gateway_handshake_duration_seconds", Histogram,
        "Time from accept to a validated upgrade request (101 queued).";
    MESSAGE_LATENCY = "gateway_message_latency_seconds", Histogram,
        "Time from a message's arrival (fully received) to the completion of the send carrying its reply; one receive in admin.latency_sample_every is sampled.";
    PUBSUB_CLIENTS = "gateway_pubsub_clients", Gauge,
        "Pub/sub connections that completed connect, on the worker.";
    PUBSUB_USERS = "gateway_pubsub_users", Gauge,
        "Distinct users among them (anonymous not counted; a user on two workers counts on both).";
    PUBSUB_CHANNELS = "gateway_pubsub_channels", Gauge,
        "Channels with at least one subscriber on the worker.";
    PUBSUB_SUBSCRIPTIONS = "gateway_pubsub_subscriptions", Gauge,
        "Channel subscriptions of the worker's connections.";
    PUBSUB_PUBLICATIONS_TOTAL = "gateway_pubsub_publications_total", Counter,
        "Publications accepted, by source (api, client).";
    PUBSUB_DELIVERIES_TOTAL = "gateway_pubsub_deliveries_total", Counter,
        "Publication copies queued to subscribers.";
    PUBSUB_DROPS_TOTAL = "gateway_pubsub_drops_total", Counter,
        "Publication copies not delivered, by reason (slow_consumer: drop policy; mailbox_full: a worker's mailbox).";
    PUBSUB_ERRORS_TOTAL = "gateway_pubsub_errors_total", Counter,
        "Error replies of the Centrifugo protocol, by code.";
    PUBSUB_DISCONNECTS_TOTAL = "gateway_pubsub_disconnects_total", Counter,
        "Disconnects of the Centrifugo protocol (close codes), by code.";
    API_REQUESTS_TOTAL = "gateway_api_requests_total", Counter,
        "Server API requests, by endpoint and HTTP status.";
    UPSTREAM_REQUESTS_TOTAL = "gateway_upstream_requests_total", Counter,
        "Backend calls, by backend and outcome (status class, or unavailable, overloaded, timeout, bad_response).";
    UPSTREAM_DURATION = "gateway_upstream_duration_seconds", Histogram,
        "Time from a backend call being made to its answer being complete (answered calls only).";
    UPSTREAM_IN_FLIGHT = "gateway_upstream_in_flight", Gauge,
        "Backend calls written to a connection and not yet answered.";
    UPSTREAM_QUEUED = "gateway_upstream_queued", Gauge,
        "Backend calls waiting for a pooled connection.";
    UPSTREAM_CONNECTIONS = "gateway_upstream_connections", Gauge,
        "Connections to the backend, open or connecting.";
    UPSTREAM_CONNECTS_TOTAL = "gateway_upstream_connects_total", Counter,
        "Connects started to the backend.";
    UPSTREAM_CONNECT_FAILURES_TOTAL = "gateway_upstream_connect_failures_total", Counter,
        "Connects to the backend that failed or timed out.";
    UPSTREAM_RETRIES_TOTAL = "gateway_upstream_retries_total", Counter,
        "Calls sent again because a reused keep-alive connection closed before answering.";
    UPSTREAM_CIRCUIT_STATE = "gateway_upstream_circuit_state", Gauge,
        "The backend's circuit breaker on the worker: 0 closed, 1 half-open, 2 open.";
    UPSTREAM_CIRCUIT_OPENED_TOTAL = "gateway_upstream_circuit_opened_total", Counter,
        "Times the backend's circuit opened.";
    UPSTREAM_FAILURE_ANSWERS_TOTAL = "gateway_upstream_failure_answers_total", Counter,
        "Client messages answered with the route's failure answer (error message or close), by reason.";
    BROKER_UP = "gateway_broker_up", Gauge,
        "1 while every broker connection of the node is up, 0 while the node is degraded (cluster only).";
    BROKER_PUBLISHED_TOTAL = "gateway_broker_published_total", Counter,
        "Publications sent to the broker.";
    BROKER_RECEIVED_TOTAL = "gateway_broker_received_total", Counter,
        "Publications received from the broker for local subscribers.";
    BROKER_DROPPED_TOTAL = "gateway_broker_dropped_total", Counter,
        "Publications refused or lost on the broker path (broker down, queue or mailbox full).";
    BROKER_MALFORMED_TOTAL = "gateway_broker_malformed_total", Counter,
        "Messages from the broker that were not understood.";
    BROKER_RECONNECTS_TOTAL = "gateway_broker_reconnects_total", Counter,
        "Broker connections re-established after a loss.";
    BROKER_CHANNELS = "gateway_broker_channels", Gauge,
        "Broker subscriptions the node holds for channels: one per channel with placement thread, one per channel per worker holding it with placement workers.";
    BROKER_CONNECTIONS = "gateway_broker_connections", Gauge,
        "Broker connections up (the broker thread's, and each worker's with placement workers).";
    BROKER_COMMANDS_TOTAL = "gateway_broker_commands_total", Counter,
        "Subscribe and unsubscribe commands sent to the broker (each may carry many channels).";
    BROKER_RESYNCED_TOTAL = "gateway_broker_resynced_total", Counter,
        "Subscriptions ended with 2500 insufficient state after a broker connection came back.";
    BROKER_UNCONFIRMED_TOTAL = "gateway_broker_unconfirmed_total", Counter,
        "Channel subscriptions a worker asked for that the broker could not confirm (connection down or lost); their subscribers got error 100.";
}
