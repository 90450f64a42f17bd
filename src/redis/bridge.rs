//! The seam between the Redis link and the local comet registry: what a host does with the
//! link's events. Messages from other hosts are delivered locally and counted back to their
//! publisher; this host's publishes are delivered locally once Redis gave them an id and
//! answered when every host has counted (or the bound passed); after every reconnect, each
//! channel held locally is caught up from its stream, or told to resync when Redis lost it.
//! It owns no socket and no registry: the registry is reached through [`LocalChannels`] (the
//! whole of what Redis needs from it) and the link through [`Requests`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::counts::{count_payload, Counts, MessageKey, Tally};
use super::scripts::{Entry, History};
use super::session::{parse_fence, Event, Failure, Outgoing, Publish, Session};

/// How many connections a delivery reached here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Counted at once (one registry in this process).
    Now(u64),
    /// Counted later (the hub, whose workers answer over the bus): the registry's owner
    /// calls [`Bridge::reached`] with the ticket it was given.
    Later,
}

/// Whose `GET /notify` count a message carries the result of: on each host it answers the
/// waiters set aside for that count, no others (take-at-count, as on one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountOf<'a> {
    /// This host's count, under the number its registry gave the question.
    Here(u64),
    /// Another host's: its id and the number of its question on the bus.
    There { host: &'a str, question: u64 },
}

/// What the Redis side needs from the local registry.
pub trait LocalChannels {
    /// Delivers a message that has its id from Redis to this host's waiters and subscribers,
    /// keeping it in the channel's local history; returns the connections reached, now or
    /// later under `ticket` (0: nobody waits for the count). A message the channel already
    /// holds (same or older id, as after a catch-up) reaches no one. `count`: the
    /// `GET /notify` count it is the result of.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        channel: &str,
        epoch: u32,
        seq: u64,
        content_type: &str,
        body: &[u8],
        ticket: u64,
        count: Option<CountOf<'_>>,
    ) -> Reach;
    /// Parked waiters here (`GET /` asked on another host: `channel` empty), or the clients
    /// of `channel` (its `GET /notify`, whose message follows naming `question`, the
    /// asker's host and number), now or later under `ticket`.
    fn count_waiters(&mut self, channel: &str, ticket: u64, question: (&str, u64)) -> Reach;
    /// Redis lost `channel` (its epoch changed, or it is gone, while this host held it):
    /// waiters and subscribers get the resync signal, and the local history is dropped.
    fn resync(&mut self, channel: &str);
    /// The channels held locally, each with the id of its newest message (none: no message
    /// yet), to catch up after a reconnect.
    fn newest_ids(&self) -> Vec<(String, Option<(u32, u64)>)>;
}

/// What the bridge asks of the link.
pub trait Requests {
    fn publish(&mut self, request: u64, message: Publish<'_>, now: Instant) -> Result<(), Failure>;
    /// `fenced`: the read also publishes `fence REQUEST` on this host's reply channel.
    fn history(
        &mut self,
        request: u64,
        channel: &str,
        after: Option<(u32, u64)>,
        fenced: bool,
        now: Instant,
    ) -> Result<(), Failure>;
    fn reply_to_host(&mut self, to: &str, payload: &[u8], now: Instant);
    /// A question to every host, on the bus.
    fn announce(&mut self, payload: &[u8], now: Instant) -> Result<(), Failure>;
    /// Live hosts, this one included.
    fn live_hosts(&self) -> u64;
}

impl Requests for Session {
    fn publish(&mut self, request: u64, message: Publish<'_>, now: Instant) -> Result<(), Failure> {
        Session::publish(self, request, message, now)
    }

    fn history(
        &mut self,
        request: u64,
        channel: &str,
        after: Option<(u32, u64)>,
        fenced: bool,
        now: Instant,
    ) -> Result<(), Failure> {
        Session::history(self, request, channel, after, fenced, now)
    }

    fn reply_to_host(&mut self, to: &str, payload: &[u8], now: Instant) {
        Session::reply_to_host(self, to, payload, now)
    }

    fn announce(&mut self, payload: &[u8], now: Instant) -> Result<(), Failure> {
        Session::announce(self, payload, now)
    }

    fn live_hosts(&self) -> u64 {
        Session::live_hosts(self)
    }
}

/// What the server must do for a request it made through the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A publish is done: answer the publisher with `tally.reached`, the id, and
    /// `X-Comet-Hosts: tally.hosts_header()`.
    Published { epoch: u32, seq: u64, tally: Tally },
    /// A publish was refused or its outcome is unknown: 503 with Retry-After.
    PublishFailed { request: u64, failure: Failure },
    /// `GET /` asked with [`Bridge::count_waiters`] is done: `tally.reached` waiters on the
    /// hosts counted.
    Waiters { tally: Tally },
    /// The read of a channel this bridge made ([`Bridge::catch_up`]) is over: delivered, or
    /// failed (the link went down); clients waiting for it decide from what is held now.
    /// `issued`: the channel's epoch and last seq in Redis when it was read ((0, 0): Redis
    /// has no such channel; None: not read), so a client naming a newer id knows it was
    /// never given.
    CaughtUp {
        channel: String,
        issued: Option<(u32, u64)>,
    },
    /// A client's catch-up read from Redis.
    History {
        request: u64,
        result: Result<History, Failure>,
    },
}

