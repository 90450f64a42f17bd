//! Plaintext benchmark: `GET /plaintext` ("Hello, World!") under wrk, miohttpd beside nginx
//! (one worker, `return 200`) and Go net/http (GOMAXPROCS=1), in the same run, interleaved.
//!
//! `cargo bench --bench plaintext -- --help` lists the flags; `benches/README.md` says what
//! each column means. The harness (servers, peers, wrk, syscall counting, charts) is the
//! `loadbench` crate in `tools/loadbench`; this file is the scenarios and the report.
//!
//! Under `cargo test` (no `--bench`): a smoke test against the debug binary (keep-alive and 16
//! pipelined requests on one connection, every answer checked; the charts rendered and
//! checked), no wrk and no peers.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use loadbench::client::check_plaintext;
use loadbench::cpu::{pin_self_to_client_core, CLIENT_CORE, SERVER_CORE};
use loadbench::peers::{build_go_peer, ensure_nginx, nginx_plaintext_config, start_nginx};
use loadbench::perf::{pick_syscall_tool, syscall_tool_works, SyscallCount, SyscallTool};
use loadbench::report::{host_summary, number_list, today, Bound, Targets};
use loadbench::server::Server;
use loadbench::svg::{check_chart, LineChart, Scale, Series};
use loadbench::wrk::{self, ensure_wrk, Load, Runs, Sample, Watch, SATURATED};

const MIOHTTPD: &str = env!("CARGO_BIN_EXE_miohttpd");
const SCRATCH: &str = env!("CARGO_TARGET_TMPDIR");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const PIPELINE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pipeline.lua");
const GO_PEER_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/plaintext.go");
/// The name of `--baseline-bin`'s server in the report.
const BASELINE: &str = "miohttpd baseline";
/// Run as a second miohttpd variant when `--help` lists it.
const READ_UNTIL_WOULDBLOCK: &str = "--read-until-wouldblock";

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
  --profile-runs N           runs per server and scenario under perf record -g, apart from the
                             others: the server's kernel time per request by path [default: 0]
  --no-read-until-wouldblock do not add miohttpd --read-until-wouldblock on, even if supported
  --bin PATH                 the miohttpd to run [default: $MIOHTTPD_BIN, else this build's
                             target/release/miohttpd]
  --baseline-bin PATH        also run this miohttpd (say, the previous commit's release build)
                             as \"miohttpd baseline\", interleaved, with ratios against it
  --server-arg=--FLAG=VALUE  extra flag for miohttpd (repeatable)
  --plots DIR|none           where the SVG charts go [default: docs/img]
  -h, --help                 this text";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    Miohttpd,
    Nginx,
    Go,
}

/// How `--syscalls` asked the syscalls to be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    Auto,
    With(SyscallTool),
    Off,
}

