//! The streamed-command side of a connection: starting the operator's command, pumping its
//! pipe into chunks, watching its exit and limits, and handing it over when the client goes.

use std::io;
use std::process::ExitStatus;
use std::time::Instant;

use mio::Interest;

use super::{come_back_later, internal_error, Conn, Ctx, Next, Phase, ReplyTo, Transport};
use crate::http::response::{encode_head, BodyFraming};
use crate::http::{Response, Version};
use crate::router::Service;
use crate::server::child::{self, Spawned, REAP_INTERVAL};
use crate::server::fanout;
use crate::server::stats::Stats;
use crate::server::syscalls::{Pipe, Process};
use crate::server::table::pipe_token;

pub(super) struct Streaming {
    child: Process,
    /// The child's stdout; None once it reached EOF.
    pub(super) stdout: Option<Pipe>,
    reply: ReplyTo,
    chunked: bool,
    /// The last read found the pipe empty: wait for its next readable edge.
    pub(super) pipe_drained: bool,
    exit: Option<ExitStatus>,
    /// When `--exec-time-limit` ends the command.
    limit_at: Option<Instant>,
    /// After SIGTERM: when SIGKILL follows.
    kill_at: Option<Instant>,
    killed: bool,
}

/// The most read from a child's pipe at once; a pipe holds 64 KiB.
const PIPE_READ: usize = 32 * 1024;

impl<T: Transport> Conn<T> {
    /// The child's pipe has output (or EOF).
    pub fn on_pipe_ready<S: Service>(&mut self, ctx: &mut Ctx<'_, S>) -> Next {
        if let Phase::Streaming(streaming) = &mut self.phase {
            streaming.pipe_drained = false;
        }
        self.finish_turn(ctx)
    }

