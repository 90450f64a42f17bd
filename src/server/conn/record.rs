//! What a connection records for the instruments: the status class of each response it
//! encodes, its access-log line (begun at the head, finished at the response, or at the close
//! for a stream or a request never answered), the bytes it has written, and which listener
//! it came through. The connection's other modules only call the hooks here.

use std::time::Instant;

use super::{Conn, Ctx, ReplyTo, Transport};
use crate::http::{Head, Response};
use crate::server::access_log::{AccessLog, Entry};
use crate::server::stats::Stats;

/// nginx's status for a request whose client went away before it was answered.
const CLIENT_CLOSED: u16 = 499;

#[derive(Debug, Default)]
pub(super) struct Record {
    /// Accepted on the admin listener: only `/metrics` is served.
    pub(super) admin: bool,
    /// Only while the access log is on: a parked waiter must stay small.
    logged: Option<Box<Logged>>,
}

#[derive(Debug, Default)]
struct Logged {
    /// The access-log half-line of the request being answered.
    entry: Option<Entry>,
    /// A streamed response being sent: its status, and the position in the connection's
    /// output stream where its body starts.
    streamed: Option<(u16, u64)>,
    /// Bytes written to the socket since the log began following the connection.
    written: u64,
}

impl Record {
    /// A request head was parsed: its half of the access-log line, while the head is here.
    /// (A method on the record, not the connection: the head borrows the connection's input.)
    pub(super) fn request(&mut self, head: &Head<'_>, log: &mut AccessLog) {
        if !log.is_on() {
            return;
        }
        let logged = self.logged.get_or_insert_with(Box::default);
        if let Some(stale) = logged.entry.take() {
            log.discard(stale);
        }
        logged.entry = log.begin(head);
    }

    /// The socket took `n` more bytes.
    pub(super) fn wrote(&mut self, n: usize) {
        if let Some(logged) = &mut self.logged {
            logged.written += n as u64;
        }
    }
}

impl<T: Transport> Conn<T> {
    /// This connection came through the admin listener.
    pub fn mark_admin(&mut self) {
        self.record.admin = true;
    }

    /// A response was encoded: `body` bytes of it, or None for a streamed body whose length
    /// is known only when it ends.
    pub(super) fn record_response<S>(
        &mut self,
        status: u16,
        body: Option<u64>,
        ctx: &mut Ctx<'_, S>,
    ) {
        ctx.stats.count_response(status);
        if !ctx.log.is_on() {
            return;
        }
        let Some(logged) = &mut self.record.logged else {
            return;
        };
        match body {
            Some(bytes) => {
                let entry = logged.entry.take();
                ctx.log.finish(
                    entry,
                    self.peer.addr().ip(),
                    status,
                    bytes,
                    ctx.now,
                    ctx.stats,
                );
            }
            None => {
                let body_starts = logged.written + self.output.pending_len() as u64;
                logged.streamed = Some((status, body_starts));
            }
        }
    }

    /// A streamed response ended with all of its body queued.
    pub(super) fn record_stream_end<S>(&mut self, ctx: &mut Ctx<'_, S>) {
        let Some(logged) = &mut self.record.logged else {
            return;
        };
        if let Some((status, body_starts)) = logged.streamed.take() {
            let queued = logged.written + self.output.pending_len() as u64;
            let entry = logged.entry.take();
            let bytes = queued.saturating_sub(body_starts);
            ctx.log.finish(
                entry,
                self.peer.addr().ip(),
                status,
                bytes,
                ctx.now,
                ctx.stats,
            );
        }
    }

    /// The connection closes: a stream cut short is logged with the body bytes that left, a
    /// request never answered (a waiter that hung up, a body cut short) as 499.
    pub(super) fn record_close(&mut self, log: &mut AccessLog, stats: &mut Stats, now: Instant) {
        let Some(logged) = &mut self.record.logged else {
            return;
        };
        let entry = logged.entry.take();
        let (status, bytes) = match logged.streamed.take() {
            Some((status, body_starts)) => (status, logged.written.saturating_sub(body_starts)),
            None if entry.is_some() => (CLIENT_CLOSED, 0),
            None => return,
        };
        log.finish(entry, self.peer.addr().ip(), status, bytes, now, stats);
    }
}

/// The body bytes a response encoded for `reply` carries: none for HEAD, 204 and 304.
pub(super) fn body_bytes(response: &Response, reply: ReplyTo) -> u64 {
    if reply.head_method || matches!(response.status, 204 | 304) {
        0
    } else {
        response.body.len() as u64
    }
}
