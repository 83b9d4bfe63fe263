//! A client connection: the sans-IO WebSocket [`Session`] driven by the
//! engine, with the route's application behind it.
//!
//! `Driver` is the session's [`Sink`]: it turns the session's requests
//! into engine operations (queue bytes, close, deadline), hands upgrade
//! requests and messages to the app, and counts what the session reports.

use bytes::Bytes;
use engine::{CloseMode, ConnId, Io};
use wsproto::codec::MessageKind;
use wsproto::http::Reject;
use wsproto::session::{
    Backpressure, Ending, Flow, Note, Opening, Refused, Session, Sink, Transport, UpgradeRequest,
};

use crate::app::{Ctx, RouteApp};
use crate::telemetry::WorkerMetrics;

/// A WebSocket that ended without a close frame (never sent on the wire).
pub(crate) const NO_CLOSE_FRAME: u16 = 1006;

/// The gateway's state of one client connection.
#[derive(Debug)]
pub struct WsConn {
    pub(crate) session: Session,
    /// How the connection is going to end, once decided (first decision).
    pub(crate) ending: Option<Ending>,
    /// Holds one of the `max_connections` admissions.
    pub(crate) admitted: bool,
    /// The route (index into the worker's apps) once upgraded.
    pub(crate) route: Option<u8>,
    /// The first close code sent or received, for the app: 0 before the
    /// upgrade, [`NO_CLOSE_FRAME`] after it until a close frame.
    pub(crate) close_code: u16,
    /// Handle of this connection's replies in flight in the worker's latency
    /// tracker ([`crate::telemetry::latency::NONE`] while none are).
    pub(crate) track: u32,
    /// Accept time ([`Io::now_us`], wrapping), for the handshake histogram.
    pub(crate) since_us: u32,
}

/// The session's sink for one callback: the engine, the app, the counters.
pub(crate) struct Driver<'a> {
    pub(crate) ctx: Ctx<'a>,
    pub(crate) apps: &'a mut [RouteApp],
    pub(crate) metrics: Option<&'a WorkerMetrics>,
    pub(crate) route: &'a mut Option<u8>,
    pub(crate) ending: &'a mut Option<Ending>,
    pub(crate) close_code: &'a mut u16,
    pub(crate) since_us: u32,
}

impl Driver<'_> {
    fn io(&mut self) -> &mut Io {
        self.ctx.io
    }

    fn id(&self) -> ConnId {
        self.ctx.id
    }
}

impl Sink for Driver<'_> {
    fn send(&mut self, bytes: Bytes, backpressure: Backpressure) -> Result<usize, Refused> {
        self.ctx.queue(bytes, backpressure)
    }

    fn close_transport(&mut self, how: Transport) {
        let mode = match how {
            Transport::Graceful => CloseMode::Graceful,
            Transport::Finish => CloseMode::Finish,
            Transport::Abort => CloseMode::Abort,
        };
        let id = self.id();
        self.io().close(id, mode);
    }

    fn set_deadline(&mut self, at_ms: u64) {
        let id = self.id();
        self.io().set_deadline(id, at_ms);
    }

    fn open(&mut self, request: &UpgradeRequest<'_, '_, '_>) -> Result<Opening, Reject> {
        let app = self.apps.get_mut(request.route).expect("a route per app");
        let opening = app.app().open(&mut self.ctx, request)?;
        *self.route = Some(request.route as u8);
        Ok(opening)
    }

    fn message(&mut self, kind: MessageKind, payload: &[u8]) -> Flow {
        let c = &mut *self.ctx.counters;
        c.messages_in += 1;
        c.bytes_in += payload.len() as u64;
        let route = self.route.expect("messages come after the upgrade") as usize;
        self.apps[route].app().message(&mut self.ctx, kind, payload)
    }

    fn tick(&mut self, now: u64) -> Flow {
        match *self.route {
            Some(route) => self.apps[route as usize].app().tick(&mut self.ctx, now),
            None => Flow::Continue,
        }
    }

    fn health(&mut self) -> Result<(), &'static str> {
        match &self.ctx.hub.settings.broker {
            Some(b) if !b.is_up() => Err("degraded: the broker is unreachable"),
            _ => Ok(()),
        }
    }

    fn note(&mut self, note: Note<'_>) {
        let c = &mut *self.ctx.counters;
        match note {
            Note::Status(status) => {
                c.http(status);
                if status >= 400 {
                    log::debug!("handshake rejected with {status}");
                }
                if status == 101 {
                    *self.close_code = NO_CLOSE_FRAME;
                    if let Some(m) = self.metrics {
                        let took_us = (self.ctx.io.now_us() as u32).wrapping_sub(self.since_us);
                        m.handshake.record(f64::from(took_us) / 1e6);
                    }
                }
            }
            Note::FramesIn(frames) => c.frames_in.merge(frames),
            Note::FrameOut(class) => c.frames_out.add(class),
            Note::CloseIn(code) => {
                c.close_received(code);
                if *self.close_code == NO_CLOSE_FRAME {
                    // An empty close frame means 1005 (RFC 6455 §7.1.5).
                    *self.close_code = code.unwrap_or(1005);
                }
            }
            Note::CloseOut(code) => {
                c.close_sent(code);
                if *self.close_code == NO_CLOSE_FRAME {
                    *self.close_code = if code == 0 { 1005 } else { code };
                }
            }
            Note::PingIn => c.pings_in += 1,
            Note::PongIn => c.pongs_in += 1,
            Note::PingOut => c.pings_out += 1,
            Note::Abnormal => c.abnormal_closures += 1,
            Note::Ending(e) => {
                if self.ending.is_none() {
                    *self.ending = Some(e);
                    // The app hears of the end now, not when the slot is
                    // released (which waits for the peer's EOF or close_ms).
                    if let Some(route) = *self.route {
                        let code = (*self.close_code != 0).then_some(*self.close_code);
                        self.apps[route as usize].app().closed(&mut self.ctx, code);
                    }
                }
            }
        }
    }
}
