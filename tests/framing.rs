//! Malformed and oversized requests, as a table: each row is a raw request and the statuses it
//! may earn. Every row must get that status with `Connection: close` and a short text body, then
//! a clean close, and the server must go on serving new connections. Also: the size limits at
//! their boundaries, the limit flags, and bodies cut short by a half-close.

mod common;

use common::{assert_error_and_close, check_rows, md5_hex, Server, GET_PLAINTEXT};

/// Rows whose bytes fit on a line. Statuses with two values are where RFC 9112 lets the server
/// choose (an unsupported transfer coding may be 400 or 501).
#[rustfmt::skip]
const BAD_REQUESTS: &[(&str, &[u8], &[u16])] = &[
    // RFC 9112 §6.1, §6.3: a message with both framings is a smuggling attempt.
    ("Content-Length then Transfer-Encoding", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[400]),
    ("Transfer-Encoding then Content-Length", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[400]),
    // RFC 9112 §6.3 item 5: differing or invalid Content-Length is unrecoverable.
    ("two differing Content-Length headers", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", &[400]),
    ("differing Content-Length list", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", &[400]),
    ("Content-Length not a number", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nhello", &[400]),
    ("Content-Length negative", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nhello", &[400]),
    ("Content-Length with plus sign", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", &[400]),
    ("Content-Length with inner space", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\nhello", &[400]),
    ("Content-Length empty", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\nhello", &[400]),
    ("Content-Length of 30 digits", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 123456789012345678901234567890\r\n\r\nhello", &[400]),
    ("Content-Length in hex", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello", &[400]),
    // RFC 9112 §6.3 item 4: in a request, chunked must be the final coding, applied once.
    ("Transfer-Encoding gzip only", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello", &[400, 501]),
    ("Transfer-Encoding gzip then chunked", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[501, 400]),
    ("Transfer-Encoding chunked then gzip", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[400, 501]),
    ("Transfer-Encoding chunked twice in a list", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[400]),
    ("Transfer-Encoding chunked in two headers", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[400]),
    // RFC 9112 §6.1: HTTP/1.0 has no chunked coding; the framing cannot be trusted.
    ("Transfer-Encoding in HTTP/1.0", b"POST /md5 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[400]),
    // RFC 9112 §7.1: chunk-size is 1*HEXDIG, each chunk and the last chunk end in CRLF.
    ("chunk size not hex", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", &[400]),
    ("chunk size overflows 64 bits", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n", &[400]),
    ("chunk size missing", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", &[400]),
    ("chunk size negative", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", &[400]),
    ("chunk data longer than declared", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloEXTRA\r\n0\r\n\r\n", &[400]),
    ("no CRLF after chunk data", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n", &[400]),
    ("bare LF after chunk size", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", &[400]),
    ("bare LF after chunk data", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", &[400]),
    ("bare LF after last chunk", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\r\n", &[400]),
    // RFC 9112 §5.2: obs-fold in a request is rejected (or replaced, which we do not do).
    ("obs-fold with space", b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n", &[400]),
    ("obs-fold with tab", b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n\tb\r\n\r\n", &[400]),
    // RFC 9112 §5.1: no whitespace between field name and colon.
    ("space before colon", b"GET /plaintext HTTP/1.1\r\nHost : x\r\n\r\n", &[400]),
    ("tab before colon", b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Tab\t: y\r\n\r\n", &[400]),
    ("header line without colon", b"GET /plaintext HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", &[400]),
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1.
    ("HTTP/1.1 without Host", b"GET /plaintext HTTP/1.1\r\nAccept: */*\r\n\r\n", &[400]),
    ("HTTP/1.1 with two Hosts", b"GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &[400]),
    // RFC 9112 §3: method SP request-target SP HTTP-version.
    ("garbage request line", b"HELLO THERE\r\n\r\n", &[400]),
    ("binary request line", b"\x00\x01\x02\x03\xff\r\n\r\n", &[400]),
    ("request line without version", b"GET /plaintext\r\nHost: x\r\n\r\n", &[400]),
    ("lowercase version", b"GET /plaintext http/1.1\r\nHost: x\r\n\r\n", &[400]),
    // RFC 9110 §15.6.6: a major version we do not speak.
    ("HTTP/2.0", b"GET /plaintext HTTP/2.0\r\nHost: x\r\n\r\n", &[505]),
    ("HTTP/3.0", b"GET /plaintext HTTP/3.0\r\nHost: x\r\n\r\n", &[505]),
];

/// Rows too long to write out: over the default limits (8192-byte head, 100 headers, 8000-byte
/// target).
fn oversized_requests() -> Vec<(&'static str, Vec<u8>, &'static [u16])> {
    vec![
        (
            "one 10,000-byte header",
            format!(
                "GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(10_000)
            )
            .into_bytes(),
            &[431],
        ),
        ("101 headers", request_with_headers(100), &[431]),
        (
            "8,001-byte target",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(8_000)).into_bytes(),
            &[414],
        ),
    ]
}

/// `GET /plaintext` with `Host` plus `extra` small headers.
fn request_with_headers(extra: usize) -> Vec<u8> {
    let mut request = "GET /plaintext HTTP/1.1\r\nHost: x\r\n".to_string();
    for i in 0..extra {
        request.push_str(&format!("X-Header-{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// `GET /` followed by a path of `len` bytes in all: the target is exactly `len` bytes.
fn request_with_target(len: usize) -> Vec<u8> {
    format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "t".repeat(len - 1)).into_bytes()
}

#[test]
fn malformed_requests_get_an_error_and_a_close() {
    let server = Server::start();
    let rows = BAD_REQUESTS
        .iter()
        .map(|&(name, request, statuses)| (name, request.to_vec(), statuses))
        .chain(oversized_requests());
    let rows: Vec<_> = rows
        .map(|(name, request, accepted)| (name.to_string(), (request, accepted)))
        .collect();
    assert!(rows.len() >= 35, "the table shrank to {} rows", rows.len());
    check_rows(rows, |name, (request, accepted)| {
        let mut conn = server.connect();
        conn.send(&request);
        assert_error_and_close(&server, &mut conn, accepted, name);
    });
}

#[test]
fn requests_at_the_default_limits_are_served() {
    let server = Server::start();
    let big_header = format!(
        "GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8_000)
    );
    let cases: [(&str, Vec<u8>, u16); 3] = [
        ("100 headers", request_with_headers(99), 200),
        ("8,000-byte header", big_header.into_bytes(), 200),
        // Within the limit, so the path is merely unknown.
        ("4,096-byte target", request_with_target(4_096), 404),
    ];
    for (name, request, status) in cases {
        let response = server.request(&request);
        assert_eq!(response.status, status, "{name}: {response:?}");
    }
}

#[test]
fn limit_flags_move_the_limits() {
    #[rustfmt::skip]
    let cases: [(&str, &[&str], Vec<u8>, u16); 6] = [
        ("head within --max-head-size",     &["--max-head-size", "1024"],  request_with_target(500),   404),
        ("head over --max-head-size",       &["--max-head-size", "1024"],  request_with_target(1_500), 431),
        ("headers within --max-headers",    &["--max-headers", "5"],       request_with_headers(4),    200),
        ("headers over --max-headers",      &["--max-headers", "5"],       request_with_headers(5),    431),
        ("target within --max-target-size", &["--max-target-size", "100"], request_with_target(100),   404),
        ("target over --max-target-size",   &["--max-target-size", "100"], request_with_target(101),   414),
    ];
    for (name, args, request, status) in cases {
        let server = Server::start_with(args);
        let mut conn = server.connect();
        conn.send(&request);
        if status == 431 || status == 414 {
            assert_error_and_close(&server, &mut conn, &[status], name);
        } else {
            let response = conn.read_response();
            assert_eq!(response.status, status, "{name}: {response:?}");
        }
    }
}

#[test]
fn a_body_cut_short_by_half_close_gets_400_and_a_close() {
    let server = Server::start();
    #[rustfmt::skip]
    let cases: [(&str, &[u8]); 4] = [
        ("Content-Length body",          b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"),
        ("chunked, between chunks",      b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        ("chunked, inside a chunk",      b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
        ("chunked, inside the trailers", b"POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: y\r\n"),
    ];
    check_rows(
        cases.map(|(name, request)| (name.to_string(), request)),
        |name, request| {
            let mut conn = server.connect();
            conn.send(request);
            conn.shutdown_write();
            assert_error_and_close(&server, &mut conn, &[400], name);
        },
    );
}

#[test]
fn an_error_does_not_disturb_other_open_connections() {
    let server = Server::start();
    let mut bystander = server.connect();
    bystander.send(GET_PLAINTEXT);
    assert_eq!(bystander.read_response().status, 200);

    let mut offender = server.connect();
    offender.send(b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n");
    assert_error_and_close(&server, &mut offender, &[400], "bad Content-Length");

    bystander.send(&common::post("/md5", b"still here"));
    let response = bystander.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), md5_hex(b"still here"));
}
