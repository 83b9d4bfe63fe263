//! Shared helpers for the gateway integration tests.
//!
//! * [`Gateway::start`] runs the real `gateway` binary with a base
//!   configuration plus TOML overrides, on `127.0.0.1:0`, and kills it on drop.
//!   It returns `None` (after printing `SKIP: io_uring unavailable: ...`) only
//!   when the gateway exits at start-up with `io_uring_setup failed` (the ring itself is unavailable).
//! * Plain HTTP exchanges over raw TCP ([`http_exchange`], [`read_http_head`]).
//! * Raw WebSocket frames: [`frame`] / [`encode_frame`] build masked (or
//!   deliberately broken) client frames, [`read_frame`] reads one server frame,
//!   [`expect_close`] checks a close code followed by EOF.
//! * tungstenite clients ([`ws_connect`]) for everything well-formed.
//! * `/metrics` from the admin listener ([`Gateway::metrics`]), parsed into
//!   samples ([`Metrics`]).
//!
//! Every socket gets read and write timeouts, so no test can hang.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Read/write timeout of every test socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the gateway may take to print its "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The client key every raw upgrade request uses (RFC 6455's example) and the
/// accept value the server must answer with.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Configuration every test starts from; overrides are merged on top.
/// One unpinned worker and a modest buffer ring keep many gateways running in
/// parallel cheap.
const BASE_CONFIG: &str = r#"
[server]
workers = 1
pin_workers = false
max_connections = 10000

[io]
recv_buffers = 512

[log]
level = "warn"
"#;

/// A running gateway process. Killed (SIGKILL) and reaped on drop unless it
/// already exited; its temporary directory is removed.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    exit: Option<ExitStatus>,
    /// The bound address, parsed from the start-up line.
    pub addr: SocketAddr,
    /// Worker count reported in the start-up line.
    pub workers: usize,
    /// The admin listener's address, when the configuration has one.
    pub admin: Option<SocketAddr>,
    dir: PathBuf,
}

impl Gateway {
    /// Starts the gateway with `overrides` (TOML, merged table by table into
    /// [`BASE_CONFIG`]) and waits for its "listening" line.
    ///
    /// Returns `None` when io_uring is unavailable (the caller returns, i.e.
    /// skips); panics on any other start-up failure.
    pub fn start(overrides: &str) -> Option<Gateway> {
        Self::start_on("127.0.0.1:0", overrides)
    }

