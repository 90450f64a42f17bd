//! The comet hub: the one place ids are given and history is kept when several workers serve
//! one server (`--workers N`). Pure state over frames: the supervisor feeds it the frames each
//! worker sent and writes out what it queued per worker; it touches no socket and no clock
//! but the `now` it is given.
//!
//! A publish is one hop to the hub and one broadcast back: the hub gives the message the
//! next id (`EPOCH-SEQ`, one sequence for the whole server, so one total order per channel),
//! appends it to the channel's history, sends it to every worker, and sums their delivery
//! counts into the publisher's answer. A worker that dies before answering is left out of the
//! sum; the answer never waits for it. A worker that (re)joins is welcomed with the epoch and
//! the last sequence, then every channel's floor and history, so it answers catch-ups the
//! same as the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::frame::{encode, Frame, Issued, Position, RefuseReason};
use crate::comet::{is_valid_channel_name, CometSettings};
use crate::redis::bridge::CountOf;

/// How long a publish or count waits for a worker that neither answers nor dies (stuck, or
/// far behind): then it is answered without that worker's count.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A frame a worker must never send (a hub-to-worker kind): the link is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unexpected(pub &'static str);

struct Stored {
    seq: u64,
    content_type: Box<str>,
    body: Box<[u8]>,
}

struct History {
    /// The hub's epoch; with `--redis`, the channel's in Redis.
    epoch: u32,
    messages: VecDeque<Stored>,
    /// Every message of this channel with a larger seq is in `messages`.
    floor: u64,
    last_published: Instant,
}

impl History {
    /// A message joins the copy; the oldest beyond `limit` leave it, and the floor rises.
    fn append(&mut self, seq: u64, content_type: &str, body: &[u8], limit: usize, now: Instant) {
        self.last_published = now;
        self.messages.push_back(Stored {
            seq,
            content_type: content_type.into(),
            body: body.into(),
        });
        while self.messages.len() > limit {
            if let Some(evicted) = self.messages.pop_front() {
                self.floor = evicted.seq;
            }
        }
    }
}

/// What a pending request is waiting for.
enum Awaited {
    /// Delivery counts of the publish with this seq.
    Delivered { seq: u64 },
    /// Parked waiters, for `GET /`.
    Waiters,
    /// Clients on the channel, whose sum becomes the body of a publish (`GET /notify`).
    CountToPublish {
        channel: Box<str>,
        asked_at: Instant,
    },
    /// `--redis`: delivery counts of a message with Redis's id, for the bridge's `ticket`.
    FromRedis { ticket: u64 },
    /// `--redis`: another host's `GET /` or `GET /notify` count, for the bridge's `ticket`.
    CountForRedis { ticket: u64 },
}

/// `--redis`: the most other hosts' `GET /notify` counts remembered until their message
/// comes (one refused never comes): far above what is in flight.
const MAX_ASKED: usize = 4096;

/// `--redis`: a publish for the link to send, numbered by Redis, not here.
pub struct ToRedis {
    pub key: u64,
    pub channel: Box<str>,
    pub content_type: Box<str>,
    pub body: Box<[u8]>,
    /// The `GET /notify` count whose result it is (its number here, and on the bus).
    pub answers: Option<u64>,
}

/// A publish or a count whose workers have not all answered yet.
struct Pending {
    origin: u16,
    request: u64,
    awaited: Awaited,
    reached: u64,
    /// Worker indices still to answer.
    awaiting: Vec<u16>,
    /// Answered by then whoever is missing.
    due: Instant,
}

pub struct Hub {
    settings: CometSettings,
    epoch: u32,
    last_seq: u64,
    channels: HashMap<Box<str>, History>,
    pending: HashMap<u64, Pending>,
    next_delivery: u64,
    /// Whether each worker's link is up.
    live: Vec<bool>,
    /// Encoded frames waiting to be written, per worker.
    outboxes: Vec<Vec<u8>>,
    /// `--redis`: ids come from Redis (see [`Hub::use_redis`]).
    redis: bool,
    /// `--redis`: publishes for the link, and the worker and request each answers.
    to_redis: Vec<ToRedis>,
    at_redis: HashMap<u64, (u16, u64)>,
    /// `--redis`: counts of deliveries the bridge waits for, by ticket.
    reached: Vec<(u64, u64)>,
    /// `--redis`: `GET /` (channel empty) or a `GET /notify` count (its channel) counted
    /// here, for the bridge to ask the other hosts: (key, channel, count here), and the
    /// worker and request each answers.
    waiter_queries: Vec<(u64, Box<str>, u64)>,
    waiters_at_redis: HashMap<u64, (u16, u64)>,
    /// `--redis`: `GET /notify` counts of every host, by key: the channel to publish the sum
    /// on and when it was asked.
    counts_to_publish: HashMap<u64, (Box<str>, Instant)>,
    /// `--redis`: a `GET /notify` publish is answered with what it counted (its body), not
    /// with what its delivery reached, by (worker, request).
    counted_answers: HashMap<(u16, u64), (u64, u64, u64)>,
    /// `--redis`: other hosts' `GET /notify` counts made here, oldest first: (asker's host,
    /// its question, the number the workers set their waiters aside under). The count's
    /// message names the question, and is delivered under that number.
    asked: VecDeque<(Box<str>, u64, u64)>,
    /// `--redis`: channels a worker opened that the hub has no history of, to read from
    /// their streams.
    to_read: Vec<Box<str>>,
    /// `--redis`: clients waiting for a channel's read from Redis ([`Frame::Load`]): the
    /// worker and request each answers, by channel.
    loading: HashMap<Box<str>, Vec<(u16, u64)>>,
    /// `--redis`: clients ahead of the copy here that asked while a read of their channel
    /// was in flight, which Redis may have answered before it issued their id: read again
    /// for them when that read is done.
    rereads: HashMap<Box<str>, Vec<(u16, u64)>>,
    /// `--redis`: messages of a channel being read that are older than the hub's copy
    /// (it began with a bus message, after Redis had older ones), oldest first.
    backfill: HashMap<Box<str>, Vec<Stored>>,
    /// `--redis`: channels read from Redis because the hub had no history of them: what the
    /// read brings is history, not news, and wakes no one.
    reading_fresh: HashSet<Box<str>>,
    /// Every channel on the server: whether the hub has its history, and how many workers
    /// hold it; its size is what `--comet-max-channels` bounds.
    presence: HashMap<Box<str>, Presence>,
    /// The channels each worker said it holds.
    held: Vec<HashSet<Box<str>>>,
    /// The total last told to the workers.
    told_total: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Presence {
    in_history: bool,
    holders: u32,
}

impl Hub {
    pub fn new(settings: CometSettings, epoch: u32, workers: usize) -> Self {
        Hub {
            settings,
            epoch,
            last_seq: 0,
            channels: HashMap::new(),
            pending: HashMap::new(),
            next_delivery: 1,
            live: vec![false; workers],
            outboxes: vec![Vec::new(); workers],
            redis: false,
            to_redis: Vec::new(),
            at_redis: HashMap::new(),
            reached: Vec::new(),
            waiter_queries: Vec::new(),
            waiters_at_redis: HashMap::new(),
            counts_to_publish: HashMap::new(),
            counted_answers: HashMap::new(),
            asked: VecDeque::new(),
            to_read: Vec::new(),
            loading: HashMap::new(),
            rereads: HashMap::new(),
            backfill: HashMap::new(),
            reading_fresh: HashSet::new(),
            presence: HashMap::new(),
            held: vec![HashSet::new(); workers],
            told_total: 0,
        }
    }

