//! One connection's state machine: which phase of a request it is in, what each readiness
//! event makes it do, and when it is done. The loop owns the socket registration and the
//! table; this module owns everything that happens between accept and close. The request
//! cycle is here; `comet.rs` holds the park primitive (the parked and subscribed phases),
//! `stream.rs` the stream primitive (a polled source's pipe). Which handler asks for them is
//! the router's business: nothing here names a built-in route.
//!
//! The phases and the one function that moves between them are in `phase.rs`; the table of
//! legal moves is in `docs/architecture.md`, checked against the code by a test.

mod comet;
mod phase;
mod record;
mod stream;

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Token;

use phase::{Outcome, Phase};
use record::Record;

use super::access_log::AccessLog;
use super::buffers::{BufferPool, InputBuffer, InputKind, OutputBuffer};
use super::child::Children;
use super::fanout::{self, HEARTBEAT};
use super::instruments;
use super::stats::Stats;
use super::syscalls::Registrar;
use super::transport::{Counted, Transport};
use crate::comet::{Comet, MessageId, Spot};
use crate::config::Config;
use crate::handlers::come_back_later;
use crate::http::date::DATE_LEN;
use crate::http::response::{self, Exchange, CONTINUE};
use crate::http::{
    header_storage, parse_head, BodyDecoder, DateCache, Head, HeadSpan, RequestError, Response,
    Version,
};
use crate::router::{
    BodySink, BufferedHandler, ParkMode, Request, Route, ServerHandler, ServerState, Service,
    StartStream,
};

/// Everything of the loop's that a connection may use during one event.
pub struct Ctx<'a, S> {
    pub config: &'a Config,
    pub service: &'a S,
    pub date: &'a DateCache,
    pub pool: &'a mut BufferPool,
    pub stats: &'a mut Stats,
    pub comet: &'a mut Comet,
    pub children: &'a mut Children,
    pub registry: Registrar<'a>,
    pub log: &'a mut AccessLog,
    /// The token of the connection being served, for parking it.
    pub token: Token,
    pub now: Instant,
    /// The server is shutting down: responses close their connections, and nothing new
    /// (a wait, a stream) is started.
    pub draining: bool,
}

impl<S> Ctx<'_, S> {
    /// What a handler or a source may see and do of the server.
    fn server(&mut self, peer: SocketAddr) -> ServerState<'_> {
        ServerState {
            peer: Some(peer),
            config: self.config,
            comet: self.comet,
            stats: self.stats,
            children: self.children,
            now: self.now,
        }
    }
}

/// What a readiness event reported for a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Bytes (or an error) to read.
    pub readable: bool,
    /// The peer shut down its sending side or the connection is gone.
    pub hung_up: bool,
}

/// What the loop should do with a connection after its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do until the next readiness event (or its deadline).
    Wait,
    /// It used its whole read budget with bytes still waiting: give it another turn soon,
    /// since with edge-triggered events no new event will come for those bytes.
    Yield,
    /// Close it now.
    Close,
}

pub struct Conn<T = TcpStream> {
    stream: Counted<T>,
    peer: Peer,
    phase: Phase,
    /// Lent by the pool while bytes are buffered; None while idle.
    input: Option<InputBuffer>,
    output: OutputBuffer,
    /// The last read found the socket empty (WouldBlock or a short read), so reading again
    /// before the next readable event would only cost a syscall.
    drained: bool,
    /// The event said the peer hung up, so a short read no longer means the queue is
    /// empty: the EOF behind the data must still be read, and no further edge will announce it.
    hang_up_seen: bool,
    /// The peer has finished sending (read returned 0).
    peer_closed: bool,
    /// The peer may still be sending when we close (an error cut its request short, or it
    /// pipelined past a close), so the close must linger.
    unread_input: bool,
    /// While response bytes are pending: when the client last took some (or they appeared).
    send_since: Option<Instant>,
    /// The earliest entry the loop's timer queue holds for this connection; a later wake-up
    /// needs no new entry, since the one that fires early re-arms.
    pub armed: Option<Instant>,
    /// What the instruments need of it: access-log entry, bytes written, listener.
    record: Record,
}

/// The client's address in 16 bytes, not `SocketAddr`'s 32: an IPv6 one (with its flow
/// label and scope) is boxed, since every byte of a parked connection counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(v4) => Peer::V4(v4),
            SocketAddr::V6(v6) => Peer::V6(Box::new(v6)),
        }
    }
}

