//! The client side of one HTTP/1.1 exchange, sans-IO: feed it what the
//! server sends and it says when a whole response (head and body) has
//! arrived. Bodies by `Content-Length`, chunked, or to end of stream;
//! interim `1xx` answers skipped; every size bounded.
//!
//! The gateway's upstream client drives one [`ResponseReader`] per request
//! on a keep-alive connection. Requests are not pipelined, so bytes after a
//! complete response can only be a misbehaving server: they are reported
//! and the connection must not be reused.

use crate::http::{self, BodyKind, ChunkedDecoder, ChunkedError, Head, HeadLimits};

/// A complete response, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Header fields in order (names as sent).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
}

impl ClientResponse {
    /// The first value of `name` (ASCII case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as UTF-8 text, if it is.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Why a response could not be read. Each means the connection is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not an HTTP/1.x response head, or over the head limits.
    #[error("malformed response head ({0})")]
    Head(&'static str),
    /// Framing headers that cannot be honoured.
    #[error("bad response framing ({0})")]
    Framing(&'static str),
    /// A malformed chunked body.
    #[error("malformed chunked body")]
    Chunked,
    /// The body is over the limit.
    #[error("response body over {0} bytes")]
    TooLarge(usize),
    /// The server closed before the response was complete.
    #[error("connection closed after {0} bytes of the response")]
    Truncated(usize),
    /// The server sent bytes after the response (nothing was asked).
    #[error("{0} unexpected bytes after the response")]
    Trailing(usize),
}

/// Progress of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Wait for more bytes.
    Incomplete,
    /// The response is complete.
    Done(ClientResponse),
}

#[derive(Debug)]
enum State {
    /// Collecting the head.
    Head,
    /// Reading a body of `left` more bytes.
    Length { left: usize },
    /// Decoding a chunked body.
    Chunked(ChunkedDecoder),
    /// Reading until the server closes.
    ToEof,
    /// Finished (or failed): nothing more is accepted.
    Done,
}

/// Reads one response; make a new one per request.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    /// The head so far (while in [`State::Head`]).
    buf: Vec<u8>,
    /// The response once its head is parsed.
    response: Option<ClientResponse>,
    limits: HeadLimits,
    max_body: usize,
    head_request: bool,
    /// Bytes seen in total (for [`ResponseError::Truncated`]).
    seen: usize,
}

impl ResponseReader {
    /// A reader for the answer to one request (`head_request` for `HEAD`:
    /// no body whatever the headers say), refusing heads over `limits` and
    /// bodies over `max_body` bytes.
    pub fn new(limits: HeadLimits, max_body: usize, head_request: bool) -> Self {
        Self {
            state: State::Head,
            buf: Vec::new(),
            response: None,
            limits,
            max_body,
            head_request,
            seen: 0,
        }
    }

    /// True before any byte of the response has arrived: a connection that
    /// fails now never started answering (a request on a reused keep-alive
    /// connection the server had just closed may be retried elsewhere).
    pub fn untouched(&self) -> bool {
        self.seen == 0
    }

    /// Takes received bytes. After [`Progress::Done`] or an error, the
    /// reader accepts nothing more.
    pub fn feed(&mut self, data: &[u8]) -> Result<Progress, ResponseError> {
        let result = self.take(data);
        if result.is_err() {
            self.state = State::Done;
        }
        result
    }

    fn take(&mut self, data: &[u8]) -> Result<Progress, ResponseError> {
        self.seen += data.len();
        match self.state {
            State::Done if data.is_empty() => return Ok(Progress::Incomplete),
            State::Done => return Err(ResponseError::Trailing(data.len())),
            State::Head => {}
            _ => return self.body(data),
        }
        self.buf.extend_from_slice(data);
        loop {
            let Some(used) = self.parse_head()? else {
                return Ok(Progress::Incomplete);
            };
            // Keep what follows the head: body bytes, or the real response
            // after an interim 1xx.
            self.buf = self.buf.split_off(used);
            if self.response.is_some() {
                let rest = std::mem::take(&mut self.buf);
                return self.body(&rest);
            }
            if self.buf.is_empty() {
                return Ok(Progress::Incomplete);
            }
        }
    }

    /// The server closed its side: completes a body that runs to the end of
    /// the stream, else reports the truncation.
    pub fn eof(&mut self) -> Result<ClientResponse, ResponseError> {
        match self.state {
            State::ToEof => {
                self.state = State::Done;
                let mut r = self.response.take().expect("head parsed");
                r.keep_alive = false;
                Ok(r)
            }
            _ => {
                self.state = State::Done;
                Err(ResponseError::Truncated(self.seen))
            }
        }
    }

