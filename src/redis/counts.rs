//! Counting every host's waiters for one publish (docs/comet.md, "Counting every host's
//! waiters"): the publishing host knows from the publish script how many hosts are live; each
//! other host, having delivered the message, sends its count to the publisher's reply channel;
//! the publisher answers when all have counted or when the bound passes, and says how many
//! hosts it counted of how many it knows. Pure bookkeeping with a clock passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The id of a message: the channel and its `EPOCH-SEQ`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub channel: String,
    pub epoch: u32,
    pub seq: u64,
}

/// The answer a publisher gives once counting is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The publisher's own request.
    pub request: u64,
    /// Connections reached, summed over the hosts counted.
    pub reached: u64,
    /// Hosts whose count is in `reached`, the publisher included.
    pub counted: u64,
    /// Hosts live when the message was published.
    pub known: u64,
}

impl Tally {
    /// The value of the `X-Comet-Hosts` header: `counted/known`.
    pub fn hosts_header(&self) -> String {
        format!("{}/{}", self.counted, self.known)
    }
}

#[derive(Debug)]
struct Counting {
    tally: Tally,
    heard: Vec<String>,
    deadline: Instant,
}

/// The publishes of this host still waiting for other hosts' counts.
#[derive(Debug)]
pub struct Counts {
    bound: Duration,
    waiting: HashMap<MessageKey, Counting>,
}

impl Counts {
    /// `bound`: how long a publisher waits for the other hosts.
    pub fn new(bound: Duration) -> Counts {
        Counts {
            bound,
            waiting: HashMap::new(),
        }
    }

    /// A publish of this host came back from Redis with `key`, `known` live hosts, and reached
    /// `local` connections here. The tally at once when no other host is known.
    pub fn published(
        &mut self,
        request: u64,
        key: MessageKey,
        local: u64,
        known: u64,
        now: Instant,
    ) -> Option<Tally> {
        let tally = Tally {
            request,
            reached: local,
            counted: 1,
            // This host may not be in the set yet (its first heartbeat is in flight).
            known: known.max(1),
        };
        if tally.counted >= tally.known {
            return Some(tally);
        }
        self.waiting.insert(
            key,
            Counting {
                tally,
                heard: Vec::new(),
                deadline: now + self.bound,
            },
        );
        None
    }

    /// A payload on this host's reply channel; the tally when it was the last count awaited.
    /// Payloads that are not counts, or count a message no longer awaited (too late, or
    /// twice from one host), are ignored.
    pub fn reply(&mut self, payload: &[u8]) -> Option<Tally> {
        let (key, host, reached) = parse_count(payload)?;
        let counting = self.waiting.get_mut(&key)?;
        if counting.heard.contains(&host) {
            return None;
        }
        counting.heard.push(host);
        counting.tally.reached += reached;
        counting.tally.counted += 1;
        if counting.tally.counted < counting.tally.known {
            return None;
        }
        self.waiting.remove(&key).map(|c| c.tally)
    }

    /// Whether `payload` counts a message still awaited (a count may come from another host
    /// before this host has its own, when that is counted later: the caller keeps it).
    pub fn awaits(&self, payload: &[u8]) -> bool {
        parse_count(payload).is_some_and(|(key, _, _)| self.waiting.contains_key(&key))
    }

    /// Tallies whose bound has passed, counted as far as they got.
    pub fn expire(&mut self, now: Instant, done: &mut Vec<Tally>) {
        self.waiting.retain(|_, counting| {
            if now < counting.deadline {
                return true;
            }
            done.push(counting.tally);
            false
        });
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().map(|c| c.deadline).min()
    }

    /// The link went down: every publish waiting answers with what it has.
    pub fn flush(&mut self, done: &mut Vec<Tally>) {
        done.extend(self.waiting.drain().map(|(_, c)| c.tally));
    }
}

/// What a host sends the publisher after delivering its message: `count CHANNEL EPOCH-SEQ
/// HOST N`.
pub fn count_payload(key: &MessageKey, host: &str, reached: u64) -> Vec<u8> {
    format!(
        "count {} {}-{} {host} {reached}",
        key.channel, key.epoch, key.seq
    )
    .into_bytes()
}

fn parse_count(payload: &[u8]) -> Option<(MessageKey, String, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    if words.next()? != "count" {
        return None;
    }
    let channel = words.next()?.to_owned();
    let (epoch, seq) = super::scripts::parse_stream_id(words.next()?.as_bytes())?;
    let host = words.next()?.to_owned();
    let reached = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some((
        MessageKey {
            channel,
            epoch,
            seq,
        },
        host,
        reached,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> MessageKey {
        MessageKey {
            channel: "news".into(),
            epoch: 7,
            seq,
        }
    }

    #[test]
    fn alone_the_tally_is_immediate() {
        let mut counts = Counts::new(Duration::from_millis(500));
        let t = Instant::now();
        let tally = counts.published(1, key(1), 5, 1, t).unwrap();
        assert_eq!((tally.reached, tally.hosts_header()), (5, "1/1".into()));
        assert_eq!(counts.published(2, key(2), 0, 0, t).unwrap().known, 1);
        assert_eq!(counts.next_deadline(), None);
    }

    #[test]
    fn every_host_counted_answers_at_once_and_a_silent_one_is_left_out() {
        let mut counts = Counts::new(Duration::from_millis(500));
        let t = Instant::now();
        assert_eq!(counts.published(1, key(1), 5, 3, t), None);
        assert_eq!(counts.reply(&count_payload(&key(1), "b", 10)), None);
        assert_eq!(
            counts.reply(&count_payload(&key(1), "b", 10)),
            None,
            "once per host"
        );
        assert_eq!(counts.reply(b"count news 7-9 c 1"), None, "another message");
        assert_eq!(counts.reply(b"nonsense"), None);
        let tally = counts.reply(&count_payload(&key(1), "c", 100)).unwrap();
        assert_eq!(
            (tally.request, tally.reached, tally.hosts_header()),
            (1, 115, "3/3".into())
        );
        assert_eq!(
            counts.reply(&count_payload(&key(1), "d", 1)),
            None,
            "too late"
        );

        assert_eq!(counts.published(2, key(2), 5, 3, t), None);
        counts.reply(&count_payload(&key(2), "b", 10));
        let mut done = Vec::new();
        counts.expire(t + Duration::from_millis(499), &mut done);
        assert!(done.is_empty());
        assert_eq!(counts.next_deadline(), Some(t + Duration::from_millis(500)));
        counts.expire(t + Duration::from_millis(500), &mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].reached, done[0].hosts_header()),
            (15, "2/3".into())
        );
    }

    #[test]
    fn counts_parse_strictly() {
        for bad in [
            &b"count news 7-1 b"[..],
            b"count news 7-1 b x",
            b"count news 7-1 b 1 extra",
            b"count news x-1 b 1",
            b"tally news 7-1 b 1",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_count(&count_payload(&key(3), "h", 42)),
            Some((key(3), "h".into(), 42))
        );
    }
}