impl Peer {
    fn addr(&self) -> SocketAddr {
        match self {
            Peer::V4(v4) => SocketAddr::V4(*v4),
            Peer::V6(v6) => SocketAddr::V6(**v6),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr().fmt(f)
    }
}

/// The time limits a connection can be under; `Config` holds their lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    Head,
    Idle,
    Body,
    Send,
}

/// A routed request whose body is still arriving.
struct BodyPhase {
    reply: ReplyTo,
    decoder: BodyDecoder,
    consumer: Consumer,
    /// When the last body byte came: the body timeout runs between bytes.
    since: Instant,
}

/// What the response must know about the request it answers.
#[derive(Debug, Clone, Copy)]
struct ReplyTo {
    version: Version,
    keep_alive: bool,
    head_method: bool,
}

impl ReplyTo {
    /// For a request we could not parse: no version known, no keep-alive.
    const UNPARSED: ReplyTo = ReplyTo {
        version: Version::Http11,
        keep_alive: false,
        head_method: false,
    };

    /// What the encoder needs to answer this request, with the current `Date`.
    fn exchange(self, date: &[u8; DATE_LEN]) -> Exchange<'_> {
        Exchange {
            version: self.version,
            keep_alive: self.keep_alive,
            head_method: self.head_method,
            date,
        }
    }
}

/// Where decoded body bytes go, and what answers once they are all in.
enum Consumer {
    /// Handed over: the body is complete and the consumer is answering.
    Done,
    /// The response is decided; the body is read only to reach the next request.
    Discard(Response),
    /// The body is collected (under `limit`; None: discarded), then `handler` answers.
    Buffered {
        limit: Option<usize>,
        request: Box<Request>,
        handler: Handler,
    },
    Streamed(Box<dyn BodySink>),
    /// The body is discarded, then the connection parks on a channel.
    Park {
        channel: Box<str>,
        after: Option<MessageId>,
        mode: ParkMode,
    },
    /// The body is discarded, then the stream starts.
    Stream(Box<dyn StartStream>),
}

/// Who answers a collected request.
enum Handler {
    Plain(Rc<dyn BufferedHandler>),
    /// Also sees the server's state.
    Server(Rc<dyn ServerHandler>),
}

/// Why [`Conn::process`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// It needs more input (or the connection is closing).
    Input,
    /// Pending output reached the high-water mark.
    Output,
    /// `--coalesce off`: an answer must be written before the next request is answered.
    Unflushed,
}

impl<T: Transport> Conn<T> {
    pub fn new(stream: Counted<T>, peer: SocketAddr, now: Instant) -> Self {
        Conn {
            stream,
            peer: Peer::from(peer),
            phase: Phase::head(now, false),
            input: None,
            output: OutputBuffer::default(),
            drained: false,
            hang_up_seen: false,
            peer_closed: false,
            unread_input: false,
            send_since: None,
            armed: None,
            record: Record::default(),
        }
    }

    pub fn stream_mut(&mut self) -> &mut Counted<T> {
        &mut self.stream
    }

    /// Handles one readiness event (or a turn given back after [`Next::Yield`]): reads,
    /// answers and writes as far as the socket and the budgets allow.
    pub fn on_ready<S: Service>(&mut self, event: Readiness, ctx: &mut Ctx<'_, S>) -> Next {
        if event.readable || event.hung_up {
            self.drained = false;
        }
        self.hang_up_seen |= event.hung_up;
        self.finish_turn(ctx)
    }

