//! The stream primitive of a connection: a polled source's pipe registered in the loop's poll,
//! read into chunks as it becomes readable, and ended when the source says so (with its
//! trailer), or handed back to the source when the client goes first. What is behind the
//! pipe (a command, for `/stream/NAME`) is the source's business: see `handlers/exec.rs`.

use std::io;
use std::time::Instant;

use mio::Interest;

use super::{internal_error, Conn, Ctx, Next, Outcome, Phase, ReplyTo, Transport};
use crate::http::response::{encode_head, BodyFraming};
use crate::http::Version;
use crate::router::{Look, Polled, ServerState, Service, Source, StartStream};
use crate::server::fanout;
use crate::server::syscalls::Pipe;
use crate::server::table::pipe_token;

pub(super) struct Streaming {
    source: Box<dyn Source>,
    /// The source's output; None once it reached EOF.
    pub(super) pipe: Option<Pipe>,
    reply: ReplyTo,
    chunked: bool,
    /// The trailer field the head declared, sent with the last chunk.
    trailer: Option<&'static str>,
    /// The last read found the pipe empty: wait for its next readable edge.
    pub(super) pipe_drained: bool,
    /// When the source asked to be looked at again.
    pub(super) next_look: Option<Instant>,
}

/// The most read from a pipe at once; a pipe holds 64 KiB.
const PIPE_READ: usize = 32 * 1024;

impl<T: Transport> Conn<T> {
    /// The source's pipe has output (or EOF).
    pub fn on_pipe_ready<S: Service>(&mut self, ctx: &mut Ctx<'_, S>) -> Next {
        if let Phase::Streaming(streaming) = &mut self.phase {
            streaming.pipe_drained = false;
        }
        self.finish_turn(ctx)
    }

    /// The connection closes with its stream cut short: the source gets it back (a command
    /// goes to the reaper). Its pipe, if still open, is closed here.
    pub(super) fn abandon_stream(&mut self, server: &mut ServerState<'_>) {
        let Phase::Streaming(streaming) = &mut self.phase else {
            return;
        };
        if let Some(pipe) = streaming.pipe.take() {
            pipe.close(server.stats());
        }
        // The phase is dropped with the connection; its source goes now.
        let source = std::mem::replace(&mut streaming.source, Box::new(Abandoned));
        source.abandon(server);
    }

    /// Starts the stream: the source and its pipe, registered, and the response head.
    pub(super) fn start_stream<S>(
        &mut self,
        start: Box<dyn StartStream>,
        reply: ReplyTo,
        ctx: &mut Ctx<'_, S>,
    ) -> Outcome {
        let started = start.start(&mut ctx.server(self.peer.addr()));
        let Polled {
            pipe,
            content_type,
            headers,
            trailer,
            source,
        } = match started {
            Ok(polled) => polled,
            Err(response) => return self.respond(response, reply, ctx),
        };
        let mut pipe = Pipe::new(pipe);
        let token = pipe_token(ctx.token);
        let registered = ctx
            .registry
            .register(&mut pipe, token, Interest::READABLE, ctx.stats);
        if let Err(e) = registered {
            eprintln!("miohttpd: register a stream's pipe: {e}");
            pipe.close(ctx.stats);
            source.abandon(&mut ctx.server(self.peer.addr()));
            return self.respond(internal_error("pipe registration failed"), reply, ctx);
        }
        let chunked = reply.version == Version::Http11;
        let framing = if chunked {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        };
        let declared = trailer.filter(|_| chunked).map(|name| ("Trailer", name));
        let headers = headers
            .iter()
            .map(|(name, value)| (name.as_ref(), value.as_ref()))
            .chain(declared);
        let exchange = reply.exchange(ctx.date.as_bytes());
        let out = self.output_bytes(ctx.pool);
        let close = encode_head(
            out,
            200,
            &content_type,
            headers,
            framing,
            reply.keep_alive,
            &exchange,
        );
        self.record_response(200, None, ctx);
        let first_look = source.first_look();
        Outcome::Streaming(Box::new(Streaming {
            source,
            pipe: Some(pipe),
            reply: ReplyTo {
                keep_alive: !close,
                ..reply
            },
            chunked,
            trailer,
            pipe_drained: false,
            next_look: first_look,
        }))
    }