    /// [`Gateway::start`] on a given `--listen` address.
    pub fn start_on(listen: &str, overrides: &str) -> Option<Gateway> {
        let dir = unique_dir();
        let config_path = dir.join("gateway.toml");
        let config = merged_config(overrides);
        let has_admin = toml::from_str::<toml::Table>(&config)
            .ok()
            .and_then(|t| t.get("admin")?.get("listen").cloned())
            .is_some();
        std::fs::write(&config_path, config).expect("write config");
        let stderr_path = dir.join("stderr.log");
        let stderr = File::create(&stderr_path).expect("create stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(listen)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn gateway binary");

        // Read stdout on a thread so the wait can time out. It keeps reading
        // (and discarding) to the end, so the gateway never writes to a
        // closed pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = io::BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match io::BufRead::read_line(&mut reader, &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let _ = tx.send(line);
                    }
                }
            }
        });

        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed without the line: the gateway exited.
                let status = child.wait().expect("wait for gateway");
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                if !status.success() && log.contains("io_uring_setup") {
                    eprintln!("SKIP: io_uring unavailable: {}", log.trim());
                    return None;
                }
                panic!("gateway exited at start-up ({status}) with stderr:\n{log}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "gateway printed no listening line within {START_TIMEOUT:?}; stderr:\n{log}"
                );
            }
        };
        let (addr, workers) = parse_listening_line(&line)
            .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
        let admin = has_admin.then(|| {
            let line = rx
                .recv_timeout(START_TIMEOUT)
                .expect("the admin listening line follows the first one");
            line.trim_end()
                .strip_prefix("admin listening on ")
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("unexpected admin line {line:?}"))
        });
        Some(Gateway {
            child,
            exit: None,
            addr,
            workers,
            admin,
            dir,
        })
    }

    /// `ws://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The echo URL with the default `echo_path`.
    pub fn echo_url(&self) -> String {
        self.url("/echo")
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child, which has not been reaped (we hold the `Child`).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", io::Error::last_os_error());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `GET /metrics` from the admin listener: the body of a `200`.
    #[track_caller]
    pub fn metrics(&self) -> Metrics {
        let admin = self.admin.expect("gateway started without [admin] listen");
        let response = http_exchange(
            admin,
            b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(
            response.header("Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        Metrics::parse(&response.body_text())
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- gateway {} stderr (last lines) ---", self.addr);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique_dir() -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "gateway-it-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// [`BASE_CONFIG`] with `overrides` merged in (tables recursively, other
/// values replaced).
pub fn merged_config(overrides: &str) -> String {
    fn merge(base: &mut toml::Table, over: toml::Table) {
        for (key, value) in over {
            match (base.get_mut(&key), value) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
                (_, value) => {
                    base.insert(key, value);
                }
            }
        }
    }
    let mut base: toml::Table = toml::from_str(BASE_CONFIG).expect("base config parses");
    let over: toml::Table = toml::from_str(overrides)
        .unwrap_or_else(|e| panic!("test config overrides do not parse: {e}\n{overrides}"));
    merge(&mut base, over);
    toml::to_string(&base).expect("config serializes")
}

/// Parses `gateway listening on 127.0.0.1:PORT with N workers`.
fn parse_listening_line(line: &str) -> Option<(SocketAddr, usize)> {
    let rest = line.trim_end().strip_prefix("gateway listening on ")?;
    let (addr, rest) = rest.split_once(" with ")?;
    let workers = rest.strip_suffix(" workers")?.parse().ok()?;
    Some((addr.parse().ok()?, workers))
}

// ---------------------------------------------------------------------------
// Raw TCP and HTTP
// ---------------------------------------------------------------------------

/// A TCP connection with read/write timeouts and `TCP_NODELAY`.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A valid upgrade request for `path` with `extra` header lines (each ending
/// in `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// `request` with every header line whose name is `name` removed.
pub fn without_header(request: &str, name: &str) -> String {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    request
        .split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with(&prefix))
        .collect()
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line, e.g. `HTTP/1.1 404 Not Found`.
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The server closed the connection (EOF) after the response.
    pub closed: bool,
}

impl HttpResponse {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads a response head byte by byte (so no bytes after it are consumed)
/// and parses the status line and headers. The body is left unread.
pub fn read_http_head(stream: &mut TcpStream) -> io::Result<HttpResponse> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "EOF inside the response head after {:?}",
                    String::from_utf8_lossy(&head)
                ),
            ));
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("response head over 64 KiB"));
        }
    }
    let text = String::from_utf8(head).map_err(|e| io::Error::other(e.to_string()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            (name.trim().to_string(), value.trim().to_string())
        })
        .collect();
    Ok(HttpResponse {
        status,
        status_line,
        headers,
        body: Vec::new(),
        closed: false,
    })
}

/// Reads a full non-101 response: head, `Content-Length` body, then checks
/// whether the server closes the connection (EOF within [`IO_TIMEOUT`]).
pub fn read_http_response(stream: &mut TcpStream) -> io::Result<HttpResponse> {
    let mut response = read_http_head(stream)?;
    let length: usize = response
        .header("Content-Length")
        .map(|v| v.parse().expect("numeric Content-Length"))
        .unwrap_or(0);
    response.body = vec![0; length];
    stream.read_exact(&mut response.body)?;
    let mut rest = [0u8; 256];
    response.closed = matches!(stream.read(&mut rest), Ok(0));
    Ok(response)
}

/// Sends `request` on a fresh connection and reads the whole response.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = tcp(addr);
    stream.write_all(request).expect("send request");
    read_http_response(&mut stream).unwrap_or_else(|e| {
        panic!(
            "no HTTP response to {:?}: {e}",
            String::from_utf8_lossy(&request[..request.len().min(200)])
        )
    })
}

