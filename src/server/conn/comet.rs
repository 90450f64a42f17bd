//! The park primitive of a connection: parking a long-poll waiter or subscribing an event
//! stream on a named channel, and delivering a published message to it.

use std::rc::Rc;
use std::time::Instant;

use super::{Conn, Ctx, Next, Outcome, Phase, ReplyTo, Transport};
use crate::bus::frame::{Position, RefuseReason};
use crate::comet::HOSTS_HEADER;
use crate::comet::{CatchUp, ChannelKey, CometError, Message, MessageId, Spot, SpotKind};
use crate::http::{Response, Version};
use crate::router::Service;
use crate::server::fanout::{self, Fanout, Form, ID_HEADER, RESYNC_HEADER};
use crate::workers::link::HubAnswer;

/// Pending event-stream bytes past which a subscriber that does not read is dropped rather
/// than buffered without bound.
const MAX_EVENT_BACKLOG: usize = 1 << 20;

pub(super) struct Parked {
    pub(super) spot: Spot,
    pub(super) reply: ReplyTo,
    /// When it gets its 204; None with `--comet-timeout 0`.
    pub(super) timeout_at: Option<Instant>,
}

/// A request waiting in [`Phase::AwaitingHub`] for the hub's answer.
pub(super) struct Awaiting {
    pub(super) reply: ReplyTo,
    /// A catch-up this worker's history could not serve (`--redis`: perhaps Redis can):
    /// decided again when the hub has read the channel. Boxed: rare.
    pub(super) catch_up: Option<Box<CatchUpLater>>,
}

pub(super) struct CatchUpLater {
    channel: Box<str>,
    after: Option<MessageId>,
    /// What the hub was told of `after`.
    client: Position,
    events: bool,
}

/// Whether a catch-up this worker cannot serve may ask the hub first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ask {
    Hub,
    /// The hub was asked: decide from what is held. `issued`: the newest id Redis had
    /// given on the channel when the hub read it (None: not read). `asked`: what the hub
    /// was told; a client asked about as behind may turn out ahead once the worker holds
    /// the hub's copy, and is asked about once more, as ahead (then never again).
    Done {
        issued: Option<MessageId>,
        asked: Position,
    },
}

impl Ask {
    /// Whether a client ahead of what is held may (still) ask the hub.
    fn may_ask_ahead(self) -> bool {
        match self {
            Ask::Hub => true,
            Ask::Done { asked, .. } => asked == Position::Behind,
        }
    }

    /// After the hub's read: whether Redis had issued `after` (of the same epoch), so a
    /// client ahead of this worker's copy read it on another host and this host has not had
    /// it on the bus yet, rather than naming an id never issued. When Redis could not be
    /// read (the link down), the client is trusted: a resync it does not need is worse
    /// than a made-up id that waits.
    fn issued(self, after: MessageId) -> bool {
        match self {
            Ask::Hub => false,
            Ask::Done { issued, .. } => {
                issued.map_or(true, |i| i.epoch == after.epoch && after.seq <= i.seq)
            }
        }
    }
}

/// What a parked waiter woken by a message is owed.
enum Owed {
    /// That message.
    This,
    /// Another one: the first after its id, held already. Earlier than that message (a
    /// count's, set aside for the waiters counted before it parked), or later (that one
    /// it had seen, and a newer one came in the same batch, whose delivery did not take it).
    Other(Rc<Message>),
    /// Nothing: it has seen that one (it resumed ahead of this host's copy, at this id).
    Nothing(MessageId),
}

pub(super) struct Subscribed {
    pub(super) spot: Spot,
    pub(super) chunked: bool,
    /// When the next heartbeat comment goes out.
    pub(super) heartbeat_at: Instant,
}

