//! Scaling benchmark: `GET /plaintext` under wrk for miohttpd `--workers 1, 2, 4, ...` up to
//! the cores this driver may use, nginx with the same worker counts beside it, keep-alive and
//! pipelined, each accept model (miohttpd `--accept-model reuseport|shared`; nginx `listen ...
//! reuseport` or one shared socket), interleaved in one run. One command on any machine:
//! `cargo bench --bench scaling` (`-- --help` for the flags).
//!
//! Cores: with W workers on C allowed cores and W < C, the servers get the last W cores (one
//! worker pinned to each: miohttpd `--worker-cpu-affinity LIST`, nginx `worker_cpu_affinity`)
//! and wrk the first C - W, one thread per core; with W >= C nothing is pinned and wrk shares
//! the cores with the workers, so the row measures the machine, not the server (the report
//! says so). CPU per request is the server's whole process tree (master or supervisor and its
//! workers) over the run, from /proc.
//!
//! Under `cargo test` (no `--bench`): the debug binary answers keep-alive and pipelined
//! requests, with `--workers 2` too when its `--help` lists the flag; no wrk, no nginx.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use loadbench::client::check_plaintext;
use loadbench::cpu::{allowed_cores, core_list};
use loadbench::peers::{ensure_nginx, nginx_plaintext_config_with, start_nginx, NginxAccept};
use loadbench::report::{host_summary, number_list, today};
use loadbench::server::Server;
use loadbench::svg::{LineChart, Scale, Series};
use loadbench::wrk::{self, ensure_wrk, Load, Runs, Watch};

const MIOHTTPD: &str = env!("CARGO_BIN_EXE_miohttpd");
const SCRATCH: &str = env!("CARGO_TARGET_TMPDIR");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const PIPELINE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pipeline.lua");

const HELP: &str = "\
cargo bench --bench scaling [-- FLAGS]

GET /plaintext under wrk: miohttpd --workers W and nginx with W workers, for W in 1, 2, 4, ...
up to the cores this process may use; keep-alive and pipelined; each accept model. Servers on
the last W cores (a worker pinned to each), wrk on the others; with W >= cores nothing is
pinned. Installs wrk and nginx-light with apt-get when missing.

  --workers N,N,...          worker counts [default: 1, 2, 4, ... up to the allowed cores]
  --accept LIST              accept models, from reuseport,shared [default: both]
  --peers LIST               servers, from miohttpd,nginx [default: both]
  --runs N                   timed runs per cell, interleaved [default: 2]
  --duration SECS            length of each wrk run [default: 5]
  --connections-per-worker N keep-alive and pipelined connections per worker, at least one
                             per wrk thread [default: 64]
  --pipeline DEPTH           requests per write in the pipelined scenario; 0: none [default: 16]
  --bin PATH                 the miohttpd to run [default: $MIOHTTPD_BIN, else this build's]
  --plots DIR|none           where the SVG charts go [default: docs/img]
  -h, --help                 this text";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Miohttpd,
    Nginx,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Miohttpd => "miohttpd",
            Kind::Nginx => "nginx",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    Reuseport,
    Shared,
}

impl Accept {
    fn name(self) -> &'static str {
        match self {
            Accept::Reuseport => "reuseport",
            Accept::Shared => "shared",
        }
    }
}

struct Options {
    workers: Vec<usize>,
    accept: Vec<Accept>,
    peers: Vec<Kind>,
    runs: usize,
    duration: u64,
    per_worker: usize,
    pipeline: usize,
    bin: PathBuf,
    plots: Option<PathBuf>,
    bench: bool,
}