    /// Shutdown: the source winds down; its stream then ends as usual.
    pub(super) fn stop_stream<S>(&mut self, ctx: &mut Ctx<'_, S>) {
        if let Phase::Streaming(streaming) = &mut self.phase {
            streaming.source.stop(&mut ctx.server(self.peer.addr()));
        }
        self.look_at_source(ctx);
    }

    /// One read from the pipe into the output, as one chunk; returns the bytes read.
    pub(super) fn pump<S>(&mut self, ctx: &mut Ctx<'_, S>) -> usize {
        let Phase::Streaming(streaming) = &mut self.phase else {
            return 0;
        };
        let Some(pipe) = streaming.pipe.as_mut() else {
            return 0;
        };
        let mut buf = ctx.pool.take_pipe_read(PIPE_READ);
        let read = pipe.read(&mut buf, ctx.stats);
        let n = match read {
            Ok(0) => {
                self.end_pipe(ctx);
                0
            }
            Ok(n) => {
                let chunked = streaming.chunked;
                fanout::push_stream_bytes(self.output_bytes(ctx.pool), &buf[..n], chunked);
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                streaming.pipe_drained = true;
                0
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                eprintln!("miohttpd: {}: reading a stream's pipe: {e}", self.peer);
                self.end_pipe(ctx);
                0
            }
        };
        ctx.pool.give_pipe_read(buf);
        n
    }

    /// The pipe is done (EOF, or a read error): closed, which also takes it out of the poll
    /// set, and the source asked whether the stream is over.
    fn end_pipe<S>(&mut self, ctx: &mut Ctx<'_, S>) {
        if let Phase::Streaming(streaming) = &mut self.phase {
            if let Some(pipe) = streaming.pipe.take() {
                pipe.close(ctx.stats);
            }
        }
        self.look_at_source(ctx);
    }

    /// Asks the source whether the stream is over (after the pipe's EOF, at the time it
    /// asked for, at shutdown): ends it, or notes when to look again.
    pub(super) fn look_at_source<S>(&mut self, ctx: &mut Ctx<'_, S>) {
        let Phase::Streaming(streaming) = &mut self.phase else {
            return;
        };
        let pipe_open = streaming.pipe.is_some();
        match streaming
            .source
            .look(pipe_open, &mut ctx.server(self.peer.addr()))
        {
            // The stream ends only once all the pipe's output is in.
            Look::Done(trailer) if !pipe_open => self.finish_stream(trailer, ctx),
            Look::Done(_) => streaming.next_look = None,
            Look::Again(at) => streaming.next_look = at,
        }
    }

    /// Output drained and the source done: the last chunk with its trailer.
    fn finish_stream<S>(&mut self, trailer_value: Option<String>, ctx: &mut Ctx<'_, S>) {
        let Phase::Streaming(streaming) = &self.phase else {
            return;
        };
        let (chunked, reply, trailer) = (streaming.chunked, streaming.reply, streaming.trailer);
        if chunked {
            let out = self.output_bytes(ctx.pool);
            out.extend_from_slice(b"0\r\n");
            if let (Some(name), Some(value)) = (trailer, trailer_value) {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
        self.record_stream_end(ctx);
        let outcome = Outcome::answered(!(chunked && reply.keep_alive), ctx);
        self.transition(outcome, ctx);
    }
}

/// What a stream holds once its source was handed back.
struct Abandoned;

impl Source for Abandoned {
    fn look(&mut self, _: bool, _: &mut ServerState<'_>) -> Look {
        Look::Done(None)
    }
    fn stop(&mut self, _: &mut ServerState<'_>) {}
    fn abandon(self: Box<Self>, _: &mut ServerState<'_>) {}
}
