//! The bus's frames, as pure code over byte buffers: [`encode`] appends one frame to a
//! reused `Vec`, [`decode`] takes one from the front of a byte slice, and [`FrameReader`]
//! accumulates a stream's bytes and hands out whole frames. Nothing here touches a socket,
//! and no input, however malformed, panics: it is a [`FrameError`].
//!
//! A frame is `LEN:u32 KIND:u8 PAYLOAD`, little-endian, where `LEN` counts `KIND` and the
//! payload (so it is at least 1). Strings are `u16` length + UTF-8 bytes, bodies `u32`
//! length + bytes. A frame must be consumed exactly by its kind's layout: trailing bytes are
//! an error, so two peers can never silently disagree on a layout.

use std::fmt;

/// Largest `LEN` accepted: a comet body (`--comet-body-limit` is at most 16 MiB) plus its
/// channel name and content type, with room to spare. Beyond, the peer is broken.
pub const MAX_FRAME: usize = 17 << 20;

/// One message on the bus. Borrowed from the buffer it was decoded from, so decoding
/// allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Worker to hub, first frame on a new link: who it is.
    Hello { worker: u16, pid: u32 },
    /// Worker to hub: a client asked to publish; `request` is the worker's own number for
    /// it, echoed in [`Frame::Published`].
    Publish {
        request: u64,
        channel: &'a str,
        content_type: &'a str,
        body: &'a [u8],
    },
    /// Hub to every worker: a message with its id, to deliver to local waiters and
    /// subscribers. `delivery` is the hub's number, echoed in [`Frame::Delivered`].
    Deliver {
        delivery: u64,
        epoch: u32,
        seq: u64,
        channel: &'a str,
        content_type: &'a str,
        body: &'a [u8],
    },
    /// Worker to hub: how many local clients a [`Frame::Deliver`] reached.
    Delivered { delivery: u64, count: u64 },
    /// Hub to the publishing worker: the id given and how many clients, on all workers,
    /// the message reached; with `--redis`, on every host counted, of the hosts known
    /// (`X-Comet-Hosts: counted/known`; both 0 without Redis).
    Published {
        request: u64,
        epoch: u32,
        seq: u64,
        reached: u64,
        counted: u16,
        known: u16,
    },
    /// Hub to the publishing worker: the publish was refused.
    Refused { request: u64, reason: RefuseReason },
    /// Hub to a worker, first frame on its link: the server's epoch and the last sequence
    /// number given, so ids the worker sees and checks are the hub's.
    Welcome { epoch: u32, last_seq: u64 },
    /// Hub to a new worker, before a channel's history (sent as [`Frame::Deliver`] with
    /// `delivery` 0: record, answer nothing): every message of the channel after `floor` is
    /// in that history; older ones are lost to clients that ask (they get a resync).
    Floor { floor: u64, channel: &'a str },
    /// Worker to hub: a client asked how many waiters are parked (`GET /`), on every worker.
    CountWaiters { request: u64 },
    /// Hub to every worker: how many clients are parked here (reply: [`Frame::Counted`]):
    /// waiters on every channel when `channel` is empty, else waiters and subscribers of
    /// that channel.
    CountQuery { query: u64, channel: &'a str },
    /// Worker to hub: its parked waiters, for a [`Frame::CountQuery`].
    Counted { query: u64, count: u64 },
    /// Hub to the asking worker: parked waiters on every worker.
    /// With `--redis`, `counted` of `known` hosts (both 0 without).
    WaiterCount {
        request: u64,
        count: u64,
        counted: u16,
        known: u16,
    },
    /// Worker to hub: it made a channel (a waiter, a subscriber, a message): counted once
    /// server-wide, however many workers hold it, against `--comet-max-channels`.
    Opened { channel: &'a str },
    /// Worker to hub: it dropped an idle channel.
    Closed { channel: &'a str },
    /// Hub to every worker: channels on the whole server now.
    ChannelTotal { count: u64 },
    /// Worker to hub: publish on `channel` a message whose body is the number of clients it
    /// reaches on every worker (`GET /notify`): the hub counts first, then publishes.
    PublishCount { request: u64, channel: &'a str },
    /// Worker to hub (`--redis`): a client named an id of `channel` the worker cannot serve
    /// from what it holds. [`Position::Behind`]: older than the worker's copy; the hub reads
    /// the channel from Redis when its own copy is not whole (the entries come as
    /// [`Frame::Deliver`] with `delivery` 0, then a [`Frame::Floor`]). [`Position::Ahead`]:
    /// newer than the worker's copy (read on another host before this one had it on the
    /// bus); the hub always reads, and the newer entries reach the workers as news. Then it
    /// answers [`Frame::Loaded`]. Without Redis the hub answers at once: its history is all
    /// there is.
    Load {
        request: u64,
        client: Position,
        channel: &'a str,
    },
    /// Hub to the asking worker: the [`Frame::Load`] is done (read, or nothing to read), and
    /// what Redis had issued on the channel when it was read.
    Loaded { request: u64, issued: Issued },
    /// Hub to a worker: report your counters (the reply is [`Frame::Stats`]).
    StatsQuery { query: u64 },
    /// Worker to hub: its counters as `NAME VALUE` lines, in the Prometheus text format
    /// without the HELP/TYPE lines.
    Stats { query: u64, text: &'a [u8] },
}

/// Why the hub refused a publish; each maps to a status code in one place (the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    BadChannelName = 1,
    TooManyChannels = 2,
    /// `--redis`: the link is down (or went down with the publish in flight): no id is
    /// given here alone, so the client is told to retry (503).
    RedisUnavailable = 3,
}

/// Where the id a client named stands against the worker's copy of the channel
/// ([`Frame::Load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Older than the worker's copy (or of another epoch): perhaps Redis still has it.
    Behind = 1,
    /// Newer than the worker's copy, in its epoch: perhaps not on this host's bus yet.
    Ahead = 2,
}

/// What Redis had issued on a channel when the hub read it for a [`Frame::Load`]: an id
/// above it was never issued, one at or below it was, even if the worker does not hold it
/// yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// Not read (no Redis, a whole copy, or the link down): nobody knows.
    Unknown,
    /// The channel's epoch and last seq in Redis; `epoch` 0 and `seq` 0 when Redis has no
    /// such channel (nothing was issued).
    Upto { epoch: u32, seq: u64 },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// `LEN` is 0 (no kind) or above [`MAX_FRAME`].
    BadLength(u32),
    UnknownKind(u8),
    /// The payload ends inside a field of its kind's layout.
    Truncated {
        kind: u8,
    },
    /// The payload has bytes after its kind's layout.
    TrailingBytes {
        kind: u8,
    },
    /// A string field is not UTF-8.
    NotUtf8 {
        kind: u8,
    },
    /// A field's value is not one its type allows (an unknown refuse reason).
    BadValue {
        kind: u8,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength(n) => write!(f, "frame length {n} outside 1..={MAX_FRAME}"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::Truncated { kind } => write!(f, "frame kind {kind} truncated"),
            FrameError::TrailingBytes { kind } => write!(f, "frame kind {kind} has extra bytes"),
            FrameError::NotUtf8 { kind } => write!(f, "frame kind {kind}: string not UTF-8"),
            FrameError::BadValue { kind } => write!(f, "frame kind {kind}: bad field value"),
        }
    }
}

impl std::error::Error for FrameError {}

mod kind {
    pub const HELLO: u8 = 1;
    pub const PUBLISH: u8 = 2;
    pub const DELIVER: u8 = 3;
    pub const DELIVERED: u8 = 4;
    pub const PUBLISHED: u8 = 5;
    pub const REFUSED: u8 = 6;
    pub const STATS_QUERY: u8 = 7;
    pub const STATS: u8 = 8;
    pub const WELCOME: u8 = 9;
    pub const FLOOR: u8 = 10;
    pub const COUNT_WAITERS: u8 = 11;
    pub const COUNT_QUERY: u8 = 12;
    pub const COUNTED: u8 = 13;
    pub const WAITER_COUNT: u8 = 14;
    pub const PUBLISH_COUNT: u8 = 15;
    pub const OPENED: u8 = 16;
    pub const CLOSED: u8 = 17;
    pub const CHANNEL_TOTAL: u8 = 18;
    pub const LOAD: u8 = 19;
    pub const LOADED: u8 = 20;
}

impl Frame<'_> {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::Publish { .. } => kind::PUBLISH,
            Frame::Deliver { .. } => kind::DELIVER,
            Frame::Delivered { .. } => kind::DELIVERED,
            Frame::Published { .. } => kind::PUBLISHED,
            Frame::Refused { .. } => kind::REFUSED,
            Frame::StatsQuery { .. } => kind::STATS_QUERY,
            Frame::Stats { .. } => kind::STATS,
            Frame::Welcome { .. } => kind::WELCOME,
            Frame::Floor { .. } => kind::FLOOR,
            Frame::CountWaiters { .. } => kind::COUNT_WAITERS,
            Frame::CountQuery { .. } => kind::COUNT_QUERY,
            Frame::Counted { .. } => kind::COUNTED,
            Frame::WaiterCount { .. } => kind::WAITER_COUNT,
            Frame::PublishCount { .. } => kind::PUBLISH_COUNT,
            Frame::Opened { .. } => kind::OPENED,
            Frame::Closed { .. } => kind::CLOSED,
            Frame::ChannelTotal { .. } => kind::CHANNEL_TOTAL,
            Frame::Load { .. } => kind::LOAD,
            Frame::Loaded { .. } => kind::LOADED,
        }
    }
}

