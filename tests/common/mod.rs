//! Black-box harness shared by the integration tests: starts the real `miohttpd` binary (or one of
//! its examples) on port 0, speaks raw HTTP/1.1 bytes to it and parses what comes back. It knows
//! nothing of the server's internals; everything it checks is visible on the wire or in `/proc`.

// Every test crate compiles this module but uses a different part of it.
#![allow(dead_code)]

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

pub mod redis;

/// Every client socket read and write gives up after this long, so a server bug shows up as a
/// failing test instead of a hung one.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The line the server prints once it listens; the port follows it.
const LISTENING_PREFIX: &str = "miohttpd listening on http://";

pub const GET_PLAINTEXT: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A running server process, killed and reaped on drop so no test leaks one.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    /// The server's stderr goes here; it is printed when the test fails.
    log: PathBuf,
    /// A request this server answers with 200 and `probe_body`, to check it still serves.
    probe: Vec<u8>,
    probe_body: Vec<u8>,
    /// Set once a test has waited for the server to exit, which it then meant to happen.
    exit_status: Option<ExitStatus>,
    /// Lines the server printed on stdout after its listening line.
    stdout_lines: Mutex<mpsc::Receiver<String>>,
}

/// How to start the binary beyond its flags: its environment and its open-files limit.
#[derive(Default)]
pub struct Launch<'a> {
    /// Variables set for the server (on top of the test's environment, minus
    /// `MIOHTTPD_ADMIN_TOKEN`, which only a test that means to sets).
    pub env: &'a [(&'a str, &'a str)],
    /// A hard and soft open-files limit set by `sh` (`ulimit -n`) before it execs the server,
    /// which then keeps its pid.
    pub open_files: Option<u32>,
}

