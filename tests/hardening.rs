//! Hardening seen from raw sockets and `/proc`: the timeouts end to end (one slowloris, one
//! idle close, one send-timeout drop), the connection limit and its 503, accepting under
//! file-descriptor exhaustion without spinning, graceful shutdown on SIGTERM and SIGINT, and the
//! admin token in front of `/notify`, `/metrics` and (on request) `/stream`.
//!
//! The timing rules themselves (each timeout at its exact boundary, lingering, the comet
//! timeout, heartbeats, the connection side of a shutdown) are tested under a scripted clock
//! in `tests/timers.rs`; the few timed tests here check that the real loop's timers fire. Timeouts
//! are 1 s here so they stay quick; every timed assertion is a generous window around them
//! ("answered between 0.5 s and 8 s"), and causality carries the rest.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use common::{
    assert_error_and_close, check_rows, connect_from, exit_without_serving, is_timeout, md5_hex,
    post, source_address, Conn, Launch, Piece, PseudoRandom, Response, Server, GET_PLAINTEXT,
    IO_TIMEOUT,
};

/// Every timeout the server has, at 1 s.
const ONE_SECOND_TIMEOUTS: [&str; 8] = [
    "--head-timeout",
    "1",
    "--idle-timeout",
    "1",
    "--body-timeout",
    "1",
    "--send-timeout",
    "1",
];

/// A 1 s timer fires neither before this...
const EARLY: Duration = Duration::from_millis(500);
/// ...nor after this, however loaded the machine.
const LATE: Duration = Duration::from_secs(8);

/// Every wait for something the server should do by itself gives up after this long.
const WAIT: Duration = Duration::from_secs(10);
const POLL_PAUSE: Duration = Duration::from_millis(10);

/// A slowloris client's pace: far quicker than any timeout, so only a deadline on the whole
/// head (not one per read) stops it.
const TRICKLE_PAUSE: Duration = Duration::from_millis(200);

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

fn get_closing(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// `METHOD path` with an `Authorization` header (none if `None`) and, for POST, a body.
fn request_with_auth(method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Vec<u8> {
    let auth_line = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let length_line = if method == "POST" {
        format!(
            "Content-Type: text/plain\r\nContent-Length: {}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth_line}{length_line}\r\n")
            .into_bytes();
    request.extend_from_slice(body);
    request
}

fn assert_within(elapsed: Duration, low: Duration, high: Duration, what: &str) {
    assert!(
        low <= elapsed && elapsed <= high,
        "{what} after {elapsed:?}, expected between {low:?} and {high:?}"
    );
}

/// Whether the server has sent something on `conn` (or closed it) within `pause`. Only for a
/// connection with nothing left in its read buffer: this looks at the socket itself.
fn answered_within(conn: &Conn, pause: Duration) -> bool {
    conn.stream().set_read_timeout(Some(pause)).unwrap();
    let mut byte = [0; 1];
    let answered = match conn.stream().peek(&mut byte) {
        Ok(_) => true,
        Err(e) if is_timeout(&e) => false,
        Err(e) => panic!("peeking for an answer: {e}"),
    };
    conn.stream().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    answered
}

/// Reads and discards what the server still sends until it closes the connection (FIN, or RST
/// for a peer that closed with our bytes unread); how many bytes that was. Fails if it stays open.
fn drain_until_closed(stream: &mut TcpStream) -> usize {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return total,
            Err(e) if is_timeout(&e) => {
                panic!("the server kept the connection open ({total} bytes read)")
            }
            Err(e) => panic!("reading until the server closes: {e}"),
        }
    }
}

/// A client socket with a small receive buffer, so a client that does not read stalls the
/// server quickly.
fn connect_small_window(server: &Server) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Polls `check` until it returns `Ok`, failing with its last complaint after `bound`.
fn wait_for(bound: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if started.elapsed() > bound => panic!("still, after {bound:?}: {why}"),
            Err(_) => thread::sleep(POLL_PAUSE),
        }
    }
}

fn wait_for_log(server: &Server, needle: &str) {
    wait_for(WAIT, || {
        let log = server.stderr_log();
        if log.contains(needle) {
            Ok(())
        } else {
            Err(format!("no {needle:?} in the server's stderr:\n{log}"))
        }
    });
}

/// `GET /`: how many long-poll waiters are parked.
fn parked(server: &Server) -> usize {
    let response = server.request(&get("/"));
    assert_eq!(response.status, 200, "GET /: {response:?}");
    response.text().parse().expect("GET / answers a number")
}

fn await_parked(server: &Server, n: usize) {
    wait_for(WAIT, || match parked(server) {
        seen if seen == n => Ok(()),
        seen => Err(format!("{seen} waiters parked, expected {n}")),
    });
}

// ---- Processes, from /proc ----

/// A process's children, zombies included.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let Ok(task) = task else { continue };
        let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    found
}