    /// The command of a stream cut short, for the loop to end and reap. Its shell may have
    /// exited already while something it started still runs: the group is ended either way.
    /// Its pipe, if still open, is closed here.
    pub fn take_child(&mut self, stats: &mut Stats) -> Option<Process> {
        let phase = std::mem::replace(&mut self.phase, Phase::Closing);
        match phase {
            Phase::Streaming(streaming) => {
                if let Some(stdout) = streaming.stdout {
                    stdout.close(stats);
                }
                Some(streaming.child)
            }
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// Runs the operator's command `name` and starts streaming its output.
    pub(super) fn start_stream<S>(&mut self, name: &str, reply: ReplyTo, ctx: &mut Ctx<'_, S>) {
        let command = ctx.config.commands.iter().find(|(n, _)| n == name);
        let Some((_, text)) = command else {
            return self.respond(Response::text(404, "no such command\n"), reply, ctx);
        };
        if ctx.children.running() >= ctx.config.exec_max_running {
            eprintln!("miohttpd: {}: too many commands running", self.peer);
            let busy = come_back_later("too many commands running\n");
            return self.respond(busy, reply, ctx);
        }
        let Spawned { child, stdout } = match child::spawn(text, ctx.config, ctx.stats) {
            Ok(spawned) => spawned,
            Err(e) => {
                eprintln!(
                    "miohttpd: {}: command {name} could not start: {e}",
                    self.peer
                );
                let failed = Response::text(500, "the command could not start\n");
                return self.respond(failed, reply, ctx);
            }
        };
        ctx.children.started();
        let mut stdout = Pipe::new(stdout);
        let token = pipe_token(ctx.token);
        let registered = ctx
            .registry
            .register(&mut stdout, token, Interest::READABLE, ctx.stats);
        if let Err(e) = registered {
            eprintln!("miohttpd: register a command's pipe: {e}");
            stdout.close(ctx.stats);
            ctx.children
                .end(child, ctx.now, ctx.config.exec_kill_grace, ctx.stats);
            return self.respond(internal_error("pipe registration failed"), reply, ctx);
        }
        let chunked = reply.version == Version::Http11;
        let framing = if chunked {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        };
        let headers = [
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-cache"),
            ("Trailer", "X-Exit-Status"),
        ];
        let headers = headers.into_iter().take(if chunked { 3 } else { 2 });
        let exchange = reply.exchange(ctx.date.as_bytes());
        let out = self.output_bytes(ctx.pool);
        let content_type = "text/plain; charset=utf-8";
        let close = encode_head(
            out,
            200,
            content_type,
            headers,
            framing,
            reply.keep_alive,
            &exchange,
        );
        self.record_response(200, None, ctx);
        let limit = ctx.config.exec_time_limit;
        let limit_at = (!limit.is_zero()).then(|| ctx.now + limit);
        self.phase = Phase::Streaming(Box::new(Streaming {
            child,
            stdout: Some(stdout),
            reply: ReplyTo {
                keep_alive: !close,
                ..reply
            },
            chunked,
            pipe_drained: false,
            exit: None,
            limit_at,
            kill_at: None,
            killed: false,
        }));
        if let Some(at) = limit_at {
            self.set_deadline(at);
        }
    }

    /// Shutdown: the command gets SIGTERM now and SIGKILL after the kill grace, as at its
    /// time limit; its stream then ends as usual, with its exit status.
    pub(super) fn end_command<S>(&mut self, ctx: &mut Ctx<'_, S>) {
        if let Phase::Streaming(streaming) = &mut self.phase {
            if streaming.kill_at.is_none() {
                let term = crate::sys::Signal::Terminate;
                child::signal_group(&streaming.child, term, ctx.stats);
                streaming.kill_at = Some(ctx.now + ctx.config.exec_kill_grace);
            }
        }
        self.check_child(ctx);
    }

    /// One read from the child's pipe into the output, as one chunk; returns the bytes read.
    pub(super) fn pump<S>(&mut self, ctx: &mut Ctx<'_, S>) -> usize {
        let Phase::Streaming(streaming) = &mut self.phase else {
            return 0;
        };
        let Some(stdout) = streaming.stdout.as_mut() else {
            return 0;
        };
        let mut buf = [0u8; PIPE_READ];
        match stdout.read(&mut buf, ctx.stats) {
            Ok(0) => {
                // EOF: closing the pipe also takes it out of the poll set.
                if let Some(stdout) = streaming.stdout.take() {
                    stdout.close(ctx.stats);
                }
                self.check_child(ctx);
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
                eprintln!("miohttpd: {}: reading a command's output: {e}", self.peer);
                if let Some(stdout) = streaming.stdout.take() {
                    stdout.close(ctx.stats);
                }
                self.check_child(ctx);
                0
            }
        }
    }

    /// Reaps the child if it exited, enforces the time limit, and ends the stream once the
    /// output is drained and the exit known; else sets the deadline to look again.
    pub(super) fn check_child<S>(&mut self, ctx: &mut Ctx<'_, S>) {
        let Phase::Streaming(streaming) = &mut self.phase else {
            return;
        };
        if streaming.exit.is_none() {
            if let Ok(Some(status)) = streaming.child.try_wait(ctx.stats) {
                streaming.exit = Some(status);
            }
        }
        // The limits bind the whole group until the stream ends: after the shell exits, what
        // it started may still hold the pipe open.
        let finished = streaming.exit.is_some() && streaming.stdout.is_none();
        if !finished {
            match (streaming.kill_at, streaming.limit_at) {
                (Some(kill_at), _) if ctx.now >= kill_at && !streaming.killed => {
                    child::signal_group(&streaming.child, crate::sys::Signal::Kill, ctx.stats);
                    streaming.killed = true;
                }
                (None, Some(limit_at)) if ctx.now >= limit_at => {
                    eprintln!("miohttpd: {}: command over its time limit", self.peer);
                    let terminate = crate::sys::Signal::Terminate;
                    child::signal_group(&streaming.child, terminate, ctx.stats);
                    streaming.kill_at = Some(ctx.now + ctx.config.exec_kill_grace);
                }
                _ => {}
            }
        }
        match (streaming.exit, &streaming.stdout) {
            (Some(status), None) => self.finish_stream(status, ctx),
            _ => {
                let next = [
                    streaming.exit.is_none().then(|| ctx.now + REAP_INTERVAL),
                    streaming.kill_at.filter(|_| !streaming.killed),
                    streaming.limit_at.filter(|_| streaming.kill_at.is_none()),
                ];
                // While the pipe is open, only the limits need a timer; after its EOF,
                // look for the exit every REAP_INTERVAL.
                let next = if streaming.stdout.is_some() {
                    &next[1..]
                } else {
                    &next[..]
                };
                if let Some(at) = next.iter().flatten().min().copied() {
                    self.set_deadline(at);
                }
            }
        }
    }

    /// Output drained and exit known: the last chunk with the exit status as a trailer.
    pub(super) fn finish_stream<S>(&mut self, status: ExitStatus, ctx: &mut Ctx<'_, S>) {
        let Phase::Streaming(streaming) = &self.phase else {
            return;
        };
        let (chunked, reply) = (streaming.chunked, streaming.reply);
        ctx.children.exited();
        self.deadline = None;
        if chunked {
            let out = self.output_bytes(ctx.pool);
            out.extend_from_slice(b"0\r\nX-Exit-Status: ");
            out.extend_from_slice(child::describe_exit(status).as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
        }
        self.record_stream_end(ctx);
        self.answered(!(chunked && reply.keep_alive), ctx);
    }
}