impl<T: Transport> Conn<T> {
    /// A message for the channel this connection is parked on.
    pub fn deliver<S: Service>(&mut self, fanout: &mut Fanout, ctx: &mut Ctx<'_, S>) -> Next {
        match &mut self.phase {
            Phase::Parked(parked) => {
                let owed = owed(parked, &fanout.message, ctx);
                if let Owed::Nothing(after) = owed {
                    // It stays parked for the next message, with its reply and timeout.
                    let kind = SpotKind::Waiter;
                    parked.spot = ctx
                        .comet
                        .park(parked.spot.channel, ctx.token, kind, ctx.now);
                    ctx.comet.remember_after(ctx.token, Some(after));
                    return Next::Wait;
                }
                if let Owed::Other(missed) = owed {
                    // Its next message is another one: answered with that, in order.
                    let reply = parked.reply;
                    let date = ctx.date.as_bytes();
                    let out = self.output_bytes(ctx.pool);
                    let close = fanout::render_reply(
                        out,
                        &missed,
                        reply.version,
                        reply.keep_alive,
                        false,
                        date,
                    );
                    self.record_response(200, Some(missed.body.len() as u64), ctx);
                    self.transition(Outcome::answered(close, ctx), ctx);
                    return self.finish_turn(ctx);
                }
                let form = Form::for_reply(parked.reply.version, parked.reply.keep_alive);
                self.output
                    .push_shared(fanout.bytes(form, ctx.date.as_bytes()));
                self.record_response(200, Some(fanout.message.body.len() as u64), ctx);
                self.transition(Outcome::answered(form == Form::Close, ctx), ctx);
            }
            Phase::Subscribed(subscribed) => {
                if ctx.comet.skips(ctx.token, &fanout.message) {
                    return Next::Wait; // read on another host before it resumed here
                }
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

    /// The channel named `name`, made if it does not exist; else the refusal (a bad name,
    /// or too many channels), answered.
    fn open_channel<S>(
        &mut self,
        name: &str,
        reply: ReplyTo,
        ctx: &mut Ctx<'_, S>,
    ) -> Result<ChannelKey, Outcome> {
        ctx.comet
            .channel(name, ctx.now)
            .map_err(|e| self.respond(e.response(), reply, ctx))
    }

    /// A long-poll: the next message it missed at once, or park until there is one.
    pub(super) fn wait<S>(
        &mut self,
        channel: &str,
        after: Option<MessageId>,
        reply: ReplyTo,
        ctx: &mut Ctx<'_, S>,
    ) -> Outcome {
        self.wait_asking(channel, after, reply, Ask::Hub, ctx)
    }

    /// With `--workers N`, a catch-up the worker's history cannot serve asks the hub first
    /// (`--redis`: it reads the channel from Redis when it has no history of it), so the
    /// client gets what a client on the publishing host gets, and resync only when it was
    /// lost everywhere.
    #[allow(clippy::too_many_arguments)]
    fn ask_hub<S>(
        &mut self,
        channel: &str,
        after: Option<MessageId>,
        client: Position,
        events: bool,
        reply: ReplyTo,
        ctx: &mut Ctx<'_, S>,
    ) -> Outcome {
        ctx.comet.relay_load(ctx.token, channel, client);
        Outcome::Relayed(Awaiting {
            reply,
            catch_up: Some(Box::new(CatchUpLater {
                channel: channel.into(),
                after,
                client,
                events,
            })),
        })
    }

    fn wait_asking<S>(
        &mut self,
        channel: &str,
        after: Option<MessageId>,
        reply: ReplyTo,
        ask: Ask,
        ctx: &mut Ctx<'_, S>,
    ) -> Outcome {
        let key = match self.open_channel(channel, reply, ctx) {
            Ok(key) => key,
            Err(refused) => return refused,
        };
        let caught_up = match (ctx.comet.catch_up(key, after), after) {
            (CatchUp::Resync(_), _) if ask == Ask::Hub && ctx.comet.relays() => {
                return self.ask_hub(channel, after, Position::Behind, false, reply, ctx);
            }
            (CatchUp::Ahead, _) if ask.may_ask_ahead() => {
                return self.ask_hub(channel, after, Position::Ahead, false, reply, ctx);
            }
            // Issued, and not on this host's bus yet: it parks, and messages up to its id
            // are passed over when they come (`deliver`: its id is remembered below).
            (CatchUp::Ahead, Some(after)) if ask.issued(after) => CatchUp::Park,
            // Never issued: as an id not issued yet on one host.
            (CatchUp::Ahead, _) => CatchUp::Resync(ctx.comet.oldest(key)),
            (caught_up, _) => caught_up,
        };
        let (message, resync) = match caught_up {
            CatchUp::Park => {
                let spot = ctx.comet.park(key, ctx.token, SpotKind::Waiter, ctx.now);
                ctx.comet.remember_after(ctx.token, after);
                let timeout = ctx.config.comet_timeout;
                let timeout_at = (!timeout.is_zero()).then(|| ctx.now + timeout);
                return Outcome::Parked(Parked {
                    spot,
                    reply,
                    timeout_at,
                });
            }
            CatchUp::Next(message) => (message, false),
            CatchUp::Resync(Some(message)) => (message, true),
            CatchUp::Ahead => unreachable!("decided above"),
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
        Outcome::answered(close, ctx)
    }

    /// An event stream: the head, the history it missed, then every message as it comes.
    pub(super) fn subscribe<S>(
        &mut self,
        channel: &str,
        after: Option<MessageId>,
        reply: ReplyTo,
        ctx: &mut Ctx<'_, S>,
    ) -> Outcome {
        self.subscribe_asking(channel, after, reply, Ask::Hub, ctx)
    }

    fn subscribe_asking<S>(
        &mut self,
        channel: &str,
        after: Option<MessageId>,
        reply: ReplyTo,
        ask: Ask,
        ctx: &mut Ctx<'_, S>,
    ) -> Outcome {
        let key = match self.open_channel(channel, reply, ctx) {
            Ok(key) => key,
            Err(refused) => return refused,
        };
        if let (Some(after), Ask::Hub) = (after, ask) {
            if ctx.comet.relays() && ctx.comet.replay(key, after).1 {
                return self.ask_hub(channel, Some(after), Position::Behind, true, reply, ctx);
            }
        }
        if let Some(after) = after.filter(|_| ask.may_ask_ahead()) {
            if ctx.comet.ahead(key, after) {
                return self.ask_hub(channel, Some(after), Position::Ahead, true, reply, ctx);
            }
        }
        let chunked = reply.version == Version::Http11;
        let date = ctx.date.as_bytes();
        fanout::render_stream_head(self.output_bytes(ctx.pool), reply.version, date);
        self.record_response(200, None, ctx);
        let out = self.output_bytes(ctx.pool);
        // Ahead of this worker's copy after the hub's read: an id Redis issued is skipped
        // through (messages up to it are not written), one it never issued is lost.
        let ahead = after.filter(|&after| ctx.comet.ahead(key, after));
        let skip_through = ahead.filter(|&after| ask.issued(after));
        if let Some(after) = after {
            let (missed, lost) = match ahead.is_some() && skip_through.is_none() {
                true => (ctx.comet.replay_all(key), true),
                false => ctx.comet.replay(key, after),
            };
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
        if let Some(after) = skip_through {
            ctx.comet.skip_through(ctx.token, after);
        }
        Outcome::Subscribed(Subscribed {
            spot,
            chunked,
            heartbeat_at: ctx.now + ctx.config.sse_heartbeat,
        })
    }
}

impl<T: Transport> Conn<T> {
    /// The hub answered the request this connection relayed (`--workers N`).
    pub fn answer_from_hub<S: Service>(&mut self, answer: HubAnswer, ctx: &mut Ctx<'_, S>) -> Next {
        let Phase::AwaitingHub(awaiting) = &mut self.phase else {
            return Next::Wait;
        };
        let reply = awaiting.reply;
        if let (HubAnswer::Loaded { issued }, Some(later)) = (answer, awaiting.catch_up.take()) {
            let CatchUpLater {
                channel,
                after,
                client,
                events,
            } = *later;
            let ask = Ask::Done {
                issued,
                asked: client,
            };
            let outcome = match events {
                true => self.subscribe_asking(&channel, after, reply, ask, ctx),
                false => self.wait_asking(&channel, after, reply, ask, ctx),
            };
            self.transition(outcome, ctx);
            return self.finish_turn(ctx);
        }
        let response = match answer {
            HubAnswer::Published { id, reached, hosts } => {
                let response = Response::text(200, reached.to_string())
                    .with_header(ID_HEADER, id.to_string())
                    .no_store();
                match hosts {
                    Some((counted, known)) => {
                        response.with_header(HOSTS_HEADER, format!("{counted}/{known}"))
                    }
                    None => response,
                }
            }
            HubAnswer::Refused(RefuseReason::BadChannelName) => {
                CometError::BadChannelName.response()
            }
            HubAnswer::Refused(RefuseReason::TooManyChannels) => {
                CometError::TooManyChannels.response()
            }
            HubAnswer::Refused(RefuseReason::RedisUnavailable) => {
                Response::text(503, "redis unavailable\n").with_header("Retry-After", "1")
            }
            HubAnswer::Waiters { count, hosts } => {
                let response = Response::text(200, count.to_string()).no_store();
                match hosts {
                    Some((counted, known)) => {
                        response.with_header(HOSTS_HEADER, format!("{counted}/{known}"))
                    }
                    None => response,
                }
            }
            HubAnswer::Unavailable | HubAnswer::Loaded { .. } => {
                Response::text(503, "shutting down\n").with_header("Retry-After", "1")
            }
        };
        let outcome = self.respond(response, reply, ctx);
        self.transition(outcome, ctx);
        self.finish_turn(ctx)
    }
}

/// What a waiter woken by `delivered` is owed, judged by the id it named. When it has seen
/// `delivered` (same epoch, at or before its id: it resumed ahead of this host's copy): the
/// first message after its id if one is held already, else nothing. Otherwise: the first
/// message after its id when that is older than `delivered`, else `delivered`.
fn owed<S>(parked: &Parked, delivered: &Message, ctx: &mut Ctx<'_, S>) -> Owed {
    let Some(after) = ctx.comet.take_after(ctx.token) else {
        return Owed::This;
    };
    let caught_up = ctx.comet.catch_up(parked.spot.channel, Some(after));
    if delivered.id.epoch == after.epoch && delivered.id.seq <= after.seq {
        return match caught_up {
            CatchUp::Next(next) => Owed::Other(next),
            _ => Owed::Nothing(after),
        };
    }
    match caught_up {
        CatchUp::Next(next) if next.id < delivered.id => Owed::Other(next),
        _ => Owed::This,
    }
}