    /// From now on ids come from Redis: a publish is queued for the link ([`Hub::take_to_redis`])
    /// and answered by [`Hub::redis_published`] or [`Hub::redis_refused`]; messages come back
    /// with Redis's ids through [`Hub::deliver_from_redis`], this host's and others' alike.
    pub fn use_redis(&mut self) {
        self.redis = true;
    }

    /// Publishes waiting to go to Redis.
    pub fn take_to_redis(&mut self) -> Vec<ToRedis> {
        std::mem::take(&mut self.to_redis)
    }

    /// Counts of deliveries from Redis that every worker has answered: (ticket, reached).
    pub fn take_reached(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.reached)
    }

    /// Redis gave the publish `key` its id and every host counted (or the bound passed).
    pub fn redis_published(&mut self, key: u64, epoch: u32, seq: u64, tally: (u64, u64, u64)) {
        let Some((origin, request)) = self.at_redis.remove(&key) else {
            return;
        };
        if !self.live[origin as usize] {
            return;
        }
        let counted_answer = self.counted_answers.remove(&(origin, request));
        let (reached, counted, known) = counted_answer.unwrap_or(tally);
        let clamp = |n: u64| n.min(u64::from(u16::MAX)) as u16;
        let frame = Frame::Published {
            request,
            epoch,
            seq,
            reached,
            counted: clamp(counted),
            known: clamp(known),
        };
        self.send(origin, &frame);
    }

    /// Channels to read from Redis (opened by a worker, with no history here).
    pub fn take_to_read(&mut self) -> Vec<Box<str>> {
        std::mem::take(&mut self.to_read)
    }

    /// The read of `channel` from Redis is done (or failed, or could not start): every
    /// worker learns the channel's floor, then the clients waiting for it are answered, and
    /// decide from what their worker now holds. `issued`: the channel's epoch and the last
    /// seq Redis had given when it answered ((0, 0): no such channel; None: not read), which
    /// the answer carries so a client ahead of what is held can tell an id Redis issued from
    /// one it never did.
    pub fn read_done(&mut self, channel: &str, issued: Option<(u32, u64)>) {
        self.reading_fresh.remove(channel);
        let waiting = self.loading.remove(channel);
        if let Some(next) = self.rereads.remove(channel) {
            self.read_for(channel, next);
        }
        let Some(waiting) = waiting else {
            return;
        };
        let older = self.backfill.remove(channel).unwrap_or_default();
        let live = self.live_workers();
        if let Some(history) = self.channels.get_mut(channel) {
            // The older messages that join on to the copy here (Redis's stream holds every
            // message after its oldest), as many as the history has room for.
            let room = self.settings.history.saturating_sub(history.messages.len());
            let mut added = 0;
            for message in older.into_iter().rev() {
                if added == room || message.seq != history.floor {
                    break;
                }
                history.floor = message.seq - 1;
                history.messages.push_front(message);
                added += 1;
            }
            let (epoch, floor) = (history.epoch, history.floor);
            for &worker in &live {
                let out = &mut self.outboxes[worker as usize];
                for message in history.messages.iter().take(added) {
                    let frame = Frame::Deliver {
                        delivery: 0,
                        epoch,
                        seq: message.seq,
                        channel,
                        content_type: &message.content_type,
                        body: &message.body,
                    };
                    let _ = encode(&frame, out);
                }
                let _ = encode(&Frame::Floor { floor, channel }, out);
            }
        }
        let issued = issued.map_or(Issued::Unknown, |(epoch, seq)| Issued::Upto { epoch, seq });
        for (worker, request) in waiting {
            if self.live[worker as usize] {
                self.send(worker, &Frame::Loaded { request, issued });
            }
        }
    }

    /// `GET /` counts of this host's workers, to be asked of the other hosts: (key, waiters).
    pub fn take_waiter_queries(&mut self) -> Vec<(u64, Box<str>, u64)> {
        std::mem::take(&mut self.waiter_queries)
    }

    /// Every host counted (or the bound passed) for the `GET /` (or `GET /notify`) `key`.
    pub fn redis_waiters(&mut self, key: u64, tally: (u64, u64, u64)) {
        let Some((origin, request)) = self.waiters_at_redis.remove(&key) else {
            return;
        };
        if !self.live[origin as usize] {
            self.counts_to_publish.remove(&key);
            return;
        }
        if let Some((channel, asked_at)) = self.counts_to_publish.remove(&key) {
            // The body is every host's count, and so is the answer (not what the delivery
            // reached a moment later): they agree, as on one host.
            self.counted_answers.insert((origin, request), tally);
            let body = tally.0.to_string();
            let queued = self.to_redis.len();
            // Its number (the count's here, and on the bus) makes every host answer the
            // waiters it set aside for the count.
            let message = (&*channel, "text/plain", body.as_bytes());
            self.publish(origin, request, message, Some(key), asked_at);
            if self.to_redis.len() == queued {
                self.counted_answers.remove(&(origin, request)); // refused at once
            }
            return;
        }
        let (count, counted, known) = tally;
        let clamp = |n: u64| n.min(u64::from(u16::MAX)) as u16;
        let frame = Frame::WaiterCount {
            request,
            count,
            counted: clamp(counted),
            known: clamp(known),
        };
        self.send(origin, &frame);
    }

    /// Another host's `GET /` (`channel` empty: parked waiters) or `GET /notify` count
    /// (`question`: the asker's host and number): this host's workers count, setting a
    /// channel's waiters aside for the count's message; the sum goes to the bridge under
    /// `ticket` ([`Hub::take_reached`]).
    pub fn count_for_redis(
        &mut self,
        channel: &str,
        ticket: u64,
        (asker, question): (&str, u64),
        now: Instant,
    ) {
        let query = self.take_number();
        if !channel.is_empty() {
            if self.asked.len() == MAX_ASKED {
                self.asked.pop_front();
            }
            self.asked.push_back((asker.into(), question, query));
        }
        let awaiting = self.live_workers();
        for &w in &awaiting {
            self.send(w, &Frame::CountQuery { query, channel });
        }
        self.track(
            query,
            0,
            0,
            Awaited::CountForRedis { ticket },
            awaiting,
            now,
        );
    }

    /// The number a count's message is delivered under here: the number this host's
    /// workers set the count's waiters aside under, if they did.
    fn count_delivery(&mut self, count: Option<CountOf<'_>>) -> Option<u64> {
        let query = match count? {
            CountOf::Here(query) => query,
            CountOf::There { host, question } => {
                let at = self
                    .asked
                    .iter()
                    .position(|(h, q, _)| **h == *host && *q == question)?;
                self.asked.remove(at)?.2
            }
        };
        // Still counting (its asker stopped waiting for this host): what is counted so far
        // is all the count will be; the number is the message's from now on.
        if let Some(counting) = self.pending.remove(&query) {
            if let Awaited::CountForRedis { ticket } = counting.awaited {
                self.reached.push((ticket, counting.reached));
            }
        }
        Some(query)
    }

