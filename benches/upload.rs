//! Upload benchmark: how close does miohttpd's streamed `POST /` MD5 come to hashing in memory,
//! and to the original Go peer (`benches/peers/md5server.go`)?
//!
//! `cargo bench --bench upload [-- --size-mib 100 --runs 5 --no-go --server-arg=--FLAG=VALUE]`
//!
//! 1. Generates `--size-mib` MiB of pseudo-random bytes once, in memory.
//! 2. Raw: hashes them in memory with the `md-5` crate, `--runs` times, in a copy of this
//!    driver pinned to the servers' core (the cores of a shared machine differ in speed).
//! 3. Starts the release `miohttpd` and the Go peer (built here with plain `go build`, run with
//!    `GOMAXPROCS=1`), each pinned to core 1 with `taskset`; this driver runs on core 0 (it
//!    re-executes itself under `taskset -c 0` when not already pinned), so client and server
//!    never share a core.
//! 4. For each server, `--runs` times: a new TCP connection, `POST / HTTP/1.1` with
//!    `Content-Length` and the whole body written in large slices, then the response read and its
//!    digest checked against the in-process one. Throughput = body bytes / wall time from the
//!    first byte sent to the last response byte received.
//!
//! Reports medians, min and max in MB/s (10^6 bytes per second) and the ratios miohttpd/raw and
//! miohttpd/go. Children are killed (by PID) when their guard drops, panics included.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs as a quick smoke test instead:
//! 1 MiB, one run, miohttpd only, no pinning.

use std::fmt::Write as _;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use loadbench::client::read_response;
use loadbench::cpu::{
    cpus_allowed, pin_self_to_client_core, pinned_to, scheduled_time, SERVER_CORE,
};
use loadbench::peers::build_go_peer;
use loadbench::report::median;
use loadbench::server::Server;

const MIOHTTPD: &str = env!("CARGO_BIN_EXE_miohttpd");

const GO_PEER_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/md5server.go");

/// Large slices: one `write` per 4 MiB keeps the client's syscall count out of the measurement.
const WRITE_SLICE: usize = 4 << 20;
/// Seed of the benchmark body, shared with the raw worker so both hash the same bytes.
const BODY_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const IO_TIMEOUT: Duration = Duration::from_secs(120);

struct Options {
    size_mib: usize,
    runs: usize,
    go: bool,
    /// Extra flags for miohttpd, e.g. `--server-arg=--body-buffer-size=1048576`.
    server_args: Vec<std::ffi::OsString>,
    /// `cargo bench` passes `--bench`; `cargo test` does not, and then this is a smoke test.
    bench: bool,
    /// Internal: hash the body once in this process and print MB/s (run on the server core).
    raw_worker: bool,
}

fn parse_args() -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let (mut size_mib, mut runs, mut go, mut bench) = (None, None, true, false);
    let mut raw_worker = false;
    let mut server_args = Vec::new();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("size-mib") => size_mib = Some(parser.value()?.parse()?),
            Long("runs") => runs = Some(parser.value()?.parse()?),
            Long("no-go") => go = false,
            Long("server-arg") => server_args.push(parser.value()?),
            Long("bench") => bench = true,
            Long("raw-worker") => raw_worker = true,
            Short('h') | Long("help") => {
                println!(
                    "cargo bench --bench upload [-- --size-mib N (100)] [--runs R (5)] [--no-go] \
                     [--server-arg=--FLAG=VALUE ...]"
                );
                std::process::exit(0);
            }
            // cargo passes the same arguments to every target (`--nocapture`, filters, ...):
            // whatever is not ours is ignored, with any `=value` it carries.
            Long(_) | Short(_) => {
                let _ = parser.optional_value();
            }
            Value(_) => {}
        }
    }
    let (size_default, runs_default) = if bench { (100, 5) } else { (1, 1) };
    Ok(Options {
        size_mib: size_mib.unwrap_or(size_default),
        runs: runs.unwrap_or(runs_default).max(1),
        go,
        server_args,
        bench,
        raw_worker,
    })
}

