//! Shared by the end-to-end tests: start the binary on a free port, talk
//! HTTP/1.1 to it over a plain `TcpStream`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use wsproto::http::{self, BodyKind, Head, HeadLimits, Headers};

/// A running `mock-backend`, killed on drop.
pub struct Mock {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: BufReader<ChildStdout>,
}

impl Mock {
    /// Starts `mock-backend --listen 127.0.0.1:0 ARGS` and waits for its
    /// `listening on ADDR` line.
    pub fn start(args: &[&str]) -> Mock {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-backend"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mock-backend starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Mock {
            child,
            addr,
            stdout,
        }
    }

    /// A new keep-alive connection.
    pub fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// One request on a fresh connection.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut c = self.connect();
        c.send(&post(path, headers, body));
        c.read().expect("a response")
    }

    /// `GET /stats` as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let mut c = self.connect();
        c.send(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.read().expect("a response");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).unwrap()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `POST` with a `Content-Length` body.
pub fn post(path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    http::request("POST", path, "mock", headers, body.as_bytes())
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next response; `None` at end of stream before any byte of it.
    pub fn read(&mut self) -> Option<Resp> {
        const LIMITS: HeadLimits = HeadLimits {
            max_bytes: 64 * 1024,
            max_headers: 64,
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let head = http::with_response(&self.buf, LIMITS, |h| match h {
                Head::Incomplete => None,
                Head::Invalid(r) => panic!("bad response: {r:?}"),
                Head::Complete(r) => {
                    let len = match r.body(false).unwrap() {
                        BodyKind::Length(n) => n,
                        other => panic!("unexpected framing {other:?}"),
                    };
                    let headers = r
                        .fields()
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    Some((r.status, headers, r.keep_alive(), r.head_len, len))
                }
            });
            if let Some((status, headers, keep_alive, head_len, len)) = head {
                if self.buf.len() >= head_len + len {
                    let body = self.buf[head_len..head_len + len].to_vec();
                    self.buf.drain(..head_len + len);
                    return Some(Resp {
                        status,
                        headers,
                        body,
                        keep_alive,
                    });
                }
            }
            let n = self.stream.read(&mut chunk).expect("read");
            if n == 0 {
                assert!(self.buf.is_empty(), "EOF inside a response");
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server closed the connection (EOF, nothing pending).
    pub fn at_eof(&mut self) -> bool {
        let mut b = [0u8; 1];
        self.buf.is_empty() && matches!(self.stream.read(&mut b), Ok(0))
    }
}
