//! Streamed command output (`--exec NAME=COMMAND`, `GET /stream/NAME`) seen from curl, Python
//! `requests` and raw sockets: each piece a command writes arrives while it still runs, within
//! milliseconds; the `X-Exit-Status` trailer; byte-exact chunks and keep-alive after a stream;
//! close-delimited HTTP/1.0; 404, 503 and 500; the time limit and the kill grace; hang-ups that
//! leave no child, zombie, process or descriptor behind; a slow reader that stops the child
//! instead of growing the server; a hundred streams beside ordinary requests; the stderr modes;
//! and that nothing from the request reaches the command.

mod common;

use std::cell::RefCell;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::SockRef;

use common::{check_rows, Conn, Piece, PseudoRandom, Response, Server, GET_PLAINTEXT};

/// Every wait for something the server or a command should do soon gives up after this long,
/// so a buffering or stuck server fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);
const POLL_PAUSE: Duration = Duration::from_millis(10);

/// The tests that measure latency or load the machine run alone (a fork storm next door would
/// blur their numbers); the others share it.
static MACHINE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

// ---- Harness ----

/// A miohttpd with `--exec` commands. When the test ends, pass or fail, the process groups of
/// its children (those it has now, and those the test looked at) are killed: a failing test
/// must not leave `sleep 60`s or a gigabyte writer behind.
struct Streamer {
    server: Server,
    groups: RefCell<Vec<u32>>,
}

impl Streamer {
    fn start(flags: &[&str], commands: &[(&str, &str)]) -> Streamer {
        let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        for (name, command) in commands {
            args.push("--exec".to_string());
            args.push(format!("{name}={command}"));
        }
        Streamer {
            server: Server::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>()),
            groups: RefCell::new(Vec::new()),
        }
    }

    /// The one child the server runs now, which must lead its own process group.
    fn only_child(&self) -> u32 {
        let kids = children(self);
        let [child] = kids[..] else {
            panic!("expected one child of the server, found {kids:?}");
        };
        let group = stat(child).map(|(_, g)| g);
        assert_eq!(
            group,
            Some(child),
            "child {child} should lead its own process group"
        );
        self.groups.borrow_mut().push(child);
        child
    }
}

impl Deref for Streamer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        let mut targets = Vec::new();
        for pid in try_children(self.pid()).unwrap_or_default() {
            // A whole group only when the child leads it: otherwise it is the test's own.
            targets.push(match stat(pid) {
                Some((_, group)) if group == pid => format!("-{pid}"),
                _ => pid.to_string(),
            });
        }
        // Groups whose leader is gone, if anything of them lives on (an orphaned grandchild).
        for &group in self.groups.borrow().iter() {
            if !live_members(group).is_empty() {
                targets.push(format!("-{group}"));
            }
        }
        for target in targets {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &target])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A path in the temporary directory, removed on drop. As a gate, a command polls for it and