    /// The publish `key` was not done (the link is down, or Redis refused it): 503.
    pub fn redis_refused(&mut self, key: u64) {
        let Some((origin, request)) = self.at_redis.remove(&key) else {
            return;
        };
        self.counted_answers.remove(&(origin, request));
        if self.live[origin as usize] {
            let reason = RefuseReason::RedisUnavailable;
            self.send(origin, &Frame::Refused { request, reason });
        }
    }

    /// A message (channel, content type, body) with its id from Redis (this host's publish
    /// or another's): into the history and to every worker. `None`: counted later, under
    /// `ticket` ([`Hub::take_reached`]); `Some(0)`: held already (or not a channel), reaches
    /// no one. The message of a `GET /notify` count (`count`) reaches the waiters each
    /// worker set aside for it, no others.
    pub fn deliver_from_redis(
        &mut self,
        (channel, content_type, body): (&str, &str, &[u8]),
        (epoch, seq): (u32, u64),
        ticket: u64,
        count: Option<CountOf<'_>>,
        now: Instant,
    ) -> Option<u64> {
        if !is_valid_channel_name(channel) {
            return Some(0);
        }
        if !self.channels.contains_key(channel) {
            // Redis enforces no channel limit: a message another host published is taken.
            self.presence.entry(channel.into()).or_default().in_history = true;
            self.tell_total();
        }
        let history = self
            .channels
            .entry(channel.into())
            .or_insert_with(|| History {
                epoch,
                messages: VecDeque::new(),
                floor: seq.saturating_sub(1),
                last_published: now,
            });
        if history.epoch != epoch {
            // Redis lost the channel and made it again: older ids mean nothing now.
            history.epoch = epoch;
            history.messages.clear();
            history.floor = seq.saturating_sub(1);
        } else if history.messages.back().map_or(history.floor, |m| m.seq) >= seq {
            if seq <= history.floor && self.loading.contains_key(channel) {
                // Older than the copy here: prepended when the read is done (`read_done`).
                let older = self.backfill.entry(channel.into()).or_default();
                older.push(Stored {
                    seq,
                    content_type: content_type.into(),
                    body: body.into(),
                });
            }
            return Some(0);
        }
        // The copy here begins with this message: the workers' floor is the hub's (Redis's
        // sequence is per channel, so no other floor a worker could guess is right).
        let begins = history.messages.is_empty().then_some(history.floor);
        history.append(seq, content_type, body, self.settings.history, now);
        self.last_seq = self.last_seq.max(seq);
        let delivery = match self.count_delivery(count) {
            Some(query) => query,
            None => self.take_number(),
        };
        let awaiting = self.live_workers();
        if ticket == 0 && self.reading_fresh.contains(channel) {
            // The read of a channel new here: history for catch-ups, not news.
            for &worker in &awaiting {
                if let Some(floor) = begins {
                    self.send(worker, &Frame::Floor { floor, channel });
                }
                let frame = Frame::Deliver {
                    delivery: 0,
                    epoch,
                    seq,
                    channel,
                    content_type,
                    body,
                };
                self.send(worker, &frame);
            }
            return Some(0);
        }
        for &worker in &awaiting {
            if let Some(floor) = begins {
                self.send(worker, &Frame::Floor { floor, channel });
            }
            let frame = Frame::Deliver {
                delivery,
                epoch,
                seq,
                channel,
                content_type,
                body,
            };
            self.send(worker, &frame);
        }
        self.track(delivery, 0, 0, Awaited::FromRedis { ticket }, awaiting, now);
        None
    }

    /// Redis lost `channel` while this host held it: its history here is dropped (the next
    /// message brings the new epoch, and older ids get the resync signal).
    pub fn forget_channel(&mut self, channel: &str) {
        if self.channels.remove(channel).is_some() {
            self.release(channel, |p| p.in_history = false);
            self.tell_total();
        }
    }

