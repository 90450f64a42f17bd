//! Comet c10k benchmark: N long-poll waiters parked at once, one notify, every answer checked.
//!
//! `cargo bench --bench comet [-- --waiters 10000 --runs 3 --peer nchan|none --addr HOST:PORT
//!  --sweep 1000,2000,5000,10000,19000 --plots DIR|none --workers 1,2 --client-procs K
//!  --bin PATH]`
//!
//! A fresh server per run (miohttpd, then nginx+nchan where installable), pinned to core 1; this
//! driver (one thread, its own mio client) on core 0. Each run: N connections, spread over
//! source addresses 127.0.0.2 and up, each sending the original client's `GET /wait HTTP/1.0`;
//! the count route polled until it reports N; one notify; every waiter must get the body N and
//! then the close. Reported per run: time to connect all, time from the notify to the last
//! answer, the server's user and sys CPU seconds over the run (from /proc, 10 ms resolution),
//! its RSS with N parked and its peak, and RSS per waiter above its idle RSS; then medians.
//! A server that fails a run (nchan at its connection limit, say) is reported and skipped for
//! that N; the others go on.
//!
//! `--sweep` repeats all that for each N in the list and writes server CPU, parked RSS and
//! notify-to-last-answer against N as SVG line charts into `docs/img/` (or `--plots DIR`).
//!
//! `--workers 1,2` runs miohttpd once per worker count, side by side like peers; a server with
//! more than one worker runs on every core (unpinned, and so does the client then), and its
//! CPU and RSS are summed over the supervisor and its workers. `--client-procs K` spreads the
//! waiters over K copies of this driver (`--client-part`), each under its own open-files
//! limit: 100,000 waiters need 6 or more at 20,000 fds a process.
//!
//! `--cross-host` (in `comet/hosts.rs`): miohttpd `--redis` on one host against two, and
//! nginx+nchan with its channel in Redis likewise, on a `redis-server` the driver starts.
//!
//! Under `cargo test` (no `--bench`): 300 waiters against the debug binary, no pinning, no peer;
//! then the cross-host mode with 300 waiters when `redis-server` is installed.

// In a subdirectory so Cargo does not take it for a bench target of its own.
#[path = "comet/hosts.rs"]
mod hosts;

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loadbench::client::exchange;
use loadbench::cpu::{pin_self_to_client_core, process_tree, tree_cpu, tree_memory, CpuTimes};
use loadbench::longpoll::{check_answer, Waiters};
use loadbench::peers::{ensure_nchan, nchan_config, start_nginx};
use loadbench::report::{median, number_list};
use loadbench::server::Server;
use loadbench::svg::{LineChart, Scale, Series};

const MIOHTTPD: &str = env!("CARGO_BIN_EXE_miohttpd");

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// A server whose waiter count stops growing for this long will not reach N: skip it.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);

struct Options {
    waiters: usize,
    runs: usize,
    peer: bool,
    addr: Option<SocketAddr>,
    bench: bool,
    /// Waiter counts to run one after the other; empty for the single `--waiters`.
    sweep: Vec<usize>,
    /// Where the sweep's SVG charts go; `None` for `--plots none`.
    plots: Option<PathBuf>,
    /// miohttpd worker counts, each its own series; `[1]` runs it without `--workers`.
    workers: Vec<usize>,
    /// Client processes the waiters are spread over; 0: as many as the fd limit needs.
    client_procs: usize,
    bin: PathBuf,
    /// Set in a client copy of this driver: its share `FIRST:COUNT` of the waiters.
    client_part: Option<(usize, usize)>,
    /// A client copy's server and the body every answer must have.
    target: Option<SocketAddr>,
    want: String,
    peer_is_nchan: bool,
    /// A client copy's request path (`--wait-path`), when not the default of its server.
    wait_path: Option<String>,
    cross_host: bool,
}