/// Asserts the status of the response to `request` and that the server
/// closed the connection after it.
#[track_caller]
pub fn assert_rejected(addr: SocketAddr, request: &[u8], status: u16) -> HttpResponse {
    let response = http_exchange(addr, request);
    assert_eq!(
        response.status,
        status,
        "request {:?} got {response:?}",
        String::from_utf8_lossy(&request[..request.len().min(300)])
    );
    assert!(
        response.closed,
        "server did not close the connection after {}",
        response.status_line
    );
    response
}

/// Completes a raw upgrade on `/echo` and returns the socket positioned at
/// the first frame.
pub fn raw_ws(addr: SocketAddr) -> TcpStream {
    raw_ws_with(addr, &upgrade_request("/echo", ""))
}

/// Sends `request`, asserts `101` with the right accept key.
pub fn raw_ws_with(addr: SocketAddr, request: &str) -> TcpStream {
    let mut stream = tcp(addr);
    stream.write_all(request.as_bytes()).expect("send upgrade");
    let head = read_http_head(&mut stream).expect("upgrade response");
    assert_eq!(head.status, 101, "upgrade refused: {head:?}");
    assert_eq!(
        head.header("Sec-WebSocket-Accept"),
        Some(ACCEPT),
        "{head:?}"
    );
    stream
}

// ---------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

pub const FIN: u8 = 0x80;
pub const RSV1: u8 = 0x40;
pub const RSV2: u8 = 0x20;
pub const RSV3: u8 = 0x10;

/// A fresh, non-trivial masking key per call.
pub fn next_mask() -> [u8; 4] {
    static SEQ: AtomicU32 = AtomicU32::new(0x9e37_79b9);
    let n = SEQ
        .fetch_add(0x6a09_e667, Ordering::Relaxed)
        .wrapping_mul(0x85eb_ca6b);
    let mask = n.to_be_bytes();
    if mask == [0; 4] {
        [1, 2, 3, 4]
    } else {
        mask
    }
}

/// The header of a frame: `first` is FIN | RSV | opcode, `len` the payload
/// length announced (which may be far more than will ever be sent).
pub fn frame_header(first: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
    out
}

/// A complete frame with an arbitrary first byte, masked when `mask` is set.
pub fn encode_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = frame_header(first, payload.len() as u64, mask);
    match mask {
        Some(mask) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A well-formed masked client frame.
pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let first = if fin { FIN } else { 0 } | opcode;
    encode_frame(first, payload, Some(next_mask()))
}

/// A masked client close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(OP_CLOSE, true, &payload)
}

/// One frame as received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    /// The three RSV bits, in place (0x40 | 0x20 | 0x10).
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame with a payload.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn close_reason(&self) -> String {
        String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default()).into_owned()
    }
}

/// Reads exactly one frame (any size up to 64 MiB).
pub fn read_frame(stream: &mut TcpStream) -> io::Result<RawFrame> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let masked = head[1] & 0x80 != 0;
    let mut mask = [0u8; 4];
    if masked {
        stream.read_exact(&mut mask)?;
    }
    if len > 64 << 20 {
        return Err(io::Error::other(format!(
            "server announced a {len}-byte frame"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(RawFrame {
        fin: head[0] & 0x80 != 0,
        rsv: head[0] & 0x70,
        opcode: head[0] & 0x0f,
        masked,
        payload,
    })
}

/// Reads one frame, panicking with context on failure.
#[track_caller]
pub fn must_read_frame(stream: &mut TcpStream, what: &str) -> RawFrame {
    match read_frame(stream) {
        Ok(frame) => frame,
        Err(e) => panic!("reading {what}: {e}"),
    }
}

/// Asserts the next read returns EOF (the server closed its side).
#[track_caller]
pub fn expect_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "expected EOF, got {n} more bytes: {:02x?}",
            &buf[..n.min(32)]
        ),
        Err(e) => panic!("expected EOF, got error {e} (kind {:?})", e.kind()),
    }
}

