//! A worker's end of its bus link: publishes relayed to the hub and their answers, the hub's
//! messages handed to the local registry. The loop owns one ([`crate::Server`] run as a
//! worker) and polls it like any socket; the frames are [`crate::bus::frame`]'s.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::Token;

use crate::bus::frame::{Issued, RefuseReason};
use crate::bus::{decode, encode, Frame, FrameReader};
use crate::comet::relay::Relayed;
use crate::comet::{Comet, MessageId};

/// What the hub said about a relayed publish, for the connection that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubAnswer {
    Published {
        id: MessageId,
        reached: u64,
        /// `--redis`: hosts counted and hosts known (`X-Comet-Hosts`).
        hosts: Option<(u16, u16)>,
    },
    Refused(RefuseReason),
    /// Parked waiters on every worker (`GET /`); with `--redis`, on every host counted, of
    /// the hosts known.
    Waiters {
        count: u64,
        hosts: Option<(u16, u16)>,
    },
    /// The hub holds what it can of a channel's history now (a [`Relayed::Load`]);
    /// `issued`: the newest id Redis had given on it when read (None: not read; epoch 0 and
    /// seq 0: Redis has no such channel).
    Loaded {
        issued: Option<MessageId>,
    },
    /// The link is gone (the supervisor died): no answer will come.
    Unavailable,
}

/// The link went down or spoke nonsense: the worker is alone and should stop.
#[derive(Debug)]
pub struct LinkDown(pub String);

pub struct WorkerLink {
    stream: UnixStream,
    reader: FrameReader,
    out: Vec<u8>,
    next_request: u64,
    /// Relayed publishes not yet answered, by request number.
    waiting: HashMap<u64, Token>,
    /// Stats queries from the hub, for the loop to answer with its counters.
    pub stats_wanted: Vec<u64>,
}

/// How long a new worker waits for the hub's welcome (and the history before it).
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

