//! What miohttpd keeps in Redis and the Lua scripts that change it atomically: the publish
//! (next id, append to the history stream, fan-out to every host in one step), the catch-up
//! read (epoch, sequence and the entries after an id, in one consistent view) and the host
//! heartbeat. Commands are encoded here and replies parsed here, as pure code; the key space
//! is written down in docs/comet.md ("Across hosts: Redis").
//!
//! Keys, for prefix `P` and channel `C` (the braces are literal: a Redis Cluster hash tag, so
//! a channel's keys share a slot when channels are one day sharded):
//! - `P:{C}:meta`: hash `epoch` (decimal u32), `seq` (last sequence number given out);
//! - `P:{C}:stream`: the history, stream entry id `EPOCH-SEQ` (epoch as decimal), fields
//!   `d` (the body) and `t` (its content type);
//! - `P:hosts`: sorted set of live host ids, scored by the Redis time (ms) they expire at;
//! - pub/sub channel `P:bus`: every message of every channel (one subscription per host);
//! - pub/sub channel `P:host:ID`: replies addressed to one host (delivery counts).

use super::resp::{encode_command, Value};

/// The atomic publish. KEYS: meta, stream, hosts. ARGV: history length, body, bus channel,
/// channel name, origin host id, key TTL in ms (0: none), content type. Returns
/// `{epoch, seq, fresh, hosts}`: `fresh` is 1 when the channel was (re)made with a new epoch
/// because its meta was missing, `hosts` the live hosts (this one included) at that moment.
pub const PUBLISH: &str = r#"
local meta, stream, hosts = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', meta, 'epoch')
local fresh = 0
if not epoch then
  -- Redis never had the channel, or lost it: a new epoch, so ids handed out before can
  -- never be mistaken for the new ones (clients holding one get the resync signal).
  epoch = string.format('%d', now % 4294967296)
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
  fresh = 1
end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
local id = epoch .. '-' .. seq
redis.call('XADD', stream, 'MAXLEN', ARGV[1], id, 'd', ARGV[2], 't', ARGV[7])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', stream, ttl)
end
redis.call('PUBLISH', ARGV[3],
  ARGV[5] .. '\n' .. ARGV[4] .. '\n' .. id .. '\n' .. ARGV[7] .. '\n' .. ARGV[2])
local live = redis.call('ZCOUNT', hosts, now, '+inf')
return {tonumber(epoch), seq, fresh, live}
"#;

/// The catch-up read. KEYS: meta, stream. ARGV: the epoch and sequence of the last id the
/// client has (empty: none, give all), and optionally a fence: a pub/sub channel and a
/// payload published in the same atomic step, so a host that reads for itself knows when
/// every bus message published before the read has reached it (the fence comes after them on
/// its subscriber connection). Returns `{epoch, seq, entries}` with epoch 0 and no
/// entries when Redis has no such channel; entries are `[id, [field, value, ...]]`.
pub const HISTORY: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
if ARGV[3] and ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {0, 0, {}} end
local seq = redis.call('HGET', meta, 'seq')
local from = '-'
if ARGV[1] == epoch then from = '(' .. epoch .. '-' .. ARGV[2] end
return {tonumber(epoch), tonumber(seq), redis.call('XRANGE', stream, from, '+')}
"#;

/// The heartbeat. KEYS: hosts. ARGV: host id, TTL in ms. Marks the host live until Redis time
/// + TTL, drops hosts whose mark expired, returns the live count.
pub const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"#;

/// Which script a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Publish,
    History,
    Heartbeat,
}

impl Script {
    pub const ALL: [Script; 3] = [Script::Publish, Script::History, Script::Heartbeat];

    pub fn source(self) -> &'static str {
        match self {
            Script::Publish => PUBLISH,
            Script::History => HISTORY,
            Script::Heartbeat => HEARTBEAT,
        }
    }
}

