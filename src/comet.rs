//! The comet registry: channels, the long-poll waiters and event-stream subscribers parked on
//! them, and each channel's bounded history of messages. Pure bookkeeping over tokens: it
//! writes to no socket. The loop asks it who waits where and delivers; anything that wants
//! to publish (a local `/notify`, or one day a bus between worker processes) calls
//! [`Comet::publish`] and nothing else.

pub mod relay;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::Token;
use slab::Slab;

/// Limits of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CometSettings {
    /// Messages kept per channel for clients that catch up.
    pub history: usize,
    /// Channels that may exist at once (503 beyond).
    pub max_channels: usize,
    /// A channel with no waiters and no message for this long is dropped.
    pub channel_ttl: Duration,
}

impl Default for CometSettings {
    fn default() -> Self {
        CometSettings {
            history: 16,
            max_channels: 10_000,
            channel_ttl: Duration::from_secs(60),
        }
    }
}

/// A message id: the server's epoch, new at every start, and a sequence number that only
/// grows (shared by all channels, so ids never repeat even when a channel is dropped and made
/// again). Written `EPOCH-SEQ`, e.g. `5f3a09c1-42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageId {
    pub epoch: u32,
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{}", self.epoch, self.seq)
    }
}

impl MessageId {
    pub fn parse(text: &str) -> Option<MessageId> {
        let (epoch, seq) = text.trim().split_once('-')?;
        if epoch.len() != 8 || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(MessageId {
            epoch: u32::from_str_radix(epoch, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// One published message.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub content_type: Box<str>,
    pub body: Box<[u8]>,
}

/// A channel's handle, valid while the channel has waiters or subscribers (it cannot be
/// dropped before then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKey(usize);

/// Where a parked connection sits, so it can leave in O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    pub channel: ChannelKey,
    pub slot: usize,
    pub kind: SpotKind,
    /// Which list of the channel's waiters `slot` is in: with `--workers N` a count can set
    /// the current list aside for its publish (see `relay.rs`), and the channel starts a new one.
    pub batch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpotKind {
    /// A long-poll waiter: answered once, then removed.
    Waiter,
    /// An event-stream subscriber: gets every message until it leaves.
    Subscriber,
}

/// The header naming a message's id; a waiter passes it back as `?after=` to miss nothing.
pub const ID_HEADER: &str = "X-Comet-Id";
/// With `--redis`, on a publish's answer: hosts whose count is in `n` / hosts known.
pub const HOSTS_HEADER: &str = "X-Comet-Hosts";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CometError {
    /// The channel name is empty, too long, or has bytes outside `[A-Za-z0-9._~-]`.
    BadChannelName,
    /// Creating the channel would pass `max_channels`.
    TooManyChannels,
}

impl CometError {
    /// How the refusal is answered: 400 for a bad name, 503 (retry in a minute) when full.
    pub fn response(self) -> crate::http::Response {
        use crate::http::Response;
        match self {
            CometError::BadChannelName => {
                Response::text(400, "channel names are 1 to 64 of A-Z a-z 0-9 . _ ~ -\n")
            }
            CometError::TooManyChannels => {
                eprintln!("miohttpd: channel limit reached");
                Response::text(503, "too many channels\n").with_header("Retry-After", "60")
            }
        }
    }
}

/// What a waiter that names the last message it saw should get now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// Nothing missed: park until the next message.
    Park,
    /// The next message it missed.
    Next(Rc<Message>),
    /// Messages were lost to it (its id fell out of the history, or is from another epoch):
    /// here is the oldest one kept, if any, and the client must resynchronize.
    Resync(Option<Rc<Message>>),
    /// Only with per-channel ids (`--redis`): its id is newer than any this worker holds of
    /// the channel. Perhaps read on another host before this one had it: not lost, but
    /// only Redis can say whether it was issued.
    Ahead,
}

/// A publish whose fan-out the loop still has to do: the waiters it took (the channel starts
/// a fresh, empty list) and the subscribers present at publish time.
#[derive(Debug)]
pub struct Delivery {
    pub message: Rc<Message>,
    pub waiters: Slab<Token>,
    pub subscribers: Vec<Token>,
}

struct Channel {
    name: Box<str>,
    waiters: Slab<Token>,
    /// The batch number of `waiters` (see [`Spot::batch`]).
    batch: u32,
    /// With `--workers N`: waiters set aside by a `GET /notify` count, for its message.
    reserved: Vec<relay::Reserved>,
    subscribers: Slab<Token>,
    history: VecDeque<Rc<Message>>,
    /// Every message of this channel with a larger seq is in `history`.
    floor: u64,
    /// The epoch of its ids: the server's, or with `--redis` the channel's in Redis.
    epoch: u32,
    last_active: Instant,
}

pub struct Comet {
    settings: CometSettings,
    epoch: u32,
    /// The seq of the last message published on any channel.
    last_seq: u64,
    channels: Slab<Channel>,
    by_name: HashMap<Box<str>, usize>,
    parked: usize,
    /// Event-stream subscribers, on all channels.
    subscribed: usize,
    deliveries: VecDeque<Delivery>,
    /// With `--workers N`: publishes go to the hub (see `relay.rs`), queued here for the loop.
    relay: Option<relay::RelayState>,
}

/// The name of the channel the bare routes use.
pub const DEFAULT_CHANNEL: &str = "default";
const MAX_CHANNEL_NAME: usize = 64;

impl Comet {
    pub fn new(settings: CometSettings, epoch: u32) -> Self {
        Comet {
            settings,
            epoch,
            last_seq: 0,
            channels: Slab::new(),
            by_name: HashMap::new(),
            parked: 0,
            subscribed: 0,
            deliveries: VecDeque::new(),
            relay: None,
        }
    }

    /// Long-poll waiters parked right now, on all channels.
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// Event-stream subscribers right now, on all channels.
    pub fn subscribed(&self) -> usize {
        self.subscribed
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The channel with this name, made if it does not exist.
    pub fn channel(&mut self, name: &str, now: Instant) -> Result<ChannelKey, CometError> {
        if !is_valid_channel_name(name) {
            return Err(CometError::BadChannelName);
        }
        if let Some(&key) = self.by_name.get(name) {
            return Ok(ChannelKey(key));
        }
        if self.channels.len() >= self.settings.max_channels || self.full_server_wide() {
            return Err(CometError::TooManyChannels);
        }
        Ok(self.insert_channel(name, now))
    }

    /// A new, empty channel under `name` (valid, not present), told to the hub when relaying:
    /// what a local open and a channel named by the hub both make.
    fn insert_channel(&mut self, name: &str, now: Instant) -> ChannelKey {
        self.relay_channel_event(name, true);
        let name: Box<str> = name.into();
        let key = self.channels.insert(Channel {
            name: name.clone(),
            waiters: Slab::new(),
            batch: 0,
            reserved: Vec::new(),
            subscribers: Slab::new(),
            history: VecDeque::new(),
            floor: self.last_seq,
            epoch: self.epoch,
            last_active: now,
        });
        self.by_name.insert(name, key);
        ChannelKey(key)
    }

    /// What a waiter that last saw `after` should get now (without `after`: park).
    pub fn catch_up(&self, channel: ChannelKey, after: Option<MessageId>) -> CatchUp {
        let Some(after) = after else {
            return CatchUp::Park;
        };
        if self.lost(channel, after) {
            return CatchUp::Resync(self.oldest(channel));
        }
        if self.ahead(channel, after) {
            return CatchUp::Ahead;
        }
        let channel = &self.channels[channel.0];
        match channel.history.iter().find(|m| m.id.seq > after.seq) {
            Some(next) => CatchUp::Next(Rc::clone(next)),
            None => CatchUp::Park,
        }
    }

    /// The oldest message kept of the channel: what a client told to resync starts from.
    pub fn oldest(&self, channel: ChannelKey) -> Option<Rc<Message>> {
        self.channels[channel.0].history.front().cloned()
    }

    /// Whether messages after `after` were lost to a client: the id is of another epoch,
    /// older than the history, or, with one sequence for the server, never issued.
    fn lost(&self, key: ChannelKey, after: MessageId) -> bool {
        let channel = &self.channels[key.0];
        after.epoch != channel.epoch
            || after.seq < channel.floor
            || (!self.per_channel_ids() && after.seq > self.last_seq)
    }

    /// With per-channel ids (`--redis`): whether `after`, of the channel's epoch, is newer
    /// than the newest message this worker holds of it (its history's last, or its floor).
    /// Without, never: one sequence for the server says what was issued (see `lost`).
    pub fn ahead(&self, key: ChannelKey, after: MessageId) -> bool {
        let channel = &self.channels[key.0];
        let newest = channel.history.back().map_or(channel.floor, |m| m.id.seq);
        self.per_channel_ids() && after.epoch == channel.epoch && after.seq > newest
    }

    /// The messages after `after` still in the history, for an event stream that resumes;
    /// the flag says some were lost to it. An id [`Comet::ahead`] is not lost: nothing
    /// held follows it.
    pub fn replay(&self, channel: ChannelKey, after: MessageId) -> (Vec<Rc<Message>>, bool) {
        let lost = self.lost(channel, after);
        let channel = &self.channels[channel.0];
        let from = if lost { 0 } else { after.seq };
        let messages = channel
            .history
            .iter()
            .filter(|m| m.id.seq > from)
            .cloned()
            .collect();
        (messages, lost)
    }

    /// Every message kept of the channel, for an event stream told to resync.
    pub fn replay_all(&self, channel: ChannelKey) -> Vec<Rc<Message>> {
        self.channels[channel.0].history.iter().cloned().collect()
    }

    pub fn park(
        &mut self,
        channel: ChannelKey,
        token: Token,
        kind: SpotKind,
        now: Instant,
    ) -> Spot {
        let entry = &mut self.channels[channel.0];
        entry.last_active = now;
        let slot = match kind {
            SpotKind::Waiter => {
                self.parked += 1;
                entry.waiters.insert(token)
            }
            SpotKind::Subscriber => {
                self.subscribed += 1;
                entry.subscribers.insert(token)
            }
        };
        Spot {
            channel,
            slot,
            kind,
            batch: entry.batch,
        }
    }

    /// Removes a parked connection (it hung up, timed out or closed).
    pub fn unpark(&mut self, spot: Spot) {
        let Some(channel) = self.channels.get_mut(spot.channel.0) else {
            return;
        };
        let list = match spot.kind {
            SpotKind::Waiter if spot.batch != channel.batch => {
                let Some(at) = channel.reserved.iter().position(|r| r.batch == spot.batch) else {
                    return; // its batch was delivered
                };
                let gone = channel.reserved[at].waiters.try_remove(spot.slot);
                if channel.reserved[at].waiters.is_empty() {
                    channel.reserved.swap_remove(at);
                }
                if let Some(token) = gone {
                    self.parked -= 1;
                    self.take_after(token);
                }
                return;
            }
            SpotKind::Waiter => &mut channel.waiters,
            SpotKind::Subscriber => &mut channel.subscribers,
        };
        if let Some(token) = list.try_remove(spot.slot) {
            match spot.kind {
                SpotKind::Waiter => {
                    self.parked -= 1;
                    self.take_after(token);
                }
                SpotKind::Subscriber => {
                    self.subscribed -= 1;
                    self.forget_skipping(token);
                }
            }
        }
    }

    /// Publishes a message: it gets the next id, joins the history, and every waiter and
    /// subscriber of the channel is queued for delivery. `body` is called with the number of
    /// connections reached, so a message can carry that count (the original `/notify`).
    /// Returns the message's id and that number.
    pub fn publish(
        &mut self,
        channel: ChannelKey,
        content_type: &str,
        body: impl FnOnce(usize) -> Box<[u8]>,
        now: Instant,
    ) -> (MessageId, usize) {
        self.last_seq += 1;
        let id = MessageId {
            epoch: self.epoch,
            seq: self.last_seq,
        };
        let entry = &mut self.channels[channel.0];
        let reached = entry.waiters.len() + entry.subscribers.len();
        let message = Rc::new(Message {
            id,
            content_type: content_type.into(),
            body: body(reached),
        });
        entry.last_active = now;
        entry.history.push_back(Rc::clone(&message));
        while entry.history.len() > self.settings.history {
            if let Some(evicted) = entry.history.pop_front() {
                entry.floor = evicted.id.seq;
            }
        }
        let waiters = std::mem::take(&mut entry.waiters);
        self.parked -= waiters.len();
        let subscribers = entry.subscribers.iter().map(|(_, &t)| t).collect();
        if reached > 0 {
            self.deliveries.push_back(Delivery {
                message,
                waiters,
                subscribers,
            });
        }
        (id, reached)
    }

    /// The next fan-out to perform.
    pub fn take_delivery(&mut self) -> Option<Delivery> {
        self.deliveries.pop_front()
    }

    /// Drops channels nobody waits on and nobody has published to for the channel TTL.
    pub fn sweep(&mut self, now: Instant) {
        let ttl = self.settings.channel_ttl;
        let idle: Vec<usize> = self
            .channels
            .iter()
            .filter(|(_, c)| {
                c.waiters.is_empty()
                    && c.reserved.is_empty()
                    && c.subscribers.is_empty()
                    && now.saturating_duration_since(c.last_active) >= ttl
            })
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            let channel = self.channels.remove(key);
            self.relay_channel_event(&channel.name, false);
            self.by_name.remove(&channel.name);
        }
    }
}

/// 1 to 64 bytes of `[A-Za-z0-9._~-]`: unreserved URI characters, safe in a path and a log.
pub fn is_valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// An epoch for this run: different at every start (clock and process id), so ids from a
/// previous run are never taken for this run's.
pub fn new_epoch() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comet(history: usize) -> Comet {
        Comet::new(
            CometSettings {
                history,
                max_channels: 3,
                channel_ttl: Duration::from_secs(10),
            },
            0xabcd_0123,
        )
    }

    fn publish(comet: &mut Comet, channel: ChannelKey, text: &'static str) -> MessageId {
        comet
            .publish(
                channel,
                "text/plain",
                |_| text.as_bytes().into(),
                Instant::now(),
            )
            .0
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = MessageId {
            epoch: 0x5f3a09c1,
            seq: 42,
        };
        assert_eq!(id.to_string(), "5f3a09c1-42");
        assert_eq!(MessageId::parse("5f3a09c1-42"), Some(id));
        for bad in [
            "",
            "42",
            "5f3a09c1-",
            "5f3a09c-42",
            "5f3a09c1-x",
            "zzzzzzzz-1",
            "5f3a09c1--1",
        ] {
            assert_eq!(MessageId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn publish_takes_every_waiter_once_and_counts_them() {
        let mut comet = comet(4);
        let now = Instant::now();
        let news = comet.channel("news", now).unwrap();
        let other = comet.channel("other", now).unwrap();
        for t in 0..3 {
            comet.park(news, Token(t), SpotKind::Waiter, now);
        }
        comet.park(other, Token(9), SpotKind::Waiter, now);
        let sub = comet.park(news, Token(7), SpotKind::Subscriber, now);
        assert_eq!(comet.parked(), 4);

        let (id, reached) = comet.publish(
            news,
            "text/plain",
            |n| n.to_string().into_bytes().into(),
            now,
        );
        assert_eq!(reached, 4, "three waiters and one subscriber");
        assert_eq!(comet.parked(), 1, "only the other channel's waiter is left");
        assert_eq!(comet.subscribed(), 1, "subscribers stay");
        let delivery = comet.take_delivery().unwrap();
        assert_eq!(delivery.message.id, id);
        assert_eq!(&*delivery.message.body, b"4");
        let mut tokens: Vec<usize> = delivery.waiters.iter().map(|(_, t)| t.0).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [0, 1, 2]);
        assert_eq!(delivery.subscribers, [Token(7)]);
        assert!(comet.take_delivery().is_none());

        // Subscribers stay; a second publish reaches only them.
        let (_, reached) = comet.publish(news, "text/plain", |_| Box::default(), now);
        assert_eq!(reached, 1);
        comet.unpark(sub);
        comet.unpark(sub); // twice is harmless
        assert_eq!(comet.subscribed(), 0);
        let (_, reached) = comet.publish(news, "text/plain", |_| Box::default(), now);
        assert_eq!(reached, 0);
    }

    #[test]
    fn a_waiter_that_leaves_is_forgotten_in_place() {
        let mut comet = comet(4);
        let now = Instant::now();
        let ch = comet.channel("c", now).unwrap();
        let spots: Vec<Spot> = (0..5)
            .map(|t| comet.park(ch, Token(t), SpotKind::Waiter, now))
            .collect();
        comet.unpark(spots[1]);
        comet.unpark(spots[3]);
        comet.unpark(spots[3]); // twice is harmless
        assert_eq!(comet.parked(), 3);
        let (_, reached) = comet.publish(ch, "text/plain", |_| Box::default(), now);
        assert_eq!(reached, 3);
        let mut left: Vec<usize> = comet
            .take_delivery()
            .unwrap()
            .waiters
            .iter()
            .map(|(_, t)| t.0)
            .collect();
        left.sort_unstable();
        assert_eq!(left, [0, 2, 4]);
    }

    fn delivered_tokens(comet: &mut Comet) -> Vec<usize> {
        let mut tokens: Vec<usize> = comet
            .take_delivery()
            .unwrap()
            .waiters
            .iter()
            .map(|(_, t)| t.0)
            .collect();
        tokens.sort_unstable();
        tokens
    }

    #[test]
    fn a_count_sets_its_waiters_aside_for_its_own_message() {
        let mut comet = comet(4);
        comet.relay_to_hub(relay::Numbering::Server);
        let now = Instant::now();
        let ch = comet.channel("c", now).unwrap();
        let before: Vec<Spot> = (0..3)
            .map(|t| comet.park(ch, Token(t), SpotKind::Waiter, now))
            .collect();
        assert_eq!(comet.reserve_for_count("c", 7), 3);
        // Parked after the count: waits for the next message, in a slot of its own list.
        let after = comet.park(ch, Token(10), SpotKind::Waiter, now);
        assert_eq!(after.slot, before[0].slot, "a fresh list");
        comet.unpark(before[1]); // hangs up while set aside
        assert_eq!(comet.parked(), 3);
        let id = |seq| MessageId { epoch: 1, seq };
        let reached = comet.publish_from_hub(7, "c", id(1), "text/plain", Box::default(), now);
        assert_eq!(reached, 2, "the count's waiters less the one that left");
        assert_eq!(delivered_tokens(&mut comet), [0, 2]);
        assert_eq!(comet.parked(), 1);
        // The late one leaving does not touch the delivered list's slots.
        comet.unpark(before[0]);
        assert_eq!(comet.parked(), 1);
        let reached = comet.publish_from_hub(8, "c", id(2), "text/plain", Box::default(), now);
        assert_eq!(reached, 1);
        assert_eq!(delivered_tokens(&mut comet), [10]);
    }

    #[test]
    fn a_waiter_parked_while_a_count_was_out_can_still_catch_up_in_order() {
        let mut comet = comet(4);
        comet.relay_to_hub(relay::Numbering::Server);
        let now = Instant::now();
        let ch = comet.channel("c", now).unwrap();
        let id = |seq| MessageId { epoch: 1, seq };
        comet.publish_from_hub(1, "c", id(1), "text/plain", Box::default(), now);
        comet.park(ch, Token(1), SpotKind::Waiter, now);
        assert_eq!(comet.reserve_for_count("c", 7), 1);
        // Parks after the count, having seen message 1: the count's message passes it.
        let late = comet.park(ch, Token(2), SpotKind::Waiter, now);
        comet.remember_after(Token(2), Some(id(1)));
        comet.publish_from_hub(7, "c", id(2), "text/plain", Box::default(), now);
        assert_eq!(delivered_tokens(&mut comet), [1]);
        comet.publish_from_hub(8, "c", id(3), "text/plain", Box::default(), now);
        assert_eq!(delivered_tokens(&mut comet), [2]);
        // Woken by message 3, it is owed message 2 first (the connection answers with it).
        let after = comet.take_after(Token(2)).expect("remembered");
        assert_eq!(
            comet.catch_up(late.channel, Some(after)),
            CatchUp::Next(Rc::clone(&comet.channels[ch.0].history[1]))
        );
        assert_eq!(comet.take_after(Token(2)), None, "taken once");
        // A waiter that leaves forgets its id, and a reused token inherits none.
        let gone = comet.park(ch, Token(3), SpotKind::Waiter, now);
        comet.remember_after(Token(3), Some(id(3)));
        comet.unpark(gone);
        assert_eq!(comet.take_after(Token(3)), None);
        comet.remember_after(Token(4), Some(id(3)));
        comet.remember_after(Token(4), None);
        assert_eq!(comet.take_after(Token(4)), None);
    }

    #[test]
    fn any_other_message_reaches_waiters_set_aside_too() {
        let mut comet = comet(4);
        comet.relay_to_hub(relay::Numbering::Server);
        let now = Instant::now();
        let ch = comet.channel("c", now).unwrap();
        comet.park(ch, Token(1), SpotKind::Waiter, now);
        assert_eq!(comet.reserve_for_count("c", 7), 1);
        comet.park(ch, Token(2), SpotKind::Waiter, now);
        // The count's message never comes (refused): the next message takes them all.
        let id = MessageId { epoch: 1, seq: 1 };
        let reached = comet.publish_from_hub(9, "c", id, "text/plain", Box::default(), now);
        assert_eq!(reached, 2);
        assert_eq!(delivered_tokens(&mut comet), [1, 2]);
        assert_eq!(comet.parked(), 0);
        // A count with nothing set aside here: its message reaches no later waiter, on a
        // channel this worker had or not.
        assert_eq!(comet.reserve_for_count("c", 10), 0);
        assert_eq!(comet.reserve_for_count("nope", 11), 0);
        comet.park(ch, Token(3), SpotKind::Waiter, now);
        let id = |seq| MessageId { epoch: 1, seq };
        let reached = comet.publish_from_hub(10, "c", id(2), "text/plain", Box::default(), now);
        assert_eq!(reached, 0);
        assert_eq!(comet.parked(), 1);
        let reached = comet.publish_from_hub(11, "nope", id(3), "text/plain", Box::default(), now);
        assert_eq!(reached, 0);
        let reached = comet.publish_from_hub(12, "c", id(4), "text/plain", Box::default(), now);
        assert_eq!(reached, 1);
        assert_eq!(delivered_tokens(&mut comet), [3]);
    }

    #[test]
    fn catching_up_from_the_history() {
        let mut comet = comet(3);
        let now = Instant::now();
        let ch = comet.channel("c", now).unwrap();
        let ids: Vec<MessageId> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|t| publish(&mut comet, ch, t))
            .collect();
        // History holds c, d, e; a and b fell out.
        let body = |c: CatchUp| match c {
            CatchUp::Next(m) => format!("next {}", String::from_utf8_lossy(&m.body)),
            CatchUp::Resync(Some(m)) => format!("resync {}", String::from_utf8_lossy(&m.body)),
            CatchUp::Resync(None) => "resync".into(),
            CatchUp::Park => "park".into(),
            CatchUp::Ahead => "ahead".into(),
        };
        let table: &[(Option<MessageId>, &str)] = &[
            (None, "park"),
            (Some(ids[4]), "park"),
            (Some(ids[3]), "next e"),
            (Some(ids[2]), "next d"),
            (Some(ids[1]), "next c"), // b was evicted, but c is the very next: nothing lost
            (Some(ids[0]), "resync c"), // b is gone
            (Some(MessageId { epoch: 1, seq: 5 }), "resync c"), // another run's id
            (
                Some(MessageId {
                    epoch: 0xabcd_0123,
                    seq: 99,
                }),
                "resync c",
            ), // not issued yet
        ];
        for &(after, want) in table {
            assert_eq!(body(comet.catch_up(ch, after)), want, "{after:?}");
        }
        let (replayed, lost) = comet.replay(ch, ids[2]);
        assert_eq!((replayed.len(), lost), (2, false));
        let (replayed, lost) = comet.replay(ch, ids[0]);
        assert_eq!((replayed.len(), lost), (3, true));
    }

    #[test]
    fn with_per_channel_ids_an_id_past_the_copy_is_ahead_not_lost() {
        use relay::Numbering;
        let now = Instant::now();
        let id = |epoch, seq| MessageId { epoch, seq };
        for numbering in [Numbering::PerChannel, Numbering::Server] {
            let mut comet = comet(3);
            comet.relay_to_hub(numbering);
            let ch = comet.channel("c", now).unwrap();
            for seq in 1..=4 {
                comet.publish_from_hub(0, "c", id(7, seq), "text/plain", Box::default(), now);
            }
            // Another channel numbered further (Redis numbers each channel from 1).
            comet.publish_from_hub(0, "d", id(9, 40), "text/plain", Box::default(), now);
            let next =
                |seq: usize| CatchUp::Next(Rc::clone(&comet.channels[ch.0].history[seq - 2]));
            let oldest = CatchUp::Resync(comet.oldest(ch));
            let per_channel = numbering == Numbering::PerChannel;
            // History 2..=4, floor 1.
            let table: &[(MessageId, CatchUp, bool)] = &[
                (id(7, 4), CatchUp::Park, false),
                (id(7, 2), next(3), false),
                (id(7, 1), next(2), false),
                (id(7, 0), oldest.clone(), false), // fell out
                (id(8, 3), oldest.clone(), false), // another epoch
                match per_channel {
                    // Read on another host before this one had it: only Redis can say.
                    true => (id(7, 5), CatchUp::Ahead, true),
                    // One sequence for the server: 5..=40 went to other channels.
                    false => (id(7, 5), CatchUp::Park, false),
                },
                match per_channel {
                    true => (id(7, 99), CatchUp::Ahead, true),
                    false => (id(7, 99), oldest.clone(), false), // never issued
                },
            ];
            for (after, want, ahead) in table {
                let case = format!("{numbering:?} {after}");
                assert_eq!(&comet.catch_up(ch, Some(*after)), want, "{case}");
                assert_eq!(comet.ahead(ch, *after), *ahead, "{case}");
                let (replayed, lost) = comet.replay(ch, *after);
                let lost_want = matches!(want, CatchUp::Resync(_));
                assert_eq!(lost, lost_want, "{case}");
                if *ahead {
                    assert!(replayed.is_empty(), "nothing held follows it: {case}");
                }
            }
            assert_eq!(comet.replay_all(ch).len(), 3);
        }
    }

    #[test]
    fn a_subscriber_ahead_skips_through_its_id_on_its_channel_only() {
        let mut comet = comet(4);
        comet.relay_to_hub(relay::Numbering::PerChannel);
        let now = Instant::now();
        let ch = comet.channel("c", now).unwrap();
        let message = |epoch, seq| Message {
            id: MessageId { epoch, seq },
            content_type: "text/plain".into(),
            body: Box::default(),
        };
        let sub = comet.park(ch, Token(1), SpotKind::Subscriber, now);
        assert!(
            !comet.skips(Token(1), &message(7, 1)),
            "skips nothing unasked"
        );
        comet.skip_through(Token(1), MessageId { epoch: 7, seq: 3 });
        assert!(comet.skips(Token(1), &message(7, 2)));
        assert!(comet.skips(Token(1), &message(7, 3)));
        assert!(!comet.skips(Token(2), &message(7, 3)), "another subscriber");
        assert!(
            !comet.skips(Token(1), &message(8, 1)),
            "a new epoch is news"
        );
        assert!(!comet.skips(Token(1), &message(7, 3)), "past it once: done");
        // One that leaves while skipping forgets its id (a reused token inherits none).
        comet.skip_through(Token(1), MessageId { epoch: 7, seq: 9 });
        comet.unpark(sub);
        assert!(!comet.skips(Token(1), &message(7, 5)));
        // Without relaying nothing is kept.
        let mut alone = self::comet(4);
        alone.skip_through(Token(1), MessageId { epoch: 7, seq: 9 });
        assert!(!alone.skips(Token(1), &message(7, 5)));
    }

    #[test]
    fn ids_grow_across_channels_and_a_new_channel_starts_after_them() {
        let mut comet = comet(3);
        let now = Instant::now();
        let a = comet.channel("a", now).unwrap();
        let first = publish(&mut comet, a, "1");
        let b = comet.channel("b", now).unwrap();
        let second = publish(&mut comet, b, "2");
        assert!(second > first);
        // b was made after `first`, so a waiter that saw `first` missed nothing on b but b's
        // own message.
        let (replayed, lost) = comet.replay(b, first);
        assert!(!lost);
        assert_eq!(
            comet.catch_up(b, Some(first)),
            CatchUp::Next(replayed[0].clone())
        );
    }

    #[test]
    fn channel_names_limits_and_idle_sweeps() {
        let mut comet = comet(3);
        let t0 = Instant::now();
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert_eq!(
                comet.channel(bad, t0),
                Err(CometError::BadChannelName),
                "{bad:?}"
            );
        }
        let a = comet.channel("a", t0).unwrap();
        comet.channel("b", t0).unwrap();
        comet.channel("c", t0).unwrap();
        assert_eq!(comet.channel("d", t0), Err(CometError::TooManyChannels));
        assert_eq!(
            comet.channel("a", t0),
            Ok(a),
            "existing channels are found, not made"
        );

        let waiter = comet.park(a, Token(1), SpotKind::Waiter, t0);
        comet.sweep(t0 + Duration::from_secs(11));
        assert_eq!(
            comet.channel_count(),
            1,
            "only the channel with a waiter stays"
        );
        comet.unpark(waiter);
        comet.sweep(t0 + Duration::from_secs(30));
        assert_eq!(comet.channel_count(), 0);
        assert!(comet.channel("d", t0).is_ok(), "room again");
    }
}