    /// Every channel held, with its newest id: what to catch up after the link was down.
    pub fn newest_ids(&self) -> Vec<(String, Option<(u32, u64)>)> {
        self.channels
            .iter()
            .map(|(name, h)| {
                let newest = h.messages.back().map(|m| (h.epoch, m.seq));
                (name.to_string(), newest)
            })
            .collect()
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Bytes queued for `worker`, to be written to its link; the caller drains what it wrote.
    pub fn outbox(&mut self, worker: usize) -> &mut Vec<u8> {
        &mut self.outboxes[worker]
    }

    /// Queues a frame for a worker (the supervisor's own queries ride the same outbox).
    pub fn send_to(&mut self, worker: u16, frame: &Frame<'_>) {
        self.send(worker, frame);
    }

    fn send(&mut self, worker: u16, frame: &Frame<'_>) {
        // Every frame the hub makes comes from a frame that decoded within the limits.
        let _ = encode(frame, &mut self.outboxes[worker as usize]);
    }

    /// A worker's link is up (a new or restarted worker): it gets every channel's floor and
    /// history, then the epoch and the last id (Welcome, the end of the replay).
    pub fn join(&mut self, worker: u16) {
        let index = worker as usize;
        self.live[index] = true;
        self.outboxes[index].clear();
        let out = &mut self.outboxes[index];
        for (name, history) in &self.channels {
            let _ = encode(
                &Frame::Floor {
                    floor: history.floor,
                    channel: name,
                },
                out,
            );
            for message in &history.messages {
                let _ = encode(
                    &Frame::Deliver {
                        delivery: 0,
                        epoch: history.epoch,
                        seq: message.seq,
                        channel: name,
                        content_type: &message.content_type,
                        body: &message.body,
                    },
                    out,
                );
            }
        }
        let count = self.presence.len() as u64;
        let _ = encode(&Frame::ChannelTotal { count }, out);
        // Last: the worker serves no client before it has this, so it has the history too.
        let _ = encode(
            &Frame::Welcome {
                epoch: self.epoch,
                last_seq: self.last_seq,
            },
            out,
        );
    }

    /// A worker's link is gone: nothing more is sent to it, and no publish waits for it.
    pub fn leave(&mut self, worker: u16) {
        let index = worker as usize;
        self.live[index] = false;
        self.outboxes[index].clear();
        for name in std::mem::take(&mut self.held[index]) {
            self.release(&name, |p| p.holders = p.holders.saturating_sub(1));
        }
        self.tell_total();
        let deliveries: Vec<u64> = self.pending.keys().copied().collect();
        for delivery in deliveries {
            self.answered(delivery, worker, 0);
        }
    }

    /// A frame from `worker`. An error means the worker speaks another protocol: drop its
    /// link (and restart it); the hub's state stays consistent either way.
    pub fn on_frame(
        &mut self,
        worker: u16,
        frame: Frame<'_>,
        now: Instant,
    ) -> Result<(), Unexpected> {
        match frame {
            Frame::Hello { .. } => Ok(()),
            Frame::Publish {
                request,
                channel,
                content_type,
                body,
            } => {
                let message = (channel, content_type, body);
                self.publish(worker, request, message, None, now);
                Ok(())
            }
            Frame::Delivered { delivery, count } => {
                // A count's message has the count's number: a late count is not its answer.
                if self.awaits_delivery(delivery, true) {
                    self.answered(delivery, worker, count);
                }
                Ok(())
            }
            Frame::Counted { query, count } => {
                if self.awaits_delivery(query, false) {
                    self.answered(query, worker, count);
                }
                Ok(())
            }
            Frame::CountWaiters { request } => {
                self.count(worker, request, "", Awaited::Waiters, now);
                Ok(())
            }
            Frame::PublishCount { request, channel } => {
                if !is_valid_channel_name(channel) {
                    let reason = RefuseReason::BadChannelName;
                    self.send(worker, &Frame::Refused { request, reason });
                } else {
                    let awaited = Awaited::CountToPublish {
                        channel: channel.into(),
                        asked_at: now,
                    };
                    self.count(worker, request, channel, awaited, now);
                }
                Ok(())
            }
            Frame::Stats { .. } => Ok(()),
            Frame::Opened { channel } => {
                if self.redis && !self.channels.contains_key(channel) {
                    // Perhaps a channel other hosts published on before this one started:
                    // its history is read from Redis, for this client's successors.
                    self.to_read.push(channel.into());
                    self.reading_fresh.insert(channel.into());
                }
                if self.held[worker as usize].insert(channel.into()) {
                    self.presence.entry(channel.into()).or_default().holders += 1;
                    self.tell_total();
                }
                Ok(())
            }
            Frame::Load {
                request,
                client,
                channel,
            } => {
                // A copy that holds every message Redis can (from seq 1, or as many as
                // Redis keeps) has nothing older to learn; one that began mid-way may. A
                // client ahead of the copy read a message this host has not had on the bus
                // yet: only Redis can say (the read's newer entries reach the workers as
                // news before the answer, and the answer says what Redis had issued).
                let whole = |h: &History| h.floor == 0 || h.messages.len() >= self.settings.history;
                let held_whole = self.channels.get(channel).is_some_and(whole);
                if !self.redis || (client == Position::Behind && held_whole) {
                    // The hub's history is all this host can have: decide from it.
                    let issued = Issued::Unknown;
                    self.send(worker, &Frame::Loaded { request, issued });
                } else if client == Position::Ahead
                    && (self.loading.contains_key(channel) || self.reading_fresh.contains(channel))
                {
                    let next = self.rereads.entry(channel.into()).or_default();
                    next.push((worker, request));
                } else if let Some(waiting) = self.loading.get_mut(channel) {
                    waiting.push((worker, request));
                } else {
                    self.read_for(channel, vec![(worker, request)]);
                }
                Ok(())
            }
            Frame::Closed { channel } => {
                if self.held[worker as usize].remove(channel) {
                    self.release(channel, |p| p.holders = p.holders.saturating_sub(1));
                    self.tell_total();
                }
                Ok(())
            }
            Frame::Deliver { .. } => Err(Unexpected("deliver")),
            Frame::Published { .. } => Err(Unexpected("published")),
            Frame::Refused { .. } => Err(Unexpected("refused")),
            Frame::StatsQuery { .. } => Err(Unexpected("stats query")),
            Frame::Welcome { .. } => Err(Unexpected("welcome")),
            Frame::Floor { .. } => Err(Unexpected("floor")),
            Frame::CountQuery { .. } => Err(Unexpected("count query")),
            Frame::WaiterCount { .. } => Err(Unexpected("waiter count")),
            Frame::ChannelTotal { .. } => Err(Unexpected("channel total")),
            Frame::Loaded { .. } => Err(Unexpected("loaded")),
        }
    }

    /// `--redis`: reads `channel` from Redis for the clients `waiting` ([`Frame::Load`]).
    fn read_for(&mut self, channel: &str, waiting: Vec<(u16, u64)>) {
        self.to_read.push(channel.into());
        if !self.channels.contains_key(channel) {
            self.reading_fresh.insert(channel.into());
        }
        self.loading.insert(channel.into(), waiting);
    }

    /// Gives the message (channel, content type, body) the next id and sends it to every
    /// worker. `counted`: the number of the `GET /notify` count whose result it carries, used
    /// as its delivery number so each worker reaches the waiters it set aside for that count.
    fn publish(
        &mut self,
        origin: u16,
        request: u64,
        (channel, content_type, body): (&str, &str, &[u8]),
        counted: Option<u64>,
        now: Instant,
    ) {
        if !is_valid_channel_name(channel) {
            let reason = RefuseReason::BadChannelName;
            return self.send(origin, &Frame::Refused { request, reason });
        }
        if !self.channels.contains_key(channel) {
            let known = self.presence.contains_key(channel);
            if !known && self.presence.len() >= self.settings.max_channels {
                let reason = RefuseReason::TooManyChannels;
                return self.send(origin, &Frame::Refused { request, reason });
            }
            if !self.redis {
                self.presence.entry(channel.into()).or_default().in_history = true;
                self.tell_total();
                let history = History {
                    epoch: self.epoch,
                    messages: VecDeque::new(),
                    floor: self.last_seq,
                    last_published: now,
                };
                self.channels.insert(channel.into(), history);
            }
        }
        if self.redis {
            // Numbered by Redis; delivered here when it comes back with its id.
            let key = self.take_number();
            self.at_redis.insert(key, (origin, request));
            self.to_redis.push(ToRedis {
                key,
                channel: channel.into(),
                content_type: content_type.into(),
                body: body.into(),
                answers: counted,
            });
            return;
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        let history = self.channels.get_mut(channel).expect("made above");
        history.append(seq, content_type, body, self.settings.history, now);
        let delivery = match counted {
            Some(query) => query,
            None => self.take_number(),
        };
        let awaiting = self.live_workers();
        for &worker in &awaiting {
            let frame = Frame::Deliver {
                delivery,
                epoch: self.epoch,
                seq,
                channel,
                content_type,
                body,
            };
            self.send(worker, &frame);
        }
        let awaited = Awaited::Delivered { seq };
        self.track(delivery, origin, request, awaited, awaiting, now);
    }

    /// Asks every live worker to count (`channel` empty: all parked waiters).
    fn count(&mut self, origin: u16, request: u64, channel: &str, awaited: Awaited, now: Instant) {
        let query = self.take_number();
        let awaiting = self.live_workers();
        for &w in &awaiting {
            self.send(w, &Frame::CountQuery { query, channel });
        }
        self.track(query, origin, request, awaited, awaiting, now);
    }

    /// The next number for a publish, a count or a request to Redis: they share one
    /// sequence, so a count's number can stand for its message's delivery.
    fn take_number(&mut self) -> u64 {
        self.next_delivery += 1;
        self.next_delivery - 1
    }

    /// Whether `delivery` waits for delivery counts (`deliveries`) or for counts (not).
    fn awaits_delivery(&self, delivery: u64, deliveries: bool) -> bool {
        self.pending
            .get(&delivery)
            .is_some_and(|p| match p.awaited {
                Awaited::Delivered { .. } => deliveries,
                Awaited::Waiters | Awaited::CountToPublish { .. } => !deliveries,
                Awaited::FromRedis { .. } => deliveries,
                Awaited::CountForRedis { .. } => !deliveries,
            })
    }

    fn live_workers(&self) -> Vec<u16> {
        (0..self.live.len() as u16)
            .filter(|&w| self.live[w as usize])
            .collect()
    }

    /// Waits for `awaiting` to answer `delivery` (a publish's or a count's).
    fn track(
        &mut self,
        delivery: u64,
        origin: u16,
        request: u64,
        awaited: Awaited,
        awaiting: Vec<u16>,
        now: Instant,
    ) {
        let empty = awaiting.is_empty();
        let pending = Pending {
            origin,
            request,
            awaited,
            reached: 0,
            awaiting,
            due: now + ANSWER_WAIT,
        };
        self.pending.insert(delivery, pending);
        if empty {
            self.answered(delivery, origin, 0);
        }
    }

    /// `worker` answered `delivery` with `count` (or left, with 0): when every worker has,
    /// the publisher gets the sum.
    fn answered(&mut self, delivery: u64, worker: u16, count: u64) {
        let Some(pending) = self.pending.get_mut(&delivery) else {
            return; // late, or a replay's: nothing waits
        };
        if let Some(at) = pending.awaiting.iter().position(|&w| w == worker) {
            pending.awaiting.swap_remove(at);
            pending.reached += count;
        }
        if !pending.awaiting.is_empty() {
            return;
        }
        let done = self.pending.remove(&delivery).expect("present above");
        if let Awaited::FromRedis { ticket } | Awaited::CountForRedis { ticket } = done.awaited {
            self.reached.push((ticket, done.reached));
            return;
        }
        if let Awaited::CountToPublish { channel, asked_at } = done.awaited {
            if self.redis {
                // `GET /notify`: every other host counts the channel's clients too, and the
                // sum is the body (`redis_waiters`). The question keeps the count's number,
                // which its message carries back.
                let key = delivery;
                self.waiters_at_redis
                    .insert(key, (done.origin, done.request));
                self.counts_to_publish
                    .insert(key, (channel.clone(), asked_at));
                self.waiter_queries.push((key, channel, done.reached));
                return;
            }
            // Published even when its asker is gone, as one process would: the workers
            // set waiters aside for this message.
            let body = done.reached.to_string();
            let message = (&*channel, "text/plain", body.as_bytes());
            return self.publish(done.origin, done.request, message, Some(delivery), asked_at);
        }
        if !self.live[done.origin as usize] {
            return; // nobody to answer
        }
        let frame = match done.awaited {
            Awaited::Delivered { seq } => Frame::Published {
                request: done.request,
                epoch: self.epoch,
                seq,
                reached: done.reached,
                counted: 0,
                known: 0,
            },
            Awaited::FromRedis { .. } | Awaited::CountForRedis { .. } => return,
            Awaited::Waiters if self.redis => {
                // Every other host is asked next (`take_waiter_queries`).
                let key = self.take_number();
                self.waiters_at_redis
                    .insert(key, (done.origin, done.request));
                self.waiter_queries.push((key, "".into(), done.reached));
                return;
            }
            Awaited::Waiters => Frame::WaiterCount {
                request: done.request,
                count: done.reached,
                counted: 0,
                known: 0,
            },
            Awaited::CountToPublish { .. } => unreachable!("published above"),
        };
        self.send(done.origin, &frame);
    }

    /// Answers every publish or count past its due time without the workers still missing
    /// (returned, for the log): a stuck worker delays an answer, it never hangs it.
    pub fn expire(&mut self, now: Instant) -> Vec<u16> {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(&delivery, _)| delivery)
            .collect();
        let mut missing = Vec::new();
        for delivery in late {
            let Some(pending) = self.pending.get_mut(&delivery) else {
                continue;
            };
            let workers = std::mem::take(&mut pending.awaiting);
            missing.extend_from_slice(&workers);
            let origin = pending.origin;
            // An empty list completes it, as the last answer would.
            pending.awaiting.push(origin);
            self.answered(delivery, origin, 0);
        }
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// When the next pending answer falls due, if any waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }

    /// Forgets channels nobody has published to for the channel TTL (`--comet-channel-ttl`,
    /// server-wide here): a client catching up on one later is told to resynchronize.
    pub fn sweep(&mut self, now: Instant) {
        let ttl = self.settings.channel_ttl;
        let idle: Vec<Box<str>> = self
            .channels
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.last_published) >= ttl)
            .map(|(name, _)| name.clone())
            .collect();
        for name in idle {
            self.channels.remove(&name);
            self.release(&name, |p| p.in_history = false);
        }
        self.tell_total();
    }

