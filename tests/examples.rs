//! The example servers built on the library: `echo` (a buffered route with a 1 MiB limit: exact
//! bytes back, the limit's boundary, 413 by Content-Length, by `Expect: 100-continue` and by a
//! growing chunked body), `count` (a streamed route counting bytes and lines) and `longpoll`
//! (a long-poll of its own on the public park and server-state primitives).

mod common;

use std::thread;

use common::{assert_error_and_close, post, post_chunked, PseudoRandom, Server};

const MIB: usize = 1 << 20;

#[test]
fn echo_returns_the_exact_body() {
    let server = Server::start_example("echo", &[]);
    let all_bytes: Vec<u8> = (0..=255).collect();
    let limit = PseudoRandom::bytes(1, MIB);
    let cases: [(&str, Vec<u8>, &[u8]); 6] = [
        ("empty", post("/echo", b""), b""),
        ("text", post("/echo", b"hello"), b"hello"),
        ("every byte value", post("/echo", &all_bytes), &all_bytes),
        ("exactly 1 MiB", post("/echo", &limit), &limit),
        ("chunked", post_chunked("/echo", &all_bytes, 10), &all_bytes),
        (
            "exactly 1 MiB chunked",
            post_chunked("/echo", &limit, 65_536),
            &limit,
        ),
    ];
    let mut conn = server.connect();
    for (name, request, expected) in cases {
        conn.send(&request);
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{name}: {response:?}");
        assert_eq!(
            response.header("content-type"),
            Some("application/octet-stream"),
            "{name}"
        );
        response.assert_standard_headers();
        assert!(
            response.body == expected,
            "{name}: body differs ({} bytes back)",
            response.body.len()
        );
    }
}

#[test]
fn echo_answers_100_continue_within_the_limit() {
    let server = Server::start_example("echo", &[]);
    let body = PseudoRandom::bytes(2, MIB);
    let mut conn = server.connect();
    conn.send(format!("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {MIB}\r\n\r\n").as_bytes());
    let interim = conn.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.send(&body);
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.body == body,
        "body differs ({} bytes back)",
        response.body.len()
    );
}

#[test]
fn echo_rejects_a_declared_body_over_the_limit_before_reading_it() {
    let cases: [(&str, String); 2] = [
        (
            "Content-Length 1 MiB + 1",
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", MIB + 1),
        ),
        (
            "Content-Length 1 MiB + 1 with Expect: 100-continue",
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", MIB + 1),
        ),
    ];
    let server = Server::start_example("echo", &[]);
    for (name, head) in cases {
        // Only the head is sent: the 413 must come without waiting for the body.
        let mut conn = server.connect();
        conn.send(head.as_bytes());
        assert_error_and_close(&server, &mut conn, &[413], name);
    }
}

#[test]
fn echo_rejects_a_chunked_body_growing_past_the_limit() {
    let server = Server::start_example("echo", &[]);
    let mut conn = server.connect();
    let mut writer = conn.stream().try_clone().unwrap();
    // 16 chunks of 64 KiB reach the limit exactly; one more byte crosses it. No last chunk.
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = PseudoRandom::bytes(4, 65_536);
    for _ in 0..16 {
        request.extend_from_slice(b"10000\r\n");
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"1\r\nx\r\n");
    let sender = thread::spawn(move || {
        use std::io::Write;
        // The server may close as soon as it has seen enough; later writes may then fail.
        let _ = writer.write_all(&request);
    });
    assert_error_and_close(&server, &mut conn, &[413], "chunked body over 1 MiB");
    sender.join().unwrap();
}

#[test]
fn count_reports_bytes_and_lines() {
    let big = PseudoRandom::bytes(8, 10_000_000);
    let big_lines = big.iter().filter(|&&b| b == b'\n').count();
    let big_expected = format!("{} {big_lines}\n", big.len());
    let cases: [(&str, Vec<u8>, String); 7] = [
        ("empty", post("/count", b""), "0 0\n".to_string()),
        (
            "no newline",
            post("/count", b"no newline"),
            "10 0\n".to_string(),
        ),
        ("two lines", post("/count", b"a\nb\n"), "4 2\n".to_string()),
        (
            "only newlines",
            post("/count", b"\n\n\n"),
            "3 3\n".to_string(),
        ),
        (
            "CRLF lines",
            post_chunked("/count", b"a\r\nb\r\nc", 2),
            "7 2\n".to_string(),
        ),
        ("10 MB", post("/count", &big), big_expected.clone()),
        (
            "10 MB chunked",
            post_chunked("/count", &big, 100_000),
            big_expected,
        ),
    ];
    let server = Server::start_example("count", &[]);
    let mut conn = server.connect();
    for (name, request, expected) in cases {
        conn.send(&request);
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{name}: {response:?}");
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{name}: {response:?}"
        );
        assert_eq!(response.text(), expected, "{name}");
    }
}

#[test]
fn longpoll_parks_a_waiter_until_its_ticket_is_published() {
    let server = Server::start_example("longpoll", &[]);
    let mut publisher = server.connect();
    publisher.send(&post("/ticket/42", b"first"));
    let first = publisher.read_response();
    assert_eq!((first.status, first.text()), (200, "0\n"), "{first:?}");
    let first_id = first
        .header("x-comet-id")
        .expect("a message id")
        .to_string();

    // Parked after the first message: only a later one on its own ticket answers it, whether
    // it is published before or after the wait reaches the server.
    let mut waiter = server.connect();
    let wait = format!("GET /ticket/42?after={first_id} HTTP/1.1\r\nHost: x\r\n\r\n");
    waiter.send(wait.as_bytes());
    for (path, body) in [
        ("/ticket/43", &b"other ticket"[..]),
        ("/ticket/42", b"second"),
    ] {
        publisher.send(&post(path, body));
        let published = publisher.read_response();
        assert_eq!(published.status, 200, "{published:?}");
        assert!(matches!(published.text(), "0\n" | "1\n"), "{published:?}");
    }
    let answer = waiter.read_response();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.text(), "second");
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    let second_id = answer.header("x-comet-id").expect("the message's id");
    assert_ne!(second_id, first_id);

    // The waiter's connection is kept alive, and asking again after the first message now
    // gets the second at once, from the channel's history.
    waiter.send(wait.as_bytes());
    let again = waiter.read_response();
    assert_eq!((again.status, again.text()), (200, "second"), "{again:?}");
}

#[test]
fn longpoll_refuses_what_it_cannot_park() {
    let server = Server::start_example("longpoll", &[]);
    let too_big = post("/ticket/1", &vec![b'x'; 64 * 1024 + 1]);
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "not a ticket",
            b"GET /ticket/x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            404,
        ),
        (
            "no id",
            b"GET /ticket/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            404,
        ),
        (
            "bad after",
            b"GET /ticket/1?after=zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        ("body over 64 KiB", too_big, 413),
    ];
    for (name, request, status) in cases {
        let response = server.request(&request);
        assert_eq!(response.status, status, "{name}: {response:?}");
    }
    let mut conn = server.connect();
    conn.send(b"HEAD /ticket/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = conn.read_head_response();
    assert_eq!(
        (head.status, head.header("allow")),
        (405, Some("GET, POST")),
        "{head:?}"
    );
}
