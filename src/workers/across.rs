//! The Redis link in the supervisor's hub (`--redis`): the one set of Redis connections of a
//! host, whatever its worker count. The hub queues its workers' publishes for Redis (which
//! numbers them) instead of numbering them itself; messages come back from Redis with their
//! ids, this host's and other hosts', and the hub broadcasts them to every worker as it does
//! its own; the bridge (`redis::bridge`) counts every host's deliveries into the publisher's
//! answer and catches the hub's channels up after every reconnect. Nothing here runs
//! without `--redis`.

use std::time::Instant;

use mio::{Registry, Token};

use crate::bus::hub::Hub;
use crate::redis::bridge::{Bridge, CountOf, LocalChannels, Outcome, Reach};
use crate::redis::link::{Link, Linked};
use crate::redis::session::{Event, LinkState, LinkStats, Publish, SessionConfig};

/// The hub as the bridge's local registry: a delivery is broadcast to the workers and
/// counted when they have all answered ([`Reach::Later`]).
struct HubChannels<'a> {
    hub: &'a mut Hub,
    now: Instant,
}

impl LocalChannels for HubChannels<'_> {
    fn deliver(
        &mut self,
        channel: &str,
        epoch: u32,
        seq: u64,
        content_type: &str,
        body: &[u8],
        ticket: u64,
        count: Option<CountOf<'_>>,
    ) -> Reach {
        let message = (channel, content_type, body);
        let id = (epoch, seq);
        match self
            .hub
            .deliver_from_redis(message, id, ticket, count, self.now)
        {
            Some(reached) => Reach::Now(reached),
            None => Reach::Later,
        }
    }

    fn count_waiters(&mut self, channel: &str, ticket: u64, question: (&str, u64)) -> Reach {
        self.hub
            .count_for_redis(channel, ticket, question, self.now);
        Reach::Later
    }

    fn resync(&mut self, channel: &str) {
        self.hub.forget_channel(channel);
    }

    fn newest_ids(&self) -> Vec<(String, Option<(u32, u64)>)> {
        self.hub.newest_ids()
    }
}

/// Sends the hub's publishes to Redis; one the link cannot take is refused (503).
fn publish_queued(bridge: &mut Bridge, hub: &mut Hub, linked: &mut Linked<'_>, now: Instant) {
    for publish in hub.take_to_redis() {
        let message = Publish {
            channel: &publish.channel,
            content_type: &publish.content_type,
            body: &publish.body,
            answers: publish.answers,
        };
        let done = bridge.publish(linked, publish.key, message, now);
        if done.is_err() {
            hub.redis_refused(publish.key);
        }
    }
}

/// The link and the bridge of one host.
pub struct Across {
    link: Link,
    bridge: Bridge,
    outcomes: Vec<Outcome>,
}

impl Across {
    /// Starts connecting at once (never blocking: the supervisor serves on while Redis is
    /// unreachable, and the link retries with back-off).
    pub fn new(config: SessionConfig, tokens: [Token; 2], registry: &Registry) -> Across {
        // Half the reply timeout: a notify never waits longer on a silent host.
        let bound = config.reply_timeout / 2;
        let host = config.host.clone();
        eprintln!(
            "miohttpd[supervisor]: comet across hosts through redis at {}, host {host}",
            config.addr
        );
        Across {
            link: Link::new(config, tokens, registry, Instant::now()),
            bridge: Bridge::new(host, bound),
            outcomes: Vec::new(),
        }
    }

    pub fn owns(&self, token: Token) -> bool {
        self.link.owns(token)
    }

    pub fn state(&self) -> LinkState {
        self.link.state()
    }

    pub fn stats(&self) -> LinkStats {
        self.link.stats()
    }

    /// When [`Across::turn`] is next due.
    pub fn next_deadline(&self) -> Instant {
        let link = self.link.next_deadline();
        self.bridge.next_deadline().map_or(link, |at| at.min(link))
    }

    /// A readiness event on one of the link's tokens.
    pub fn ready(&mut self, registry: &Registry, token: Token, now: Instant) {
        self.link.ready(registry, token, now);
    }

    /// One turn after the supervisor's events: the hub's publishes to Redis, the link's
    /// events to the hub, the workers' counts to the bridge, the answers back to the hub.
    pub fn turn(&mut self, hub: &mut Hub, registry: &Registry, now: Instant) {
        if now >= self.link.next_deadline() {
            self.link.tick(registry, now);
        }
        let mut linked = Linked {
            link: &mut self.link,
            registry,
        };
        publish_queued(&mut self.bridge, hub, &mut linked, now);
        for channel in hub.take_to_read() {
            if !self
                .bridge
                .catch_up(&mut linked, channel.to_string(), None, now)
            {
                hub.read_done(&channel, None); // the link is down: decide from what is held
            }
        }
        for (key, channel, local) in hub.take_waiter_queries() {
            self.bridge
                .count_waiters(&mut linked, key, &channel, local, now, &mut self.outcomes);
        }
        while let Some(event) = linked.link.poll_event() {
            if let Event::Log(line) = &event {
                eprintln!("miohttpd[supervisor]: redis: {line}");
            }
            let mut local = HubChannels {
                hub: &mut *hub,
                now,
            };
            self.bridge
                .on_event(event, &mut local, &mut linked, now, &mut self.outcomes);
        }
        for (ticket, reached) in hub.take_reached() {
            self.bridge
                .reached(ticket, reached, &mut linked, now, &mut self.outcomes);
        }
        self.bridge.tick(now, &mut self.outcomes);
        for outcome in self.outcomes.drain(..) {
            match outcome {
                Outcome::Published { epoch, seq, tally } => hub.redis_published(
                    tally.request,
                    epoch,
                    seq,
                    (tally.reached, tally.counted, tally.known),
                ),
                Outcome::PublishFailed { request, failure } => {
                    eprintln!("miohttpd[supervisor]: redis: publish refused: {failure:?}");
                    hub.redis_refused(request)
                }
                Outcome::Waiters { tally } => {
                    hub.redis_waiters(tally.request, (tally.reached, tally.counted, tally.known))
                }
                Outcome::CaughtUp { channel, issued } => hub.read_done(&channel, issued),
                // The hub reads whole channels (`CaughtUp`), never a client's range.
                Outcome::History { .. } => {}
            }
        }
        // A `GET /notify` whose every host has counted publishes now, not a turn later.
        let mut linked = Linked {
            link: &mut self.link,
            registry,
        };
        publish_queued(&mut self.bridge, hub, &mut linked, now);
    }

    /// Closes the connections (the supervisor is stopping).
    pub fn close(&mut self, registry: &Registry) {
        self.link.close(registry);
    }
}