/// the test creates it only once it has received what the command wrote before: a server that
/// holds output back until the command ends then fails instead of passing by luck of timing.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "miohttpd-stream-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_file(&path);
        TempPath(path)
    }

    /// Shell text that waits for the gate. It gives up after 30 s: later than any wait of the
    /// test, so a buffering server fails first, yet a leaked command still ends.
    fn wait(&self) -> String {
        format!(
            "i=0; while [ ! -e '{}' ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done",
            self.0.display()
        )
    }

    fn open(&self) {
        fs::write(&self.0, b"").unwrap_or_else(|e| panic!("create {}: {e}", self.0.display()));
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// The head every stream answer carries.
fn assert_stream_head(head: &Response, case: &str) {
    assert_eq!(head.status, 200, "{case}: {head:?}");
    for (name, value) in [
        ("content-type", "text/plain; charset=utf-8"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("trailer", "X-Exit-Status"),
    ] {
        assert!(
            head.header(name)
                .is_some_and(|v| v.eq_ignore_ascii_case(value)),
            "{case}: {name} should be {value:?}: {head:?}"
        );
    }
    assert!(head.is_chunked(), "{case}: not chunked: {head:?}");
    assert!(
        head.header("content-length").is_none(),
        "{case}: Content-Length on a stream: {head:?}"
    );
}

/// Asks `GET path` on a new connection and reads the head of the stream.
fn open_stream(server: &Server, path: &str) -> Conn {
    let mut conn = server.connect();
    conn.send(&get(path));
    let head = conn.read_head_response();
    assert_stream_head(&head, path);
    conn
}

/// Reads chunks until the body so far holds `wanted`; the stream must not end first, nor run
/// on for long without it (a flood of other output would otherwise be read to its end). Holds,
/// not ends with: a flood's first bytes may come in the same read as a line before them.
fn read_until(conn: &mut Conn, body: &mut Vec<u8>, wanted: &[u8]) {
    const MAX_BEFORE: usize = 64 * 1024;
    while !body.windows(wanted.len()).any(|w| w == wanted) {
        let shown = || text(&body[..body.len().min(300)]);
        assert!(
            body.len() <= MAX_BEFORE,
            "{} bytes and no {:?}: {:?}...",
            body.len(),
            text(wanted),
            shown()
        );
        match conn.read_piece() {
            Piece::Data(data) => body.extend(data),
            Piece::End(trailers) => panic!(
                "stream ended ({trailers:?}) before {:?}; got {:?}",
                text(wanted),
                shown()
            ),
        }
    }
}

/// The rest of a stream: its body and its `X-Exit-Status`.
fn finish(conn: &mut Conn) -> (Vec<u8>, String) {
    let mut body = Vec::new();
    loop {
        match conn.read_piece() {
            Piece::Data(data) => body.extend(data),
            Piece::End(trailers) => return (body, exit_status(&trailers)),
        }
    }
}

fn exit_status(trailers: &[(String, String)]) -> String {
    trailers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-exit-status"))
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("no X-Exit-Status in the trailer {trailers:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Closes with RST instead of FIN: SO_LINGER with a zero timeout.
fn reset(conn: Conn) {
    SockRef::from(conn.stream())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
}

// ---- Processes, from /proc ----

/// A process's children, zombies included (`/proc/PID/task/*/children`).
fn try_children(pid: u32) -> io::Result<Vec<u32>> {
    let mut found = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = fs::read_to_string(task?.path().join("children"))?;
        found.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    Ok(found)
}

fn children(server: &Server) -> Vec<u32> {
    try_children(server.pid())
        .unwrap_or_else(|e| panic!("read /proc/{}/task/*/children: {e}", server.pid()))
}

/// State letter and process group, from `/proc/PID/stat`; `None` once the process is gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after its last `)` do not.
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

/// The processes of `group` that still run. Zombies do not count: an orphaned grandchild is
/// reaped by init, not by the server.
fn live_members(group: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((state, g)) if g == group && state != 'Z'))
        .collect()
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn open_fds(server: &Server) -> usize {
    let dir = format!("/proc/{}/fd", server.pid());
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .count()
}

/// Polls `check` until it returns `Ok`, failing with its last complaint after `bound`;
/// returns how long that took.
fn wait_for(bound: Duration, mut check: impl FnMut() -> Result<(), String>) -> Duration {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return started.elapsed(),
            Err(why) if started.elapsed() > bound => panic!("still, after {bound:?}: {why}"),
            Err(_) => thread::sleep(POLL_PAUSE),
        }
    }
}

/// No child left (zombies included), nothing of `group` alive, descriptors back to `fds`.
fn cleaned_up(server: &Server, group: u32, fds: usize) -> Result<(), String> {
    let kids = children(server);
    let members = live_members(group);
    let now = open_fds(server);
    if kids.is_empty() && members.is_empty() && now == fds {
        Ok(())
    } else {
        Err(format!(
            "server children {kids:?}, live processes of group {group} {members:?}, \
             {now} descriptors open against {fds} before"
        ))
    }
}

// ---- Real clients ----

/// A client tool whose stdout lines arrive on a channel as it prints them; killed on drop.
struct Tool {
    child: Child,
    lines: Receiver<String>,
}

impl Tool {
    fn spawn(program: &str, args: &[&str]) -> Tool {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program} ({e}): run scripts/test.sh, which installs the test clients"
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Tool { child, lines }
    }

    fn next_line(&self, what: &str) -> String {
        self.lines.recv_timeout(WAIT).unwrap_or_else(|e| {
            panic!("no {what} within {WAIT:?} ({e}): does the server hold output back?")
        })
    }

    /// Waits for the tool to exit successfully and returns the lines it printed meanwhile.
    fn finish(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the tool printed {rest:?} and did not exit within {WAIT:?}")
                }
            }
        }
        let status = self.child.wait().expect("wait for the tool");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        assert!(status.success(), "the tool failed ({status}): {stderr}");
        rest
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command behind both real-client tests: line one, then line two only once the test has
/// seen line one and opened the gate.
fn gated(gate: &TempPath) -> String {
    format!("echo one; {}; echo two", gate.wait())
}

#[test]
fn curl_prints_each_line_as_the_command_writes_it() {
    let _machine = shared();
    let gate = TempPath::new("curl-gate");
    let server = Streamer::start(&[], &[("gated", &gated(&gate))]);
    let url = format!("{}/stream/gated", server.url());
    let mut curl = Tool::spawn(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--no-buffer",
            "--max-time",
            "30",
            &url,
        ],
    );
    assert_eq!(curl.next_line("line one from curl"), "one");
    gate.open();
    assert_eq!(curl.next_line("line two from curl"), "two");
    assert_eq!(curl.finish(), Vec::<String>::new());
    server.assert_still_serves();
}