    /// Updates a channel's presence; a channel no worker holds and without history is gone.
    fn release(&mut self, name: &str, change: impl FnOnce(&mut Presence)) {
        if let Some(presence) = self.presence.get_mut(name) {
            change(presence);
            if !presence.in_history && presence.holders == 0 {
                self.presence.remove(name);
            }
        }
    }

    /// Tells every live worker the server's channel count when it changed.
    fn tell_total(&mut self) {
        let total = self.presence.len();
        if total == self.told_total {
            return;
        }
        self.told_total = total;
        let count = total as u64;
        for worker in self.live_workers() {
            self.send(worker, &Frame::ChannelTotal { count });
        }
    }

    /// Channels with history now.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Publishes still waiting for a worker's count.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::frame::decode;
    use std::time::Duration;

    fn hub(workers: usize) -> Hub {
        let settings = CometSettings {
            history: 2,
            max_channels: 2,
            channel_ttl: Duration::from_secs(10),
        };
        let mut hub = Hub::new(settings, 0xabcd, workers);
        for w in 0..workers as u16 {
            hub.join(w);
            hub.outbox(w as usize).clear();
        }
        hub
    }

    /// The frames queued for `worker` but the channel totals, as debug strings; the outbox
    /// is emptied.
    fn sent(hub: &mut Hub, worker: usize) -> Vec<String> {
        let mut frames = sent_all(hub, worker);
        frames.retain(|f| !f.starts_with("ChannelTotal"));
        frames
    }

    /// Every frame queued for `worker`, as debug strings; the outbox is emptied.
    fn sent_all(hub: &mut Hub, worker: usize) -> Vec<String> {
        let bytes = std::mem::take(hub.outbox(worker));
        let mut at = 0;
        let mut frames = Vec::new();
        while let Some((frame, used)) = decode(&bytes[at..]).unwrap() {
            frames.push(format!("{frame:?}"));
            at += used;
        }
        frames
    }

    fn publish(hub: &mut Hub, worker: u16, request: u64, channel: &str, body: &str) {
        let frame = Frame::Publish {
            request,
            channel,
            content_type: "text/plain",
            body: body.as_bytes(),
        };
        hub.on_frame(worker, frame, Instant::now()).unwrap();
    }

