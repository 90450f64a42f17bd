//! Plaintext benchmark: `GET /plaintext` ("Hello, World!") under wrk, miohttpd beside nginx
//! (one worker, `return 200`) and Go net/http (GOMAXPROCS=1), in the same run, interleaved.
//!
//! `cargo bench --bench plaintext -- --help` lists the flags.
//!
//! Every server runs pinned to core 1, wrk (`-t1`) to core 0. Scenarios: keep-alive without
//! pipelining at each `--connections` count, and `--pipeline` requests deep
//! (`benches/pipeline.lua`) at `--pipeline-connections`. Per server and scenario, medians over
//! `--runs` runs of: requests/s (wrk), the server's user and sys CPU per 1,000 requests
//! (`/proc/PID/stat` deltas over the run), how busy the server's and wrk's cores were, and the
//! server's open fds mid-run. Then `--syscall-runs` more runs per pair with the server's
//! syscalls counted from outside (`perf stat -e raw_syscalls:sys_enter -p PID`, else
//! `strace -c -f -p PID`), and among them the epoll waits: kept apart from the timed runs
//! because tracing slows every syscall.
//! Prints ratios against nginx and Go, issue 5's targets, and writes SVG charts over the
//! connection count into `docs/img/`.
//!
//! Under `cargo test` (no `--bench`): a smoke test against the debug binary (keep-alive and 16
//! pipelined requests on one connection, every answer checked; the charts rendered and
//! checked), no wrk and no peers.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::svg::{check_chart, LineChart, Scale, Series};
use common::{
    apt_install, build_go_peer, free_port, have_command, median, number_list,
    pin_self_to_client_core, CpuTimes, Server, CLIENT_CORE, MIOHTTPD,
};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const PIPELINE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pipeline.lua");
const GO_PEER_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/plaintext.go");
const BODY: &str = "Hello, World!";
/// The flag another change adds to miohttpd; run as a second miohttpd when `--help` lists it.
const READ_UNTIL_WOULDBLOCK: &str = "--read-until-wouldblock";
/// A core this busy over a run was the bottleneck.
const SATURATED: f64 = 0.9;
/// Time for perf or strace to attach before wrk starts.
const ATTACH_DELAY: Duration = Duration::from_millis(400);

const HELP: &str = "\
cargo bench --bench plaintext [-- FLAGS]

