//! Comet seen from raw sockets: long-poll waiters (`/wait`), publishing (`/notify`), the waiter
//! count (`GET /`), message ids and the history a client catches up from, keep-alive and
//! pipelining behind a wait, the wait timeout, Server-Sent Events (`/events`), channel names,
//! the channel limit and idle-channel expiry, and hang-ups that must leave nothing behind.

mod common;

use std::thread;
use std::time::Duration;

use socket2::SockRef;

use common::{
    assert_error_and_close, check_rows, chunked, connect_from, post, post_chunked, source_address,
    Conn, PseudoRandom, Response, Server, GET_PLAINTEXT,
};

/// Polling for a state the server reaches on its own (a waiter parked or forgotten, a channel
/// expired) gives up after this many tries, `POLL_PAUSE` apart: a bug fails, it does not hang.
const POLL_TRIES: usize = 1000;
const POLL_PAUSE: Duration = Duration::from_millis(10);

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

fn get_with(path: &str, header: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{header}\r\n\r\n").into_bytes()
}

/// `POST path` with this Content-Type (none if `None`) and body.
fn post_typed(path: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let type_line = content_type.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{type_line}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Sends a request that parks (a wait) and returns its connection, unanswered.
fn send(server: &Server, request: &[u8]) -> Conn {
    let mut conn = server.connect();
    conn.send(request);
    conn
}

/// Closes with RST instead of FIN: SO_LINGER with a zero timeout.
fn reset(conn: Conn) {
    SockRef::from(conn.stream())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
}

/// One keep-alive connection asking `GET /`, so polling adds no connections of its own.
struct Counter(Conn);

impl Counter {
    fn new(server: &Server) -> Counter {
        Counter(server.connect())
    }

    fn parked(&mut self) -> usize {
        self.0.send(&get("/"));
        let response = self.0.read_response();
        assert_eq!(response.status, 200, "GET /: {response:?}");
        response
            .text()
            .parse()
            .unwrap_or_else(|_| panic!("GET / is not a number: {response:?}"))
    }

    /// Polls until exactly `n` waiters are parked.
    fn await_parked(&mut self, n: usize) {
        let mut seen = usize::MAX;
        for _ in 0..POLL_TRIES {
            seen = self.parked();
            if seen == n {
                return;
            }
            thread::sleep(POLL_PAUSE);
        }
        panic!("GET / never reached {n} parked waiters; last said {seen}");
    }
}

/// What a publisher is told: the connections its message reached, and the message's id.
#[derive(Debug)]
struct Published {
    reached: usize,
    id: String,
}

fn published(response: Response) -> Published {
    assert_eq!(response.status, 200, "publish: {response:?}");
    let reached = response
        .text()
        .parse()
        .unwrap_or_else(|_| panic!("publish answer is not a number: {response:?}"));
    let id = message_id(&response);
    Published { reached, id }
}

/// `GET /notify...`: the message is the count of connections reached.
fn notify(server: &Server, path: &str) -> Published {
    published(server.request(&get(path)))
}

/// `POST /notify/{channel}` with `body` as the message.
fn publish(server: &Server, channel: &str, body: &[u8]) -> Published {
    let request = post_typed(&format!("/notify/{channel}"), Some("text/plain"), body);
    published(server.request(&request))
}

/// The `X-Comet-Id` of a response, checked to be `EPOCH-SEQ`.
fn message_id(response: &Response) -> String {
    let id = response
        .header("x-comet-id")
        .unwrap_or_else(|| panic!("no X-Comet-Id: {response:?}"));
    split_id(id);
    id.to_string()
}

/// `EPOCH-SEQ`: 8 lowercase hex digits, '-', a decimal sequence number.
fn split_id(id: &str) -> (&str, u64) {
    let (epoch, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("id {id:?} is not EPOCH-SEQ"));
    assert!(
        epoch.len() == 8
            && epoch
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "epoch of {id:?} is not 8 lowercase hex digits"
    );
    assert!(
        !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()),
        "seq of {id:?} is not decimal"
    );
    (epoch, seq.parse().unwrap())
}

/// The same epoch with another last hex digit: an id from some other run.
fn other_epoch(id: &str) -> String {
    let (epoch, seq) = split_id(id);
    let flipped = u32::from_str_radix(epoch, 16).unwrap() ^ 1;
    format!("{flipped:08x}-{seq}")
}

/// A waiter's answer carrying `body`, as text/plain (what `GET /notify` publishes).
fn assert_count_answer(response: &Response, n: usize, case: &str) {
    assert_eq!(response.status, 200, "{case}: {response:?}");
    assert_eq!(response.text(), n.to_string(), "{case}: {response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain"),
        "{case}: {response:?}"
    );
    response.assert_standard_headers();
    message_id(response);
}

// ---- The original test client ----

/// The original comet benchmark client: a thousand HTTP/1.0 waiters that read until the server
/// closes, a poller that waits for `GET /` to say 1000, one `GET /notify`.
#[test]
fn a_thousand_http10_waiters_each_get_the_count_then_a_close() {
    const WAITERS: usize = 1000;
    let server = Server::start();
    let mut waiters: Vec<Conn> = (0..WAITERS)
        .map(|i| {
            let mut conn = connect_from(&server, source_address(i));
            conn.send(b"GET /wait HTTP/1.0\r\n\r\n");
            conn
        })
        .collect();
    Counter::new(&server).await_parked(WAITERS);

    let notified = notify(&server, "/notify");
    assert_eq!(notified.reached, WAITERS, "{notified:?}");

    // Every answer went out in the same loop turn, so reading them one after another is enough.
    for (i, conn) in waiters.iter_mut().enumerate() {
        let response = conn.read_response();
        let case = format!("waiter {i}");
        assert_count_answer(&response, WAITERS, &case);
        assert!(response.closes(), "{case}: {response:?}");
        assert_eq!(message_id(&response), notified.id, "{case}");
        conn.expect_eof();
    }
    assert_eq!(Counter::new(&server).parked(), 0);
    server.assert_still_serves();
}