fn parse_args() -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut opts = Options {
        waiters: 0,
        runs: 0,
        peer: true,
        addr: None,
        bench: false,
        sweep: Vec::new(),
        plots: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img")),
        workers: vec![1],
        client_procs: 0,
        bin: std::env::var_os("MIOHTTPD_BIN").map_or(PathBuf::from(MIOHTTPD), PathBuf::from),
        client_part: None,
        target: None,
        want: String::new(),
        peer_is_nchan: false,
        wait_path: None,
        cross_host: false,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("waiters") => opts.waiters = parser.value()?.parse()?,
            Long("runs") => opts.runs = parser.value()?.parse()?,
            Long("peer") => opts.peer = parser.value()?.string()? != "none",
            Long("addr") => opts.addr = Some(parser.value()?.parse()?),
            Long("bench") => opts.bench = true,
            Long("sweep") => {
                opts.sweep = number_list(&parser.value()?.string()?)?;
            }
            Long("plots") => {
                let dir = parser.value()?;
                opts.plots = (dir != "none").then(|| PathBuf::from(dir));
            }
            Long("workers") => opts.workers = number_list(&parser.value()?.string()?)?,
            Long("client-procs") => opts.client_procs = parser.value()?.parse()?,
            Long("bin") => opts.bin = parser.value()?.into(),
            Long("client-part") => {
                let part = parser.value()?.string()?;
                let (first, count) = part.split_once(':').ok_or("--client-part FIRST:COUNT")?;
                let number = |t: &str| t.parse::<usize>().map_err(|e| e.to_string());
                opts.client_part = Some((number(first)?, number(count)?));
            }
            Long("target") => opts.target = Some(parser.value()?.parse()?),
            Long("want") => opts.want = parser.value()?.string()?,
            Long("nchan") => opts.peer_is_nchan = parser.value()? == "yes",
            Long("wait-path") => opts.wait_path = Some(parser.value()?.string()?),
            Long("cross-host") => opts.cross_host = true,
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
    let (waiters, runs) = if opts.bench { (10_000, 3) } else { (300, 1) };
    if opts.waiters == 0 {
        opts.waiters = waiters;
    }
    opts.runs = if opts.runs == 0 { runs } else { opts.runs };
    Ok(opts)
}

const HELP: &str = "\
cargo bench --bench comet [-- FLAGS]