GET /plaintext under wrk -t1 (core 0): miohttpd, nginx with one worker and Go net/http with
GOMAXPROCS=1 (each on core 1), interleaved. Installs wrk, nginx-light, golang-go and
linux-perf (or strace) with apt-get when missing.

  --runs N                   timed runs per server and scenario [default: 3]
  --duration SECS            length of each wrk run [default: 5]
  --connections N,N,...      keep-alive scenarios, one per connection count [default: 10,100,1000]
  --pipeline DEPTH           requests per write in the pipelined scenario; 0: none [default: 16]
  --pipeline-connections N   connections in the pipelined scenario [default: 100]
  --peers LIST               servers to run, from miohttpd,nginx,go [default: all three]
  --syscalls auto|perf|strace|off
                             how to count the servers' syscalls [default: auto: perf, else strace]
  --syscall-runs N           counted runs per server and scenario, apart from the timed ones [default: 1]
  --no-read-until-wouldblock do not add miohttpd --read-until-wouldblock on, even if supported
  --bin PATH                 the miohttpd to run [default: this build's target/release/miohttpd]
  --server-arg=--FLAG=VALUE  extra flag for miohttpd (repeatable)
  --plots DIR|none           where the SVG charts go [default: docs/img]
  -h, --help                 this text";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    Miohttpd,
    Nginx,
    Go,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyscallTool {
    Perf,
    Strace,
}

struct Options {
    runs: usize,
    duration: u64,
    connections: Vec<usize>,
    pipeline: usize,
    pipeline_connections: usize,
    peers: Vec<PeerKind>,
    /// `None` for auto; `Some(None)` for off.
    syscalls: Option<Option<SyscallTool>>,
    syscall_runs: usize,
    read_until_wouldblock: bool,
    bin: PathBuf,
    server_args: Vec<OsString>,
    plots: Option<PathBuf>,
    /// `cargo bench` passes `--bench`; `cargo test` does not, and then this is a smoke test.
    bench: bool,
}

fn parse_args() -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut opts = Options {
        runs: 3,
        duration: 5,
        connections: vec![10, 100, 1000],
        pipeline: 16,
        pipeline_connections: 100,
        peers: vec![PeerKind::Miohttpd, PeerKind::Nginx, PeerKind::Go],
        syscalls: None,
        syscall_runs: 1,
        read_until_wouldblock: true,
        bin: PathBuf::from(MIOHTTPD),
        server_args: Vec::new(),
        plots: Some(Path::new(MANIFEST_DIR).join("docs/img")),
        bench: false,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("runs") => opts.runs = parser.value()?.parse::<usize>()?.max(1),
            Long("duration") => opts.duration = parser.value()?.parse::<u64>()?.max(1),
            Long("connections") => opts.connections = number_list(&parser.value()?.string()?)?,
            Long("pipeline") => opts.pipeline = parser.value()?.parse()?,
            Long("pipeline-connections") => opts.pipeline_connections = parser.value()?.parse()?,
            Long("peers") => {
                let list = parser.value()?.string()?;
                opts.peers = list
                    .split(',')
                    .map(|p| match p.trim() {
                        "miohttpd" => Ok(PeerKind::Miohttpd),
                        "nginx" => Ok(PeerKind::Nginx),
                        "go" => Ok(PeerKind::Go),
                        other => Err(format!("unknown peer {other:?} (miohttpd, nginx, go)")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            Long("syscalls") => {
                opts.syscalls = match parser.value()?.string()?.as_str() {
                    "auto" => None,
                    "perf" => Some(Some(SyscallTool::Perf)),
                    "strace" => Some(Some(SyscallTool::Strace)),
                    "off" => Some(None),
                    other => {
                        return Err(
                            format!("--syscalls {other:?}: auto, perf, strace or off").into()
                        )
                    }
                }
            }
            Long("syscall-runs") => opts.syscall_runs = parser.value()?.parse()?,
            Long("no-read-until-wouldblock") => opts.read_until_wouldblock = false,
            Long("bin") => opts.bin = parser.value()?.into(),
            Long("server-arg") => opts.server_args.push(parser.value()?),
            Long("plots") => {
                let dir = parser.value()?;
                opts.plots = (dir != "none").then(|| PathBuf::from(dir));
            }
            Long("bench") => opts.bench = true,
            Short('h') | Long("help") => {
                println!("{HELP}");
                std::process::exit(0);
            }
            // cargo passes the same arguments to every target; ignore what is not ours.
            Long(_) | Short(_) => {
                let _ = parser.optional_value();
            }
            Value(_) => {}
        }
    }
    Ok(opts)
}

fn main() {
    let opts = parse_args().unwrap_or_else(|e| {
        eprintln!("plaintext: {e}");
        std::process::exit(2);
    });
    if !opts.bench {
        return smoke_test();
    }
    if let Err(e) = bench(&opts) {
        eprintln!("plaintext: {e}");
        std::process::exit(1);
    }
}

/// One workload wrk puts on every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scenario {
    connections: usize,
    /// Requests per write: 1 is plain keep-alive.
    depth: usize,
}

impl Scenario {
    fn label(&self) -> String {
        if self.depth > 1 {
            format!("pipelined x{}, {} conns", self.depth, self.connections)
        } else {
            format!("keep-alive, {} conns", self.connections)
        }
    }
}

/// A running server and what the report needs to know about it.
struct Target {
    name: String,
    kind: PeerKind,
    server: Server,
    /// The process whose CPU and syscalls count: nginx's worker, the others themselves.
    pid: u32,
    /// Bytes of one `GET /plaintext` response, head and body.
    response_bytes: usize,
}

fn bench(opts: &Options) -> Result<(), String> {
    let pinned = pin_self_to_client_core("plaintext");
    let fd_limit = miohttpd::sys::raise_open_files_limit().unwrap_or(1024) as usize;
    let mut scenarios: Vec<Scenario> = opts
        .connections
        .iter()
        .map(|&connections| Scenario {
            connections,
            depth: 1,
        })
        .collect();
    if opts.pipeline > 1 {
        scenarios.push(Scenario {
            connections: opts.pipeline_connections,
            depth: opts.pipeline,
        });
    }
    let most = scenarios.iter().map(|s| s.connections).max().unwrap_or(0);
    if most + 64 > fd_limit {
        return Err(format!(
            "{most} connections need more open files than the limit {fd_limit} (ulimit -Hn)"
        ));
    }
    if !have_command("wrk", "--version") {
        apt_install("plaintext", &["wrk"])?;
    }
    let tool = match opts.syscalls {
        None => pick_syscall_tool(),
        Some(None) => None,
        Some(Some(tool)) => match syscall_tool_works(tool) {
            Ok(()) => Some(tool),
            Err(why) => return Err(why),
        },
    };

    let targets = start_targets(opts, pinned)?;
    let date = today();
    println!(
        "plaintext: {} on {}; wrk -t1 on core {}, servers on core {}; {} run(s) of {} s per server \
         and scenario, syscalls by {}; open-files limit {fd_limit}",
        date,
        host_summary(),
        if pinned { CLIENT_CORE } else { "any" },
        if pinned { common::SERVER_CORE } else { "any" },
        opts.runs,
        opts.duration,
        match tool {
            Some(SyscallTool::Perf) => "perf stat -e raw_syscalls:sys_enter (+ epoll waits)",
            Some(SyscallTool::Strace) => "strace -c -f",
            None => "nobody (off)",
        }
    );
    for t in &targets {
        println!(
            "plaintext: {:<34} pid {:>7} on {}, {} bytes per response",
            t.name,
            t.pid,
            t.server.addr(),
            t.response_bytes
        );
    }
    let counted_runs = if tool.is_some() { opts.syscall_runs } else { 0 };
    let seconds =
        (scenarios.len() * targets.len() * (opts.runs + counted_runs)) as u64 * (opts.duration + 1);
    println!("plaintext: about {} min of load", seconds.div_ceil(60));

    // Warm-up: first faults, Go's heap, nginx's connection table; not measured.
    for t in &targets {
        let warm = Scenario {
            connections: most,
            depth: 1,
        };
        measure(t, warm, 1, pinned, None)?;
    }

    let mut results: Vec<Cell> = Vec::new();
    let rounds = opts.runs + counted_runs;
    for round in 0..rounds {
        let counting = round >= opts.runs;
        for &scenario in &scenarios {
            // The server that goes first moves each round: nobody always runs right after
            // the same neighbour.
            for k in 0..targets.len() {
                let t = &targets[(round + k) % targets.len()];
                let sample = measure(
                    t,
                    scenario,
                    opts.duration,
                    pinned,
                    if counting { tool } else { None },
                )?;
                println!(
                    "plaintext: {} {:<34} {:<26} {}",
                    if counting {
                        format!("count {}/{}", round - opts.runs + 1, counted_runs)
                    } else {
                        format!("run {}/{}", round + 1, opts.runs)
                    },
                    t.name,
                    scenario.label(),
                    sample.line()
                );
                let cell = Cell::of(&mut results, t, scenario);
                if counting {
                    cell.counted.push(sample);
                } else {
                    cell.timed.push(sample);
                }
            }
        }
    }
    drop(targets);
    println!("plaintext: done; {}", host_summary());

    print!("{}", report(&results, &scenarios, opts));
    print!("{}", targets_check(&results, opts));
    if let Some(dir) = &opts.plots {
        write_plots(dir, &results, opts, &date);
    }
    Ok(())
}

/// Starts every requested server, checks each answers `GET /plaintext` right.
fn start_targets(opts: &Options, pinned: bool) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for &kind in &opts.peers {
        match kind {
            PeerKind::Miohttpd => {
                let mut variants = vec![("miohttpd".to_string(), opts.server_args.clone())];
                if opts.read_until_wouldblock {
                    if lists_flag(&opts.bin, READ_UNTIL_WOULDBLOCK) {
                        let mut args = opts.server_args.clone();
                        args.extend([READ_UNTIL_WOULDBLOCK.into(), "on".into()]);
                        variants.push((format!("miohttpd {READ_UNTIL_WOULDBLOCK} on"), args));
                    } else {
                        println!(
                            "plaintext: {} --help does not list {READ_UNTIL_WOULDBLOCK}; that \
                             variant is skipped",
                            opts.bin.display()
                        );
                    }
                }
                for (name, args) in variants {
                    let mut cmd = Command::new(&opts.bin);
                    cmd.args(&args);
                    let server = Server::start_with_banner(&name, cmd, "miohttpd", pinned);
                    targets.push(target(name, kind, server)?);
                }
            }
            PeerKind::Nginx => {
                if !have_command("nginx", "-v") {
                    apt_install("plaintext", &["nginx-light"])
                        .or_else(|_| apt_install("plaintext", &["nginx"]))?;
                }
                let addr = free_port();
                let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("plaintext-nginx-{}", addr.port()));
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, nginx_config(addr, &dir))
                    .map_err(|e| format!("{}: {e}", conf.display()))?;
                let mut cmd = Command::new("nginx");
                cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
                let name = "nginx (1 worker)".to_string();
                let server = Server::start_at(&name, cmd, addr, pinned);
                targets.push(target(name, kind, server)?);
            }
            PeerKind::Go => {
                let peer = build_go_peer("plaintext", Path::new(GO_PEER_SOURCE), "plaintext")?;
                let mut cmd = Command::new(peer);
                cmd.env("GOMAXPROCS", "1");
                let name = "go net/http (GOMAXPROCS=1)".to_string();
                let server = Server::start_with_banner(&name, cmd, "plaintext", pinned);
                targets.push(target(name, kind, server)?);
            }
        }
    }
    Ok(targets)
}

