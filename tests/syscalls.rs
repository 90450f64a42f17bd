//! The server as an instrument: its own syscall count (`miohttpd_syscalls_total` on
//! `/metrics`) against strace's count of the same window, and what a request costs in
//! syscalls with each read mode and pipelined. Everything asserted is a count, not a time:
//! the same load makes the same reads and writes on a quiet machine or a busy one. Poll waits
//! are left out of the per-request figures, because how many events one wake-up finds is
//! timing; they are in the strace comparison.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, GET_PLAINTEXT, IO_TIMEOUT};

const CONNECTIONS: usize = 20;
const REQUESTS_PER_CONNECTION: usize = 500;
const PIPELINE_DEPTH: usize = 16;
const PIPELINED_ROUNDS: usize = 50;

/// The counters one `/metrics` answer showed.
#[derive(Debug, Clone)]
struct Counts {
    syscalls: u64,
    polls: u64,
    requests: u64,
    /// Every unlabelled sample, by name without the `miohttpd_` prefix.
    all: HashMap<String, u64>,
}

impl Counts {
    fn read(server: &Server) -> Counts {
        let mut conn = server.connect();
        conn.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        let text = response.text();
        let all: HashMap<String, u64> = text
            .lines()
            .filter_map(|line| line.strip_prefix("miohttpd_")?.split_once(' '))
            .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
            .collect();
        let sample = |name: &str| -> u64 {
            *all.get(name)
                .unwrap_or_else(|| panic!("no miohttpd_{name} in:\n{text}"))
        };
        Counts {
            syscalls: sample("syscalls_total"),
            polls: sample("polls_total"),
            requests: sample("requests_total"),
            all,
        }
    }

    /// How much the named counters grew since `earlier`, together.
    fn grew(&self, earlier: &Counts, names: &[&str]) -> u64 {
        names
            .iter()
            .map(|name| self.all[*name] - earlier.all[*name])
            .sum()
    }

    /// Syscalls per request of the load between two readings, poll waits aside. The later
    /// reading's own request is counted in `requests`, so it is taken off; its syscalls (and
    /// the earlier one's write and close) stay in, which can only raise the figure.
    fn per_request_since(&self, earlier: &Counts) -> f64 {
        let syscalls = (self.syscalls - self.polls) - (earlier.syscalls - earlier.polls);
        let requests = self.requests - earlier.requests - 1;
        syscalls as f64 / requests as f64
    }
}

/// `CONNECTIONS` clients at once, each sending one request at a time and reading its answer,
/// after `pause` if given.
fn keep_alive_load(server: &Server, pause: Option<Duration>) {
    thread::scope(|scope| {
        for _ in 0..CONNECTIONS {
            scope.spawn(|| {
                let mut conn = server.connect();
                for _ in 0..REQUESTS_PER_CONNECTION {
                    conn.send(GET_PLAINTEXT);
                    let response = conn.read_response();
                    assert_eq!(response.body, b"Hello, World!", "{response:?}");
                    if let Some(pause) = pause {
                        thread::sleep(pause);
                    }
                }
            });
        }
    });
}

/// `CONNECTIONS` clients at once, each sending `PIPELINE_DEPTH` requests in one write and
/// reading all the answers before the next round.
fn pipelined_load(server: &Server) {
    let batch = GET_PLAINTEXT.repeat(PIPELINE_DEPTH);
    thread::scope(|scope| {
        for _ in 0..CONNECTIONS {
            scope.spawn(|| {
                let mut conn = server.connect();
                for _ in 0..PIPELINED_ROUNDS {
                    conn.send(&batch);
                    for _ in 0..PIPELINE_DEPTH {
                        assert_eq!(conn.read_response().body, b"Hello, World!");
                    }
                }
            });
        }
    });
}

/// `strace -c -f -p PID`, attached to a running server until [`Strace::finish`].
struct Strace {
    child: Child,
    summary: PathBuf,
}

impl Strace {
    fn attach(pid: u32) -> Strace {
        let summary =
            std::env::temp_dir().join(format!("miohttpd-strace-{}-{pid}.txt", std::process::id()));
        let spawned = Command::new("strace")
            .args(["-c", "-f", "-o"])
            .arg(&summary)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => panic!("cannot run strace ({e}): scripts/test.sh installs it"),
        };
        let stderr = child.stderr.take().expect("piped stderr");
        let (attached, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = attached.send(line);
            }
        });
        let strace = Strace { child, summary };
        let started = Instant::now();
        loop {
            let left = IO_TIMEOUT.saturating_sub(started.elapsed());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("attached") => return strace,
                Ok(line) if line.contains("Operation not permitted") => panic!(
                    "strace cannot attach: {line} (run as root, or set \
                     kernel.yama.ptrace_scope=0)"
                ),
                Ok(_) => {}
                Err(_) => panic!("strace did not attach within {IO_TIMEOUT:?}"),
            }
        }
    }

    /// Detaches (SIGINT) and returns strace's total and its row per syscall.
    fn finish(mut self) -> (u64, Vec<(String, u64)>) {
        let pid = i32::try_from(self.child.id()).expect("a pid fits in pid_t");
        // SAFETY: kill(2) on the pid of our own child, with plain integers.
        let signalled = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(signalled, 0, "signal strace");
        let started = Instant::now();
        while self.child.try_wait().expect("wait for strace").is_none() {
            assert!(started.elapsed() < IO_TIMEOUT, "strace did not detach");
            thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&self.summary).expect("strace's summary");
        parse_strace_summary(&text)
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.summary);
    }
}

