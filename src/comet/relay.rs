//! The registry's side of the worker bus (`--workers N`): where a publish goes. A worker's
//! registry does not give ids: it queues the publish for the hub ([`Comet::relay_publish`])
//! and takes the hub's messages, with the hub's ids, as if published here
//! ([`Comet::publish_from_hub`]). Waiting, catch-up and history stay the registry's own:
//! every worker sees every message, so its history is the hub's.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use mio::Token;
use slab::Slab;

use super::{ChannelKey, Comet, Delivery, Message, MessageId};
use crate::bus::frame::Position;

/// How the hub numbers messages, and so how an id a client names is judged here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Numbering {
    /// One sequence for the whole server (the hub's): an id above the last one given on any
    /// channel was never issued.
    #[default]
    Server,
    /// `--redis`: Redis numbers each channel from 1. An id above the newest this worker
    /// holds of its channel may be one another host delivered first: ahead, not lost.
    PerChannel,
}

/// A worker's relaying state: requests for the hub, the channels it opened and dropped (so
/// the hub counts channels server-wide), and the hub's last count of them.
#[derive(Debug, Default)]
pub struct RelayState {
    queue: VecDeque<Relayed>,
    /// (channel, opened: true / dropped: false), in order, for the hub.
    channel_events: Vec<(Box<str>, bool)>,
    /// Channels on the whole server, as the hub last said.
    server_channels: usize,
    /// `GET /notify` counts answered here whose message has not come yet (oldest first,
    /// bounded: a count whose message is refused is forgotten in time).
    counting: VecDeque<u64>,
    /// The id each parked waiter named (`?after=`): a count's message passes waiters that
    /// parked while it was in flight, and the next message must not skip it for them.
    afters: HashMap<Token, MessageId>,
    numbering: Numbering,
    /// Event-stream subscribers that resumed ahead of this worker's copy (`--redis`: an id
    /// Redis issued that this host has not had on the bus yet), with that id: messages at
    /// or before it are not written to them. Empty but for that rare case.
    skipping: HashMap<Token, MessageId>,
}

/// The most counts awaiting their message: far above what the hub has in flight.
const MAX_COUNTING: usize = 4096;

/// Waiters a `GET /notify` count set aside on this worker: the hub's message for that count
/// (its `Deliver` carries the count's number) answers exactly them, so the count in its body
/// and the number it reaches agree; a waiter parking meanwhile waits for the next message.
#[derive(Debug)]
pub struct Reserved {
    /// The count's number, echoed as the delivery of its message.
    pub query: u64,
    /// [`super::Spot::batch`] of these waiters.
    pub batch: u32,
    pub waiters: Slab<Token>,
}

/// The token of a relayed request no connection has claimed yet.
pub const UNCLAIMED: Token = Token(usize::MAX);

/// A request waiting to be sent to the hub; `token` is the connection answered when the
/// hub has every worker's count.
#[derive(Debug)]
pub enum Relayed {
    Publish {
        token: Token,
        channel: Box<str>,
        content_type: Box<str>,
        body: Box<[u8]>,
    },
    /// `GET /`: parked waiters on every worker.
    CountWaiters { token: Token },
    /// `GET /notify`: a message whose body is the number of clients it reaches everywhere.
    PublishCount { token: Token, channel: Box<str> },
    /// A catch-up this worker's history cannot serve: the hub reads the channel from Redis
    /// (when its copy may lack what the client names), then answers.
    Load {
        token: Token,
        client: Position,
        channel: Box<str>,
    },
}

impl Comet {
    /// From now on publishes are relayed to the hub, not given ids here; `numbering` is how
    /// the hub gives them.
    pub fn relay_to_hub(&mut self, numbering: Numbering) {
        self.relay = Some(RelayState {
            numbering,
            ..RelayState::default()
        });
    }