// ---- Hang-ups ----

#[test]
fn a_waiter_that_hangs_up_is_not_reached_by_the_next_notify() {
    let server = Server::start();
    let mut counter = Counter::new(&server);
    let mut stay: Vec<Conn> = (0..3).map(|_| send(&server, &get("/wait"))).collect();
    let leave_fin = send(&server, &get("/wait"));
    let leave_rst = send(&server, &get("/wait"));
    counter.await_parked(5);

    drop(leave_fin);
    reset(leave_rst);
    counter.await_parked(3);
    let notified = notify(&server, "/notify");
    assert_eq!(notified.reached, 3, "{notified:?}");
    for conn in &mut stay {
        assert_count_answer(&conn.read_response(), 3, "a waiter that stayed");
    }
}

/// Closes a client's side of a connection, one way or another.
type HangUp = fn(Conn);

/// Requests pipelined behind a wait wait their turn in the server's input buffer; a waiter
/// that hangs up must be forgotten however much of it they fill (here, more than 16 KiB).
#[test]
fn a_waiter_with_requests_pipelined_behind_it_is_forgotten_when_it_hangs_up() {
    let mut long_pipeline = get("/wait/full");
    long_pipeline.extend(GET_PLAINTEXT.repeat(600));
    let mut short_pipeline = get("/wait/full");
    short_pipeline.extend(GET_PLAINTEXT.repeat(10));
    let rows: [(&str, &[u8], HangUp); 4] = [
        ("10 requests behind, FIN", &short_pipeline, drop),
        ("10 requests behind, RST", &short_pipeline, reset),
        ("26 KB of requests behind, FIN", &long_pipeline, drop),
        ("26 KB of requests behind, RST", &long_pipeline, reset),
    ];
    check_rows(
        rows.map(|(name, pipeline, hang_up)| (name.to_string(), (pipeline, hang_up))),
        |_, (pipeline, hang_up)| {
            let server = Server::start();
            let mut counter = Counter::new(&server);
            let waiter = send(&server, pipeline);
            counter.await_parked(1);
            hang_up(waiter);
            counter.await_parked(0);
            assert_eq!(notify(&server, "/notify/full").reached, 0);
            server.assert_still_serves();
        },
    );
}

fn open_fds(server: &Server) -> usize {
    let dir = format!("/proc/{}/fd", server.pid());
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .count()
}

/// A thousand waiters that park and vanish (half with FIN, half with RST) must leave no
/// waiter, no descriptor and no memory behind.
#[test]
fn park_and_hang_up_cycles_leave_no_waiters_fds_or_memory_behind() {
    const ROUNDS: usize = 20;
    const WAITERS: usize = 50;
    // Room for allocator noise; a leaked 16 KiB buffer per waiter would be 16 MiB.
    const MAX_GROWTH_KIB: u64 = 4 * 1024;

    let server = Server::start();
    let mut counter = Counter::new(&server);
    // Answered means accepted: the counter's own descriptor is in the baseline.
    assert_eq!(counter.parked(), 0);
    let fds_before = open_fds(&server);
    let mut memory_before = None;
    for round in 0..ROUNDS {
        let waiters: Vec<Conn> = (0..WAITERS)
            .map(|i| {
                let mut conn = connect_from(&server, source_address(round * WAITERS + i));
                conn.send(&get("/wait/cycle"));
                conn
            })
            .collect();
        counter.await_parked(WAITERS);
        for (i, conn) in waiters.into_iter().enumerate() {
            if i % 2 == 0 {
                drop(conn);
            } else {
                reset(conn);
            }
        }
        counter.await_parked(0);
        if round == 0 {
            // After one round the server's buffer pool is as warm as it will get.
            memory_before = Some(server.memory());
        }
    }

    assert_eq!(notify(&server, "/notify/cycle").reached, 0);
    let mut fds = usize::MAX;
    for _ in 0..POLL_TRIES {
        fds = open_fds(&server);
        if fds == fds_before {
            break;
        }
        thread::sleep(POLL_PAUSE);
    }
    assert_eq!(fds, fds_before, "descriptors left open by gone waiters");
    let before = memory_before.unwrap();
    let after = server.memory();
    assert!(
        after.rss_kib <= before.rss_kib + MAX_GROWTH_KIB,
        "RSS grew from {before:?} to {after:?} over {ROUNDS} rounds"
    );
    server.assert_still_serves();
}

// ---- Channels and message bodies ----

#[test]
fn channels_are_separate_and_the_count_covers_them_all() {
    let server = Server::start();
    let mut counter = Counter::new(&server);
    let mut on_a = send(&server, &get("/wait/a"));
    let mut on_b = send(&server, &get("/wait/b"));
    let mut on_default = send(&server, &get("/wait"));
    counter.await_parked(3);

    // Only a's waiter is reached; b's and the default channel's stay parked.
    let to_a = publish(&server, "a", b"for a");
    assert_eq!(to_a.reached, 1, "{to_a:?}");
    let got = on_a.read_response();
    assert_eq!(got.body, b"for a", "{got:?}");
    assert_eq!(message_id(&got), to_a.id);
    assert_eq!(counter.parked(), 2);

    // b's first answer is b's message, not a's.
    let to_b = publish(&server, "b", b"for b");
    assert_eq!(to_b.reached, 1, "{to_b:?}");
    assert_eq!(on_b.read_response().body, b"for b");
    assert_eq!(counter.parked(), 1);

    let to_default = notify(&server, "/notify");
    assert_eq!(to_default.reached, 1, "{to_default:?}");
    assert_count_answer(&on_default.read_response(), 1, "default channel");
    assert_eq!(counter.parked(), 0);
}

