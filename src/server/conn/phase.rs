//! The connection's phases, each owning the state that means something only in it, and the
//! one place a connection moves from one phase to the next: [`Conn::transition`]. Feature
//! code (answering, parking, subscribing, streaming, closing) computes an [`Outcome`]; the
//! transition checks it against [`TRANSITIONS`], the table `docs/architecture.md` shows (a
//! test compares the two), and builds the next phase from it.

use std::time::Instant;

use super::comet::{Awaiting, Parked, Subscribed};
use super::stream::Streaming;
use super::{BodyPhase, Conn, Ctx, Transport};
use crate::http::HeadScanner;

pub(super) enum Phase {
    /// Reading a request head.
    Head {
        scanner: HeadScanner,
        /// Where the head (or idle) timeout's clock started: accept, the moment the client
        /// had taken the last response, or the first byte of this head on a kept-alive one.
        since: Instant,
        /// Between requests on a kept-alive connection, with no byte of the next one yet.
        idle: bool,
    },
    /// A routed request whose body is still arriving. Boxed: large, and never parked.
    Body(Box<BodyPhase>),
    /// A long-poll waiter: no buffers, a spot on its channel, and how to answer it.
    Parked(Parked),
    /// An event-stream subscriber.
    Subscribed(Subscribed),
    /// Streaming a source's output. Boxed: it is large and rare.
    Streaming(Box<Streaming>),
    /// `--workers N`: a request relayed to the hub (a publish, a count), answered when every
    /// worker has counted; or (`--redis`) a catch-up waiting for the hub's read of Redis.
    AwaitingHub(Awaiting),
    /// The last response is queued; the connection closes once it is written.
    Closing,
    /// Our side is shut down; the peer's input is drained until its EOF or `until`.
    Lingering { until: Instant },
}

/// A phase's name, for the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PhaseKind {
    Head,
    Body,
    Parked,
    Subscribed,
    Streaming,
    AwaitingHub,
    Closing,
    Lingering,
}

/// What happened that moves a connection on, with the state its next phase starts from.
pub(super) enum Outcome {
    /// A head was routed to a handler that reads a body.
    Routed(Box<BodyPhase>),
    /// A response is queued and the connection stays open for the next request.
    Answered,
    /// A response is queued and the connection closes after it (an error, `Connection:
    /// close`, HTTP/1.0, shutdown).
    AnsweredClose,
    /// The request parked on a channel until a message (or its timeout).
    Parked(Parked),
    /// The request subscribed to a channel's event stream.
    Subscribed(Subscribed),
    /// The request is answered with a polled source's output as it comes.
    Streaming(Box<Streaming>),
    /// The handler's request went to the hub (`--workers N`); its answer comes from there.
    Relayed(Awaiting),
    /// An event stream ended (shutdown): its last bytes are queued.
    Ended,
    /// All output is out but the peer may still be sending: linger until this instant.
    Drained { until: Instant },
}

/// An outcome's name, for the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutcomeKind {
    Routed,
    Answered,
    AnsweredClose,
    Parked,
    Subscribed,
    Streaming,
    Relayed,
    Ended,
    Drained,
}

use OutcomeKind as O;
use PhaseKind as P;

/// Every legal move: (from, outcome, to). Closing the connection is not a move: any phase
/// may close (a hang-up, an I/O error, a timeout), and the loop then drops it.
pub(super) const TRANSITIONS: &[(PhaseKind, OutcomeKind, PhaseKind)] = &[
    (P::Head, O::Routed, P::Body),
    (P::Head, O::Answered, P::Head),
    (P::Head, O::AnsweredClose, P::Closing),
    (P::Head, O::Parked, P::Parked),
    (P::Head, O::Subscribed, P::Subscribed),
    (P::Head, O::Streaming, P::Streaming),
    (P::Body, O::Answered, P::Head),
    (P::Body, O::AnsweredClose, P::Closing),
    (P::Body, O::Parked, P::Parked),
    (P::Body, O::Subscribed, P::Subscribed),
    (P::Body, O::Streaming, P::Streaming),
    (P::Head, O::Relayed, P::AwaitingHub),
    (P::Body, O::Relayed, P::AwaitingHub),
    (P::AwaitingHub, O::Answered, P::Head),
    (P::AwaitingHub, O::AnsweredClose, P::Closing),
    (P::AwaitingHub, O::Parked, P::Parked),
    (P::AwaitingHub, O::Subscribed, P::Subscribed),
    (P::Parked, O::Answered, P::Head),
    (P::Parked, O::AnsweredClose, P::Closing),
    (P::Streaming, O::Answered, P::Head),
    (P::Streaming, O::AnsweredClose, P::Closing),
    (P::Subscribed, O::Ended, P::Closing),
    (P::Closing, O::Drained, P::Lingering),
];

impl Phase {
    pub(super) fn kind(&self) -> PhaseKind {
        match self {
            Phase::Head { .. } => P::Head,
            Phase::Body(_) => P::Body,
            Phase::Parked(_) => P::Parked,
            Phase::Subscribed(_) => P::Subscribed,
            Phase::Streaming(_) => P::Streaming,
            Phase::AwaitingHub(_) => P::AwaitingHub,
            Phase::Closing => P::Closing,
            Phase::Lingering { .. } => P::Lingering,
        }
    }

    /// The first phase of a connection, or of the next request on a kept-alive one.
    pub(super) fn head(since: Instant, idle: bool) -> Phase {
        Phase::Head {
            scanner: HeadScanner::default(),
            since,
            idle,
        }
    }

