//! The timing rules, tested without sleeping: connections of the real server driven by
//! `miohttpd::fuzzing::Driver` under a scripted clock that moves only when the test says so.
//! Head, idle, body and send timeouts, the lingering close, the comet timeout, the SSE
//! heartbeat and the connection-level side of a graceful shutdown, each at its exact
//! boundary: one tick before the limit nothing happens, at the limit it does.
//!
//! The real loop's timers are still exercised end to end by a few real-time tests in
//! `tests/hardening.rs` (one slowloris, one idle close, one send-timeout drop, the shutdowns).

mod common;

use std::time::Duration;

use common::{check_rows, md5_hex, post, post_chunked, GET_PLAINTEXT};
use miohttpd::fuzzing::{ClientId, Driver, Step, Trace};
use miohttpd::Config;

/// The smallest step of the scripted clock.
const TICK: Duration = Duration::from_nanos(1);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every timeout at 1 s, the rest as by default (linger 2 s, SSE heartbeat 15 s, grace 10 s).
fn one_second_timeouts() -> Config {
    Config {
        head_timeout: secs(1),
        idle_timeout: secs(1),
        body_timeout: secs(1),
        send_timeout: secs(1),
        ..Config::default()
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// The status codes of the responses in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// Moves the clock to just before `at`, then to `at`: what the connection looked like one
/// tick before, and at the limit.
fn straddle(driver: &mut Driver, client: ClientId, at: Duration) -> (Trace, Trace) {
    driver.advance(at - TICK - driver.elapsed());
    let before = driver.trace(client);
    driver.advance(TICK);
    (before, driver.trace(client))
}

/// Asserts nothing happened at `at - TICK` beyond what had been written before, and that at
/// `at` an error `status` with `Connection: close` was written and our side shut down.
fn assert_error_at(before: &Trace, after: &Trace, at: Duration, status: u16, case: &str) {
    assert_eq!(before.closed_at, None, "{case}: closed early: {before:?}");
    assert_eq!(before.write_shut_at, None, "{case}: {before:?}");
    assert!(
        !statuses(&before.output()).contains(&status),
        "{case}: {status} before {at:?}: {before:?}"
    );
    let answer = String::from_utf8_lossy(&after.written_at(at)).into_owned();
    assert_eq!(
        statuses(answer.as_bytes()),
        [status],
        "{case}: at {at:?}: {after:?}"
    );
    assert!(answer.contains("Connection: close\r\n"), "{case}: {answer}");
    assert_eq!(
        after.write_shut_at,
        Some(at),
        "{case}: lingering: {after:?}"
    );
}

/// Asserts a silent close exactly at `at`: open one tick before, then closed with nothing
/// written since `written_before`.
fn assert_silent_close_at(before: &Trace, after: &Trace, at: Duration, case: &str) {
    assert_eq!(before.closed_at, None, "{case}: closed early: {before:?}");
    assert_eq!(after.closed_at, Some(at), "{case}: {after:?}");
    assert_eq!(
        after.output(),
        before.output(),
        "{case}: wrote at the close"
    );
    assert_eq!(after.write_shut_at, None, "{case}: no lingering: {after:?}");
}

// ---- Head timeout ----

/// The head timeout runs from accept for a first request and from the first byte of the head
/// on a kept-alive connection; bytes trickling in do not push it back. At its end a started
/// head gets 408; a connection that never sent a byte is closed without an answer.
#[test]
fn the_head_timeout_ends_a_slow_head_at_its_limit() {
    let head = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaa\r\n\r\n";
    // (case, a kept-alive request answered first, when the head's first byte comes, the limit)
    let rows = [
        ("never a byte", false, None, secs(1)),
        ("first request, from accept", false, Some(ms(300)), secs(1)),
        (
            "kept-alive, from its first byte",
            true,
            Some(ms(500)),
            ms(1500),
        ),
    ];
    check_rows(
        rows.map(|(case, kept, first, limit)| (case.to_string(), (kept, first, limit))),
        |case, (kept_alive, first_byte, limit)| {
            let mut driver = Driver::new(one_second_timeouts());
            let client = driver.connect();
            if kept_alive {
                driver.send(client, GET_PLAINTEXT);
                assert_eq!(statuses(&driver.trace(client).output()), [200], "{case}");
            }
            if let Some(first_byte) = first_byte {
                driver.advance(first_byte);
                // A byte every 200 ms: the whole head would take 14 s.
                let mut bytes = head.iter();
                while driver.elapsed() + ms(200) < limit {
                    driver.send(client, std::slice::from_ref(bytes.next().unwrap()));
                    driver.advance(ms(200));
                }
                driver.send(client, std::slice::from_ref(bytes.next().unwrap()));
            }
            let (before, after) = straddle(&mut driver, client, limit);
            if first_byte.is_none() {
                return assert_silent_close_at(&before, &after, limit, case);
            }
            assert_error_at(&before, &after, limit, 408, case);
        },
    );
}

/// `0` turns the head and idle timeouts off.
#[test]
fn zero_disables_the_head_and_idle_timeouts() {
    let config = Config {
        head_timeout: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        ..Config::default()
    };
    let mut driver = Driver::new(config);
    let silent = driver.connect();
    let started = driver.connect();
    driver.send(started, b"GET /plaintext HTT");
    let idle = driver.connect();
    driver.send(idle, GET_PLAINTEXT);
    driver.advance(secs(24 * 3600));
    for client in [silent, started, idle] {
        assert!(
            driver.is_open(client),
            "client {client}: {:?}",
            driver.trace(client)
        );
    }
    driver.send(started, b"P/1.1\r\nHost: x\r\n\r\n");
    driver.send(idle, GET_PLAINTEXT);
    assert_eq!(statuses(&driver.trace(started).output()), [200]);
    assert_eq!(statuses(&driver.trace(idle).output()), [200, 200]);
}

/// A fractional timeout is kept to the nanosecond.
#[test]
fn a_fractional_head_timeout_closes_at_its_exact_length() {
    let config = Config {
        head_timeout: ms(500),
        ..Config::default()
    };
    let mut driver = Driver::new(config);
    let client = driver.connect();
    let (before, after) = straddle(&mut driver, client, ms(500));
    assert_silent_close_at(&before, &after, ms(500), "--head-timeout 0.5");
}

// ---- Idle timeout ----

/// Between requests the idle timeout rules, not the head timeout, counted from the end of
/// the last response; it closes silently.
#[test]
fn between_requests_the_idle_timeout_rules() {
    // (case, head timeout, idle timeout)
    let rows = [
        ("idle shorter than head", secs(30), secs(1)),
        ("idle longer than head", secs(1), secs(30)),
    ];
    check_rows(
        rows.map(|(case, head, idle)| (case.to_string(), (head, idle))),
        |case, (head_timeout, idle_timeout)| {
            let config = Config {
                head_timeout,
                idle_timeout,
                ..Config::default()
            };
            let mut driver = Driver::new(config);
            let client = driver.connect();
            // The idle clock starts at the answer, at 0.5 s.
            driver.advance(ms(500));
            driver.send(client, GET_PLAINTEXT);
            assert_eq!(statuses(&driver.trace(client).output()), [200], "{case}");
            let at = ms(500) + idle_timeout;
            let (before, after) = straddle(&mut driver, client, at);
            assert_silent_close_at(&before, &after, at, case);
            assert!(!after.cut_off, "{case}: everything was taken: {after:?}");
        },
    );

    // A client that thinks for longer than the head timeout (but not the idle one) is served.
    let config = Config {
        head_timeout: secs(1),
        idle_timeout: secs(30),
        ..Config::default()
    };
    let mut driver = Driver::new(config);
    let client = driver.connect();
    driver.send(client, GET_PLAINTEXT);
    driver.advance(secs(2));
    driver.send(client, GET_PLAINTEXT);
    let trace = driver.trace(client);
    assert_eq!(statuses(&trace.written_at(secs(2))), [200], "{trace:?}");
    assert!(driver.is_open(client));
}

/// A client that keeps sending requests, each a tick within every timeout, for ten times as
/// long as any of them is never cut off.
#[test]
fn a_connection_that_keeps_sending_requests_stays_open() {
    let mut driver = Driver::new(one_second_timeouts());
    let client = driver.connect();
    for round in 0..10 {
        driver.advance(secs(1) - TICK);
        driver.send(client, GET_PLAINTEXT);
        driver.send(client, &post("/md5", b"abc"));
        let answers = statuses(&driver.trace(client).written_at(driver.elapsed()));
        assert_eq!(answers, [200, 200], "round {round}");
    }
    assert!(driver.is_open(client), "{:?}", driver.trace(client));
}

// ---- Body timeout ----

/// A body that stops arriving, at every place its framing can stop, gets 408 and a close,
/// exactly the body timeout after its last byte (or after the head, with no body byte).
#[test]
fn a_stalled_body_gets_408_at_the_body_timeout_after_its_last_byte() {
    let length_head =
        |n: usize| format!("POST /md5 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {n}\r\n\r\n");
    let chunked_head =
        "POST /md5 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    // (case, head, body bytes sent 700 ms after the head)
    let rows = [
        ("Content-Length, no body byte", length_head(100), ""),
        (
            "Content-Length, part of the body",
            length_head(100),
            "0123456789",
        ),
        ("chunked, no body byte", chunked_head.to_string(), ""),
        ("chunked, inside a size line", chunked_head.to_string(), "6"),
        (
            "chunked, inside a chunk",
            chunked_head.to_string(),
            "64\r\n0123456789",
        ),
        (
            "chunked, between chunks",
            chunked_head.to_string(),
            "a\r\n0123456789\r\n",
        ),
        (
            "chunked, inside the trailer",
            chunked_head.to_string(),
            "a\r\n0123456789\r\n0\r\n",
        ),
    ];
    check_rows(
        rows.map(|(case, head, body)| (case.to_string(), (head, body))),
        |case, (head, body)| {
            let mut driver = Driver::new(one_second_timeouts());
            let client = driver.connect();
            driver.send(client, head.as_bytes());
            driver.advance(ms(700));
            let limit = if body.is_empty() {
                secs(1)
            } else {
                driver.send(client, body.as_bytes());
                ms(1700)
            };
            let (before, after) = straddle(&mut driver, client, limit);
            assert_error_at(&before, &after, limit, 408, case);
        },
    );
}

/// The body timeout bounds the pause between body bytes, not the whole body: one that
/// trickles in a byte a tick under the timeout, for far longer than the body and head
/// timeouts, completes and the connection serves on.
#[test]
fn a_body_that_keeps_trickling_completes() {
    let body = b"a body sent a byte at a time";
    let rows = [
        ("Content-Length", post("/md5", body)),
        ("chunked", post_chunked("/md5", body, 4)),
    ];
    check_rows(
        rows.map(|(case, request)| (case.to_string(), request)),
        |case, request| {
            let mut driver = Driver::new(one_second_timeouts());
            let client = driver.connect();
            let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            driver.send(client, &request[..head_end]);
            for byte in &request[head_end..] {
                driver.advance(secs(1) - TICK);
                driver.send(client, std::slice::from_ref(byte));
            }
            let trace = driver.trace(client);
            assert!(driver.elapsed() > secs(20), "{case}");
            let answer = String::from_utf8_lossy(&trace.written_at(driver.elapsed())).into_owned();
            assert_eq!(statuses(answer.as_bytes()), [200], "{case}: {trace:?}");
            assert!(answer.ends_with(&md5_hex(body)), "{case}: {answer}");
            driver.send(client, GET_PLAINTEXT);
            assert_eq!(
                statuses(&driver.trace(client).output()),
                [200, 200],
                "{case}"
            );
        },
    );
}

// ---- Send timeout ----

/// Enough pipelined requests that their answers pass the output high-water mark.
fn many_requests() -> Vec<u8> {
    GET_PLAINTEXT.repeat(2000)
}

/// A client that pipelines requests without reading the answers is dropped (no answer, no
/// lingering) exactly the send timeout after its output first got stuck.
#[test]
fn a_client_that_reads_nothing_is_dropped_at_the_send_timeout() {
    let mut driver = Driver::new(one_second_timeouts());
    let client = driver.connect();
    driver.stop_reading(client);
    driver.advance(ms(300));
    driver.send(client, &many_requests());
    let (before, after) = straddle(&mut driver, client, ms(1300));
    assert_silent_close_at(&before, &after, ms(1300), "reads nothing");
    assert!(after.output().is_empty());
    assert!(after.cut_off, "dropped with its answers unsent: {after:?}");
}

/// The send timeout is about a client that takes nothing: one that takes a few bytes now and
/// then, with no writable edge to tell the server (a socket gives one only when much of its
/// buffer is free), keeps its connection for as long as it goes on; once it stops, it is
/// dropped the send timeout after the last bytes it took.
#[test]
fn a_slow_but_steady_reader_is_not_dropped() {
    let mut driver = Driver::new(one_second_timeouts());
    let client = driver.connect();
    driver.stop_reading(client);
    driver.send(client, &many_requests());
    for _ in 1..=6 {
        driver.advance(ms(500));
        driver.take(client, 200);
        driver.advance(ms(500));
        assert!(driver.is_open(client), "dropped at {:?}", driver.elapsed());
    }
    let trace = driver.trace(client);
    // Taken in the middle of each second; the deadline at its end finds the room and writes.
    let write_times: Vec<Duration> = trace.writes.iter().map(|(at, _)| *at).collect();
    assert_eq!(
        write_times,
        (1..=6).map(secs).collect::<Vec<_>>(),
        "{trace:?}"
    );
    assert_eq!(trace.output().len(), 1200);
    // It stops taking: the deadline at 7 s finds nothing taken and drops it.
    let (before, after) = straddle(&mut driver, client, secs(7));
    assert_silent_close_at(&before, &after, secs(7), "stopped taking");

    // And one that starts reading again gets every answer.
    let mut driver = Driver::new(one_second_timeouts());
    let client = driver.connect();
    driver.stop_reading(client);
    driver.send(client, &many_requests());
    driver.advance(secs(1) - TICK);
    driver.start_reading(client);
    assert!(driver.is_open(client));
    assert_eq!(statuses(&driver.trace(client).output()), vec![200; 2000]);
}

/// The idle clock starts when the client has taken the whole answer, not when it was queued:
/// one that takes longer than the idle timeout to read an answer (within the send timeout)
/// then gets the full idle timeout to send its next request.
#[test]
fn the_idle_clock_starts_when_the_answer_is_taken() {
    let config = Config {
        idle_timeout: secs(1),
        send_timeout: secs(10),
        ..Config::default()
    };
    let mut driver = Driver::new(config);
    let client = driver.connect();
    driver.stop_reading(client);
    driver.send(client, GET_PLAINTEXT);
    driver.advance(secs(5));
    driver.start_reading(client);
    let trace = driver.trace(client);
    assert_eq!(statuses(&trace.written_at(secs(5))), [200], "{trace:?}");
    assert_eq!(
        trace.closed_at, None,
        "closed as its answer went out: {trace:?}"
    );
    let at = secs(5) + secs(1);
    let (before, after) = straddle(&mut driver, client, at);
    assert_silent_close_at(&before, &after, at, "idle from the answer taken");
}

// ---- Lingering close ----

/// After an error answer with the client's bytes unread, the server shuts down its side and
/// drains the client's until its EOF or the linger deadline, whichever comes first; bytes
/// arriving meanwhile do not push the deadline back.
#[test]
fn a_lingering_close_ends_at_the_peers_eof_or_the_linger_deadline() {
    let linger = secs(2);
    // (case, client bytes every 500 ms during the linger, its EOF, when the close comes)
    let rows = [
        ("silent client", false, None, linger),
        ("client keeps sending", true, None, linger),
        ("client's EOF", false, Some(ms(700)), ms(700)),
        ("client sends, then EOF", true, Some(ms(1200)), ms(1200)),
    ];
    check_rows(
        rows.map(|(case, sends, eof, close)| (case.to_string(), (sends, eof, close))),
        |case, (keeps_sending, eof, close_at)| {
            let mut driver = Driver::new(Config {
                linger,
                ..Config::default()
            });
            let client = driver.connect();
            driver.send(client, b"\x00garbage\r\n\r\nGET / HTTP/1.1\r\n");
            let trace = driver.trace(client);
            assert_eq!(statuses(&trace.written_at(Duration::ZERO)), [400], "{case}");
            assert_eq!(trace.write_shut_at, Some(Duration::ZERO), "{case}");
            while driver.elapsed() + ms(500) < close_at {
                driver.advance(ms(500));
                if keeps_sending {
                    driver.send(client, b"more bytes nobody reads");
                }
            }
            if let Some(eof) = eof {
                driver.advance(eof - driver.elapsed());
                assert!(driver.is_open(client), "{case}");
                driver.shutdown_write(client);
            } else {
                let (before, _) = straddle(&mut driver, client, close_at);
                assert_eq!(before.closed_at, None, "{case}");
            }
            let trace = driver.trace(client);
            assert_eq!(trace.closed_at, Some(close_at), "{case}: {trace:?}");
            assert_eq!(statuses(&trace.output()), [400], "{case}");
        },
    );
}

// ---- Comet ----

/// A parked waiter is neither idle nor in the middle of a head: only the comet timeout
/// applies, and it answers 204; the idle clock starts at the answer.
#[test]
fn a_parked_waiter_gets_204_at_the_comet_timeout_and_nothing_else() {
    let config = Config {
        comet_timeout: secs(4),
        ..one_second_timeouts()
    };
    let mut driver = Driver::new(config);
    let waiter = driver.connect();
    driver.send(waiter, &get("/wait/w"));
    let (before, after) = straddle(&mut driver, waiter, secs(4));
    assert!(before.output().is_empty(), "{before:?}");
    let answer = String::from_utf8_lossy(&after.written_at(secs(4))).into_owned();
    assert_eq!(statuses(answer.as_bytes()), [204], "{after:?}");
    assert!(!answer.contains("Connection: close"), "{answer}");
    let (before, after) = straddle(&mut driver, waiter, secs(5));
    assert_silent_close_at(&before, &after, secs(5), "idle after the 204");
}

/// Notified before its timeout, a waiter is answered at once; its idle clock starts at that
/// answer, not at its request, and the comet timeout it had no longer fires.
#[test]
fn a_notified_waiter_is_answered_at_once_and_then_idles_from_its_answer() {
    let config = Config {
        comet_timeout: secs(4),
        idle_timeout: secs(3),
        ..one_second_timeouts()
    };
    let mut driver = Driver::new(config);
    let waiter = driver.connect();
    driver.send(waiter, &get("/wait/w"));
    driver.advance(ms(2500));
    let notifier = driver.connect();
    driver.send(notifier, &get("/notify/w"));
    let answer = driver.trace(waiter).written_at(ms(2500));
    assert_eq!(statuses(&answer), [200]);
    assert!(
        String::from_utf8_lossy(&answer).ends_with("\r\n\r\n1"),
        "{answer:?}"
    );
    let (before, after) = straddle(&mut driver, waiter, ms(5500));
    assert_silent_close_at(&before, &after, ms(5500), "idle after the message");
    assert_eq!(
        statuses(&after.output()),
        [200],
        "a 204 at the old comet timeout"
    );
}

/// With no comet timeout (the default) a waiter waits as long as it takes.
#[test]
fn without_a_comet_timeout_a_waiter_waits_indefinitely() {
    let mut driver = Driver::new(one_second_timeouts());
    let waiter = driver.connect();
    driver.send(waiter, &get("/wait/w"));
    driver.advance(secs(24 * 3600));
    assert!(driver.is_open(waiter));
    assert!(driver.trace(waiter).output().is_empty());
}

/// An event stream gets a heartbeat every interval, exactly, and no other timeout applies.
#[test]
fn an_event_stream_gets_a_heartbeat_every_interval() {
    let heartbeat = secs(15);
    let mut driver = Driver::new(Config {
        sse_heartbeat: heartbeat,
        ..one_second_timeouts()
    });
    let subscriber = driver.connect();
    driver.send(subscriber, &get("/events/e"));
    let head = driver.trace(subscriber).written_at(Duration::ZERO);
    assert_eq!(statuses(&head), [200]);
    for beat in 1..=4 {
        let at = heartbeat * beat;
        let (before, after) = straddle(&mut driver, subscriber, at);
        assert_eq!(before.last_write_at(), Some(at - heartbeat), "beat {beat}");
        assert_eq!(
            after.written_at(at),
            b"d\r\n: heartbeat\n\n\r\n",
            "beat {beat}"
        );
    }
    // A subscriber that stops reading after its head has nothing pending, so no timeout
    // applies to it until the next heartbeat waits for it; the send timeout drops it then.
    driver.advance(heartbeat * 5 - TICK - driver.elapsed());
    let stalled = driver.connect();
    driver.send(stalled, &get("/events/e"));
    driver.stop_reading(stalled);
    let (before, after) = straddle(&mut driver, stalled, heartbeat * 6 - TICK + secs(1));
    assert_eq!(before.writes.len(), 1, "the head only: {before:?}");
    assert_silent_close_at(&before, &after, heartbeat * 6 - TICK + secs(1), "stalled");
    // A message resets nothing: the heartbeats keep their beat.
    let notifier = driver.connect();
    driver.send(notifier, &post("/notify/e", b"hello"));
    let event = driver.trace(subscriber).written_at(driver.elapsed());
    assert!(
        String::from_utf8_lossy(&event).contains("data: hello\n"),
        "{event:?}"
    );
    let (_, after) = straddle(&mut driver, subscriber, heartbeat * 7);
    assert_eq!(after.written_at(heartbeat * 7), b"d\r\n: heartbeat\n\n\r\n");
    assert!(driver.is_open(subscriber));
}

// ---- Shutdown ----

/// What SIGTERM does to each kind of connection: an idle one closes at once, a waiter is
/// told to come back (503, Retry-After), an event stream ends, a head or body being read is
/// answered when it completes, with `Connection: close`; the server is done once none is left.
#[test]
fn a_shutdown_winds_down_each_connection() {
    let mut driver = Driver::new(one_second_timeouts());
    let idle = driver.connect();
    driver.send(idle, GET_PLAINTEXT);
    let partial_head = driver.connect();
    driver.send(partial_head, b"GET /plaintext HTTP/1.1\r\nHo");
    let upload = driver.connect();
    let request = post("/md5", b"0123456789");
    driver.send(upload, &request[..request.len() - 5]);
    let waiter = driver.connect();
    driver.send(waiter, &get("/wait/w"));
    let subscriber = driver.connect();
    driver.send(subscriber, &get("/events/e"));
    driver.advance(ms(300));

    driver.shutdown();
    let now = ms(300);
    let idle_trace = driver.trace(idle);
    assert_eq!(idle_trace.closed_at, Some(now), "idle: {idle_trace:?}");
    assert_eq!(statuses(&idle_trace.output()), [200]);
    let waiter_trace = driver.trace(waiter);
    let answer = String::from_utf8_lossy(&waiter_trace.written_at(now)).into_owned();
    assert_eq!(statuses(answer.as_bytes()), [503], "{answer}");
    assert!(answer.contains("Retry-After: 1\r\n") && answer.contains("Connection: close\r\n"));
    assert_eq!(waiter_trace.closed_at, Some(now));
    let subscriber_trace = driver.trace(subscriber);
    assert_eq!(subscriber_trace.written_at(now), b"0\r\n\r\n");
    assert_eq!(subscriber_trace.closed_at, Some(now));
    let latecomer = driver.connect();
    assert!(
        !driver.is_open(latecomer),
        "a connection accepted after the signal"
    );

    driver.advance(ms(200));
    driver.send(partial_head, b"st: localhost\r\n\r\n");
    let late_head = driver.trace(partial_head);
    let answer = String::from_utf8_lossy(&late_head.written_at(ms(500))).into_owned();
    assert_eq!(statuses(answer.as_bytes()), [200], "{late_head:?}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert_eq!(late_head.closed_at, Some(ms(500)));
    assert_eq!(
        driver.stopped_at(),
        None,
        "stopped with an upload in flight"
    );

    driver.advance(ms(200));
    driver.send(upload, &request[request.len() - 5..]);
    let digest = driver.trace(upload);
    let answer = String::from_utf8_lossy(&digest.written_at(ms(700))).into_owned();
    assert!(answer.ends_with(&md5_hex(b"0123456789")), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert_eq!(digest.closed_at, Some(ms(700)));
    assert_eq!(driver.stopped_at(), Some(ms(700)), "nothing left in flight");
}

/// What is still in flight when the grace ends is closed then, and not a tick before; the
/// timeouts keep running during the grace.
#[test]
fn the_shutdown_grace_ends_what_is_left_at_its_end() {
    let config = Config {
        shutdown_grace: secs(10),
        ..Config::default()
    };
    let mut driver = Driver::new(config);
    let upload = driver.connect();
    driver.send(upload, &post("/md5", &[b'x'; 1000])[..500]);
    driver.advance(secs(1));
    driver.shutdown();
    let (before, after) = straddle(&mut driver, upload, secs(11));
    assert_eq!(before.closed_at, None);
    assert_eq!(driver.stopped_at(), Some(secs(11)));
    assert_eq!(after.closed_at, Some(secs(11)));
    assert!(after.output().is_empty(), "{after:?}");

    let mut driver = Driver::new(one_second_timeouts());
    let slow = driver.connect();
    driver.send(slow, b"GET / HTTP/1.1\r\n");
    driver.shutdown();
    let (before, after) = straddle(&mut driver, slow, secs(1));
    assert_error_at(
        &before,
        &after,
        secs(1),
        408,
        "head timeout during the grace",
    );

    // A timeout due at the grace's very end still fires (the loop fires a wake-up's timers
    // before it looks at the grace), then the close comes.
    let mut driver = Driver::new(Config {
        shutdown_grace: secs(1),
        ..one_second_timeouts()
    });
    let slow = driver.connect();
    driver.send(slow, b"GET / HTTP/1.1\r\n");
    driver.shutdown();
    let (before, after) = straddle(&mut driver, slow, secs(1));
    assert_error_at(
        &before,
        &after,
        secs(1),
        408,
        "head timeout at the grace's end",
    );
    assert_eq!(after.closed_at, Some(secs(1)));
    assert_eq!(driver.stopped_at(), Some(secs(1)));
}

/// With nothing in flight the server stops at the signal.
#[test]
fn with_nothing_in_flight_the_shutdown_is_immediate() {
    let mut driver = Driver::new(Config::default());
    let client = driver.connect();
    driver.send(
        client,
        b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(driver.trace(client).closed_at, Some(Duration::ZERO));
    driver.advance(ms(250));
    driver.shutdown();
    assert_eq!(driver.stopped_at(), Some(ms(250)));
}

// ---- The driver itself ----

/// A script is a plain list of steps; `run` plays it on one connection.
#[test]
fn a_script_runs_as_a_list_of_steps() {
    let trace = miohttpd::fuzzing::run(
        one_second_timeouts(),
        &[
            Step::Send(GET_PLAINTEXT),
            Step::Advance(ms(400)),
            Step::StopReading,
            Step::Send(GET_PLAINTEXT),
            Step::Advance(ms(400)),
            Step::StartReading,
            Step::Send(b"GET /plain"),
            Step::Advance(secs(1) - TICK),
            Step::Advance(TICK),
            Step::ShutdownWrite,
        ],
    );
    let times: Vec<Duration> = trace.writes.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, [Duration::ZERO, ms(800), ms(1800)], "{trace:?}");
    assert_eq!(statuses(&trace.output()), [200, 200, 408]);
    assert_eq!(trace.write_shut_at, Some(ms(1800)), "{trace:?}");
    assert_eq!(trace.closed_at, Some(ms(1800)), "{trace:?}");
}