/// Checks the server answers two keep-alive requests on one connection; its worker's pid is
/// read only then, because nginx's master accepts connections before its worker exists.
fn target(name: String, kind: PeerKind, server: Server) -> Result<Target, String> {
    let response_bytes =
        check_plaintext(server.addr(), 2, 1).map_err(|e| format!("{name}: GET /plaintext: {e}"))?;
    let pid = server.worker_pid();
    Ok(Target {
        name,
        kind,
        server,
        pid,
        response_bytes,
    })
}

fn lists_flag(bin: &Path, flag: &str) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}

/// One worker, as many keep-alive requests per connection as wrk sends, no access log.
fn nginx_config(addr: SocketAddr, dir: &Path) -> String {
    format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         worker_rlimit_nofile 20000;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n\
           access_log off;\n\
           keepalive_requests 1000000000;\n\
           client_body_temp_path {dir};\n\
           server {{\n\
             listen {addr} backlog=4096;\n\
             location = /plaintext {{ default_type text/plain; return 200 \"{BODY}\"; }}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    )
}

/// The results of one server in one scenario.
struct Cell {
    target: String,
    kind: PeerKind,
    scenario: Scenario,
    timed: Vec<Sample>,
    /// Runs with the syscall counter attached: only their syscalls per request are used.
    counted: Vec<Sample>,
}

impl Cell {
    /// The cell of `t` in `scenario`, added if it is not there yet.
    fn of<'a>(results: &'a mut Vec<Cell>, t: &Target, scenario: Scenario) -> &'a mut Cell {
        let at = match results
            .iter()
            .position(|c| c.target == t.name && c.scenario == scenario)
        {
            Some(at) => at,
            None => {
                results.push(Cell {
                    target: t.name.clone(),
                    kind: t.kind,
                    scenario,
                    timed: Vec::new(),
                    counted: Vec::new(),
                });
                results.len() - 1
            }
        };
        &mut results[at]
    }

    fn median_of(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        let mut v: Vec<f64> = self.timed.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        median(&v)
    }

    fn rate(&self) -> f64 {
        self.median_of(|s| s.rate)
    }

    /// Server CPU, user and sys, in ms per 1,000 requests (= µs per request).
    fn cpu_per_k(&self) -> (f64, f64) {
        (
            self.median_of(|s| s.per_k(s.server_cpu.user)),
            self.median_of(|s| s.per_k(s.server_cpu.sys)),
        )
    }

    fn cpu_total_per_k(&self) -> f64 {
        self.median_of(|s| s.per_k(s.server_cpu.total()))
    }

    fn syscalls_per_request(&self) -> Option<f64> {
        self.counted_median(|n| n.total)
    }

    /// epoll_wait calls per request: how often the server ran out of work and slept.
    fn waits_per_request(&self) -> Option<f64> {
        self.counted_median(|n| n.waits)
    }

    fn counted_median(&self, f: impl Fn(&SyscallCount) -> u64) -> Option<f64> {
        let mut v: Vec<f64> = self
            .counted
            .iter()
            .filter_map(|s| Some(f(s.syscalls.as_ref()?) as f64 / s.requests.max(1) as f64))
            .collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| median(&v))
    }

    fn wrk_busy(&self) -> f64 {
        self.median_of(|s| s.wrk_busy())
    }

    fn server_busy(&self) -> f64 {
        self.median_of(|s| s.server_busy())
    }

    /// Which side was the bottleneck, from how busy each core was.
    fn limit(&self) -> &'static str {
        match (
            self.wrk_busy() >= SATURATED,
            self.server_busy() >= SATURATED,
        ) {
            (true, false) => "wrk",
            (false, true) => "server",
            (true, true) => "both",
            (false, false) => "neither",
        }
    }
}

