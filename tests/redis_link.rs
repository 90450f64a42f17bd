//! The Redis link (`miohttpd::redis::link`) in a real `mio::Poll` against a real
//! `redis-server` the test starts, and against a fake Redis on a socket: cross-host delivery
//! with identical ids, Redis unreachable at start, killed and restarted, paused (SIGSTOP),
//! and malformed or oversized replies. The link must come back every time and never panic.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use common::redis::Redis;
use mio::{Events, Poll, Token};
use miohttpd::redis::bridge::Reach;
use miohttpd::redis::link::Link;
use miohttpd::redis::resp::Limits;
use miohttpd::redis::scripts::KeySpace;
use miohttpd::redis::session::{Event, Failure, LinkState, Publish, SessionConfig};

const PROBE: Duration = Duration::from_millis(200);
const REPLY_TIMEOUT: Duration = Duration::from_millis(300);

fn config(addr: SocketAddr, host: &str) -> SessionConfig {
    SessionConfig {
        addr,
        username: None,
        password: None,
        db: 0,
        keys: KeySpace::new("t"),
        host: host.into(),
        history: 16,
        key_ttl: Duration::ZERO,
        probe_interval: PROBE,
        reply_timeout: REPLY_TIMEOUT,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        limits: Limits::default(),
    }
}

/// Links in one poll, as hosts would each have theirs.
struct Hosts {
    poll: Poll,
    links: Vec<Link>,
    /// Every event each link produced, in order.
    seen: Vec<Vec<Event>>,
}

impl Hosts {
    fn new(addr: SocketAddr, count: usize) -> Hosts {
        let poll = Poll::new().unwrap();
        let now = Instant::now();
        let links = (0..count)
            .map(|i| {
                let tokens = [Token(2 * i), Token(2 * i + 1)];
                Link::new(
                    config(addr, &format!("host{i}")),
                    tokens,
                    poll.registry(),
                    now,
                )
            })
            .collect();
        Hosts {
            poll,
            links,
            seen: vec![Vec::new(); count],
        }
    }

    /// Runs the loop until `done` holds or `limit` passes; whether it held.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Hosts) -> bool) -> bool {
        let end = Instant::now() + limit;
        let mut events = Events::with_capacity(64);
        loop {
            self.collect();
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            let deadline = self.links.iter().map(Link::next_deadline).min().unwrap();
            let wait = deadline.saturating_duration_since(now).min(end - now);
            self.poll.poll(&mut events, Some(wait)).unwrap();
            let now = Instant::now();
            for event in events.iter() {
                for link in &mut self.links {
                    if link.owns(event.token()) {
                        link.ready(self.poll.registry(), event.token(), now);
                    }
                }
            }
            for link in &mut self.links {
                if link.next_deadline() <= now {
                    link.tick(self.poll.registry(), now);
                }
            }
        }
    }

    fn collect(&mut self) {
        for (link, seen) in self.links.iter_mut().zip(&mut self.seen) {
            seen.extend(std::iter::from_fn(|| link.poll_event()));
        }
    }

    fn all_up(&self) -> bool {
        self.links.iter().all(|l| l.state() == LinkState::Up)
    }

    fn publish(
        &mut self,
        host: usize,
        request: u64,
        channel: &str,
        body: &[u8],
    ) -> Result<(), Failure> {
        let registry = self.poll.registry();
        let message = Publish::new(channel, "text/plain", body);
        self.links[host].publish(registry, request, message, Instant::now())
    }

    fn logs(&self, host: usize) -> Vec<&str> {
        self.seen[host]
            .iter()
            .filter_map(|e| match e {
                Event::Log(line) => Some(line.as_str()),
                _ => None,
            })
            .collect()
    }

    fn published(
        &self,
        host: usize,
        request: u64,
    ) -> Option<&Result<miohttpd::redis::scripts::Published, Failure>> {
        self.seen[host].iter().find_map(|e| match e {
            Event::Published { request: r, result } if *r == request => Some(result),
            _ => None,
        })
    }
}

