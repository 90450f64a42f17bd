//! The comet side of a connection: parking a long-poll waiter or subscribing an event stream,
//! delivering a published message to it, and publishing one.

use super::{Conn, Ctx, Next, Phase, ReplyTo, Transport};
use crate::comet::{CatchUp, ChannelKey, CometError, MessageId, Spot, SpotKind};
use crate::http::{Response, Version};
use crate::router::{Payload, Service};
use crate::server::fanout::{self, Fanout, Form, ID_HEADER, RESYNC_HEADER};

/// Pending event-stream bytes past which a subscriber that does not read is dropped rather
/// than buffered without bound.
const MAX_EVENT_BACKLOG: usize = 1 << 20;

pub(super) struct Parked {
    pub(super) spot: Spot,
    pub(super) reply: ReplyTo,
}

pub(super) struct Subscribed {
    pub(super) spot: Spot,
    pub(super) chunked: bool,
}

impl<T: Transport> Conn<T> {
    /// A message for the channel this connection is parked on.
    pub fn deliver<S: Service>(&mut self, fanout: &mut Fanout, ctx: &mut Ctx<'_, S>) -> Next {
        match &self.phase {
            Phase::Parked(parked) => {
                let form = Form::for_reply(parked.reply.version, parked.reply.keep_alive);
                self.output
                    .push_shared(fanout.bytes(form, ctx.date.as_bytes()));
                self.record_response(200, Some(fanout.message.body.len() as u64), ctx);
                self.deadline = None;
                self.answered(form == Form::Close, ctx);
            }
            Phase::Subscribed(subscribed) => {
                if self.output.pending_len() > MAX_EVENT_BACKLOG {
                    eprintln!("miohttpd: {}: event stream not read; dropped", self.peer);
                    return Next::Close;
                }
                let form = Form::for_events(subscribed.chunked);
                self.output
                    .push_shared(fanout.bytes(form, ctx.date.as_bytes()));
            }
            _ => return Next::Wait,
        }
        self.finish_turn(ctx)
    }

    /// The channel named `name`, made if it does not exist; None once the refusal (a bad
    /// name, or too many channels) is answered.
    fn open_channel<S>(
        &mut self,
        name: &str,
        reply: ReplyTo,
        ctx: &mut Ctx<'_, S>,
    ) -> Option<ChannelKey> {
        match ctx.comet.channel(name, ctx.now) {
            Ok(key) => Some(key),
            Err(e) => {
                self.respond(comet_error(e), reply, ctx);
                None
            }
        }
    }

    /// A long-poll: the next message it missed at once, or park until there is one.
    pub(super) fn wait<S>(
        &mut self,
        channel: &str,
        after: Option<MessageId>,
        reply: ReplyTo,
        ctx: &mut Ctx<'_, S>,
    ) {
        let Some(key) = self.open_channel(channel, reply, ctx) else {
            return;
        };
        let (message, resync) = match ctx.comet.catch_up(key, after) {
            CatchUp::Park => {
                let spot = ctx.comet.park(key, ctx.token, SpotKind::Waiter, ctx.now);
                self.phase = Phase::Parked(Parked { spot, reply });
                if !ctx.config.comet_timeout.is_zero() {
                    self.set_deadline(ctx.now + ctx.config.comet_timeout);
                }
                return;
            }
            CatchUp::Next(message) => (message, false),
            CatchUp::Resync(Some(message)) => (message, true),
            CatchUp::Resync(None) => {
                let response = Response::text(204, "")
                    .with_header(RESYNC_HEADER, "true")
                    .no_store();
                return self.respond(response, reply, ctx);
            }
        };
        let date = ctx.date.as_bytes();
        let out = self.output_bytes(ctx.pool);
        let close =
            fanout::render_reply(out, &message, reply.version, reply.keep_alive, resync, date);
        self.record_response(200, Some(message.body.len() as u64), ctx);
        self.answered(close, ctx);
    }

    /// An event stream: the head, the history it missed, then every message as it comes.
    pub(super) fn subscribe<S>(
        &mut self,
        channel: &str,
        after: Option<MessageId>,
        reply: ReplyTo,
        ctx: &mut Ctx<'_, S>,
    ) {
        let Some(key) = self.open_channel(channel, reply, ctx) else {
            return;
        };
        let chunked = reply.version == Version::Http11;
        let date = ctx.date.as_bytes();
        fanout::render_stream_head(self.output_bytes(ctx.pool), reply.version, date);
        self.record_response(200, None, ctx);
        let out = self.output_bytes(ctx.pool);
        if let Some(after) = after {
            let (missed, lost) = ctx.comet.replay(key, after);
            if lost {
                fanout::render_resync_event(out, chunked);
            }
            for message in missed {
                fanout::render_event(out, &message, chunked);
            }
        }
        let spot = ctx
            .comet
            .park(key, ctx.token, SpotKind::Subscriber, ctx.now);
        self.phase = Phase::Subscribed(Subscribed { spot, chunked });
        self.set_deadline(ctx.now + ctx.config.sse_heartbeat);
    }
}

/// Publishes and answers the publisher with the number of connections reached.
pub(super) fn publish<S>(
    channel: &str,
    payload: Payload,
    content_type: &str,
    body: Vec<u8>,
    ctx: &mut Ctx<'_, S>,
) -> Response {
    let key = match ctx.comet.channel(channel, ctx.now) {
        Ok(key) => key,
        Err(e) => return comet_error(e),
    };
    let message_body = |reached: usize| match payload {
        Payload::WaiterCount => reached.to_string().into_bytes().into_boxed_slice(),
        Payload::Body { .. } => body.into_boxed_slice(),
    };
    let (id, reached) = ctx.comet.publish(key, content_type, message_body, ctx.now);
    Response::text(200, reached.to_string())
        .with_header(ID_HEADER, id.to_string())
        .no_store()
}

fn comet_error(error: CometError) -> Response {
    match error {
        CometError::BadChannelName => {
            Response::text(400, "channel names are 1 to 64 of A-Z a-z 0-9 . _ ~ -\n")
        }
        CometError::TooManyChannels => {
            eprintln!("miohttpd: channel limit reached");
            Response::text(503, "too many channels\n").with_header("Retry-After", "60")
        }
    }
}