    /// Parses the head in `buf`. `Some(head length)` once complete (with
    /// `response` set, or left `None` for an interim 1xx).
    fn parse_head(&mut self) -> Result<Option<usize>, ResponseError> {
        let (limits, head_request, max_body) = (self.limits, self.head_request, self.max_body);
        let parsed = http::with_response(&self.buf, limits, |head| match head {
            Head::Incomplete => Ok(None),
            Head::Invalid(r) => Err(ResponseError::Head(r.reason)),
            Head::Complete(resp) => {
                if (100..200).contains(&resp.status) {
                    if resp.status == 101 {
                        return Err(ResponseError::Head("unexpected 101"));
                    }
                    return Ok(Some((resp.head_len, None)));
                }
                let kind = resp
                    .body(head_request)
                    .map_err(|r| ResponseError::Framing(r.reason))?;
                if let BodyKind::Length(n) = kind {
                    if n > max_body {
                        return Err(ResponseError::TooLarge(max_body));
                    }
                }
                let response = ClientResponse {
                    status: resp.status,
                    headers: resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), h.value.to_vec()))
                        .collect(),
                    body: Vec::new(),
                    keep_alive: resp.keep_alive() && kind != BodyKind::ToEof,
                };
                Ok(Some((resp.head_len, Some((response, kind)))))
            }
        });
        Ok(parsed?.map(|(len, found)| {
            if let Some((response, kind)) = found {
                self.state = match kind {
                    BodyKind::Length(left) => State::Length { left },
                    BodyKind::Chunked => State::Chunked(ChunkedDecoder::new(max_body)),
                    BodyKind::ToEof => State::ToEof,
                };
                self.response = Some(response);
            }
            len
        }))
    }

    /// Body bytes.
    fn body(&mut self, data: &[u8]) -> Result<Progress, ResponseError> {
        let response = self.response.as_mut().expect("head parsed");
        let used = match &mut self.state {
            State::Length { left } => {
                let take = (*left).min(data.len());
                response.body.extend_from_slice(&data[..take]);
                *left -= take;
                if *left > 0 {
                    return Ok(Progress::Incomplete);
                }
                take
            }
            State::Chunked(decoder) => {
                let used = decoder
                    .decode(data, &mut response.body)
                    .map_err(|e| match e {
                        ChunkedError::Malformed => ResponseError::Chunked,
                        ChunkedError::TooLarge(n) => ResponseError::TooLarge(n),
                    })?;
                if !decoder.is_done() {
                    return Ok(Progress::Incomplete);
                }
                used
            }
            State::ToEof => {
                if response.body.len() + data.len() > self.max_body {
                    return Err(ResponseError::TooLarge(self.max_body));
                }
                response.body.extend_from_slice(data);
                return Ok(Progress::Incomplete);
            }
            State::Head | State::Done => unreachable!("body() only after the head"),
        };
        self.state = State::Done;
        if used < data.len() {
            return Err(ResponseError::Trailing(data.len() - used));
        }
        Ok(Progress::Done(self.response.take().expect("head parsed")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_headers: 16,
    };

    fn read_all(pieces: &[&[u8]]) -> Result<Progress, ResponseError> {
        let mut r = ResponseReader::new(LIMITS, 100, false);
        let mut last = Ok(Progress::Incomplete);
        for p in pieces {
            last = r.feed(p);
            if !matches!(last, Ok(Progress::Incomplete)) {
                break;
            }
        }
        last
    }

    fn done(p: Result<Progress, ResponseError>) -> ClientResponse {
        match p {
            Ok(Progress::Done(r)) => r,
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn content_length_in_any_split() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-User-Id: 7\r\n\r\nhello";
        for cut in 1..wire.len() {
            let r = done(read_all(&[&wire[..cut], &wire[cut..]]));
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"hello");
            assert!(r.keep_alive);
            assert_eq!(r.header_str("x-user-id"), Some("7"));
        }
    }

    #[test]
    fn chunked_and_empty_bodies() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n";
        for cut in 1..wire.len() {
            let r = done(read_all(&[&wire[..cut], &wire[cut..]]));
            assert_eq!(r.body, b"abcde", "cut {cut}");
        }
        let r = done(read_all(&[b"HTTP/1.1 204 No Content\r\n\r\n"]));
        assert_eq!((r.status, r.body.len()), (204, 0));
        let r = done(read_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]));
        assert!(r.body.is_empty());
        // A HEAD answer has no body even with a length.
        let mut head = ResponseReader::new(LIMITS, 100, true);
        let r = done(head.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn interim_responses_are_skipped() {
        let wire =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        for cut in 1..wire.len() {
            let r = done(read_all(&[&wire[..cut], &wire[cut..]]));
            assert_eq!((r.status, r.body.as_slice()), (201, &b"ok"[..]), "{cut}");
        }
    }

    #[test]
    fn body_to_end_of_stream() {
        let mut r = ResponseReader::new(LIMITS, 100, false);
        assert_eq!(
            r.feed(b"HTTP/1.1 200 OK\r\n\r\npart").unwrap(),
            Progress::Incomplete
        );
        assert_eq!(r.feed(b" two").unwrap(), Progress::Incomplete);
        let resp = r.eof().unwrap();
        assert_eq!(resp.body, b"part two");
        assert!(!resp.keep_alive);
    }

    #[test]
    fn connection_close_and_http10() {
        let r = done(read_all(&[
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ]));
        assert!(!r.keep_alive);
        let r = done(read_all(&[b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"]));
        assert!(!r.keep_alive);
    }

    #[test]
    fn errors_are_precise() {
        assert_eq!(
            read_all(&[b"SSH-2.0-OpenSSH\r\n\r\n"]),
            Err(ResponseError::Head("malformed HTTP message"))
        );
        assert_eq!(
            read_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n"]),
            Err(ResponseError::TooLarge(100))
        );
        assert_eq!(
            read_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"]),
            Err(ResponseError::Framing("conflicting Content-Length"))
        );
        assert_eq!(
            read_all(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]),
            Err(ResponseError::Chunked)
        );
        assert_eq!(
            read_all(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n"]),
            Err(ResponseError::TooLarge(100))
        );
        assert_eq!(
            read_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab"]),
            Err(ResponseError::Trailing(1))
        );
        assert_eq!(
            read_all(&[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"]),
            Err(ResponseError::Head("unexpected 101"))
        );
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(
            read_all(&[big.as_bytes()]),
            Err(ResponseError::Head("request head too large"))
        );
        let mut r = ResponseReader::new(LIMITS, 100, false);
        assert!(r.untouched());
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
            .unwrap();
        assert!(!r.untouched());
        assert_eq!(r.eof(), Err(ResponseError::Truncated(40)));
        // Nothing is accepted after an error.
        assert_eq!(r.feed(b"cd"), Err(ResponseError::Trailing(2)));
    }
}