fn messages(seen: &[Event]) -> Vec<(String, u32, u64, Vec<u8>)> {
    seen.iter()
        .filter_map(|e| match e {
            Event::Message {
                channel,
                epoch,
                seq,
                body,
                ..
            } => Some((channel.clone(), *epoch, *seq, body.clone())),
            _ => None,
        })
        .collect()
}

const SECONDS_5: Duration = Duration::from_secs(5);

#[test]
fn a_publish_on_one_host_reaches_the_other_with_the_same_id() {
    let redis = Redis::start();
    let mut hosts = Hosts::new(redis.addr(), 2);
    assert!(hosts.run_until(SECONDS_5, Hosts::all_up), "links up");
    hosts.publish(0, 1, "news", b"first").unwrap();
    hosts.publish(1, 2, "news", b"second").unwrap();
    assert!(hosts.run_until(SECONDS_5, |h| {
        h.published(0, 1).is_some()
            && h.published(1, 2).is_some()
            && messages(&h.seen[0]).len() == 1
            && messages(&h.seen[1]).len() == 1
    }));
    let a = hosts.published(0, 1).unwrap().clone().unwrap();
    let b = hosts.published(1, 2).unwrap().clone().unwrap();
    assert_eq!(
        (a.epoch, b.epoch),
        (a.epoch, a.epoch),
        "one epoch per channel"
    );
    let mut seqs = [a.seq, b.seq];
    seqs.sort();
    assert_eq!(seqs, [1, 2], "one sequence, whoever publishes");
    assert_eq!(a.hosts, 2, "both hosts heartbeat");
    // Each host hears the other's message (not its own), under the id its publisher got.
    assert_eq!(
        messages(&hosts.seen[1]),
        [("news".into(), a.epoch, a.seq, b"first".to_vec())]
    );
    assert_eq!(
        messages(&hosts.seen[0]),
        [("news".into(), b.epoch, b.seq, b"second".to_vec())]
    );
}

#[test]
fn unreachable_at_start_logs_once_retries_and_comes_up() {
    // A port nobody listens on yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut hosts = Hosts::new(port, 1);
    assert_eq!(hosts.publish(0, 1, "c", b"x"), Err(Failure::Unavailable));
    hosts.run_until(Duration::from_millis(1500), |_| false);
    assert_eq!(hosts.links[0].state(), LinkState::Down);
    assert!(
        hosts.links[0].stats().failed_attempts >= 3,
        "{:?}",
        hosts.links[0].stats()
    );
    assert_eq!(
        hosts.logs(0).len(),
        1,
        "one line per outage: {:?}",
        hosts.logs(0)
    );

    let redis = Redis::start_on(port.port());
    assert!(
        hosts.run_until(SECONDS_5, Hosts::all_up),
        "up once redis is there"
    );
    assert!(hosts.logs(0)[1].contains("up again"), "{:?}", hosts.logs(0));
    hosts.publish(0, 2, "c", b"x").unwrap();
    assert!(hosts.run_until(SECONDS_5, |h| h.published(0, 2).is_some()));
    assert!(hosts.published(0, 2).unwrap().is_ok());
    drop(redis);
}