/// One wrk run against one server.
#[derive(Debug, Clone, Default)]
struct Sample {
    requests: u64,
    rate: f64,
    wall: Duration,
    server_cpu: CpuTimes,
    wrk_cpu: CpuTimes,
    /// The server's open fds halfway through: every connection wrk opened should be there.
    fds: usize,
    /// wrk's socket errors and non-2xx count, when it printed any.
    errors: Option<String>,
    syscalls: Option<SyscallCount>,
}

/// A server's syscalls over one run: all of them, and its epoll waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SyscallCount {
    total: u64,
    waits: u64,
}

impl Sample {
    fn per_k(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e3 / self.requests.max(1) as f64 * 1e3
    }

    fn server_busy(&self) -> f64 {
        self.server_cpu.total().as_secs_f64() / self.wall.as_secs_f64()
    }

    fn wrk_busy(&self) -> f64 {
        self.wrk_cpu.total().as_secs_f64() / self.wall.as_secs_f64()
    }

    fn line(&self) -> String {
        let mut line = format!(
            "{:>9.0} req/s, server {:.2}+{:.2} ms/1k req, server cpu {:>3.0}%, wrk cpu {:>3.0}%, {} fds",
            self.rate,
            self.per_k(self.server_cpu.user),
            self.per_k(self.server_cpu.sys),
            self.server_busy() * 100.0,
            self.wrk_busy() * 100.0,
            self.fds
        );
        if let Some(n) = self.syscalls {
            let requests = self.requests.max(1) as f64;
            let _ = write!(
                line,
                ", {:.3} syscalls/req ({:.3} epoll waits)",
                n.total as f64 / requests,
                n.waits as f64 / requests
            );
        }
        if let Some(errors) = &self.errors {
            let _ = write!(line, "  ({errors})");
        }
        line
    }
}

/// One wrk run of `seconds` against `t`, optionally with its syscalls counted.
fn measure(
    t: &Target,
    scenario: Scenario,
    seconds: u64,
    pinned: bool,
    tool: Option<SyscallTool>,
) -> Result<Sample, String> {
    let url = format!("http://{}/plaintext", t.server.addr());
    let mut wrk = if pinned {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", CLIENT_CORE, "wrk"]);
        cmd
    } else {
        Command::new("wrk")
    };
    wrk.arg("-t1")
        .arg(format!("-c{}", scenario.connections))
        .arg(format!("-d{seconds}s"));
    if scenario.depth > 1 {
        wrk.arg("-s")
            .arg(PIPELINE_SCRIPT)
            .arg(&url)
            .arg("--")
            .arg(scenario.depth.to_string());
    } else {
        wrk.arg(&url);
    }
    wrk.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let counter = tool
        .map(|tool| SyscallCounter::attach(tool, t.pid, pinned))
        .transpose()?;
    let cpu_before = CpuTimes::of(t.pid);
    let started = Instant::now();
    let mut child = wrk.spawn().map_err(|e| format!("cannot run wrk: {e}"))?;
    let wrk_pid = child.id();
    std::thread::sleep(Duration::from_millis(seconds * 500));
    let fds = open_fds(t.pid);
    // wrk prints everything at its end, so the pipes never fill before it exits.
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    // Output closed means wrk is exiting: read its CPU before it is reaped.
    let wrk_cpu = wrk_cpu_at_exit(wrk_pid);
    let wall = started.elapsed();
    let server_cpu = CpuTimes::of(t.pid).since(cpu_before);
    let status = child.wait().map_err(|e| format!("wrk: {e}"))?;
    let syscalls = counter.map(SyscallCounter::finish).transpose()?;
    if !status.success() {
        return Err(format!("wrk failed ({status}): {out}{err}"));
    }
    let (requests, rate, errors) = parse_wrk(&out)?;
    Ok(Sample {
        requests,
        rate,
        wall,
        server_cpu,
        wrk_cpu,
        fds,
        errors,
        syscalls,
    })
}