/// A message from another host not delivered yet.
#[derive(Debug)]
struct HeldMessage {
    origin: String,
    /// The origin's `GET /notify` count whose result it is.
    answers: Option<u64>,
    key: MessageKey,
    content_type: String,
    body: Vec<u8>,
}

/// A delivery here whose count comes later ([`Reach::Later`]), and what it is for.
#[derive(Debug)]
enum AwaitedReach {
    /// This host's publish: counted with the other hosts' counts.
    Own {
        request: u64,
        key: MessageKey,
        hosts: u64,
    },
    /// Another host's message: the count goes back to its publisher.
    Other { origin: String, key: MessageKey },
}

/// The pseudo-channel of a waiter-count question on the bus (`ORIGIN\n?waiters\n0-N\n\n`):
/// no channel name has a `?`, so no message is taken for one. Hosts answer it on the
/// asker's reply channel as they count a message (`count ?waiters 0-N HOST COUNT`).
pub const WAITERS_QUERY: &str = "?waiters";

/// Request numbers the bridge makes for its own catch-up reads have this bit set, so they
/// never meet the server's.
const OWN_REQUEST: u64 = 1 << 63;

/// The bridge's state: publishes and counts in progress, catch-up reads in flight.
#[derive(Debug)]
pub struct Bridge {
    host: String,
    counts: Counts,
    /// This host's publishes waiting for their id, by request.
    publishing: HashMap<u64, Outgoing>,
    /// Ids of this host's publishes waiting for counts, by request.
    ids: HashMap<u64, (u32, u64)>,
    /// Catch-up reads this bridge made after a reconnect, by request: the channel and the
    /// newest id held when it was asked.
    catching_up: HashMap<u64, (String, Option<(u32, u64)>)>,
    /// Bus messages of channels whose catch-up read is in flight, held back until it is
    /// answered: delivered before it, a newer message would make the registry take the older
    /// ones the read brings for already held, and drop them.
    held_back: HashMap<String, Vec<HeldMessage>>,
    /// Catch-up reads answered before their fence came: the bus may still carry messages
    /// published before the read ran, which are news (held back), not history.
    answered_unfenced: HashMap<u64, History>,
    /// Catch-up reads whose fence came before their answer.
    fenced: std::collections::HashSet<u64>,
    next_own: u64,
    /// Deliveries here counted later, by ticket.
    awaiting_reach: HashMap<u64, AwaitedReach>,
    next_ticket: u64,
    /// Counts from other hosts that came before this host's own count of its publish (it
    /// is counted later): replayed once it is in. Bounded; kept only while one is awaited.
    early_counts: Vec<Vec<u8>>,
    /// `GET /` questions of this host waiting for other hosts' counts, by request.
    waiter_queries: std::collections::HashSet<u64>,
}

/// The most early counts kept (hosts x publishes in flight).
const MAX_EARLY_COUNTS: usize = 4096;

impl Bridge {
    /// `count_bound`: how long a publish waits for other hosts' counts.
    pub fn new(host: String, count_bound: Duration) -> Bridge {
        Bridge {
            host,
            counts: Counts::new(count_bound),
            publishing: HashMap::new(),
            ids: HashMap::new(),
            catching_up: HashMap::new(),
            held_back: HashMap::new(),
            answered_unfenced: HashMap::new(),
            fenced: std::collections::HashSet::new(),
            next_own: OWN_REQUEST,
            awaiting_reach: HashMap::new(),
            next_ticket: 1,
            early_counts: Vec::new(),
            waiter_queries: std::collections::HashSet::new(),
        }
    }

    fn own_reach_awaited(&self) -> bool {
        self.awaiting_reach
            .values()
            .any(|a| matches!(a, AwaitedReach::Own { .. }))
    }