N long-poll waiters parked at once, one notify, every answer checked; miohttpd beside
nginx+nchan (one worker), each pinned to core 1, this driver on core 0.

  --waiters N        parked waiters per run [default: 10000; 300 under cargo test]
  --runs R           runs per server (and per N in a sweep), interleaved [default: 3]
  --peer nchan|none  run nginx+nchan beside miohttpd (installs nginx-light and
                     libnginx-mod-nchan with apt-get when missing) [default: nchan]
  --addr HOST:PORT   drive a miohttpd you started instead (timings only, no CPU or RSS)
  --sweep N,N,...    run every N in the list, e.g. 1000,2000,5000,10000,19000, and write
                     server CPU, parked RSS and notify->last against N as SVG charts
  --plots DIR|none   where the sweep's charts go [default: docs/img]
  --workers N,N,...  run miohttpd once per worker count (--workers N), side by side; more
                     than one worker runs unpinned on every core [default: 1]
  --client-procs K   spread the waiters over K client processes [default: as many as the
                     open-files limit needs, leaving 64 fds each]
  --bin PATH         the miohttpd to run [default: $MIOHTTPD_BIN, else this build's]
  --cross-host       across hosts on one redis-server (started here, stopped by PID):
                     miohttpd --redis on 1 host (N waiters) and 2 hosts (N/2 each), and
                     nginx+nchan with nchan_use_redis likewise (--peer none leaves it out);
                     publish to last answer, CPU per host, Redis CPU; writes comet-hosts.svg
  -h, --help         this text

Each client process stays under the open-files limit (the driver raises its soft limit to
the hard one); N above it needs several client processes, which --client-procs 0 picks.";

fn main() {
    let opts = parse_args().unwrap_or_else(|e| {
        eprintln!("comet: {e}");
        std::process::exit(2);
    });
    if let Some((first, count)) = opts.client_part {
        return client_part(&opts, first, count);
    }
    if opts.cross_host {
        let _ = miohttpd::sys::raise_open_files_limit();
        assert!(
            hosts::run(&opts),
            "comet: miohttpd failed a cross-host run (see above)"
        );
        return;
    }
    // Several workers need every core: then nobody is pinned, the client included.
    let one_core_each = opts.workers.iter().all(|&w| w <= 1);
    let pinned = opts.bench && one_core_each && pin_self_to_client_core("comet");
    let fd_limit = miohttpd::sys::raise_open_files_limit().unwrap_or(1024) as usize;
    let points = if opts.sweep.is_empty() {
        vec![opts.waiters]
    } else {
        opts.sweep.clone()
    };
    let most = points.iter().copied().max().unwrap_or(0);
    let per_process = fd_limit.saturating_sub(64).max(1);
    let clients = if opts.client_procs > 0 {
        opts.client_procs
    } else {
        most.div_ceil(per_process).max(1)
    };
    assert!(
        most.div_ceil(clients) <= per_process,
        "{most} waiters over {clients} client process(es) need more open files than the limit {fd_limit} (ulimit -Hn)"
    );
    println!(
        "comet: {} waiters, {} run(s) each, {clients} client process(es), open-files limit {fd_limit}, {}",
        points
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        opts.runs,
        loadbench::report::host_summary()
    );

    if let Some(addr) = opts.addr {
        for &n in &points {
            for run in 1..=opts.runs {
                match run_once(
                    &Peer::Miohttpd { workers: 1 },
                    addr,
                    None,
                    n,
                    &opts,
                    clients,
                ) {
                    Ok(result) => {
                        println!("comet: {addr} {n} waiters run {run}: {}", result.line())
                    }
                    Err(e) => panic!("comet: {addr} {n} waiters run {run}: {e}"),
                }
            }
        }
        return;
    }
    let mut peers: Vec<Peer> = opts
        .workers
        .iter()
        .map(|&workers| Peer::Miohttpd { workers })
        .collect();
    if opts.bench && opts.peer {
        match ensure_nchan("comet") {
            Ok(()) => peers.push(Peer::Nchan),
            Err(why) => println!("comet: nginx+nchan peer skipped: {why}"),
        }
    }
    let mut sweep: Vec<(usize, Table)> = Vec::new();
    let mut miohttpd_failed = false;
    for &n in &points {
        let mut table = Table::default();
        // Interleaved, so the machine's moods spread over both servers.
        for run in 1..=opts.runs {
            for peer in &peers {
                let name = &peer.name();
                if table.failed(name) {
                    continue;
                }
                let server = peer.start(pinned, &opts.bin);
                // miohttpd's CPU and RSS are its whole tree (supervisor and workers); nginx's
                // are its one worker's, as before.
                let pid = match peer {
                    Peer::Miohttpd { .. } => server.pid(),
                    Peer::Nchan => server.worker_pid(),
                };
                match run_once(peer, server.addr(), Some(pid), n, &opts, clients) {
                    Ok(result) => {
                        println!(
                            "comet: {name} {n} waiters run {run}/{}: {}",
                            opts.runs,
                            result.line()
                        );
                        table.push(name, Ok(result));
                    }
                    Err(why) => {
                        println!("comet: {name} {n} waiters run {run}/{}: FAILED, skipped at this N: {why}", opts.runs);
                        miohttpd_failed |= matches!(peer, Peer::Miohttpd { .. });
                        table.push(name, Err(why));
                    }
                }
            }
        }
        print!("{}", report(n, &table));
        sweep.push((n, table));
    }
    if sweep.len() > 1 {
        print!("{}", sweep_summary(&sweep));
        if let Some(dir) = &opts.plots {
            write_plots(dir, &sweep, opts.runs);
        }
    }
    // A peer may fail at its limits; miohttpd may not.
    assert!(!miohttpd_failed, "comet: miohttpd failed a run (see above)");
    // The smoke test covers the cross-host mode too, where scripts/test.sh put redis-server.
    if !opts.bench && loadbench::peers::have_command("redis-server", "--version") {
        assert!(
            hosts::run(&opts),
            "comet: miohttpd failed a cross-host run (see above)"
        );
    }
}

/// Each server's results at one N, in the order the servers first ran; a failed run ends that
/// server's series at this N.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<RunResult>, Option<String>)>,
}

impl Table {
    fn push(&mut self, name: &str, result: Result<RunResult, String>) {
        let at = match self.rows.iter().position(|(n, _, _)| n == name) {
            Some(at) => at,
            None => {
                self.rows.push((name.to_string(), Vec::new(), None));
                self.rows.len() - 1
            }
        };
        match result {
            Ok(r) => self.rows[at].1.push(r),
            Err(why) => self.rows[at].2 = Some(why),
        }
    }

    fn failed(&self, name: &str) -> bool {
        self.rows
            .iter()
            .any(|(n, _, failure)| n == name && failure.is_some())
    }