/// wrk's CPU from `/proc/PID/stat` once it has exited but is not yet reaped (a zombie keeps
/// its times there, its threads' included).
fn wrk_cpu_at_exit(pid: u32) -> CpuTimes {
    let mut last = CpuTimes::of(pid);
    // Its threads' times settle as they exit: read until two readings agree.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(5));
        let now = CpuTimes::of(pid);
        if now == last && now != CpuTimes::default() {
            break;
        }
        last = now;
    }
    last
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Total requests, requests/s, and any error lines from wrk's report.
fn parse_wrk(out: &str) -> Result<(u64, f64, Option<String>), String> {
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no 'requests in' line in wrk's output:\n{out}"))?;
    let rate = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{out}"))?;
    let errors: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Socket errors") || l.starts_with("Non-2xx"))
        .collect();
    Ok((
        requests,
        rate,
        (!errors.is_empty()).then(|| errors.join("; ")),
    ))
}

/// perf or strace attached to the server for one run.
struct SyscallCounter {
    tool: SyscallTool,
    child: Child,
    output: PathBuf,
}

impl SyscallCounter {
    fn attach(tool: SyscallTool, pid: u32, pinned: bool) -> Result<SyscallCounter, String> {
        let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("syscalls-{pid}.txt"));
        let mut cmd = if pinned {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", CLIENT_CORE]);
            cmd
        } else {
            Command::new("env")
        };
        match tool {
            SyscallTool::Perf => cmd
                .args(["perf", "stat", "-x,", "-e", PERF_EVENTS, "-o"])
                .arg(&output)
                .args(["-p", &pid.to_string()]),
            SyscallTool::Strace => cmd
                .args(["strace", "-c", "-f", "-o"])
                .arg(&output)
                .args(["-p", &pid.to_string()]),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {tool:?}: {e}"))?;
        std::thread::sleep(ATTACH_DELAY);
        Ok(SyscallCounter {
            tool,
            child,
            output,
        })
    }

    /// Stops the counter with SIGINT (both print their summary on it) and reads the count.
    fn finish(mut self) -> Result<SyscallCount, String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.output)
            .map_err(|e| format!("{:?} left no output: {e}", self.tool))?;
        let _ = std::fs::remove_file(&self.output);
        match self.tool {
            SyscallTool::Perf => perf_count(&text),
            SyscallTool::Strace => strace_count(&text),
        }
        .ok_or_else(|| format!("no syscall count in {:?}'s output:\n{text}", self.tool))
    }
}

/// Every syscall entry, and the epoll waits among them (mio and nginx call epoll_wait, Go
/// epoll_pwait).
const PERF_EVENTS: &str =
    "raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait";
const WAIT_SYSCALLS: [&str; 2] = ["epoll_wait", "epoll_pwait"];

/// A run that fails between attach and finish must not leave the tracer behind.
impl Drop for SyscallCounter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The counts from `perf stat -x,` output, one line per event:
/// `184023,,raw_syscalls:sys_enter,...`; `<not counted>` for an event that never fired.
fn perf_count(text: &str) -> Option<SyscallCount> {
    let count = |event: &str| {
        text.lines()
            .find(|l| l.split(',').nth(2) == Some(event))
            .and_then(|l| l.split(',').next()?.trim().parse::<u64>().ok())
    };
    Some(SyscallCount {
        total: count("raw_syscalls:sys_enter")?,
        waits: WAIT_SYSCALLS
            .iter()
            .filter_map(|w| count(&format!("syscalls:sys_enter_{w}")))
            .sum(),
    })
}

/// The calls column (the fourth) of `strace -c`'s table: the total line and the epoll lines,
/// e.g. `100.00 0.123 1 184023 12 total`.
fn strace_count(text: &str) -> Option<SyscallCount> {
    let calls = |name: &str| {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.last() == Some(&name))
            .and_then(|cols| cols.get(3)?.parse::<u64>().ok())
    };
    Some(SyscallCount {
        total: calls("total")?,
        waits: WAIT_SYSCALLS.iter().filter_map(|w| calls(w)).sum(),
    })
}

/// perf if it can count syscall tracepoints here, else strace; installs either when missing.
fn pick_syscall_tool() -> Option<SyscallTool> {
    for tool in [SyscallTool::Perf, SyscallTool::Strace] {
        match syscall_tool_works(tool) {
            Ok(()) => return Some(tool),
            Err(why) => println!("plaintext: {why}"),
        }
    }
    println!("plaintext: no way to count syscalls here; that column stays empty");
    None
}