/// Prints the status and content type, then each line as `iter_lines` yields it.
const PYTHON_LINES: &str = r#"
import sys, requests
r = requests.get(sys.argv[1], stream=True, timeout=30)
print(r.status_code, r.headers["Content-Type"], flush=True)
for line in r.iter_lines(chunk_size=1):
    print(line.decode(), flush=True)
"#;

#[test]
fn python_requests_yields_each_line_as_the_command_writes_it() {
    let _machine = shared();
    common::require_python_requests();
    let gate = TempPath::new("python-gate");
    let server = Streamer::start(&[], &[("gated", &gated(&gate))]);
    let url = format!("{}/stream/gated", server.url());
    let mut python = Tool::spawn("python3", &["-u", "-c", PYTHON_LINES, &url]);
    assert_eq!(
        python.next_line("status from Python"),
        "200 text/plain; charset=utf-8"
    );
    assert_eq!(python.next_line("line one from Python"), "one");
    gate.open();
    assert_eq!(python.next_line("line two from Python"), "two");
    assert_eq!(python.finish(), Vec::<String>::new());
    server.assert_still_serves();
}

// ---- Latency ----

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i128
}

/// Each line carries the wall-clock time it was written at (`date +%s%N`); its delay is the
/// arrival time, on the same clock, minus that stamp.
#[test]
fn lines_arrive_within_milliseconds_of_being_written() {
    const LINES: usize = 60;
    const MAX_MEDIAN_MS: f64 = 5.0;
    let _machine = alone();
    let command = format!("for i in $(seq {LINES}); do date +%s%N; sleep 0.02; done");
    let server = Streamer::start(&[], &[("clock", &command)]);
    let mut conn = open_stream(&server, "/stream/clock");

    let mut delays_ms = Vec::new();
    let mut partial = Vec::new();
    let status = loop {
        match conn.read_piece() {
            Piece::Data(data) => {
                let arrived = now_ns();
                partial.extend(data);
                // A line split over two chunks arrives with the second.
                while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=end).collect();
                    let stamp: i128 = text(&line)
                        .trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("bad stamp {:?}: {e}", text(&line)));
                    delays_ms.push((arrived - stamp) as f64 / 1e6);
                }
            }
            Piece::End(trailers) => break exit_status(&trailers),
        }
    };
    assert_eq!(status, "0");
    assert!(partial.is_empty(), "unterminated line {:?}", text(&partial));
    assert_eq!(delays_ms.len(), LINES, "lines {delays_ms:?}");

    delays_ms.sort_by(f64::total_cmp);
    let median = delays_ms[LINES / 2];
    let p90 = delays_ms[LINES * 9 / 10];
    let max = delays_ms[LINES - 1];
    println!("stream latency over {LINES} lines: median {median:.3} ms, p90 {p90:.3} ms, max {max:.3} ms");
    // Same clock, so a stamp from the future means the parsing is wrong, not the server.
    assert!(delays_ms[0] > -1.0, "negative delays: {delays_ms:?}");
    assert!(
        median <= MAX_MEDIAN_MS,
        "median delay {median:.3} ms over {MAX_MEDIAN_MS} ms: {delays_ms:?}"
    );
}

// ---- Framing: trailer, bytes, keep-alive, HTTP/1.0 ----

#[test]
fn the_trailer_carries_the_exit_status_or_the_signal() {
    let _machine = shared();
    // (name, command, body, X-Exit-Status)
    let rows = [
        ("zero", "echo fine; exit 0", "fine\n", "0"),
        ("silent", "true", "", "0"),
        ("three", "echo three; exit 3", "three\n", "3"),
        ("highest", "exit 255", "", "255"),
        (
            "term",
            "echo before; kill -TERM $$",
            "before\n",
            "signal 15",
        ),
        ("kill", "kill -KILL $$", "", "signal 9"),
    ];
    let commands: Vec<(&str, &str)> = rows.iter().map(|r| (r.0, r.1)).collect();
    let server = Streamer::start(&[], &commands);
    check_rows(
        rows.iter().map(|row| (row.0.to_string(), row)),
        |name, &(_, _, body, status)| {
            let mut conn = open_stream(&server, &format!("/stream/{name}"));
            let (got_body, got_status) = finish(&mut conn);
            assert_eq!(text(&got_body), body);
            assert_eq!(got_status, status);
        },
    );
    server.assert_still_serves();
}