    fn ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }

    /// The count of a delivery that answered [`Reach::Later`] under `ticket`.
    pub fn reached(
        &mut self,
        ticket: u64,
        reached: u64,
        link: &mut impl Requests,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        match self.awaiting_reach.remove(&ticket) {
            Some(AwaitedReach::Own {
                request,
                key,
                hosts,
            }) => {
                if let Some(tally) = self.counts.published(request, key, reached, hosts, now) {
                    self.answer(vec![tally], out);
                }
                let early = std::mem::take(&mut self.early_counts);
                let own_awaited = self.own_reach_awaited();
                for payload in early {
                    if self.counts.awaits(&payload) {
                        if let Some(tally) = self.counts.reply(&payload) {
                            self.answer(vec![tally], out);
                        }
                    } else if own_awaited {
                        self.early_counts.push(payload);
                    }
                }
            }
            Some(AwaitedReach::Other { origin, key }) => {
                link.reply_to_host(&origin, &count_payload(&key, &self.host, reached), now);
            }
            None => {}
        }
    }

    /// Publishes `body` on `channel` for every host. `Err` at once when the link is down
    /// (503); otherwise an [`Outcome`] for `request` follows from `on_event` or `tick`.
    pub fn publish(
        &mut self,
        link: &mut impl Requests,
        request: u64,
        message: Publish<'_>,
        now: Instant,
    ) -> Result<(), Failure> {
        link.publish(request, message, now)?;
        self.publishing.insert(request, message.to_outgoing());
        Ok(())
    }

    /// Reads `channel` from its stream after `newest` (none: all Redis keeps) and delivers
    /// what comes back here; its bus messages wait until then. After a reconnect for every
    /// channel held, and for a channel a client opened here that this host has no history
    /// of (it started after the channel's messages). A down link: nothing (the next `Up`).
    /// True while a read of it is in flight: an [`Outcome::CaughtUp`] follows.
    pub fn catch_up(
        &mut self,
        link: &mut impl Requests,
        channel: String,
        newest: Option<(u32, u64)>,
        now: Instant,
    ) -> bool {
        if self.held_back.contains_key(&channel) {
            return true; // a read of it is in flight already
        }
        let request = self.next_own;
        self.next_own += 1;
        if link.history(request, &channel, newest, true, now).is_ok() {
            self.held_back.insert(channel.clone(), Vec::new());
            self.catching_up.insert(request, (channel, newest));
            return true;
        }
        false
    }

    /// `GET /` on this host (`channel` empty: parked waiters), or the count a `GET /notify`
    /// publishes (`channel`'s waiters and subscribers): `local` counted here; every other
    /// host is asked on the bus and an [`Outcome::Waiters`] follows (at once when the link
    /// is down or this host is alone: the tally then says how many hosts were counted).
    pub fn count_waiters(
        &mut self,
        link: &mut impl Requests,
        request: u64,
        channel: &str,
        local: u64,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        let known = link.live_hosts();
        let key = MessageKey {
            channel: WAITERS_QUERY.into(),
            epoch: 0,
            seq: request,
        };
        let question = format!("{}\n{WAITERS_QUERY}\n0-{request}\n\n{channel}", self.host);
        let tally = Tally {
            request,
            reached: local,
            counted: 1,
            known,
        };
        if known <= 1 || link.announce(question.as_bytes(), now).is_err() {
            return out.push(Outcome::Waiters { tally });
        }
        self.waiter_queries.insert(request);
        if let Some(tally) = self.counts.published(request, key, local, known, now) {
            self.answer(vec![tally], out);
        }
    }

    /// A client's catch-up read that the local history cannot answer; an
    /// [`Outcome::History`] follows.
    pub fn history(
        &mut self,
        link: &mut impl Requests,
        request: u64,
        channel: &str,
        after: Option<(u32, u64)>,
        now: Instant,
    ) -> Result<(), Failure> {
        link.history(request, channel, after, false, now)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.counts.next_deadline()
    }

    /// One event of the link; what the server must answer goes to `out`.
    pub fn on_event(
        &mut self,
        event: Event,
        local: &mut impl LocalChannels,
        link: &mut impl Requests,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        match event {
            Event::Up => {
                for (channel, newest) in local.newest_ids() {
                    let _ = self.catch_up(link, channel, newest, now);
                }
            }
            Event::Down => {
                // Catch-up reads in flight failed: the next `Up` asks again, from the same
                // newest ids, and the stream brings back what was held back.
                for (_, (channel, _)) in self.catching_up.drain() {
                    let issued = None;
                    out.push(Outcome::CaughtUp { channel, issued });
                }
                self.held_back.clear();
                self.answered_unfenced.clear();
                self.fenced.clear();
                let mut done = Vec::new();
                self.counts.flush(&mut done);
                self.answer(done, out);
            }
            Event::Message {
                origin,
                answers,
                channel,
                epoch,
                seq,
                content_type,
                body,
            } => {
                if channel == WAITERS_QUERY {
                    // Another host's `GET /` (or `GET /notify`: the body names the channel):
                    // count the waiters here and answer it.
                    let key = MessageKey {
                        channel,
                        epoch,
                        seq,
                    };
                    let ticket = self.ticket();
                    let counted = std::str::from_utf8(&body).unwrap_or("?");
                    match local.count_waiters(counted, ticket, (&origin, seq)) {
                        Reach::Now(n) => {
                            link.reply_to_host(&origin, &count_payload(&key, &self.host, n), now)
                        }
                        Reach::Later => {
                            let awaited = AwaitedReach::Other { origin, key };
                            self.awaiting_reach.insert(ticket, awaited);
                        }
                    }
                    return;
                }
                let message = HeldMessage {
                    origin,
                    answers,
                    key: MessageKey {
                        channel,
                        epoch,
                        seq,
                    },
                    content_type,
                    body,
                };
                match self.held_back.get_mut(&message.key.channel) {
                    Some(held) => held.push(message),
                    None => self.deliver(message, local, link, now),
                }
            }
            Event::HostReply(payload) => {
                if let Some(request) = parse_fence(&payload) {
                    // Every bus message published before the read `request` ran is here.
                    match self.answered_unfenced.remove(&request) {
                        Some(history) => {
                            self.read_done(request, Ok(history), local, link, now, out)
                        }
                        None if self.catching_up.contains_key(&request) => {
                            self.fenced.insert(request);
                        }
                        None => {}
                    }
                    return;
                }
                if self.counts.awaits(&payload) {
                    if let Some(tally) = self.counts.reply(&payload) {
                        self.answer(vec![tally], out);
                    }
                } else if self.own_reach_awaited() && self.early_counts.len() < MAX_EARLY_COUNTS {
                    // Perhaps for a publish whose own count is still coming from the workers.
                    self.early_counts.push(payload);
                }
            }
            Event::Published { request, result } => {
                let Some(Outgoing {
                    channel,
                    content_type,
                    body,
                    answers,
                }) = self.publishing.remove(&request)
                else {
                    return;
                };
                match result {
                    Err(failure) => out.push(Outcome::PublishFailed { request, failure }),
                    Ok(published) => {
                        // Delivered here now that it has its id; other hosts deliver it from
                        // the bus and count back.
                        let (epoch, seq) = (published.epoch, published.seq);
                        let ticket = self.ticket();
                        let count = answers.map(CountOf::Here);
                        let reach = local.deliver(
                            &channel,
                            epoch,
                            seq,
                            &content_type,
                            &body,
                            ticket,
                            count,
                        );
                        let key = MessageKey {
                            channel,
                            epoch: published.epoch,
                            seq: published.seq,
                        };
                        self.ids.insert(request, (published.epoch, published.seq));
                        let hosts = published.hosts;
                        match reach {
                            Reach::Now(reached) => {
                                if let Some(tally) =
                                    self.counts.published(request, key, reached, hosts, now)
                                {
                                    self.answer(vec![tally], out);
                                }
                            }
                            Reach::Later => {
                                let awaited = AwaitedReach::Own {
                                    request,
                                    key,
                                    hosts,
                                };
                                self.awaiting_reach.insert(ticket, awaited);
                            }
                        }
                    }
                }
            }
            Event::History { request, result } => {
                if !self.catching_up.contains_key(&request) {
                    return out.push(Outcome::History { request, result });
                }
                match result {
                    // Its fence is still on the way (the read and the bus are two
                    // connections): messages published before the read may be too.
                    Ok(history) if !self.fenced.remove(&request) => {
                        self.answered_unfenced.insert(request, history);
                    }
                    result => self.read_done(request, result, local, link, now, out),
                }
            }
            Event::Log(_) => {}
        }
    }

    /// A catch-up read of this bridge is answered, and (when it ran) its fence has come: the
    /// read's entries join the local history, and the bus messages held back meanwhile are
    /// delivered as news.
    fn read_done(
        &mut self,
        request: u64,
        result: Result<History, Failure>,
        local: &mut impl LocalChannels,
        link: &mut impl Requests,
        now: Instant,
        out: &mut Vec<Outcome>,
    ) {
        // A read refused after its fence came leaves the fence here.
        self.fenced.remove(&request);
        let Some((channel, newest)) = self.catching_up.remove(&request) else {
            return;
        };
        let held = self.held_back.remove(&channel).unwrap_or_default();
        // Messages that came on the bus during the read are news, delivered as such below,
        // not history: the read stops short of the first.
        let first_held = held.first().map(|m| (m.key.epoch, m.key.seq));
        let mut issued = None;
        match result {
            Ok(history) => {
                // (0, 0): Redis has no such channel, so it issued nothing.
                let upto = history
                    .epoch
                    .map_or((0, 0), |epoch| (epoch, history.last_seq));
                issued = Some(upto);
                catch_up(local, &channel, newest, &history, first_held)
            }
            // The link is going down: the next `Up` reads again from the same newest id,
            // and the stream brings back what was held.
            Err(Failure::Unavailable) => {
                return out.push(Outcome::CaughtUp { channel, issued });
            }
            // Refused (out of memory, say): nothing to catch up from.
            Err(Failure::Refused(_)) => {}
        }
        for message in held {
            self.deliver(message, local, link, now);
        }
        out.push(Outcome::CaughtUp { channel, issued });
    }

    /// Delivers another host's message here and counts it back to its publisher.
    fn deliver(
        &mut self,
        message: HeldMessage,
        local: &mut impl LocalChannels,
        link: &mut impl Requests,
        now: Instant,
    ) {
        let HeldMessage {
            origin,
            answers,
            key,
            content_type,
            body,
        } = message;
        let ticket = self.ticket();
        let count = answers.map(|question| CountOf::There {
            host: &origin,
            question,
        });
        match local.deliver(
            &key.channel,
            key.epoch,
            key.seq,
            &content_type,
            &body,
            ticket,
            count,
        ) {
            Reach::Now(reached) => {
                link.reply_to_host(&origin, &count_payload(&key, &self.host, reached), now)
            }
            Reach::Later => {
                let awaited = AwaitedReach::Other { origin, key };
                self.awaiting_reach.insert(ticket, awaited);
            }
        }
    }

    /// Publishes whose bound passed, answered with the hosts that counted.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Outcome>) {
        let mut done = Vec::new();
        self.counts.expire(now, &mut done);
        self.answer(done, out);
    }

    fn answer(&mut self, tallies: Vec<Tally>, out: &mut Vec<Outcome>) {
        for tally in tallies {
            if let Some((epoch, seq)) = self.ids.remove(&tally.request) {
                out.push(Outcome::Published { epoch, seq, tally });
            } else if self.waiter_queries.remove(&tally.request) {
                out.push(Outcome::Waiters { tally });
            }
        }
    }
}