fn main() {
    let opts = parse_args().unwrap_or_else(|e| {
        eprintln!("upload: {e}");
        std::process::exit(2);
    });
    if opts.raw_worker {
        return raw_worker(&opts);
    }
    if !opts.bench {
        return smoke_test(&opts);
    }
    let pinned = pin_self_to_client_core("upload");

    let body = pseudo_random_bytes(opts.size_mib << 20, BODY_SEED);
    println!(
        "upload: {} MiB body, {} run(s), driver on cores {}, servers on cores {}",
        opts.size_mib,
        opts.runs,
        cpus_allowed("self").unwrap_or_else(|| "?".into()),
        if pinned {
            SERVER_CORE
        } else {
            "any (not pinned)"
        },
    );

    let want = hex(&Md5::digest(&body));
    println!("upload: in-process md5 {want}");

    let mut cmd = Command::new(MIOHTTPD);
    cmd.args(&opts.server_args);
    let mut servers = vec![Server::start_with_banner(
        "miohttpd", cmd, "miohttpd", pinned,
    )];
    if opts.go {
        let peer = build_go_peer(
            "upload",
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            Path::new(GO_PEER_SOURCE),
            "md5server",
        )
        .unwrap_or_else(|e| panic!("upload: the Go peer: {e} (or pass --no-go)"));
        let mut cmd = Command::new(peer);
        cmd.env("GOMAXPROCS", "1");
        servers.push(Server::start_with_banner(
            "go net/http (GOMAXPROCS=1)",
            cmd,
            "md5server",
            pinned,
        ));
    }

    // Runs are interleaved (raw, miohttpd, go, raw, ...) so that load from elsewhere on a
    // shared machine spreads over all series instead of landing on one.
    let mut results = vec![Series::new("raw md5 (in-process, server core)")];
    results.extend(servers.iter().map(|s| Series::new(&s.name)));
    for run in 1..=opts.runs {
        results[0].rates.push(raw_md5_rate(&opts, pinned, &want));
        for (server, series) in servers.iter().zip(&mut results[1..]) {
            measure(server, &body, &want, (run, opts.runs), series);
        }
    }
    drop(servers);

    print!("{}", report(&results));
}

/// The raw hash speed, measured on the core the servers run on: the two cores of a shared
/// machine are not equally fast at any moment, and the ratio must compare like with like.
/// Runs this driver again as `--raw-worker` under `taskset -c SERVER_CORE`.
fn raw_md5_rate(opts: &Options, pinned: bool, want: &str) -> f64 {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.arg("--raw-worker")
        .arg(format!("--size-mib={}", opts.size_mib));
    let output = pinned_to(SERVER_CORE, cmd, pinned)
        .stderr(Stdio::inherit())
        .output()
        .expect("running the raw md5 worker");
    assert!(output.status.success(), "raw md5 worker failed: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let (rate, digest) = text
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("raw md5 worker printed {text:?}"));
    assert_eq!(digest, want, "raw md5 worker hashed different bytes");
    rate.parse().expect("raw md5 worker rate")
}

/// `--raw-worker`: hash the benchmark body once, in memory, and print `MB/s digest`.
fn raw_worker(opts: &Options) {
    let body = pseudo_random_bytes(opts.size_mib << 20, BODY_SEED);
    let t0 = Instant::now();
    let digest = Md5::digest(&body);
    let rate = mb_per_s(body.len(), t0.elapsed());
    println!("{rate:.1} {}", hex(&digest));
}

/// Under `cargo test`: one small upload to the (debug) binary, digest checked, no numbers.
fn smoke_test(opts: &Options) {
    let body = pseudo_random_bytes(opts.size_mib << 20, 7);
    let want = hex(&Md5::digest(&body));
    let mut cmd = Command::new(MIOHTTPD);
    cmd.args(&opts.server_args);
    let server = Server::start_with_banner("miohttpd", cmd, "miohttpd", false);
    for run in 1..=opts.runs {
        upload(server.addr(), &body, &want)
            .unwrap_or_else(|e| panic!("miohttpd smoke upload {run}: {e}"));
    }
    println!(
        "upload: smoke test ok: {} x {} MiB POST / digests match \
         (`cargo bench --bench upload` runs the benchmark)",
        opts.runs, opts.size_mib
    );
}

