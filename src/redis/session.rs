//! The two Redis connections of one host as a pure state machine: no socket, no clock of its
//! own. The I/O wrapper (`link.rs`) tells it what happened — a connection opened, bytes
//! arrived, a connection failed, time passed — and carries out what it asks: open or close a
//! connection, write the bytes in its output buffers. What it has for the rest of the server
//! (link up or down, a message from another host, a publish's id, a catch-up read) comes out
//! as [`Event`]s. Tests drive it with scripted bytes and a scripted clock.
//!
//! Two connections, because a connection in subscribe mode takes no other command:
//! - the **command** connection: AUTH, SELECT, SCRIPT LOAD of the three scripts, then the
//!   publishes, catch-up reads and heartbeats, pipelined, replies matched in order;
//! - the **subscriber**: AUTH, SUBSCRIBE to the bus and this host's reply channel, then a PING
//!   every probe interval (answered `pong` in subscribe mode), so a Redis that stops
//!   delivering without closing — paused, or a half-dead path — is noticed within
//!   `probe_interval + reply_timeout` however quiet the channels are.
//!
//! The link is one thing: it is up only when both connections are through their handshakes,
//! and any failure of either (closed, a malformed reply, a reply overdue) takes both down and
//! starts again after a back-off, logged once per outage. A publish while the link is down is
//! refused at once (the caller answers 503), never given an id of its own making.
//!
//! | phase        | entered when                         | leaves to                                   |
//! |--------------|--------------------------------------|---------------------------------------------|
//! | `Waiting`    | start, or after a failure            | `Handshake` when the back-off ends          |
//! | `Handshake`  | both connections asked for           | `Up` when both answered their handshakes; `Waiting` on failure or after `reply_timeout` |
//! | `Up`         | handshakes done                      | `Waiting` on failure or an overdue reply    |

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::resp::{encode_command, Decoder, Limits, Value};
use super::scripts::{
    encode_heartbeat, encode_history, encode_publish, parse_bus_message, parse_history,
    parse_published, History, Invoke, KeySpace, PublishParams, Published, Script,
};
use crate::config::Secret;

/// Everything the session needs to know, fixed for its life.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub addr: SocketAddr,
    /// ACL user name (`redis://USER:PASSWORD@...`); none: the default user.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: u32,
    pub keys: KeySpace,
    /// This host's id, unique among the hosts sharing the prefix.
    pub host: String,
    /// Entries kept per stream (`--comet-history`).
    pub history: usize,
    /// Expiry of a channel's keys after its last publish (zero: never).
    pub key_ttl: Duration,
    /// How often the subscriber is probed and the heartbeat sent.
    pub probe_interval: Duration,
    /// How long a reply (handshake, command or probe) may be overdue before the link is
    /// declared stalled and rebuilt.
    pub reply_timeout: Duration,
    /// First and longest wait between attempts to connect.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub limits: Limits,
}

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Command,
    Subscriber,
}

impl Conn {
    pub const BOTH: [Conn; 2] = [Conn::Command, Conn::Subscriber];

    fn index(self) -> usize {
        match self {
            Conn::Command => 0,
            Conn::Subscriber => 1,
        }
    }
}

/// What `/metrics` shows of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected; the next attempt is after a back-off.
    Down,
    /// Connecting, or through the handshakes.
    Connecting,
    /// Both connections ready: publishes go through and messages arrive.
    Up,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Down => "down",
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
        }
    }
}

/// Counters of the link, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Times the link went down (each outage once).
    pub outages: u64,
    /// Connection attempts that failed (every one, while the outage lasts).
    pub failed_attempts: u64,
    pub published: u64,
    /// Messages from other hosts delivered from the bus.
    pub received: u64,
    /// Probes sent on the subscriber.
    pub probes: u64,
    /// The link's syscalls on its sockets, by kind (counted by `link.rs`, which makes them).
    pub syscalls: LinkSyscalls,
    /// Live hosts sharing the prefix, this one included, as of the last heartbeat: the
    /// `known` of `X-Comet-Hosts`.
    pub live_hosts: u64,
}

/// The Redis sockets' syscalls: every call, WouldBlock ones included, as the loop counts its
/// own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkSyscalls {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
}

/// Why a request was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The link is down or went down before the reply came: whether a publish was applied is
    /// unknown (another host may see it; this host will find it when it catches up).
    Unavailable,
    /// Redis answered with an error (out of memory, a read-only replica, ...).
    Refused(String),
}

/// A message to publish, as the server hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    pub channel: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// The number of this host's `GET /notify` count whose result it is (the `N` of its
    /// `?waiters` question): every host answers the waiters it set aside for that count.
    pub answers: Option<u64>,
}