#[test]
fn binary_output_arrives_byte_exact_through_chunking() {
    let _machine = shared();
    let file = TempPath::new("bytes");
    let mut bytes: Vec<u8> = (0..=255).collect();
    // What a last chunk and a trailer look like, inside the data.
    bytes.extend_from_slice(b"\r\n0\r\nX-Exit-Status: 9\r\n\r\n\n\r");
    bytes.extend(PseudoRandom::bytes(5, 300_000));
    fs::write(&file.0, &bytes).unwrap();
    let command = format!("cat '{}'", file.0.display());
    let server = Streamer::start(&[], &[("cat", &command)]);

    let mut conn = open_stream(&server, "/stream/cat");
    let (body, status) = finish(&mut conn);
    assert_eq!(status, "0");
    assert_eq!(body.len(), bytes.len());
    let first_difference = body.iter().zip(&bytes).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "bodies differ");
}

#[test]
fn the_connection_serves_more_requests_after_a_stream_ends() {
    let _machine = shared();
    let server = Streamer::start(&[], &[("hi", "echo hi")]);
    let mut conn = server.connect();
    let stream_head = |conn: &mut Conn, case: &str| {
        let head = conn.read_head_response();
        assert_stream_head(&head, case);
        assert_eq!(finish(conn), (b"hi\n".to_vec(), "0".to_string()), "{case}");
    };
    let plaintext = |conn: &mut Conn, case: &str| {
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{case}: {response:?}");
        assert_eq!(response.body, b"Hello, World!", "{case}: {response:?}");
    };

    conn.send(&get("/stream/hi"));
    stream_head(&mut conn, "first stream");
    conn.send(GET_PLAINTEXT);
    plaintext(&mut conn, "plaintext after a stream");
    conn.send(&get("/stream/hi"));
    stream_head(&mut conn, "second stream");
    // Pipelined behind a stream: answered in order once it ends (RFC 9112 §9.3.2).
    conn.send(&[get("/stream/hi"), GET_PLAINTEXT.to_vec()].concat());
    stream_head(&mut conn, "pipelined stream");
    plaintext(&mut conn, "plaintext pipelined behind a stream");
}

#[test]
fn get_stream_runs_the_command_named_stream() {
    let _machine = shared();
    let server = Streamer::start(&[], &[("stream", "echo default"), ("other", "echo other")]);
    let rows = [
        ("/stream", "default\n"),
        ("/stream/stream", "default\n"),
        ("/stream/other", "other\n"),
    ];
    check_rows(
        rows.iter().map(|&(path, body)| (path.to_string(), body)),
        |path, body| {
            let mut conn = open_stream(&server, path);
            assert_eq!(
                finish(&mut conn),
                (body.as_bytes().to_vec(), "0".to_string())
            );
        },
    );
}

