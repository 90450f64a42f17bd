//! HTTP/1.1 connection behaviour seen from a raw socket: keep-alive and close (HTTP/1.1 and
//! HTTP/1.0), HEAD, absolute-form targets, pipelining, requests split into single bytes,
//! `Expect: 100-continue`, the headers on every response, routing (404, 405 + `Allow`), and
//! half-closed clients.

mod common;

use common::{md5_hex, post, post_chunked, Server, GET_PLAINTEXT};

#[test]
fn http11_connection_stays_open_across_requests() {
    let server = Server::start();
    let mut conn = server.connect();
    for _ in 0..10 {
        conn.send(GET_PLAINTEXT);
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, b"Hello, World!");
        assert!(
            !response.closes(),
            "HTTP/1.1 defaults to keep-alive: {response:?}"
        );
    }
}

#[test]
fn connection_close_is_echoed_and_then_the_server_closes() {
    let server = Server::start();
    let mut conn = server.connect();
    conn.send(b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"Hello, World!");
    assert!(response.closes(), "{response:?}");
    conn.expect_eof();
}

#[test]
fn http10_closes_after_the_response_by_default() {
    let server = Server::start();
    let mut conn = server.connect();
    conn.send(b"GET /plaintext HTTP/1.0\r\n\r\n");
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"Hello, World!");
    conn.expect_eof();
}

#[test]
fn http10_keep_alive_keeps_the_connection_open() {
    let server = Server::start();
    let mut conn = server.connect();
    for _ in 0..3 {
        conn.send(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, b"Hello, World!");
        assert!(
            response.has_token("connection", "keep-alive"),
            "{response:?}"
        );
    }
    // The same connection still follows the HTTP/1.0 default once the request stops asking.
    conn.send(b"GET /plaintext HTTP/1.0\r\n\r\n");
    assert_eq!(conn.read_response().status, 200);
    conn.expect_eof();
}

#[test]
fn head_gets_the_get_headers_and_no_body() {
    let server = Server::start();
    let mut conn = server.connect();
    conn.send(GET_PLAINTEXT);
    let get = conn.read_response();
    conn.send(b"HEAD /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = conn.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-length"), Some("13"), "{head:?}");
    assert_eq!(head.header("content-type"), get.header("content-type"));
    head.assert_standard_headers();
    // Had HEAD sent a body, its bytes would now be read as the next status line.
    conn.send(GET_PLAINTEXT);
    let after = conn.read_response();
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(after.body, b"Hello, World!");
}