/// Appends `frame` to `out` (a buffer the caller reuses). Fails only when the frame would
/// be larger than [`MAX_FRAME`] or a string longer than 65,535 bytes; `out` is then as it was.
pub fn encode(frame: &Frame<'_>, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(frame.kind());
    let written = match *frame {
        Frame::Hello { worker, pid } => {
            out.extend_from_slice(&worker.to_le_bytes());
            out.extend_from_slice(&pid.to_le_bytes());
            Ok(())
        }
        Frame::Publish {
            request,
            channel,
            content_type,
            body,
        } => {
            out.extend_from_slice(&request.to_le_bytes());
            put_str(out, channel)
                .and_then(|()| put_str(out, content_type))
                .and_then(|()| put_bytes(out, body))
        }
        Frame::Deliver {
            delivery,
            epoch,
            seq,
            channel,
            content_type,
            body,
        } => {
            out.extend_from_slice(&delivery.to_le_bytes());
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            put_str(out, channel)
                .and_then(|()| put_str(out, content_type))
                .and_then(|()| put_bytes(out, body))
        }
        Frame::Delivered { delivery, count } => {
            out.extend_from_slice(&delivery.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            Ok(())
        }
        Frame::Published {
            request,
            epoch,
            seq,
            reached,
            counted,
            known,
        } => {
            out.extend_from_slice(&request.to_le_bytes());
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&reached.to_le_bytes());
            out.extend_from_slice(&counted.to_le_bytes());
            out.extend_from_slice(&known.to_le_bytes());
            Ok(())
        }
        Frame::Refused { request, reason } => {
            out.extend_from_slice(&request.to_le_bytes());
            out.push(reason as u8);
            Ok(())
        }
        Frame::StatsQuery { query } => {
            out.extend_from_slice(&query.to_le_bytes());
            Ok(())
        }
        Frame::Stats { query, text } => {
            out.extend_from_slice(&query.to_le_bytes());
            put_bytes(out, text)
        }
        Frame::Welcome { epoch, last_seq } => {
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&last_seq.to_le_bytes());
            Ok(())
        }
        Frame::Floor { floor, channel } => {
            out.extend_from_slice(&floor.to_le_bytes());
            put_str(out, channel)
        }
        Frame::CountWaiters { request: a } | Frame::ChannelTotal { count: a } => {
            out.extend_from_slice(&a.to_le_bytes());
            Ok(())
        }
        Frame::Loaded { request, issued } => {
            out.extend_from_slice(&request.to_le_bytes());
            let (read, epoch, seq) = match issued {
                Issued::Unknown => (0u8, 0, 0),
                Issued::Upto { epoch, seq } => (1, epoch, seq),
            };
            out.push(read);
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            Ok(())
        }
        Frame::Load {
            request,
            client,
            channel,
        } => {
            out.extend_from_slice(&request.to_le_bytes());
            out.push(client as u8);
            put_str(out, channel)
        }
        Frame::Opened { channel } | Frame::Closed { channel } => put_str(out, channel),
        Frame::CountQuery { query: a, channel }
        | Frame::PublishCount {
            request: a,
            channel,
        } => {
            out.extend_from_slice(&a.to_le_bytes());
            put_str(out, channel)
        }
        Frame::Counted { query: a, count } => {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            Ok(())
        }
        Frame::WaiterCount {
            request,
            count,
            counted,
            known,
        } => {
            out.extend_from_slice(&request.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&counted.to_le_bytes());
            out.extend_from_slice(&known.to_le_bytes());
            Ok(())
        }
    };
    let len = out.len() - start - 4;
    match written {
        Ok(()) if len <= MAX_FRAME => {
            out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
            Ok(())
        }
        Ok(()) => {
            out.truncate(start);
            Err(FrameError::BadLength(
                u32::try_from(len).unwrap_or(u32::MAX),
            ))
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), FrameError> {
    let len = u16::try_from(s.len()).map_err(|_| FrameError::BadLength(s.len() as u32))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(b.len()).map_err(|_| FrameError::BadLength(u32::MAX))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// Takes one frame from the front of `bytes`: `Ok(None)` until a whole frame is there, then
/// the frame and how many bytes it used. A bad length is known from the first four bytes,
/// before its payload arrives, so a broken peer cannot make the reader buffer 4 GiB.
pub fn decode(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(len) = bytes.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(len.try_into().expect("four bytes"));
    if len == 0 || len as usize > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    let end = 4 + len as usize;
    let Some(body) = bytes.get(4..end) else {
        return Ok(None);
    };
    let kind = body[0];
    let mut fields = Fields {
        rest: &body[1..],
        kind,
    };
    let frame = match kind {
        kind::HELLO => Frame::Hello {
            worker: fields.u16()?,
            pid: fields.u32()?,
        },
        kind::PUBLISH => Frame::Publish {
            request: fields.u64()?,
            channel: fields.str()?,
            content_type: fields.str()?,
            body: fields.bytes()?,
        },
        kind::DELIVER => Frame::Deliver {
            delivery: fields.u64()?,
            epoch: fields.u32()?,
            seq: fields.u64()?,
            channel: fields.str()?,
            content_type: fields.str()?,
            body: fields.bytes()?,
        },
        kind::DELIVERED => Frame::Delivered {
            delivery: fields.u64()?,
            count: fields.u64()?,
        },
        kind::PUBLISHED => Frame::Published {
            request: fields.u64()?,
            epoch: fields.u32()?,
            seq: fields.u64()?,
            reached: fields.u64()?,
            counted: fields.u16()?,
            known: fields.u16()?,
        },
        kind::REFUSED => Frame::Refused {
            request: fields.u64()?,
            reason: match fields.u8()? {
                1 => RefuseReason::BadChannelName,
                2 => RefuseReason::TooManyChannels,
                3 => RefuseReason::RedisUnavailable,
                _ => return Err(FrameError::BadValue { kind }),
            },
        },
        kind::STATS_QUERY => Frame::StatsQuery {
            query: fields.u64()?,
        },
        kind::STATS => Frame::Stats {
            query: fields.u64()?,
            text: fields.bytes()?,
        },
        kind::WELCOME => Frame::Welcome {
            epoch: fields.u32()?,
            last_seq: fields.u64()?,
        },
        kind::FLOOR => Frame::Floor {
            floor: fields.u64()?,
            channel: fields.str()?,
        },
        kind::COUNT_WAITERS => Frame::CountWaiters {
            request: fields.u64()?,
        },
        kind::COUNT_QUERY => Frame::CountQuery {
            query: fields.u64()?,
            channel: fields.str()?,
        },
        kind::OPENED => Frame::Opened {
            channel: fields.str()?,
        },
        kind::CLOSED => Frame::Closed {
            channel: fields.str()?,
        },
        kind::CHANNEL_TOTAL => Frame::ChannelTotal {
            count: fields.u64()?,
        },
        kind::PUBLISH_COUNT => Frame::PublishCount {
            request: fields.u64()?,
            channel: fields.str()?,
        },
        kind::LOAD => Frame::Load {
            request: fields.u64()?,
            client: match fields.u8()? {
                1 => Position::Behind,
                2 => Position::Ahead,
                _ => return Err(FrameError::BadValue { kind }),
            },
            channel: fields.str()?,
        },
        kind::LOADED => Frame::Loaded {
            request: fields.u64()?,
            issued: match (fields.u8()?, fields.u32()?, fields.u64()?) {
                (0, 0, 0) => Issued::Unknown,
                (1, epoch, seq) => Issued::Upto { epoch, seq },
                _ => return Err(FrameError::BadValue { kind }),
            },
        },
        kind::COUNTED => Frame::Counted {
            query: fields.u64()?,
            count: fields.u64()?,
        },
        kind::WAITER_COUNT => Frame::WaiterCount {
            request: fields.u64()?,
            count: fields.u64()?,
            counted: fields.u16()?,
            known: fields.u16()?,
        },
        other => return Err(FrameError::UnknownKind(other)),
    };
    if !fields.rest.is_empty() {
        return Err(FrameError::TrailingBytes { kind });
    }
    Ok(Some((frame, end)))
}

/// A frame's payload being read field by field.
struct Fields<'a> {
    rest: &'a [u8],
    kind: u8,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError::Truncated { kind: self.kind });
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        self.array().map(u64::from_le_bytes)
    }

    fn str(&mut self) -> Result<&'a str, FrameError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8 { kind: self.kind })
    }

    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// Bytes read from a link, to be taken as frames. Consumed bytes are dropped lazily (when