#[test]
fn an_http10_stream_is_close_delimited() {
    let _machine = shared();
    // A keep-alive HTTP/1.0 client cannot be kept: without chunking only the close ends the body.
    let rows = [
        ("plain", "GET /stream/gated HTTP/1.0\r\n\r\n"),
        (
            "keep-alive asked",
            "GET /stream/gated HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ),
    ];
    check_rows(
        rows.iter()
            .map(|&(name, request)| (name.to_string(), request)),
        |_, request| {
            let gate = TempPath::new("http10-gate");
            let command = format!(
                "echo one; {}; printf 'two\\r\\n0\\r\\n\\r\\n'; exit 4",
                gate.wait()
            );
            let server = Streamer::start(&[], &[("gated", &command)]);
            let mut conn = server.connect();
            conn.send(request.as_bytes());
            let head = conn.read_head_response();
            assert_eq!(head.status, 200, "{head:?}");
            assert!(head.closes(), "no `Connection: close`: {head:?}");
            assert!(!head.is_chunked(), "chunked to HTTP/1.0: {head:?}");
            assert!(head.header("content-length").is_none(), "{head:?}");
            assert_eq!(
                head.header("content-type"),
                Some("text/plain; charset=utf-8")
            );
            // Streamed here too: line one comes before the gate opens.
            assert_eq!(conn.read_through(b"one\n"), b"one\n");
            gate.open();
            assert_eq!(text(&conn.read_until_eof()), "two\r\n0\r\n\r\n");
            server.assert_still_serves();
        },
    );
}

// ---- Errors ----

#[test]
fn head_runs_no_command_and_gets_405() {
    let _machine = shared();
    let server = Streamer::start(&[], &[("hi", "echo hi"), ("stream", "echo hi")]);
    for path in ["/stream/hi", "/stream"] {
        // A HEAD answer has no body, so nothing may be streamed in reply to one.
        let mut conn = server.connect();
        conn.send(
            format!(
                "HEAD {path} HTTP/1.1
Host: localhost

"
            )
            .as_bytes(),
        );
        let response = conn.read_head_response();
        assert_eq!(response.status, 405, "{path}: {response:?}");
        assert_eq!(
            response.header("allow"),
            Some("GET"),
            "{path}: {response:?}"
        );
        server.assert_still_serves();
    }
    assert_eq!(
        children(&server),
        Vec::<u32>::new(),
        "a HEAD started a child"
    );
}

#[test]
fn unknown_names_get_404() {
    let _machine = shared();
    let server = Streamer::start(&[], &[("hi", "echo hi")]);
    // No command is named `stream`, so `/stream` has nothing to run either.
    let rows = [
        "/stream/nope",
        "/stream/hi;id",
        "/stream/hi%3Bid",
        "/stream/hi/more",
        "/stream/",
        "/stream",
    ];
    check_rows(rows.iter().map(|&p| (p.to_string(), p)), |_, path| {
        let response = server.request(&get(path));
        assert_eq!(response.status, 404, "{response:?}");
        assert!(response.header("trailer").is_none(), "{response:?}");
        server.assert_still_serves();
    });
    assert_eq!(
        children(&server),
        Vec::<u32>::new(),
        "a 404 started a child"
    );
}

#[test]
fn children_beyond_the_limit_get_503_until_one_ends() {
    let _machine = shared();
    let gate = TempPath::new("limit-gate");
    let server = Streamer::start(&["--exec-max-running", "1"], &[("gated", &gated(&gate))]);
    let mut first = open_stream(&server, "/stream/gated");
    let mut body = Vec::new();
    read_until(&mut first, &mut body, b"one\n");

    let busy = server.request(&get("/stream/gated"));
    assert_eq!(busy.status, 503, "{busy:?}");
    let retry = busy
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {busy:?}"));
    assert!(
        !retry.is_empty() && retry.bytes().all(|b| b.is_ascii_digit()),
        "Retry-After {retry:?} is not delay-seconds"
    );
    server.assert_still_serves();

    gate.open();
    assert_eq!(finish(&mut first), (b"two\n".to_vec(), "0".to_string()));
    // The slot is free once the first has ended; the gate is open, so this one runs through.
    let mut again = open_stream(&server, "/stream/gated");
    assert_eq!(
        finish(&mut again),
        (b"one\ntwo\n".to_vec(), "0".to_string())
    );
    server.assert_still_serves();
}

#[test]
fn a_command_that_cannot_start_gets_500_before_any_body_byte() {
    let _machine = shared();
    // With a limit of one, a failed start that kept its slot would turn the second try into 503.
    let server = Streamer::start(
        &["--exec-shell", "/nonexistent/sh", "--exec-max-running", "1"],
        &[("hi", "echo hi")],
    );
    for attempt in 1..=3 {
        let response = server.request(&get("/stream/hi"));
        assert_eq!(response.status, 500, "attempt {attempt}: {response:?}");
        assert!(
            response.header("trailer").is_none() && response.body.len() < 1024,
            "attempt {attempt}: a stream, not an error: {response:?}"
        );
        assert!(!text(&response.body).contains("hi\n"), "{response:?}");
        server.assert_still_serves();
    }
}

// ---- Ending commands: time limit, hang-ups ----

#[test]
fn the_time_limit_ends_a_command_with_sigterm_then_sigkill() {
    let _machine = shared();
    let server = Streamer::start(
        &["--exec-time-limit", "1", "--exec-kill-grace", "300ms"],
        &[
            ("polite", "echo started; sleep 30"),
            // Ignored signals stay ignored across exec, so `sleep` ignores TERM too.
            ("stubborn", "trap '' TERM; echo started; sleep 30"),
            // The shell dies of TERM; what it started ignores TERM and holds the pipe open.
            (
                "grandchild",
                "(trap '' TERM; sleep 30) & echo started; wait",
            ),
            // The shell exits at once; what it left behind holds the pipe open.
            ("background", "sleep 30 & echo started"),
        ],
    );
    // (command, X-Exit-Status); the background shell's own status is not the point.
    let rows = [
        ("polite", Some("signal 15")),
        ("stubborn", Some("signal 9")),
        ("grandchild", Some("signal 15")),
        ("background", None),
    ];
    check_rows(
        rows.iter().map(|&(name, s)| (name.to_string(), s)),
        |name, signal| {
            let asked = Instant::now();
            let mut conn = open_stream(&server, &format!("/stream/{name}"));
            let mut body = Vec::new();
            read_until(&mut conn, &mut body, b"started\n");
            let group = server.only_child();
            // Each read gives up after 10 s, so a missing limit fails here.
            let (rest, status) = finish(&mut conn);
            let took = asked.elapsed();
            if let Some(signal) = signal {
                assert_eq!(status, signal, "after {took:?}");
            }
            assert_eq!(text(&rest), "");
            assert!(took >= Duration::from_millis(950), "ended after {took:?}");
            wait_for(WAIT, || match live_members(group)[..] {
                [] => Ok(()),
                ref left => Err(format!("processes {left:?} of the group live on")),
            });
            conn.send(GET_PLAINTEXT);
            assert_eq!(conn.read_response().status, 200);
        },
    );
}

/// A client that goes after the time limit has sent SIGTERM but before the SIGKILL is due:
/// the SIGKILL must still come, though the connection that scheduled it is gone.
#[test]
fn a_client_that_hangs_up_during_the_kill_grace_still_gets_its_group_killed() {
    let _machine = shared();
    // Each says when SIGTERM reached it and carries on: the client hangs up on that word, a
    // second before the SIGKILL is due, rather than after a guessed pause.
    let server = Streamer::start(
        &["--exec-time-limit", "1", "--exec-kill-grace", "1s"],
        &[
            (
                "stubborn",
                "trap 'echo term' TERM; echo started; while :; do sleep 0.1; done",
            ),
            // The shell is gone before the limit; only what it left behind remains.
            (
                "orphan",
                "(trap 'echo term' TERM; while :; do sleep 0.1; done) & echo started",
            ),
        ],
    );
    check_rows(
        ["stubborn", "orphan"].map(|name| (name.to_string(), name)),
        |_, name| {
            let mut conn = open_stream(&server, &format!("/stream/{name}"));
            let mut body = Vec::new();
            read_until(&mut conn, &mut body, b"started\n");
            let group = server.only_child();
            // Past the limit (SIGTERM, outlived), before the SIGKILL at 2 s.
            read_until(&mut conn, &mut body, b"term\n");
            drop(conn);
            wait_for(WAIT, || match (children(&server), live_members(group)) {
                (kids, left) if kids.is_empty() && left.is_empty() => Ok(()),
                (kids, left) => Err(format!("children {kids:?}, group {group} has {left:?}")),
            });
        },
    );
    server.assert_still_serves();
}

#[derive(Clone, Copy, Debug)]
enum HangUp {
    Fin,
    Reset,
}

#[test]
fn a_client_that_hangs_up_leaves_no_child_zombie_or_descriptor() {
    let _machine = shared();
    // Below the default grace of 2000 ms: a TERM-ignoring process gone this soon proves the
    // flag is used.
    const GRACE_BOUND: Duration = Duration::from_millis(1500);
    let server = Streamer::start(
        &["--exec-kill-grace", "200ms"],
        &[
            ("warm", "true"),
            ("polite", "echo started; sleep 60"),
            ("stubborn", "trap '' TERM; echo started; sleep 60"),
            // The shell dies of TERM; what it started ignores TERM.
            (
                "grandchild",
                "(trap '' TERM; sleep 60) & echo started; wait",
            ),
            // The shell exits at once; what it left behind holds the pipe open.
            ("background", "sleep 60 & echo started"),
            // Far more than the socket buffers hold: the server is stalled on a client that
            // does not read when that client goes.
            ("flood", "echo started; head -c 1073741824 /dev/zero"),
        ],
    );
    // The baseline comes after one command ran (a server may keep a descriptor for reaping)
    // and with no client connected: an HTTP/1.0 answer ends with the server's close.
    let mut warm = server.connect();
    warm.send(b"GET /stream/warm HTTP/1.0\r\n\r\n");
    assert_eq!(warm.read_response().status, 200);
    drop(warm);
    wait_for(WAIT, || match children(&server)[..] {
        [] => Ok(()),
        ref kids => Err(format!("warm-up children {kids:?}")),
    });
    let fds = open_fds(&server);

    // (command, how the client goes, whether the kill grace bounds the clean-up)
    let rows = [
        ("polite", HangUp::Fin, false),
        ("polite", HangUp::Reset, false),
        ("stubborn", HangUp::Fin, true),
        ("stubborn", HangUp::Reset, true),
        ("grandchild", HangUp::Fin, true),
        ("background", HangUp::Fin, false),
        ("flood", HangUp::Fin, false),
        ("flood", HangUp::Reset, false),
    ];
    check_rows(
        rows.iter()
            .map(|&(name, how, graced)| (format!("{name}, {how:?}"), (name, how, graced))),
        |_, (name, how, graced)| {
            let mut conn = open_stream(&server, &format!("/stream/{name}"));
            let mut body = Vec::new();
            read_until(&mut conn, &mut body, b"started\n");
            let group = server.only_child();
            assert!(!live_members(group).is_empty());
            if name == "flood" {
                // Let the server fill the socket buffers and stop on backpressure.
                thread::sleep(Duration::from_millis(300));
            }
            match how {
                HangUp::Fin => drop(conn),
                HangUp::Reset => reset(conn),
            }
            let took = wait_for(WAIT, || cleaned_up(&server, group, fds));
            assert!(
                !graced || took < GRACE_BOUND,
                "TERM-ignoring processes took {took:?} to go with a 200 ms kill grace"
            );
        },
    );
    server.assert_still_serves();
}

// ---- Load ----

/// `wchar` of `/proc/PID/io`: bytes the process has written so far; `None` once it is gone.
fn written(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|n| n.trim().parse().ok())
}