/// A POST's body reaches the waiter byte for byte, under the POST's Content-Type.
#[test]
fn posted_bodies_reach_waiters_byte_exact_with_their_content_type() {
    let every_byte: Vec<u8> = (0..=255).collect();
    let at_default_limit = PseudoRandom::bytes(1, 65_536);
    let chunked_body = PseudoRandom::bytes(2, 10_000);
    let rows: Vec<(&str, Vec<u8>, &[u8], &str)> = vec![
        (
            "text with its own type",
            post_typed("/notify/ch", Some("text/plain; charset=utf-8"), b"hello"),
            b"hello",
            "text/plain; charset=utf-8",
        ),
        (
            "every byte value",
            post_typed("/notify/ch", Some("application/x-bytes"), &every_byte),
            &every_byte,
            "application/x-bytes",
        ),
        (
            "64 KiB, the default limit, no type",
            post_typed("/notify/ch", None, &at_default_limit),
            &at_default_limit,
            "application/octet-stream",
        ),
        (
            "chunked, no type",
            post_chunked("/notify/ch", &chunked_body, 999),
            &chunked_body,
            "application/octet-stream",
        ),
        (
            "empty",
            post_typed("/notify/ch", Some("text/plain"), b""),
            b"",
            "text/plain",
        ),
    ];
    check_rows(
        rows.into_iter().map(|(name, request, body, content_type)| {
            (name.to_string(), (request, body, content_type))
        }),
        |_, (request, body, content_type)| {
            let server = Server::start();
            let mut waiter = send(&server, &get("/wait/ch"));
            Counter::new(&server).await_parked(1);
            let notified = published(server.request(&request));
            assert_eq!(notified.reached, 1, "{notified:?}");
            let got = waiter.read_response();
            assert_eq!(got.status, 200, "{got:?}");
            assert!(got.body == body, "body differs: {got:?}");
            assert_eq!(got.header("content-type"), Some(content_type), "{got:?}");
            assert_eq!(message_id(&got), notified.id);
        },
    );
}

/// One large message to many waiters and subscribers at once: the server writes the same bytes
/// to every socket, most of which cannot take them all in one write.
#[test]
fn a_large_message_reaches_every_waiter_and_subscriber_intact() {
    const WAITERS: usize = 200;
    const SUBSCRIBERS: usize = 20;
    let server = Server::start();
    let mut waiters: Vec<Conn> = (0..WAITERS)
        .map(|i| {
            let mut conn = connect_from(&server, source_address(i));
            conn.send(&get("/wait/big"));
            conn
        })
        .collect();
    Counter::new(&server).await_parked(WAITERS);
    let mut streams: Vec<Conn> = (0..SUBSCRIBERS)
        .map(|_| subscribe(&server, &get("/events/big")))
        .collect();

    // Lines of varied length, so the event has many `data:` lines.
    let body: String = (0..4000)
        .map(|i| format!("line {i} {}\n", "x".repeat(i % 23)))
        .collect::<String>()
        .chars()
        .take(65_536)
        .collect::<String>()
        .trim_end()
        .to_string();
    let request = post_typed("/notify/big", Some("text/plain"), body.as_bytes());
    let notified = published(server.request(&request));
    assert_eq!(notified.reached, WAITERS + SUBSCRIBERS, "{notified:?}");

    for (i, waiter) in waiters.iter_mut().enumerate() {
        let got = waiter.read_response();
        assert!(got.body == body.as_bytes(), "waiter {i}: {got:?}");
    }
    let want = event(&notified.id, &body);
    for (i, stream) in streams.iter_mut().enumerate() {
        assert!(next_chunk(stream) == want, "subscriber {i}: event differs");
    }
}

#[test]
fn bodies_beyond_the_comet_body_limit_get_413_and_are_not_published() {
    let server = Server::start_with(&["--comet-body-limit", "100"]);
    let mut counter = Counter::new(&server);
    let mut waiter = send(&server, &get("/wait/limit"));
    counter.await_parked(1);

    let over: &[(&str, Vec<u8>)] = &[
        ("101 bytes by length", post("/notify/limit", &[b'x'; 101])),
        (
            "101 bytes chunked",
            post_chunked("/notify/limit", &[b'x'; 101], 10),
        ),
    ];
    for (case, request) in over {
        let mut conn = send(&server, request);
        assert_error_and_close(&server, &mut conn, &[413], case);
    }
    // The refused bodies reached nobody: the waiter is still parked for the next one.
    assert_eq!(counter.parked(), 1);

    let mut request = b"POST /notify/limit HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    request.extend(b"Transfer-Encoding: chunked\r\n\r\n");
    request.extend(chunked(&[b'y'; 100], 7));
    let notified = published(server.request(&request));
    assert_eq!(
        notified.reached, 1,
        "exactly the limit is allowed: {notified:?}"
    );
    assert_eq!(waiter.read_response().body, [b'y'; 100]);
    let notified = published(server.request(&post("/notify/limit", &[b'z'; 100])));
    assert_eq!(notified.reached, 0, "{notified:?}");
    server.assert_still_serves();
}