#[test]
fn absolute_form_targets_are_routed_by_their_path() {
    let server = Server::start();
    let with_port = format!(
        "GET http://{}/plaintext HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr(),
        server.addr()
    );
    let hello_md5 = md5_hex(b"hello");
    let cases: [(&str, Vec<u8>, &[u8]); 3] = [
        (
            "GET without port",
            b"GET http://localhost/plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            b"Hello, World!",
        ),
        ("GET with port", with_port.into_bytes(), b"Hello, World!"),
        (
            "POST md5",
            b"POST http://localhost/md5 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
            hello_md5.as_bytes(),
        ),
    ];
    for (name, request, body) in cases {
        let response = server.request(&request);
        assert_eq!(response.status, 200, "{name}: {response:?}");
        assert_eq!(response.body, body, "{name}: {response:?}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start();
    // Distinct bodies make every answer identify its request.
    let body = |i: usize| format!("pipelined request number {i}").repeat(i % 7);
    let mut requests = Vec::new();
    for i in 0..200 {
        if i % 3 == 0 {
            requests.extend_from_slice(GET_PLAINTEXT);
        } else if i % 3 == 1 {
            requests.extend(post("/md5", body(i).as_bytes()));
        } else {
            requests.extend(post_chunked("/", body(i).as_bytes(), 10));
        }
    }
    let mut conn = server.connect();
    conn.send(&requests);
    for i in 0..200 {
        let response = conn.read_response();
        assert_eq!(response.status, 200, "request {i}: {response:?}");
        let expected = if i % 3 == 0 {
            "Hello, World!".to_string()
        } else {
            md5_hex(body(i).as_bytes())
        };
        assert_eq!(response.text(), expected, "request {i}");
    }
}

#[test]
fn requests_arriving_one_byte_per_write_are_parsed() {
    let server = Server::start();
    let body = b"every byte of this body arrives in its own segment";
    let cases: [(&str, Vec<u8>, String); 4] = [
        ("GET", GET_PLAINTEXT.to_vec(), "Hello, World!".to_string()),
        ("Content-Length body", post("/md5", body), md5_hex(body)),
        ("chunked body", post_chunked("/md5", body, 7), md5_hex(body)),
        (
            "chunked with extension and trailer",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;name=value\r\nabc\r\n0\r\nX-Trailer: yes\r\n\r\n"
                .to_vec(),
            md5_hex(b"abc"),
        ),
    ];
    let mut conn = server.connect();
    for (name, request, expected) in cases {
        conn.send_byte_by_byte(&request);
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{name}: {response:?}");
        assert_eq!(response.text(), expected, "{name}");
    }
}

/// Reads exactly the interim response the contract promises, byte for byte.
fn expect_100_continue(conn: &mut common::Conn) {
    let interim = conn.read_response();
    assert_eq!(
        interim.status, 100,
        "expected 100 Continue before the body: {interim:?}"
    );
    assert_eq!(interim.version, "HTTP/1.1");
    assert!(interim.headers.is_empty(), "{interim:?}");
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let server = Server::start();
    let body = b"sent only after 100 Continue";
    let cases: [(&str, String, Vec<u8>); 3] = [
        (
            "Content-Length to /md5",
            format!("POST /md5 HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()),
            body.to_vec(),
        ),
        (
            "Content-Length to /",
            format!("POST / HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()),
            body.to_vec(),
        ),
        (
            "chunked to /md5, expectation in capitals (case-insensitive)",
            "POST /md5 HTTP/1.1\r\nHost: localhost\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            common::chunked(body, 5),
        ),
    ];
    // One connection: after each exchange it must be ready for the next request.
    let mut conn = server.connect();
    for (name, head, encoded_body) in cases {
        conn.send(head.as_bytes());
        expect_100_continue(&mut conn);
        conn.send(&encoded_body);
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{name}: {response:?}");
        assert_eq!(response.text(), md5_hex(body), "{name}");
    }
}

#[test]
fn expect_100_continue_to_a_route_that_ignores_the_body_still_gets_100() {
    // GET /plaintext answers from the head alone; the body is read and dropped, but the client
    // is waiting for the 100 before it sends that body.
    let server = Server::start();
    let mut conn = server.connect();
    conn.send(b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    expect_100_continue(&mut conn);
    conn.send(b"hello");
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "Hello, World!");
    // The dropped body did not leak into the next request.
    conn.send(GET_PLAINTEXT);
    assert_eq!(conn.read_response().status, 200);
}

#[test]
fn expect_100_continue_to_an_unknown_path_gets_404_instead() {
    let server = Server::start();
    let mut conn = server.connect();
    conn.send(b"POST /nowhere HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let response = conn.read_response();
    assert_eq!(
        response.status, 404,
        "the body was never sent, so no 100: {response:?}"
    );
    assert!(response.closes(), "{response:?}");
    conn.expect_eof();
    server.assert_still_serves();
}

#[test]
fn unknown_expectation_gets_417() {
    let server = Server::start();
    let response = server.request(
        b"POST /md5 HTTP/1.1\r\nHost: localhost\r\nExpect: something-else\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(response.status, 417, "{response:?}");
    response.assert_standard_headers();
    server.assert_still_serves();
}

#[test]
fn expect_100_continue_in_http10_is_ignored() {
    // RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request.
    let server = Server::start();
    let mut conn = server.connect();
    conn.send(b"POST /md5 HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
    let response = conn.read_response();
    assert_eq!(
        response.status, 200,
        "no interim response for HTTP/1.0: {response:?}"
    );
    assert_eq!(response.text(), md5_hex(b"hello"));
    conn.expect_eof();
}

#[test]
fn every_response_carries_server_date_type_and_length() {
    let server = Server::start();
    #[rustfmt::skip]
    let cases: [(&str, &[u8], u16); 8] = [
        ("plaintext",       GET_PLAINTEXT,                                                                  200),
        ("md5",             b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na",                    200),
        ("root md5",        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",                       200),
        ("unknown path",    b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",                                      404),
        ("wrong method",    b"GET /md5 HTTP/1.1\r\nHost: x\r\n\r\n",                                          405),
        ("bad request",     b"NOT HTTP AT ALL\r\n\r\n",                                                       400),
        ("bad version",     b"GET /plaintext HTTP/2.0\r\nHost: x\r\n\r\n",                                    505),
        ("bad expectation", b"POST /md5 HTTP/1.1\r\nHost: x\r\nExpect: nope\r\nContent-Length: 0\r\n\r\n",     417),
    ];
    for (name, request, status) in cases {
        let response = server.request(request);
        assert_eq!(response.status, status, "{name}: {response:?}");
        response.assert_standard_headers();
    }
    let head = {
        let mut conn = server.connect();
        conn.send(b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
        conn.read_head_response()
    };
    head.assert_standard_headers();
}

#[test]
fn md5_and_plaintext_have_their_content_types() {
    let server = Server::start();
    let plaintext = server.request(GET_PLAINTEXT);
    let md5 = server.request(&post("/md5", b"x"));
    for response in [plaintext, md5] {
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("text/plain"), "{response:?}");
    }
}

#[test]
fn unknown_paths_get_404() {
    let server = Server::start();
    let cases: [&[u8]; 5] = [
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /plaintext/more HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /md5/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ];
    for request in cases {
        let response = server.request(request);
        assert_eq!(
            response.status,
            404,
            "{:?}: {response:?}",
            String::from_utf8_lossy(request)
        );
        assert!(!response.body.is_empty(), "{response:?}");
    }
}

#[test]
fn known_paths_with_the_wrong_method_get_405_and_allow() {
    let server = Server::start();
    #[rustfmt::skip]
    // (DELETE and OPTIONS, which no built-in route has, are 501s since: see
    // methods_no_route_has_get_501; PUT /md5 is an upload.)
    let cases: [(&[u8], &[&str]); 5] = [
        (b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &["GET", "HEAD"]),
        (b"PUT /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",  &["GET", "HEAD"]),
        (b"GET /md5 HTTP/1.1\r\nHost: x\r\n\r\n",                              &["POST", "PUT"]),
        (b"POST /wait/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",       &["GET"]),
        (b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",       &["GET"]),
    ];
    for (request, allowed) in cases {
        let mut conn = server.connect();
        conn.send(request);
        let response = conn.read_response();
        let name = String::from_utf8_lossy(request);
        assert_eq!(response.status, 405, "{name:?}: {response:?}");
        let mut allow: Vec<&str> = response
            .header("allow")
            .unwrap_or_else(|| panic!("{name:?}: no Allow header: {response:?}"))
            .split(',')
            .map(str::trim)
            .collect();
        allow.sort_unstable();
        assert_eq!(allow, allowed, "{name:?}: {response:?}");
    }
}

#[test]
fn a_405_with_a_body_keeps_the_connection_in_step() {
    // The unread body must be skipped (or the connection closed), never parsed as a request.
    let server = Server::start();
    let mut conn = server.connect();
    let smuggled = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut requests = post("/plaintext", smuggled);
    requests.extend_from_slice(GET_PLAINTEXT);
    conn.send(&requests);
    let rejected = conn.read_response();
    assert_eq!(rejected.status, 405, "{rejected:?}");
    if rejected.closes() {
        conn.expect_eof();
    } else {
        let next = conn.read_response();
        assert_eq!(
            next.status, 200,
            "body bytes were taken as a request: {next:?}"
        );
    }
}

#[test]
fn a_complete_request_then_half_close_still_gets_its_response() {
    let server = Server::start();
    let cases: [(&str, Vec<u8>, Vec<String>); 3] = [
        (
            "GET",
            GET_PLAINTEXT.to_vec(),
            vec!["Hello, World!".to_string()],
        ),
        ("POST", post("/md5", b"hello"), vec![md5_hex(b"hello")]),
        (
            "pipelined",
            [
                GET_PLAINTEXT.to_vec(),
                post_chunked("/md5", b"abc", 2),
                GET_PLAINTEXT.to_vec(),
            ]
            .concat(),
            vec![
                "Hello, World!".to_string(),
                md5_hex(b"abc"),
                "Hello, World!".to_string(),
            ],
        ),
    ];
    for (name, request, bodies) in cases {
        let mut conn = server.connect();
        conn.send(&request);
        conn.shutdown_write();
        for body in bodies {
            let response = conn.read_response();
            assert_eq!(response.status, 200, "{name}: {response:?}");
            assert_eq!(response.text(), body, "{name}");
        }
    }
}

#[test]
fn a_half_closed_client_is_disconnected_once_answered() {
    // No request can follow the client's FIN; a server that misses it (say, a FIN arriving in
    // the same segment train as the request) would hold the connection open forever.
    let server = Server::start();
    for _ in 0..5 {
        let mut conn = server.connect();
        conn.send(GET_PLAINTEXT);
        conn.shutdown_write();
        assert_eq!(conn.read_response().status, 200);
        conn.expect_eof();
    }
}

/// Reads the status line and header section of the next response, whatever follows it (a
/// HEAD's absent body, a stream that never ends), as (status, lowercased header section).
fn status_and_headers(conn: &mut common::Conn) -> (u16, String) {
    let head = String::from_utf8_lossy(&conn.read_through(b"\r\n\r\n")).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, head.to_ascii_lowercase())
}

/// The `Allow` methods of a header section, sorted.
fn allow_of(headers: &str) -> Option<Vec<String>> {
    let line = headers.lines().find_map(|l| l.strip_prefix("allow:"))?;
    let mut methods: Vec<String> = line
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    methods.sort_unstable();
    Some(methods)
}

#[test]
fn every_allow_names_exactly_the_methods_that_are_not_405() {
    // RFC 9110 §15.5.6: Allow lists the methods the target resource supports. For each
    // built-in path, the methods that do not get 405 must be exactly what every 405 names.
    // (HEAD /wait said nothing of its own 405 in the Allow of DELETE /wait, and HEAD /notify
    // published.)
    let server = Server::start_with(&["--comet-timeout", "1", "--exec", "x=true"]);
    let paths = [
        "/",
        "/md5",
        "/plaintext",
        "/metrics",
        "/wait",
        "/wait/allow",
        "/notify",
        "/notify/allow",
        "/events",
        "/events/allow",
        "/stream",
        "/stream/x",
    ];
    let methods = ["GET", "HEAD", "POST", "PUT"];
    for path in paths {
        let mut accepted = Vec::new();
        let mut allows = Vec::new();
        for method in methods {
            let mut conn = server.connect();
            let request =
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
            conn.send(request.as_bytes());
            let (status, headers) = status_and_headers(&mut conn);
            if status == 405 {
                let allow = allow_of(&headers)
                    .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow: {headers}"));
                allows.push((method, allow));
            } else {
                assert!(allow_of(&headers).is_none(), "{method} {path}: {headers}");
                accepted.push(method.to_string());
            }
        }
        accepted.sort_unstable();
        assert!(!accepted.is_empty(), "{path}: nothing accepted");
        for (method, allow) in allows {
            assert_eq!(
                allow, accepted,
                "{method} {path}: Allow is not what is accepted"
            );
        }
    }
}

#[test]
fn methods_no_route_has_get_501_and_the_connection_stays_in_step() {
    // RFC 9110 §9.1, §15.6.2: a method the server implements nowhere is a 501, whatever the
    // path; methods are case-sensitive, so `get` is one of them.
    let server = Server::start();
    let mut conn = server.connect();
    #[rustfmt::skip]
    let requests: [&[u8]; 8] = [
        b"FOO /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
        b"XGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
        b"get /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
        b"DELETE /wait HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PATCH /md5 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    ];
    for request in requests {
        conn.send(request);
        let response = conn.read_response();
        let name = String::from_utf8_lossy(request);
        assert_eq!(response.status, 501, "{name:?}: {response:?}");
        assert!(response.header("allow").is_none(), "{name:?}: {response:?}");
        assert!(!response.body.is_empty(), "{response:?}");
    }
    conn.send(GET_PLAINTEXT);
    assert_eq!(conn.read_response().text(), "Hello, World!");
    // With a body the server does not read, it may close instead (as after any refusal).
    let refused =
        server.request(b"PATCH /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(refused.status, 501, "{refused:?}");
    server.assert_still_serves();
}

#[test]
fn head_on_a_publishing_route_publishes_nothing() {
    // RFC 9110 §9.3.2: HEAD has no side effect; GET /notify publishes, so HEAD is refused.
    let server = Server::start();
    let mut waiter = server.connect();
    waiter.send(b"GET /wait/headless HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut counter = server.connect();
    let mut parked = || {
        counter.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        counter.read_response().text().to_string()
    };
    let mut tries = 0;
    while parked() != "1" {
        tries += 1;
        assert!(tries < 1000, "the waiter never parked");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for target in ["/notify/headless", "/notify/headless?x=1"] {
        let mut conn = server.connect();
        conn.send(format!("HEAD {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let head = conn.read_head_response();
        assert_eq!(head.status, 405, "{head:?}");
        assert_eq!(head.header("allow"), Some("GET, POST"), "{head:?}");
    }
    // Nothing was published: the waiter is still parked, and gets the next real message.
    assert_eq!(parked(), "1");
    let published = server.request(&post("/notify/headless", b"real"));
    assert_eq!(published.text(), "1", "{published:?}");
    assert_eq!(waiter.read_response().text(), "real");
}

#[test]
fn a_higher_minor_version_is_served_and_answered_as_http_1_1() {
    // RFC 9110 §2.5, §6.2: HTTP/1.2 and up are processed as 1.1 and answered as 1.1; only
    // another major version is a 505 (§15.6.6).
    let server = Server::start();
    for version in ["HTTP/1.2", "HTTP/1.9"] {
        let mut conn = server.connect();
        conn.send(format!("GET /plaintext {version}\r\nHost: x\r\n\r\n").as_bytes());
        let (status, headers) = status_and_headers(&mut conn);
        assert_eq!(status, 200, "{headers}");
        assert!(headers.starts_with("http/1.1 200 ok\r\n"), "{headers}");
        // Persistent, as HTTP/1.1 is by default.
        assert!(!headers.contains("connection: close"), "{headers}");
        conn.read_through(b"Hello, World!");
        conn.send(GET_PLAINTEXT);
        assert_eq!(conn.read_response().text(), "Hello, World!");
    }
    for (line, status) in [
        ("GET /plaintext HTTP/2.0", 505),
        ("GET /plaintext HTTP/0.9", 505),
        ("GET /plaintext  HTTP/1.1", 400),
        ("GET /a b HTTP/1.1", 400),
        ("GET /plaintext HTTP/1", 400),
    ] {
        let mut conn = server.connect();
        conn.send(format!("{line}\r\nHost: x\r\n\r\n").as_bytes());
        let response = conn.read_response();
        assert_eq!(response.status, status, "{line:?}: {response:?}");
        assert!(response.closes(), "{response:?}");
    }
}

/// A scratch file for an upload, removed when dropped.
struct UploadFile(std::path::PathBuf);

impl UploadFile {
    fn new(name: &str, bytes: &[u8]) -> UploadFile {
        let dir = std::env::temp_dir().join(format!("miohttpd-put-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        UploadFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// What md5sum says of the file.
    fn md5sum(&self) -> String {
        let output = std::process::Command::new("md5sum")
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()[..32].to_string()
    }
}

impl Drop for UploadFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs curl with `args`, then `--write-out` of the status; returns (body, status).
fn curl(args: &[&str], stdin: Option<&str>) -> (String, u16) {
    let mut command = std::process::Command::new("curl");
    command.args(["--silent", "--show-error", "--max-time", "60"]);
    command.args(args);
    command.args(["--write-out", "\n%{http_code}"]);
    if let Some(path) = stdin {
        command.stdin(std::fs::File::open(path).unwrap());
    }
    let output = command
        .output()
        .expect("curl (scripts/test.sh installs it)");
    assert!(output.status.success(), "curl {args:?}: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (body.to_string(), status.parse().unwrap())
}

#[test]
fn curl_upload_file_puts_anywhere_unclaimed_and_gets_the_md5() {
    // `curl -T FILE URL/` sends `PUT /FILE`: the original Go server answered the MD5 for any
    // path and method, so PUT on any unclaimed path (and /, /md5) answers as POST / does.
    let server = Server::start();
    let small = UploadFile::new("small.bin", &common::PseudoRandom::bytes(7, 1_000));
    // Over 1 MB: curl asks `Expect: 100-continue` first.
    let big = UploadFile::new(
        "big.bin",
        &common::PseudoRandom::bytes(8, 5 * 1024 * 1024 + 3),
    );
    let url = server.url();
    for file in [&small, &big] {
        let want = file.md5sum();
        for target in [
            format!("{url}/"),
            format!("{url}/md5"),
            format!("{url}/dir/"),
        ] {
            let (body, status) = curl(&["-T", file.path(), &target], None);
            assert_eq!(
                (status, body.as_str()),
                (200, want.as_str()),
                "-T to {target}"
            );
        }
        // From stdin, curl streams it chunked.
        let (body, status) = curl(
            &[
                "-T",
                "-",
                "-H",
                "Transfer-Encoding: chunked",
                &format!("{url}/upload"),
            ],
            Some(file.path()),
        );
        assert_eq!((status, body.as_str()), (200, want.as_str()), "chunked");
    }
    // A path another route claims keeps its 405 and its Allow.
    for (path, allow) in [
        ("/plaintext", "GET, HEAD"),
        ("/wait/x", "GET"),
        ("/notify", "GET, POST"),
    ] {
        let mut conn = server.connect();
        conn.send(
            format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").as_bytes(),
        );
        let response = conn.read_response();
        assert_eq!(response.status, 405, "{path}: {response:?}");
        assert_eq!(
            response.header("allow"),
            Some(allow),
            "{path}: {response:?}"
        );
    }
    let get = server.request(b"GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        get.status, 404,
        "only PUT reaches the upload fallback: {get:?}"
    );
}

#[test]
fn dynamic_answers_are_never_stored_by_a_cache() {
    // RFC 9111 §5.2.2.5: counts, publish results, waits, events, digests, metrics and command
    // output change from one request to the next: a cache in front must not replay them.
    // /plaintext is a fixed answer and says nothing.
    let server = Server::start_with(&["--comet-timeout", "1", "--exec", "x=echo hi"]);
    let no_store = |name: &str, headers: &str| {
        let values: Vec<&str> = headers
            .lines()
            .filter_map(|l| l.strip_prefix("cache-control:"))
            .map(str::trim)
            .collect();
        assert_eq!(values, ["no-store"], "{name}: {headers}");
    };
    let mut parked = server.connect();
    parked.send(b"GET /wait/cache HTTP/1.1\r\nHost: x\r\n\r\n");
    #[rustfmt::skip]
    let requests: [(&str, &[u8]); 10] = [
        ("count", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("HEAD count", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("GET /notify", b"GET /notify/nobody HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("POST /notify", b"POST /notify/nobody HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"),
        ("POST /md5", b"POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"),
        ("PUT upload", b"PUT /file.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"),
        ("metrics", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("wait timing out", b"GET /wait/nobody HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("events", b"GET /events/cache HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("command output", b"GET /stream/x HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    for (name, request) in requests {
        let mut conn = server.connect();
        conn.send(request);
        let (status, headers) = status_and_headers(&mut conn);
        assert!(status == 200 || status == 204, "{name}: {headers}");
        no_store(name, &headers);
    }
    // The waiter sent first is answered by this message (or, had it not parked yet, by its
    // timeout): a wait's answer either way.
    let published = server.request(&post("/notify/cache", b"m"));
    assert_eq!(published.status, 200, "{published:?}");
    let (_, headers) = status_and_headers(&mut parked);
    no_store("wait answered", &headers);

    let mut conn = server.connect();
    conn.send(GET_PLAINTEXT);
    let (_, headers) = status_and_headers(&mut conn);
    assert!(!headers.contains("cache-control"), "{headers}");
}