/// The rows of `strace -c`: `% time  seconds  usecs/call  calls  [errors]  syscall`, and the
/// `total` row.
fn parse_strace_summary(text: &str) -> (u64, Vec<(String, u64)>) {
    let mut rows = Vec::new();
    let mut total = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(calls), Some(name)) = (fields.get(3), fields.last()) else {
            continue;
        };
        let Ok(calls) = calls.parse::<u64>() else {
            continue; // the header and the rules
        };
        if *name == "total" {
            total = Some(calls);
        } else {
            rows.push((name.to_string(), calls));
        }
    }
    let total = total.unwrap_or_else(|| panic!("no total in strace's summary:\n{text}"));
    (total, rows)
}

#[test]
fn strace_summary_rows_are_read() {
    let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 71.27    0.262028          13     19918           sendto
 26.27    0.096598           4     19941         1 recvfrom
------ ----------- ----------- --------- --------- ----------------
100.00    0.367647           8     39859         1 total
";
    let (total, rows) = parse_strace_summary(text);
    assert_eq!(total, 39859);
    assert_eq!(
        rows,
        [
            ("sendto".to_string(), 19918),
            ("recvfrom".to_string(), 19941)
        ]
    );
}

#[test]
fn the_servers_own_count_agrees_with_strace() {
    let server = Server::start();
    let strace = Strace::attach(server.pid());
    let start = Counts::read(&server);
    keep_alive_load(&server, None);
    let after_keep_alive = Counts::read(&server);
    pipelined_load(&server);
    let end = Counts::read(&server);
    let (traced, rows) = strace.finish();

    let counted = end.syscalls - start.syscalls;
    // A debug build's std checks each fd before closing it (fcntl F_GETFD): one uncounted
    // syscall per close, which a release build does not make.
    let listed: Vec<String> = rows.iter().map(|(n, c)| format!("{n} {c}")).collect();
    let report = format!(
        "strace counted {traced}, the server {counted} ({:+.2}%); strace's rows: {}",
        (counted as f64 - traced as f64) / traced as f64 * 100.0,
        listed.join(", ")
    );
    eprintln!("{report}");
    // The windows differ by the edges of the two /metrics requests (a dozen calls), and in a
    // debug build by the fcntl checks (one per connection).
    assert!(
        counted.abs_diff(traced) * 20 <= traced,
        "counts differ by more than 5%: {report}"
    );

    // Each syscall strace saw, against the counters that count it: a counter that missed
    // one call per request or per connection would be far off, even with the total close.
    let families: [(&[&str], &[&str]); 7] = [
        (&["epoll_wait"], &["polls_total"]),
        (&["accept4", "accept"], &["accept_calls_total"]),
        (&["setsockopt"], &["setsockopts_total"]),
        (&["epoll_ctl"], &["registrations_total"]),
        (&["recvfrom", "read"], &["reads_total", "pipe_reads_total"]),
        (
            &["sendto", "writev", "sendmsg", "write"],
            &["writes_total", "log_writes_total"],
        ),
        (&["close"], &["closes_total", "pipe_closes_total"]),
    ];
    let mut mismatches = Vec::new();
    for (syscalls, counters) in families {
        let seen: u64 = rows
            .iter()
            .filter(|(name, _)| syscalls.contains(&name.as_str()))
            .map(|(_, calls)| calls)
            .sum();
        let grew = end.grew(&start, counters);
        // The edges again: each /metrics request's accept, read, write, close and polls.
        if seen.abs_diff(grew) > 10.max(seen / 100) {
            mismatches.push(format!("{syscalls:?}: strace {seen}, {counters:?} {grew}"));
        }
    }
    assert!(mismatches.is_empty(), "{}\n{report}", mismatches.join("\n"));

    let keep_alive = after_keep_alive.per_request_since(&start);
    let pipelined = end.per_request_since(&after_keep_alive);
    eprintln!(
        "syscalls per request, polls aside: keep-alive {keep_alive:.3}, \
         pipelined {PIPELINE_DEPTH} deep {pipelined:.3}"
    );
    // One read and one write per request, and a few per connection.
    assert!(
        keep_alive <= 2.05,
        "keep-alive: {keep_alive:.3} per request"
    );
    assert!(keep_alive >= 2.0, "keep-alive: {keep_alive:.3} per request");
    // One read and one write per sixteen requests.
    assert!(pipelined <= 0.2, "pipelined: {pipelined:.3} per request");
}

/// The extra read finds the queue empty unless the client's next request got there in the
/// moment between the answer's write and that read. Against a release build at full speed it
/// nearly never does; a debug build's turn is slow enough that a quick client often wins, and
/// the extra read is then that request's own read. A short pause before each request settles
/// the race as it goes in release; the assertion is on the counts.
const CLIENT_PAUSE: Duration = Duration::from_micros(200);

#[test]
fn reading_until_wouldblock_costs_one_more_read_per_request() {
    let mut figures = Vec::new();
    for read_mode in ["off", "on"] {
        let server = Server::start_with(&["--read-until-wouldblock", read_mode]);
        let start = Counts::read(&server);
        keep_alive_load(&server, Some(CLIENT_PAUSE));
        figures.push(Counts::read(&server).per_request_since(&start));
    }
    let [trusting, until_wouldblock] = figures[..] else {
        unreachable!()
    };
    eprintln!(
        "syscalls per request, polls aside: short read trusted {trusting:.3}, \
         read until EAGAIN {until_wouldblock:.3}"
    );
    assert!(trusting <= 2.05, "{trusting:.3}");
    // One more recvfrom per request, returning EAGAIN; never more than one.
    assert!(
        until_wouldblock > trusting + 0.8 && until_wouldblock < trusting + 1.2,
        "short read trusted: {trusting:.3}; read until EAGAIN: {until_wouldblock:.3}"
    );
}