/// The fields of `/proc/PID/stat` after the command name: state is `[0]`, the process group
/// `[2]`, utime `[11]`, stime `[12]`. `None` once the process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after its last `)` do not.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The processes of `group` that still run (zombies do not count).
fn live_members(group: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[2].parse() == Ok(group)))
        .collect()
}

/// CPU time the process has used so far (user + system).
fn cpu_time(pid: u32) -> Duration {
    let fields = stat_fields(pid).unwrap_or_else(|| panic!("process {pid} is gone"));
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The one command the server runs now, which leads its own process group; killed with its
/// group when the guard drops, so a failing test leaves nothing behind.
struct CommandGroup(u32);

impl CommandGroup {
    fn only_child_of(server: &Server) -> CommandGroup {
        let mut leader = 0;
        // Right after fork the child is still in the server's group: it moves to its own just
        // before exec, so the check waits for that rather than catching the fork half done.
        wait_for(WAIT, || match children(server.pid())[..] {
            [child] => {
                leader = child;
                let group = stat_fields(child).and_then(|f| f[2].parse::<u32>().ok());
                match group {
                    Some(group) if group == child => Ok(()),
                    _ => Err(format!(
                        "the command {child} should lead its own group: {group:?}"
                    )),
                }
            }
            ref kids => Err(format!("expected one child of the server, found {kids:?}")),
        });
        CommandGroup(leader)
    }

    fn await_gone(&self, bound: Duration) {
        wait_for(bound, || match live_members(self.0)[..] {
            [] => Ok(()),
            ref alive => Err(format!("processes {alive:?} of the command still run")),
        });
    }
}

impl Drop for CommandGroup {
    fn drop(&mut self) {
        if !live_members(self.0).is_empty() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The server process is still there (not exited, not a zombie awaiting the test's wait).
fn still_running(server: &Server) -> bool {
    stat_fields(server.pid()).is_some_and(|f| f[0] != "Z")
}

// ---- Head timeout ----

/// A head sent a byte every 200 ms never completes a request: the head timeout counts from
/// accept (first request) or from the head's first byte (later requests), not from the last
/// read, so it ends in 408 and a close.
#[test]
fn a_head_trickled_a_byte_at_a_time_gets_408_after_the_head_timeout() {
    let server = Server::start_with(&ONE_SECOND_TIMEOUTS);
    // 140 bytes at 200 ms each would take 28 s: only the timeout can end this.
    let head = format!(
        "GET /plaintext HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(100)
    );
    let rows = [("first request", false), ("second request", true)];
    check_rows(
        rows.map(|(name, after_one)| (name.to_string(), after_one)),
        |case, after_one| {
            let mut conn = server.connect();
            conn.stream().set_nodelay(true).unwrap();
            if after_one {
                conn.send(GET_PLAINTEXT);
                let first = conn.read_response();
                assert!(first.status == 200 && !first.closes(), "{first:?}");
            }
            let started = Instant::now();
            for byte in head.as_bytes() {
                conn.send(std::slice::from_ref(byte));
                if answered_within(&conn, TRICKLE_PAUSE) {
                    break;
                }
                assert!(
                    started.elapsed() < LATE,
                    "{case}: no answer {LATE:?} into a trickled head"
                );
            }
            assert_within(started.elapsed(), EARLY, LATE, "408");
            assert_error_and_close(&server, &mut conn, &[408], case);
        },
    );
}

// ---- Idle timeout ----

/// Between requests the idle timeout rules, not the head timeout: a kept-alive connection
/// is closed silently after the idle timeout. (Its exact boundary, and that a client may
/// think for longer than the head timeout, are in `tests/timers.rs`.)
#[test]
fn a_keep_alive_connection_waits_on_the_idle_timer_between_requests() {
    let server = Server::start_with(&["--head-timeout", "30", "--idle-timeout", "1"]);
    let mut conn = server.connect();
    conn.send(GET_PLAINTEXT);
    let first = conn.read_response();
    assert!(first.status == 200 && !first.closes(), "{first:?}");
    let answered = Instant::now();
    // Closed silently: not even a 408.
    conn.expect_eof();
    assert_within(answered.elapsed(), EARLY, LATE, "the idle close");
    server.assert_still_serves();
}

// ---- Send timeout ----

/// A client that asks for endless output and reads none of it is closed once the server's
/// output has sat unread for the send timeout, and its command's whole group is ended.
#[test]
fn a_client_that_stops_reading_a_stream_is_closed_and_its_command_ended() {
    let mut flags = ONE_SECOND_TIMEOUTS.to_vec();
    flags.extend(["--exec", "flood=yes miohttpd-hardening-flood"]);
    let server = Server::start_with(&flags);
    let mut stream = connect_small_window(&server);
    stream.write_all(&get("/stream/flood")).unwrap();
    let asked = Instant::now();
    let command = CommandGroup::only_child_of(&server);
    command.await_gone(WAIT);
    assert!(
        asked.elapsed() >= EARLY,
        "the command ended {:?} after the request, before any timeout",
        asked.elapsed()
    );
    let read = drain_until_closed(&mut stream);
    assert!(read > 0, "not even the head of the stream arrived");
    assert!(
        children(server.pid()).is_empty(),
        "the server still has children: {:?}",
        children(server.pid())
    );
    server.assert_still_serves();
}

/// An event-stream subscriber that stops reading is dropped, while one that reads stays
/// subscribed. (That a quiet subscriber outlives the head and idle timeouts, and when the send
/// timeout drops one, are in `tests/timers.rs`.)
#[test]
fn an_event_stream_subscriber_is_dropped_only_when_it_stops_reading() {
    const MESSAGE: usize = 32 * 1024;
    let server = Server::start_with(&ONE_SECOND_TIMEOUTS);

    let mut reader = server.connect();
    reader.send(&get("/events/e"));
    let head = reader.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    let mut stalled = connect_small_window(&server);
    stalled.write_all(&get("/events/e")).unwrap();

    let message = PseudoRandom::bytes(1, MESSAGE / 2);
    let body = common::hex(&message);
    let publish = |body: &str| -> usize {
        let response = server.request(&request_with_auth(
            "POST",
            "/notify/e",
            None,
            body.as_bytes(),
        ));
        assert_eq!(response.status, 200, "publish: {response:?}");
        response.text().parse().expect("publish answers a count")
    };
    assert_eq!(publish("first"), 2);

    let events = AtomicUsize::new(0);
    thread::scope(|scope| {
        let reading = scope.spawn(|| loop {
            let chunk = reader.read_chunk();
            assert!(!chunk.is_empty(), "the reading subscriber's stream ended");
            if chunk.starts_with(b"id:") {
                events.fetch_add(1, Ordering::Relaxed);
            }
            if chunk.ends_with(b"data: done\n\n") {
                return;
            }
        });
        let started = Instant::now();
        let mut published = 1;
        loop {
            let reached = publish(&body);
            published += 1;
            if reached == 1 {
                break;
            }
            assert_eq!(reached, 2);
            assert!(
                started.elapsed() < WAIT,
                "the subscriber that reads nothing was still subscribed after {published} messages of {MESSAGE} bytes"
            );
        }
        assert_eq!(publish("done"), 1, "the reading subscriber was dropped");
        published += 1;
        reading.join().expect("reading subscriber");
        assert_eq!(events.load(Ordering::Relaxed), published);
    });
    drain_until_closed(&mut stalled);
}

/// A command that is quiet for longer than every timeout: its client is neither idle (a
/// response is under way) nor failing to read (nothing is pending), so the stream completes.
#[test]
fn a_quiet_command_outlives_every_timeout() {
    let mut flags = ONE_SECOND_TIMEOUTS.to_vec();
    flags.extend(["--exec", "quiet=echo before; sleep 3; echo after"]);
    let server = Server::start_with(&flags);
    let mut conn = server.connect();
    conn.send(&get("/stream/quiet"));
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "before\nafter\n");
    conn.send(GET_PLAINTEXT);
    assert_eq!(conn.read_response().status, 200);
}

/// Quick clients never notice the timeouts: keep-alive connections, each with requests and
/// uploads back to back for longer than any timeout, all answered.
#[test]
fn fast_clients_are_unaffected_by_short_timeouts() {
    const CLIENTS: usize = 4;
    let server = Server::start_with(&ONE_SECOND_TIMEOUTS);
    thread::scope(|scope| {
        for client in 0..CLIENTS {
            let server = &server;
            scope.spawn(move || {
                let mut conn = server.connect();
                let started = Instant::now();
                let mut round = 0;
                while started.elapsed() < Duration::from_millis(2500) {
                    let body = format!("client {client} round {round}").repeat(100);
                    // A burst of pipelined requests, then an upload.
                    conn.send(&GET_PLAINTEXT.repeat(10));
                    for i in 0..10 {
                        let response = conn.read_response();
                        assert_eq!(response.status, 200, "round {round} #{i}: {response:?}");
                    }
                    conn.send(&post("/md5", body.as_bytes()));
                    let response = conn.read_response();
                    assert_eq!(response.text(), md5_hex(body.as_bytes()), "round {round}");
                    round += 1;
                }
            });
        }
    });
    server.assert_still_serves();
}

// ---- Connection limit ----

fn assert_at_limit(conn: &mut Conn, case: &str) {
    let response = conn.read_response();
    assert_eq!(response.status, 503, "{case}: {response:?}");
    assert_eq!(
        response.header("retry-after"),
        Some("1"),
        "{case}: {response:?}"
    );
    assert!(response.closes(), "{case}: {response:?}");
    assert_eq!(response.text(), "server at connection limit\n", "{case}");
    // RFC 9110 §6.6.1 makes Date optional on a 5xx, so not all standard headers are asked for.
    assert_eq!(
        response.header("content-type"),
        Some("text/plain"),
        "{case}"
    );
    conn.expect_eof();
}

fn metric(conn: &mut Conn, name: &str) -> u64 {
    conn.send(&get("/metrics"));
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    let text = response.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[test]
fn the_connection_beyond_the_limit_gets_503_and_takes_no_slot() {
    const REFUSED: &str = "miohttpd_refused_connections_total";
    let server = Server::start_with(&["--max-connections", "5"]);
    let mut held: Vec<Conn> = (0..5)
        .map(|i| {
            let mut conn = server.connect();
            conn.send(GET_PLAINTEXT);
            let response = conn.read_response();
            assert_eq!(response.status, 200, "held connection {i}: {response:?}");
            conn
        })
        .collect();

    assert_at_limit(&mut server.connect(), "sixth, silent");
    let mut asking = server.connect();
    asking.send(GET_PLAINTEXT);
    assert_at_limit(&mut asking, "sixth, with a request");

    for (i, conn) in held.iter_mut().enumerate() {
        conn.send(GET_PLAINTEXT);
        let response = conn.read_response();
        assert!(
            response.status == 200 && !response.closes(),
            "held connection {i} after the refusals: {response:?}"
        );
    }
    assert_eq!(metric(&mut held[1], REFUSED), 2);

    // The server closes this one itself, so by the time the client sees EOF its slot is free.
    let mut leaving = held.remove(0);
    leaving.send(&get_closing("/plaintext"));
    assert_eq!(leaving.read_response().status, 200);
    leaving.expect_eof();
    let mut newcomer = server.connect();
    newcomer.send(GET_PLAINTEXT);
    let response = newcomer.read_response();
    assert_eq!(response.status, 200, "after a slot freed: {response:?}");
    held.push(newcomer);

    // Five again: the refusals took no slot.
    assert_at_limit(&mut server.connect(), "sixth again");
    assert_eq!(metric(&mut held[0], REFUSED), 3);
}

/// By default the limit is the open-files limit minus 64: with 74 descriptors, 10 connections.
#[test]
fn the_default_limit_leaves_64_descriptors_spare() {
    let server = Server::launch(
        &[],
        Launch {
            open_files: Some(74),
            ..Launch::default()
        },
    );
    let _held: Vec<Conn> = (0..10)
        .map(|i| {
            let mut conn = server.connect();
            conn.send(GET_PLAINTEXT);
            let response = conn.read_response();
            assert_eq!(response.status, 200, "connection {i}: {response:?}");
            conn
        })
        .collect();
    assert_at_limit(&mut server.connect(), "eleventh");
}

// ---- File-descriptor exhaustion ----

/// With 64 descriptors and 200 clients, the server serves what it can, waits for descriptors
/// without spinning, and serves the clients still in the backlog as the served ones leave,
/// without any new connection to wake it.
#[test]
fn out_of_descriptors_the_server_waits_without_spinning_and_resumes_by_itself() {
    const CLIENTS: usize = 200;
    let server = Server::launch(
        &["--max-connections", "100000"],
        Launch {
            open_files: Some(64),
            ..Launch::default()
        },
    );
    let clients: Vec<Conn> = (0..CLIENTS)
        .map(|i| {
            let mut conn = connect_from(&server, source_address(i));
            conn.send(GET_PLAINTEXT);
            conn
        })
        .collect();
    wait_for_log(&server, "out of file descriptors");
    // Whatever fits is accepted and answered in this time.
    thread::sleep(Duration::from_millis(300));

    let cpu_before = cpu_time(server.pid());
    thread::sleep(Duration::from_secs(2));
    let spent = cpu_time(server.pid()) - cpu_before;
    assert!(
        spent < Duration::from_millis(300),
        "the server used {spent:?} of CPU in 2 s while out of descriptors: it spins"
    );
    let log = server.stderr_log();
    let episodes = log.matches("out of file descriptors").count();
    assert_eq!(episodes, 1, "one log line per episode:\n{log}");

    let (answered, mut waiting): (Vec<Conn>, Vec<Conn>) = clients
        .into_iter()
        .partition(|conn| answered_within(conn, Duration::from_millis(1)));
    assert!(
        !answered.is_empty() && waiting.len() >= CLIENTS / 2,
        "{} clients answered with 64 descriptors, {} waiting",
        answered.len(),
        waiting.len()
    );
    for mut conn in answered {
        assert_eq!(conn.read_response().status, 200);
    }

    // No new client from here on: each answer frees a descriptor for the next in the backlog.
    let started = Instant::now();
    while !waiting.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} clients still unanswered {:?} after the first ones left",
            waiting.len(),
            started.elapsed()
        );
        let mut still = Vec::new();
        for mut conn in waiting {
            if answered_within(&conn, Duration::from_millis(1)) {
                let response = conn.read_response();
                assert_eq!(response.status, 200, "{response:?}");
            } else {
                still.push(conn);
            }
        }
        waiting = still;
        thread::sleep(POLL_PAUSE);
    }
    server.assert_still_serves();
}

/// Out of descriptors with no connection closing: descriptors that free up otherwise (a
/// command's pipe) are found by the retry 100 ms later, and one more client from the backlog
/// is served.
#[test]
fn out_of_descriptors_the_server_retries_when_descriptors_free_up_without_a_close() {
    const CLIENTS: usize = 100;
    let gate = TempFile::named("gate");
    let command = format!(
        "gated=while [ ! -e '{}' ]; do sleep 0.05; done; echo done",
        gate.path()
    );
    let server = Server::launch(
        &["--max-connections", "100000", "--exec", &command],
        Launch {
            open_files: Some(64),
            ..Launch::default()
        },
    );
    let mut stream = server.connect();
    stream.send(&get("/stream/gated"));
    assert_eq!(stream.read_head_response().status, 200);
    let _command = CommandGroup::only_child_of(&server);

    let clients: Vec<Conn> = (0..CLIENTS)
        .map(|i| {
            let mut conn = connect_from(&server, source_address(i));
            conn.send(GET_PLAINTEXT);
            conn
        })
        .collect();
    wait_for_log(&server, "out of file descriptors");
    thread::sleep(Duration::from_millis(500));
    let (answered, waiting): (Vec<Conn>, Vec<Conn>) = clients
        .into_iter()
        .partition(|conn| answered_within(conn, Duration::from_millis(1)));
    assert!(
        !waiting.is_empty(),
        "all {CLIENTS} clients were served with 64 descriptors"
    );

    // The command ends and its pipe is closed; every connection stays open.
    gate.write("");
    assert_eq!(stream.read_chunk(), b"done\n");
    assert!(stream.read_chunk().is_empty(), "the stream goes on");
    wait_for(WAIT, || {
        match waiting
            .iter()
            .filter(|conn| answered_within(conn, Duration::from_millis(1)))
            .count()
        {
            0 => Err(format!(
                "none of {} waiting clients served ({} were before)",
                waiting.len(),
                answered.len()
            )),
            _ => Ok(()),
        }
    });
}

// ---- Stopping ----

/// Everything a server can have in flight, set up before the signal.
struct InFlight {
    idle: Conn,
    partial_head: Conn,
    upload: Conn,
    upload_body: Vec<u8>,
    waiter: Conn,
    subscriber: Conn,
    stream: Conn,
    command: CommandGroup,
}

const UPLOAD_SIZE: usize = 1 << 20;
const PARTIAL_HEAD: &[u8] = b"GET /plaintext HTTP/1.1\r\nHo";
/// A command that says when SIGTERM reaches it and exits 3 for it.
const TERMINABLE: &str =
    "trap 'echo terminated; exit 3' TERM; echo started; while :; do sleep 0.1; done";

fn set_up_in_flight(server: &Server) -> InFlight {
    let mut idle = server.connect();
    idle.send(GET_PLAINTEXT);
    assert_eq!(idle.read_response().status, 200);

    let mut partial_head = server.connect();
    partial_head.send(PARTIAL_HEAD);

    let upload_body = PseudoRandom::bytes(7, UPLOAD_SIZE);
    let mut upload = server.connect();
    upload.send(&post("/md5", &upload_body)[..UPLOAD_SIZE / 2]);

    let mut waiter = server.connect();
    waiter.send(&get("/wait/w"));
    await_parked(server, 1);

    let mut subscriber = server.connect();
    subscriber.send(&get("/events/e"));
    assert_eq!(subscriber.read_head_response().status, 200);

    let mut stream = server.connect();
    stream.send(&get("/stream/terminable"));
    assert_eq!(stream.read_head_response().status, 200);
    assert_eq!(stream.read_chunk(), b"started\n");
    let command = CommandGroup::only_child_of(server);
    InFlight {
        idle,
        partial_head,
        upload,
        upload_body,
        waiter,
        subscriber,
        stream,
        command,
    }
}

fn assert_refuses_connections(server: &Server) {
    wait_for(WAIT, || match TcpStream::connect(server.addr()) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("connect failed, but not refused: {e}")),
        Ok(_) => Err("a new connection was accepted after the signal".to_string()),
    });
}