fn parse_args() -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let cores = allowed_cores().len();
    let mut opts = Options {
        workers: std::iter::successors(Some(1), |w| Some(w * 2))
            .take_while(|&w| w <= cores)
            .collect(),
        accept: vec![Accept::Reuseport, Accept::Shared],
        peers: vec![Kind::Miohttpd, Kind::Nginx],
        runs: 2,
        duration: 5,
        per_worker: 64,
        pipeline: 16,
        bin: std::env::var_os("MIOHTTPD_BIN").map_or(PathBuf::from(MIOHTTPD), PathBuf::from),
        plots: Some(Path::new(MANIFEST_DIR).join("docs/img")),
        bench: false,
    };
    if !opts.workers.contains(&cores) {
        opts.workers.push(cores);
    }
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("workers") => opts.workers = number_list(&parser.value()?.string()?)?,
            Long("accept") => {
                opts.accept = parser
                    .value()?
                    .string()?
                    .split(',')
                    .map(|a| match a.trim() {
                        "reuseport" => Ok(Accept::Reuseport),
                        "shared" => Ok(Accept::Shared),
                        other => Err(format!("unknown accept model {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            Long("peers") => {
                opts.peers = parser
                    .value()?
                    .string()?
                    .split(',')
                    .map(|p| match p.trim() {
                        "miohttpd" => Ok(Kind::Miohttpd),
                        "nginx" => Ok(Kind::Nginx),
                        other => Err(format!("unknown peer {other:?} (miohttpd, nginx)")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            Long("runs") => opts.runs = parser.value()?.parse::<usize>()?.max(1),
            Long("duration") => opts.duration = parser.value()?.parse::<u64>()?.max(1),
            Long("connections-per-worker") => opts.per_worker = parser.value()?.parse()?,
            Long("pipeline") => opts.pipeline = parser.value()?.parse()?,
            Long("bin") => opts.bin = parser.value()?.into(),
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
        eprintln!("scaling: {e}");
        std::process::exit(2);
    });
    if !opts.bench {
        return smoke_test(&opts.bin);
    }
    if let Err(e) = bench(&opts) {
        eprintln!("scaling: {e}");
        std::process::exit(1);
    }
}

/// Which cores the servers and wrk get for `workers` workers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    /// One core per worker; `None`: nothing pinned (too few cores to keep wrk apart).
    server: Option<Vec<usize>>,
    wrk: Option<Vec<usize>>,
    wrk_threads: usize,
}

fn layout(cores: &[usize], workers: usize) -> Layout {
    if workers < cores.len() {
        let (wrk, server) = cores.split_at(cores.len() - workers);
        Layout {
            server: Some(server.to_vec()),
            wrk: Some(wrk.to_vec()),
            wrk_threads: wrk.len(),
        }
    } else {
        Layout {
            server: None,
            wrk: None,
            wrk_threads: cores.len().max(2) / 2,
        }
    }
}

impl Layout {
    fn describe(&self) -> String {
        match (&self.server, &self.wrk) {
            (Some(s), Some(w)) => {
                format!("server cores {}, wrk cores {}", core_list(s), core_list(w))
            }
            _ => "unpinned: wrk shares the cores with the workers".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scenario {
    depth: usize,
}

impl Scenario {
    fn label(self) -> String {
        if self.depth > 1 {
            format!("pipelined x{}", self.depth)
        } else {
            "keep-alive".into()
        }
    }
}

/// One server configuration at one worker count, and its runs per scenario.
struct Cell {
    kind: Kind,
    accept: Accept,
    workers: usize,
    layout: Layout,
    runs: Vec<(Scenario, Runs)>,
}

impl Cell {
    fn name(&self) -> String {
        format!("{} {}", self.kind.name(), self.accept.name())
    }

    fn runs(&self, scenario: Scenario) -> Option<&Runs> {
        self.runs
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, r)| r)
    }
}

fn start(
    kind: Kind,
    accept: Accept,
    workers: usize,
    layout: &Layout,
    bin: &Path,
) -> Result<Server, String> {
    let cores = layout.server.as_deref();
    let taskset = |cmd: Command| match cores {
        Some(c) => loadbench::cpu::pinned_to(&core_list(c), cmd, true),
        None => cmd,
    };
    match kind {
        Kind::Miohttpd => {
            let mut cmd = Command::new(bin);
            cmd.args(["--workers", &workers.to_string()])
                .args(["--accept-model", accept.name()]);
            if let Some(c) = cores {
                cmd.args(["--worker-cpu-affinity", &core_list(c)]);
            }
            let name = format!("miohttpd x{workers} {}", accept.name());
            // The taskset is ours; Server's own pin (core 1) is for one-core layouts.
            Ok(Server::start_with_banner(
                &name,
                taskset(cmd),
                "miohttpd",
                false,
            ))
        }
        Kind::Nginx => {
            let model = match accept {
                Accept::Reuseport => NginxAccept::Reuseport,
                Accept::Shared => NginxAccept::Shared,
            };
            let name = format!("nginx x{workers} {}", accept.name());
            // nginx pins its own workers (worker_cpu_affinity); its master may run anywhere.
            start_nginx(
                &name,
                Path::new(SCRATCH),
                |addr, dir| nginx_plaintext_config_with(addr, dir, workers, model, cores),
                false,
            )
        }
    }
}

fn bench(opts: &Options) -> Result<(), String> {
    let cores = allowed_cores();
    let scratch = Path::new(SCRATCH);
    let _ = miohttpd::sys::raise_open_files_limit();
    ensure_wrk("scaling")?;
    if opts.peers.contains(&Kind::Nginx) {
        ensure_nginx("scaling")?;
    }
    let mut scenarios = vec![Scenario { depth: 1 }];
    if opts.pipeline > 1 {
        scenarios.push(Scenario {
            depth: opts.pipeline,
        });
    }
    let date = today();
    println!(
        "scaling: {date} on {}; allowed cores {}; workers {:?}; {} run(s) of {} s per cell",
        host_summary(),
        core_list(&cores),
        opts.workers,
        opts.runs,
        opts.duration
    );
    let mut cells: Vec<Cell> = Vec::new();
    for &workers in &opts.workers {
        let layout = layout(&cores, workers);
        let connections = (opts.per_worker * workers).max(layout.wrk_threads);
        println!(
            "scaling: {workers} worker(s): {}, wrk -t{} -c{connections}",
            layout.describe(),
            layout.wrk_threads
        );
        let mut servers = Vec::new();
        for &kind in &opts.peers {
            for &accept in &opts.accept {
                let server = start(kind, accept, workers, &layout, &opts.bin)?;
                check_plaintext(server.addr(), 2, 1)
                    .map_err(|e| format!("{}: {e}", server.name))?;
                servers.push((kind, accept, server));
            }
        }
        for (kind, accept, server) in &servers {
            // Warm-up: first faults, every worker's tables; not measured.
            let warm = load(server, &layout, connections, 1, Scenario { depth: 1 });
            wrk::measure(
                &warm,
                server.pid(),
                layout.wrk.is_some(),
                Watch::Nothing,
                scratch,
            )?;
            cells.push(Cell {
                kind: *kind,
                accept: *accept,
                workers,
                layout: layout.clone(),
                runs: scenarios.iter().map(|&s| (s, Runs::default())).collect(),
            });
        }
        let first = cells.len() - servers.len();
        for round in 0..opts.runs {
            for &scenario in &scenarios {
                for k in 0..servers.len() {
                    let at = (round + k) % servers.len();
                    let (_, _, server) = &servers[at];
                    let l = load(server, &layout, connections, opts.duration, scenario);
                    let sample = wrk::measure(
                        &l,
                        server.pid(),
                        layout.wrk.is_some(),
                        Watch::Nothing,
                        scratch,
                    )?;
                    println!(
                        "scaling: run {}/{} {:<26} {:<14} {}",
                        round + 1,
                        opts.runs,
                        server.name,
                        scenario.label(),
                        sample.line()
                    );
                    let cell = &mut cells[first + at];
                    let runs = &mut cell
                        .runs
                        .iter_mut()
                        .find(|(s, _)| *s == scenario)
                        .expect("scenario")
                        .1;
                    runs.push(Watch::Nothing, sample);
                }
            }
        }
    }
    println!("scaling: done; {}", host_summary());
    print!("{}", report(&cells, &scenarios, opts));
    if let Some(dir) = &opts.plots {
        write_plots(dir, &cells, &scenarios, opts, &date);
    }
    Ok(())
}

fn load(
    server: &Server,
    layout: &Layout,
    connections: usize,
    seconds: u64,
    scenario: Scenario,
) -> Load<'static> {
    Load {
        url: format!("http://{}/plaintext", server.addr()),
        threads: layout.wrk_threads,
        connections,
        seconds,
        script: (scenario.depth > 1)
            .then(|| (Path::new(PIPELINE_SCRIPT), vec![scenario.depth.to_string()])),
        cores: layout.wrk.as_deref().map(core_list),
    }
}

fn report(cells: &[Cell], scenarios: &[Scenario], opts: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmedians of {} run(s) of {} s; CPU is the server's whole process tree in µs per request; \
         busy: share of one core (200% = two cores); ratio: req/s and CPU per request against \
         nginx with the same workers and accept model",
        opts.runs, opts.duration
    );
    for &scenario in scenarios {
        let _ = writeln!(out, "\n== {}", scenario.label());
        let _ = writeln!(
            out,
            "{:<20} {:>7} {:>11} {:>9} {:>9} {:>10} {:>12} {:>12}  layout",
            "server", "workers", "req/s", "µs/req", "busy", "wrk busy", "req/s ratio", "cpu ratio"
        );
        for c in cells {
            let Some(r) = c.runs(scenario) else { continue };
            let nginx = cells
                .iter()
                .find(|n| n.kind == Kind::Nginx && n.accept == c.accept && n.workers == c.workers)
                .and_then(|n| n.runs(scenario));
            let (rate_ratio, cpu_ratio) = match (c.kind, nginx) {
                (Kind::Miohttpd, Some(n)) => (
                    format!("{:.2}x", r.rate() / n.rate()),
                    format!("{:.2}x", r.cpu_total_per_k() / n.cpu_total_per_k()),
                ),
                _ => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "{:<20} {:>7} {:>11.0} {:>9.2} {:>8.0}% {:>9.0}% {:>12} {:>12}  {}",
                c.name(),
                c.workers,
                r.rate(),
                r.cpu_total_per_k(),
                r.median_of(|s| s.server_busy()) * 100.0,
                r.median_of(|s| s.wrk_busy()) * 100.0,
                rate_ratio,
                cpu_ratio,
                c.layout.describe()
            );
        }
    }
    out
}

/// `scaling-rps-*.svg` and `scaling-cpu-*.svg`: req/s and CPU per request against workers,
/// one line per server and accept model, one chart per scenario.
fn write_plots(dir: &Path, cells: &[Cell], scenarios: &[Scenario], opts: &Options, date: &str) {
    if opts.workers.len() < 2 {
        println!("scaling: one worker count: no charts");
        return;
    }
    let mut names: Vec<String> = Vec::new();
    for c in cells {
        if !names.contains(&c.name()) {
            names.push(c.name());
        }
    }
    type Value = fn(&Runs) -> f64;
    let measures: [(&str, &str, Value); 2] = [
        ("rps", "requests/s", |r| r.rate()),
        ("cpu", "server CPU per request (µs)", |r| {
            r.cpu_total_per_k()
        }),
    ];
    for &scenario in scenarios {
        let slug = if scenario.depth > 1 {
            "pipelined"
        } else {
            "keepalive"
        };
        for (file, y_label, value) in measures {
            let chart = LineChart {
                title: format!(
                    "GET /plaintext, {}: {y_label} against workers",
                    scenario.label()
                ),
                note: format!(
                    "cargo bench --bench scaling; {date}; {}; median of {} run(s) of {} s",
                    host_summary(),
                    opts.runs,
                    opts.duration
                ),
                x_label: "workers".into(),
                y_label: y_label.into(),
                x_scale: Scale::Linear,
                series: names
                    .iter()
                    .map(|name| Series {
                        name: name.clone(),
                        points: cells
                            .iter()
                            .filter(|c| &c.name() == name)
                            .filter_map(|c| Some((c.workers as f64, value(c.runs(scenario)?))))
                            .collect(),
                    })
                    .collect(),
            };
            let path = dir.join(format!("scaling-{file}-{slug}.svg"));
            match chart.write(&path) {
                Ok(()) => println!("scaling: wrote {}", path.display()),
                Err(e) => eprintln!("scaling: cannot write {}: {e}", path.display()),
            }
        }
    }
}

/// Under `cargo test`: the binary answers keep-alive and pipelined requests, with two workers
/// too once it has `--workers`.
fn smoke_test(bin: &Path) {
    let layouts = [layout(&[0, 1, 2, 3], 1), layout(&[0, 1], 2)];
    assert_eq!(layouts[0].server, Some(vec![3]));
    assert_eq!(layouts[0].wrk, Some(vec![0, 1, 2]));
    assert_eq!(layouts[1].server, None);
    let server = Server::start_with_banner("miohttpd", Command::new(bin), "miohttpd", false);
    check_plaintext(server.addr(), 4, 1).expect("keep-alive");
    check_plaintext(server.addr(), 32, 16).expect("pipelined");
    drop(server);
    let help = Command::new(bin).arg("--help").output().expect("--help");
    if String::from_utf8_lossy(&help.stdout).contains("--workers") {
        for accept in [Accept::Reuseport, Accept::Shared] {
            let server = start(Kind::Miohttpd, accept, 2, &layouts[1], bin).expect("start");
            check_plaintext(server.addr(), 4, 1).expect("keep-alive");
            check_plaintext(server.addr(), 32, 16).expect("pipelined");
        }
    }
    println!("scaling: smoke test passed");
}