#[test]
fn redis_killed_and_restarted_without_its_data_gives_a_new_epoch() {
    let mut redis = Redis::start();
    let mut hosts = Hosts::new(redis.addr(), 2);
    assert!(hosts.run_until(SECONDS_5, Hosts::all_up));
    hosts.publish(0, 1, "c", b"before").unwrap();
    assert!(hosts.run_until(SECONDS_5, |h| {
        messages(&h.seen[1]).len() == 1 && h.published(0, 1).is_some()
    }));
    let before = hosts.published(0, 1).unwrap().clone().unwrap();

    redis.kill();
    assert!(hosts.run_until(SECONDS_5, |h| h
        .links
        .iter()
        .all(|l| l.state() != LinkState::Up)));
    assert!(hosts.seen[1].contains(&Event::Down));
    assert_eq!(
        hosts.publish(0, 2, "c", b"refused"),
        Err(Failure::Unavailable)
    );
    redis.restart();
    assert!(hosts.run_until(SECONDS_5, Hosts::all_up));
    assert_eq!(
        hosts.seen[1].iter().filter(|e| **e == Event::Up).count(),
        2,
        "Up again: catch up"
    );

    hosts.publish(0, 3, "c", b"after").unwrap();
    assert!(hosts.run_until(SECONDS_5, |h| {
        messages(&h.seen[1]).len() == 2 && h.published(0, 3).is_some()
    }));
    let after = hosts.published(0, 3).unwrap().clone().unwrap();
    assert!(
        after.fresh && after.seq == 1 && after.epoch != before.epoch,
        "{after:?}"
    );
}

#[test]
fn redis_restarted_with_its_data_keeps_the_sequence() {
    let mut redis = Redis::start();
    let mut hosts = Hosts::new(redis.addr(), 1);
    assert!(hosts.run_until(SECONDS_5, Hosts::all_up));
    hosts.publish(0, 1, "c", b"one").unwrap();
    assert!(hosts.run_until(SECONDS_5, |h| h.published(0, 1).is_some()));
    let before = hosts.published(0, 1).unwrap().clone().unwrap();
    assert_eq!(
        redis.client().cmd(&["SAVE"]),
        miohttpd::redis::resp::Value::Simple(b"OK".to_vec())
    );
    redis.kill();
    redis.restart();
    assert!(hosts.run_until(SECONDS_5, |h| h.seen[0]
        .iter()
        .filter(|e| **e == Event::Up)
        .count()
        == 2));
    hosts.publish(0, 2, "c", b"two").unwrap();
    assert!(hosts.run_until(SECONDS_5, |h| h.published(0, 2).is_some()));
    let after = hosts.published(0, 2).unwrap().clone().unwrap();
    assert_eq!(
        (after.epoch, after.seq, after.fresh),
        (before.epoch, 2, false)
    );
}

#[test]
fn a_paused_redis_is_detected_within_the_probe_bound_and_the_link_rebuilt() {
    let redis = Redis::start();
    let mut hosts = Hosts::new(redis.addr(), 1);
    assert!(hosts.run_until(SECONDS_5, Hosts::all_up));
    redis.pause();
    let paused = Instant::now();
    // Bound: a probe at most PROBE away, its reply overdue REPLY_TIMEOUT later; the margin is
    // for a loaded machine, the assertion is that it happens, not how fast.
    assert!(hosts.run_until(SECONDS_5, |h| h.links[0].state() != LinkState::Up));
    let detected = paused.elapsed();
    assert!(
        detected < PROBE + REPLY_TIMEOUT + Duration::from_secs(2),
        "{detected:?}"
    );
    assert!(hosts.logs(0)[0].contains("overdue"), "{:?}", hosts.logs(0));
    // Attempts against a paused Redis connect (the kernel accepts) but never finish.
    hosts.run_until(Duration::from_millis(800), |_| false);
    assert_ne!(hosts.links[0].state(), LinkState::Up);
    redis.resume();
    assert!(hosts.run_until(SECONDS_5, Hosts::all_up));
}

/// A fake Redis: accepts connections and answers each with `reply` after reading a little.
fn fake_redis(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(reply);
                // Hold the connection open: the link must notice the garbage, not an EOF.
                let _ = stream.read(&mut buf);
            });
        }
    });
    addr
}