struct Options {
    runs: usize,
    duration: u64,
    connections: Vec<usize>,
    pipeline: usize,
    pipeline_connections: usize,
    peers: Vec<PeerKind>,
    syscalls: Counting,
    syscall_runs: usize,
    profile_runs: usize,
    read_until_wouldblock: bool,
    bin: PathBuf,
    /// A second miohttpd build run beside the first, for before/after comparisons.
    baseline: Option<PathBuf>,
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
        syscalls: Counting::Auto,
        syscall_runs: 1,
        profile_runs: 0,
        read_until_wouldblock: true,
        bin: std::env::var_os("MIOHTTPD_BIN").map_or(PathBuf::from(MIOHTTPD), PathBuf::from),
        baseline: None,
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
                    "auto" => Counting::Auto,
                    "perf" => Counting::With(SyscallTool::Perf),
                    "strace" => Counting::With(SyscallTool::Strace),
                    "off" => Counting::Off,
                    other => {
                        return Err(
                            format!("--syscalls {other:?}: auto, perf, strace or off").into()
                        )
                    }
                }
            }
            Long("syscall-runs") => opts.syscall_runs = parser.value()?.parse()?,
            Long("profile-runs") => opts.profile_runs = parser.value()?.parse()?,
            Long("no-read-until-wouldblock") => opts.read_until_wouldblock = false,
            Long("bin") => opts.bin = parser.value()?.into(),
            Long("baseline-bin") => opts.baseline = Some(parser.value()?.into()),
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
    fn keep_alive(connections: usize) -> Scenario {
        Scenario {
            connections,
            depth: 1,
        }
    }

    fn label(&self) -> String {
        if self.depth > 1 {
            format!("pipelined x{}, {} conns", self.depth, self.connections)
        } else {
            format!("keep-alive, {} conns", self.connections)
        }
    }

    fn load(&self, addr: std::net::SocketAddr, seconds: u64) -> Load<'static> {
        Load {
            url: format!("http://{addr}/plaintext"),
            threads: 1,
            connections: self.connections,
            seconds,
            script: (self.depth > 1)
                .then(|| (Path::new(PIPELINE_SCRIPT), vec![self.depth.to_string()])),
            cores: None,
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
    let scratch = Path::new(SCRATCH);
    let fd_limit = miohttpd::sys::raise_open_files_limit().unwrap_or(1024) as usize;
    let mut scenarios: Vec<Scenario> = opts
        .connections
        .iter()
        .map(|&c| Scenario::keep_alive(c))
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
    ensure_wrk("plaintext")?;
    let tool = match opts.syscalls {
        Counting::Auto => pick_syscall_tool("plaintext", scratch),
        Counting::Off => None,
        Counting::With(tool) => {
            syscall_tool_works("plaintext", tool, scratch)?;
            Some(tool)
        }
    };

    if opts.profile_runs > 0 {
        // perf record needs perf; the probe installs it when missing.
        syscall_tool_works("plaintext", SyscallTool::Perf, scratch)?;
    }

    let targets = start_targets(opts, pinned)?;
    let date = today();
    println!(
        "plaintext: {date} on {}; wrk -t1 on core {}, servers on core {}; {} run(s) of {} s per \
         server and scenario, syscalls by {}; open-files limit {fd_limit}",
        host_summary(),
        if pinned { CLIENT_CORE } else { "any" },
        if pinned { SERVER_CORE } else { "any" },
        opts.runs,
        opts.duration,
        tool.map_or("nobody (off)", SyscallTool::describe),
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
    let rounds = opts.runs + counted_runs + opts.profile_runs;
    let seconds = (scenarios.len() * targets.len() * rounds) as u64 * (opts.duration + 1);
    println!("plaintext: about {} min of load", seconds.div_ceil(60));

    // Warm-up: first faults, Go's heap, nginx's connection table; not measured.
    for t in &targets {
        let warm = Scenario::keep_alive(most).load(t.server.addr(), 1);
        wrk::measure(&warm, t.pid, pinned, Watch::Nothing, scratch)?;
    }

    let mut results: Vec<Cell> = Vec::new();
    for round in 0..rounds {
        // Timed rounds first, then counted ones, then profiled ones: watching slows a server.
        let (watch, label) = if round < opts.runs {
            (Watch::Nothing, format!("run {}/{}", round + 1, opts.runs))
        } else if round < opts.runs + counted_runs {
            let k = round - opts.runs;
            let tool = tool.expect("counted rounds only with a tool");
            (
                Watch::Syscalls(tool),
                format!("count {}/{counted_runs}", k + 1),
            )
        } else {
            let k = round - opts.runs - counted_runs;
            (
                Watch::Profile,
                format!("profile {}/{}", k + 1, opts.profile_runs),
            )
        };
        for &scenario in &scenarios {
            // The server that goes first moves each round: nobody always runs right after
            // the same neighbour.
            for k in 0..targets.len() {
                let t = &targets[(round + k) % targets.len()];
                let load = scenario.load(t.server.addr(), opts.duration);
                let sample = wrk::measure(&load, t.pid, pinned, watch, scratch)?;
                println!(
                    "plaintext: {label} {:<34} {:<26} {}",
                    t.name,
                    scenario.label(),
                    sample.line()
                );
                Cell::of(&mut results, t, scenario).runs.push(watch, sample);
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
                let mut variants: Vec<(String, Vec<OsString>, &Path)> = variants
                    .into_iter()
                    .map(|(name, args)| (name, args, opts.bin.as_path()))
                    .collect();
                if let Some(baseline) = &opts.baseline {
                    variants.insert(
                        1,
                        (BASELINE.to_string(), opts.server_args.clone(), baseline),
                    );
                }
                for (name, args, bin) in variants {
                    let mut cmd = Command::new(bin);
                    cmd.args(&args);
                    let server = Server::start_with_banner(&name, cmd, "miohttpd", pinned);
                    targets.push(target(name, kind, server)?);
                }
            }
            PeerKind::Nginx => {
                ensure_nginx("plaintext")?;
                let name = "nginx (1 worker)".to_string();
                let server =
                    start_nginx(&name, Path::new(SCRATCH), nginx_plaintext_config, pinned)?;
                targets.push(target(name, kind, server)?);
            }
            PeerKind::Go => {
                let peer = build_go_peer(
                    "plaintext",
                    Path::new(SCRATCH),
                    Path::new(GO_PEER_SOURCE),
                    "plaintext",
                )?;
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

/// The results of one server in one scenario.
struct Cell {
    target: String,
    kind: PeerKind,
    scenario: Scenario,
    runs: Runs,
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
                    runs: Runs::default(),
                });
                results.len() - 1
            }
        };
        &mut results[at]
    }
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
        let _ = writeln!(out, "{}", Runs::table_header());
        for c in &cells {
            let _ = writeln!(out, "{}", c.runs.table_row(&c.target));
            if c.runs.median_of(|s| s.fds as f64) < scenario.connections as f64 {
                let _ = writeln!(
                    out,
                    "  note: fewer open fds than wrk's {} connections: wrk did not open them all",
                    scenario.connections
                );
            }
        }
        for c in &cells {
            let paths = c.runs.kernel_paths();
            if !paths.is_empty() {
                let _ = writeln!(
                    out,
                    "kernel µs/req by path, {} (perf record -g, median of {} run(s)): {}",
                    c.target,
                    c.runs.profiled.len(),
                    paths
                        .iter()
                        .map(|(label, us)| format!("{label} {us:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        for base in [PeerKind::Nginx, PeerKind::Go] {
            let Some(b) = cells.iter().find(|c| c.kind == base) else {
                continue;
            };
            for m in cells.iter().filter(|c| c.kind == PeerKind::Miohttpd) {
                let (mu, ms) = m.runs.cpu_per_k();
                let (bu, bs) = b.runs.cpu_per_k();
                let syscalls = m
                    .runs
                    .syscalls_per_request()
                    .zip(b.runs.syscalls_per_request())
                    .map_or("-".to_string(), |(a, b)| format!("{:.2}x", a / b));
                let _ = writeln!(
                    out,
                    "ratio {} / {}: req/s {:.2}x, cpu/req {:.2}x (user {:.2}x, sys {:.2}x), syscalls/req {syscalls}",
                    m.target,
                    b.target,
                    m.runs.rate() / b.runs.rate(),
                    m.runs.cpu_total_per_k() / b.runs.cpu_total_per_k(),
                    mu / bu,
                    ms / bs,
                );
            }
        }
        if let Some(b) = cells.iter().find(|c| c.target == BASELINE) {
            for m in cells
                .iter()
                .filter(|c| c.kind == PeerKind::Miohttpd && c.target != BASELINE)
            {
                let (mu, ms) = m.runs.cpu_per_k();
                let (bu, bs) = b.runs.cpu_per_k();
                let _ = writeln!(
                    out,
                    "ratio {} / {BASELINE}: req/s {:.3}x, cpu/req {:.3}x (user {:.3}x, sys {:.3}x)",
                    m.target,
                    m.runs.rate() / b.runs.rate(),
                    m.runs.cpu_total_per_k() / b.runs.cpu_total_per_k(),
                    mu / bu,
                    ms / bs,
                );
            }
        }
        let wrk_bound: Vec<&str> = cells
            .iter()
            .filter(|c| c.runs.limit().wrk_bound())
            .map(|c| c.target.as_str())
            .collect();
        if !wrk_bound.is_empty() {
            let _ = writeln!(
                out,
                "note: wrk's core was saturated for {}: there req/s is wrk's ceiling, and CPU per \
                 request is the figure that compares the servers",
                wrk_bound.join(", ")
            );
        }
    }
    out
}

/// The bounds a miohttpd row is held to, per scenario: (scenario, syscalls per request at
/// most, CPU per request at most this times nginx's, req/s at least this times nginx's).
fn bounds(opts: &Options) -> [(Scenario, f64, f64, f64); 2] {
    [
        (Scenario::keep_alive(100), 2.05, 0.8, 1.2),
        (
            Scenario {
                connections: opts.pipeline_connections,
                depth: 16,
            },
            0.2,
            0.25,
            3.0,
        ),
    ]
}

/// Every miohttpd row against the bounds above, and against nginx's syscalls per request at
/// every keep-alive connection count.
fn targets_check(results: &[Cell], opts: &Options) -> String {
    let find =
        |kind: PeerKind, s: Scenario| results.iter().find(|c| c.kind == kind && c.scenario == s);
    let mut targets = Targets::default();
    for (scenario, max_syscalls, max_cpu, min_rate) in bounds(opts) {
        let nginx = find(PeerKind::Nginx, scenario);
        let go = find(PeerKind::Go, scenario);
        for m in results
            .iter()
            .filter(|c| c.kind == PeerKind::Miohttpd && c.scenario == scenario)
        {
            let who = format!("{}, {}", m.target, scenario.label());
            if let Some(sc) = m.runs.syscalls_per_request() {
                targets.check(
                    &format!("{who}: syscalls per request"),
                    sc,
                    Bound::AtMost(max_syscalls),
                    None,
                );
            }
            if let Some(n) = nginx {
                targets.check(
                    &format!("{who}: CPU per request / nginx's"),
                    m.runs.cpu_total_per_k() / n.runs.cpu_total_per_k(),
                    Bound::AtMost(max_cpu),
                    None,
                );
                targets.check(
                    &format!("{who}: req/s / nginx's"),
                    m.runs.rate() / n.runs.rate(),
                    Bound::AtLeast(min_rate),
                    m.runs
                        .limit()
                        .wrk_bound()
                        .then_some("or wrk-limited: it was"),
                );
            }
            if let Some(g) = go {
                targets.check(
                    &format!(
                        "{who}: req/s / Go's (CPU per request {:.2}x Go's)",
                        m.runs.cpu_total_per_k() / g.runs.cpu_total_per_k()
                    ),
                    m.runs.rate() / g.runs.rate(),
                    Bound::AtLeast(1.5),
                    None,
                );
            }
        }
    }
    for m in results
        .iter()
        .filter(|c| c.kind == PeerKind::Miohttpd && c.scenario.depth == 1)
    {
        let nginx = find(PeerKind::Nginx, m.scenario).and_then(|n| n.runs.syscalls_per_request());
        if let Some((sc, n)) = m.runs.syscalls_per_request().zip(nginx) {
            targets.check(
                &format!(
                    "{}, {}: syscalls per request / nginx's",
                    m.target,
                    m.scenario.label()
                ),
                sc / n,
                Bound::AtMost(1.0),
                None,
            );
        }
    }
    targets.render("targets")
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
            |c| Some(c.runs.rate()),
        ),
        (
            "plaintext-syscalls.svg",
            "GET /plaintext, keep-alive: server syscalls per request",
            "syscalls per request",
            |c| c.runs.syscalls_per_request(),
        ),
        (
            "plaintext-cpu.svg",
            "GET /plaintext, keep-alive: server CPU per request (user + sys)",
            "CPU µs per request",
            |c| Some(c.runs.cpu_total_per_k()),
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

/// Under `cargo test`: the routes and framing the benchmark relies on, and the charts.
fn smoke_test() {
    let server = Server::start_with_banner("miohttpd", Command::new(MIOHTTPD), "miohttpd", false);
    check_plaintext(server.addr(), 3, 1).expect("keep-alive GET /plaintext");
    check_plaintext(server.addr(), 32, 16).expect("GET /plaintext pipelined 16 deep");
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
                scenario: Scenario::keep_alive(connections),
                runs: Runs {
                    timed: vec![sample(80_000.0 * k, 2000)],
                    counted: vec![sample(80_000.0 * k, 2050)],
                    profiled: Vec::new(),
                },
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
    let checked = targets_check(&cells, &opts);
    assert!(
        checked.contains("[met] miohttpd, keep-alive, 100 conns: syscalls per request / nginx's"),
        "{checked}"
    );
    println!(
        "plaintext: smoke test ok: keep-alive and 16-deep pipelined GET /plaintext answered, \
         charts render (`cargo bench --bench plaintext` runs the benchmark)"
    );
}