fn last_log_line(server: &Server) -> String {
    let log = server.stderr_log();
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string()
}

/// What the contract promises each kind of connection after SIGTERM or SIGINT, then exit 0 as
/// soon as none is left (the grace is 30 s; this takes a second or two).
fn stopping_winds_down_what_is_in_flight(signal: &str) {
    let server = Server::start_with(&[
        "--shutdown-grace",
        "30",
        "--exec",
        &format!("terminable={TERMINABLE}"),
    ]);
    let mut flight = set_up_in_flight(&server);

    server.signal(signal);
    let signalled = Instant::now();
    wait_for_log(&server, "shutting down");
    assert_refuses_connections(&server);

    flight.idle.expect_eof();

    let answer = flight.waiter.read_response();
    assert_eq!(answer.status, 503, "parked waiter: {answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
    assert!(answer.closes(), "{answer:?}");
    flight.waiter.expect_eof();

    loop {
        match flight.subscriber.read_piece() {
            Piece::Data(data) if data.starts_with(b":") => continue,
            Piece::Data(data) => panic!(
                "an event after the signal: {:?}",
                String::from_utf8_lossy(&data)
            ),
            Piece::End(_) => break,
        }
    }
    flight.subscriber.expect_eof();

    let mut rest = Vec::new();
    let trailers = loop {
        match flight.stream.read_piece() {
            Piece::Data(data) => rest.extend(data),
            Piece::End(trailers) => break trailers,
        }
    };
    assert_eq!(rest, b"terminated\n", "the command did not get SIGTERM");
    let exit_status = trailers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-exit-status"))
        .map(|(_, value)| value.as_str());
    assert_eq!(exit_status, Some("3"), "trailer {trailers:?}");
    flight.command.await_gone(WAIT);

    flight.partial_head.send(b"st: localhost\r\n\r\n");
    let late_head = flight.partial_head.read_response();
    assert!(
        late_head.status == 200 && late_head.closes(),
        "a head finished after the signal: {late_head:?}"
    );
    flight.partial_head.expect_eof();

    flight
        .upload
        .send(&post("/md5", &flight.upload_body)[UPLOAD_SIZE / 2..]);
    let digest = flight.upload.read_response();
    assert_eq!(digest.status, 200, "upload: {digest:?}");
    assert_eq!(digest.text(), md5_hex(&flight.upload_body));
    assert!(digest.closes(), "upload: {digest:?}");
    flight.upload.expect_eof();

    // Its answer over, the stream's connection is idle: closed at once like any other.
    flight.stream.expect_eof();

    let status = server_exit(server, signalled, WAIT);
    assert_eq!(status.0.code(), Some(0), "exit status {:?}", status.0);
    assert!(status.1.contains("stopped"), "last log line {:?}", status.1);
}

/// Waits for the exit; returns the status and the last line of the log.
fn server_exit(
    mut server: Server,
    since: Instant,
    bound: Duration,
) -> (std::process::ExitStatus, String) {
    let status = server.wait_exit(bound.saturating_sub(since.elapsed()));
    let last = last_log_line(&server);
    (status, last)
}

#[test]
fn sigterm_winds_down_what_is_in_flight() {
    stopping_winds_down_what_is_in_flight("TERM");
}

#[test]
fn sigint_winds_down_what_is_in_flight() {
    stopping_winds_down_what_is_in_flight("INT");
}

#[test]
fn with_nothing_in_flight_the_server_exits_at_once() {
    check_rows(["TERM", "INT"].map(|s| (s.to_string(), s)), |_, signal| {
        let server = Server::start_with(&["--shutdown-grace", "30"]);
        let mut conn = server.connect();
        conn.send(&get_closing("/plaintext"));
        assert_eq!(conn.read_response().status, 200);
        conn.expect_eof();
        server.signal(signal);
        let (status, last) = server_exit(server, Instant::now(), Duration::from_secs(5));
        assert_eq!(status.code(), Some(0), "{status:?}");
        assert!(last.contains("stopped"), "last log line {last:?}");
    });
}

/// A command that ignores SIGTERM, and a long kill grace: only SIGKILL ends it.
const STUBBORN: &str = "trap '' TERM; echo started; sleep 60";

#[test]
fn a_second_signal_during_the_grace_exits_at_once_with_status_1() {
    let server = Server::start_with(&[
        "--shutdown-grace",
        "30",
        "--exec-kill-grace",
        "60s",
        "--exec",
        &format!("stubborn={STUBBORN}"),
    ]);
    let mut stream = server.connect();
    stream.send(&get("/stream/stubborn"));
    assert_eq!(stream.read_head_response().status, 200);
    assert_eq!(stream.read_chunk(), b"started\n");
    let command = CommandGroup::only_child_of(&server);
    let mut upload = server.connect();
    upload.send(&post("/md5", &[b'x'; 1000])[..500]);

    server.signal("TERM");
    wait_for_log(&server, "shutting down");
    thread::sleep(Duration::from_millis(500));
    assert!(
        still_running(&server),
        "the server exited with an upload and a command in flight"
    );
    server.signal("INT");
    let (status, _) = server_exit(server, Instant::now(), Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{status:?}");
    command.await_gone(Duration::from_secs(5));
}

#[test]
fn when_the_grace_ends_what_is_left_is_closed_and_the_server_exits_0() {
    let server = Server::start_with(&[
        "--shutdown-grace",
        "1",
        "--exec-kill-grace",
        "60s",
        "--exec",
        &format!("stubborn={STUBBORN}"),
    ]);
    let mut stream = server.connect();
    stream.send(&get("/stream/stubborn"));
    assert_eq!(stream.read_head_response().status, 200);
    assert_eq!(stream.read_chunk(), b"started\n");
    let command = CommandGroup::only_child_of(&server);
    let upload = server.connect();
    let mut upload_stream = upload.stream().try_clone().unwrap();
    upload_stream
        .write_all(&post("/md5", &[b'x'; 1000])[..500])
        .unwrap();

    server.signal("TERM");
    let signalled = Instant::now();
    let (status, last) = server_exit(server, signalled, LATE);
    assert_within(signalled.elapsed(), EARLY, LATE, "the exit");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(last.contains("stopped"), "last log line {last:?}");
    command.await_gone(Duration::from_secs(5));
    drain_until_closed(&mut upload_stream);
}

// ---- Admin token ----

const TOKEN: &str = "s3cret-Token_42";

/// A path in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    /// A fresh path, not created yet.
    fn named(name: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        TempFile(std::env::temp_dir().join(format!(
            "miohttpd-hardening-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }

    fn with(name: &str, contents: &str) -> TempFile {
        let file = TempFile::named(name);
        file.write(contents);
        file
    }

    fn write(&self, contents: &str) {
        fs::write(&self.0, contents).unwrap_or_else(|e| panic!("write {}: {e}", self.0.display()));
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn assert_unauthorized(response: &Response, case: &str) {
    assert_eq!(response.status, 401, "{case}: {response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"miohttpd\""),
        "{case}: {response:?}"
    );
    assert_eq!(response.body, b"unauthorized\n", "{case}: {response:?}");
    response.assert_standard_headers();
}

/// `/notify` and `/metrics` take the token and nothing else; every other route stays open.
fn assert_guarded_by_token(server: &Server) {
    let bearer = format!("Bearer {TOKEN}");
    let refused = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
        Some("Bearer".to_string()),
    ];
    let accepted = [
        bearer.clone(),
        format!("bearer {TOKEN}"),
        format!("BEARER {TOKEN}"),
    ];
    for path in ["/metrics", "/notify", "/notify/c"] {
        for auth in &refused {
            let response = server.request(&request_with_auth("GET", path, auth.as_deref(), b""));
            assert_unauthorized(&response, &format!("GET {path} with {auth:?}"));
        }
        for auth in &accepted {
            let response = server.request(&request_with_auth("GET", path, Some(auth), b""));
            assert_eq!(
                response.status, 200,
                "GET {path} with {auth:?}: {response:?}"
            );
        }
    }

    // The same routes under other spellings of their target.
    for target in [
        "/metrics?x=1",
        "http://localhost/metrics",
        "/notify?x=1",
        "/notify/",
        "/notify/c?x=1",
        "/notify/../metrics",
    ] {
        let response = server.request(&request_with_auth("GET", target, None, b""));
        assert_unauthorized(&response, &format!("GET {target}"));
        let mut conn = server.connect();
        conn.send(&request_with_auth("HEAD", target, None, b""));
        let head = conn.read_head_response();
        // HEAD must have no side effect (RFC 9110 §9.3.2), so the publishing routes refuse it
        // whoever asks, before the token is looked at; /metrics answers it, behind the token.
        if target.starts_with("/notify") {
            assert_eq!(head.status, 405, "HEAD {target}: {head:?}");
            assert_eq!(head.header("allow"), Some("GET, POST"), "HEAD {target}");
        } else {
            assert_eq!(head.status, 401, "HEAD {target}: {head:?}");
        }
    }

    // A refused publish is answered before its body is read, and reaches no one.
    let mut waiter = server.connect();
    waiter.send(&get("/wait/c"));
    await_parked(server, 1);
    for auth in [None, Some("Bearer wrong")] {
        let mut publisher = server.connect();
        publisher.send(&request_with_auth("POST", "/notify/c", auth, b"forged"));
        let response = publisher.read_response();
        assert_unauthorized(&response, &format!("POST /notify/c with {auth:?}"));
        assert!(response.closes(), "{response:?}");
        publisher.expect_eof();
    }
    // Nor is a body invited: no `100 Continue` before the 401.
    let mut publisher = server.connect();
    publisher.send(
        b"POST /notify/c HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n\
          Content-Length: 6\r\n\r\n",
    );
    let response = publisher.read_response();
    assert_unauthorized(&response, "POST /notify/c expecting 100-continue");
    assert!(response.closes(), "{response:?}");
    publisher.expect_eof();
    assert_eq!(parked(server), 1, "a refused publish reached the waiter");
    let published = server.request(&request_with_auth(
        "POST",
        "/notify/c",
        Some(&bearer),
        b"genuine",
    ));
    assert_eq!(published.status, 200, "{published:?}");
    assert_eq!(published.text(), "1", "{published:?}");
    let answer = waiter.read_response();
    assert_eq!(answer.text(), "genuine", "{answer:?}");

    let metrics = server.request(&request_with_auth("GET", "/metrics", Some(&bearer), b""));
    assert!(metrics.text().contains("miohttpd_"), "{metrics:?}");

    // Open routes, asked without a token.
    assert_eq!(server.request(GET_PLAINTEXT).status, 200);
    assert_eq!(server.request(&get("/")).status, 200);
    for path in ["/", "/md5"] {
        let response = server.request(&post(path, b"open"));
        assert_eq!(response.status, 200, "POST {path}: {response:?}");
        assert_eq!(response.text(), md5_hex(b"open"));
    }
    let mut open_waiter = server.connect();
    open_waiter.send(&get("/wait/open"));
    await_parked(server, 1);
    let notified = server.request(&request_with_auth(
        "GET",
        "/notify/open",
        Some(&bearer),
        b"",
    ));
    assert_eq!(notified.text(), "1", "{notified:?}");
    assert_eq!(open_waiter.read_response().status, 200);
}

fn command_line(server: &Server) -> String {
    let raw = fs::read(format!("/proc/{}/cmdline", server.pid())).expect("read cmdline");
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// How a server is given its token: flags and environment.
struct TokenSource<'a> {
    flags: Vec<&'a str>,
    env: Vec<(&'a str, &'a str)>,
}

impl<'a> TokenSource<'a> {
    fn flags(flags: &[&'a str]) -> TokenSource<'a> {
        TokenSource {
            flags: flags.to_vec(),
            env: Vec::new(),
        }
    }

    fn env(value: &'a str) -> TokenSource<'a> {
        TokenSource {
            flags: Vec::new(),
            env: vec![("MIOHTTPD_ADMIN_TOKEN", value)],
        }
    }
}

#[test]
fn the_admin_token_guards_notify_and_metrics_however_it_is_given() {
    let file = TempFile::with("token", &format!("  {TOKEN}\t \nnot-the-token\n"));
    let rows = [
        (
            "--admin-token",
            TokenSource::flags(&["--admin-token", TOKEN]),
        ),
        (
            "--admin-token-file",
            TokenSource::flags(&["--admin-token-file", file.path()]),
        ),
        ("MIOHTTPD_ADMIN_TOKEN", TokenSource::env(TOKEN)),
    ];
    check_rows(
        rows.map(|(name, source)| (name.to_string(), source)),
        |case, source| {
            let server = Server::launch(
                &source.flags,
                Launch {
                    env: &source.env,
                    ..Launch::default()
                },
            );
            // Only a token given as a flag may show in `ps`.
            let on_command_line = case == "--admin-token";
            assert_eq!(
                command_line(&server).contains(TOKEN),
                on_command_line,
                "{case}: command line {:?}",
                command_line(&server)
            );
            assert_guarded_by_token(&server);
        },
    );
}

#[test]
fn a_token_flag_wins_over_the_environment() {
    let server = Server::launch(
        &["--admin-token", TOKEN],
        Launch {
            env: &[("MIOHTTPD_ADMIN_TOKEN", "from-the-environment")],
            ..Launch::default()
        },
    );
    let ask = |auth: &str| server.request(&request_with_auth("GET", "/metrics", Some(auth), b""));
    assert_eq!(ask(&format!("Bearer {TOKEN}")).status, 200);
    assert_unauthorized(
        &ask("Bearer from-the-environment"),
        "the environment's token",
    );
}

/// Runs the binary with a bad configuration; it must exit before it listens.
fn startup_status(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let args = [&["--listen", "127.0.0.1:0"], args].concat();
    exit_without_serving(&args, env)
}

#[test]
fn an_empty_token_is_refused_at_startup() {
    let empty = TempFile::with("empty", "");
    let blank = TempFile::with("blank", "  \t \nsecond-line\n");
    let rows = [
        (
            "--admin-token ''",
            TokenSource::flags(&["--admin-token", ""]),
        ),
        (
            "an empty file",
            TokenSource::flags(&["--admin-token-file", empty.path()]),
        ),
        (
            "a blank first line",
            TokenSource::flags(&["--admin-token-file", blank.path()]),
        ),
        ("an empty MIOHTTPD_ADMIN_TOKEN", TokenSource::env("")),
    ];
    check_rows(
        rows.map(|(name, source)| (name.to_string(), source)),
        |case, source| {
            let (code, stderr) = startup_status(&source.flags, &source.env);
            assert_eq!(code, Some(2), "{case}: stderr {stderr:?}");
            assert!(!stderr.trim().is_empty(), "{case}: no message");
        },
    );
}

#[test]
fn exec_require_token_guards_the_stream_routes() {
    let bearer = format!("Bearer {TOKEN}");
    let commands = [
        "--exec",
        "stream=echo default",
        "--exec",
        "named=echo named",
    ];
    let guarded = Server::start_with(
        &[
            ["--admin-token", TOKEN, "--exec-require-token", "on"].as_slice(),
            &commands,
        ]
        .concat(),
    );
    let open = Server::start_with(&[["--admin-token", TOKEN].as_slice(), &commands].concat());
    for (path, output) in [("/stream", "default\n"), ("/stream/named", "named\n")] {
        let without = request_with_auth("GET", path, None, b"");
        let with = request_with_auth("GET", path, Some(&bearer), b"");
        assert_unauthorized(&guarded.request(&without), &format!("guarded {path}"));
        let response = guarded.request(&with);
        assert_eq!(
            response.status, 200,
            "guarded {path} with the token: {response:?}"
        );
        assert_eq!(response.text(), output);
        let response = open.request(&without);
        assert_eq!(response.status, 200, "{path} by default: {response:?}");
        assert_eq!(response.text(), output);
    }
}