#[test]
fn malformed_truncated_or_oversized_replies_are_errors_and_reconnects() {
    let cases: &[(&[u8], &str)] = &[
        (b"!garbage\r\n", "unknown RESP type"),
        (b"$999999999999\r\n", "bulk string too long"),
        (b"*99999999\r\n", "array too long"),
        (b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n", "nested too deep"),
        (b":12a\r\n", "malformed number"),
        // Truncated: half a reply, then silence.
        (b"$10\r\nabc", "no answer to the handshake"),
        // A well-formed reply of the wrong kind.
        (b":1\r\n:1\r\n:1\r\n:1\r\n:1\r\n", "unexpected reply"),
    ];
    for (reply, reason) in cases {
        let addr = fake_redis(reply);
        let mut hosts = Hosts::new(addr, 1);
        assert!(
            hosts.run_until(SECONDS_5, |h| h.links[0].stats().failed_attempts >= 2),
            "{reason}: retries"
        );
        let logs = hosts.logs(0);
        assert_eq!(logs.len(), 1, "{reason}: {logs:?}");
        assert!(logs[0].contains(reason), "{reason}: {logs:?}");
        assert_ne!(hosts.links[0].state(), LinkState::Up);
    }
}

#[test]
fn a_publish_counts_every_host_that_answers_within_the_bound() {
    use miohttpd::redis::counts::{count_payload, Counts, MessageKey};
    let redis = Redis::start();
    let mut hosts = Hosts::new(redis.addr(), 3);
    assert!(hosts.run_until(SECONDS_5, Hosts::all_up));
    // Up means counted: the first heartbeat is part of the handshake.

    let bound = Duration::from_millis(500);
    let mut counts = Counts::new(bound);
    let mut answered = 0;
    // Round one: hosts 1 and 2 answer with 10 and 20 waiters; round two: host 2 is silent.
    for (request, silent) in [(1, None), (2, Some(2))] {
        hosts.publish(0, request, "c", b"x").unwrap();
        let started = Instant::now();
        let mut tally = None;
        hosts.run_until(SECONDS_5, |h| {
            h.published(0, request).is_some() && messages(&h.seen[1]).len() == request as usize
        });
        let published = hosts.published(0, request).unwrap().clone().unwrap();
        assert_eq!(published.hosts, 3);
        let key = MessageKey {
            channel: "c".into(),
            epoch: published.epoch,
            seq: published.seq,
        };
        assert_eq!(
            counts.published(request, key.clone(), 5, published.hosts, started),
            None
        );
        for other in [1, 2] {
            if Some(other) == silent {
                continue;
            }
            let payload = count_payload(&key, &format!("host{other}"), 10 * other as u64);
            let registry = hosts.poll.registry();
            hosts.links[other].reply_to_host(registry, "host0", &payload, Instant::now());
        }
        while tally.is_none() && started.elapsed() < SECONDS_5 {
            hosts.run_until(Duration::from_millis(20), |_| false);
            for event in hosts.seen[0].drain(..) {
                if let Event::HostReply(payload) = event {
                    tally = tally.or(counts.reply(&payload));
                }
            }
            let mut done = Vec::new();
            counts.expire(Instant::now(), &mut done);
            tally = tally.or(done.pop());
        }
        let tally = tally.expect("a tally within the bound");
        answered += 1;
        match silent {
            None => assert_eq!((tally.reached, tally.hosts_header()), (35, "3/3".into())),
            Some(_) => {
                assert_eq!((tally.reached, tally.hosts_header()), (15, "2/3".into()));
                assert!(started.elapsed() >= bound, "left out only after the bound");
            }
        }
    }
    assert_eq!(answered, 2);
}

/// A TCP proxy to Redis that a test can cut (every connection through it closed, new ones
/// closed at once) and heal: one host losing Redis while the others keep it.
struct Proxy {
    addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn to(upstream: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut2, open2) = (cut.clone(), open.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if cut2.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A local registry for the bridge tests: what was delivered, newest id per channel (a
/// message already held is not delivered twice, as the real registry does).
#[derive(Default)]
struct Registry {
    delivered: Vec<(String, u32, u64, Vec<u8>)>,
    newest: Vec<(String, Option<(u32, u64)>)>,
    resynced: Vec<String>,
}

impl miohttpd::redis::bridge::LocalChannels for Registry {
    fn deliver(
        &mut self,
        channel: &str,
        epoch: u32,
        seq: u64,
        content_type: &str,
        body: &[u8],
        _ticket: u64,
        _count: Option<miohttpd::redis::bridge::CountOf<'_>>,
    ) -> Reach {
        assert_eq!(content_type, "text/plain", "the content type crosses hosts");
        let held = self.newest.iter_mut().find(|(c, _)| c == channel);
        match held {
            Some((_, Some(newest))) if *newest >= (epoch, seq) => return Reach::Now(0),
            Some((_, newest)) => *newest = Some((epoch, seq)),
            None => self.newest.push((channel.into(), Some((epoch, seq)))),
        }
        self.delivered
            .push((channel.into(), epoch, seq, body.to_vec()));
        Reach::Now(1)
    }
    fn count_waiters(&mut self, _channel: &str, _ticket: u64, _question: (&str, u64)) -> Reach {
        Reach::Now(0)
    }
    fn resync(&mut self, channel: &str) {
        self.resynced.push(channel.into());
        // The history is dropped: the next message, of a new epoch, is taken whatever its id.
        for (c, newest) in &mut self.newest {
            if c == channel {
                *newest = None;
            }
        }
    }
    fn newest_ids(&self) -> Vec<(String, Option<(u32, u64)>)> {
        self.newest.clone()
    }
}

/// Hosts with their bridges and registries, in one poll.
struct Site {
    poll: Poll,
    links: Vec<Link>,
    bridges: Vec<miohttpd::redis::bridge::Bridge>,
    registries: Vec<Registry>,
    outcomes: Vec<Vec<miohttpd::redis::bridge::Outcome>>,
}

impl Site {
    fn new(addrs: &[SocketAddr], count_bound: Duration) -> Site {
        let poll = Poll::new().unwrap();
        let now = Instant::now();
        let links = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let tokens = [Token(2 * i), Token(2 * i + 1)];
                Link::new(
                    config(*addr, &format!("host{i}")),
                    tokens,
                    poll.registry(),
                    now,
                )
            })
            .collect();
        let bridges = (0..addrs.len())
            .map(|i| miohttpd::redis::bridge::Bridge::new(format!("host{i}"), count_bound))
            .collect();
        Site {
            poll,
            links,
            bridges,
            registries: addrs.iter().map(|_| Registry::default()).collect(),
            outcomes: addrs.iter().map(|_| Vec::new()).collect(),
        }
    }

    fn run_until(&mut self, mut done: impl FnMut(&Site) -> bool) -> bool {
        use miohttpd::redis::link::Linked;
        let end = Instant::now() + SECONDS_5;
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            for i in 0..self.links.len() {
                while let Some(event) = self.links[i].poll_event() {
                    let mut linked = Linked {
                        link: &mut self.links[i],
                        registry: self.poll.registry(),
                    };
                    let (registry, outcomes) = (&mut self.registries[i], &mut self.outcomes[i]);
                    self.bridges[i].on_event(event, registry, &mut linked, now, outcomes);
                }
                self.bridges[i].tick(now, &mut self.outcomes[i]);
            }
            if done(self) {
                return true;
            }
            if now >= end {
                return false;
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(20)))
                .unwrap();
            let now = Instant::now();
            for event in events.iter() {
                for link in &mut self.links {
                    if link.owns(event.token()) {
                        link.ready(self.poll.registry(), event.token(), now);
                    }
                }
            }
            for link in &mut self.links {
                if link.next_deadline() <= now {
                    link.tick(self.poll.registry(), now);
                }
            }
        }
    }

    fn publish(&mut self, host: usize, request: u64, body: &[u8]) -> Result<(), Failure> {
        let mut linked = miohttpd::redis::link::Linked {
            link: &mut self.links[host],
            registry: self.poll.registry(),
        };
        let message = Publish::new("c", "text/plain", body);
        self.bridges[host].publish(&mut linked, request, message, Instant::now())
    }

    /// The id and tally host `host` answered request `request` with.
    fn answer(&self, host: usize, request: u64) -> Option<(u32, u64, String)> {
        self.outcomes[host].iter().find_map(|o| match o {
            miohttpd::redis::bridge::Outcome::Published { epoch, seq, tally }
                if tally.request == request =>
            {
                Some((*epoch, *seq, tally.hosts_header()))
            }
            _ => None,
        })
    }
}