    /// When the connection next needs a timed look: its phase's deadline or a timeout.
    pub fn wake_at(&self, config: &Config) -> Option<Instant> {
        let timeout = self.timeout(config).map(|(at, _)| at);
        match (self.phase.deadline(), timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The time limit the connection is under now, if any, and when it runs out. Pending
    /// output puts it under the send timeout only: while the client is not reading, it is not
    /// the client's fault that its next request is not being read either.
    fn timeout(&self, config: &Config) -> Option<(Instant, Timeout)> {
        let (since, limit, kind) = match (self.send_since, &self.phase) {
            (Some(since), _) => (since, config.send_timeout, Timeout::Send),
            (None, &Phase::Head { since, idle, .. }) if idle && !self.has_input() => {
                (since, config.idle_timeout, Timeout::Idle)
            }
            (None, &Phase::Head { since, .. }) => (since, config.head_timeout, Timeout::Head),
            (None, Phase::Body(body)) => (body.since, config.body_timeout, Timeout::Body),
            (None, _) => return None,
        };
        (!limit.is_zero()).then(|| (since + limit, kind))
    }

    fn has_input(&self) -> bool {
        self.input.as_ref().is_some_and(|input| !input.is_empty())
    }

    /// Whether a client under the send timeout took bytes after all. A slow but steady reader
    /// frees send-buffer space all along, yet the writable edge comes only once a large part
    /// of the buffer is free, which can be longer than the timeout: so try a write.
    fn still_taking<S>(&mut self, ctx: &mut Ctx<'_, S>) -> bool {
        let before = self.output.pending_len();
        self.flush(ctx.stats, ctx.now).is_ok() && self.output.pending_len() < before
    }

    /// A time limit ran out: a slow head or body gets 408, an idle connection or one whose
    /// client stopped reading is closed.
    fn time_out<S: Service>(&mut self, kind: Timeout, ctx: &mut Ctx<'_, S>) -> Next {
        match kind {
            Timeout::Idle => return Next::Close,
            Timeout::Send => {
                eprintln!("miohttpd: {}: send timeout; dropped", self.peer);
                return Next::Close;
            }
            // A connection that never sent a byte has no request to answer.
            Timeout::Head if !self.has_input() => return Next::Close,
            Timeout::Head => {
                let outcome = self.fail(RequestError::Timeout, ReplyTo::UNPARSED, ctx);
                self.transition(outcome, ctx);
            }
            Timeout::Body => {
                let reply = match &self.phase {
                    Phase::Body(body) => body.reply,
                    _ => ReplyTo::UNPARSED,
                };
                let outcome = self.fail(RequestError::Timeout, reply, ctx);
                self.transition(outcome, ctx);
            }
        }
        self.finish_turn(ctx)
    }

    /// Where the connection is parked, if it is: it is unparked when it closes.
    fn spot(&self) -> Option<Spot> {
        match &self.phase {
            Phase::Parked(parked) => Some(parked.spot),
            Phase::Subscribed(subscribed) => Some(subscribed.spot),
            _ => None,
        }
    }

    /// A timer fired for this connection: a lingering close ends, a parked waiter gets its
    /// 204, a subscriber its heartbeat.
    pub fn on_deadline<S: Service>(&mut self, ctx: &mut Ctx<'_, S>) -> Next {
        if let Some((at, kind)) = self.timeout(ctx.config) {
            if at <= ctx.now {
                if kind == Timeout::Send && self.still_taking(ctx) {
                    return self.finish_turn(ctx);
                }
                return self.time_out(kind, ctx);
            }
        }
        if !self.phase.deadline().is_some_and(|at| at <= ctx.now) {
            return Next::Wait;
        }
        match &mut self.phase {
            Phase::Lingering { .. } => return Next::Close,
            Phase::Parked(_) => self.answer_waiter(Response::text(204, "").no_store(), ctx),
            Phase::Subscribed(subscribed) => {
                let chunked = subscribed.chunked;
                subscribed.heartbeat_at = ctx.now + ctx.config.sse_heartbeat;
                fanout::push_stream_bytes(self.output_bytes(ctx.pool), HEARTBEAT, chunked);
            }
            Phase::Streaming(_) => self.look_at_source(ctx),
            _ => return Next::Wait,
        }
        self.finish_turn(ctx)
    }

    /// Answers a parked waiter with no message (its timeout, the shutdown): off its channel,
    /// its deadline dropped, `response` sent.
    fn answer_waiter<S>(&mut self, response: Response, ctx: &mut Ctx<'_, S>) {
        if let Phase::Parked(parked) = &self.phase {
            ctx.comet.unpark(parked.spot);
            let reply = parked.reply;
            let outcome = self.respond(response, reply, ctx);
            self.transition(outcome, ctx);
        }
    }

    /// Shutdown began: an idle connection closes now, a waiter is told to come back, an event
    /// stream ends, a command is ended; a request being read goes on to its answer.
    pub fn on_shutdown<S: Service>(&mut self, ctx: &mut Ctx<'_, S>) -> Next {
        let between_requests = !self.has_input() && self.output.pending_len() == 0;
        match &mut self.phase {
            Phase::Head { .. } if between_requests => return Next::Close,
            Phase::Parked(_) => self.answer_waiter(come_back_later("shutting down\n"), ctx),
            Phase::Subscribed(subscribed) => {
                ctx.comet.unpark(subscribed.spot);
                if subscribed.chunked {
                    self.output_bytes(ctx.pool).extend_from_slice(b"0\r\n\r\n");
                }
                self.transition(Outcome::Ended, ctx);
            }
            Phase::Streaming(_) => self.stop_stream(ctx),
            _ => {}
        }
        self.finish_turn(ctx)
    }

    /// Continues after an outside event changed the phase: answer, write, maybe read on.
    fn finish_turn<S: Service>(&mut self, ctx: &mut Ctx<'_, S>) -> Next {
        let next = self.drive(ctx);
        if next != Next::Close {
            self.return_idle_buffers(ctx.pool);
        }
        next
    }

    /// The connection is done (the one way the loop and the fuzzing driver close one): its
    /// access-log line finished, off its channel, a stream cut short handed back to its
    /// source (a command goes to the reaper), its buffers back and its socket closed.
    pub fn close(
        mut self,
        log: &mut AccessLog,
        pool: &mut BufferPool,
        server: &mut ServerState<'_>,
    ) {
        self.record_close(log, server.stats, server.now);
        if let Some(spot) = self.spot() {
            server.comet.unpark(spot);
        }
        self.abandon_stream(server);
        self.release(pool, server.stats);
    }

    /// Gives the connection's buffers back and closes its socket.
    pub fn release(mut self, pool: &mut BufferPool, stats: &mut Stats) {
        if let Some(input) = self.input.take() {
            pool.give_input(input);
        }
        pool.give_output(std::mem::take(&mut self.output.bytes));
        self.stream.close(stats);
    }

    /// Alternates answering, writing and reading until the socket or a budget says stop.
    /// Everything already read is answered before writing, so pipelined responses share
    /// one write.
    fn drive<S: Service>(&mut self, ctx: &mut Ctx<'_, S>) -> Next {
        let mut read_this_turn = 0;
        loop {
            let stall = self.process(ctx);
            let gone = self.peer_closed || self.hang_up_seen;
            let waiting = matches!(
                self.phase,
                Phase::Parked(_)
                    | Phase::Subscribed(_)
                    | Phase::Streaming(_)
                    | Phase::AwaitingHub(_)
            );
            if gone && waiting {
                // Gone while waiting: forgotten at once (the loop unparks it), even when its
                // pipelined requests fill the buffer so that the EOF itself cannot be read.
                return Next::Close;
            }
            if let Err(e) = self.flush(ctx.stats, ctx.now) {
                return self.io_failed(&e);
            }
            let pending = self.output.pending_len();
            if pending >= ctx.config.output_high_water {
                // Backpressure: read and answer nothing more until a writable event drains it.
                return Next::Wait;
            }
            if stall == Stall::Output {
                continue;
            }
            if stall == Stall::Unflushed {
                if pending > 0 {
                    // The send buffer is full: the writable edge resumes answering.
                    return Next::Wait;
                }
                continue;
            }
            if pending == 0 {
                match self.phase {
                    Phase::Closing => match self.start_lingering(ctx) {
                        Some(next) => return next,
                        None => continue,
                    },
                    Phase::Lingering { .. } if self.peer_closed => return Next::Close,
                    Phase::Head { .. } | Phase::Body(_) if self.peer_closed => {
                        return self.finish_after_eof(ctx);
                    }
                    _ => {}
                }
            }
            let pipe_ready = matches!(&self.phase, Phase::Streaming(streaming)
                if streaming.pipe.is_some() && !streaming.pipe_drained);
            let socket_ready = !self.peer_closed && !self.drained;
            if !pipe_ready && !socket_ready {
                return Next::Wait;
            }
            if read_this_turn >= ctx.config.turn_bytes {
                return Next::Yield;
            }
            if pipe_ready {
                // The source's output first; the client's socket is read once it is drained.
                read_this_turn += self.pump(ctx);
                continue;
            }
            if self
                .input
                .as_ref()
                .is_some_and(|input| input.free_space() == 0)
            {
                // Only a parked waiter's pipelined requests can fill it: they wait their turn.
                return Next::Wait;
            }
            match self.read_once(ctx) {
                Ok(n) => read_this_turn += n,
                Err(e) => return self.io_failed(&e),
            }
        }
    }

    /// One read(2) into the connection's buffer; returns the bytes read.
    fn read_once<S>(&mut self, ctx: &mut Ctx<'_, S>) -> io::Result<usize> {
        let kind = self.input_kind_wanted(ctx.pool);
        let input = match &mut self.input {
            Some(input) if kind == InputKind::Body && input.capacity() == ctx.pool.head_size() => {
                // A large body is starting: move to a body buffer (few large reads).
                let mut body = ctx.pool.take_input(InputKind::Body);
                body.extend_from(input);
                ctx.pool.give_input(std::mem::replace(input, body));
                input
            }
            Some(input) => input,
            None => self.input.insert(ctx.pool.take_input(kind)),
        };
        let spare = input.spare();
        let wanted = spare.len();
        let mut read = 0;
        debug_assert!(wanted > 0, "the head limit is below the buffer size");
        match self.stream.read(spare, ctx.stats) {
            Ok(0) => self.peer_closed = true,
            Ok(n) => {
                read = n;
                input.filled(n);
                match &mut self.phase {
                    // The body timeout runs between bytes; the head timeout of a kept-alive
                    // connection from the first byte of the head.
                    Phase::Body(body) => body.since = ctx.now,
                    Phase::Head { since, idle, .. } if *idle => {
                        *idle = false;
                        *since = ctx.now;
                    }
                    _ => {}
                }
                if n < wanted {
                    // On a stream socket a short read means the receive queue is empty: an
                    // edge-triggered event will come when more arrives (unless the peer has
                    // hung up, when only the EOF is left and no event will come for it).
                    // `--read-until-wouldblock on` reads again anyway: the knob that shows
                    // what this saves (one read(2) per request).
                    self.drained = !self.hang_up_seen && !ctx.config.read_until_wouldblock;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(read)
    }

    /// Body buffers are for bodies larger than what a head buffer has room for.
    fn input_kind_wanted(&self, pool: &BufferPool) -> InputKind {
        let Phase::Body(body) = &self.phase else {
            return InputKind::Head;
        };
        let room = self
            .input
            .as_ref()
            .map_or(pool.head_size(), InputBuffer::free_space);
        match body.decoder.remaining() {
            Some(remaining) if remaining <= room as u64 => InputKind::Head,
            _ => InputKind::Body,
        }
    }

    /// Writes pending output until it is gone or the socket takes less than offered. Shared
    /// bytes and the connection's own go out in one vectored write when both are pending.
    /// The send timeout's clock runs while bytes are pending and restarts at each byte taken;
    /// the idle clock starts when the last byte is taken.
    fn flush(&mut self, stats: &mut Stats, now: Instant) -> io::Result<()> {
        if self.output.pending_len() == 0 {
            self.send_since = None;
            return Ok(());
        }
        self.send_since.get_or_insert(now);
        while self.output.pending_len() > 0 {
            let offered = self.output.pending_len();
            let last = self.last_word(offered);
            match self.stream.send(self.output.pending(), last, stats) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.record.wrote(n);
                    self.output.advance(n);
                    self.send_since = Some(now);
                    if n < offered {
                        // The send buffer is full; the next writable edge resumes us.
                        self.output.compact();
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.send_since = None;
        if let Phase::Head { since, idle, .. } = &mut self.phase {
            if *idle {
                // Idle from the moment the client has taken the answer, not from when it was
                // queued: a slow reader is the send timeout's business. Only ever later, so
                // the timer queue needs no new entry.
                *since = now;
            }
        }
        Ok(())
    }

    /// Whether these `offered` bytes are the last the connection sends before it closes with
    /// nothing to drain (an HTTP/1.0 answer, a comet waiter's): then they can leave in one
    /// segment with the FIN. Small only, so they surely fit the send buffer in one write.
    fn last_word(&self, offered: usize) -> bool {
        const SMALL: usize = 16 * 1024;
        cfg!(target_os = "linux")
            && matches!(self.phase, Phase::Closing)
            && !self.unread_input
            && offered <= SMALL
    }

    /// Answers every complete request in the input, until input or output space runs out.
    fn process<S: Service>(&mut self, ctx: &mut Ctx<'_, S>) -> Stall {
        loop {
            if self.output.pending_len() >= ctx.config.output_high_water {
                return Stall::Output;
            }
            let Some(input) = self.input.as_mut() else {
                return Stall::Input;
            };
            match &mut self.phase {
                Phase::Head { .. } if !ctx.config.coalesce && self.output.pending_len() > 0 => {
                    return Stall::Unflushed;
                }
                Phase::Head { scanner, .. } => {
                    match scanner.scan(input.data(), &ctx.config.head_limits) {
                        Ok(None) => return Stall::Input,
                        Ok(Some(span)) => {
                            let outcome = self.start_request(span, ctx);
                            self.transition(outcome, ctx);
                        }
                        Err(e) => {
                            let outcome = self.fail(e, ReplyTo::UNPARSED, ctx);
                            self.transition(outcome, ctx);
                        }
                    }
                }
                Phase::Body(body) => match feed_body(body, input) {
                    Ok(false) => return Stall::Input,
                    Ok(true) => {
                        // The body phase ends with this: its consumer answers.
                        let consumer = std::mem::replace(&mut body.consumer, Consumer::Done);
                        let reply = body.reply;
                        let outcome = self.complete(reply, consumer, ctx);
                        self.transition(outcome, ctx);
                    }
                    Err(e) => {
                        let reply = body.reply;
                        let outcome = self.fail(e, reply, ctx);
                        self.transition(outcome, ctx);
                    }
                },
                // Requests pipelined behind a wait or a stream are answered after it.
                Phase::Parked(_) | Phase::Streaming(_) | Phase::AwaitingHub(_) => {
                    return Stall::Input
                }
                // Closing: nothing more will be answered; the bytes are not wanted.
                Phase::Subscribed(_) | Phase::Closing | Phase::Lingering { .. } => {
                    self.unread_input |= !input.is_empty();
                    input.consume_all();
                    return Stall::Input;
                }
            }
        }
    }

    /// A head is complete: parse it, route it, and answer it or set up its body.
    fn start_request<S: Service>(&mut self, span: HeadSpan, ctx: &mut Ctx<'_, S>) -> Outcome {
        let Some(input) = self.input.as_mut() else {
            // Cannot happen: the scanner found the head in this buffer.
            return Outcome::AnsweredClose;
        };
        let mut storage = header_storage();
        let bytes = &input.data()[span.skip..span.end];
        let head = match parse_head(bytes, &mut storage, &ctx.config.head_limits) {
            Ok(head) => head,
            Err(e) => return self.fail(e, ReplyTo::UNPARSED, ctx),
        };
        ctx.stats.requests += 1;
        self.record.request(&head, ctx.log);
        let reply = ReplyTo {
            version: head.version,
            keep_alive: head.keep_alive,
            head_method: head.is_head_method(),
        };
        let framing = head.framing;
        let expect_continue = head.expect_continue;
        let consumer = route(&head, self.record.admin, ctx);
        input.consume(span.end);
        let body_already_sent = !input.is_empty();

        if !framing.has_body() {
            return self.complete(reply, consumer, ctx);
        }
        let consumer = match consumer {
            // Declared larger than the limit: refused before the body (and before any 100).
            consumer if consumer.limit().is_some_and(|limit| framing.exceeds(limit)) => {
                return self.fail(RequestError::BodyTooLarge, reply, ctx);
            }
            // Refused from the head alone: answer before the body and close, rather than
            // read a body nobody wants (RFC 9110 §10.1.1).
            Consumer::Discard(response) if response.status >= 400 => {
                self.unread_input = true;
                let response = Response {
                    close: true,
                    ..response
                };
                return self.respond(response, reply, ctx);
            }
            consumer => consumer,
        };
        // RFC 9110 §10.1.1: the client waits for 100 before sending the body, unless it
        // already started.
        if expect_continue && !body_already_sent {
            self.output_bytes(ctx.pool).extend_from_slice(CONTINUE);
        }
        Outcome::Routed(Box::new(BodyPhase {
            reply,
            decoder: BodyDecoder::new(framing, ctx.config.head_limits.max_head_size),
            consumer,
            since: ctx.now,
        }))
    }

    /// Produces the response from the consumer, whose body (if any) is complete.
    fn complete<S>(&mut self, reply: ReplyTo, consumer: Consumer, ctx: &mut Ctx<'_, S>) -> Outcome {
        let response = match consumer {
            // Nothing new (a wait, a stream) starts while the server shuts down.
            Consumer::Park { .. } | Consumer::Stream(_) if ctx.draining => {
                come_back_later("shutting down\n")
            }
            Consumer::Discard(response) => response,
            Consumer::Done => internal_error("a request answered twice"),
            Consumer::Buffered {
                request,
                handler: Handler::Plain(handler),
                ..
            } => catch_unwind(AssertUnwindSafe(|| handler.handle(*request)))
                .unwrap_or_else(|_| internal_error("a buffered handler panicked")),
            Consumer::Buffered {
                request,
                handler: Handler::Server(handler),
                ..
            } => {
                let mut server = ctx.server(self.peer.addr());
                let response =
                    catch_unwind(AssertUnwindSafe(|| handler.handle(*request, &mut server)))
                        .unwrap_or_else(|_| internal_error("a server handler panicked"));
                if ctx.comet.claim_relayed(ctx.token) {
                    // `--workers N`: the handler published (or counted) through the hub; the
                    // answer is the hub's, given by `answer_from_hub`.
                    return Outcome::Relayed(comet::Awaiting {
                        reply,
                        catch_up: None,
                    });
                }
                response
            }
            Consumer::Streamed(sink) => catch_unwind(AssertUnwindSafe(|| sink.finish()))
                .unwrap_or_else(|_| internal_error("a body sink panicked")),
            Consumer::Park {
                channel,
                after,
                mode: ParkMode::Once,
            } => return self.wait(&channel, after, reply, ctx),
            Consumer::Park {
                channel,
                after,
                mode: ParkMode::Events,
            } => return self.subscribe(&channel, after, reply, ctx),
            Consumer::Stream(start) => return self.start_stream(start, reply, ctx),
        };
        self.respond(response, reply, ctx)
    }

    /// Encodes a response; one that cannot be sent as it is becomes a 500. While the server
    /// shuts down, every response closes its connection.
    fn respond<S>(&mut self, response: Response, reply: ReplyTo, ctx: &mut Ctx<'_, S>) -> Outcome {
        let reply = ReplyTo {
            keep_alive: reply.keep_alive && !ctx.draining,
            ..reply
        };
        let response = match response::validate(&response) {
            Ok(()) => response,
            Err(e) => {
                eprintln!("miohttpd: {}: handler response refused: {e:?}", self.peer);
                internal_error("invalid response")
            }
        };
        let exchange = reply.exchange(ctx.date.as_bytes());
        let close = response::encode(self.output_bytes(ctx.pool), &response, &exchange);
        let body = record::body_bytes(&response, reply);
        self.record_response(response.status, Some(body), ctx);
        Outcome::answered(close, ctx)
    }

    /// Refuses the request: error response, then close.
    fn fail<S>(&mut self, error: RequestError, reply: ReplyTo, ctx: &mut Ctx<'_, S>) -> Outcome {
        eprintln!("miohttpd: {}: {error}", self.peer);
        self.unread_input = true;
        self.respond(Response::error(error), reply, ctx)
    }

    /// The output buffer, borrowed from the pool if the connection was idle.
    fn output_bytes(&mut self, pool: &mut BufferPool) -> &mut Vec<u8> {
        if self.output.bytes.capacity() == 0 {
            self.output.bytes = pool.take_output();
        }
        &mut self.output.bytes
    }

    /// The peer will send nothing more and all output is out.
    fn finish_after_eof<S>(&mut self, ctx: &mut Ctx<'_, S>) -> Next {
        let Phase::Body(body) = &self.phase else {
            // Between requests (or mid-head, which can never complete now): just close.
            return Next::Close;
        };
        // Mid-body: the request can never complete. Say so, since the peer may only have
        // half-closed, then close once that is written.
        let reply = body.reply;
        let outcome = self.fail(RequestError::IncompleteBody, reply, ctx);
        self.transition(outcome, ctx);
        match self.flush(ctx.stats, ctx.now) {
            Ok(()) if self.output.pending_len() > 0 => Next::Wait,
            _ => Next::Close,
        }
    }

    /// All output is written and the connection must close. Closing with unread input
    /// makes the kernel send RST, which can destroy the response before the client reads
    /// it; so when the client may still be sending, shut down our side and drain theirs
    /// for a while (nginx's lingering close). None: keep draining in the drive loop.
    fn start_lingering<S>(&mut self, ctx: &mut Ctx<'_, S>) -> Option<Next> {
        if self.peer_closed || !self.unread_input {
            return Some(Next::Close);
        }
        if self.stream.shutdown_write(ctx.stats).is_err() {
            return Some(Next::Close);
        }
        let until = ctx.now + ctx.config.linger;
        self.transition(Outcome::Drained { until }, ctx);
        None
    }

    fn io_failed(&self, error: &io::Error) -> Next {
        if !matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ) {
            eprintln!("miohttpd: {}: {error}", self.peer);
        }
        Next::Close
    }

    /// An idle connection holds no buffers: they go back to the pool until bytes arrive.
    fn return_idle_buffers(&mut self, pool: &mut BufferPool) {
        if self.input.as_ref().is_some_and(InputBuffer::is_empty) {
            if let Some(input) = self.input.take() {
                pool.give_input(input);
            }
        }
        if self.output.pending_len() == 0 && self.output.bytes.capacity() > 0 {
            pool.give_output(std::mem::take(&mut self.output.bytes));
        }
    }
}

/// Asks the service what to do with a request; a panicking router becomes a 500. A
/// connection from the admin listener gets the metrics and nothing else.
fn route<S: Service>(head: &Head<'_>, admin: bool, ctx: &mut Ctx<'_, S>) -> Consumer {
    let service = ctx.service;
    let decided = if admin {
        instruments::admin_route(head)
    } else {
        match catch_unwind(AssertUnwindSafe(|| service.route(head))) {
            Ok(decided) => decided,
            Err(_) => return Consumer::Discard(internal_error("the router panicked")),
        }
    };
    match decided {
        Route::Respond(response) => Consumer::Discard(response),
        Route::Buffered { limit, handler } => Consumer::Buffered {
            limit: Some(limit),
            request: Box::new(Request::from_head(head)),
            handler: Handler::Plain(handler),
        },
        Route::Server { limit, handler } => Consumer::Buffered {
            limit,
            request: Box::new(Request::from_head(head)),
            handler: Handler::Server(handler),
        },
        Route::Streamed(sink) => Consumer::Streamed(sink),
        Route::Park(park) => {
            let after = match park.after.as_deref().map(MessageId::parse) {
                None => None,
                Some(Some(id)) => Some(id),
                Some(None) => {
                    return Consumer::Discard(Response::text(400, "invalid message id\n"))
                }
            };
            Consumer::Park {
                channel: park.channel.into_boxed_str(),
                after,
                mode: park.mode,
            }
        }
        Route::Stream(start) => Consumer::Stream(start),
    }
}

/// Decodes buffered input into the consumer. Ok(true) once the body is complete.
fn feed_body(body: &mut BodyPhase, input: &mut InputBuffer) -> Result<bool, RequestError> {
    loop {
        let step = body.decoder.decode(input.data())?;
        if !step.data.is_empty() {
            body.consumer.accept(step.data)?;
        }
        let (consumed, done) = (step.consumed, step.done);
        input.consume(consumed);
        if done {
            return Ok(true);
        }
        if consumed == 0 {
            return Ok(false);
        }
    }
}

impl Consumer {
    /// The most body bytes this consumer takes, for those that collect the body.
    fn limit(&self) -> Option<usize> {
        match self {
            Consumer::Buffered { limit, .. } => *limit,
            _ => None,
        }
    }

    fn accept(&mut self, bytes: &[u8]) -> Result<(), RequestError> {
        match self {
            Consumer::Done
            | Consumer::Discard(_)
            | Consumer::Park { .. }
            | Consumer::Stream(_)
            | Consumer::Buffered { limit: None, .. } => Ok(()),
            Consumer::Buffered {
                limit: Some(limit),
                request,
                ..
            } => {
                if request.body.len() + bytes.len() > *limit {
                    return Err(RequestError::BodyTooLarge);
                }
                request.body.extend_from_slice(bytes);
                Ok(())
            }
            Consumer::Streamed(sink) => {
                if catch_unwind(AssertUnwindSafe(|| sink.data(bytes))).is_err() {
                    // The sink cannot be trusted with the rest: read the body to its end,
                    // then answer 500.
                    *self = Consumer::Discard(internal_error("a body sink panicked"));
                }
                Ok(())
            }
        }
    }
}

fn internal_error(why: &'static str) -> Response {
    eprintln!("miohttpd: 500: {why}");
    let mut response = Response::text(500, "internal server error\n");
    response.close = true;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parked waiter is mostly its `Conn` in the table (its spot on the channel and its
    /// timer entry are a few words more): the rare parts live in boxed phases so that this
    /// stays small. Raising the bound needs a reason, and `cargo bench --bench comet`.
    #[test]
    fn a_connection_stays_small() {
        let size = std::mem::size_of::<Conn<TcpStream>>();
        eprintln!(
            "Conn {size}, Phase {}, Parked {}, Output {}, Record {}",
            std::mem::size_of::<Phase>(),
            std::mem::size_of::<comet::Parked>(),
            std::mem::size_of::<OutputBuffer>(),
            std::mem::size_of::<Record>(),
        );
        assert_eq!(std::mem::size_of::<Peer>(), 16);
        assert!(size <= 232, "Conn<TcpStream> is {size} bytes");
    }
}

#[cfg(test)]
mod peer_tests {
    use super::Peer;

    #[test]
    fn a_peer_address_reads_back_as_given() {
        for text in ["127.0.0.1:8080", "[::1]:443", "[fe80::1%2]:80"] {
            let addr: std::net::SocketAddr = text.parse().unwrap();
            let peer = Peer::from(addr);
            assert_eq!((peer.addr(), peer.to_string()), (addr, addr.to_string()));
        }
    }
}