/// more than half the buffer is consumed), so a burst of small frames costs no memmove each.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader::default()
    }

    /// Where the next read(2) may write: spare room at the end of the buffer, at least
    /// `min` bytes. Call [`FrameReader::filled`] with what the read wrote.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + min, 0);
        &mut self.buf[len..]
    }

    /// `n` bytes of the last [`FrameReader::spare`] were written; the rest is given back.
    pub fn filled(&mut self, spare: usize, n: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - spare + n.min(spare));
    }

    /// Appends bytes (for tests and callers that already hold them).
    pub fn extend(&mut self, bytes: &[u8]) {
        let spare = self.spare(bytes.len());
        spare.copy_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived. After an error the link must be dropped:
    /// where the next frame would start is unknown.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        match decode(&self.buf[self.start..])? {
            Some((frame, used)) => {
                self.start += used;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Bytes held and not yet taken as frames.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame<'static>> {
        vec![
            Frame::Hello {
                worker: 3,
                pid: 4242,
            },
            Frame::Publish {
                request: 7,
                channel: "news",
                content_type: "text/plain",
                body: b"hello\n",
            },
            Frame::Publish {
                request: u64::MAX,
                channel: "",
                content_type: "",
                body: b"",
            },
            Frame::Deliver {
                delivery: 9,
                epoch: 0x5f3a_09c1,
                seq: 42,
                channel: "default",
                content_type: "application/json",
                body: b"{\"a\":1}",
            },
            Frame::Delivered {
                delivery: 9,
                count: 10_000,
            },
            Frame::Published {
                request: 7,
                epoch: 1,
                seq: 2,
                reached: 3,
                counted: 2,
                known: 3,
            },
            Frame::Refused {
                request: 8,
                reason: RefuseReason::TooManyChannels,
            },
            Frame::Refused {
                request: 8,
                reason: RefuseReason::BadChannelName,
            },
            Frame::StatsQuery { query: 1 },
            Frame::CountWaiters { request: 3 },
            Frame::CountQuery {
                query: 4,
                channel: "",
            },
            Frame::CountQuery {
                query: 4,
                channel: "news",
            },
            Frame::PublishCount {
                request: 6,
                channel: "news",
            },
            Frame::Opened { channel: "a" },
            Frame::Closed { channel: "b" },
            Frame::Load {
                request: 9,
                client: Position::Behind,
                channel: "news",
            },
            Frame::Load {
                request: 10,
                client: Position::Ahead,
                channel: "news",
            },
            Frame::Loaded {
                request: 9,
                issued: Issued::Unknown,
            },
            Frame::Loaded {
                request: 10,
                issued: Issued::Upto {
                    epoch: 0x5f3a_09c1,
                    seq: 42,
                },
            },
            Frame::Loaded {
                request: 11,
                issued: Issued::Upto { epoch: 0, seq: 0 },
            },
            Frame::ChannelTotal { count: 3 },
            Frame::Counted { query: 4, count: 5 },
            Frame::WaiterCount {
                request: 3,
                count: 12,
                counted: 1,
                known: 2,
            },
            Frame::Welcome {
                epoch: 0xdead_beef,
                last_seq: 77,
            },
            Frame::Floor {
                floor: 70,
                channel: "news",
            },
            Frame::Stats {
                query: 1,
                text: b"miohttpd_accepts_total 5\n",
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        let mut out = Vec::new();
        for frame in samples() {
            out.clear();
            encode(&frame, &mut out).unwrap();
            let (decoded, used) = decode(&out).unwrap().unwrap();
            assert_eq!(decoded, frame);
            assert_eq!(used, out.len());
        }
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let mut stream = Vec::new();
        for frame in samples() {
            encode(&frame, &mut stream).unwrap();
        }
        for cut in 0..=stream.len() {
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                reader.extend(part);
                while let Some(frame) = reader.next_frame().unwrap() {
                    got.push(format!("{frame:?}"));
                }
            }
            let want: Vec<String> = samples().iter().map(|f| format!("{f:?}")).collect();
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(reader.pending(), 0);
        }
    }

    #[test]
    fn byte_by_byte_reads_work() {
        let mut stream = Vec::new();
        for frame in samples() {
            encode(&frame, &mut stream).unwrap();
        }
        let mut reader = FrameReader::new();
        let mut count = 0;
        for &b in &stream {
            let spare = reader.spare(1);
            spare[0] = b;
            reader.filled(1, 1);
            while reader.next_frame().unwrap().is_some() {
                count += 1;
            }
        }
        assert_eq!(count, samples().len());
    }

    #[test]
    fn malformed_input_is_an_error_value() {
        let cases: &[(&[u8], FrameError)] = &[
            (&[0, 0, 0, 0], FrameError::BadLength(0)),
            (&[0xff, 0xff, 0xff, 0xff], FrameError::BadLength(u32::MAX)),
            (&[1, 0, 0, 0, 99], FrameError::UnknownKind(99)),
            (&[1, 0, 0, 0, 0], FrameError::UnknownKind(0)),
            (&[2, 0, 0, 0, 1, 0], FrameError::Truncated { kind: 1 }),
            (
                &[8, 0, 0, 0, 1, 1, 0, 2, 0, 0, 0, 9],
                FrameError::TrailingBytes { kind: 1 },
            ),
            (
                &[10, 0, 0, 0, 6, 1, 0, 0, 0, 0, 0, 0, 0, 9],
                FrameError::BadValue { kind: 6 },
            ),
            // Load whose client position is neither behind (1) nor ahead (2).
            (
                &[12, 0, 0, 0, 19, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0],
                FrameError::BadValue { kind: 19 },
            ),
            // Publish whose channel claims 2 bytes that are not UTF-8.
            (
                &[
                    21, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0,
                    0,
                ],
                FrameError::NotUtf8 { kind: 2 },
            ),
            // Publish whose body length runs past the frame.
            (
                &[
                    17, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0,
                ],
                FrameError::Truncated { kind: 2 },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes).unwrap_err(), *want, "{bytes:?}");
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_its_payload() {
        let len = (MAX_FRAME as u32 + 1).to_le_bytes();
        assert_eq!(
            decode(&len).unwrap_err(),
            FrameError::BadLength(MAX_FRAME as u32 + 1)
        );
        let mut reader = FrameReader::new();
        reader.extend(&len);
        assert!(reader.next_frame().is_err());
    }

    #[test]
    fn an_unencodable_frame_leaves_the_buffer_as_it_was() {
        let long = "x".repeat(70_000);
        let mut out = vec![1, 2, 3];
        let frame = Frame::Publish {
            request: 1,
            channel: &long,
            content_type: "",
            body: b"",
        };
        assert!(encode(&frame, &mut out).is_err());
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn partial_frames_wait() {
        let mut out = Vec::new();
        encode(&Frame::StatsQuery { query: 5 }, &mut out).unwrap();
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]).unwrap(), None, "cut {cut}");
        }
    }
}