impl WorkerLink {
    /// Takes the worker's end of the link and reads (blocking, bounded) until the hub's
    /// Welcome has arrived, so the history and the epoch are known before any client is
    /// served; the frames stay buffered for [`WorkerLink::read`].
    pub fn new(mut stream: std::os::unix::net::UnixStream) -> io::Result<Self> {
        let mut reader = FrameReader::new();
        stream.set_read_timeout(Some(WELCOME_TIMEOUT))?;
        'reading: loop {
            let spare = reader.spare(64 * 1024);
            let len = spare.len();
            let n = match stream.read(spare) {
                Ok(0) => {
                    reader.filled(len, 0);
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "hub gone"));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e),
            };
            reader.filled(len, n);
            let mut at = 0;
            let buffered = reader.buffered();
            loop {
                match decode(&buffered[at..]) {
                    Ok(Some((Frame::Welcome { .. }, _))) => break 'reading,
                    Ok(Some((_, used))) => at += used,
                    Ok(None) => break,
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
        }
        stream.set_read_timeout(None)?;
        stream.set_nonblocking(true)?;
        Ok(WorkerLink {
            stream: UnixStream::from_std(stream),
            reader,
            out: Vec::new(),
            next_request: 1,
            waiting: HashMap::new(),
            stats_wanted: Vec::new(),
        })
    }

    pub fn stream_mut(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Sends the publishes the registry queued since the last call.
    pub fn relay(&mut self, comet: &mut Comet) {
        for (channel, opened) in comet.take_channel_events() {
            let frame = match opened {
                true => Frame::Opened { channel: &channel },
                false => Frame::Closed { channel: &channel },
            };
            let _ = encode(&frame, &mut self.out);
        }
        while let Some(relayed) = comet.take_relayed() {
            let request = self.next_request;
            self.next_request += 1;
            let (frame, token) = match &relayed {
                Relayed::Publish {
                    token,
                    channel,
                    content_type,
                    body,
                } => (
                    Frame::Publish {
                        request,
                        channel,
                        content_type,
                        body,
                    },
                    *token,
                ),
                Relayed::CountWaiters { token } => (Frame::CountWaiters { request }, *token),
                Relayed::PublishCount { token, channel } => {
                    (Frame::PublishCount { request, channel }, *token)
                }
                Relayed::Load {
                    token,
                    client,
                    channel,
                } => {
                    let client = *client;
                    (
                        Frame::Load {
                            request,
                            client,
                            channel,
                        },
                        *token,
                    )
                }
            };
            if encode(&frame, &mut self.out).is_ok() {
                self.waiting.insert(request, token);
            }
        }
    }

    /// Writes what is queued, as far as the socket takes it now.
    pub fn flush(&mut self) -> Result<(), LinkDown> {
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => return Err(LinkDown("link closed".into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(LinkDown(e.to_string())),
            }
        }
        self.out.drain(..written);
        Ok(())
    }

    /// Reads and acts on everything the hub sent: messages into `comet` (counted back to
    /// the hub), answers to relayed publishes into `answers`.
    pub fn read(
        &mut self,
        comet: &mut Comet,
        now: Instant,
        answers: &mut Vec<(Token, HubAnswer)>,
    ) -> Result<(), LinkDown> {
        loop {
            let spare = self.reader.spare(64 * 1024);
            let len = spare.len();
            match self.stream.read(spare) {
                Ok(0) => {
                    self.reader.filled(len, 0);
                    self.handle_frames(comet, now, answers)?;
                    return Err(LinkDown("the supervisor closed the link".into()));
                }
                Ok(n) => self.reader.filled(len, n),
                Err(e) => {
                    self.reader.filled(len, 0);
                    match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => break,
                        _ => return Err(LinkDown(e.to_string())),
                    }
                }
            }
        }
        self.handle_frames(comet, now, answers)
    }

    fn handle_frames(
        &mut self,
        comet: &mut Comet,
        now: Instant,
        answers: &mut Vec<(Token, HubAnswer)>,
    ) -> Result<(), LinkDown> {
        loop {
            let frame = match self.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(LinkDown(format!("bad frame from the hub: {e}"))),
            };
            match frame {
                Frame::Welcome { epoch, last_seq } => comet.adopt_hub(epoch, last_seq),
                Frame::Floor { floor, channel } => comet.set_floor(channel, floor, now),
                Frame::Deliver {
                    delivery,
                    epoch,
                    seq,
                    channel,
                    content_type,
                    body,
                } => {
                    let id = MessageId { epoch, seq };
                    if delivery == 0 {
                        // History (a join, or a backfill from Redis): no one to wake.
                        comet.record_from_hub(channel, id, content_type, body.into(), now);
                    } else {
                        let reached = comet.publish_from_hub(
                            delivery,
                            channel,
                            id,
                            content_type,
                            body.into(),
                            now,
                        );
                        let count = reached as u64;
                        let _ = encode(&Frame::Delivered { delivery, count }, &mut self.out);
                    }
                }
                Frame::Published {
                    request,
                    epoch,
                    seq,
                    reached,
                    counted,
                    known,
                } => {
                    if let Some(token) = self.waiting.remove(&request) {
                        let id = MessageId { epoch, seq };
                        let hosts = (known > 0).then_some((counted, known));
                        let answer = HubAnswer::Published { id, reached, hosts };
                        answers.push((token, answer));
                    }
                }
                Frame::Refused { request, reason } => {
                    if let Some(token) = self.waiting.remove(&request) {
                        answers.push((token, HubAnswer::Refused(reason)));
                    }
                }
                Frame::ChannelTotal { count } => comet.set_server_channels(count as usize),
                Frame::CountQuery { query, channel } => {
                    let count = match channel {
                        "" => comet.parked(),
                        channel => comet.reserve_for_count(channel, query),
                    } as u64;
                    let _ = encode(&Frame::Counted { query, count }, &mut self.out);
                }
                Frame::WaiterCount {
                    request,
                    count,
                    counted,
                    known,
                } => {
                    if let Some(token) = self.waiting.remove(&request) {
                        let hosts = (known > 0).then_some((counted, known));
                        answers.push((token, HubAnswer::Waiters { count, hosts }));
                    }
                }
                Frame::Loaded { request, issued } => {
                    if let Some(token) = self.waiting.remove(&request) {
                        let issued = match issued {
                            Issued::Unknown => None,
                            Issued::Upto { epoch, seq } => Some(MessageId { epoch, seq }),
                        };
                        answers.push((token, HubAnswer::Loaded { issued }));
                    }
                }
                Frame::StatsQuery { query } => self.stats_wanted.push(query),
                other => {
                    return Err(LinkDown(format!(
                        "unexpected frame from the hub: {other:?}"
                    )))
                }
            }
        }
    }

    /// Answers a stats query with the worker's metrics text.
    pub fn send_stats(&mut self, query: u64, text: &[u8]) {
        let _ = encode(&Frame::Stats { query, text }, &mut self.out);
    }

    /// The link is down: every relayed publish still waiting is answered "unavailable".
    pub fn fail_all(&mut self, answers: &mut Vec<(Token, HubAnswer)>) {
        for (_, token) in self.waiting.drain() {
            answers.push((token, HubAnswer::Unavailable));
        }
    }
}