fn syscall_tool_works(tool: SyscallTool) -> Result<(), String> {
    let (program, package) = match tool {
        SyscallTool::Perf => ("perf", "linux-perf"),
        SyscallTool::Strace => ("strace", "strace"),
    };
    if !have_command(program, "--version") {
        apt_install("plaintext", &[package])?;
    }
    let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("probe-{program}.txt"));
    let mut cmd = Command::new(program);
    match tool {
        SyscallTool::Perf => cmd.args(["stat", "-x,", "-e", PERF_EVENTS, "-o"]),
        SyscallTool::Strace => cmd.args(["-c", "-f", "-o"]),
    };
    let probe = cmd
        .arg(&output)
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    let _ = std::fs::remove_file(&output);
    let counted = match tool {
        SyscallTool::Perf => perf_count(&text),
        SyscallTool::Strace => strace_count(&text),
    };
    if probe.status.success() && counted.is_some() {
        return Ok(());
    }
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .unwrap_or_default()
        .trim()
        .to_string();
    let hint = if tool == SyscallTool::Perf && !paranoid.is_empty() && paranoid != "-1" {
        format!(
            "; kernel.perf_event_paranoid is {paranoid}, which keeps tracepoints from users \
             without CAP_PERFMON (sysctl kernel.perf_event_paranoid=-1, or run as root)"
        )
    } else {
        String::new()
    };
    Err(format!(
        "{program} cannot count syscalls here ({}{}){hint}",
        probe.status,
        String::from_utf8_lossy(&probe.stderr)
            .lines()
            .next()
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    ))
}