    /// The median of `f` over a server's runs, if it completed any without a failure.
    fn median_of(&self, name: &str, f: impl Fn(&RunResult) -> f64) -> Option<f64> {
        let (_, results, failure) = self.rows.iter().find(|(n, _, _)| n == name)?;
        if failure.is_some() || results.is_empty() {
            return None;
        }
        Some(median(&results.iter().map(f).collect::<Vec<_>>()))
    }
}

/// A server under test and how to speak its dialect of the workload.
enum Peer {
    /// `--workers N` when N > 1.
    Miohttpd { workers: usize },
    /// nginx with the nchan module: longpoll subscribers on `/sub`, publisher on `/pub`.
    Nchan,
}

impl Peer {
    fn name(&self) -> String {
        match self {
            Peer::Miohttpd { workers: 1 } => "miohttpd".into(),
            Peer::Miohttpd { workers } => format!("miohttpd x{workers}"),
            Peer::Nchan => "nginx+nchan".into(),
        }
    }

    fn start(&self, pin: bool, bin: &Path) -> Server {
        match *self {
            Peer::Miohttpd { workers } => {
                let mut cmd = Command::new(bin);
                if workers > 1 {
                    cmd.arg("--workers").arg(workers.to_string());
                }
                Server::start_with_banner(&self.name(), cmd, "miohttpd", pin && workers <= 1)
            }
            Peer::Nchan => start_nginx(
                &self.name(),
                Path::new(env!("CARGO_TARGET_TMPDIR")),
                nchan_config,
                pin,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", self.name())),
        }
    }

    fn wait_request(&self) -> &'static [u8] {
        match self {
            Peer::Miohttpd { .. } => b"GET /wait HTTP/1.0\r\n\r\n",
            Peer::Nchan => b"GET /sub HTTP/1.0\r\n\r\n",
        }
    }

    /// The number of waiters the server holds now.
    fn parked(&self, addr: SocketAddr) -> io::Result<usize> {
        let count = match self {
            Peer::Miohttpd { .. } => exchange(addr, b"GET / HTTP/1.0\r\n\r\n")?
                .trim()
                .parse()
                .ok(),
            // nchan's publisher location describes the channel on GET.
            Peer::Nchan => exchange(addr, b"GET /pub HTTP/1.0\r\nAccept: text/plain\r\n\r\n")?
                .lines()
                .find_map(|l| l.trim().strip_prefix("active subscribers:"))
                .and_then(|n| n.trim().parse().ok()),
        };
        Ok(count.unwrap_or(0))
    }