/// Memory of the server process in KiB, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size so far (`VmHWM`).
    pub hwm_kib: u64,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts `miohttpd --listen 127.0.0.1:0 ARGS...`.
    pub fn start_with(args: &[&str]) -> Server {
        Server::launch(args, Launch::default())
    }

    /// Starts `miohttpd --listen 127.0.0.1:0 ARGS...` as `launch` says.
    pub fn launch(args: &[&str], launch: Launch<'_>) -> Server {
        let program = Path::new(env!("CARGO_BIN_EXE_miohttpd"));
        let mut command = match launch.open_files {
            None => Command::new(program),
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(program);
                shell
            }
        };
        command.env_remove("MIOHTTPD_ADMIN_TOKEN");
        command.envs(launch.env.iter().copied());
        Server::spawn(
            command,
            program,
            args,
            GET_PLAINTEXT.to_vec(),
            b"Hello, World!".to_vec(),
        )
    }

    /// Starts one of the crate's examples (`echo`, `count`) from
    /// `target/<profile>/examples/NAME`; this test runs from `target/<profile>/deps/`.
    pub fn start_example(name: &str, args: &[&str]) -> Server {
        let exe = std::env::current_exe().expect("path of the test executable");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps/");
        build_examples(profile_dir);
        let program = profile_dir.join("examples").join(name);
        assert!(
            program.exists(),
            "example binary {} is missing",
            program.display()
        );
        // Examples have only their own route, so that is what proves they still serve.
        let (probe, probe_body) = match name {
            "echo" => (post("/echo", b"still here"), b"still here".to_vec()),
            "count" => (post("/count", b"still\nhere"), b"10 1\n".to_vec()),
            // Nobody waits on ticket 0: the message reaches no one.
            "longpoll" => (post("/ticket/0", b"probe"), b"0\n".to_vec()),
            _ => panic!("no liveness probe for example {name}"),
        };
        Server::spawn(Command::new(&program), &program, args, probe, probe_body)
    }

    /// Runs `command` (the program, or a shell that execs it) with `--listen 127.0.0.1:0 ARGS`
    /// (ARGS alone when they give their own `--listen`).
    fn spawn(
        mut command: Command,
        program: &Path,
        args: &[&str],
        probe: Vec<u8>,
        probe_body: Vec<u8>,
    ) -> Server {
        static NEXT_LOG: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "miohttpd-test-{}-{}.log",
            std::process::id(),
            NEXT_LOG.fetch_add(1, Ordering::Relaxed)
        ));
        let stderr = File::create(&log).expect("create server log file");
        // --listen is repeatable: a test that gives its own means it instead of port 0.
        let own_listen = args
            .iter()
            .any(|a| *a == "--listen" || a.starts_with("--listen="));
        if !own_listen {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        // MIOHTTPD_TEST_WORKERS=N runs a suite's servers as N workers (one that names its own
        // --workers keeps it): the suite's checks then hold for the server as a whole.
        if let Ok(workers) = std::env::var("MIOHTTPD_TEST_WORKERS") {
            if !args.iter().any(|a| a.starts_with("--workers")) {
                command.args(["--workers", &workers]);
            }
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));

        // Read the listening line on a thread so a server that never prints fails the test
        // instead of blocking it; any later stdout output is passed through for the log.
        let stdout = child.stdout.take().expect("piped stdout");
        let (first_line, listening) = mpsc::channel();
        let (later_line, stdout_lines) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first_line.send(lines.next());
            for line in lines.map_while(Result::ok) {
                eprintln!("server stdout: {line}");
                let _ = later_line.send(line);
            }
        });

        // From here on, a panic drops `server`, which kills the child.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            probe,
            probe_body,
            exit_status: None,
            stdout_lines: Mutex::new(stdout_lines),
        };
        let line = match listening.recv_timeout(IO_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => panic!(
                "{} exited before printing its listening line; stderr:\n{}",
                program.display(),
                server.stderr()
            ),
            Err(_) => panic!(
                "{} printed no listening line within {IO_TIMEOUT:?}",
                program.display()
            ),
        };
        let authority = line
            .strip_prefix(LISTENING_PREFIX)
            .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"));
        server.addr = authority
            .parse()
            .unwrap_or_else(|e| panic!("bad address in listening line {line:?}: {e}"));
        assert_ne!(
            server.addr.port(),
            0,
            "listening line names port 0: {line:?}"
        );
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> Memory {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find(|line| line.starts_with(name))
                .unwrap_or_else(|| panic!("{name} missing from {path}"));
            line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("bad line {line:?} in {path}: {e}"))
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// Sends `request` on a fresh connection and reads one response.
    pub fn request(&self, request: &[u8]) -> Response {
        let mut conn = self.connect();
        conn.send(request);
        conn.read_response()
    }

    /// A new connection still gets a 200 (`GET /plaintext` for miohttpd, the example's own
    /// route for an example): whatever the test did before did not wedge or kill the server.
    pub fn assert_still_serves(&self) {
        let response = self.request(&self.probe);
        assert_eq!(response.status, 200, "server stopped serving: {response:?}");
        assert_eq!(
            response.body, self.probe_body,
            "server stopped serving: {response:?}"
        );
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next line the server prints on stdout after its listening line, waiting at most
    /// `IO_TIMEOUT` for it.
    pub fn next_stdout_line(&self) -> String {
        let lines = self.stdout_lines.lock().unwrap();
        lines
            .recv_timeout(IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("no further stdout line within {IO_TIMEOUT:?}: {e}"))
    }

    /// The address of `--admin-listen`, from the line the server prints right after its
    /// listening line.
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.next_stdout_line();
        line.strip_prefix("miohttpd admin listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("expected the admin listening line, got {line:?}"))
    }
}