impl<'a> Publish<'a> {
    /// A message that is no count's result.
    pub fn new(channel: &'a str, content_type: &'a str, body: &'a [u8]) -> Publish<'a> {
        Publish {
            channel,
            content_type,
            body,
            answers: None,
        }
    }

    /// The message kept until Redis answers.
    pub fn to_outgoing(self) -> Outgoing {
        Outgoing {
            channel: self.channel.to_owned(),
            content_type: self.content_type.to_owned(),
            body: self.body.to_vec(),
            answers: self.answers,
        }
    }
}

/// What the session has for the rest of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The link is up: after an outage, every channel held locally should be caught up from
    /// its stream, since messages may have gone by unseen.
    Up,
    /// The link went down; parked waiters stay parked.
    Down,
    /// A message published by another host, `origin` (which wants this host's delivery
    /// count on its reply channel).
    Message {
        origin: String,
        /// The origin's `GET /notify` count whose result this message is.
        answers: Option<u64>,
        channel: String,
        epoch: u32,
        seq: u64,
        content_type: String,
        body: Vec<u8>,
    },
    /// A payload addressed to this host (`P:host:ID`): delivery counts of its publishes.
    HostReply(Vec<u8>),
    Published {
        request: u64,
        result: Result<Published, Failure>,
    },
    History {
        request: u64,
        result: Result<History, Failure>,
    },
    /// A line for the log: the first failure of an outage, and the recovery.
    Log(String),
}

/// What the I/O wrapper must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a new connection to `addr` (non-blocking) and report `connected` or `failed`.
    Connect(Conn),
    /// Drop the connection.
    Close(Conn),
}

/// How long a heartbeat marks this host live: three probe intervals and a reply timeout, so
/// one late heartbeat does not drop a host from the counts.
fn heartbeat_ttl_ms(config: &SessionConfig) -> u64 {
    let ttl = config.probe_interval * 3 + config.reply_timeout;
    ttl.as_millis().try_into().unwrap_or(u64::MAX)
}

/// A message this host publishes, kept until Redis answers (to send again after a
/// NOSCRIPT, or to deliver here with the id it gets).
#[derive(Debug)]
pub struct Outgoing {
    pub channel: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The `GET /notify` count whose result it is.
    pub answers: Option<u64>,
}

/// A request sent and not yet answered, in the order sent.
#[derive(Debug)]
enum Pending {
    Auth,
    Select,
    Load(Script),
    /// One per channel subscribed: Redis confirms each.
    Subscribe,
    Probe,
    Heartbeat,
    HostReply,
    Publish {
        request: u64,
        /// Kept to send again with the script's source after a NOSCRIPT.
        message: Outgoing,
        /// Sent with the source after a NOSCRIPT: a second NOSCRIPT is a failure.
        by_source: bool,
    },
    History {
        request: u64,
        /// Kept to send again with the script's source after a NOSCRIPT.
        read: Read,
        by_source: bool,
    },
}

/// A catch-up read as asked.
#[derive(Debug)]
struct Read {
    channel: String,
    after: Option<(u32, u64)>,
    /// Publishes [`fence_payload`] on this host's reply channel as it runs.
    fenced: bool,
}

/// What a fenced read publishes on this host's reply channel: `fence N`, N its request.
pub fn fence_payload(request: u64) -> String {
    format!("fence {request}")
}

/// The request of a fenced read whose fence `payload` is.
pub fn parse_fence(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.strip_prefix(b"fence ")?)
        .ok()?
        .parse()
        .ok()
}

#[derive(Debug)]
struct Connection {
    /// The TCP connection is open (the handshake may still be under way).
    open: bool,
    decoder: Decoder,
    out: Vec<u8>,
    pending: VecDeque<(Pending, Instant)>,
}