#[test]
fn a_declared_length_over_the_comet_body_limit_is_refused_from_the_head() {
    let server = Server::start_with(&["--comet-body-limit", "100"]);
    // No body follows, and no 100 Continue may invite one: the head alone earns the 413.
    let head = b"POST /notify/limit HTTP/1.1\r\nHost: localhost\r\n\
        Content-Length: 18446744073709551615\r\nExpect: 100-continue\r\n\r\n";
    let mut conn = send(&server, head);
    assert_error_and_close(&server, &mut conn, &[413], "declared 2^64-1 bytes");
}

// ---- Message ids and the history ----

#[test]
fn ids_share_one_epoch_and_grow_across_channels() {
    let server = Server::start();
    let mut counter = Counter::new(&server);
    let mut seen = Vec::new();
    for channel in ["a", "b", "a", "default", "c"] {
        let mut waiter = send(&server, &get(&format!("/wait/{channel}")));
        counter.await_parked(1);
        let notified = notify(&server, &format!("/notify/{channel}"));
        let got = waiter.read_response();
        assert_count_answer(&got, 1, channel);
        assert_eq!(message_id(&got), notified.id, "waiter and notifier ids");
        seen.push(notified.id);
    }
    let (epoch, mut last_seq) = split_id(&seen[0]);
    for id in &seen[1..] {
        let (this_epoch, seq) = split_id(id);
        assert_eq!(this_epoch, epoch, "one epoch per run: {seen:?}");
        assert!(seq > last_seq, "seqs must grow across channels: {seen:?}");
        last_seq = seq;
    }
}

/// What a catching-up waiter must get.
#[derive(Debug, Clone, Copy)]
enum CatchUp {
    /// At once: message number i (0-based) of those published, no resync.
    Next(usize),
    /// At once: message number i, the oldest kept, with `X-Comet-Resync: true`.
    Resync(usize),
}

/// The request for a wait that names the last id seen, one of the ways it can.
type RequestAfter = fn(&str) -> Vec<u8>;

/// `--comet-history 3` and five messages m0..m4: m2, m3 and m4 are kept.
#[test]
fn a_waiter_with_an_id_gets_the_next_message_or_a_resync() {
    let server = Server::start_with(&["--comet-history", "3"]);
    let ids: Vec<String> = (0..5)
        .map(|i| publish(&server, "h", format!("m{i}").as_bytes()).id)
        .collect();
    let (epoch, newest) = split_id(&ids[4]);
    let future = format!("{epoch}-{}", newest + 1000);
    let cases: &[(&str, &str, CatchUp)] = &[
        ("after m2", &ids[2], CatchUp::Next(3)),
        ("after m3", &ids[3], CatchUp::Next(4)),
        ("after m0, m1 lost", &ids[0], CatchUp::Resync(2)),
        ("another epoch", &other_epoch(&ids[4]), CatchUp::Resync(2)),
        ("a seq not issued yet", &future, CatchUp::Resync(2)),
    ];
    let forms: &[(&str, RequestAfter)] = &[
        ("?after=", |id| get(&format!("/wait/h?after={id}"))),
        ("?x=1&after=", |id| get(&format!("/wait/h?x=1&after={id}"))),
        ("Last-Event-ID", |id| {
            get_with("/wait/h", &format!("Last-Event-ID: {id}"))
        }),
    ];
    let rows = cases.iter().flat_map(|&(case, id, want)| {
        forms
            .iter()
            .map(move |&(form, request)| (format!("{case} ({form})"), (request(id), want)))
    });
    check_rows(rows, |_, (request, want)| {
        let got = server.request(&request);
        assert_eq!(got.status, 200, "{got:?}");
        let (i, resync) = match want {
            CatchUp::Next(i) => (i, false),
            CatchUp::Resync(i) => (i, true),
        };
        assert_eq!(got.body, format!("m{i}").as_bytes(), "{got:?}");
        assert_eq!(message_id(&got), ids[i], "{got:?}");
        assert_eq!(
            got.header("x-comet-resync") == Some("true"),
            resync,
            "X-Comet-Resync: {got:?}"
        );
    });
    // None of them parked.
    assert_eq!(Counter::new(&server).parked(), 0);
}

#[test]
fn a_waiter_with_the_newest_id_parks_until_the_next_publish() {
    let server = Server::start();
    let mut counter = Counter::new(&server);
    let newest = publish(&server, "n", b"old").id;
    let mut by_query = send(&server, &get(&format!("/wait/n?after={newest}")));
    let mut by_header = send(
        &server,
        &get_with("/wait/n", &format!("Last-Event-ID: {newest}")),
    );
    counter.await_parked(2);
    let next = publish(&server, "n", b"new");
    assert_eq!(next.reached, 2, "{next:?}");
    for waiter in [&mut by_query, &mut by_header] {
        let got = waiter.read_response();
        assert_eq!(got.body, b"new", "{got:?}");
        assert_eq!(message_id(&got), next.id);
        assert_eq!(got.header("x-comet-resync"), None, "{got:?}");
    }
}

/// A client that always passes back the last id it got misses nothing, however fast messages
/// come: the long-poll loop the history exists for.
#[test]
fn a_client_that_follows_the_ids_misses_nothing() {
    let server = Server::start();
    let mut last = publish(&server, "feed", b"before").id;
    let ids: Vec<String> = (0..10)
        .map(|i| publish(&server, "feed", format!("burst {i}").as_bytes()).id)
        .collect();
    let mut client = server.connect();
    for (i, id) in ids.iter().enumerate() {
        client.send(&get(&format!("/wait/feed?after={last}")));
        let got = client.read_response();
        assert_eq!(got.body, format!("burst {i}").as_bytes(), "{got:?}");
        assert_eq!(&message_id(&got), id);
        last = message_id(&got);
    }
    client.send(&get(&format!("/wait/feed?after={last}")));
    Counter::new(&server).await_parked(1);
    let live = publish(&server, "feed", b"live");
    assert_eq!(client.read_response().body, b"live");
    assert_eq!(live.reached, 1);
}