    /// When the phase wants its next timed look: the end of a lingering close, a waiter's
    /// 204, a subscriber's heartbeat, a stream's next look at its source.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Phase::Parked(parked) => parked.timeout_at,
            Phase::Subscribed(subscribed) => Some(subscribed.heartbeat_at),
            Phase::Streaming(streaming) => streaming.next_look,
            Phase::Lingering { until } => Some(*until),
            Phase::Head { .. } | Phase::Body(_) | Phase::AwaitingHub(_) | Phase::Closing => None,
        }
    }
}

impl Outcome {
    pub(super) fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Routed(_) => O::Routed,
            Outcome::Answered => O::Answered,
            Outcome::AnsweredClose => O::AnsweredClose,
            Outcome::Parked(_) => O::Parked,
            Outcome::Subscribed(_) => O::Subscribed,
            Outcome::Streaming(_) => O::Streaming,
            Outcome::Relayed(_) => O::Relayed,
            Outcome::Ended => O::Ended,
            Outcome::Drained { .. } => O::Drained,
        }
    }

    /// A response is queued: keep-alive, unless it or the server's shutdown closes.
    pub(super) fn answered<S>(close: bool, ctx: &Ctx<'_, S>) -> Outcome {
        if close || ctx.draining {
            Outcome::AnsweredClose
        } else {
            Outcome::Answered
        }
    }
}

/// The phase `outcome` leads to from `from`, if that move is in the table.
pub(super) fn next_kind(from: PhaseKind, outcome: OutcomeKind) -> Option<PhaseKind> {
    TRANSITIONS
        .iter()
        .find(|&&(f, o, _)| f == from && o == outcome)
        .map(|&(_, _, to)| to)
}

impl<T: Transport> Conn<T> {
    /// The one place a connection changes phase: `outcome`, reached in the current phase,
    /// must be a move in [`TRANSITIONS`] (checked in debug builds, so every test checks it).
    pub(super) fn transition<S>(&mut self, outcome: Outcome, ctx: &Ctx<'_, S>) {
        let from = self.phase.kind();
        let expected = next_kind(from, outcome.kind());
        debug_assert!(
            expected.is_some(),
            "illegal transition: {from:?} on {:?}",
            outcome.kind()
        );
        self.phase = match outcome {
            Outcome::Routed(body) => Phase::Body(body),
            Outcome::Answered => Phase::head(ctx.now, true),
            Outcome::AnsweredClose | Outcome::Ended => Phase::Closing,
            Outcome::Parked(parked) => Phase::Parked(parked),
            Outcome::Subscribed(subscribed) => Phase::Subscribed(subscribed),
            Outcome::Streaming(streaming) => Phase::Streaming(streaming),
            Outcome::Relayed(reply) => Phase::AwaitingHub(reply),
            Outcome::Drained { until } => Phase::Lingering { until },
        };
        debug_assert_eq!(expected, Some(self.phase.kind()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase_named(name: &str) -> PhaseKind {
        let all = [
            P::Head,
            P::Body,
            P::Parked,
            P::Subscribed,
            P::Streaming,
            P::AwaitingHub,
            P::Closing,
            P::Lingering,
        ];
        *all.iter()
            .find(|k| format!("{k:?}") == name)
            .unwrap_or_else(|| panic!("unknown phase {name} in docs/architecture.md"))
    }

    fn outcome_named(name: &str) -> OutcomeKind {
        let all = [
            O::Routed,
            O::Answered,
            O::AnsweredClose,
            O::Parked,
            O::Subscribed,
            O::Streaming,
            O::Relayed,
            O::Ended,
            O::Drained,
        ];
        *all.iter()
            .find(|k| format!("{k:?}") == name)
            .unwrap_or_else(|| panic!("unknown outcome {name} in docs/architecture.md"))
    }

    /// The first `code` span of a table cell.
    fn code_span(cell: &str) -> &str {
        cell.split('`').nth(1).unwrap_or("")
    }

    /// The rows of the transition table in docs/architecture.md (between its markers).
    fn documented() -> Vec<(PhaseKind, OutcomeKind, PhaseKind)> {
        let doc = include_str!("../../../docs/architecture.md");
        let table = doc
            .split("<!-- transitions -->")
            .nth(1)
            .expect("docs/architecture.md has a <!-- transitions --> table");
        table
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').collect();
                (
                    phase_named(code_span(cells[1])),
                    outcome_named(code_span(cells[2])),
                    phase_named(code_span(cells[3])),
                )
            })
            .collect()
    }

    #[test]
    fn the_documented_table_is_the_code_table() {
        let documented = documented();
        for row in TRANSITIONS {
            assert!(documented.contains(row), "{row:?} is not documented");
        }
        for row in &documented {
            assert!(
                TRANSITIONS.contains(row),
                "{row:?} is documented, not in code"
            );
        }
        assert_eq!(
            documented.len(),
            TRANSITIONS.len(),
            "a row is documented twice"
        );
    }

    #[test]
    fn each_move_has_one_destination() {
        for (i, &(from, outcome, _)) in TRANSITIONS.iter().enumerate() {
            let same = TRANSITIONS[i + 1..]
                .iter()
                .any(|&(f, o, _)| f == from && o == outcome);
            assert!(!same, "{from:?} on {outcome:?} twice");
        }
    }

    #[test]
    fn no_phase_is_a_dead_end_but_lingering() {
        // Every phase but the last can move on (or close), and every phase is reachable.
        for kind in [P::Body, P::Parked, P::Subscribed, P::Streaming, P::Closing] {
            assert!(TRANSITIONS.iter().any(|&(_, _, to)| to == kind), "{kind:?}");
            assert!(TRANSITIONS.iter().any(|&(f, _, _)| f == kind), "{kind:?}");
        }
        assert!(TRANSITIONS.iter().all(|&(f, _, _)| f != P::Lingering));
    }
}
