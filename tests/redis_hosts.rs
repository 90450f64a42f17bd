//! Comet across hosts (`--redis`): two or three server processes on different ports, one real
//! `redis-server` (tests/common/redis.rs), checked from outside: a notify on one host reaches
//! waiters and subscribers on every host under one id, its `n` counts every host and
//! `X-Comet-Hosts` says how many were counted of how many known (`GET /` too), catch-up works on another
//! host with the same ids, a publish while Redis is down is refused, waiters stay parked
//! through a Redis restart and get what was published meanwhile, the admin token still
//! guards publishes.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::redis::{Client, Redis};
use common::{Conn, Response, Server};
use miohttpd::redis::resp::Value;
use miohttpd::redis::scripts::{encode_publish, parse_published, Invoke, KeySpace, PublishParams};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A host: a server on its own port with `--redis`, and its admin address for `/metrics`.
struct Host {
    server: Server,
    admin: SocketAddr,
}

impl Host {
    fn start(redis: &Redis, extra: &[&str]) -> Host {
        let url = redis.url();
        let mut args = vec!["--redis", &url, "--admin-listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let server = Server::start_with(&args);
        let admin = server.admin_addr();
        Host { server, admin }
    }

    fn metrics(&self) -> String {
        let mut conn = Conn::connect(self.admin);
        conn.send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        response.text().to_string()
    }

    fn link_is(&self, state: &str) -> bool {
        self.metrics()
            .contains(&format!("miohttpd_redis_link_state{{state=\"{state}\"}} 1"))
    }

    /// Polls `/metrics` until the link is in `state`.
    fn await_link(&self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.link_is(state) {
            assert!(
                Instant::now() < deadline,
                "the link never got {state}:\n{}",
                self.metrics()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/metrics` until the link is not up (down, or trying to connect again).
    fn await_not_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.link_is("up") {
            assert!(Instant::now() < deadline, "the link stayed up");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Parked waiters on every host (`GET /`).
    fn parked(&self) -> u64 {
        let response = self.server.request(&get("/"));
        assert_eq!(response.status, 200, "{response:?}");
        response.text().parse().expect("GET / is a number")
    }

    fn await_parked(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.parked() != n {
            assert!(Instant::now() < deadline, "never {n} parked");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A long-poll sent, not yet answered.
    fn wait(&self, path: &str) -> Conn {
        let mut conn = self.server.connect();
        conn.send(&get(path));
        conn
    }

    fn notify(&self, channel: &str, body: &str) -> Response {
        self.server.request(&notify_request(channel, body, None))
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

fn notify_request(channel: &str, body: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST /notify/{channel} HTTP/1.1\r\nHost: localhost\r\n{auth}\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Every host's link up, and every host in the others' count of live hosts (its first
/// heartbeat has run: it runs when the link comes up).
fn await_all_up(hosts: &[&Host]) {
    for host in hosts {
        host.await_link("up");
    }
}

fn id_of(response: &Response) -> String {
    response
        .header("x-comet-id")
        .unwrap_or_else(|| panic!("no X-Comet-Id: {response:?}"))
        .to_string()
}

#[test]
fn a_notify_on_one_host_reaches_every_host_under_one_id_and_counts_them_all() {
    let redis = Redis::start();
    let a = Host::start(&redis, &[]);
    let b = Host::start(&redis, &["--workers", "2"]);
    let c = Host::start(&redis, &[]);
    await_all_up(&[&a, &b, &c]);

    let mut waiters = vec![a.wait("/wait/news"), c.wait("/wait/news")];
    for _ in 0..3 {
        waiters.push(b.wait("/wait/news"));
    }
    // `GET /` on any host counts every host's parked waiters, and says how many hosts.
    for host in [&a, &b, &c] {
        host.await_parked(5);
        let response = host.server.request(&get("/"));
        assert_eq!(
            response.header("x-comet-hosts"),
            Some("3/3"),
            "{response:?}"
        );
    }

    let answer = a.notify("news", "hello");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.text(), "5", "every host's waiters: {answer:?}");
    assert_eq!(answer.header("x-comet-hosts"), Some("3/3"), "{answer:?}");
    let id = id_of(&answer);
    for waiter in &mut waiters {
        let got = waiter.read_response();
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.text(), "hello");
        assert_eq!(
            got.header("x-comet-id"),
            Some(id.as_str()),
            "one id everywhere"
        );
    }

    // A second publish from another host continues the same sequence.
    let again = b.notify("news", "again");
    assert_eq!(again.header("x-comet-hosts"), Some("3/3"), "{again:?}");
    let (epoch, seq) = id.split_once('-').unwrap();
    let next = format!("{epoch}-{}", seq.parse::<u64>().unwrap() + 1);
    assert_eq!(id_of(&again), next);
    assert_eq!(again.text(), "0", "nobody parked now");
}

#[test]
fn get_notify_publishes_every_hosts_count_and_answers_the_same_number() {
    let redis = Redis::start();
    let a = Host::start(&redis, &[]);
    let b = Host::start(&redis, &["--workers", "2"]);
    let c = Host::start(&redis, &[]);
    await_all_up(&[&a, &b, &c]);

    let mut waiters = vec![b.wait("/wait/tally"), c.wait("/wait/tally")];
    for _ in 0..3 {
        waiters.push(a.wait("/wait/tally"));
    }
    a.await_parked(5);
    // The body every waiter gets is the number of clients counted on every host, and the
    // notifier's answer is that same number.
    let answer = a.server.request(&get("/notify/tally"));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.text(), "5", "{answer:?}");
    assert_eq!(answer.header("x-comet-hosts"), Some("3/3"), "{answer:?}");
    let id = id_of(&answer);
    for waiter in &mut waiters {
        let got = waiter.read_response();
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!((got.text(), id_of(&got)), ("5", id.clone()));
    }
    // Nobody left: the count and the answer are 0 on every host.
    let answer = b.server.request(&get("/notify/tally"));
    assert_eq!((answer.status, answer.text()), (200, "0"), "{answer:?}");
}

#[test]
fn catch_up_and_event_streams_agree_on_every_host() {
    let redis = Redis::start();
    let a = Host::start(&redis, &[]);
    let b = Host::start(&redis, &["--workers", "2"]);
    await_all_up(&[&a, &b]);

    // An event stream on B, live.
    let mut stream = b.server.connect();
    stream.send(&get("/events/feed"));
    let head = stream.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    b.await_link("up");

    let ids: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|body| {
            let answer = a.notify("feed", body);
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(answer.header("x-comet-hosts"), Some("2/2"), "{answer:?}");
            id_of(&answer)
        })
        .collect();
    for (id, body) in ids.iter().zip(["one", "two", "three"]) {
        let event = String::from_utf8(stream.read_through(b"\n\n")).unwrap();
        assert!(
            event.contains(&format!("id: {id}\n")) && event.contains(&format!("data: {body}\n")),
            "{event:?}"
        );
    }

    // `?after=` on the other host: the next message, with its id.
    let got = b
        .server
        .request(&get(&format!("/wait/feed?after={}", ids[0])));
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!((got.text(), id_of(&got)), ("two", ids[1].clone()));
    // And on the publisher's own host, the same.
    let got = a
        .server
        .request(&get(&format!("/wait/feed?after={}", ids[1])));
    assert_eq!((got.text(), id_of(&got)), ("three", ids[2].clone()));

    // Last-Event-ID on the other host replays what followed.
    let mut resumed = b.server.connect();
    resumed.send(
        format!(
            "GET /events/feed HTTP/1.1\r\nHost: localhost\r\nLast-Event-ID: {}\r\n\r\n",
            ids[0]
        )
        .as_bytes(),
    );
    assert_eq!(resumed.read_head_response().status, 200);
    for (id, body) in ids[1..].iter().zip(["two", "three"]) {
        let event = String::from_utf8(resumed.read_through(b"\n\n")).unwrap();
        assert!(
            event.contains(&format!("id: {id}\n")) && event.contains(&format!("data: {body}\n")),
            "{event:?}"
        );
    }
}

#[test]
fn a_publish_while_redis_is_down_is_refused_and_the_host_serves_on() {
    let mut redis = Redis::start();
    let a = Host::start(&redis, &[]);
    a.await_link("up");
    redis.kill();
    a.await_not_up();
    let answer = a.notify("news", "lost?");
    assert_eq!(answer.status, 503, "never numbered here alone: {answer:?}");
    assert!(answer.header("retry-after").is_some(), "{answer:?}");
    a.server.assert_still_serves();
    let metrics = a.metrics();
    assert!(metrics.contains("miohttpd_redis_outages 1\n"), "{metrics}");
    // The link's syscalls are counted by the calls that make them.
    for kind in ["connect", "read", "write"] {
        let sample = format!("miohttpd_redis_syscalls_total{{kind=\"{kind}\"}} ");
        let value: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(sample.as_str()))
            .unwrap_or_else(|| panic!("no {sample}: {metrics}"))
            .parse()
            .unwrap();
        assert!(value > 0, "{sample}{value}");
    }
    // Back: publishes go through again.
    redis.restart();
    a.await_link("up");
    let answer = a.notify("news", "now");
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// Publishes on `channel` straight into Redis as another host would (the publish script),
/// while the hosts under test may not be subscribed yet.
fn publish_as_another_host(client: &mut Client, channel: &str, body: &str) -> String {
    let mut out = Vec::new();
    let params = PublishParams {
        history: 16,
        host: "elsewhere".into(),
        key_ttl_ms: 0,
    };
    let keys = KeySpace::new("miohttpd");
    encode_publish(
        &mut out,
        Invoke::Source,
        &keys,
        &params,
        channel,
        "text/plain",
        body.as_bytes(),
        None,
    );
    let mut decoder = miohttpd::redis::resp::Decoder::new(Default::default());
    decoder.feed(&out);
    let Some(Value::Array(items)) = decoder.next().unwrap() else {
        panic!("a command is an array")
    };
    let args: Vec<&[u8]> = items.iter().map(|v| v.as_bytes().unwrap()).collect();
    let reply = client.command(&args);
    let published = parse_published(&reply).unwrap_or_else(|e| panic!("{e:?}: {reply:?}"));
    format!("{:08x}-{}", published.epoch, published.seq)
}

#[test]
fn waiters_stay_parked_through_a_redis_restart_and_get_what_they_missed() {
    for keep_data in [false, true] {
        let mut redis = Redis::start();
        let a = Host::start(&redis, &[]);
        let b = Host::start(&redis, &["--workers", "2"]);
        await_all_up(&[&a, &b]);
        // The channel has a history on B before the outage.
        let first = a.notify("room", "before");
        assert_eq!(first.status, 200, "{first:?}");
        let mut waiter = b.wait("/wait/room");
        b.await_parked(1);

        if keep_data {
            redis.client().cmd(&["SAVE"]);
        }
        redis.kill();
        b.await_not_up();
        // Long enough for the back-off to grow past the restart below, so the message is
        // published before B has subscribed again (and is found by its catch-up read).
        thread::sleep(Duration::from_millis(1500));
        assert_eq!(b.parked(), 1, "still parked through the outage");
        redis.restart();
        let id = publish_as_another_host(&mut redis.client(), "room", "missed");
        a.server.assert_still_serves();

        let got = waiter.read_response();
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.text(), "missed", "keep data: {keep_data}");
        assert_eq!(id_of(&got), id, "Redis's id, keep data: {keep_data}");
        b.await_link("up");
        // With the data kept the epoch is the same; without, Redis made a new one.
        assert_eq!(
            id.split('-').next() == id_of(&first).split('-').next(),
            keep_data,
            "{id} after {}",
            id_of(&first)
        );
        // A client catching up from before the outage: what followed when Redis kept it,
        // the resync signal (not silence) when Redis lost it.
        let got = b
            .server
            .request(&get(&format!("/wait/room?after={}", id_of(&first))));
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(
            got.header("x-comet-resync").is_some(),
            !keep_data,
            "keep data: {keep_data}: {got:?}"
        );
        if keep_data {
            assert_eq!((got.text(), id_of(&got)), ("missed", id.clone()));
        }
    }
}

#[test]
fn the_admin_token_still_guards_publishes_across_hosts() {
    let redis = Redis::start();
    let a = Host::start(&redis, &["--admin-token", TOKEN]);
    let b = Host::start(&redis, &[]);
    await_all_up(&[&a, &b]);
    let mut waiter = b.wait("/wait/guarded");
    b.await_parked(1);
    let refused = a
        .server
        .request(&notify_request("guarded", "no", Some("wrong")));
    assert_eq!(refused.status, 401, "{refused:?}");
    let answer = a
        .server
        .request(&notify_request("guarded", "yes", Some(TOKEN)));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.text(), "1");
    let got = waiter.read_response();
    assert_eq!(got.text(), "yes", "only the authorized publish got through");
}

#[test]
fn a_host_started_later_serves_the_first_catch_up_of_a_channel_from_redis() {
    let redis = Redis::start();
    let a = Host::start(&redis, &["--comet-history", "2"]);
    a.await_link("up");
    let publish = |channel: &str| -> Vec<String> {
        ["one", "two", "three", "four"]
            .iter()
            .map(|body| id_of(&a.notify(channel, body)))
            .collect()
    };
    let (late, events, trimmed) = (publish("late"), publish("late-events"), publish("trimmed"));
    // B starts after those publishes: it never saw them on the bus, and has no history of
    // these channels until a client asks; that first client waits for B's read of Redis.
    let b = Host::start(&redis, &["--workers", "2", "--comet-history", "2"]);
    b.await_link("up");

    let got = b
        .server
        .request(&get(&format!("/wait/late?after={}", late[2])));
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.header("x-comet-resync"), None, "{got:?}");
    assert_eq!((got.text(), id_of(&got)), ("four", late[3].clone()));

    let mut resumed = b.server.connect();
    resumed.send(
        format!(
            "GET /events/late-events HTTP/1.1\r\nHost: localhost\r\nLast-Event-ID: {}\r\n\r\n",
            events[1]
        )
        .as_bytes(),
    );
    assert_eq!(resumed.read_head_response().status, 200);
    for (id, body) in events[2..].iter().zip(["three", "four"]) {
        let event = String::from_utf8(resumed.read_through(b"\n\n")).unwrap();
        assert!(
            !event.contains("resync")
                && event.contains(&format!("id: {id}\n"))
                && event.contains(&format!("data: {body}\n")),
            "{event:?}"
        );
    }

    // Older than Redis keeps (`--comet-history 2`): the resync signal, the same answer on
    // both hosts.
    let path = format!("/wait/trimmed?after={}", trimmed[0]);
    let (on_a, on_b) = (a.server.request(&get(&path)), b.server.request(&get(&path)));
    for got in [&on_a, &on_b] {
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.header("x-comet-resync"), Some("true"), "{got:?}");
        assert_eq!((got.text(), id_of(got)), ("three", trimmed[2].clone()));
    }
}

#[test]
fn a_catch_up_from_before_a_hosts_copy_of_a_channel_is_served_from_redis() {
    let redis = Redis::start();
    let a = Host::start(&redis, &[]);
    a.await_link("up");
    let mut ids: Vec<String> = ["one", "two"]
        .iter()
        .map(|body| id_of(&a.notify("mid", body)))
        .collect();
    let b = Host::start(&redis, &["--workers", "2"]);
    b.await_link("up");
    // B's copy of the channel begins with this message, from the bus: older ones are only
    // in Redis.
    let mut stream = b.server.connect();
    stream.send(&get("/events/mid"));
    assert_eq!(stream.read_head_response().status, 200);
    ids.push(id_of(&a.notify("mid", "three")));
    let event = String::from_utf8(stream.read_through(b"\n\n")).unwrap();
    assert!(event.contains(&format!("id: {}\n", ids[2])), "{event:?}");

    let got = b
        .server
        .request(&get(&format!("/wait/mid?after={}", ids[0])));
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.header("x-comet-resync"), None, "{got:?}");
    assert_eq!((got.text(), id_of(&got)), ("two", ids[1].clone()));
    // The live subscriber was not sent the older message.
    let got = b
        .server
        .request(&get(&format!("/wait/mid?after={}", ids[1])));
    assert_eq!((got.text(), id_of(&got)), ("three", ids[2].clone()));
    a.notify("mid", "four");
    let event = String::from_utf8(stream.read_through(b"\n\n")).unwrap();
    assert!(event.contains("data: four\n"), "{event:?}");
}

#[test]
fn a_host_starts_without_redis_serves_and_joins_when_redis_comes() {
    // A port with nothing on it yet: Redis is started there later.
    let mut redis = Redis::start();
    redis.kill();
    let a = Host::start(&redis, &[]);
    a.server.assert_still_serves();
    assert!(!a.link_is("up"), "{}", a.metrics());
    let answer = a.notify("news", "early");
    assert_eq!(answer.status, 503, "{answer:?}");
    thread::sleep(Duration::from_millis(500));
    // One line for the outage, not one per attempt.
    let log = a.server.stderr();
    assert!(
        log.matches("redis").count() <= 3,
        "one line per outage:\n{log}"
    );
    redis.restart();
    a.await_link("up");
    let answer = a.notify("news", "now");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-comet-hosts"), Some("1/1"), "{answer:?}");
}

#[test]
fn a_stalled_redis_takes_the_link_down_within_the_bound_and_it_comes_back() {
    let redis = Redis::start();
    let a = Host::start(
        &redis,
        &["--redis-probe", "200ms", "--redis-timeout", "500ms"],
    );
    a.await_link("up");
    redis.pause();
    // Probe + timeout is 0.7 s; the poll in await_link allows far more on a loaded machine.
    a.await_not_up();
    let answer = a.notify("news", "stalled");
    assert_eq!(answer.status, 503, "{answer:?}");
    redis.resume();
    a.await_link("up");
    assert_eq!(a.notify("news", "back").status, 200);
}

/// Long-poll waiters parked on this host alone (its `/metrics`, the sum over its workers):
/// unlike `GET /`, it asks no other host.
fn parked_here(host: &Host) -> u64 {
    let metrics = host.metrics();
    let total = metrics
        .lines()
        .find_map(|line| line.strip_prefix("miohttpd_parked_waiters "))
        .unwrap_or_else(|| panic!("no parked waiters gauge:\n{metrics}"));
    total.parse().expect("a number")
}

fn await_parked_here(host: &Host, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while parked_here(host) != n {
        assert!(Instant::now() < deadline, "never {n} parked here");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The payload of the next pub/sub message a subscribed client reads that `wanted` accepts.
fn next_message(client: &mut Client, wanted: impl Fn(&str) -> bool) -> String {
    loop {
        let Value::Array(items) = client.read() else {
            panic!("not a pub/sub message")
        };
        let payload = items.last().and_then(|v| v.as_bytes()).unwrap_or_default();
        let payload = String::from_utf8_lossy(payload).into_owned();
        if wanted(&payload) {
            return payload;
        }
    }
}

#[test]
fn get_notify_across_hosts_answers_exactly_the_waiters_it_counted() {
    let redis = Redis::start();
    let a = Host::start(&redis, &[]);
    let b = Host::start(&redis, &["--workers", "2"]);
    await_all_up(&[&a, &b]);
    // The test is a third host that is slow to count: the count stays open until it
    // answers, and the test parks waiters meanwhile.
    let mut redis_admin = redis.client();
    let far = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 600_000;
    redis_admin.cmd(&["ZADD", "miohttpd:hosts", &far.to_string(), "slowhost"]);
    // A knows three hosts once a heartbeat has counted them.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !a.metrics().contains("\nmiohttpd_redis_hosts 3\n") {
        assert!(
            Instant::now() < deadline,
            "the slow host never counted as live"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut bus = redis.client();
    bus.cmd(&["SUBSCRIBE", "miohttpd:bus"]);
    let mut replies = redis.client();
    replies.cmd(&["PSUBSCRIBE", "miohttpd:host:*"]);

    let mut counted = vec![a.wait("/wait/exact"), b.wait("/wait/exact")];
    await_parked_here(&a, 1);
    await_parked_here(&b, 1);
    let mut notifier = a.server.connect();
    notifier.send(&get("/notify/exact"));
    // A counted its own waiter before asking the others; the question names the count.
    let question = next_message(&mut bus, |p| {
        p.ends_with("\n?waiters\n") || p.contains("\n?waiters\n") && p.ends_with("\nexact")
    });
    let mut lines = question.split('\n');
    let asker = lines.next().unwrap().to_string();
    let number = lines.nth(1).unwrap().to_string(); // `0-N`
                                                    // B counted its waiter (its answer reaches A's reply channel).
    let b_counted = next_message(&mut replies, |p| {
        p.starts_with(&format!("count ?waiters {number} "))
    });
    assert!(b_counted.ends_with(" 1"), "{b_counted}");
    // Waiters that park after their host counted are not in the number: the message is not
    // theirs, and they wait for the next one (as on one host).
    let mut late = vec![a.wait("/wait/exact"), b.wait("/wait/exact")];
    await_parked_here(&a, 2);
    await_parked_here(&b, 2);
    let count = format!("count ?waiters {number} slowhost 0");
    redis_admin.cmd(&["PUBLISH", &format!("miohttpd:host:{asker}"), &count]);

    let answer = notifier.read_response();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.text(), "2", "the two counted: {answer:?}");
    assert_eq!(answer.header("x-comet-hosts"), Some("3/3"), "{answer:?}");
    let id = id_of(&answer);
    for waiter in &mut counted {
        let got = waiter.read_response();
        assert_eq!((got.text(), id_of(&got)), ("2", id.clone()), "{got:?}");
    }
    await_parked_here(&a, 1);
    await_parked_here(&b, 1);
    // The next message is the late waiters' first.
    let next = b.notify("exact", "next");
    assert_eq!(next.status, 200, "{next:?}");
    for waiter in &mut late {
        let got = waiter.read_response();
        assert_eq!((got.status, got.text()), (200, "next"), "{got:?}");
    }
}

/// The channel's epoch in Redis (`HGET P:{C}:meta epoch`), as ids write it (hex).
fn epoch_of(client: &mut Client, channel: &str) -> u32 {
    let reply = client.cmd(&["HGET", &format!("miohttpd:{{{channel}}}:meta"), "epoch"]);
    let text = reply.as_bytes().map(String::from_utf8_lossy);
    text.and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no epoch for {channel}: {reply:?}"))
}

/// Gives the next id on `channel` in Redis as the publish script does (`HINCRBY seq`),
/// without telling any host on the bus; with `body`, the message also joins the stream
/// (`XADD`). Returns the seq.
fn number_unannounced(client: &mut Client, channel: &str, body: Option<&str>) -> u64 {
    let meta = format!("miohttpd:{{{channel}}}:meta");
    let reply = client.cmd(&["HINCRBY", &meta, "seq", "1"]);
    let seq = reply.as_integer().unwrap_or_else(|| panic!("{reply:?}")) as u64;
    if let Some(body) = body {
        add_to_stream(client, channel, seq, body);
    }
    seq
}

fn add_to_stream(client: &mut Client, channel: &str, seq: u64, body: &str) {
    let epoch = epoch_of(client, channel);
    let stream = format!("miohttpd:{{{channel}}}:stream");
    let id = format!("{epoch}-{seq}");
    let reply = client.cmd(&["XADD", &stream, &id, "d", body, "t", "text/plain"]);
    assert!(reply.as_bytes().is_some(), "{reply:?}");
}

/// The bus message of `seq` on `channel`, sent now (late) as another host's.
fn announce_late(client: &mut Client, channel: &str, seq: u64, body: &str) {
    let epoch = epoch_of(client, channel);
    let message = format!("elsewhere\n{channel}\n{epoch}-{seq}\ntext/plain\n{body}");
    let reply = client.cmd(&["PUBLISH", "miohttpd:bus", &message]);
    assert!(reply.as_integer().is_some_and(|n| n >= 1), "{reply:?}");
}

/// An event stream on `host` resuming after `last` (Last-Event-ID), its head read: it is
/// subscribed.
fn resume(host: &Host, channel: &str, last: &str) -> Conn {
    let mut conn = host.server.connect();
    conn.send(
        format!(
            "GET /events/{channel} HTTP/1.1\r\nHost: localhost\r\nLast-Event-ID: {last}\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = conn.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    conn
}

/// The next event of an event stream (chunk framing and all), as text.
fn next_event(conn: &mut Conn) -> String {
    String::from_utf8(conn.read_through(b"\n\n")).unwrap()
}

fn assert_event(event: &str, id: &str, body: &str) {
    assert!(
        event.contains(&format!("id: {id}\n"))
            && event.contains(&format!("data: {body}\n"))
            && !event.contains("resync"),
        "want {id} {body:?}, got {event:?}"
    );
}

#[test]
fn a_client_resuming_on_a_host_before_that_host_had_its_message_gets_no_duplicate_and_no_resync() {
    let redis = Redis::start();
    let a = Host::start(&redis, &[]);
    let b = Host::start(&redis, &["--workers", "2"]);
    await_all_up(&[&a, &b]);
    let mut redis_client = redis.client();
    // The channel's first message, published on A; a subscriber on B resumes after it
    // (B has it from the bus, or reads it from Redis: either way it is not resent) and
    // stays for every message to come. (It does not subscribe before the first publish:
    // opening a channel new to B reads it from Redis, and that read racing the bus is
    // another matter.)
    let first = a.notify("room", "one");
    assert_eq!(first.status, 200, "{first:?}");
    let mut live = resume(&b, "room", &id_of(&first));
    let epoch = epoch_of(&mut redis_client, "room");
    let id = |seq: u64| format!("{epoch:08x}-{seq}");

    // 1. Message 2 is in Redis, and B missed it on the bus: a client that read it on
    // another host resumes on B. B reads Redis, so it holds 2 and owes the client nothing.
    let two = number_unannounced(&mut redis_client, "room", Some("two"));
    let mut stream = resume(&b, "room", &id(two));
    let mut waiter = b.wait(&format!("/wait/room?after={}", id(two)));
    b.await_parked(1);
    // The bus message comes late: held already, it goes to no one again.
    announce_late(&mut redis_client, "room", two, "two");
    let three = a.notify("room", "three");
    assert_eq!(id_of(&three), id(3), "{three:?}");
    // Exactly 3 next: no resync, and not 2 again (it would come before 3).
    assert_event(&next_event(&mut stream), &id(3), "three");
    let got = waiter.read_response();
    assert_eq!((got.status, got.text(), id_of(&got)), (200, "three", id(3)));
    assert_eq!(got.header("x-comet-resync"), None, "{got:?}");
    // The live subscriber got 2 once (from B's read of Redis, as news), then 3.
    assert_event(&next_event(&mut live), &id(2), "two");
    assert_event(&next_event(&mut live), &id(3), "three");

    // 2. Redis numbered 4 but B cannot read it yet (it stands for a bus message B has not
    // had and a read that stopped short of it): a client resuming at 4 parks, and when 4
    // comes it is passed over for that client (and goes to the others).
    let four = number_unannounced(&mut redis_client, "room", None);
    let mut stream = resume(&b, "room", &id(four));
    let mut waiter = b.wait(&format!("/wait/room?after={}", id(four)));
    b.await_parked(1);
    add_to_stream(&mut redis_client, "room", four, "four");
    announce_late(&mut redis_client, "room", four, "four");
    let five = a.notify("room", "five");
    assert_eq!(id_of(&five), id(5), "{five:?}");
    assert_event(&next_event(&mut stream), &id(5), "five");
    let got = waiter.read_response();
    assert_eq!((got.status, got.text(), id_of(&got)), (200, "five", id(5)));
    assert_event(&next_event(&mut live), &id(4), "four");
    assert_event(&next_event(&mut live), &id(5), "five");

    // 3. The same, with the message it has seen and the next one on the bus together (one
    // write to Redis, so most likely one read on B): the waiter, passed over by the first,
    // is answered with the second, which its delivery did not take (it was not parked).
    let six = number_unannounced(&mut redis_client, "room", None);
    let mut waiter = b.wait(&format!("/wait/room?after={}", id(six)));
    b.await_parked(1);
    add_to_stream(&mut redis_client, "room", six, "six");
    let seven = number_unannounced(&mut redis_client, "room", Some("seven"));
    let bus = |seq: u64, body: &str| format!("elsewhere\nroom\n{epoch}-{seq}\ntext/plain\n{body}");
    let (bus_six, bus_seven) = (bus(six, "six"), bus(seven, "seven"));
    let replies = redis_client.pipeline(&[
        &["PUBLISH", "miohttpd:bus", &bus_six],
        &["PUBLISH", "miohttpd:bus", &bus_seven],
    ]);
    assert!(
        replies.iter().all(|r| r.as_integer().is_some()),
        "{replies:?}"
    );
    let got = waiter.read_response();
    assert_eq!((got.status, got.text(), id_of(&got)), (200, "seven", id(7)));

    // 4. An id Redis never issued (right epoch, far ahead): the resync signal, as on one
    // host for an id not issued yet.
    let bogus = id(seq_of(&five) + 100);
    let mut stream = resume(&b, "room", &bogus);
    let event = next_event(&mut stream);
    assert!(event.contains("event: resync\n"), "{event:?}");
    let got = b.server.request(&get(&format!("/wait/room?after={bogus}")));
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.header("x-comet-resync"), Some("true"), "{got:?}");
}

fn seq_of(response: &Response) -> u64 {
    let id = id_of(response);
    id.rsplit('-').next().unwrap().parse().unwrap()
}

/// The value of `key` (`name` or `name{labels}`) in a metrics text.
fn sample(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}:\n{text}"))
}

#[test]
fn the_redis_links_syscalls_are_in_the_supervisors_total() {
    let redis = Redis::start();
    let a = Host::start(&redis, &[]);
    a.await_link("up");
    let answer = a.notify("news", "counted");
    assert_eq!(answer.status, 200, "{answer:?}");
    let text = a.metrics();
    let link: u64 = ["connect", "read", "write"]
        .iter()
        .map(|kind| {
            sample(
                &text,
                &format!("miohttpd_redis_syscalls_total{{kind=\"{kind}\"}}"),
            )
        })
        .sum();
    assert!(link > 0, "{text}");
    // The supervisor's total is its own kinds and the link's: they are its syscalls.
    let own: u64 = common::SYSCALL_KINDS
        .iter()
        .map(|name| sample(&text, &format!("miohttpd_{name}{{worker=\"supervisor\"}}")))
        .sum();
    let supervisor = sample(&text, "miohttpd_syscalls_total{worker=\"supervisor\"}");
    assert_eq!(supervisor, own + link, "{text}");
    // And the server's total is the worker's and the supervisor's.
    let worker = sample(&text, "miohttpd_syscalls_total{worker=\"0\"}");
    assert_eq!(
        sample(&text, "miohttpd_syscalls_total"),
        worker + supervisor,
        "{text}"
    );
}

#[test]
fn a_client_ahead_of_its_host_while_redis_is_down_is_trusted_not_told_to_resync() {
    let mut redis = Redis::start();
    let a = Host::start(&redis, &[]);
    let b = Host::start(&redis, &["--workers", "2"]);
    await_all_up(&[&a, &b]);
    let mut redis_client = redis.client();
    let first = a.notify("gap", "one");
    let mut live = resume(&b, "gap", &id_of(&first));
    let epoch = epoch_of(&mut redis_client, "gap");
    let id = |seq: u64| format!("{epoch:08x}-{seq}");
    // 2 is in Redis and B never heard of it; then Redis goes away, its data saved.
    let two = number_unannounced(&mut redis_client, "gap", Some("two"));
    redis_client.cmd(&["SAVE"]);
    redis.kill();
    b.await_not_up();
    // A client that read 2 on another host resumes on B, which cannot ask Redis whether 2
    // was issued: it trusts the client (parks, passing over 2) rather than tell it to resync.
    let mut stream = resume(&b, "gap", &id(two));
    let mut waiter = b.wait(&format!("/wait/gap?after={}", id(two)));
    await_parked_here(&b, 1);
    // Redis back: B catches the channel up (2 is news to the live subscriber only), then 3.
    redis.restart();
    await_all_up(&[&a, &b]);
    let three = a.notify("gap", "three");
    assert_eq!(id_of(&three), id(3), "{three:?}");
    assert_event(&next_event(&mut stream), &id(3), "three");
    let got = waiter.read_response();
    assert_eq!((got.status, got.text(), id_of(&got)), (200, "three", id(3)));
    assert_event(&next_event(&mut live), &id(2), "two");
    assert_event(&next_event(&mut live), &id(3), "three");
}