    #[test]
    fn a_publish_reaches_every_worker_and_sums_their_counts() {
        let mut hub = hub(3);
        publish(&mut hub, 1, 7, "news", "hi");
        for w in 0..3 {
            let frames = sent(&mut hub, w);
            assert_eq!(frames.len(), 1, "{frames:?}");
            assert!(frames[0].starts_with("Deliver { delivery: 1, epoch: 43981, seq: 1"));
        }
        for (w, count) in [(0, 5), (1, 0), (2, 7)] {
            let frame = Frame::Delivered { delivery: 1, count };
            hub.on_frame(w, frame, Instant::now()).unwrap();
        }
        assert_eq!(
            sent(&mut hub, 1),
            ["Published { request: 7, epoch: 43981, seq: 1, reached: 12, counted: 0, known: 0 }"]
        );
        assert_eq!(hub.pending_count(), 0);
        assert!(sent(&mut hub, 0).is_empty() && sent(&mut hub, 2).is_empty());
    }

    #[test]
    fn a_worker_dying_mid_publish_is_left_out_not_waited_for() {
        let mut hub = hub(2);
        publish(&mut hub, 0, 1, "news", "a");
        hub.on_frame(
            0,
            Frame::Delivered {
                delivery: 1,
                count: 3,
            },
            Instant::now(),
        )
        .unwrap();
        sent(&mut hub, 0);
        hub.leave(1);
        assert_eq!(
            sent(&mut hub, 0),
            ["Published { request: 1, epoch: 43981, seq: 1, reached: 3, counted: 0, known: 0 }"]
        );
        // A late answer from the dead worker's delivery changes nothing.
        hub.on_frame(
            1,
            Frame::Delivered {
                delivery: 1,
                count: 9,
            },
            Instant::now(),
        )
        .unwrap();
        assert!(sent(&mut hub, 0).is_empty());
    }

    #[test]
    fn waiter_counts_are_summed_over_live_workers() {
        let mut hub = hub(3);
        hub.on_frame(2, Frame::CountWaiters { request: 5 }, Instant::now())
            .unwrap();
        for w in 0..3 {
            assert_eq!(
                sent(&mut hub, w),
                ["CountQuery { query: 1, channel: \"\" }"]
            );
        }
        hub.on_frame(0, Frame::Counted { query: 1, count: 4 }, Instant::now())
            .unwrap();
        hub.leave(1);
        hub.on_frame(2, Frame::Counted { query: 1, count: 6 }, Instant::now())
            .unwrap();
        assert_eq!(
            sent(&mut hub, 2),
            ["WaiterCount { request: 5, count: 10, counted: 0, known: 0 }"]
        );
    }

    #[test]
    fn a_count_publish_counts_first_then_publishes_the_sum() {
        let mut hub = hub(2);
        let frame = Frame::PublishCount {
            request: 9,
            channel: "news",
        };
        hub.on_frame(0, frame, Instant::now()).unwrap();
        assert_eq!(
            sent(&mut hub, 1),
            ["CountQuery { query: 1, channel: \"news\" }"]
        );
        sent(&mut hub, 0);
        for (w, count) in [(0, 2), (1, 3)] {
            hub.on_frame(w, Frame::Counted { query: 1, count }, Instant::now())
                .unwrap();
        }
        let frames = sent(&mut hub, 1);
        assert!(
            // The count's own number: each worker answers the waiters it set aside for it.
            frames[0].starts_with("Deliver { delivery: 1, epoch: 43981, seq: 1, channel: \"news\", content_type: \"text/plain\", body: [53]"),
            "{frames:?}"
        );
        for (w, count) in [(0, 2), (1, 3)] {
            let frame = Frame::Delivered { delivery: 1, count };
            hub.on_frame(w, frame, Instant::now()).unwrap();
        }
        let answer = sent(&mut hub, 0);
        assert_eq!(
            answer.last().unwrap(),
            "Published { request: 9, epoch: 43981, seq: 1, reached: 5, counted: 0, known: 0 }"
        );
    }

    #[test]
    fn a_count_publish_goes_out_when_its_asker_is_gone_and_a_late_count_is_no_delivery() {
        let mut hub = hub(3);
        let now = Instant::now();
        let frame = Frame::PublishCount {
            request: 4,
            channel: "news",
        };
        hub.on_frame(0, frame, now).unwrap();
        hub.on_frame(1, Frame::Counted { query: 1, count: 2 }, now)
            .unwrap();
        // The asker dies: the workers still hold waiters aside for this message.
        hub.leave(0);
        sent(&mut hub, 1);
        // Worker 2 is stuck: the count is answered without it.
        assert_eq!(hub.expire(now + ANSWER_WAIT), [2]);
        let frames = sent(&mut hub, 1);
        assert!(
            frames[0].starts_with("Deliver { delivery: 1, epoch: 43981, seq: 1, channel: \"news\", content_type: \"text/plain\", body: [50]"),
            "{frames:?}"
        );
        // Worker 2's count comes late: it is not taken for its delivery count.
        hub.on_frame(2, Frame::Counted { query: 1, count: 9 }, now)
            .unwrap();
        assert_eq!(hub.pending_count(), 1, "the message still waits for both");
        for w in [1, 2] {
            let frame = Frame::Delivered {
                delivery: 1,
                count: 2,
            };
            hub.on_frame(w, frame, now).unwrap();
        }
        assert_eq!(hub.pending_count(), 0);
    }

    #[test]
    fn a_stuck_worker_delays_an_answer_but_never_hangs_it() {
        let mut hub = hub(2);
        let start = Instant::now();
        let frame = Frame::Publish {
            request: 1,
            channel: "news",
            content_type: "text/plain",
            body: b"x",
        };
        hub.on_frame(0, frame, start).unwrap();
        hub.on_frame(
            0,
            Frame::Delivered {
                delivery: 1,
                count: 2,
            },
            start,
        )
        .unwrap();
        sent(&mut hub, 0);
        assert_eq!(hub.next_due(), Some(start + ANSWER_WAIT));
        assert!(hub.expire(start + ANSWER_WAIT / 2).is_empty());
        assert!(sent(&mut hub, 0).is_empty());
        assert_eq!(hub.expire(start + ANSWER_WAIT), [1]);
        assert_eq!(
            sent(&mut hub, 0),
            ["Published { request: 1, epoch: 43981, seq: 1, reached: 2, counted: 0, known: 0 }"]
        );
        assert_eq!(hub.next_due(), None);
    }

    #[test]
    fn channels_count_once_server_wide_and_bound_publishes() {
        let mut hub = hub(2);
        let now = Instant::now();
        for (w, name) in [(0, "a"), (1, "a"), (1, "b")] {
            hub.on_frame(w, Frame::Opened { channel: name }, now)
                .unwrap();
        }
        assert_eq!(
            sent_all(&mut hub, 0).last().unwrap(),
            "ChannelTotal { count: 2 }"
        );
        sent(&mut hub, 1);
        // Limit 2: a publish on a third channel is refused, on a held one it is not.
        publish(&mut hub, 0, 1, "c", "x");
        assert_eq!(
            sent(&mut hub, 0),
            ["Refused { request: 1, reason: TooManyChannels }"]
        );
        publish(&mut hub, 0, 2, "a", "x");
        assert!(sent(&mut hub, 0)[0].starts_with("Deliver"));
        // Worker 1 dies: "b" is gone, "a" stays (worker 0 holds it, and it has history).
        hub.leave(1);
        assert_eq!(
            sent_all(&mut hub, 0).last().unwrap(),
            "ChannelTotal { count: 1 }"
        );
    }