#[test]
fn a_slow_reader_stops_the_child_and_bounds_server_memory() {
    const TOTAL: usize = 1 << 30;
    const SLOW_BYTES: usize = 8 << 20;
    const SLOW_BYTES_PER_SEC: f64 = 4e6;
    const MAX_GROWTH_KIB: u64 = 32 * 1024;
    // Loopback socket buffers auto-tune up to tcp_rmem/tcp_wmem maxima (tens of MiB here);
    // a server that kept reading the pipe would be a gigabyte ahead.
    const MAX_AHEAD: u64 = 96 << 20;
    let _machine = alone();
    let command = format!("head -c {TOTAL} /dev/zero");
    let server = Streamer::start(&[], &[("zeros", &command)]);
    let mut conn = open_stream(&server, "/stream/zeros");

    let started = Instant::now();
    let Piece::Data(first) = conn.read_piece() else {
        panic!("stream ended at once");
    };
    let mut received = first.len();
    let before = server.memory();
    let group = server.only_child();
    let writer = live_members(group)
        .into_iter()
        .find(|&pid| comm(pid) == "head")
        .unwrap_or_else(|| panic!("no `head` in group {group}"));

    let mut peak_rss = before.rss_kib;
    let mut sampled = Instant::now();
    while received < SLOW_BYTES {
        match conn.read_piece() {
            Piece::Data(data) => received += data.len(),
            Piece::End(trailers) => panic!("ended after {received} bytes: {trailers:?}"),
        }
        let due = Duration::from_secs_f64(received as f64 / SLOW_BYTES_PER_SEC);
        if let Some(early) = due.checked_sub(started.elapsed()) {
            thread::sleep(early);
        }
        if sampled.elapsed() > Duration::from_millis(100) {
            peak_rss = peak_rss.max(server.memory().rss_kib);
            sampled = Instant::now();
        }
    }
    let growth = peak_rss.saturating_sub(before.rss_kib);
    let ahead = written(writer)
        .unwrap_or_else(|| {
            panic!(
                "the child wrote all of its output (server RSS +{growth} KiB) while the client \
                 read {received} bytes: the server did not stop reading the pipe"
            )
        })
        .saturating_sub(received as u64);
    println!(
        "slow reader: {received} bytes in {:?}; child {} MiB ahead; server RSS +{growth} KiB",
        started.elapsed(),
        ahead >> 20
    );
    assert!(
        ahead < MAX_AHEAD,
        "the child wrote {ahead} bytes more than the client read: the server kept reading the pipe"
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "server RSS grew {growth} KiB while the client read slowly (from {before:?})"
    );

    let status = loop {
        match conn.read_piece() {
            Piece::Data(data) => received += data.len(),
            Piece::End(trailers) => break exit_status(&trailers),
        }
    };
    println!("1 GiB streamed in {:?}", started.elapsed());
    assert_eq!(received, TOTAL);
    assert_eq!(status, "0");
    let after = server.memory();
    assert!(
        after.rss_kib < before.rss_kib + MAX_GROWTH_KIB,
        "server RSS grew from {before:?} to {after:?}"
    );
    server.assert_still_serves();
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn a_hundred_streams_do_not_hold_up_other_requests() {
    const STREAMS: usize = 100;
    const REQUESTS: usize = 200;
    const MAX_P50: Duration = Duration::from_millis(50);
    let _machine = alone();
    let server = Streamer::start(
        &["--exec-max-running", "128"],
        &[("tick", "while :; do echo tick; sleep 0.1; done")],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..STREAMS)
        .map(|i| {
            let mut conn = open_stream(&server, "/stream/tick");
            let (stop, ticks) = (Arc::clone(&stop), Arc::clone(&ticks));
            thread::spawn(move || {
                let mut mine = 0;
                while !stop.load(Ordering::Relaxed) {
                    match conn.read_piece() {
                        Piece::Data(data) => {
                            let n = data.windows(5).filter(|w| w == b"tick\n").count();
                            mine += n;
                            ticks.fetch_add(n, Ordering::Relaxed);
                        }
                        Piece::End(trailers) => panic!("stream {i} ended: {trailers:?}"),
                    }
                }
                // Dropping the connection hangs up.
                mine
            })
        })
        .collect();
    wait_for(WAIT, || match children(&server).len() {
        STREAMS => Ok(()),
        n => Err(format!("{n} children of {STREAMS}")),
    });

    let mut conn = server.connect();
    let ticks_before = ticks.load(Ordering::Relaxed);
    let mut took: Vec<Duration> = (0..REQUESTS)
        .map(|_| {
            let asked = Instant::now();
            conn.send(GET_PLAINTEXT);
            let response = conn.read_response();
            assert_eq!(response.status, 200, "{response:?}");
            asked.elapsed()
        })
        .collect();
    // Make sure the streams were flowing while the requests were measured.
    wait_for(WAIT, || match ticks.load(Ordering::Relaxed) {
        n if n > ticks_before + STREAMS => Ok(()),
        n => Err(format!("{} ticks since measuring began", n - ticks_before)),
    });
    took.sort();
    let (p50, p99) = (percentile(&took, 50), percentile(&took, 99));
    println!(
        "GET /plaintext beside {STREAMS} streams: p50 {p50:?}, p99 {p99:?}, max {:?}",
        took[REQUESTS - 1]
    );

    stop.store(true, Ordering::Relaxed);
    for (i, reader) in readers.into_iter().enumerate() {
        let mine = reader
            .join()
            .unwrap_or_else(|_| panic!("reader of stream {i} failed"));
        assert!(mine > 0, "stream {i} got no tick");
    }
    wait_for(WAIT, || match children(&server)[..] {
        [] => Ok(()),
        ref kids => Err(format!("{} children left: {kids:?}", kids.len())),
    });
    assert!(p50 <= MAX_P50, "p50 {p50:?} over {MAX_P50:?}");
    server.assert_still_serves();
}

// ---- Isolation: stderr, request data ----

#[test]
fn stderr_goes_where_exec_stderr_says() {
    let _machine = shared();
    // (flag value, in the body, in the server's stderr); no flag means inherit.
    let rows = [
        (None, false, true),
        (Some("inherit"), false, true),
        (Some("merge"), true, false),
        (Some("discard"), false, false),
    ];
    check_rows(
        rows.iter().map(|row| (format!("{:?}", row.0), *row)),
        |_, (mode, in_body, in_log)| {
            // The shell computes the line, so a server that logs its command text does not
            // put the marker in its stderr.
            let mode_name = mode.unwrap_or("default");
            let marker = format!("stderr-42-{mode_name}");
            // Pauses keep the order unambiguous even if stderr has a pipe of its own.
            let command = format!(
                "echo out; sleep 0.05; echo stderr-$((40+2))-{mode_name} 1>&2; sleep 0.05; echo done"
            );
            let flags: Vec<&str> = mode.map_or(vec![], |m| vec!["--exec-stderr", m]);
            let server = Streamer::start(&flags, &[("both", &command)]);
            let mut conn = open_stream(&server, "/stream/both");
            let (body, status) = finish(&mut conn);
            assert_eq!(status, "0");
            let expected = if in_body {
                format!("out\n{marker}\ndone\n")
            } else {
                "out\ndone\n".to_string()
            };
            assert_eq!(text(&body), expected);
            let log = server.stderr_log();
            assert_eq!(log.contains(&marker), in_log, "server stderr: {log:?}");
        },
    );
}

#[test]
fn nothing_from_the_request_reaches_the_command() {
    let _machine = shared();
    let server = Streamer::start(
        &[],
        &[("env", "env"), ("args", "printf '[%s]' \"$0\" \"$@\"; pwd")],
    );
    let headers = "Host: evil1\r\nX-Inject: evil2\r\nUser-Agent: evil3\r\nCookie: INJECT=evil4\r\n";
    let rows = [
        "/stream/env?INJECT=evil",
        "/stream/env?$(echo%20evil)",
        "/stream/args?INJECT=evil;evil",
    ];
    check_rows(rows.iter().map(|&p| (p.to_string(), p)), |_, path| {
        let mut conn = server.connect();
        conn.send(format!("GET {path} HTTP/1.1\r\n{headers}\r\n").as_bytes());
        let head = conn.read_head_response();
        assert_stream_head(&head, path);
        let (body, status) = finish(&mut conn);
        let body = text(&body);
        assert_eq!(status, "0", "{body}");
        assert!(
            !body.contains("evil") && !body.contains("INJECT"),
            "request data reached the command: {body}"
        );
        if path.contains("/env") {
            // The server's own environment, which is the test's: same PATH, no CGI variables.
            let path_var = format!("PATH={}\n", std::env::var("PATH").unwrap_or_default());
            assert!(body.contains(&path_var), "no {path_var:?} in {body}");
            for cgi in [
                "QUERY_STRING=",
                "REQUEST_METHOD=",
                "HTTP_X_INJECT=",
                "REMOTE_ADDR=",
            ] {
                assert!(!body.contains(cgi), "{cgi} in {body}");
            }
        }
    });
}