/// Asserts the next frame is an unmasked close frame with `code`, followed by
/// EOF. Returns the frame.
#[track_caller]
pub fn expect_close(stream: &mut TcpStream, code: u16) -> RawFrame {
    let frame = must_read_frame(stream, &format!("close frame {code}"));
    assert_eq!(
        frame.opcode, OP_CLOSE,
        "expected a close frame, got {frame:?}"
    );
    assert!(frame.fin && !frame.masked && frame.rsv == 0, "{frame:?}");
    assert_eq!(
        frame.close_code(),
        Some(code),
        "close reason {:?}",
        frame.close_reason()
    );
    expect_eof(stream);
    frame
}

// ---------------------------------------------------------------------------
// tungstenite clients
// ---------------------------------------------------------------------------

/// A blocking tungstenite client over a plain TCP stream.
pub type Ws = WebSocket<TcpStream>;

/// Connects and upgrades with tungstenite, with socket timeouts and `config`.
pub fn try_ws_connect(
    addr: SocketAddr,
    request: impl IntoClientRequest,
    config: Option<WebSocketConfig>,
) -> Result<(Ws, Response), tungstenite::Error> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    tungstenite::client::client_with_config(request, stream, config).map_err(|e| match e {
        HandshakeError::Failure(e) => e,
        HandshakeError::Interrupted(_) => tungstenite::Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake timed out",
        )),
    })
}

/// An echo client on `gw`'s `/echo`; panics if the upgrade fails.
#[track_caller]
pub fn ws_connect(gw: &Gateway) -> Ws {
    match try_ws_connect(gw.addr, gw.echo_url(), None) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("WebSocket connect to {}: {e}", gw.echo_url()),
    }
}

/// Sends `message` and asserts the next message is identical.
#[track_caller]
pub fn assert_echo(ws: &mut Ws, message: Message) {
    ws.send(message.clone()).expect("send");
    let reply = ws.read().expect("read echo");
    assert_eq!(reply, message, "echo differs");
}

/// Client-initiated close handshake; returns once the server closed TCP.
#[track_caller]
pub fn ws_close(mut ws: Ws) {
    ws.close(None).expect("send close");
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => return,
            Err(e) => panic!("closing: {e}"),
        }
    }
}

/// Opens a fresh echo connection, echoes a message and closes it: the
/// gateway is still serving.
#[track_caller]
pub fn assert_still_serving(gw: &Gateway) {
    let mut ws = ws_connect(gw);
    assert_echo(&mut ws, Message::text("still serving?"));
    ws_close(ws);
}

/// Retries `attempt` every 20 ms until it returns `Some` or `timeout` passes.
pub fn retry<T>(timeout: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = attempt() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------

/// The samples of one `/metrics` exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// (metric name, labels, value), in exposition order.
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
    /// `# TYPE` lines: family name to type.
    pub types: BTreeMap<String, String>,
    /// The raw text.
    pub text: String,
}

impl Metrics {
    /// Parses the text format (the subset the gateway emits: no escapes in
    /// label values, no timestamps).
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    let labels = body
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label has =");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Metrics {
            samples,
            types,
            text: text.to_string(),
        }
    }

    /// Sum of the samples named `name` whose labels include all of `labels`
    /// (e.g. summed over workers); `None` if there is no such sample.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for (n, l, v) in &self.samples {
            if n == name
                && labels
                    .iter()
                    .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want))
            {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// [`Metrics::sum`], panicking when the series is missing.
    #[track_caller]
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in:\n{}", self.text))
    }
}

/// A cluster node's pub/sub settings (two workers, anonymous clients may
/// subscribe and publish, HS256 secret "s", API key "k"); the cluster tests
/// add `[admin]` and `[broker]`.
pub const CLUSTER_NODE: &str = r#"
[server]
workers = 2

[[routes]]
path = "/connection/websocket"
app = "pubsub"

[pubsub]
allow_anonymous = true
token_hmac_secret = "s"

[pubsub.without_namespace]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true

[api]
key = "k"
"#;