    #[test]
    fn ids_are_one_order_whoever_publishes() {
        let mut hub = hub(2);
        publish(&mut hub, 0, 1, "a", "x");
        publish(&mut hub, 1, 1, "a", "y");
        publish(&mut hub, 0, 2, "b", "z");
        let seqs: Vec<String> = sent(&mut hub, 1)
            .into_iter()
            .filter(|f| f.starts_with("Deliver"))
            .map(|f| {
                f.split("seq: ")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(seqs, ["1", "2", "3"]);
    }

    #[test]
    fn a_joining_worker_gets_the_epoch_floors_and_history() {
        let mut hub = hub(2);
        for (i, body) in ["1", "2", "3"].iter().enumerate() {
            publish(&mut hub, 0, i as u64, "news", body);
        }
        hub.leave(1);
        hub.join(1);
        let frames = sent_all(&mut hub, 1);
        assert_eq!(frames[0], "Floor { floor: 1, channel: \"news\" }");
        assert_eq!(frames.len(), 5, "history of 2: {frames:?}");
        assert!(frames[1].starts_with("Deliver { delivery: 0, epoch: 43981, seq: 2"));
        assert!(frames[2].starts_with("Deliver { delivery: 0, epoch: 43981, seq: 3"));
        assert_eq!(frames[3], "ChannelTotal { count: 1 }");
        assert_eq!(frames[4], "Welcome { epoch: 43981, last_seq: 3 }");
    }

    #[test]
    fn refusals_name_the_reason_and_give_no_id() {
        let mut hub = hub(1);
        publish(&mut hub, 0, 1, "bad name", "x");
        publish(&mut hub, 0, 2, "a", "x");
        publish(&mut hub, 0, 3, "b", "x");
        publish(&mut hub, 0, 4, "c", "x");
        let frames = sent(&mut hub, 0);
        assert_eq!(frames[0], "Refused { request: 1, reason: BadChannelName }");
        assert_eq!(
            frames.last().unwrap(),
            "Refused { request: 4, reason: TooManyChannels }"
        );
        assert_eq!(hub.channel_count(), 2);
    }

    #[test]
    fn with_redis_publishes_go_to_redis_and_come_back_with_its_ids() {
        let mut hub = hub(2);
        hub.use_redis();
        publish(&mut hub, 1, 7, "news", "hi");
        assert!(sent(&mut hub, 0).is_empty(), "not numbered here");
        let to_redis = hub.take_to_redis();
        assert_eq!(to_redis.len(), 1);
        let key = to_redis[0].key;
        // Back from Redis with its id: to every worker, counted for the bridge's ticket.
        let now = Instant::now();
        assert_eq!(
            hub.deliver_from_redis(("news", "text/plain", b"hi"), (77, 5), 3, None, now),
            None
        );
        for (w, count) in [(0, 2), (1, 4)] {
            let frames = sent(&mut hub, w);
            // The hub's copy begins here: the workers take its floor (Redis's sequence is
            // the channel's own).
            assert_eq!(frames[0], "Floor { floor: 4, channel: \"news\" }");
            assert!(
                frames[1].starts_with("Deliver { delivery: 2, epoch: 77, seq: 5"),
                "{frames:?}"
            );
            let frame = Frame::Delivered { delivery: 2, count };
            hub.on_frame(w as u16, frame, now).unwrap();
        }
        assert_eq!(hub.take_reached(), [(3, 6)]);
        // Held already (a catch-up overlapping the bus): reaches no one.
        assert_eq!(
            hub.deliver_from_redis(("news", "text/plain", b"hi"), (77, 5), 4, None, now),
            Some(0)
        );
        assert_eq!(hub.newest_ids(), [("news".to_string(), Some((77, 5)))]);
        hub.redis_published(key, 77, 5, (9, 2, 3));
        assert_eq!(
            sent(&mut hub, 1),
            ["Published { request: 7, epoch: 77, seq: 5, reached: 9, counted: 2, known: 3 }"]
        );
        // The link down: refused, never numbered here.
        publish(&mut hub, 0, 8, "news", "later");
        let key = hub.take_to_redis()[0].key;
        hub.redis_refused(key);
        assert_eq!(
            sent(&mut hub, 0),
            ["Refused { request: 8, reason: RedisUnavailable }"]
        );
        // A joining worker gets the channel's history with Redis's epoch.
        hub.leave(1);
        hub.join(1);
        let frames = sent(&mut hub, 1);
        assert_eq!(frames[0], "Floor { floor: 4, channel: \"news\" }");
        assert!(frames[1].starts_with("Deliver { delivery: 0, epoch: 77, seq: 5"));

        // A catch-up from before the copy here: read from Redis, the older message
        // prepended (to the workers as history, waking no one), then the client answered.
        let load = Frame::Load {
            request: 9,
            client: Position::Behind,
            channel: "news",
        };
        hub.on_frame(0, load, now).unwrap();
        assert_eq!(hub.take_to_read(), ["news".into()]);
        assert!(sent(&mut hub, 0).is_empty(), "waits for the read");
        for seq in [4, 5] {
            hub.deliver_from_redis(("news", "text/plain", b"x"), (77, seq), 0, None, now);
        }
        hub.read_done("news", Some((77, 5)));
        let frames = sent(&mut hub, 0);
        assert!(frames[0].starts_with("Deliver { delivery: 0, epoch: 77, seq: 4"));
        assert_eq!(
            frames[1..],
            [
                "Floor { floor: 3, channel: \"news\" }",
                "Loaded { request: 9, issued: Upto { epoch: 77, seq: 5 } }"
            ]
        );
        // Without Redis the hub's history is all there is: answered at once.
        let mut alone = self::hub(1);
        alone
            .on_frame(
                0,
                Frame::Load {
                    request: 1,
                    client: Position::Ahead,
                    channel: "x",
                },
                now,
            )
            .unwrap();
        assert_eq!(
            sent(&mut alone, 0),
            ["Loaded { request: 1, issued: Unknown }"]
        );
    }

    #[test]
    fn a_client_ahead_of_a_whole_copy_is_read_from_redis_and_what_it_brings_is_news() {
        let mut hub = hub(2);
        hub.use_redis();
        let now = Instant::now();
        // The copy here is whole (from seq 1): a client behind it learns nothing from Redis.
        hub.deliver_from_redis(("news", "text/plain", b"1"), (77, 1), 0, None, now);
        sent(&mut hub, 0);
        sent(&mut hub, 1);
        let load = |request, client| Frame::Load {
            request,
            client,
            channel: "news",
        };
        hub.on_frame(0, load(1, Position::Behind), now).unwrap();
        assert_eq!(
            sent(&mut hub, 0),
            ["Loaded { request: 1, issued: Unknown }"]
        );
        assert!(hub.take_to_read().is_empty());
        // A client that read seq 2 on another host before it came on the bus here: Redis
        // is read, whole as the copy is.
        hub.on_frame(0, load(2, Position::Ahead), now).unwrap();
        assert_eq!(hub.take_to_read(), ["news".into()]);
        assert!(sent(&mut hub, 0).is_empty(), "waits for the read");
        // The read brings seq 2: news for every worker (it wakes their waiters), before
        // the answer, which says what Redis had issued.
        for seq in [1, 2] {
            hub.deliver_from_redis(("news", "text/plain", b"x"), (77, seq), 0, None, now);
        }
        hub.read_done("news", Some((77, 2)));
        let deliver = "Deliver { delivery: 2, epoch: 77, seq: 2";
        let frames = sent(&mut hub, 0);
        assert!(frames[0].starts_with(deliver), "{frames:?}");
        assert_eq!(
            frames[1..],
            [
                "Floor { floor: 0, channel: \"news\" }",
                "Loaded { request: 2, issued: Upto { epoch: 77, seq: 2 } }"
            ]
        );
        let frames = sent(&mut hub, 1);
        assert!(frames[0].starts_with(deliver), "{frames:?}");
        // The same message late on the bus: held already, it reaches no one.
        assert_eq!(
            hub.deliver_from_redis(("news", "text/plain", b"x"), (77, 2), 5, None, now),
            Some(0)
        );
        assert!(sent(&mut hub, 0).is_empty());
        // Asked while a read is in flight (sent perhaps before Redis issued the client's
        // id): answered after a read of its own, not that one.
        hub.on_frame(1, Frame::Opened { channel: "later" }, now)
            .unwrap();
        assert_eq!(hub.take_to_read(), ["later".into()]);
        let later = |request, client| Frame::Load {
            request,
            client,
            channel: "later",
        };
        hub.on_frame(0, later(5, Position::Ahead), now).unwrap();
        assert!(hub.take_to_read().is_empty(), "one read at a time");
        hub.read_done("later", Some((78, 1)));
        assert!(sent(&mut hub, 0).is_empty(), "not answered by that read");
        assert_eq!(hub.take_to_read(), ["later".into()], "read again");
        hub.read_done("later", Some((78, 2)));
        assert_eq!(
            sent(&mut hub, 0),
            ["Loaded { request: 5, issued: Upto { epoch: 78, seq: 2 } }"]
        );
        // A read that could not be made (the link down) cannot say what was issued.
        hub.on_frame(0, load(4, Position::Ahead), now).unwrap();
        assert_eq!(hub.take_to_read(), ["news".into()]);
        hub.read_done("news", None);
        assert_eq!(
            sent(&mut hub, 0),
            [
                "Floor { floor: 0, channel: \"news\" }",
                "Loaded { request: 4, issued: Unknown }"
            ]
        );
    }

    #[test]
    fn with_redis_a_count_message_answers_what_each_host_set_aside_for_it() {
        let mut hub = hub(2);
        hub.use_redis();
        let now = Instant::now();
        let delivered = |hub: &mut Hub, w: usize| sent(hub, w).pop().unwrap_or_default();
        // This host's `GET /notify`: its workers set their waiters aside under query 1.
        let ask = Frame::PublishCount {
            request: 9,
            channel: "news",
        };
        hub.on_frame(0, ask, now).unwrap();
        for (w, count) in [(0, 2), (1, 3)] {
            assert_eq!(
                sent(&mut hub, w),
                ["CountQuery { query: 1, channel: \"news\" }"]
            );
            hub.on_frame(w as u16, Frame::Counted { query: 1, count }, now)
                .unwrap();
        }
        // The other hosts are asked under the count's own number, which the message
        // carries to Redis and back.
        assert_eq!(hub.take_waiter_queries(), [(1, "news".into(), 5)]);
        hub.redis_waiters(1, (7, 2, 2));
        let to_redis = hub.take_to_redis();
        assert_eq!(
            (to_redis[0].answers, &*to_redis[0].body),
            (Some(1), &b"7"[..])
        );
        let message = ("news", "text/plain", &b"7"[..]);
        let own = Some(CountOf::Here(1));
        assert_eq!(hub.deliver_from_redis(message, (77, 1), 3, own, now), None);
        for w in 0..2 {
            let frame = delivered(&mut hub, w);
            assert!(
                frame.starts_with("Deliver { delivery: 1, epoch: 77, seq: 1"),
                "{frame}"
            );
            let frame = Frame::Delivered {
                delivery: 1,
                count: 1,
            };
            hub.on_frame(w as u16, frame, now).unwrap();
        }
        assert_eq!(hub.take_reached(), [(3, 2)]);

        // Another host's count: set aside here under query 3; worker 1 is slow, and the
        // message comes first (its asker stopped waiting): the count closes with what it
        // has, and the message is delivered under query 3.
        hub.count_for_redis("news", 11, ("other", 40), now);
        for w in 0..2 {
            assert_eq!(
                sent(&mut hub, w),
                ["CountQuery { query: 3, channel: \"news\" }"]
            );
        }
        hub.on_frame(0, Frame::Counted { query: 3, count: 4 }, now)
            .unwrap();
        let theirs = Some(CountOf::There {
            host: "other",
            question: 40,
        });
        let message = ("news", "text/plain", &b"9"[..]);
        assert_eq!(
            hub.deliver_from_redis(message, (77, 2), 12, theirs, now),
            None
        );
        assert_eq!(hub.take_reached(), [(11, 4)]);
        for w in 0..2 {
            let frame = delivered(&mut hub, w);
            assert!(
                frame.starts_with("Deliver { delivery: 3, epoch: 77, seq: 2"),
                "{frame}"
            );
        }
        // Worker 1's late count is not taken for its delivery count.
        hub.on_frame(1, Frame::Counted { query: 3, count: 9 }, now)
            .unwrap();
        for w in 0..2 {
            let frame = Frame::Delivered {
                delivery: 3,
                count: 1,
            };
            hub.on_frame(w, frame, now).unwrap();
        }
        assert_eq!(hub.take_reached(), [(12, 2)]);

        // A count this host never made (or already answered): a number of its own, which
        // reaches every waiter.
        let message = ("news", "text/plain", &b"1"[..]);
        assert_eq!(
            hub.deliver_from_redis(message, (77, 3), 13, theirs, now),
            None
        );
        let frame = delivered(&mut hub, 0);
        assert!(
            frame.starts_with("Deliver { delivery: 4, epoch: 77, seq: 3"),
            "{frame}"
        );
    }

    #[test]
    fn hub_kinds_from_a_worker_are_refused_and_idle_channels_swept() {
        let mut hub = hub(1);
        let bad = Frame::Welcome {
            epoch: 1,
            last_seq: 1,
        };
        assert_eq!(
            hub.on_frame(0, bad, Instant::now()),
            Err(Unexpected("welcome"))
        );
        publish(&mut hub, 0, 1, "a", "x");
        hub.sweep(Instant::now() + Duration::from_secs(11));
        assert_eq!(hub.channel_count(), 0);
    }
}
