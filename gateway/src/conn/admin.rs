//! An admin connection: one plain HTTP request on the admin listener,
//! answered and closed. Not a client connection: not counted as one, not
//! admitted against `max_connections`, never a WebSocket.

use engine::{CloseMode, ConnId, Io};
use wsproto::http::{self, Head, HeadLimits, Reject};

/// Path of the metrics exposition on the admin listener.
pub const METRICS_PATH: &str = "/metrics";

/// What the admin connection was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRequest {
    /// Not complete yet.
    Incomplete,
    /// `GET /metrics`.
    Metrics,
    /// Anything else: the answer to send.
    Reject(Reject),
}

/// The state of an admin connection: the request head so far.
#[derive(Debug, Default)]
pub struct AdminConn {
    head: Vec<u8>,
}

impl AdminConn {
    /// Bytes arrived: what do they ask for? An incomplete head is kept.
    pub fn input(&mut self, data: &mut [u8], limits: HeadLimits) -> AdminRequest {
        let mut owned = std::mem::take(&mut self.head);
        let buffered = !owned.is_empty();
        let head = http::gather(&mut owned, data);
        let answer = http::with_request(head, limits, |h| match h {
            Head::Incomplete => AdminRequest::Incomplete,
            Head::Invalid(r) => AdminRequest::Reject(r),
            Head::Complete(req) if req.method != "GET" => {
                AdminRequest::Reject(Reject::new(405, "method must be GET"))
            }
            Head::Complete(req) if !req.target.starts_with('/') => {
                AdminRequest::Reject(Reject::new(400, "request target must be a path"))
            }
            Head::Complete(req) if req.path() == METRICS_PATH => AdminRequest::Metrics,
            Head::Complete(_) => {
                AdminRequest::Reject(Reject::new(404, "no such path; try /metrics"))
            }
        });
        if answer == AdminRequest::Incomplete {
            self.head = if buffered { owned } else { head.to_vec() };
        }
        answer
    }
}

/// Sends `response` and closes gracefully within `close_ms`.
pub fn answer(io: &mut Io, id: ConnId, response: Vec<u8>, close_ms: u64) {
    let _ = io.send(id, response.into());
    io.close(id, CloseMode::Graceful);
    io.set_deadline(id, io.now_ms() + close_ms);
}