#[test]
fn a_host_cut_off_from_redis_catches_up_on_every_message_it_missed() {
    let redis = Redis::start();
    let proxy = Proxy::to(redis.addr());
    // Host 0 reaches Redis directly, host 1 through the proxy.
    let mut site = Site::new(&[redis.addr(), proxy.addr], Duration::from_millis(300));
    assert!(site.run_until(|s| s.links.iter().all(|l| l.state() == LinkState::Up)));

    site.publish(0, 1, b"one").unwrap();
    assert!(site.run_until(|s| s.answer(0, 1).is_some() && s.registries[1].delivered.len() == 1));
    let (epoch, seq, hosts) = site.answer(0, 1).unwrap();
    assert_eq!(hosts, "2/2", "host 1 counted back");
    assert_eq!(
        site.registries[1].delivered,
        [("c".into(), epoch, seq, b"one".to_vec())]
    );

    proxy.cut();
    assert!(site.run_until(|s| s.links[1].state() != LinkState::Up));
    for (request, body) in [(2, "two"), (3, "three")] {
        site.publish(0, request, body.as_bytes()).unwrap();
        assert!(site.run_until(|s| s.answer(0, request).is_some()));
        // Host 1 is still in the live set (its heartbeat has not expired) but cannot
        // answer: left out after the bound, and the answer says so.
        assert_eq!(site.answer(0, request).unwrap().2, "1/2");
    }
    assert_eq!(
        site.registries[1].delivered.len(),
        1,
        "cut off: nothing new"
    );

    proxy.heal();
    assert!(site.run_until(|s| s.registries[1].delivered.len() == 3));
    let want: Vec<(String, u32, u64, Vec<u8>)> = [(1, "one"), (2, "two"), (3, "three")]
        .iter()
        .map(|(request, body)| {
            let (epoch, seq, _) = site.answer(0, *request).unwrap();
            ("c".to_string(), epoch, seq, body.as_bytes().to_vec())
        })
        .collect();
    assert_eq!(
        site.registries[1].delivered, want,
        "the same ids, in order, nothing lost"
    );
    assert!(site.registries[1].resynced.is_empty());
    assert_eq!(
        site.registries[0].delivered, want,
        "the publisher's own copy"
    );
}