#[test]
fn a_lost_id_on_an_empty_history_gets_204_resync() {
    let server = Server::start();
    let seen = publish(&server, "elsewhere", b"x").id;
    let (epoch, seq) = split_id(&seen);
    let rows = [
        ("another epoch", other_epoch(&seen)),
        ("a seq not issued yet", format!("{epoch}-{}", seq + 1000)),
    ];
    check_rows(
        rows.into_iter().map(|(name, id)| (name.to_string(), id)),
        |_, id| {
            let got = server.request(&get(&format!("/wait/never-used?after={id}")));
            assert_eq!(got.status, 204, "{got:?}");
            assert_eq!(got.header("x-comet-resync"), Some("true"), "{got:?}");
        },
    );
    assert_eq!(Counter::new(&server).parked(), 0);
}

#[test]
fn a_restarted_server_has_a_new_epoch_and_resyncs_old_ids() {
    let first_run = Server::start();
    let old = publish(&first_run, "r", b"first run").id;
    drop(first_run);

    let server = Server::start();
    let empty = server.request(&get(&format!("/wait/r?after={old}")));
    assert_eq!(empty.status, 204, "nothing kept yet: {empty:?}");
    assert_eq!(empty.header("x-comet-resync"), Some("true"), "{empty:?}");

    let new = publish(&server, "r", b"second run").id;
    assert_ne!(
        split_id(&new).0,
        split_id(&old).0,
        "same epoch: {old} {new}"
    );
    let got = server.request(&get(&format!("/wait/r?after={old}")));
    assert_eq!(got.body, b"second run", "{got:?}");
    assert_eq!(message_id(&got), new);
    assert_eq!(got.header("x-comet-resync"), Some("true"), "{got:?}");
}

#[test]
fn malformed_ids_get_400() {
    let server = Server::start();
    publish(&server, "m", b"x");
    let bad = [
        "abc",
        "1234567-1",
        "123456789-1",
        "zzzzzzzz-1",
        "0000000a-",
        "0000000a-x",
        "0000000a--1",
        "0000000a-1-2",
        "0000000a+1",
        "0000000a-99999999999999999999999",
    ];
    let rows = bad.iter().flat_map(|id| {
        [
            ("wait ?after=", get(&format!("/wait/m?after={id}"))),
            (
                "wait Last-Event-ID",
                get_with("/wait/m", &format!("Last-Event-ID: {id}")),
            ),
            ("events ?after=", get(&format!("/events/m?after={id}"))),
            (
                "events Last-Event-ID",
                get_with("/events/m", &format!("Last-Event-ID: {id}")),
            ),
        ]
        .map(|(form, request)| (format!("{id:?} by {form}"), request))
    });
    check_rows(rows, |_, request| {
        let got = server.request(&request);
        assert_eq!(got.status, 400, "{got:?}");
    });
    assert_eq!(Counter::new(&server).parked(), 0);
    server.assert_still_serves();
}

// ---- Keep-alive, pipelining, timeouts ----

/// A wait answered at once from the history follows the same rules as a parked one: HTTP/1.0
/// closes after it, HTTP/1.1 answers what was pipelined behind it.
#[test]
fn waits_answered_at_once_follow_the_keep_alive_rules_too() {
    let server = Server::start();
    let first = publish(&server, "now", b"first").id;
    let second = publish(&server, "now", b"second").id;
    let lost = other_epoch(&first);

    let mut old = send(
        &server,
        format!("GET /wait/now?after={first} HTTP/1.0\r\n\r\n").as_bytes(),
    );
    let got = old.read_response();
    assert_eq!(got.body, b"second", "{got:?}");
    assert!(got.closes(), "{got:?}");
    old.expect_eof();

    let mut old = send(
        &server,
        format!("GET /wait/empty?after={lost} HTTP/1.0\r\n\r\n").as_bytes(),
    );
    let got = old.read_response();
    assert_eq!(got.status, 204, "{got:?}");
    assert!(got.closes(), "{got:?}");
    old.expect_eof();

    let mut conn = server.connect();
    let mut pipeline = get(&format!("/wait/now?after={first}"));
    pipeline.extend(get(&format!("/wait/empty?after={lost}")));
    pipeline.extend(get(&format!("/wait/now?after={lost}")));
    pipeline.extend(GET_PLAINTEXT);
    conn.send(&pipeline);
    let next = conn.read_response();
    assert_eq!(message_id(&next), second, "{next:?}");
    assert_eq!(conn.read_response().status, 204);
    let resync = conn.read_response();
    assert_eq!(message_id(&resync), first, "{resync:?}");
    assert_eq!(resync.header("x-comet-resync"), Some("true"), "{resync:?}");
    assert_eq!(conn.read_response().body, b"Hello, World!");
}

/// How a waiter's connection must fare after its answer.
#[derive(Debug, Clone, Copy)]
enum After {
    /// Open, without `Connection: close`; `Connection: keep-alive` echoed if `echoed`.
    Open { echoed: bool },
    /// `Connection: close`, then the server closes.
    Closed,
}