fn report(results: &[Cell], scenarios: &[Scenario], opts: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmedians of {} run(s) of {} s, each column its own; CPU is the server's, in ms per \
         1,000 requests (= µs per request); syscalls and epoll waits per request from {} \
         counted run(s); limit: the core at >= {:.0}% busy",
        opts.runs,
        opts.duration,
        opts.syscall_runs,
        SATURATED * 100.0
    );
    for &scenario in scenarios {
        let cells: Vec<&Cell> = results.iter().filter(|c| c.scenario == scenario).collect();
        let _ = writeln!(
            out,
            "\n== {}: wrk -t1 -c{} -d{}s{}",
            scenario.label(),
            scenario.connections,
            opts.duration,
            if scenario.depth > 1 {
                format!(" -s pipeline.lua -- {}", scenario.depth)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "{:<34} {:>10} {:>21} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>6} {:>8}",
            "server",
            "req/s",
            "min..max",
            "user",
            "sys",
            "cpu",
            "srv cpu",
            "wrk cpu",
            "sysc/req",
            "waits/req",
            "fds",
            "limit"
        );
        for c in &cells {
            let mut rates: Vec<f64> = c.timed.iter().map(|s| s.rate).collect();
            rates.sort_by(f64::total_cmp);
            let (user, sys) = c.cpu_per_k();
            let errors = c.timed.iter().find_map(|s| s.errors.clone());
            let _ = writeln!(
                out,
                "{:<34} {:>10.0} {:>21} {:>8.3} {:>8.3} {:>8.3} {:>7.0}% {:>7.0}% {:>10} {:>10} {:>6.0} {:>8}{}",
                c.target,
                c.rate(),
                format!("{:.0}..{:.0}", rates[0], rates[rates.len() - 1]),
                user,
                sys,
                c.cpu_total_per_k(),
                c.server_busy() * 100.0,
                c.wrk_busy() * 100.0,
                c.syscalls_per_request()
                    .map_or("-".to_string(), |v| format!("{v:.3}")),
                c.waits_per_request()
                    .map_or("-".to_string(), |v| format!("{v:.3}")),
                c.median_of(|s| s.fds as f64),
                c.limit(),
                errors.map_or(String::new(), |e| format!("  ERRORS: {e}"))
            );
            if c.median_of(|s| s.fds as f64) < scenario.connections as f64 {
                let _ = writeln!(
                    out,
                    "  note: fewer open fds than wrk's {} connections: wrk did not open them all",
                    scenario.connections
                );
            }
        }
        for base in [PeerKind::Nginx, PeerKind::Go] {
            let Some(b) = cells.iter().find(|c| c.kind == base) else {
                continue;
            };
            for m in cells.iter().filter(|c| c.kind == PeerKind::Miohttpd) {
                let (mu, ms) = m.cpu_per_k();
                let (bu, bs) = b.cpu_per_k();
                let syscalls = m
                    .syscalls_per_request()
                    .zip(b.syscalls_per_request())
                    .map_or("-".to_string(), |(a, b)| format!("{:.2}x", a / b));
                let _ = writeln!(
                    out,
                    "ratio {} / {}: req/s {:.2}x, cpu/req {:.2}x (user {:.2}x, sys {:.2}x), syscalls/req {syscalls}",
                    m.target,
                    b.target,
                    m.rate() / b.rate(),
                    m.cpu_total_per_k() / b.cpu_total_per_k(),
                    mu / bu,
                    ms / bs,
                );
            }
        }
        if cells
            .iter()
            .any(|c| c.limit() == "wrk" || c.limit() == "both")
        {
            let _ = writeln!(
                out,
                "note: wrk's core was saturated for {}: there req/s is wrk's ceiling, and CPU per \
                 request is the figure that compares the servers",
                cells
                    .iter()
                    .filter(|c| c.limit() == "wrk" || c.limit() == "both")
                    .map(|c| c.target.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    out
}

/// Issue 5's targets, each met or missed, for every miohttpd row.
fn targets_check(results: &[Cell], opts: &Options) -> String {
    let find =
        |kind: PeerKind, s: Scenario| results.iter().find(|c| c.kind == kind && c.scenario == s);
    let keep_alive = Scenario {
        connections: 100,
        depth: 1,
    };
    let pipelined = Scenario {
        connections: opts.pipeline_connections,
        depth: 16,
    };
    let mut out = String::from("\nissue 5 targets\n");
    let mut line = |ok: bool, text: String| {
        let _ = writeln!(out, "  [{}] {text}", if ok { "met" } else { "MISSED" });
    };
    for (scenario, max_syscalls, max_cpu, min_rate) in
        [(keep_alive, 2.05, 0.8, 1.2), (pipelined, 0.2, 0.25, 3.0)]
    {
        let (nginx, go) = (
            find(PeerKind::Nginx, scenario),
            find(PeerKind::Go, scenario),
        );
        for m in results
            .iter()
            .filter(|c| c.kind == PeerKind::Miohttpd && c.scenario == scenario)
        {
            let who = format!("{}, {}", m.target, scenario.label());
            if let Some(sc) = m.syscalls_per_request() {
                line(
                    sc <= max_syscalls,
                    format!("{who}: {sc:.3} syscalls/request (at most {max_syscalls})"),
                );
            }
            if let Some(n) = nginx {
                let cpu = m.cpu_total_per_k() / n.cpu_total_per_k();
                line(
                    cpu <= max_cpu,
                    format!("{who}: CPU per request {cpu:.2}x nginx's (at most {max_cpu}x)"),
                );
                let rate = m.rate() / n.rate();
                let wrk_bound = m.limit() == "wrk" || m.limit() == "both";
                line(
                    rate >= min_rate || wrk_bound,
                    format!(
                        "{who}: req/s {rate:.2}x nginx's (at least {min_rate}x{})",
                        if wrk_bound {
                            ", or wrk-limited: it was"
                        } else {
                            ", or wrk-limited: it was not"
                        }
                    ),
                );
            }
            if let Some(g) = go {
                let rate = m.rate() / g.rate();
                line(
                    rate >= 1.5,
                    format!(
                        "{who}: req/s {rate:.2}x Go's (at least 1.5x); CPU per request {:.2}x Go's",
                        m.cpu_total_per_k() / g.cpu_total_per_k()
                    ),
                );
            }
        }
    }
    // Keep-alive at every connection count: never more syscalls per request than nginx.
    for m in results
        .iter()
        .filter(|c| c.kind == PeerKind::Miohttpd && c.scenario.depth == 1)
    {
        let nginx = find(PeerKind::Nginx, m.scenario).and_then(Cell::syscalls_per_request);
        if let Some((sc, n)) = m.syscalls_per_request().zip(nginx) {
            let _ = writeln!(
                out,
                "  [{}] {}, {}: syscalls/request {sc:.3} vs nginx's {n:.3} (never more)",
                if sc <= n { "met" } else { "MISSED" },
                m.target,
                m.scenario.label()
            );
        }
    }
    out
}

/// req/s, syscalls per request and CPU per request over the keep-alive connection counts.
fn write_plots(dir: &Path, results: &[Cell], opts: &Options, date: &str) {
    let keep_alive: Vec<&Cell> = results.iter().filter(|c| c.scenario.depth == 1).collect();
    if opts.connections.len() < 2 {
        println!("plaintext: one connection count: no charts");
        return;
    }
    for (file, title, y_label, value) in plots() {
        let chart = chart(&keep_alive, title, y_label, value, opts, date);
        let path = dir.join(file);
        match chart.write(&path) {
            Ok(()) => println!("plaintext: wrote {}", path.display()),
            Err(e) => eprintln!("plaintext: cannot write {}: {e}", path.display()),
        }
    }
}

type Plot = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Cell) -> Option<f64>,
);

fn plots() -> [Plot; 3] {
    [
        (
            "plaintext-rps.svg",
            "GET /plaintext, keep-alive: requests per second",
            "requests/s",
            |c| Some(c.rate()),
        ),
        (
            "plaintext-syscalls.svg",
            "GET /plaintext, keep-alive: server syscalls per request",
            "syscalls per request",
            Cell::syscalls_per_request,
        ),
        (
            "plaintext-cpu.svg",
            "GET /plaintext, keep-alive: server CPU per request (user + sys)",
            "CPU µs per request",
            |c| Some(c.cpu_total_per_k()),
        ),
    ]
}

fn chart(
    cells: &[&Cell],
    title: &str,
    y_label: &str,
    value: fn(&Cell) -> Option<f64>,
    opts: &Options,
    date: &str,
) -> LineChart {
    let mut series: Vec<Series> = Vec::new();
    for c in cells {
        let Some(y) = value(c) else { continue };
        let point = (c.scenario.connections as f64, y);
        match series.iter_mut().find(|s| s.name == c.target) {
            Some(s) => s.points.push(point),
            None => series.push(Series {
                name: c.target.clone(),
                points: vec![point],
            }),
        }
    }
    LineChart {
        title: title.to_string(),
        note: format!(
            "wrk -t1 on core 0, server on core 1; median of {} run(s) of {} s; {date}",
            opts.runs, opts.duration
        ),
        x_label: "connections (log scale)".into(),
        y_label: y_label.to_string(),
        x_scale: Scale::Log10,
        series,
    }
}

fn today() -> String {
    Command::new("date")
        .arg("+%F")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn host_summary() -> String {
    // From /proc, not available_parallelism: this driver is pinned to one core by now.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |v| v.trim_start_matches([' ', '\t', ':']));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpus} x {cpu}, load {}", load.join(" "))
}

/// `requests` sequential keep-alive `GET /plaintext` on one connection, sent `depth` at a
/// time in one write; every answer must be a 200 with the body. Returns one response's size.
fn check_plaintext(addr: SocketAddr, requests: usize, depth: usize) -> Result<usize, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET /plaintext HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut buf: Vec<u8> = Vec::new();
    let mut size = 0;
    let mut answered = 0;
    while answered < requests {
        let batch = depth.min(requests - answered);
        stream
            .write_all(request.repeat(batch).as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        for _ in 0..batch {
            size = read_plaintext_response(&mut stream, &mut buf)
                .map_err(|e| format!("response {}: {e}", answered + 1))?;
            answered += 1;
        }
    }
    Ok(size)
}

/// Reads one response from `stream` (bytes beyond it stay in `buf`), checks it, returns its size.
fn read_plaintext_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) =
            response.parse(buf).map_err(|e| format!("bad head: {e}"))?
        {
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .ok_or("no Content-Length")?;
            if buf.len() >= head + length {
                if response.code != Some(200) || &buf[head..head + length] != BODY.as_bytes() {
                    return Err(format!(
                        "want 200 {BODY:?}, got {:?}",
                        String::from_utf8_lossy(&buf[..head + length])
                    ));
                }
                buf.drain(..head + length);
                return Ok(head + length);
            }
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a whole response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Under `cargo test`: the routes and framing the benchmark relies on, and the charts.
fn smoke_test() {
    let server = Server::start_with_banner("miohttpd", Command::new(MIOHTTPD), "miohttpd", false);
    check_plaintext(server.addr(), 3, 1).expect("keep-alive GET /plaintext");
    check_plaintext(server.addr(), 32, 16).expect("GET /plaintext pipelined 16 deep");
    assert_eq!(
        parse_wrk(
            "  1000 requests in 5.00s, 1.00MB read\n  Socket errors: connect 0, read 1, write 0, \
             timeout 0\nRequests/sec:    200.00\n"
        ),
        Ok((
            1000,
            200.0,
            Some("Socket errors: connect 0, read 1, write 0, timeout 0".into())
        ))
    );
    assert_eq!(
        perf_count(
            "# started\n\n184023,,raw_syscalls:sys_enter,1279187977,100.00,,\n\
             4764,,syscalls:sys_enter_epoll_wait,1279187977,100.00,,\n\
             <not counted>,,syscalls:sys_enter_epoll_pwait,0,100.00,,\n"
        ),
        Some(SyscallCount {
            total: 184023,
            waits: 4764
        })
    );
    assert_eq!(
        strace_count(
            " 40.33    0.170095          39      4304           recvfrom\n\
             \x20 1.02    0.004293          95        45           epoll_wait\n\
             \x20 1.10    0.004630          45       102         1 accept4\n\
             ------ ----------- ----------- --------- --------- ----------------\n\
             100.00    0.421759          47      8957         1 total\n"
        ),
        Some(SyscallCount {
            total: 8957,
            waits: 45
        })
    );
    let sample = |rate: f64, total: u64| Sample {
        requests: 1000,
        rate,
        wall: Duration::from_secs(1),
        syscalls: Some(SyscallCount { total, waits: 40 }),
        ..Sample::default()
    };
    let cells: Vec<Cell> = [(10, 1.0), (100, 2.0), (1000, 3.0)]
        .into_iter()
        .flat_map(|(connections, k)| {
            [
                ("miohttpd", PeerKind::Miohttpd),
                ("nginx <1> & go", PeerKind::Nginx),
            ]
            .map(|(name, kind)| Cell {
                target: name.into(),
                kind,
                scenario: Scenario {
                    connections,
                    depth: 1,
                },
                timed: vec![sample(80_000.0 * k, 2000)],
                counted: vec![sample(80_000.0 * k, 2050)],
            })
        })
        .collect();
    let opts = parse_args().expect("no flags");
    let refs: Vec<&Cell> = cells.iter().collect();
    for (_, title, y_label, value) in plots() {
        let chart = chart(&refs, title, y_label, value, &opts, "today");
        assert_eq!(chart.series.len(), 2, "{title}");
        check_chart(&chart).unwrap_or_else(|e| panic!("{title}: {e}"));
    }
    println!(
        "plaintext: smoke test ok: keep-alive and 16-deep pipelined GET /plaintext answered, \
         charts render (`cargo bench --bench plaintext` runs the benchmark)"
    );
}