    /// Whether ids are numbered per channel (`--redis`), not once for the whole server.
    pub fn per_channel_ids(&self) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|r| r.numbering == Numbering::PerChannel)
    }

    /// The subscriber `token` resumed at `after`, ahead of what this worker holds: messages
    /// up to it are not for it ([`Comet::skips`]).
    pub fn skip_through(&mut self, token: Token, after: MessageId) {
        if let Some(relay) = &mut self.relay {
            relay.skipping.insert(token, after);
        }
    }

    /// Whether the subscriber `token` has seen `message` already (it resumed ahead of this
    /// worker's copy). The first message after its id ends the skipping. Costs a branch
    /// while no subscriber skips.
    pub fn skips(&mut self, token: Token, message: &Message) -> bool {
        let Some(relay) = self.relay.as_mut().filter(|r| !r.skipping.is_empty()) else {
            return false;
        };
        let Some(&after) = relay.skipping.get(&token) else {
            return false;
        };
        if message.id.epoch == after.epoch && message.id.seq <= after.seq {
            return true;
        }
        relay.skipping.remove(&token);
        false
    }

    /// The subscriber `token` left: it skips nothing more.
    pub(super) fn forget_skipping(&mut self, token: Token) {
        if let Some(relay) = self.relay.as_mut().filter(|r| !r.skipping.is_empty()) {
            relay.skipping.remove(&token);
        }
    }

    pub fn relays(&self) -> bool {
        self.relay.is_some()
    }

    /// A waiter parked after `after`, if it named one (only kept when relaying). Set at
    /// every park, so a token reused after a close never inherits another waiter's id.
    pub fn remember_after(&mut self, token: Token, after: Option<MessageId>) {
        if let Some(relay) = &mut self.relay {
            match after {
                Some(after) => relay.afters.insert(token, after),
                None => relay.afters.remove(&token),
            };
        }
    }

    /// The id the waiter `token` named, now that it is answered or gone.
    pub fn take_after(&mut self, token: Token) -> Option<MessageId> {
        self.relay.as_mut()?.afters.remove(&token)
    }

    /// Queues a publish for the hub (only when [`Comet::relays`]).
    pub fn relay_publish(
        &mut self,
        token: Token,
        channel: &str,
        content_type: &str,
        body: Box<[u8]>,
    ) {
        if let Some(RelayState { queue, .. }) = &mut self.relay {
            queue.push_back(Relayed::Publish {
                token,
                channel: channel.into(),
                content_type: content_type.into(),
                body,
            });
        }
    }

    /// Queues a publish whose body is the count it reaches (only when [`Comet::relays`]).
    pub fn relay_publish_count(&mut self, token: Token, channel: &str) {
        if let Some(RelayState { queue, .. }) = &mut self.relay {
            queue.push_back(Relayed::PublishCount {
                token,
                channel: channel.into(),
            });
        }
    }

    /// Asks the hub for `channel`'s history before the connection `token` decides its
    /// catch-up (only when [`Comet::relays`]).
    pub fn relay_load(&mut self, token: Token, channel: &str, client: Position) {
        if let Some(RelayState { queue, .. }) = &mut self.relay {
            queue.push_back(Relayed::Load {
                token,
                client,
                channel: channel.into(),
            });
        }
    }

    /// Queues a count of every worker's parked waiters (only when [`Comet::relays`]).
    pub fn relay_count(&mut self, token: Token) {
        if let Some(RelayState { queue, .. }) = &mut self.relay {
            queue.push_back(Relayed::CountWaiters { token });
        }
    }

    /// Waiters and subscribers on the channel `name` here, now, for the `GET /notify` count
    /// `query`: the waiters are set aside for that count's message (see [`Reserved`]).
    pub fn reserve_for_count(&mut self, name: &str, query: u64) -> usize {
        let Some(relay) = &mut self.relay else {
            return 0;
        };
        // Remembered even with nothing set aside: its message then reaches no waiter here.
        if relay.counting.len() == MAX_COUNTING {
            relay.counting.pop_front();
        }
        relay.counting.push_back(query);
        let Some(&key) = self.by_name.get(name) else {
            return 0;
        };
        let channel = &mut self.channels[key];
        let waiters = channel.waiters.len();
        if waiters > 0 {
            channel.reserved.push(Reserved {
                query,
                batch: channel.batch,
                waiters: std::mem::take(&mut channel.waiters),
            });
            channel.batch = channel.batch.wrapping_add(1);
        }
        waiters + channel.subscribers.len()
    }

    /// Gives the requests queued since the last claim (by a handler, which knows no token)
    /// to the connection `token`; true if there were any: it then waits for the hub.
    pub fn claim_relayed(&mut self, token: Token) -> bool {
        let Some(RelayState { queue, .. }) = &mut self.relay else {
            return false;
        };
        let mut claimed = false;
        for relayed in queue.iter_mut().rev() {
            let slot = match relayed {
                Relayed::Publish { token, .. }
                | Relayed::CountWaiters { token }
                | Relayed::PublishCount { token, .. }
                | Relayed::Load { token, .. } => token,
            };
            if *slot != UNCLAIMED {
                break;
            }
            *slot = token;
            claimed = true;
        }
        claimed
    }

    /// The next publish to send to the hub.
    pub fn take_relayed(&mut self) -> Option<Relayed> {
        self.relay.as_mut()?.queue.pop_front()
    }

    /// With `--workers N`: whether the server as a whole has `--comet-max-channels`
    /// channels (the hub's count), so this worker makes no new one.
    pub(super) fn full_server_wide(&self) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|r| r.server_channels >= self.settings.max_channels)
    }

    /// With `--workers N`: a channel made (`opened`) or dropped here, for the hub's count.
    pub(super) fn relay_channel_event(&mut self, name: &str, opened: bool) {
        if let Some(relay) = &mut self.relay {
            relay.channel_events.push((name.into(), opened));
        }
    }

    /// The channels made and dropped here since the last call, for the hub.
    pub fn take_channel_events(&mut self) -> Vec<(Box<str>, bool)> {
        self.relay
            .as_mut()
            .map(|r| std::mem::take(&mut r.channel_events))
            .unwrap_or_default()
    }

    /// The hub's count of channels on the whole server.
    pub fn set_server_channels(&mut self, count: usize) {
        if let Some(relay) = &mut self.relay {
            relay.server_channels = count;
        }
    }

    /// The hub's epoch and last id: ids checked here are the hub's from now on.
    pub fn adopt_hub(&mut self, epoch: u32, last_seq: u64) {
        self.epoch = epoch;
        self.last_seq = self.last_seq.max(last_seq);
    }

    /// A channel's floor as the hub has it (a new worker learning a channel's history).
    pub fn set_floor(&mut self, name: &str, floor: u64, now: Instant) {
        if let Some(key) = self.hub_channel(name, now) {
            self.channels[key.0].floor = floor;
        }
    }

    /// A message the hub published (with its id): into the history, to every local waiter and
    /// subscriber of the channel. Returns how many it reaches here. The hub enforces the
    /// channel limit, so a channel it names is made here whatever the local count.
    ///
    /// The message of a `GET /notify` count (`delivery` is that count's number) reaches the
    /// waiters the count set aside, no others; any other message reaches every waiter, set
    /// aside or not (one whose count's message is lost is never stranded).
    pub fn publish_from_hub(
        &mut self,
        delivery: u64,
        name: &str,
        id: MessageId,
        content_type: &str,
        body: Box<[u8]>,
        now: Instant,
    ) -> usize {
        let Some(key) = self.hub_channel(name, now) else {
            return 0;
        };
        self.last_seq = self.last_seq.max(id.seq);
        let history_limit = self.settings.history;
        let entry = &mut self.channels[key.0];
        if entry.epoch != id.epoch {
            // `--redis`: the channel's epoch is Redis's (a new one when Redis lost it): ids
            // of another epoch get the resync signal, and this message starts the history.
            // (Without Redis only a channel made before the hub's welcome differs, empty.)
            entry.epoch = id.epoch;
            let before = id.seq.saturating_sub(1);
            if entry.history.is_empty() {
                entry.floor = entry.floor.min(before);
            } else {
                entry.history.clear();
                entry.floor = before;
            }
        }
        if entry
            .history
            .back()
            .is_some_and(|last| last.id.seq >= id.seq)
        {
            return 0; // already had it (a replay overlapping a live delivery)
        }
        let counted = self.relay.as_mut().and_then(|relay| {
            let at = relay
                .counting
                .iter()
                .position(|&q| q == delivery && q != 0)?;
            relay.counting.remove(at)
        });
        let waiters = match counted {
            Some(query) => match entry.reserved.iter().position(|r| r.query == query) {
                Some(at) => entry.reserved.swap_remove(at).waiters,
                None => Slab::new(),
            },
            None => {
                let mut waiters = std::mem::take(&mut entry.waiters);
                for reserved in entry.reserved.drain(..) {
                    for (_, &token) in &reserved.waiters {
                        waiters.insert(token);
                    }
                }
                waiters
            }
        };
        let reached = waiters.len() + entry.subscribers.len();
        let message = Rc::new(Message {
            id,
            content_type: content_type.into(),
            body,
        });
        entry.last_active = now;
        entry.history.push_back(Rc::clone(&message));
        while entry.history.len() > history_limit {
            if let Some(evicted) = entry.history.pop_front() {
                entry.floor = evicted.id.seq;
            }
        }
        self.parked -= waiters.len();
        let subscribers = entry.subscribers.iter().map(|(_, &t)| t).collect();
        if reached > 0 {
            self.deliveries.push_back(Delivery {
                message,
                waiters,
                subscribers,
            });
        }
        reached
    }

    /// A message of the hub's history older than what this worker holds of the channel
    /// (the hub backfilled it from Redis), or any message while joining: recorded in id
    /// order, waking no one (it is not news). The hub's [`Comet::set_floor`] follows.
    pub fn record_from_hub(
        &mut self,
        name: &str,
        id: MessageId,
        content_type: &str,
        body: Box<[u8]>,
        now: Instant,
    ) {
        let Some(key) = self.hub_channel(name, now) else {
            return;
        };
        self.last_seq = self.last_seq.max(id.seq);
        let history_limit = self.settings.history;
        let entry = &mut self.channels[key.0];
        if entry.epoch != id.epoch {
            if !entry.history.is_empty() {
                return; // an older epoch's message: nothing to add to this one
            }
            entry.epoch = id.epoch;
        }
        let at = entry.history.partition_point(|m| m.id.seq < id.seq);
        if entry.history.get(at).is_some_and(|m| m.id.seq == id.seq) {
            return;
        }
        let message = Rc::new(Message {
            id,
            content_type: content_type.into(),
            body,
        });
        entry.history.insert(at, message);
        while entry.history.len() > history_limit {
            if let Some(evicted) = entry.history.pop_front() {
                entry.floor = evicted.id.seq;
            }
        }
    }

    /// The channel named by the hub, made if missing (no local limit); None for a name the
    /// hub should never have sent.
    fn hub_channel(&mut self, name: &str, now: Instant) -> Option<ChannelKey> {
        if !super::is_valid_channel_name(name) {
            return None;
        }
        if let Some(&key) = self.by_name.get(name) {
            return Some(ChannelKey(key));
        }
        Some(self.insert_channel(name, now))
    }
}