impl Connection {
    fn new(limits: Limits) -> Connection {
        Connection {
            open: false,
            decoder: Decoder::new(limits),
            out: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    fn send(&mut self, args: &[&[u8]], pending: Pending, now: Instant) {
        encode_command(&mut self.out, args);
        self.pending.push_back((pending, now));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting { until: Instant },
    Handshake { since: Instant },
    Up,
}

/// The sans-IO state machine of one host's link to Redis.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    publish: PublishParams,
    phase: Phase,
    conns: [Connection; 2],
    /// SHA1 of each script, as SCRIPT LOAD returned them (in `Script::ALL` order).
    shas: [Option<Vec<u8>>; 3],
    /// The wait before the next attempt: doubles per failed attempt, up to `backoff_max`.
    backoff: Duration,
    /// This outage was logged (one line per outage, not per attempt).
    outage_logged: bool,
    next_probe: Instant,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    stats: LinkStats,
    /// Live hosts (this one included) as the last heartbeat counted them.
    live_hosts: u64,
}

impl Session {
    /// A session that connects at once (its first `poll`).
    pub fn new(config: SessionConfig, now: Instant) -> Session {
        let publish = PublishParams {
            history: config.history,
            host: config.host.clone(),
            key_ttl_ms: config.key_ttl.as_millis().try_into().unwrap_or(u64::MAX),
        };
        let limits = config.limits;
        let backoff = config.backoff_min;
        let mut session = Session {
            config,
            publish,
            phase: Phase::Waiting { until: now },
            conns: [Connection::new(limits), Connection::new(limits)],
            shas: [None, None, None],
            backoff,
            outage_logged: false,
            next_probe: now,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: LinkStats::default(),
            live_hosts: 1,
        };
        session.tick(now);
        session
    }

    pub fn state(&self) -> LinkState {
        match self.phase {
            Phase::Waiting { .. } => LinkState::Down,
            Phase::Handshake { .. } => LinkState::Connecting,
            Phase::Up => LinkState::Up,
        }
    }

    /// Whether bytes from Redis are still wanted (not waiting out a back-off).
    pub fn is_connecting_or_up(&self) -> bool {
        !matches!(self.phase, Phase::Waiting { .. })
    }

    pub fn stats(&self) -> LinkStats {
        LinkStats {
            live_hosts: self.live_hosts,
            ..self.stats
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The next thing the I/O wrapper must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing the server must hear.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes waiting to be written on `conn`.
    pub fn output(&self, conn: Conn) -> &[u8] {
        &self.conns[conn.index()].out
    }

    /// `n` bytes of `output(conn)` were written.
    pub fn wrote(&mut self, conn: Conn, n: usize) {
        self.conns[conn.index()].out.drain(..n);
    }

    /// When `tick` must next be called, at the latest.
    pub fn next_deadline(&self) -> Instant {
        let overdue = self.conns.iter().filter_map(|c| {
            c.pending
                .front()
                .map(|(_, sent)| *sent + self.config.reply_timeout)
        });
        let phase = match self.phase {
            Phase::Waiting { until } => until,
            Phase::Handshake { since } => since + self.config.reply_timeout,
            Phase::Up => self.next_probe,
        };
        overdue.fold(phase, Instant::min)
    }

    /// Time passed: start an attempt after a back-off, send probes, notice overdue replies.
    pub fn tick(&mut self, now: Instant) {
        match self.phase {
            Phase::Waiting { until } if now >= until => self.attempt(now),
            Phase::Handshake { since } if now >= since + self.config.reply_timeout => {
                self.fail("no answer to the handshake", now);
            }
            Phase::Up if now >= self.next_probe => self.probe(now),
            _ => {}
        }
        let timeout = self.config.reply_timeout;
        if !matches!(self.phase, Phase::Waiting { .. })
            && self.conns.iter().any(|c| {
                c.pending
                    .front()
                    .is_some_and(|(_, sent)| now >= *sent + timeout)
            })
        {
            self.fail("a reply is overdue (Redis stalled?)", now);
        }
    }

    fn attempt(&mut self, now: Instant) {
        self.phase = Phase::Handshake { since: now };
        for conn in Conn::BOTH {
            let c = &mut self.conns[conn.index()];
            c.open = false;
            c.decoder.reset();
            c.out.clear();
            c.pending.clear();
            self.actions.push_back(Action::Connect(conn));
        }
    }

    /// The TCP connection `conn` is open: its handshake goes out.
    pub fn connected(&mut self, conn: Conn, now: Instant) {
        if !matches!(self.phase, Phase::Handshake { .. }) {
            return;
        }
        let config = &self.config;
        let c = &mut self.conns[conn.index()];
        c.open = true;
        if let Some(password) = &config.password {
            match &config.username {
                Some(user) => c.send(
                    &[b"AUTH", user.as_bytes(), password.expose().as_bytes()],
                    Pending::Auth,
                    now,
                ),
                None => c.send(&[b"AUTH", password.expose().as_bytes()], Pending::Auth, now),
            }
        }
        match conn {
            Conn::Command => {
                if config.db != 0 {
                    let db = config.db.to_string();
                    c.send(&[b"SELECT", db.as_bytes()], Pending::Select, now);
                }
                for script in Script::ALL {
                    c.send(
                        &[b"SCRIPT", b"LOAD", script.source().as_bytes()],
                        Pending::Load(script),
                        now,
                    );
                }
                // The first heartbeat is part of the handshake: once the link is up, this
                // host is counted by every publish.
                let ttl = heartbeat_ttl_ms(config);
                encode_heartbeat(&mut c.out, Invoke::Source, &config.keys, &config.host, ttl);
                c.pending.push_back((Pending::Heartbeat, now));
            }
            Conn::Subscriber => {
                // Pub/sub ignores the database number: no SELECT.
                let (bus, mine) = (config.keys.bus(), config.keys.host_channel(&config.host));
                c.send(
                    &[b"SUBSCRIBE", bus.as_bytes(), mine.as_bytes()],
                    Pending::Subscribe,
                    now,
                );
                c.pending.push_back((Pending::Subscribe, now));
            }
        }
    }

    /// `conn` closed or failed (connect refused, reset, EOF).
    pub fn failed(&mut self, conn: Conn, reason: &str, now: Instant) {
        if matches!(self.phase, Phase::Waiting { .. }) {
            return;
        }
        let which = match conn {
            Conn::Command => "command connection",
            Conn::Subscriber => "subscriber",
        };
        self.fail(&format!("{which}: {reason}"), now);
    }

    /// Bytes read from `conn`.
    pub fn received(&mut self, conn: Conn, bytes: &[u8], now: Instant) {
        if matches!(self.phase, Phase::Waiting { .. }) {
            return;
        }
        self.conns[conn.index()].decoder.feed(bytes);
        loop {
            let value = match self.conns[conn.index()].decoder.next() {
                Ok(Some(value)) => value,
                Ok(None) => break,
                Err(e) => return self.fail(&format!("malformed reply: {e}"), now),
            };
            if let Err(reason) = self.reply(conn, value, now) {
                return self.fail(&reason, now);
            }
            if matches!(self.phase, Phase::Waiting { .. }) {
                return;
            }
        }
    }

    /// A publish: `Ok` when sent (its `Event::Published` follows), `Err` at once when the
    /// link is down.
    pub fn publish(
        &mut self,
        request: u64,
        message: Publish<'_>,
        now: Instant,
    ) -> Result<(), Failure> {
        if self.phase != Phase::Up {
            return Err(Failure::Unavailable);
        }
        self.send_publish(request, message.to_outgoing(), false, now);
        Ok(())
    }

    fn send_publish(&mut self, request: u64, message: Outgoing, by_source: bool, now: Instant) {
        let sha = &self.shas[0];
        let how = match (by_source, sha) {
            (false, Some(sha)) => Invoke::Sha(sha),
            _ => Invoke::Source,
        };
        let c = &mut self.conns[Conn::Command.index()];
        encode_publish(
            &mut c.out,
            how,
            &self.config.keys,
            &self.publish,
            &message.channel,
            &message.content_type,
            &message.body,
            message.answers,
        );
        c.pending.push_back((
            Pending::Publish {
                request,
                message,
                by_source,
            },
            now,
        ));
    }

    /// A catch-up read of `channel` after `after` (epoch, seq), or all of it.
    pub fn history(
        &mut self,
        request: u64,
        channel: &str,
        after: Option<(u32, u64)>,
        fenced: bool,
        now: Instant,
    ) -> Result<(), Failure> {
        if self.phase != Phase::Up {
            return Err(Failure::Unavailable);
        }
        let read = Read {
            channel: channel.to_owned(),
            after,
            fenced,
        };
        self.send_history(request, read, false, now);
        Ok(())
    }

    fn send_history(&mut self, request: u64, read: Read, by_source: bool, now: Instant) {
        let how = match (by_source, &self.shas[1]) {
            (false, Some(sha)) => Invoke::Sha(sha),
            _ => Invoke::Source,
        };
        let fence_to = self.config.keys.host_channel(&self.config.host);
        let fence = fence_payload(request);
        let fence = read.fenced.then_some((fence_to.as_str(), fence.as_bytes()));
        let c = &mut self.conns[Conn::Command.index()];
        encode_history(
            &mut c.out,
            how,
            &self.config.keys,
            &read.channel,
            read.after,
            fence,
        );
        c.pending.push_back((
            Pending::History {
                request,
                read,
                by_source,
            },
            now,
        ));
    }

    /// Live hosts sharing the prefix, this one included, as of the last heartbeat.
    pub fn live_hosts(&self) -> u64 {
        self.live_hosts
    }

    /// Sends `payload` to every host on the bus as it is (a question every host answers on
    /// the asker's reply channel, as `GET /` asks for waiters). `Err` when the link is down.
    pub fn announce(&mut self, payload: &[u8], now: Instant) -> Result<(), Failure> {
        if self.phase != Phase::Up {
            return Err(Failure::Unavailable);
        }
        let bus = self.config.keys.bus();
        self.conns[Conn::Command.index()].send(
            &[b"PUBLISH", bus.as_bytes(), payload],
            Pending::HostReply,
            now,
        );
        Ok(())
    }

    /// Sends `payload` to host `to` (its reply channel); best effort.
    pub fn reply_to_host(&mut self, to: &str, payload: &[u8], now: Instant) {
        if self.phase != Phase::Up {
            return;
        }
        let channel = self.config.keys.host_channel(to);
        self.conns[Conn::Command.index()].send(
            &[b"PUBLISH", channel.as_bytes(), payload],
            Pending::HostReply,
            now,
        );
    }

    fn probe(&mut self, now: Instant) {
        self.next_probe = now + self.config.probe_interval;
        self.stats.probes += 1;
        self.conns[Conn::Subscriber.index()].send(&[b"PING"], Pending::Probe, now);
        let ttl = heartbeat_ttl_ms(&self.config);
        let how = match &self.shas[2] {
            Some(sha) => Invoke::Sha(sha),
            None => Invoke::Source,
        };
        let c = &mut self.conns[Conn::Command.index()];
        encode_heartbeat(&mut c.out, how, &self.config.keys, &self.config.host, ttl);
        c.pending.push_back((Pending::Heartbeat, now));
    }

    /// One reply or pushed message on `conn`; `Err` takes the link down.
    fn reply(&mut self, conn: Conn, value: Value, now: Instant) -> Result<(), String> {
        if conn == Conn::Subscriber {
            if let Some(result) = self.pushed(&value) {
                return result;
            }
        }
        let Some((pending, _)) = self.conns[conn.index()].pending.pop_front() else {
            return Err("a reply to no request".into());
        };
        match pending {
            Pending::Auth => match value {
                Value::Simple(_) => {}
                Value::Error(e) => {
                    return Err(format!("AUTH refused: {}", String::from_utf8_lossy(&e)))
                }
                _ => return Err("unexpected reply to AUTH".into()),
            },
            Pending::Select => match value {
                Value::Simple(_) => {}
                Value::Error(e) => {
                    return Err(format!("SELECT refused: {}", String::from_utf8_lossy(&e)))
                }
                _ => return Err("unexpected reply to SELECT".into()),
            },
            Pending::Load(script) => match value {
                Value::Bulk(sha) => {
                    let at = Script::ALL
                        .iter()
                        .position(|s| *s == script)
                        .expect("listed");
                    self.shas[at] = Some(sha);
                }
                Value::Error(e) => {
                    return Err(format!(
                        "SCRIPT LOAD refused: {}",
                        String::from_utf8_lossy(&e)
                    ))
                }
                _ => return Err("unexpected reply to SCRIPT LOAD".into()),
            },
            Pending::Subscribe => match &value {
                Value::Array(items)
                    if items.first() == Some(&Value::Bulk(b"subscribe".to_vec())) => {}
                Value::Error(e) => {
                    return Err(format!("SUBSCRIBE refused: {}", String::from_utf8_lossy(e)))
                }
                _ => return Err("unexpected reply to SUBSCRIBE".into()),
            },
            Pending::Probe => match &value {
                // In subscribe mode PING is answered ["pong", ""].
                Value::Array(items) if items.first() == Some(&Value::Bulk(b"pong".to_vec())) => {}
                _ => return Err("unexpected reply to PING".into()),
            },
            Pending::Heartbeat => match value {
                Value::Integer(live) => self.live_hosts = live.max(1) as u64,
                Value::Error(e) if e.starts_with(b"NOSCRIPT") => {}
                // Best effort: a refused heartbeat only makes this host uncounted for a while.
                Value::Error(_) => {}
                _ => return Err("unexpected reply to the heartbeat".into()),
            },
            Pending::HostReply => {}
            Pending::Publish {
                request,
                message,
                by_source,
            } => match value {
                Value::Error(e) if e.starts_with(b"NOSCRIPT") && !by_source => {
                    self.send_publish(request, message, true, now);
                }
                Value::Error(e) => self.events.push_back(Event::Published {
                    request,
                    result: Err(Failure::Refused(String::from_utf8_lossy(&e).into_owned())),
                }),
                other => {
                    let result = parse_published(&other);
                    let reason = result.as_ref().err().map(|e| e.0.to_string());
                    self.stats.published += u64::from(result.is_ok());
                    self.events.push_back(Event::Published {
                        request,
                        result: result.map_err(|_| Failure::Unavailable),
                    });
                    if let Some(reason) = reason {
                        return Err(reason);
                    }
                }
            },
            Pending::History {
                request,
                read,
                by_source,
            } => match value {
                Value::Error(e) if e.starts_with(b"NOSCRIPT") && !by_source => {
                    self.send_history(request, read, true, now);
                }
                Value::Error(e) => self.events.push_back(Event::History {
                    request,
                    result: Err(Failure::Refused(String::from_utf8_lossy(&e).into_owned())),
                }),
                other => {
                    let result = parse_history(&other);
                    let reason = result.as_ref().err().map(|e| e.0.to_string());
                    self.events.push_back(Event::History {
                        request,
                        result: result.map_err(|_| Failure::Unavailable),
                    });
                    if let Some(reason) = reason {
                        return Err(reason);
                    }
                }
            },
        }
        self.maybe_up(now);
        Ok(())
    }

    /// A message pushed on the subscriber (not a reply): `None` when `value` is a reply.
    fn pushed(&mut self, value: &Value) -> Option<Result<(), String>> {
        let Value::Array(items) = value else {
            return None;
        };
        let [kind, from, payload] = items.as_slice() else {
            return None;
        };
        if kind != &Value::Bulk(b"message".to_vec()) {
            return None;
        }
        let (Some(from), Some(payload)) = (from.as_bytes(), payload.as_bytes()) else {
            return Some(Err("malformed pub/sub message".into()));
        };
        if from == self.config.keys.bus().as_bytes() {
            let Some(message) = parse_bus_message(payload) else {
                return Some(Err("malformed bus message".into()));
            };
            // This host delivered its own publishes when their ids came back.
            if message.origin != self.config.host {
                self.stats.received += 1;
                self.events.push_back(Event::Message {
                    origin: message.origin.to_owned(),
                    answers: message.answers,
                    channel: message.channel.to_owned(),
                    epoch: message.epoch,
                    seq: message.seq,
                    content_type: message.content_type.to_owned(),
                    body: message.body.to_vec(),
                });
            }
        } else {
            self.events.push_back(Event::HostReply(payload.to_vec()));
        }
        Some(Ok(()))
    }

    fn maybe_up(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Handshake { .. }) {
            return;
        }
        let through = self.conns.iter().all(|c| c.open && c.pending.is_empty());
        if !through {
            return;
        }
        self.phase = Phase::Up;
        self.backoff = self.config.backoff_min;
        if self.outage_logged {
            self.events.push_back(Event::Log(format!(
                "redis: link to {} up again",
                self.config.addr
            )));
            self.outage_logged = false;
        }
        self.events.push_back(Event::Up);
        self.next_probe = now + self.config.probe_interval;
    }

    fn fail(&mut self, reason: &str, now: Instant) {
        let was_up = self.phase == Phase::Up;
        for conn in Conn::BOTH {
            let c = &mut self.conns[conn.index()];
            for (pending, _) in c.pending.drain(..) {
                match pending {
                    Pending::Publish { request, .. } => self.events.push_back(Event::Published {
                        request,
                        result: Err(Failure::Unavailable),
                    }),
                    Pending::History { request, .. } => self.events.push_back(Event::History {
                        request,
                        result: Err(Failure::Unavailable),
                    }),
                    _ => {}
                }
            }
            c.out.clear();
            c.decoder.reset();
            c.open = false;
            self.actions.push_back(Action::Close(conn));
        }
        if was_up {
            self.stats.outages += 1;
            self.events.push_back(Event::Down);
        } else {
            self.stats.failed_attempts += 1;
        }
        if !self.outage_logged {
            self.outage_logged = true;
            self.events.push_back(Event::Log(format!(
                "redis: link to {} down ({reason}); retrying with back-off up to {:?}",
                self.config.addr, self.config.backoff_max
            )));
        }
        self.phase = Phase::Waiting {
            until: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config(password: Option<&str>) -> SessionConfig {
        SessionConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 6379)),
            username: None,
            password: password.map(|p| Secret::new(p).unwrap()),
            db: 2,
            keys: KeySpace::new("p"),
            host: "me".into(),
            history: 8,
            key_ttl: Duration::ZERO,
            probe_interval: 1000 * MS,
            reply_timeout: 500 * MS,
            backoff_min: 100 * MS,
            backoff_max: 400 * MS,
            limits: Limits::default(),
        }
    }

    fn actions(s: &mut Session) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// The commands waiting on `conn`, as text, and taken as written.
    fn written(s: &mut Session, conn: Conn) -> Vec<String> {
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(s.output(conn));
        let n = s.output(conn).len();
        s.wrote(conn, n);
        std::iter::from_fn(|| decoder.next().unwrap())
            .map(|v| match v {
                Value::Array(args) => args
                    .iter()
                    .map(|a| {
                        let text = String::from_utf8_lossy(a.as_bytes().unwrap()).into_owned();
                        if text.len() > 40 {
                            "<script>".into()
                        } else {
                            text
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                other => panic!("not a command: {other:?}"),
            })
            .collect()
    }

    const COMMAND_HANDSHAKE: &[u8] = b"+OK\r\n+OK\r\n$3\r\nsh1\r\n$3\r\nsh2\r\n$3\r\nsh3\r\n:1\r\n";
    const SUBSCRIBER_HANDSHAKE: &[u8] = b"+OK\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\np:bus\r\n:1\r\n\
        *3\r\n$9\r\nsubscribe\r\n$9\r\np:host:me\r\n:2\r\n";

    /// A session through its handshakes at `now`.
    fn up(now: Instant) -> Session {
        let mut s = Session::new(config(Some("sekrit")), now);
        assert_eq!(
            actions(&mut s),
            [
                Action::Connect(Conn::Command),
                Action::Connect(Conn::Subscriber)
            ]
        );
        s.connected(Conn::Command, now);
        s.connected(Conn::Subscriber, now);
        s.received(Conn::Command, COMMAND_HANDSHAKE, now);
        s.received(Conn::Subscriber, SUBSCRIBER_HANDSHAKE, now);
        assert_eq!(s.state(), LinkState::Up);
        assert_eq!(events(&mut s), [Event::Up]);
        written(&mut s, Conn::Command);
        written(&mut s, Conn::Subscriber);
        s
    }

    #[test]
    fn handshakes_then_up_with_a_first_probe_and_heartbeat() {
        let t = Instant::now();
        let mut s = Session::new(config(Some("sekrit")), t);
        assert_eq!(s.state(), LinkState::Connecting);
        assert_eq!(
            actions(&mut s),
            [
                Action::Connect(Conn::Command),
                Action::Connect(Conn::Subscriber)
            ]
        );
        s.connected(Conn::Command, t);
        assert_eq!(
            written(&mut s, Conn::Command),
            [
                "AUTH sekrit",
                "SELECT 2",
                "SCRIPT LOAD <script>",
                "SCRIPT LOAD <script>",
                "SCRIPT LOAD <script>",
                "EVAL <script> 1 p:hosts me 3500"
            ]
        );
        s.connected(Conn::Subscriber, t);
        assert_eq!(
            written(&mut s, Conn::Subscriber),
            ["AUTH sekrit", "SUBSCRIBE p:bus p:host:me"]
        );
        s.received(Conn::Command, COMMAND_HANDSHAKE, t);
        assert_eq!(
            s.state(),
            LinkState::Connecting,
            "the subscriber is not through yet"
        );
        s.received(Conn::Subscriber, SUBSCRIBER_HANDSHAKE, t);
        assert_eq!(s.state(), LinkState::Up);
        assert_eq!(events(&mut s), [Event::Up]);
        assert_eq!(s.output(Conn::Subscriber), b"");
        assert_eq!(s.next_deadline(), t + 1000 * MS, "the first probe");
        s.tick(t + 1000 * MS);
        assert_eq!(written(&mut s, Conn::Subscriber), ["PING"]);
        assert_eq!(
            written(&mut s, Conn::Command),
            ["EVALSHA sh3 1 p:hosts me 3500"]
        );
        assert_eq!(s.next_deadline(), t + 1500 * MS, "the replies are due");
    }

    #[test]
    fn every_split_of_the_handshake_replies_comes_up() {
        let t = Instant::now();
        for at in 0..=SUBSCRIBER_HANDSHAKE.len() {
            let mut s = Session::new(config(Some("x")), t);
            s.connected(Conn::Command, t);
            s.connected(Conn::Subscriber, t);
            s.received(Conn::Command, COMMAND_HANDSHAKE, t);
            let (a, b) = SUBSCRIBER_HANDSHAKE.split_at(at);
            s.received(Conn::Subscriber, a, t);
            s.received(Conn::Subscriber, b, t);
            assert_eq!(s.state(), LinkState::Up, "split at {at}");
        }
    }

    #[test]
    fn publishes_by_sha_fall_back_to_the_source_on_noscript() {
        let t = Instant::now();
        let mut s = up(t);
        s.publish(7, Publish::new("news", "text/plain", b"hi"), t)
            .unwrap();
        assert_eq!(
            written(&mut s, Conn::Command),
            ["EVALSHA sh1 3 p:{news}:meta p:{news}:stream p:hosts 8 hi p:bus news me 0 text/plain"]
        );
        s.received(Conn::Command, b"-NOSCRIPT No matching script.\r\n", t);
        assert_eq!(events(&mut s), []);
        let again = written(&mut s, Conn::Command);
        assert!(
            again[0].starts_with("EVAL <script> 3 p:{news}:meta"),
            "{again:?}"
        );
        s.received(Conn::Command, b"*4\r\n:9\r\n:3\r\n:0\r\n:2\r\n", t);
        assert_eq!(
            events(&mut s),
            [Event::Published {
                request: 7,
                result: Ok(Published {
                    epoch: 9,
                    seq: 3,
                    fresh: false,
                    hosts: 2
                })
            }]
        );
        s.publish(8, Publish::new("news", "text/plain", b"x"), t)
            .unwrap();
        s.received(Conn::Command, b"-OOM command not allowed\r\n", t);
        assert_eq!(
            events(&mut s),
            [Event::Published {
                request: 8,
                result: Err(Failure::Refused("OOM command not allowed".into()))
            }]
        );
        assert_eq!(
            s.state(),
            LinkState::Up,
            "an error reply is an answer, not a broken link"
        );
    }

    #[test]
    fn messages_from_other_hosts_are_delivered_and_own_ones_skipped() {
        let t = Instant::now();
        let mut s = up(t);
        s.received(
            Conn::Subscriber,
            b"*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$26\r\nother\nc\n5-2\ntext/plain\nhi\n\r\n\
              *3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$22\r\nme\nc\n5-3\ntext/plain\nyo\r\n\
              *3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$26\r\nother/7\nc\n5-4\ntext/plain\n3\r\n\
              *3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$23\r\nme/4\nc\n5-5\ntext/plain\n3\r\n\
              *3\r\n$7\r\nmessage\r\n$9\r\np:host:me\r\n$4\r\nn 12\r\n",
            t,
        );
        assert_eq!(
            events(&mut s),
            [
                Event::Message {
                    origin: "other".into(),
                    answers: None,
                    channel: "c".into(),
                    epoch: 5,
                    seq: 2,
                    content_type: "text/plain".into(),
                    body: b"hi\n".to_vec()
                },
                // The message of the other host's count 7: its waiters set aside here.
                Event::Message {
                    origin: "other".into(),
                    answers: Some(7),
                    channel: "c".into(),
                    epoch: 5,
                    seq: 4,
                    content_type: "text/plain".into(),
                    body: b"3".to_vec()
                },
                Event::HostReply(b"n 12".to_vec()),
            ]
        );
        assert_eq!(s.stats().received, 2);
    }

    #[test]
    fn a_silent_subscriber_is_noticed_within_the_probe_bound_and_rebuilt() {
        let t = Instant::now();
        let mut s = up(t);
        s.publish(1, Publish::new("c", "text/plain", b"x"), t + 900 * MS)
            .unwrap();
        s.received(
            Conn::Command,
            b"*4\r\n:9\r\n:1\r\n:1\r\n:1\r\n",
            t + 900 * MS,
        );
        events(&mut s);
        assert_eq!(s.next_deadline(), t + 1000 * MS, "the next probe");
        s.tick(t + 1000 * MS);
        assert_eq!(written(&mut s, Conn::Subscriber), ["PING"]);
        s.received(Conn::Command, b":1\r\n", t + 1000 * MS); // the command side still answers
                                                             // Redis paused: no pong. Nothing happens before the reply is due...
        s.tick(t + 1499 * MS);
        assert_eq!(s.state(), LinkState::Up);
        s.publish(2, Publish::new("c", "text/plain", b"y"), t + 1499 * MS)
            .unwrap();
        // ... and then the link goes down, failing what was in flight.
        s.tick(t + 1500 * MS);
        assert_eq!(s.state(), LinkState::Down);
        let evs = events(&mut s);
        assert_eq!(
            evs[0],
            Event::Published {
                request: 2,
                result: Err(Failure::Unavailable)
            }
        );
        assert_eq!(evs[1], Event::Down);
        assert!(
            matches!(&evs[2], Event::Log(l) if l.contains("overdue")),
            "{evs:?}"
        );
        assert_eq!(
            actions(&mut s),
            [
                Action::Close(Conn::Command),
                Action::Close(Conn::Subscriber)
            ]
        );
        assert_eq!(
            s.publish(3, Publish::new("c", "text/plain", b"z"), t + 1500 * MS),
            Err(Failure::Unavailable)
        );

        // Back-off 100 ms, then 200, 400, 400: one log line for the whole outage.
        let mut now = t + 1500 * MS;
        for wait in [100, 200, 400, 400] {
            assert_eq!(s.next_deadline(), now + wait * MS);
            s.tick(now + wait * MS - MS);
            assert_eq!(actions(&mut s), []);
            now += wait * MS;
            s.tick(now);
            assert_eq!(
                actions(&mut s),
                [
                    Action::Connect(Conn::Command),
                    Action::Connect(Conn::Subscriber)
                ]
            );
            s.failed(Conn::Command, "connection refused", now);
            assert_eq!(actions(&mut s).len(), 2);
            assert_eq!(events(&mut s), [], "logged once per outage");
        }
        now += 400 * MS;
        s.tick(now);
        actions(&mut s);
        s.connected(Conn::Command, now);
        s.connected(Conn::Subscriber, now);
        s.received(Conn::Command, COMMAND_HANDSHAKE, now);
        s.received(Conn::Subscriber, SUBSCRIBER_HANDSHAKE, now);
        let evs = events(&mut s);
        assert!(
            matches!(&evs[0], Event::Log(l) if l.contains("up again")),
            "{evs:?}"
        );
        assert_eq!(evs[1], Event::Up, "the caller catches up now");
        assert_eq!(s.stats().outages, 1);
        assert_eq!(s.stats().failed_attempts, 4);
    }

    #[test]
    fn a_handshake_nobody_answers_times_out() {
        let t = Instant::now();
        let mut s = Session::new(config(None), t);
        actions(&mut s);
        s.connected(Conn::Command, t);
        s.connected(Conn::Subscriber, t);
        s.tick(t + 499 * MS);
        assert_eq!(s.state(), LinkState::Connecting);
        s.tick(t + 500 * MS);
        assert_eq!(s.state(), LinkState::Down);
    }

    #[test]
    fn bad_replies_take_the_link_down_never_panic() {
        let t = Instant::now();
        let cases: &[(Conn, &[u8], &str)] = &[
            (Conn::Command, b"?what\r\n", "malformed reply"),
            (Conn::Command, b"$99999999999\r\n", "bulk string too long"),
            (Conn::Command, b"*2\r\n:1\r\n:2\r\n", "not 4 items"),
            (
                Conn::Command,
                b"*4\r\n:1\r\n:1\r\n:0\r\n:1\r\n:6\r\n",
                "a reply to no request",
            ),
            (
                Conn::Subscriber,
                b"*3\r\n$7\r\nmessage\r\n$5\r\np:bus\r\n$3\r\nbad\r\n",
                "malformed bus",
            ),
            (Conn::Subscriber, b"+PONG\r\n", "unexpected reply to PING"),
        ];
        for (conn, bytes, reason) in cases {
            let mut s = up(t);
            if *conn == Conn::Subscriber {
                // A probe in flight, its heartbeat answered.
                s.tick(t + 1000 * MS);
                s.received(Conn::Command, b":1\r\n", t);
            }
            s.publish(1, Publish::new("c", "text/plain", b"x"), t)
                .unwrap();
            s.received(*conn, bytes, t);
            assert_eq!(s.state(), LinkState::Down, "{reason}");
            let evs = events(&mut s);
            assert!(
                evs.iter()
                    .any(|e| matches!(e, Event::Log(l) if l.contains(reason))),
                "{reason}: {evs:?}"
            );
            assert!(evs
                .iter()
                .any(|e| matches!(e, Event::Published { request: 1, .. })));
        }
    }

    #[test]
    fn a_refused_password_is_a_failed_attempt_and_never_shown() {
        let t = Instant::now();
        let mut s = Session::new(config(Some("hunter2")), t);
        assert!(!format!("{s:?}").contains("hunter2"));
        actions(&mut s);
        s.connected(Conn::Command, t);
        s.received(
            Conn::Command,
            b"-WRONGPASS invalid username-password pair\r\n",
            t,
        );
        assert_eq!(s.state(), LinkState::Down);
        let evs = events(&mut s);
        assert!(
            matches!(&evs[0], Event::Log(l) if l.contains("AUTH refused") && !l.contains("hunter2"))
        );
    }
}