/// How a script is invoked: by the SHA1 `SCRIPT LOAD` returned (the usual case: a few bytes
/// instead of the source), or with its source after Redis answered NOSCRIPT (a restarted or
/// flushed Redis; EVAL also caches it again).
#[derive(Debug, Clone, Copy)]
pub enum Invoke<'a> {
    Sha(&'a [u8]),
    Source,
}

/// The key space of one `--redis-prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> KeySpace {
        KeySpace {
            prefix: prefix.to_owned(),
        }
    }

    pub fn meta(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:meta", self.prefix)
    }

    pub fn stream(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:stream", self.prefix)
    }

    pub fn hosts(&self) -> String {
        format!("{}:hosts", self.prefix)
    }

    /// The pub/sub channel every message goes out on.
    pub fn bus(&self) -> String {
        format!("{}:bus", self.prefix)
    }

    /// The pub/sub channel of replies addressed to one host.
    pub fn host_channel(&self, host: &str) -> String {
        format!("{}:host:{host}", self.prefix)
    }
}

fn eval(out: &mut Vec<u8>, script: Script, how: Invoke<'_>, keys: &[&[u8]], args: &[&[u8]]) {
    let numkeys = keys.len().to_string();
    let (verb, first): (&[u8], &[u8]) = match how {
        Invoke::Sha(sha) => (b"EVALSHA", sha),
        Invoke::Source => (b"EVAL", script.source().as_bytes()),
    };
    let mut all: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
    all.extend([verb, first, numkeys.as_bytes()]);
    all.extend_from_slice(keys);
    all.extend_from_slice(args);
    encode_command(out, &all);
}

/// What a publish needs besides its channel and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishParams {
    /// Entries kept per stream (`--comet-history`).
    pub history: usize,
    /// This host's id, so it can tell its own messages on the bus.
    pub host: String,
    /// Expiry of a channel's keys after its last publish, in ms (0: never).
    pub key_ttl_ms: u64,
}

/// A content type as the bus carries it: one line (a header value never holds a newline,
/// but the bus format depends on it, so it is checked here rather than trusted).
fn one_line(content_type: &str) -> &str {
    if content_type.contains(['\n', '\r']) {
        "application/octet-stream"
    } else {
        content_type
    }
}

/// `answers`: the number of the `GET /notify` count (the `0-N` of its `?waiters` question)
/// whose result this message is: every host reaches the waiters it set aside for that count
/// (the bus origin becomes `HOST/N`).
#[allow(clippy::too_many_arguments)]
pub fn encode_publish(
    out: &mut Vec<u8>,
    how: Invoke<'_>,
    keys: &KeySpace,
    params: &PublishParams,
    channel: &str,
    content_type: &str,
    body: &[u8],
    answers: Option<u64>,
) {
    let (meta, stream, hosts, bus) = (
        keys.meta(channel),
        keys.stream(channel),
        keys.hosts(),
        keys.bus(),
    );
    let history = params.history.max(1).to_string();
    let ttl = params.key_ttl_ms.to_string();
    let tagged;
    let origin = match answers {
        Some(question) => {
            tagged = format!("{}/{question}", params.host);
            &tagged
        }
        None => &params.host,
    };
    eval(
        out,
        Script::Publish,
        how,
        &[meta.as_bytes(), stream.as_bytes(), hosts.as_bytes()],
        &[
            history.as_bytes(),
            body,
            bus.as_bytes(),
            channel.as_bytes(),
            origin.as_bytes(),
            ttl.as_bytes(),
            one_line(content_type).as_bytes(),
        ],
    );
}

/// `after`: the epoch and sequence of the last message the client has, if any; `fence`: the
/// pub/sub channel and payload the read publishes as it runs.
pub fn encode_history(
    out: &mut Vec<u8>,
    how: Invoke<'_>,
    keys: &KeySpace,
    channel: &str,
    after: Option<(u32, u64)>,
    fence: Option<(&str, &[u8])>,
) {
    let (meta, stream) = (keys.meta(channel), keys.stream(channel));
    let (epoch, seq) = match after {
        Some((epoch, seq)) => (epoch.to_string(), seq.to_string()),
        None => (String::new(), String::new()),
    };
    eval(
        out,
        Script::History,
        how,
        &[meta.as_bytes(), stream.as_bytes()],
        &match fence {
            Some((to, payload)) => vec![epoch.as_bytes(), seq.as_bytes(), to.as_bytes(), payload],
            None => vec![epoch.as_bytes(), seq.as_bytes()],
        },
    );
}