#[test]
fn a_waiters_answer_follows_the_keep_alive_rules() {
    let rows: &[(&str, &[u8], After)] = &[
        (
            "HTTP/1.1",
            b"GET /wait HTTP/1.1\r\nHost: localhost\r\n\r\n",
            After::Open { echoed: false },
        ),
        (
            "HTTP/1.1 with Connection: close",
            b"GET /wait HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            After::Closed,
        ),
        (
            "HTTP/1.0 with Connection: keep-alive",
            b"GET /wait HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            After::Open { echoed: true },
        ),
        ("HTTP/1.0", b"GET /wait HTTP/1.0\r\n\r\n", After::Closed),
    ];
    check_rows(
        rows.iter()
            .map(|&(name, request, after)| (name.to_string(), (request, after))),
        |_, (request, after)| {
            let server = Server::start();
            let mut waiter = send(&server, request);
            Counter::new(&server).await_parked(1);
            assert_eq!(notify(&server, "/notify").reached, 1);
            let got = waiter.read_response();
            assert_count_answer(&got, 1, "waiter");
            match after {
                After::Open { echoed } => {
                    assert!(!got.closes(), "{got:?}");
                    assert_eq!(got.has_token("connection", "keep-alive"), echoed, "{got:?}");
                    // The same connection serves on, and can wait again.
                    waiter.send(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
                    assert_eq!(waiter.read_response().body, b"Hello, World!");
                    waiter.send(request);
                    Counter::new(&server).await_parked(1);
                    assert_eq!(notify(&server, "/notify").reached, 1);
                    assert_count_answer(&waiter.read_response(), 1, "second wait");
                }
                After::Closed => {
                    assert!(got.closes(), "{got:?}");
                    waiter.expect_eof();
                }
            }
        },
    );
}

#[test]
fn requests_pipelined_behind_a_wait_are_answered_after_it_in_order() {
    let server = Server::start();
    let mut counter = Counter::new(&server);
    let mut conn = server.connect();
    let mut pipeline = get("/wait/p");
    pipeline.extend(GET_PLAINTEXT);
    pipeline.extend(get("/wait/p"));
    pipeline.extend(get("/"));
    conn.send(&pipeline);

    counter.await_parked(1);
    let first = notify(&server, "/notify/p");
    assert_eq!(first.reached, 1, "{first:?}");
    let got = conn.read_response();
    assert_count_answer(&got, 1, "first wait");
    assert_eq!(message_id(&got), first.id);
    assert_eq!(conn.read_response().body, b"Hello, World!");

    // The second wait parks only now, behind the first.
    counter.await_parked(1);
    let second = notify(&server, "/notify/p");
    assert_eq!(second.reached, 1, "{second:?}");
    let got = conn.read_response();
    assert_eq!(message_id(&got), second.id, "{got:?}");
    let count = conn.read_response();
    assert_eq!(
        count.text(),
        "0",
        "GET / answered after both waits: {count:?}"
    );
}

#[test]
fn comet_timeout_answers_an_empty_204_and_keeps_the_connection() {
    let server = Server::start_with(&["--comet-timeout", "1"]);
    let mut counter = Counter::new(&server);

    let mut waiter = send(&server, &get("/wait/t"));
    let timed_out = waiter.read_response();
    assert_eq!(timed_out.status, 204, "{timed_out:?}");
    assert!(!timed_out.closes(), "{timed_out:?}");
    assert_eq!(
        timed_out.header("content-length").unwrap_or("0"),
        "0",
        "{timed_out:?}"
    );
    assert_eq!(
        counter.parked(),
        0,
        "a timed-out waiter is no longer parked"
    );

    // The same connection waits again. A notify that comes after the second timeout reaches
    // nobody, and then the waiter must have had a 204 instead: try again.
    let mut delivered = false;
    for _ in 0..5 {
        waiter.send(&get("/wait/t"));
        counter.await_parked(1);
        let notified = notify(&server, "/notify/t");
        let got = waiter.read_response();
        if notified.reached == 0 {
            assert_eq!(got.status, 204, "reached nobody, so it timed out: {got:?}");
            continue;
        }
        assert_count_answer(&got, 1, "second wait");
        delivered = true;
        break;
    }
    assert!(delivered, "every retry timed out before its notify");

    let mut old_client = send(&server, b"GET /wait/t HTTP/1.0\r\n\r\n");
    assert_eq!(old_client.read_response().status, 204);
    old_client.expect_eof();
}

// ---- Server-Sent Events ----

const RESYNC_EVENT: &str = "event: resync\ndata:\n\n";
const HEARTBEAT: &str = ": heartbeat\n\n";

/// The event a message is sent as: its id, then one `data:` line per line of its body.
fn event(id: &str, body: &str) -> String {
    let data: String = body.split('\n').map(|l| format!("data: {l}\n")).collect();
    format!("id: {id}\n{data}\n")
}

/// Opens an HTTP/1.1 event stream with `request` and checks its head.
fn subscribe(server: &Server, request: &[u8]) -> Conn {
    let mut conn = send(server, request);
    let head = conn.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.header("content-type"),
        Some("text/event-stream"),
        "{head:?}"
    );
    assert!(head.is_chunked(), "{head:?}");
    assert_eq!(head.header("cache-control"), Some("no-store"), "{head:?}");
    assert_eq!(
        head.header("access-control-allow-origin"),
        Some("*"),
        "{head:?}"
    );
    assert!(!head.closes(), "{head:?}");
    conn
}

fn next_chunk(conn: &mut Conn) -> String {
    let chunk = conn.read_chunk();
    assert!(!chunk.is_empty(), "the event stream ended");
    String::from_utf8(chunk).expect("events are UTF-8 here")
}