impl Server {
    /// Sends signal `name` (`TERM`, `INT`, ...) to the server by its pid.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {}: {status}", self.pid());
    }

    /// Waits up to `bound` for the server to exit and returns how it did; the exit is then
    /// expected, not a failure of the test.
    pub fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exit_status = Some(status);
                    return status;
                }
                Ok(None) if started.elapsed() > bound => {
                    panic!("the server did not exit within {bound:?}")
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for the server: {e}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let exited_early = match self.exit_status {
            Some(_) => None,
            None => self.child.try_wait().ok().flatten(),
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr();
        let _ = std::fs::remove_file(&self.log);
        if thread::panicking() {
            eprintln!("---- server stderr ----\n{stderr}---- end of server stderr ----");
        } else if let Some(status) = exited_early {
            panic!("server exited during the test ({status}); stderr:\n{stderr}");
        }
    }
}

/// Builds the runnable example binaries, once per test process. `cargo test --all-targets`
/// (what scripts/test.sh runs) builds examples only as test harnesses and `cargo test --test
/// NAME` not at all, so `target/<profile>/examples/NAME` may be missing or stale otherwise.
fn build_examples(profile_dir: &Path) {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
    let built = BUILT.get_or_init(|| {
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => return Err(format!("no profile in {}", profile_dir.display())),
        };
        let target_dir = profile_dir.parent().expect("target directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut build = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "--examples",
                "--profile",
                profile,
                "--target-dir",
            ])
            .arg(target_dir)
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {cargo}: {e}"))?;
        // A build that never finishes (a held lock) fails the test instead of hanging it.
        let started = std::time::Instant::now();
        loop {
            match build.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("cargo build --examples: {status}")),
                Ok(None) if started.elapsed() > BUILD_TIMEOUT => {
                    let _ = build.kill();
                    let _ = build.wait();
                    return Err(format!(
                        "cargo build --examples took over {BUILD_TIMEOUT:?}"
                    ));
                }
                Ok(None) => thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(format!("waiting for cargo build --examples: {e}")),
            }
        }
    });
    if let Err(e) = built {
        panic!("cannot build the examples: {e}");
    }
}