pub fn encode_heartbeat(
    out: &mut Vec<u8>,
    how: Invoke<'_>,
    keys: &KeySpace,
    host: &str,
    ttl_ms: u64,
) {
    let hosts = keys.hosts();
    let ttl = ttl_ms.to_string();
    eval(
        out,
        Script::Heartbeat,
        how,
        &[hosts.as_bytes()],
        &[host.as_bytes(), ttl.as_bytes()],
    );
}

/// A reply that is not what the script returns: Redis and this code disagree, so the
/// connection is rebuilt rather than trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected(pub &'static str);

/// The publish script's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub epoch: u32,
    pub seq: u64,
    /// The channel was (re)made with a new epoch.
    pub fresh: bool,
    /// Live hosts, this one included.
    pub hosts: u64,
}

pub fn parse_published(value: &Value) -> Result<Published, Unexpected> {
    let Value::Array(items) = value else {
        return Err(Unexpected("publish reply is not an array"));
    };
    let [epoch, seq, fresh, hosts] = items.as_slice() else {
        return Err(Unexpected("publish reply is not 4 items"));
    };
    let number = |v: &Value| v.as_integer().filter(|n| *n >= 0);
    Ok(Published {
        epoch: number(epoch)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(Unexpected("publish epoch"))?,
        seq: number(seq).ok_or(Unexpected("publish seq"))? as u64,
        fresh: number(fresh).ok_or(Unexpected("publish fresh"))? == 1,
        hosts: number(hosts).ok_or(Unexpected("publish hosts"))? as u64,
    })
}

/// One message read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub epoch: u32,
    pub seq: u64,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The catch-up script's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The channel's epoch in Redis; `None` when Redis has no such channel.
    pub epoch: Option<u32>,
    /// The last sequence number given out in that epoch.
    pub last_seq: u64,
    /// The entries after the asked-for id (all of them for another epoch or no id), oldest
    /// first: the stream keeps the last `--comet-history` only.
    pub entries: Vec<Entry>,
}

pub fn parse_history(value: &Value) -> Result<History, Unexpected> {
    let Value::Array(items) = value else {
        return Err(Unexpected("history reply is not an array"));
    };
    let [epoch, seq, entries] = items.as_slice() else {
        return Err(Unexpected("history reply is not 3 items"));
    };
    let epoch = epoch
        .as_integer()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(Unexpected("history epoch"))?;
    let last_seq = seq
        .as_integer()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(Unexpected("history seq"))?;
    let Value::Array(entries) = entries else {
        return Err(Unexpected("history entries"));
    };
    let entries = entries
        .iter()
        .map(parse_entry)
        .collect::<Result<Vec<Entry>, Unexpected>>()?;
    Ok(History {
        epoch: (epoch != 0 || last_seq != 0).then_some(epoch),
        last_seq,
        entries,
    })
}

fn parse_entry(value: &Value) -> Result<Entry, Unexpected> {
    let Value::Array(pair) = value else {
        return Err(Unexpected("stream entry"));
    };
    let [id, fields] = pair.as_slice() else {
        return Err(Unexpected("stream entry"));
    };
    let (epoch, seq) = id
        .as_bytes()
        .and_then(parse_stream_id)
        .ok_or(Unexpected("stream entry id"))?;
    let Value::Array(fields) = fields else {
        return Err(Unexpected("stream entry fields"));
    };
    let field = |name: &[u8]| {
        fields.chunks(2).find_map(|kv| match kv {
            [Value::Bulk(k), Value::Bulk(v)] if k == name => Some(v.clone()),
            _ => None,
        })
    };
    let body = field(b"d").ok_or(Unexpected("stream entry without its body"))?;
    let content_type = field(b"t")
        .and_then(|t| String::from_utf8(t).ok())
        .ok_or(Unexpected("stream entry without its content type"))?;
    Ok(Entry {
        epoch,
        seq,
        content_type,
        body,
    })
}