#[test]
fn an_event_stream_sends_each_message_as_one_chunk() {
    let server = Server::start();
    let mut stream = subscribe(&server, &get("/events/s"));

    let notified = publish(&server, "s", b"one\ntwo\nthree");
    assert_eq!(notified.reached, 1, "a subscriber counts: {notified:?}");
    assert_eq!(
        next_chunk(&mut stream),
        event(&notified.id, "one\ntwo\nthree")
    );

    // A waiter and a subscriber together: both counted, both told the count.
    let mut waiter = send(&server, &get("/wait/s"));
    Counter::new(&server).await_parked(1);
    let notified = notify(&server, "/notify/s");
    assert_eq!(notified.reached, 2, "{notified:?}");
    assert_count_answer(&waiter.read_response(), 2, "waiter");
    assert_eq!(next_chunk(&mut stream), event(&notified.id, "2"));

    // The default channel's stream.
    let mut default = subscribe(&server, &get("/events"));
    let notified = notify(&server, "/notify");
    assert_eq!(notified.reached, 1, "{notified:?}");
    assert_eq!(next_chunk(&mut default), event(&notified.id, "1"));
}

/// `--comet-history 3` and five messages m0..m4: m2, m3 and m4 are kept. Each stream first
/// replays what it missed, then gets the live m5 and nothing else in between.
#[test]
fn an_event_stream_replays_what_it_missed_then_goes_live() {
    let server = Server::start_with(&["--comet-history", "3"]);
    let ids: Vec<String> = (0..5)
        .map(|i| publish(&server, "r", format!("m{i}").as_bytes()).id)
        .collect();
    let m = |i: usize| event(&ids[i], &format!("m{i}"));
    let lost = |_| {
        let mut all = vec![RESYNC_EVENT.to_string()];
        all.extend((2..5).map(m));
        all
    };
    let rows: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        ("no id", get("/events/r"), vec![]),
        (
            "Last-Event-ID m2",
            get_with("/events/r", &format!("Last-Event-ID: {}", ids[2])),
            vec![m(3), m(4)],
        ),
        (
            "?after=m2",
            get(&format!("/events/r?after={}", ids[2])),
            vec![m(3), m(4)],
        ),
        (
            "the newest",
            get_with("/events/r", &format!("Last-Event-ID: {}", ids[4])),
            vec![],
        ),
        (
            "m0, with m1 lost",
            get_with("/events/r", &format!("Last-Event-ID: {}", ids[0])),
            lost(()),
        ),
        (
            "another epoch",
            get(&format!("/events/r?after={}", other_epoch(&ids[4]))),
            lost(()),
        ),
    ];
    let mut streams = Vec::new();
    for (name, request, replay) in rows {
        let mut stream = subscribe(&server, &request);
        for (i, want) in replay.iter().enumerate() {
            assert_eq!(&next_chunk(&mut stream), want, "{name}: replayed event {i}");
        }
        streams.push((name, stream));
    }
    let live = publish(&server, "r", b"m5");
    assert_eq!(live.reached, streams.len(), "{live:?}");
    for (name, stream) in &mut streams {
        assert_eq!(
            next_chunk(stream),
            event(&live.id, "m5"),
            "{name}: live event"
        );
    }

    // An empty history: only the resync event, then live messages.
    let mut fresh = subscribe(
        &server,
        &get(&format!("/events/fresh?after={}", other_epoch(&ids[4]))),
    );
    assert_eq!(next_chunk(&mut fresh), RESYNC_EVENT);
    let live = publish(&server, "fresh", b"first");
    assert_eq!(next_chunk(&mut fresh), event(&live.id, "first"));
}

/// The first of the next few events that is not a heartbeat.
fn skip_heartbeats(mut next: impl FnMut() -> String) -> String {
    (0..5)
        .map(|_| next())
        .find(|event| event != HEARTBEAT)
        .unwrap_or_else(|| panic!("nothing but heartbeats"))
}

#[test]
fn an_idle_event_stream_gets_heartbeats() {
    // The wait timeout is for long-poll waiters only: streams get heartbeats, not a 204.
    let server = Server::start_with(&["--sse-heartbeat", "1", "--comet-timeout", "1"]);
    let mut stream = subscribe(&server, &get("/events/beat"));
    for _ in 0..2 {
        assert_eq!(next_chunk(&mut stream), HEARTBEAT);
    }
    let mut old = send(&server, b"GET /events/beat HTTP/1.0\r\n\r\n");
    assert_eq!(old.read_head_response().status, 200);
    assert_eq!(old.read_through(b"\n\n"), HEARTBEAT.as_bytes());

    // Messages still come between heartbeats.
    let notified = publish(&server, "beat", b"between");
    let want = event(&notified.id, "between");
    assert_eq!(skip_heartbeats(|| next_chunk(&mut stream)), want);
    assert_eq!(
        skip_heartbeats(|| String::from_utf8(old.read_through(b"\n\n")).unwrap()),
        want
    );
}

#[test]
fn an_http10_event_stream_is_close_delimited() {
    let server = Server::start();
    let mut stream = send(&server, b"GET /events/old HTTP/1.0\r\n\r\n");
    let head = stream.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.header("content-type"),
        Some("text/event-stream"),
        "{head:?}"
    );
    assert!(head.closes(), "{head:?}");
    assert!(!head.is_chunked(), "{head:?}");
    assert_eq!(head.header("content-length"), None, "{head:?}");

    for body in ["a\nb", "c"] {
        let notified = publish(&server, "old", body.as_bytes());
        assert_eq!(notified.reached, 1, "{notified:?}");
        let got = stream.read_through(b"\n\n");
        assert_eq!(String::from_utf8_lossy(&got), event(&notified.id, body));
    }
}