/// One client connection. Reads go through a buffer so pipelined responses can be taken one at
/// a time.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Conn {
            reader: BufReader::with_capacity(64 * 1024, stream),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("sending {} bytes: {e}", bytes.len()));
    }

    /// One byte per write with Nagle off and a pause between writes, so the server sees the
    /// request arrive in as many reads as possible.
    pub fn send_byte_by_byte(&mut self, bytes: &[u8]) {
        self.stream().set_nodelay(true).unwrap();
        for byte in bytes {
            self.send(std::slice::from_ref(byte));
            thread::sleep(Duration::from_micros(500));
        }
    }

    /// Half-close: the server reads EOF but can still write back.
    pub fn shutdown_write(&self) {
        self.stream().shutdown(Shutdown::Write).unwrap();
    }

    /// Reads one response whose body is framed by its headers (or, lacking both Content-Length
    /// and chunked, runs to EOF).
    pub fn read_response(&mut self) -> Response {
        self.read_response_framed(true)
    }

    /// Reads the response to a HEAD request: headers only, whatever Content-Length says.
    pub fn read_head_response(&mut self) -> Response {
        self.read_response_framed(false)
    }

    fn read_response_framed(&mut self, body_allowed: bool) -> Response {
        let status_line = self.read_line("status line");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status = parts
            .next()
            .and_then(|code| code.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let reason = parts.next().unwrap_or_default().to_string();
        assert!(
            version.starts_with("HTTP/1."),
            "bad status line {status_line:?}"
        );

        let mut headers = Vec::new();
        loop {
            let line = self.read_line("header line");
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("header line without colon: {line:?}"));
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut response = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
        };

        // RFC 9112 §6.3: 1xx, 204 and 304 responses and responses to HEAD have no body.
        let bodyless = !body_allowed || status < 200 || status == 204 || status == 304;
        if bodyless {
            return response;
        }
        if response.is_chunked() {
            response.body = self.read_chunked_body();
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .parse()
                .unwrap_or_else(|_| panic!("bad Content-Length in {response:?}"));
            let mut body = vec![0; length];
            self.reader
                .read_exact(&mut body)
                .unwrap_or_else(|e| panic!("reading {length}-byte body of {response:?}: {e}"));
            response.body = body;
        } else {
            response.body = self.read_until_eof();
        }
        response
    }

    fn read_chunked_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line("chunk size");
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader
                .read_exact(&mut body[start..])
                .unwrap_or_else(|e| panic!("reading {size}-byte chunk: {e}"));
            let end = self.read_line("CRLF after chunk data");
            assert!(end.is_empty(), "chunk data longer than its size: {end:?}");
        }
        // Trailer section, up to the empty line.
        while !self.read_line("trailer line").is_empty() {}
        body
    }

    /// Reads one CRLF-terminated line and returns it without the CRLF.
    fn read_line(&mut self, what: &str) -> String {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => panic!("connection closed while waiting for the {what}"),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => panic!(
                "no {what} within {IO_TIMEOUT:?} (got {:?} so far)",
                String::from_utf8_lossy(&line)
            ),
            Err(e) => panic!(
                "reading the {what}: {e} (got {:?} so far)",
                String::from_utf8_lossy(&line)
            ),
        }
        assert!(
            line.ends_with(b"\r\n"),
            "{what} not terminated by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        );
        line.truncate(line.len() - 2);
        String::from_utf8(line).unwrap_or_else(|e| panic!("{what} is not UTF-8: {e}"))
    }

    /// Everything the server sends until it closes the connection.
    pub fn read_until_eof(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap_or_else(|e| {
            panic!(
                "waiting for the server to close: {e} (got {:?} so far)",
                String::from_utf8_lossy(&rest)
            )
        });
        rest
    }

    /// The server closes the connection cleanly (FIN, not RST) without sending anything more.
    pub fn expect_eof(&mut self) {
        let mut byte = [0; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => {
                let mut rest = byte.to_vec();
                rest.extend(self.read_until_eof());
                panic!(
                    "expected the server to close, got more bytes: {:?}",
                    String::from_utf8_lossy(&rest)
                );
            }
            Err(e) if is_timeout(&e) => {
                panic!("expected the server to close, but it kept the connection open for {IO_TIMEOUT:?}")
            }
            Err(e) => panic!("expected a clean close from the server, got: {e}"),
        }
    }
}

/// A parsed HTTP response.
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the comma-separated header `name` holds `token` (case-insensitive), as in
    /// `Connection: close`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    pub fn closes(&self) -> bool {
        self.has_token("connection", "close")
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or_else(|_| panic!("body is not UTF-8: {self:?}"))
    }

    /// The headers every miohttpd response carries: `Server: miohttpd`, an IMF-fixdate `Date`,
    /// a `Content-Type` and the body's framing.
    pub fn assert_standard_headers(&self) {
        assert_eq!(self.header("server"), Some("miohttpd"), "{self:?}");
        let date = self
            .header("date")
            .unwrap_or_else(|| panic!("no Date header: {self:?}"));
        assert!(
            is_imf_fixdate(date),
            "Date {date:?} is not IMF-fixdate: {self:?}"
        );
        assert!(
            self.header("content-type").is_some(),
            "no Content-Type: {self:?}"
        );
        assert!(
            self.header("content-length").is_some() || self.is_chunked(),
            "neither Content-Length nor chunked: {self:?}"
        );
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 300;
        write!(f, "{} {} {}", self.version, self.status, self.reason)?;
        for (name, value) in &self.headers {
            write!(f, " | {name}: {value}")?;
        }
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(SHOWN)]);
        write!(f, " | body ({} bytes): {body:?}", self.body.len())
    }
}