#[test]
fn when_redis_lost_the_data_every_host_holding_the_channel_resyncs() {
    let mut redis = Redis::start();
    let mut site = Site::new(&[redis.addr(), redis.addr()], Duration::from_millis(300));
    assert!(site.run_until(|s| s.links.iter().all(|l| l.state() == LinkState::Up)));
    site.publish(0, 1, b"one").unwrap();
    assert!(site.run_until(|s| s.answer(0, 1).is_some() && s.registries[1].delivered.len() == 1));

    redis.kill();
    assert!(site.run_until(|s| s.links.iter().all(|l| l.state() != LinkState::Up)));
    assert_eq!(site.publish(0, 2, b"refused"), Err(Failure::Unavailable));
    redis.restart(); // without its data: nothing was saved
    assert!(site.run_until(|s| s.registries.iter().all(|r| r.resynced == ["c"])));

    // The next publish starts a new epoch, which every host takes.
    site.publish(1, 3, b"after").unwrap();
    assert!(site.run_until(|s| s.answer(1, 3).is_some() && s.registries[0].delivered.len() == 2));
    let (epoch, seq, _) = site.answer(1, 3).unwrap();
    assert_eq!(seq, 1);
    assert_ne!(epoch, site.registries[0].delivered[0].1);
    assert_eq!(
        site.registries[0].delivered[1],
        ("c".into(), epoch, 1, b"after".to_vec())
    );
}
