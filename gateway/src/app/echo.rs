//! The echo application: every message goes back to its sender, text as
//! text and binary as binary. The conformance target of the Autobahn
//! TestSuite and the load of the echo benchmarks.

use wsproto::codec::MessageKind;
use wsproto::session::Flow;

use super::{flow_after, App, Ctx};

/// Stateless: nothing per worker or per connection.
#[derive(Debug, Default)]
pub struct Echo;

impl App for Echo {
    fn message(&mut self, ctx: &mut Ctx<'_>, kind: MessageKind, payload: &[u8]) -> Flow {
        flow_after(ctx.send_message(kind, payload))
    }
}
