//! The loop as one of `--workers N`: the shared listener added with EPOLLEXCLUSIVE, and the
//! bus link to the hub polled beside the connections (publishes relayed, the hub's messages
//! delivered, answers given). A child module of the loop's so these hooks reach its state
//! without widening `Server`'s API beyond two methods.

use std::io;
use std::time::Instant;

use mio::Interest;

use super::table::{listener_token, BUS};
use super::{EventLoop, Server};
use crate::comet::relay::Numbering;
use crate::router::Service;
use crate::workers::link::WorkerLink;

impl<S: Service> Server<S> {
    /// Re-adds every listener with EPOLLEXCLUSIVE (`--accept-model shared`).
    #[cfg(target_os = "linux")]
    pub fn accept_exclusively(&mut self) -> io::Result<()> {
        for (index, listener) in self.listeners.iter_mut().enumerate() {
            self.poll
                .make_exclusive(listener, listener_token(index), &mut self.stats)?;
        }
        Ok(())
    }

    /// Elsewhere there is no EPOLLEXCLUSIVE: every worker's poll wakes for a connection.
    #[cfg(not(target_os = "linux"))]
    pub fn accept_exclusively(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Service> Server<S> {
    /// Serves as a worker: comet publishes go to the hub over `link`, whose messages (with
    /// the hub's ids) reach this worker's waiters.
    pub fn attach_link(&mut self, mut link: WorkerLink) -> io::Result<()> {
        self.poll.registry().register(
            link.stream_mut(),
            BUS,
            Interest::READABLE | Interest::WRITABLE,
            &mut self.stats,
        )?;
        self.link = Some(link);
        Ok(())
    }
}

impl<S: Service> EventLoop<S> {
    /// Before the first poll: the replay and welcome already read are applied, and the
    /// registry starts relaying (with `--redis`, ids numbered per channel by Redis).
    pub(super) fn start_link(&mut self, now: Instant) {
        if self.link.is_some() {
            let numbering = match self.config.redis {
                Some(_) => Numbering::PerChannel,
                None => Numbering::Server,
            };
            self.comet.relay_to_hub(numbering);
            self.on_link(now);
        }
    }

    /// The link is readable (or writable): the hub's frames are acted on.
    pub(super) fn on_link(&mut self, now: Instant) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let mut answers = std::mem::take(&mut self.hub_answers);
        let down = link.read(&mut self.comet, now, &mut answers).err();
        if let Some(down) = &down {
            link.fail_all(&mut answers);
            self.link = None;
            eprintln!("miohttpd: worker alone ({}); shutting down", down.0);
        }
        for (token, answer) in answers.drain(..) {
            self.with_conn(token, now, |conn, ctx| conn.answer_from_hub(answer, ctx));
        }
        self.hub_answers = answers;
        if let Some(link) = self.link.as_mut() {
            for query in std::mem::take(&mut link.stats_wanted) {
                let gauges = super::instruments::gauges(&self.stats, &self.comet, &self.children);
                let text = self
                    .stats
                    .render_prometheus(&gauges, self.config.events_per_poll);
                link.send_stats(query, text.as_bytes());
            }
        }
        self.fan_out(now);
        if down.is_some() && self.draining_until.is_none() {
            self.begin_shutdown("link to the supervisor lost", now);
        }
    }

    /// After each wake-up: publishes the connections relayed go out, with the counts owed.
    pub(super) fn pump_link(&mut self, now: Instant) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.relay(&mut self.comet);
        if let Err(down) = link.flush() {
            let mut answers = Vec::new();
            link.fail_all(&mut answers);
            self.link = None;
            eprintln!("miohttpd: worker alone ({}); shutting down", down.0);
            for (token, answer) in answers {
                self.with_conn(token, now, |conn, ctx| conn.answer_from_hub(answer, ctx));
            }
            if self.draining_until.is_none() {
                self.begin_shutdown("link to the supervisor lost", now);
            }
        }
    }
}