/// RFC 9110 §5.6.7 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn is_imf_fixdate(date: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let in_range = |s: &str, max: u32| s.parse::<u32>().is_ok_and(|v| v <= max);
    let parts: Vec<&str> = date.split(' ').collect();
    let [day_name, day, month, year, time, zone] = parts[..] else {
        return false;
    };
    let clock: Vec<&str> = time.split(':').collect();
    let [hour, minute, second] = clock[..] else {
        return false;
    };
    day_name
        .strip_suffix(',')
        .is_some_and(|name| DAYS.contains(&name))
        && digits(day, 2)
        && (1..=31).contains(&day.parse::<u32>().unwrap_or(0))
        && MONTHS.contains(&month)
        && digits(year, 4)
        && digits(hour, 2)
        && in_range(hour, 23)
        && digits(minute, 2)
        && in_range(minute, 59)
        && digits(second, 2)
        && in_range(second, 60)
        && zone == "GMT"
}

/// The status, `Connection: close`, a short text body and a clean close: what every error
/// response must look like. Reads the response from `conn`, then checks that the server is still
/// serving other clients.
pub fn assert_error_and_close(server: &Server, conn: &mut Conn, accepted: &[u16], case: &str) {
    let response = conn.read_response();
    assert!(
        accepted.contains(&response.status),
        "{case}: expected status {accepted:?}, got {response:?}"
    );
    assert!(
        response.closes(),
        "{case}: no `Connection: close` in {response:?}"
    );
    assert!(
        !response.body.is_empty() && response.body.len() < 1024,
        "{case}: error body should be short and non-empty: {response:?}"
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/")),
        "{case}: error body should be text: {response:?}"
    );
    response.assert_standard_headers();
    conn.expect_eof();
    server.assert_still_serves();
}

