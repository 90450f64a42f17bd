//! The server's instruments from outside: the access log (format, escaping, uploads, waiters
//! that hang up, batching), the `--stats-interval` line, the admin listener, and the socket
//! knobs (the server starts and serves with each; two servers share a port with
//! `--reuseport on`).

mod common;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{exit_without_serving, md5_hex, post, Server, GET_PLAINTEXT, IO_TIMEOUT};

fn temp_log(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("miohttpd-access-{name}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The log's lines once it has at least `count` (lines reach the file within about a
/// second), waiting at most `IO_TIMEOUT`.
fn log_lines(path: &Path, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= count {
            assert!(text.ends_with('\n'), "a line written in part: {text:?}");
            return lines;
        }
        assert!(
            started.elapsed() < IO_TIMEOUT,
            "{} of {count} lines after {IO_TIMEOUT:?}:\n{text}",
            lines.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A combined-format line, split into its fields.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    remote: String,
    request: String,
    status: u16,
    bytes: u64,
    referer: String,
    user_agent: String,
}

fn parse_line(line: &str) -> Line {
    // $remote_addr - - [$time_local] "$request" $status $bytes "$referer" "$user_agent"
    let (remote, rest) = line
        .split_once(" - - [")
        .unwrap_or_else(|| panic!("{line}"));
    let (time, rest) = rest.split_once("] \"").unwrap_or_else(|| panic!("{line}"));
    assert_eq!(time.len(), "10/Oct/2000:13:55:36 -0700".len(), "{line}");
    let fields: Vec<&str> = rest.split('"').collect();
    // request, ` status bytes `, referer, ` `, user agent, ``: bare quotes are only delimiters.
    assert_eq!(fields.len(), 6, "a quote inside a field: {line}");
    let numbers: Vec<&str> = fields[1].split_whitespace().collect();
    Line {
        remote: remote.to_string(),
        request: fields[0].to_string(),
        status: numbers[0].parse().unwrap_or_else(|_| panic!("{line}")),
        bytes: numbers[1].parse().unwrap_or_else(|_| panic!("{line}")),
        referer: fields[2].to_string(),
        user_agent: fields[4].to_string(),
    }
}

fn line(request: &str, status: u16, bytes: u64, referer: &str, user_agent: &str) -> Line {
    Line {
        remote: "127.0.0.1".into(),
        request: request.into(),
        status,
        bytes,
        referer: referer.into(),
        user_agent: user_agent.into(),
    }
}

#[test]
fn the_access_log_has_one_combined_line_per_request() {
    let path = temp_log("combined");
    let server = Server::start_with(&["--access-log", path.to_str().unwrap()]);
    let mut conn = server.connect();
    conn.send(
        b"GET /plaintext?x=1 HTTP/1.1\r\nHost: x\r\nReferer: http://example.com/\r\n\
          User-Agent: test-agent/1.0\r\n\r\n",
    );
    assert_eq!(conn.read_response().status, 200);
    conn.send(b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(conn.read_head_response().status, 200);
    conn.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(conn.read_response().status, 404);
    // An upload is logged once its body is read and answered.
    conn.send(&post("/md5", b"hello"));
    assert_eq!(conn.read_response().text(), md5_hex(b"hello"));
    // A client trying to forge a line of its own (a raw `"` in the target is a 400 before
    // any routing, RFC 9112 §3.2; the User-Agent may hold one).
    conn.send(
        b"GET /a%22b HTTP/1.1\r\nHost: x\r\nUser-Agent: x\" 200 0 \"-\" \"forged\xff\r\n\r\n",
    );
    assert_eq!(conn.read_response().status, 404);
    // A waiter that hangs up before any message: nginx's 499.
    let mut waiter = server.connect();
    waiter.send(b"GET /wait/log HTTP/1.0\r\n\r\n");
    drop(waiter);

    let lines = log_lines(&path, 6);
    let parsed: Vec<Line> = lines.iter().map(|l| parse_line(l)).collect();
    assert_eq!(
        parsed,
        [
            line(
                "GET /plaintext?x=1 HTTP/1.1",
                200,
                13,
                "http://example.com/",
                "test-agent/1.0"
            ),
            line("HEAD /plaintext HTTP/1.1", 200, 0, "-", "-"),
            line("GET /nowhere HTTP/1.1", 404, 10, "-", "-"),
            line("POST /md5 HTTP/1.1", 200, 32, "-", "-"),
            line(
                "GET /a%22b HTTP/1.1",
                404,
                10,
                "-",
                "x\\x22 200 0 \\x22-\\x22 \\x22forged\\xFF"
            ),
            line("GET /wait/log HTTP/1.0", 499, 0, "-", "-"),
        ],
        "{lines:#?}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn streams_are_logged_with_the_body_bytes_that_left() {
    let path = temp_log("streams");
    let server = Server::start_with(&[
        "--access-log",
        path.to_str().unwrap(),
        "--exec",
        "two=printf 'one\\ntwo\\n'",
    ]);
    let mut conn = server.connect();
    conn.send(b"GET /stream/two HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = conn.read_response();
    assert_eq!(response.body, b"one\ntwo\n");
    // An event stream cut short by its client: logged at the close, with the bytes sent.
    let mut subscriber = server.connect();
    subscriber.send(b"GET /events/log HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(subscriber.read_head_response().status, 200);
    let mut notify = server.connect();
    notify.send(&post("/notify/log", b"hi"));
    assert_eq!(notify.read_response().status, 200);
    assert!(!subscriber.read_chunk().is_empty());
    drop(subscriber);

    let lines = log_lines(&path, 3);
    let parsed: Vec<Line> = lines.iter().map(|l| parse_line(l)).collect();
    let stream = parsed
        .iter()
        .find(|l| l.request.starts_with("GET /stream/two"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    // Chunk framing included, as nginx counts a chunked body: 2 chunks or 1, then the last
    // chunk and its trailer.
    assert_eq!(stream.status, 200);
    assert!((8..100).contains(&stream.bytes), "{lines:#?}");
    let events = parsed
        .iter()
        .find(|l| l.request.starts_with("GET /events/log"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(events.status, 200);
    assert!(events.bytes > 0, "{lines:#?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_access_log_is_written_in_batches() {
    const REQUESTS: usize = 300;
    let path = temp_log("batches");
    let server = Server::start_with(&["--access-log", path.to_str().unwrap()]);
    let mut conn = server.connect();
    for _ in 0..REQUESTS {
        conn.send(GET_PLAINTEXT);
        assert_eq!(conn.read_response().status, 200);
    }
    log_lines(&path, REQUESTS);
    conn.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let metrics = conn.read_response();
    let writes: u64 = metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("miohttpd_log_writes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics:?}"));
    // A batch goes out a second after its first line: the 300 lines took a few writes, not
    // one each, unless the machine took tens of seconds over them.
    assert!(
        (1..=(REQUESTS as u64 / 10)).contains(&writes),
        "{writes} writes for {REQUESTS} lines"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_access_log_can_go_to_stdout() {
    let server = Server::start_with(&["--access-log", "-"]);
    let mut conn = server.connect();
    conn.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nUser-Agent: on-stdout\r\n\r\n");
    assert_eq!(conn.read_response().status, 200);
    let logged = parse_line(&server.next_stdout_line());
    assert_eq!(
        logged,
        line("GET /plaintext HTTP/1.1", 200, 13, "-", "on-stdout")
    );
}

#[test]
fn the_stats_line_reports_each_interval() {
    let server = Server::start_with(&["--stats-interval", "1"]);
    let mut conn = server.connect();
    for _ in 0..50 {
        conn.send(GET_PLAINTEXT);
        assert_eq!(conn.read_response().status, 200);
    }
    // A line every second; the first may predate the connection on a slow machine.
    let started = Instant::now();
    let line = loop {
        let log = server.stderr_log();
        let mut lines = log.lines();
        if let Some(line) = lines.find(|l| l.starts_with("miohttpd: stats: conns=1 ")) {
            break line.to_string();
        }
        assert!(
            started.elapsed() < IO_TIMEOUT,
            "no stats line with the connection:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let fields: Vec<(&str, &str)> = line
        .trim_start_matches("miohttpd: stats: ")
        .split(' ')
        .map(|f| f.split_once('=').unwrap_or_else(|| panic!("{line}")))
        .collect();
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["conns", "req/s", "syscalls/req", "events/poll", "in", "out"],
        "{line}"
    );
    assert!(
        fields[4].1.ends_with("B/s") && fields[5].1.ends_with("B/s"),
        "{line}"
    );
}

#[test]
fn the_admin_listener_serves_metrics_and_only_metrics() {
    let server = Server::start_with(&["--admin-listen", "127.0.0.1:0"]);
    let admin = server.admin_addr();
    assert_ne!(admin, server.addr());
    let metrics = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        server.request(metrics).status,
        404,
        "not on the main listener"
    );
    server.assert_still_serves();

    let mut conn = common::Conn::connect(admin);
    conn.send(metrics);
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.text().contains("\nmiohttpd_syscalls_total "));
    // Keep-alive works there too; other routes do not.
    let post_metrics = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let table: [(&[u8], u16); 3] = [(GET_PLAINTEXT, 404), (post_metrics, 405), (metrics, 200)];
    for (request, status) in table {
        conn.send(request);
        assert_eq!(conn.read_response().status, status);
    }
}

#[test]
fn the_socket_knobs_leave_a_working_server() {
    let server = Server::start_with(&[
        "--reuseport",
        "on",
        "--defer-accept",
        "1",
        "--rcvbuf",
        "131072",
        "--sndbuf",
        "131072",
        "--coalesce",
        "off",
        "--read-until-wouldblock",
        "on",
    ]);
    server.assert_still_serves();
    let mut conn = server.connect();
    conn.send(&GET_PLAINTEXT.repeat(3));
    for _ in 0..3 {
        assert_eq!(conn.read_response().body, b"Hello, World!");
    }
}

#[test]
fn reuseport_lets_a_second_server_share_the_port() {
    let first = Server::start_with(&["--reuseport", "on"]);
    let port = first.addr().port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let second = Server::start_with(&["--reuseport", "on", "--listen", &listen]);
    assert_eq!(second.addr(), first.addr());
    second.assert_still_serves();

    // Without it, the port is taken: the third server says so and exits.
    let (code, stderr) = exit_without_serving(&["--listen", &listen], &[]);
    assert_eq!(code, Some(1), "{stderr}");
}
