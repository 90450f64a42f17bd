//! Fuzz target `redis_session`: the Redis link's state machine (`Session`), brought up with a
//! well-formed handshake and given three publishes and a catch-up read, then fed arbitrary
//! replies on both connections in arbitrary pieces, with time passing between them. Whatever
//! Redis (or an impostor) sends: no panic, every request answered exactly once (by its reply,
//! or `Unavailable` when the link goes down), the link either up or waiting out a back-off,
//! and the output buffers bounded by what was asked of it.
//!
//! Input: payload, then two control bytes: which connection each piece goes to (bit i of a
//! xorshift sequence seeded by the byte) and how the payload is cut into reads (see `cut`).

#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use miohttpd::redis::resp::Limits;
use miohttpd::redis::scripts::KeySpace;
use miohttpd::redis::session::{Conn, Event, LinkState, Publish, Session, SessionConfig};
use miohttpd_fuzz::{cut, take_controls};

fuzz_target!(|data: &[u8]| {
    let Some(([route_control, cut_control], payload)) = take_controls::<2>(data) else {
        return;
    };
    let t = Instant::now();
    let mut s = Session::new(config(), t);
    while s.poll_action().is_some() {}
    s.connected(Conn::Command, t);
    s.connected(Conn::Subscriber, t);
    s.received(Conn::Command, b"$3\r\nsh1\r\n$3\r\nsh2\r\n$3\r\nsh3\r\n:1\r\n", t);
    s.received(
        Conn::Subscriber,
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\np:bus\r\n:1\r\n\
          *3\r\n$9\r\nsubscribe\r\n$9\r\np:host:me\r\n:2\r\n",
        t,
    );
    assert_eq!(s.state(), LinkState::Up);
    let mut answers: HashMap<u64, usize> = HashMap::new();
    for request in 1..=3 {
        let message = Publish {
            // One is a `GET /notify` count's message, named so on the bus.
            answers: (request == 3).then_some(7),
            ..Publish::new("c", "text/plain", b"body")
        };
        s.publish(request, message, t).unwrap();
        answers.insert(request, 0);
    }
    s.history(4, "c", Some((9, 1)), true, t).unwrap();
    answers.insert(4, 0);

    let mut route = u32::from(route_control) | 1;
    let mut now = t;
    for piece in cut(payload, cut_control, true) {
        route ^= route << 13;
        route ^= route >> 17;
        route ^= route << 5;
        let conn = if route & 1 == 0 { Conn::Command } else { Conn::Subscriber };
        s.received(conn, piece, now);
        now += Duration::from_millis(u64::from(route >> 24) % 300);
        s.tick(now);
        drain(&mut s, &mut answers);
        let output = s.output(Conn::Command).len() + s.output(Conn::Subscriber).len();
        assert!(output < 1 << 20, "output grew to {output} bytes");
        while s.poll_action().is_some() {}
    }
    // The link goes down at the end: whatever is still pending is answered now.
    s.failed(Conn::Command, "end of input", now);
    drain(&mut s, &mut answers);
    for (request, count) in answers {
        assert_eq!(count, 1, "request {request} answered {count} times");
    }
    assert_ne!(s.state(), LinkState::Up);
});

fn drain(s: &mut Session, answers: &mut HashMap<u64, usize>) {
    while let Some(event) = s.poll_event() {
        match event {
            Event::Published { request, .. } | Event::History { request, .. } => {
                *answers.get_mut(&request).expect("an answer to a request made") += 1;
            }
            _ => {}
        }
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 6379)),
        username: None,
        password: None,
        db: 0,
        keys: KeySpace::new("p"),
        host: "me".into(),
        history: 8,
        key_ttl: Duration::ZERO,
        probe_interval: Duration::from_millis(1000),
        reply_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        // Small, so the limits are reached with short inputs.
        limits: Limits {
            max_bulk: 64,
            max_array: 8,
            max_depth: 3,
            max_line: 32,
            max_reply: 256,
        },
    }
}