/// Runs `check` on every row of a table, then fails listing each row that failed with its
/// message: one bad row should not hide the others.
pub fn check_rows<R>(rows: impl IntoIterator<Item = (String, R)>, check: impl Fn(&str, R)) {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, row) in rows {
        count += 1;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(&name, row)));
        if let Err(cause) = outcome {
            let message = cause
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| cause.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("- {name}: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A complete `POST PATH` request carrying `body` by Content-Length.
pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A complete `POST PATH` request carrying `body` chunked, `chunk_size` bytes per chunk.
pub fn post_chunked(path: &str, body: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    request.extend(chunked(body, chunk_size));
    request
}

/// `body` in chunked coding (RFC 9112 §7.1), `chunk_size` bytes per chunk, no trailers.
pub fn chunked(body: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(body.len() + body.len() / chunk_size * 8 + 8);
    for chunk in body.chunks(chunk_size) {
        encoded.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift64*), cheap enough to make a gigabyte on the fly.
pub struct PseudoRandom(u64);

impl PseudoRandom {
    pub fn new(seed: u64) -> PseudoRandom {
        PseudoRandom(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        PseudoRandom::new(seed).fill(&mut bytes);
        bytes
    }
}

/// A socket read or write that ran into its timeout.
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// For tests that hold many connections or read open-ended streams (the comet tests).
impl Conn {
    /// Wraps a stream connected by the test itself (from a chosen source address, say), with
    /// the usual timeouts. The buffer is small: such tests hold a thousand of these.
    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Conn {
            reader: BufReader::with_capacity(4 * 1024, stream),
        }
    }

    /// The data of the next chunk of a chunked body that is still arriving; empty for the last
    /// chunk (whose trailer section is read too).
    pub fn read_chunk(&mut self) -> Vec<u8> {
        match self.read_piece() {
            Piece::Data(data) => data,
            Piece::End(_) => Vec::new(),
        }
    }

    /// The bytes up to and including the next `terminator`, for a close-delimited stream
    /// (an HTTP/1.0 event stream ends each event with an empty line).
    pub fn read_through(&mut self, terminator: &[u8]) -> Vec<u8> {
        let last = *terminator.last().expect("a non-empty terminator");
        let mut bytes = Vec::new();
        while !bytes.ends_with(terminator) {
            match self.reader.read_until(last, &mut bytes) {
                Ok(0) => panic!(
                    "connection closed before {:?} (got {:?})",
                    String::from_utf8_lossy(terminator),
                    String::from_utf8_lossy(&bytes)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "reading up to {:?}: {e} (got {:?} so far)",
                    String::from_utf8_lossy(terminator),
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
        bytes
    }
}

/// One step of a chunked body that is still arriving (the streamed-command tests read the
/// trailer, which `read_response` and `read_chunk` skip).
#[derive(Debug)]
pub enum Piece {
    /// A chunk's data.
    Data(Vec<u8>),
    /// The last chunk, with the trailer fields that followed it (RFC 9112 §7.1.2).
    End(Vec<(String, String)>),
}

impl Conn {
    /// The next chunk of a chunked body, or its end with the trailer fields.
    pub fn read_piece(&mut self) -> Piece {
        let line = self.read_line("chunk size");
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let line = self.read_line("trailer line");
                if line.is_empty() {
                    return Piece::End(trailers);
                }
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("trailer line without colon: {line:?}"));
                trailers.push((name.to_string(), value.trim().to_string()));
            }
        }
        let mut data = vec![0; size];
        self.reader
            .read_exact(&mut data)
            .unwrap_or_else(|e| panic!("reading {size}-byte chunk: {e}"));
        let end = self.read_line("CRLF after chunk data");
        assert!(end.is_empty(), "chunk data longer than its size: {end:?}");
        Piece::Data(data)
    }
}

impl Server {
    /// Everything the server has written to its stderr so far (where `--exec-stderr inherit`
    /// sends a command's stderr).
    pub fn stderr_log(&self) -> String {
        self.stderr()
    }
}

/// Fails the test, saying how to fix it, when python3 cannot import `requests`.
pub fn require_python_requests() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import requests"])
        .output();
    assert!(
        probe.is_ok_and(|p| p.status.success()),
        "python3 with the requests package is missing: run scripts/test.sh, which installs it"
    );
}

/// A client whose socket is bound to `source` before it connects, as a load client spreads
/// its connections over loopback addresses to get past one address's port range.
pub fn connect_from(server: &Server, source: std::net::Ipv4Addr) -> Conn {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .unwrap_or_else(|e| panic!("bind to {source}: {e}"));
    socket
        .connect(&server.addr().into())
        .unwrap_or_else(|e| panic!("connect from {source}: {e}"));
    Conn::from_stream(socket.into())
}

/// The i-th of 127.0.0.2, 127.0.0.3, ..., 127.0.0.251, round and round.
pub fn source_address(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8)
}

/// Runs the binary with `args` and `env` (never a developer's `MIOHTTPD_ADMIN_TOKEN`), for a
/// command line it must refuse: waits up to `IO_TIMEOUT` for it to exit on its own, and
/// returns its exit code and stderr. One that keeps running is killed, and the test fails.
pub fn exit_without_serving(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_miohttpd"))
        .args(args)
        .env_remove("MIOHTTPD_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start miohttpd");
    let started = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait for miohttpd") {
            Some(status) => break status,
            None if started.elapsed() > IO_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("miohttpd {args:?} with {env:?} kept running instead of exiting");
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr)
            .expect("read miohttpd's stderr");
    }
    (status.code(), stderr)
}

/// The counters that count syscalls, as a process's `/metrics` names them (`Kind::Syscalls`
/// in src/server/stats.rs): their sum is its `miohttpd_syscalls_total`.
pub const SYSCALL_KINDS: [&str; 12] = [
    "polls_total",
    "accept_calls_total",
    "closes_total",
    "reads_total",
    "writes_total",
    "shutdowns_total",
    "pipe_reads_total",
    "pipe_closes_total",
    "setsockopts_total",
    "registrations_total",
    "process_syscalls_total",
    "log_writes_total",
];