    /// Publishes the message the waiters must receive: the count itself.
    fn notify(&self, addr: SocketAddr, waiters: usize) -> io::Result<String> {
        match self {
            Peer::Miohttpd { .. } => exchange(addr, b"GET /notify HTTP/1.0\r\n\r\n"),
            Peer::Nchan => {
                let body = waiters.to_string();
                let request = format!(
                    "POST /pub HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                exchange(addr, request.as_bytes())
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct RunResult {
    connect: Duration,
    notify_to_last: Duration,
    cpu: CpuTimes,
    /// Server and driver CPU from the notify to the last answer: who the fan-out waited on.
    notify_cpu: CpuTimes,
    driver_notify_cpu: CpuTimes,
    idle_rss: u64,
    parked_rss: u64,
    peak_rss: u64,
    waiters: usize,
}

impl RunResult {
    fn rss_per_waiter(&self) -> f64 {
        self.parked_rss.saturating_sub(self.idle_rss) as f64 / self.waiters as f64
    }

    /// All of the server's RSS with N parked (every process), per waiter: idle included.
    fn rss_total_per_waiter(&self) -> f64 {
        self.parked_rss as f64 / self.waiters as f64
    }

    fn line(&self) -> String {
        format!(
            "connect {:.3} s, notify->last {:.3} s (server cpu {:.2} s, driver cpu {:.2} s), \
             cpu user {:.2} s sys {:.2} s, rss parked {:.1} MB (peak {:.1} MB), \
             {:.0} B/waiter above idle ({:.0} B/waiter in all)",
            self.connect.as_secs_f64(),
            self.notify_to_last.as_secs_f64(),
            self.notify_cpu.total().as_secs_f64(),
            self.driver_notify_cpu.total().as_secs_f64(),
            self.cpu.user.as_secs_f64(),
            self.cpu.sys.as_secs_f64(),
            self.parked_rss as f64 / 1e6,
            self.peak_rss as f64 / 1e6,
            self.rss_per_waiter(),
            self.rss_total_per_waiter(),
        )
    }
}

/// One full run against a server at `addr` (`pid` known when this driver started it: its
/// process tree is measured). Any failure (a connect refused, a count that stalls below N, a
/// wrong or missing answer) is the error, so a peer at its limits can be skipped instead of
/// ending the whole bench.
fn run_once(
    peer: &Peer,
    addr: SocketAddr,
    pid: Option<u32>,
    n: usize,
    opts: &Options,
    clients: usize,
) -> Result<RunResult, String> {
    let mut result = RunResult {
        waiters: n,
        ..RunResult::default()
    };
    // Idle means serving: every worker up (a supervisor prints its banner before they are)
    // and one request answered.
    if let (&Peer::Miohttpd { workers }, Some(pid)) = (peer, pid) {
        let deadline = Instant::now() + STALL_TIMEOUT;
        while process_tree(pid).len() < workers + usize::from(workers > 1) {
            if Instant::now() > deadline {
                return Err(format!("fewer than {workers} workers under {pid}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    peer.parked(addr).map_err(|e| format!("first count: {e}"))?;
    let cpu_start = pid.map(tree_cpu).unwrap_or_default();
    result.idle_rss = pid.map_or(0, |p| tree_memory(p).rss);

    let started = Instant::now();
    let mut waiters = if clients <= 1 {
        Clients::Here(Waiters::connect(addr, n, peer.wait_request(), RUN_TIMEOUT)?)
    } else {
        Clients::spawn(opts, addr, n, clients, peer)?
    };
    result.connect = started.elapsed();

    // The server counts them all as parked before the notify goes out. A count that stops
    // growing below N means the server dropped some (nchan at its connection limit).
    let mut best = 0;
    let mut progress_at = Instant::now();
    loop {
        match peer.parked(addr) {
            Ok(count) if count >= n => break,
            Ok(count) if count > best => {
                best = count;
                progress_at = Instant::now();
            }
            _ => {}
        }
        if progress_at.elapsed() > STALL_TIMEOUT {
            return Err(format!(
                "the server counted {best} of {n} waiters and stopped growing for {STALL_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    result.parked_rss = pid.map_or(0, |p| tree_memory(p).rss);

    let cpu_before_notify = pid.map(tree_cpu).unwrap_or_default();
    let driver_before_notify = waiters.cpu();
    let notified = SystemTime::now();
    let notify_body = peer.notify(addr, n).map_err(|e| format!("notify: {e}"))?;
    let want = n.to_string();
    if matches!(peer, Peer::Miohttpd { .. }) && notify_body.trim() != want {
        return Err(format!("the notifier got {notify_body:?}, want {want}"));
    }
    let last_answer = waiters.answers(&want)?;
    result.notify_to_last = last_answer.duration_since(notified).unwrap_or_default();
    result.driver_notify_cpu = waiters.cpu().since(driver_before_notify);
    if let Some(pid) = pid {
        result.notify_cpu = tree_cpu(pid).since(cpu_before_notify);
        result.cpu = tree_cpu(pid).since(cpu_start);
        result.peak_rss = tree_memory(pid).peak;
    }
    waiters.finish();
    Ok(result)
}

/// The waiters of one run: in this process, or spread over copies of it.
enum Clients {
    Here(Waiters),
    /// Each copy has sent its share of the requests (it said `connected`).
    Processes(Vec<(Child, BufReader<ChildStdout>)>),
}

impl Clients {
    /// `clients` copies of this driver, each with its share of the `n` waiters, started one
    /// after the other (their connects go out together); returns once all are connected.
    fn spawn(
        opts: &Options,
        addr: SocketAddr,
        n: usize,
        clients: usize,
        peer: &Peer,
    ) -> Result<Clients, String> {
        let share = n.div_ceil(clients);
        let parts: Vec<(SocketAddr, usize, usize)> = (0..clients)
            .map(|k| (addr, k * share, share.min(n - (k * share).min(n))))
            .filter(|&(_, _, count)| count > 0)
            .collect();
        let path = match peer {
            Peer::Nchan => "/sub",
            Peer::Miohttpd { .. } => "/wait",
        };
        Clients::spawn_parts(opts, &parts, n, path)
    }

    /// One copy of this driver per part `(server, first, count)`, each parking its `count`
    /// waiters on `wait_path` of its server (every answer's body must be `n`); returns once
    /// all are connected.
    fn spawn_parts(
        opts: &Options,
        parts: &[(SocketAddr, usize, usize)],
        n: usize,
        wait_path: &str,
    ) -> Result<Clients, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut children = Vec::new();
        for (k, &(addr, first, count)) in parts.iter().enumerate() {
            let mut cmd = Command::new(&exe);
            cmd.arg("--client-part")
                .arg(format!("{first}:{count}"))
                .arg("--target")
                .arg(addr.to_string())
                .arg("--want")
                .arg(n.to_string())
                .arg("--wait-path")
                .arg(wait_path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            if opts.bench {
                cmd.arg("--bench");
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot start client {k}: {e}"))?;
            let out = BufReader::new(child.stdout.take().expect("piped"));
            children.push((child, out));
        }
        let mut clients = Clients::Processes(children);
        if let Clients::Processes(children) = &mut clients {
            for (child, out) in children.iter_mut() {
                let line = read_line(out);
                if line.trim() != "connected" {
                    return Err(format!("client {}: {}", child.id(), line.trim()));
                }
            }
        }
        Ok(clients)
    }

    /// The client side's CPU: this process, or the sum over the copies.
    fn cpu(&self) -> CpuTimes {
        match self {
            Clients::Here(_) => CpuTimes::of(std::process::id()),
            Clients::Processes(children) => children
                .iter()
                .map(|(c, _)| CpuTimes::of(c.id()))
                .fold(CpuTimes::default(), |a, b| CpuTimes {
                    user: a.user + b.user,
                    sys: a.sys + b.sys,
                }),
        }
    }

    /// Every answer read and checked; the wall-clock time of the last one.
    fn answers(&mut self, want: &str) -> Result<SystemTime, String> {
        match self {
            Clients::Here(waiters) => {
                let last = waiters.answers(RUN_TIMEOUT, |i, r| check_answer(i, r, want))?;
                Ok(SystemTime::now() - last.elapsed())
            }
            Clients::Processes(children) => {
                let mut latest = UNIX_EPOCH;
                for (child, out) in children.iter_mut() {
                    let line = read_line(out);
                    let nanos = line
                        .trim()
                        .strip_prefix("answered ")
                        .and_then(|t| t.parse::<u64>().ok())
                        .ok_or_else(|| format!("client {}: {}", child.id(), line.trim()))?;
                    latest = latest.max(UNIX_EPOCH + Duration::from_nanos(nanos));
                }
                Ok(latest)
            }
        }
    }

    /// Client copies reaped (each exits after its last answer); killed by PID if one hangs.
    fn finish(mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        if let Clients::Processes(children) = self {
            for (child, _) in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            children.clear();
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.reap();
    }
}

/// One line from a client copy; its death reads as an empty line.
fn read_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    match out.read_line(&mut line) {
        Ok(0) | Err(_) => "exited without a word".into(),
        Ok(_) => line,
    }
}

/// A client copy (`--client-part FIRST:COUNT`): connects its waiters, says `connected`, reads
/// every answer (each must be `--want`), says `answered UNIX_NANOS` of its last one, exits.
fn client_part(opts: &Options, first: usize, count: usize) {
    let _ = miohttpd::sys::raise_open_files_limit();
    let addr = opts.target.expect("--client-part needs --target");
    let request = match &opts.wait_path {
        Some(path) => format!("GET {path} HTTP/1.0\r\n\r\n").into_bytes(),
        None if opts.peer_is_nchan => Peer::Nchan.wait_request().to_vec(),
        None => Peer::Miohttpd { workers: 1 }.wait_request().to_vec(),
    };
    let request = request.as_slice();
    let mut out = io::stdout();
    let mut waiters = match Waiters::connect_range(addr, first, count, request, RUN_TIMEOUT) {
        Ok(w) => w,
        Err(e) => {
            let _ = writeln!(out, "error {e}");
            std::process::exit(1);
        }
    };
    let _ = writeln!(out, "connected");
    let _ = out.flush();
    let want = opts.want.clone();
    match waiters.answers(RUN_TIMEOUT, |i, r| check_answer(first + i, r, &want)) {
        Ok(last) => {
            let at = SystemTime::now() - last.elapsed();
            let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
            let _ = writeln!(out, "answered {nanos}");
        }
        Err(e) => {
            let _ = writeln!(out, "error {e}");
        }
    }
    let _ = out.flush();
}

fn report(waiters: usize, table: &Table) -> String {
    let mut out = format!(
        "\n{waiters} waiters, medians over runs\n{:<14} {:>10} {:>14} {:>9} {:>9} {:>10} {:>10} {:>11} {:>12} {:>12}\n",
        "server", "connect s", "notify->last s", "user s", "sys s", "user/sys", "cpu s", "peak MB", "B/waiter", "B/w in all"
    );
    for (name, _, failure) in &table.rows {
        if let Some(why) = failure {
            out.push_str(&format!("{name:<14} skipped at {waiters}: {why}\n"));
            continue;
        }
        let med = |f: &dyn Fn(&RunResult) -> f64| table.median_of(name, f).unwrap_or(f64::NAN);
        let user = med(&|r| r.cpu.user.as_secs_f64());
        let sys = med(&|r| r.cpu.sys.as_secs_f64());
        out.push_str(&format!(
            "{name:<14} {:>10.3} {:>14.3} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>11.1} {:>12.0} {:>12.0}\n",
            med(&|r| r.connect.as_secs_f64()),
            med(&|r| r.notify_to_last.as_secs_f64()),
            user,
            sys,
            user / sys.max(0.01),
            med(&|r| r.cpu.total().as_secs_f64()),
            med(&|r| r.peak_rss as f64 / 1e6),
            med(&|r| r.rss_per_waiter()),
            med(&|r| r.rss_total_per_waiter()),
        ));
    }
    out
}

/// What a sweep plots, one row per N and server: (label, unit, how to read it off a run).
type Measure = (&'static str, &'static str, fn(&RunResult) -> f64);
const SWEEP_MEASURES: [Measure; 3] = [
    ("server CPU over the run", "s", |r| {
        r.cpu.total().as_secs_f64()
    }),
    ("RSS with N parked", "MB", |r| r.parked_rss as f64 / 1e6),
    ("notify -> last answer", "s", |r| {
        r.notify_to_last.as_secs_f64()
    }),
];

fn sweep_summary(sweep: &[(usize, Table)]) -> String {
    let names = server_names(sweep);
    let mut out = String::from("\nsweep, medians per N\n");
    for (label, unit, f) in SWEEP_MEASURES {
        out.push_str(&format!("{:<28}", format!("{label} ({unit})")));
        for name in &names {
            out.push_str(&format!(" {name:>14}"));
        }
        out.push('\n');
        for (n, table) in sweep {
            out.push_str(&format!("{:<28}", format!("  {n} waiters")));
            for name in &names {
                let cell = table
                    .median_of(name, f)
                    .map_or("skipped".to_string(), |v| format!("{v:.3}"));
                out.push_str(&format!(" {cell:>14}"));
            }
            out.push('\n');
        }
    }
    out
}

fn server_names(sweep: &[(usize, Table)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (_, table) in sweep {
        for (name, _, _) in &table.rows {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// `comet-cpu.svg`, `comet-rss.svg` and `comet-notify.svg`: one line per server over N.
fn write_plots(dir: &Path, sweep: &[(usize, Table)], runs: usize) {
    let names = server_names(sweep);
    let files = ["comet-cpu.svg", "comet-rss.svg", "comet-notify.svg"];
    let titles = [
        "Comet: server CPU for one run (connect all, park, notify, close)",
        "Comet: server RSS with N waiters parked",
        "Comet: from the notify to the last waiter's answer",
    ];
    for ((file, title), (label, unit, f)) in files.iter().zip(titles).zip(SWEEP_MEASURES) {
        let chart = LineChart {
            title: title.to_string(),
            note: format!(
                "cargo bench --bench comet -- --sweep; median of {runs} run(s); server on core 1, one worker"
            ),
            x_label: "parked waiters (N)".into(),
            y_label: format!("{label} ({unit})"),
            x_scale: Scale::Linear,
            series: names
                .iter()
                .map(|name| Series {
                    name: name.clone(),
                    points: sweep
                        .iter()
                        .filter_map(|(n, table)| Some((*n as f64, table.median_of(name, f)?)))
                        .collect(),
                })
                .collect(),
        };
        let path = dir.join(file);
        match chart.write(&path) {
            Ok(()) => println!("comet: wrote {}", path.display()),
            Err(e) => eprintln!("comet: cannot write {}: {e}", path.display()),
        }
    }
}