/// `EPOCH-SEQ`, both decimal (a stream id is `MS-SEQ`; the epoch stands in the MS place).
pub fn parse_stream_id(id: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(id).ok()?;
    let (epoch, seq) = text.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(epoch) || !digits(seq) {
        return None;
    }
    Some((epoch.parse().ok()?, seq.parse().ok()?))
}

/// A message as it crosses the bus: `ORIGIN\nCHANNEL\nEPOCH-SEQ\nCONTENT-TYPE\nBODY` (the
/// publish script writes it; channel names, host ids and content types hold no newline, the
/// body may). `ORIGIN` is the publishing host's id, or `HOST/N` for the message of that
/// host's `GET /notify` count `N` (host ids are hex, so never hold a `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage<'a> {
    pub origin: &'a str,
    /// The count `N` whose result this message is.
    pub answers: Option<u64>,
    pub channel: &'a str,
    pub epoch: u32,
    pub seq: u64,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// `HOST` or `HOST/N`.
fn parse_origin(line: &str) -> Option<(&str, Option<u64>)> {
    let Some((host, question)) = line.split_once('/') else {
        return Some((line, None));
    };
    if question.is_empty() || !question.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((host, Some(question.parse().ok()?)))
}

pub fn parse_bus_message(payload: &[u8]) -> Option<BusMessage<'_>> {
    let mut parts = payload.splitn(5, |&b| b == b'\n');
    let (origin, answers) = parse_origin(std::str::from_utf8(parts.next()?).ok()?)?;
    let channel = std::str::from_utf8(parts.next()?).ok()?;
    let (epoch, seq) = parse_stream_id(parts.next()?)?;
    let content_type = std::str::from_utf8(parts.next()?).ok()?;
    let body = parts.next()?;
    Some(BusMessage {
        origin,
        answers,
        channel,
        epoch,
        seq,
        content_type,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_hash_tag() {
        let keys = KeySpace::new("miohttpd");
        assert_eq!(keys.meta("news"), "miohttpd:{news}:meta");
        assert_eq!(keys.stream("news"), "miohttpd:{news}:stream");
        assert_eq!(keys.bus(), "miohttpd:bus");
        assert_eq!(keys.host_channel("ab12"), "miohttpd:host:ab12");
    }

    #[test]
    fn publish_is_evalsha_with_three_keys_then_eval_after_noscript() {
        let keys = KeySpace::new("p");
        let params = PublishParams {
            history: 16,
            host: "h1".into(),
            key_ttl_ms: 0,
        };
        let mut out = Vec::new();
        encode_publish(
            &mut out,
            Invoke::Sha(b"abc"),
            &keys,
            &params,
            "c",
            "text/plain",
            b"hi\n",
            None,
        );
        let mut decoder = super::super::resp::Decoder::new(Default::default());
        // A command is an array of bulk strings, which the reply decoder reads as well.
        decoder.feed(&out);
        let bulks = |v: Value| match v {
            Value::Array(items) => items
                .into_iter()
                .map(|i| String::from_utf8(i.as_bytes().unwrap().to_vec()).unwrap())
                .collect::<Vec<_>>(),
            _ => panic!(),
        };
        assert_eq!(
            bulks(decoder.next().unwrap().unwrap()),
            [
                "EVALSHA",
                "abc",
                "3",
                "p:{c}:meta",
                "p:{c}:stream",
                "p:hosts",
                "16",
                "hi\n",
                "p:bus",
                "c",
                "h1",
                "0",
                "text/plain"
            ]
        );
        out.clear();
        encode_publish(
            &mut out,
            Invoke::Source,
            &keys,
            &params,
            "c",
            "a\nb",
            b"",
            Some(12),
        );
        decoder.feed(&out);
        let eval = bulks(decoder.next().unwrap().unwrap());
        assert_eq!((eval[0].as_str(), eval[1].as_str()), ("EVAL", PUBLISH));
        assert_eq!(
            eval[12], "application/octet-stream",
            "a newline never reaches the bus"
        );
        assert_eq!(eval[10], "h1/12", "a count's message names the count");
    }

    #[test]
    fn replies_parse_or_are_refused() {
        let int = Value::Integer;
        let bulk = |s: &str| Value::Bulk(s.as_bytes().to_vec());
        assert_eq!(
            parse_published(&Value::Array(vec![int(7), int(3), int(1), int(2)])),
            Ok(Published {
                epoch: 7,
                seq: 3,
                fresh: true,
                hosts: 2
            })
        );
        for bad in [
            Value::Nil,
            Value::Array(vec![int(7), int(3), int(1)]),
            Value::Array(vec![int(-7), int(3), int(1), int(2)]),
            Value::Array(vec![int(1 << 40), int(3), int(1), int(2)]),
        ] {
            assert!(parse_published(&bad).is_err(), "{bad:?}");
        }
        let entry = |id: &str, body: &str| {
            let fields = vec![bulk("d"), bulk(body), bulk("t"), bulk("text/plain")];
            Value::Array(vec![bulk(id), Value::Array(fields)])
        };
        assert_eq!(
            parse_history(&Value::Array(vec![
                int(9),
                int(5),
                Value::Array(vec![entry("9-4", "a"), entry("9-5", "b\nc")])
            ])),
            Ok(History {
                epoch: Some(9),
                last_seq: 5,
                entries: vec![
                    Entry {
                        epoch: 9,
                        seq: 4,
                        content_type: "text/plain".into(),
                        body: b"a".to_vec()
                    },
                    Entry {
                        epoch: 9,
                        seq: 5,
                        content_type: "text/plain".into(),
                        body: b"b\nc".to_vec()
                    },
                ]
            })
        );
        assert_eq!(
            parse_history(&Value::Array(vec![int(0), int(0), Value::Array(vec![])]))
                .map(|h| h.epoch),
            Ok(None)
        );
        for bad in [
            Value::Array(vec![int(9), int(5), Value::Array(vec![entry("9-x", "a")])]),
            Value::Array(vec![int(9), int(5), Value::Array(vec![bulk("9-1")])]),
            Value::Array(vec![
                int(9),
                int(5),
                Value::Array(vec![Value::Array(vec![
                    bulk("9-1"),
                    Value::Array(vec![bulk("d"), bulk("no type")]),
                ])]),
            ]),
            Value::Array(vec![int(9), int(5)]),
        ] {
            assert!(parse_history(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bus_messages_keep_newlines_in_the_body() {
        assert_eq!(
            parse_bus_message(b"h1\nnews\n42-7\ntext/plain\nline 1\nline 2\n"),
            Some(BusMessage {
                origin: "h1",
                answers: None,
                channel: "news",
                epoch: 42,
                seq: 7,
                content_type: "text/plain",
                body: b"line 1\nline 2\n"
            })
        );
        assert_eq!(
            parse_bus_message(b"h1/99\nnews\n42-8\ntext/plain\n3").map(|m| (m.origin, m.answers)),
            Some(("h1", Some(99))),
            "the message of h1's count 99"
        );
        for bad in [
            &b"h1\nnews\n42-7"[..],
            b"h1/\nnews\n42-7\ntext/plain\nx",
            b"h1/x\nnews\n42-7\ntext/plain\nx",
            b"h1/-1\nnews\n42-7\ntext/plain\nx",
            b"h1/99999999999999999999999\nnews\n42-7\ntext/plain\nx",
            b"h1\nnews\n42-7\ntext/plain",
            b"h1\nnews\n42\nx",
            b"h1\nnews\n-7\nx",
            b"",
        ] {
            assert_eq!(parse_bus_message(bad), None, "{bad:?}");
        }
    }
}