/// Brings one local channel up to date from what Redis holds.
fn catch_up(
    local: &mut impl LocalChannels,
    channel: &str,
    newest: Option<(u32, u64)>,
    history: &History,
    first_held: Option<(u32, u64)>,
) {
    let Some(epoch) = history.epoch else {
        // Redis has nothing: it lost the channel (or never had a message of it). The next
        // publish makes a new epoch; clients holding an old id are told now.
        if newest.is_some() {
            local.resync(channel);
        }
        return;
    };
    if newest.is_some_and(|(held, _)| held != epoch) {
        local.resync(channel);
    }
    let from_bus = |e: &&Entry| first_held.is_some_and(|h| (e.epoch, e.seq) >= h && e.epoch == h.0);
    for entry in history.entries.iter().filter(|e| !from_bus(e)) {
        local.deliver(
            channel,
            entry.epoch,
            entry.seq,
            &entry.content_type,
            &entry.body,
            0,
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::resp::{Decoder, Limits, Value};
    use crate::redis::scripts::KeySpace;
    use crate::redis::session::{Conn, SessionConfig};
    use std::net::SocketAddr;

    const MS: Duration = Duration::from_millis(1);

    /// A registry that records what reaches it; every channel has `waiters` connections.
    #[derive(Default)]
    struct Local {
        waiters: u64,
        delivered: Vec<(String, u32, u64, Vec<u8>)>,
        resynced: Vec<String>,
        /// The channels other hosts asked counts of ("" for all parked waiters).
        counted: Vec<String>,
        held: Vec<(String, Option<(u32, u64)>)>,
        /// Counted later, as the hub's workers answer.
        later: bool,
        /// The count each delivery was named the result of, and each count's question.
        counts: Vec<String>,
        /// Deliveries that are news (a bus message's, counted back), not history.
        news: Vec<String>,
    }

    impl LocalChannels for Local {
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
            assert_eq!(content_type, "text/plain");
            if ticket != 0 {
                self.news.push(format!("{channel} {epoch}-{seq}"));
            }
            self.counts.push(match count {
                None => "none".into(),
                Some(CountOf::Here(query)) => format!("here {query}"),
                Some(CountOf::There { host, question }) => format!("{host} {question}"),
            });
            let message = (channel.into(), epoch, seq, body.to_vec());
            if self.delivered.contains(&message) {
                return Reach::Now(0); // held already, as the registry does
            }
            self.delivered.push(message);
            if self.later {
                return Reach::Later;
            }
            Reach::Now(self.waiters)
        }
        fn count_waiters(&mut self, channel: &str, _ticket: u64, question: (&str, u64)) -> Reach {
            self.counted.push(channel.into());
            self.counts
                .push(format!("asked {} {}", question.0, question.1));
            Reach::Now(self.waiters)
        }
        fn resync(&mut self, channel: &str) {
            self.resynced.push(channel.into());
        }
        fn newest_ids(&self) -> Vec<(String, Option<(u32, u64)>)> {
            self.held.clone()
        }
    }

    fn session(t: Instant) -> Session {
        let config = SessionConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 6379)),
            username: None,
            password: None,
            db: 0,
            keys: KeySpace::new("p"),
            host: "me".into(),
            history: 8,
            key_ttl: Duration::ZERO,
            probe_interval: 1000 * MS,
            reply_timeout: 500 * MS,
            backoff_min: 100 * MS,
            backoff_max: 400 * MS,
            limits: Limits::default(),
        };
        let mut s = Session::new(config, t);
        while s.poll_action().is_some() {}
        s.connected(Conn::Command, t);
        s.connected(Conn::Subscriber, t);
        s.received(
            Conn::Command,
            b"$3\r\nsh1\r\n$3\r\nsh2\r\n$3\r\nsh3\r\n:1\r\n",
            t,
        );
        s.received(
            Conn::Subscriber,
            b"*3\r\n$9\r\nsubscribe\r\n$5\r\np:bus\r\n:1\r\n\
              *3\r\n$9\r\nsubscribe\r\n$9\r\np:host:me\r\n:2\r\n",
            t,
        );
        assert_eq!(s.poll_event(), Some(Event::Up));
        written(&mut s, Conn::Command);
        s
    }

    /// The commands waiting on `conn`, each as its arguments.
    fn written(s: &mut Session, conn: Conn) -> Vec<Vec<String>> {
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(s.output(conn));
        let n = s.output(conn).len();
        s.wrote(conn, n);
        std::iter::from_fn(|| decoder.next().unwrap())
            .map(|v| match v {
                Value::Array(args) => args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a.as_bytes().unwrap()).into_owned())
                    .collect(),
                other => panic!("not a command: {other:?}"),
            })
            .collect()
    }

    /// Feeds every event of the session to the bridge.
    fn drain(
        s: &mut Session,
        bridge: &mut Bridge,
        local: &mut Local,
        now: Instant,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        while let Some(event) = s.poll_event() {
            bridge.on_event(event, local, s, now, &mut out);
        }
        out
    }

    #[test]
    fn a_publish_is_delivered_here_with_its_redis_id_and_answered_when_all_counted() {
        let t = Instant::now();
        let mut s = session(t);
        let mut bridge = Bridge::new("me".into(), 200 * MS);
        let mut local = Local {
            waiters: 3,
            ..Local::default()
        };
        bridge
            .publish(&mut s, 1, Publish::new("news", "text/plain", b"hi"), t)
            .unwrap();
        assert_eq!(written(&mut s, Conn::Command)[0][0], "EVALSHA");
        // Alone: answered at once with this host's count.
        s.received(Conn::Command, b"*4\r\n:9\r\n:1\r\n:1\r\n:1\r\n", t);
        let out = drain(&mut s, &mut bridge, &mut local, t);
        assert_eq!(local.delivered, [("news".into(), 9, 1, b"hi".to_vec())]);
        let Outcome::Published { epoch, seq, tally } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (*epoch, *seq, tally.reached, tally.hosts_header()),
            (9, 1, 3, "1/1".into())
        );

        // Three hosts: one counts back, one is silent and left out after the bound.
        bridge
            .publish(&mut s, 2, Publish::new("news", "text/plain", b"again"), t)
            .unwrap();
        s.received(Conn::Command, b"*4\r\n:9\r\n:2\r\n:0\r\n:3\r\n", t);
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$9\r\np:host:me\r\n$19\r\ncount news 9-2 b 40\r\n",
            t,
        );
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        assert_eq!(bridge.next_deadline(), Some(t + 200 * MS));
        let mut out = Vec::new();
        bridge.tick(t + 200 * MS, &mut out);
        let Outcome::Published { tally, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (tally.request, tally.reached, tally.hosts_header()),
            (2, 43, "2/3".into())
        );

        // The message of this host's `GET /notify` count 5: named so on the bus, and
        // delivered here as that count's.
        let count = Publish {
            answers: Some(5),
            ..Publish::new("news", "text/plain", b"43")
        };
        bridge.publish(&mut s, 3, count, t).unwrap();
        assert_eq!(written(&mut s, Conn::Command).last().unwrap()[10], "me/5");
        s.received(Conn::Command, b"*4\r\n:9\r\n:3\r\n:0\r\n:1\r\n", t);
        drain(&mut s, &mut bridge, &mut local, t);
        assert_eq!(local.counts, ["none", "none", "here 5"]);
    }

    #[test]
    fn a_refused_publish_is_a_failure_and_a_down_link_refuses_at_once() {
        let t = Instant::now();
        let mut s = session(t);
        let mut bridge = Bridge::new("me".into(), 200 * MS);
        let mut local = Local::default();
        bridge
            .publish(&mut s, 1, Publish::new("c", "text/plain", b"x"), t)
            .unwrap();
        s.received(
            Conn::Command,
            b"-READONLY You can't write against a read only replica.\r\n",
            t,
        );
        let out = drain(&mut s, &mut bridge, &mut local, t);
        assert!(matches!(
            &out[..],
            [Outcome::PublishFailed {
                request: 1,
                failure: Failure::Refused(_)
            }]
        ));
        assert!(local.delivered.is_empty(), "never delivered here alone");
        s.failed(Conn::Command, "reset", t);
        drain(&mut s, &mut bridge, &mut local, t);
        assert_eq!(
            bridge.publish(&mut s, 2, Publish::new("c", "text/plain", b"x"), t),
            Err(Failure::Unavailable)
        );
    }

    #[test]
    fn counts_taken_later_add_up_even_when_another_host_counts_first() {
        let t = Instant::now();
        let mut s = session(t);
        let mut bridge = Bridge::new("me".into(), 200 * MS);
        let mut local = Local {
            later: true,
            ..Local::default()
        };
        bridge
            .publish(&mut s, 1, Publish::new("news", "text/plain", b"hi"), t)
            .unwrap();
        written(&mut s, Conn::Command);
        s.received(Conn::Command, b"*4\r\n:9\r\n:1\r\n:1\r\n:2\r\n", t);
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        // The other host's count comes before this host's workers have answered.
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$9\r\np:host:me\r\n$19\r\ncount news 9-1 b 40\r\n",
            t,
        );
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        let mut out = Vec::new();
        bridge.reached(1, 3, &mut s, t, &mut out);
        let [Outcome::Published { epoch, seq, tally }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (*epoch, *seq, tally.reached, tally.hosts_header()),
            (9, 1, 43, "2/2".into())
        );

        // Another host's message counted later goes back to its publisher then.
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$25\r\nhb\nnews\n9-4\ntext/plain\nyo\r\n",
            t,
        );
        drain(&mut s, &mut bridge, &mut local, t);
        assert_eq!(written(&mut s, Conn::Command), Vec::<Vec<String>>::new());
        bridge.reached(2, 7, &mut s, t, &mut out);
        assert_eq!(
            written(&mut s, Conn::Command),
            [["PUBLISH", "p:host:hb", "count news 9-4 me 7"]]
        );
    }

    #[test]
    fn waiters_are_counted_on_every_host_through_the_bus() {
        let t = Instant::now();
        let mut s = session(t);
        let mut bridge = Bridge::new("me".into(), 200 * MS);
        let mut local = Local {
            waiters: 5,
            ..Local::default()
        };
        // Alone (no heartbeat counted another host yet): answered at once.
        let mut out = Vec::new();
        bridge.count_waiters(&mut s, 1, "", 4, t, &mut out);
        let [Outcome::Waiters { tally }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!((tally.reached, tally.hosts_header()), (4, "1/1".into()));
        // Two hosts: the question goes out on the bus, the other host's count comes back.
        // The next heartbeat counts two live hosts.
        let t = t + 1000 * MS;
        s.tick(t);
        written(&mut s, Conn::Command);
        s.received(Conn::Command, b":2\r\n", t);
        out.clear();
        bridge.count_waiters(&mut s, 2, "", 4, t, &mut out);
        assert_eq!(out, []);
        assert_eq!(
            written(&mut s, Conn::Command),
            [["PUBLISH", "p:bus", "me\n?waiters\n0-2\n\n"]]
        );
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$9\r\np:host:me\r\n$23\r\ncount ?waiters 0-2 b 40\r\n",
            t,
        );
        let out = drain(&mut s, &mut bridge, &mut local, t);
        let [Outcome::Waiters { tally }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!((tally.reached, tally.hosts_header()), (44, "2/2".into()));
        // Another host's question: this host counts and answers it, delivering nothing.
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$17\r\nhb\n?waiters\n0-9\n\n\r\n",
            t,
        );
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        assert!(local.delivered.is_empty());
        assert_eq!(
            written(&mut s, Conn::Command),
            [["PUBLISH", "p:host:hb", "count ?waiters 0-9 me 5"]]
        );
        // A `GET /notify` count names its channel in the body, both ways.
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$22\r\nhb\n?waiters\n0-10\n\nnews\r\n",
            t,
        );
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        assert_eq!(local.counted, ["", "news"]);
        assert_eq!(
            written(&mut s, Conn::Command),
            [["PUBLISH", "p:host:hb", "count ?waiters 0-10 me 5"]]
        );
        let mut out = Vec::new();
        bridge.count_waiters(&mut s, 3, "news", 4, t, &mut out);
        assert_eq!(
            written(&mut s, Conn::Command),
            [["PUBLISH", "p:bus", "me\n?waiters\n0-3\n\nnews"]]
        );
    }

    #[test]
    fn messages_from_other_hosts_are_delivered_and_counted_back() {
        let t = Instant::now();
        let mut s = session(t);
        let mut bridge = Bridge::new("me".into(), 200 * MS);
        let mut local = Local {
            waiters: 7,
            ..Local::default()
        };
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$25\r\nhb\nnews\n9-4\ntext/plain\nyo\r\n",
            t,
        );
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        assert_eq!(local.delivered, [("news".into(), 9, 4, b"yo".to_vec())]);
        assert_eq!(
            written(&mut s, Conn::Command),
            [["PUBLISH", "p:host:hb", "count news 9-4 me 7"]]
        );
        // The message of hb's `GET /notify` count 10 names it: the registry answers the
        // waiters it set aside when hb asked.
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$22\r\nhb\n?waiters\n0-10\n\nnews\r\n\
              *3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$27\r\nhb/10\nnews\n9-5\ntext/plain\n7\r\n",
            t,
        );
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        assert_eq!(local.counts, ["none", "asked hb 10", "hb 10"]);
        assert_eq!(
            written(&mut s, Conn::Command),
            [
                ["PUBLISH", "p:host:hb", "count ?waiters 0-10 me 7"],
                ["PUBLISH", "p:host:hb", "count news 9-5 me 7"]
            ]
        );
    }

    #[test]
    fn after_a_reconnect_every_channel_held_is_caught_up_or_resynced() {
        let t = Instant::now();
        let mut s = session(t);
        let mut bridge = Bridge::new("me".into(), 200 * MS);
        let mut local = Local {
            held: vec![
                ("same".into(), Some((9, 4))),
                ("lost".into(), Some((9, 2))),
                ("gone".into(), Some((9, 1))),
                ("fresh".into(), None),
            ],
            ..Local::default()
        };
        // A publish counting when the link drops is answered with what it has.
        bridge
            .publish(&mut s, 1, Publish::new("c", "text/plain", b"x"), t)
            .unwrap();
        s.received(Conn::Command, b"*4\r\n:9\r\n:1\r\n:0\r\n:2\r\n", t);
        assert_eq!(drain(&mut s, &mut bridge, &mut local, t), []);
        s.failed(Conn::Subscriber, "closed by Redis", t);
        let out = drain(&mut s, &mut bridge, &mut local, t);
        assert!(
            matches!(&out[..], [Outcome::Published { tally, .. }] if tally.hosts_header() == "1/2")
        );
        local.delivered.clear();

        // Back up: one catch-up read per channel held, from its newest id.
        let now = t + 100 * MS;
        s.tick(now);
        while s.poll_action().is_some() {}
        s.connected(Conn::Command, now);
        s.connected(Conn::Subscriber, now);
        s.received(
            Conn::Command,
            b"$3\r\nsh1\r\n$3\r\nsh2\r\n$3\r\nsh3\r\n:1\r\n",
            now,
        );
        s.received(
            Conn::Subscriber,
            b"*3\r\n$9\r\nsubscribe\r\n$5\r\np:bus\r\n:1\r\n\
              *3\r\n$9\r\nsubscribe\r\n$9\r\np:host:me\r\n:2\r\n",
            now,
        );
        written(&mut s, Conn::Command);
        drain(&mut s, &mut bridge, &mut local, now);
        let reads = written(&mut s, Conn::Command);
        let args: Vec<(&str, &str, &str, &str)> = reads
            .iter()
            .map(|r| (r[3].as_str(), r[5].as_str(), r[6].as_str(), r[7].as_str()))
            .collect();
        assert_eq!(
            args,
            [
                ("p:{same}:meta", "9", "4", "p:host:me"),
                ("p:{lost}:meta", "9", "2", "p:host:me"),
                ("p:{gone}:meta", "9", "1", "p:host:me"),
                ("p:{fresh}:meta", "", "", "p:host:me")
            ]
        );
        // Each read publishes its fence on this host's reply channel as it runs.
        let fence = |read: &Vec<String>| {
            assert!(read[8].starts_with("fence "), "{read:?}");
            format!(
                "*3\r\n$7\r\nmessage\r\n$9\r\np:host:me\r\n${}\r\n{}\r\n",
                read[8].len(),
                read[8]
            )
        };
        let entry = |id: &str, body: &str| {
            format!(
                "*2\r\n${}\r\n{id}\r\n*4\r\n$1\r\nd\r\n${}\r\n{body}\r\n\
                 $1\r\nt\r\n$10\r\ntext/plain\r\n",
                id.len(),
                body.len()
            )
        };
        // A message published after the resubscription overtakes the catch-up read.
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$26\r\nhb\nsame\n9-6\ntext/plain\nnew\r\n",
            now,
        );
        assert_eq!(drain(&mut s, &mut bridge, &mut local, now), []);
        assert!(
            local.delivered.is_empty(),
            "held back until the catch-up is in"
        );
        let replies = [
            format!(
                "*3\r\n:9\r\n:6\r\n*2\r\n{}{}",
                entry("9-5", "missed"),
                entry("9-6", "new")
            ),
            format!("*3\r\n:12\r\n:1\r\n*1\r\n{}", entry("12-1", "new epoch")),
            "*3\r\n:0\r\n:0\r\n*0\r\n".to_string(),
            "*3\r\n:0\r\n:0\r\n*0\r\n".to_string(),
        ]
        .concat();
        // Three fences come before their reads' answers (the subscriber connection was
        // faster), the fourth after.
        let early: String = reads[1..].iter().map(fence).collect();
        s.received(Conn::Subscriber, early.as_bytes(), now);
        assert_eq!(drain(&mut s, &mut bridge, &mut local, now), []);
        s.received(Conn::Command, replies.as_bytes(), now);
        // No client asked: each read only says it is over (for clients waiting on it), with
        // what Redis had issued on the channel.
        let caught_up = |(channel, issued): (&str, Option<(u32, u64)>)| Outcome::CaughtUp {
            channel: channel.into(),
            issued,
        };
        assert_eq!(
            drain(&mut s, &mut bridge, &mut local, now),
            // (0, 0): Redis has no such channel (issued nothing).
            [
                ("lost", Some((12, 1))),
                ("gone", Some((0, 0))),
                ("fresh", Some((0, 0)))
            ]
            .map(caught_up)
        );
        assert_eq!(
            local.delivered,
            [("lost".into(), 12, 1, b"new epoch".to_vec())]
        );
        // `same` was answered before its fence: a message published before its read ran is
        // still on the bus, and comes before the fence. It is news, not history.
        let late = format!(
            "*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$27\r\nhb\nsame\n9-7\ntext/plain\nlate\r\n{}",
            fence(&reads[0])
        );
        s.received(Conn::Subscriber, late.as_bytes(), now);
        assert_eq!(
            drain(&mut s, &mut bridge, &mut local, now),
            [caught_up(("same", Some((9, 6))))]
        );
        assert_eq!(
            local.delivered[1..],
            [
                ("same".into(), 9, 5, b"missed".to_vec()),
                ("same".into(), 9, 6, b"new".to_vec()),
                ("same".into(), 9, 7, b"late".to_vec())
            ]
        );
        assert_eq!(
            local.news,
            ["c 9-1", "same 9-6", "same 9-7"],
            "the bus's messages wake (and the publish before the outage)"
        );
        assert_eq!(local.resynced, ["lost", "gone"]);
    }
}