#[test]
fn a_subscriber_that_hangs_up_is_no_longer_counted() {
    let server = Server::start();
    let mut stays = subscribe(&server, &get("/events/gone"));
    let leaves_fin = subscribe(&server, &get("/events/gone"));
    let leaves_rst = subscribe(&server, &get("/events/gone"));
    assert_eq!(notify(&server, "/notify/gone").reached, 3);

    drop(leaves_fin);
    reset(leaves_rst);
    let mut reached = Vec::new();
    for _ in 0..POLL_TRIES {
        let n = notify(&server, "/notify/gone").reached;
        reached.push(n);
        if n == 1 {
            break;
        }
        thread::sleep(POLL_PAUSE);
    }
    assert_eq!(reached.last(), Some(&1), "notify counts: {reached:?}");
    assert!(reached.iter().all(|&n| n >= 1), "{reached:?}");

    // The one that stayed got every message, in order, and still does.
    assert_eq!(next_chunk(&mut stays).lines().nth(1), Some("data: 3"));
    for n in &reached {
        let chunk = next_chunk(&mut stays);
        assert_eq!(
            chunk.lines().nth(1),
            Some(&*format!("data: {n}")),
            "{chunk:?}"
        );
    }
    server.assert_still_serves();
}

// ---- Methods, channel names and the channel limit ----

#[test]
fn head_on_wait_and_events_is_405() {
    let server = Server::start();
    let paths = ["/wait", "/wait/x", "/events", "/events/x"];
    check_rows(paths.into_iter().map(|p| (p.to_string(), p)), |_, path| {
        let mut conn = server.connect();
        conn.send(format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        let got = conn.read_head_response();
        assert_eq!(got.status, 405, "{got:?}");
        assert!(got.has_token("allow", "GET"), "{got:?}");
    });
    assert_eq!(Counter::new(&server).parked(), 0);
    server.assert_still_serves();
}

#[test]
fn channel_names_outside_the_alphabet_or_too_long_get_400() {
    let server = Server::start();
    let too_long = "x".repeat(65);
    let bad = [
        "a%20b",
        "a/b",
        "caf%C3%A9",
        "a+b",
        "a:b",
        "a,b",
        "a*b",
        "a!b",
        &too_long,
    ];
    let rows = bad.iter().flat_map(|name| {
        ["wait", "notify", "events"]
            .map(|route| (format!("/{route}/{name}"), get(&format!("/{route}/{name}"))))
    });
    check_rows(rows, |_, request| {
        let got = server.request(&request);
        assert_eq!(got.status, 400, "{got:?}");
    });

    let longest = "x".repeat(64);
    let good = ["Az09._~-", "..", &longest];
    check_rows(
        good.iter().map(|name| (name.to_string(), *name)),
        |_, name| {
            let mut waiter = send(&server, &get(&format!("/wait/{name}")));
            Counter::new(&server).await_parked(1);
            assert_eq!(notify(&server, &format!("/notify/{name}")).reached, 1);
            assert_count_answer(&waiter.read_response(), 1, name);
        },
    );
    server.assert_still_serves();
}

/// `/wait/` names the empty channel, which is not a valid name: 400 like any other bad name,
/// not 404 as if it were some other route.
#[test]
fn an_empty_channel_name_gets_400() {
    let server = Server::start();
    check_rows(
        ["/wait/", "/notify/", "/events/"].map(|path| (path.to_string(), path)),
        |_, path| {
            let got = server.request(&get(path));
            assert_eq!(got.status, 400, "{got:?}");
        },
    );
    assert_eq!(Counter::new(&server).parked(), 0);
    server.assert_still_serves();
}

fn assert_503_retry_after(got: &Response, case: &str) {
    assert_eq!(got.status, 503, "{case}: {got:?}");
    let retry = got
        .header("retry-after")
        .unwrap_or_else(|| panic!("{case}: no Retry-After: {got:?}"));
    assert!(
        retry.parse::<u64>().is_ok(),
        "{case}: Retry-After {retry:?} is not delay-seconds"
    );
}

/// `--comet-max-channels 3 --comet-channel-ttl 1`: a fourth channel waits until the idle one
/// expires; channels with a waiter or a subscriber never do.
#[test]
fn the_channel_limit_answers_503_until_an_idle_channel_expires() {
    let server = Server::start_with(&["--comet-max-channels", "3", "--comet-channel-ttl", "1"]);
    let mut counter = Counter::new(&server);
    let mut waiter = send(&server, &get("/wait/waited"));
    counter.await_parked(1);
    let mut stream = subscribe(&server, &get("/events/streamed"));
    assert_eq!(notify(&server, "/notify/idle").reached, 0);

    for path in ["/notify/fourth", "/wait/fourth", "/events/fourth"] {
        assert_503_retry_after(&server.request(&get(path)), path);
        server.assert_still_serves();
    }
    let refused_post = server.request(&post("/notify/fourth", b"x"));
    assert_503_retry_after(&refused_post, "POST /notify/fourth");

    // `idle` expires after its TTL and makes room.
    let mut tries = 0;
    let fourth = loop {
        let got = server.request(&get("/notify/fourth"));
        if got.status == 200 {
            break published(got);
        }
        assert_503_retry_after(&got, "while waiting for room");
        tries += 1;
        assert!(tries < POLL_TRIES, "no room ever came back");
        thread::sleep(POLL_PAUSE);
    };
    assert_eq!(fourth.reached, 0);
    assert_503_retry_after(&server.request(&get("/notify/fifth")), "full again");

    // Long idle, but the waiter and the subscriber kept theirs.
    let waited = notify(&server, "/notify/waited");
    assert_eq!(waited.reached, 1, "the waiter's channel was dropped");
    assert_count_answer(&waiter.read_response(), 1, "waiter");
    let streamed = notify(&server, "/notify/streamed");
    assert_eq!(streamed.reached, 1, "the subscriber's channel was dropped");
    assert_eq!(
        skip_heartbeats(|| next_chunk(&mut stream)),
        event(&streamed.id, "1")
    );
    server.assert_still_serves();
}