/// xorshift64*: incompressible enough for a hash, and ~1 GB/s to make.
fn pseudo_random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let word = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

/// Throughput of one named thing over runs, and for a server how busy its CPU was.
struct Series {
    name: String,
    rates: Vec<f64>,
    /// Server CPU time / wall time per run: well below 100% means the server waited for bytes.
    cpu_busy: Vec<f64>,
}

impl Series {
    fn new(name: &str) -> Series {
        Series {
            name: name.to_string(),
            rates: Vec::new(),
            cpu_busy: Vec::new(),
        }
    }
}

/// One upload run against `server`, added to `series`.
fn measure(
    server: &Server,
    body: &[u8],
    want: &str,
    (run, runs): (usize, usize),
    series: &mut Series,
) {
    let pid = server.pid();
    let cpu_before = scheduled_time(pid);
    let elapsed = upload(server.addr(), body, want)
        .unwrap_or_else(|e| panic!("{} run {run}: {e}", server.name));
    let busy = cpu_before
        .zip(scheduled_time(pid))
        .map(|(b, a)| a.saturating_sub(b).as_secs_f64() / elapsed.as_secs_f64());
    let rate = mb_per_s(body.len(), elapsed);
    let busy_note = busy.map_or(String::new(), |b| format!(", server cpu {:.0}%", b * 100.0));
    println!(
        "upload: {} run {run}/{runs}: {rate:.1} MB/s{busy_note}",
        server.name
    );
    series.rates.push(rate);
    series.cpu_busy.extend(busy);
}

/// One upload on a fresh connection; returns the time from first byte sent to response read.
fn upload(addr: SocketAddr, body: &[u8], want: &str) -> Result<Duration, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );

    let t0 = Instant::now();
    let sent = std::iter::once(head.as_bytes())
        .chain(body.chunks(WRITE_SLICE))
        .try_for_each(|slice| stream.write_all(slice));
    if let Err(e) = sent {
        // The server may have answered early (413, 400, ...) and closed: show what it said.
        let said = read_response(&mut stream).map_or_else(|_| String::new(), |r| r.summary());
        return Err(format!("sending body: {e} {said}"));
    }
    let response = read_response(&mut stream)?;
    let elapsed = t0.elapsed();

    if response.status != 200 {
        return Err(format!("want 200, got {}", response.summary()));
    }
    let got = String::from_utf8_lossy(&response.body);
    if got.trim() != want {
        return Err(format!(
            "digest mismatch: got {:?}, want {want}",
            got.trim()
        ));
    }
    Ok(elapsed)
}

fn report(results: &[Series]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<28} {:>10} {:>10} {:>10} {:>12}",
        "MB/s", "median", "min", "max", "server cpu"
    );
    let mut medians = Vec::new();
    for series in results {
        let med = median(&series.rates);
        medians.push((series.name.as_str(), med));
        let min = series.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = series.rates.iter().copied().fold(0.0, f64::max);
        let busy = if series.cpu_busy.is_empty() {
            "-".to_string()
        } else {
            format!("{:.0}%", median(&series.cpu_busy) * 100.0)
        };
        let name = &series.name;
        let _ = writeln!(
            out,
            "{name:<28} {med:>10.1} {min:>10.1} {max:>10.1} {busy:>12}"
        );
    }
    let med = |prefix: &str| {
        medians
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|m| m.1)
    };
    if let (Some(m), Some(raw)) = (med("miohttpd"), med("raw")) {
        let _ = writeln!(out, "{:<28} {:>10.3}", "ratio miohttpd / raw md5", m / raw);
    }
    if let (Some(m), Some(go)) = (med("miohttpd"), med("go")) {
        let _ = writeln!(out, "{:<28} {:>10.3}", "ratio miohttpd / go", m / go);
    }
    out
}
