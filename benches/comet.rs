//! Comet c10k benchmark: N long-poll waiters parked at once, one notify, every answer checked.
//!
//! `cargo bench --bench comet [-- --waiters 10000 --runs 3 --peer nchan|none --addr HOST:PORT]`
//!
//! A fresh server per run (miohttpd, then nginx+nchan where installable), pinned to core 1; this
//! driver (one thread, its own mio client) on core 0. Each run: N connections, spread over
//! source addresses 127.0.0.2 and up, each sending the original client's `GET /wait HTTP/1.0`;
//! the count route polled until it reports N; one notify; every waiter must get the body N and
//! then the close. Reported per run: time to connect all, time from the notify to the last
//! answer, the server's user and sys CPU seconds over the run (from /proc, 10 ms resolution),
//! its RSS with N parked and its peak, and RSS per waiter above its idle RSS; then medians.
//!
//! Under `cargo test` (no `--bench`): 300 waiters against the debug binary, no pinning, no peer.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

mod common;
use common::{free_port, median, memory, pin_self_to_client_core, CpuTimes, Server, MIOHTTPD};

/// Connections per source address: the ephemeral port range (28k ports here) slows connects
/// well before it runs out.
const PER_SOURCE_ADDRESS: usize = 5_000;
/// Connects in flight at once, so the listen backlog never overflows into SYN retries.
const MAX_CONNECTING: usize = 512;
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

struct Options {
    waiters: usize,
    runs: usize,
    peer: bool,
    addr: Option<SocketAddr>,
    bench: bool,
}

fn parse_args() -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut opts = Options {
        waiters: 0,
        runs: 0,
        peer: true,
        addr: None,
        bench: false,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("waiters") => opts.waiters = parser.value()?.parse()?,
            Long("runs") => opts.runs = parser.value()?.parse()?,
            Long("peer") => opts.peer = parser.value()?.string()? != "none",
            Long("addr") => opts.addr = Some(parser.value()?.parse()?),
            Long("bench") => opts.bench = true,
            Short('h') | Long("help") => {
                println!(
                    "cargo bench --bench comet [-- --waiters N (10000)] [--runs R (3)] \
                     [--peer nchan|none] [--addr HOST:PORT]"
                );
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

fn main() {
    let opts = parse_args().unwrap_or_else(|e| {
        eprintln!("comet: {e}");
        std::process::exit(2);
    });
    let pinned = opts.bench && pin_self_to_client_core("comet");
    let fd_limit = miohttpd::sys::raise_open_files_limit().unwrap_or(1024) as usize;
    assert!(
        opts.waiters + 64 <= fd_limit,
        "{} waiters need more open files than the limit {fd_limit} (ulimit -Hn)",
        opts.waiters
    );
    println!(
        "comet: {} waiters, {} run(s), open-files limit {fd_limit}",
        opts.waiters, opts.runs
    );

    if let Some(addr) = opts.addr {
        for run in 1..=opts.runs {
            let result = run_once(&Peer::Miohttpd, addr, None, opts.waiters);
            println!("comet: {addr} run {run}: {}", result.line());
        }
        return;
    }
    let mut peers = vec![Peer::Miohttpd];
    if opts.bench && opts.peer {
        match nchan_available() {
            Ok(()) => peers.push(Peer::Nchan),
            Err(why) => println!("comet: nginx+nchan peer skipped: {why}"),
        }
    }
    let mut table: Vec<(String, Vec<RunResult>)> = Vec::new();
    // Interleaved, so the machine's moods spread over both servers.
    for run in 1..=opts.runs {
        for peer in &peers {
            let server = peer.start(pinned);
            let result = run_once(peer, server.addr(), Some(server.worker_pid()), opts.waiters);
            println!(
                "comet: {} run {run}/{}: {}",
                server.name,
                opts.runs,
                result.line()
            );
            match table.iter_mut().find(|(name, _)| *name == server.name) {
                Some((_, results)) => results.push(result),
                None => table.push((server.name.clone(), vec![result])),
            }
        }
    }
    print!("{}", report(opts.waiters, &table));
}

/// A server under test and how to speak its dialect of the workload.
enum Peer {
    Miohttpd,
    /// nginx with the nchan module: longpoll subscribers on `/sub`, publisher on `/pub`.
    Nchan,
}

impl Peer {
    fn start(&self, pin: bool) -> Server {
        match self {
            Peer::Miohttpd => {
                Server::start_with_banner("miohttpd", Command::new(MIOHTTPD), "miohttpd", pin)
            }
            Peer::Nchan => {
                let addr = free_port();
                let dir =
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nchan-{}", addr.port()));
                std::fs::create_dir_all(&dir).expect("nchan scratch dir");
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, nchan_config(addr, &dir)).expect("nginx.conf");
                let mut cmd = Command::new("nginx");
                cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
                Server::start_at("nginx+nchan", cmd, addr, pin)
            }
        }
    }

    fn wait_request(&self) -> &'static [u8] {
        match self {
            Peer::Miohttpd => b"GET /wait HTTP/1.0\r\n\r\n",
            Peer::Nchan => b"GET /sub HTTP/1.0\r\n\r\n",
        }
    }

    /// The number of waiters the server holds now.
    fn parked(&self, addr: SocketAddr) -> io::Result<usize> {
        let count = match self {
            Peer::Miohttpd => exchange(addr, b"GET / HTTP/1.0\r\n\r\n")?
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
            Peer::Miohttpd => exchange(addr, b"GET /notify HTTP/1.0\r\n\r\n"),
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

fn nchan_config(addr: SocketAddr, dir: &Path) -> String {
    format!(
        "load_module {NCHAN_MODULE};\n\
         worker_processes 1;\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         worker_rlimit_nofile 20000;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {dir};\n\
           server {{\n\
             listen {addr} backlog=4096;\n\
             location = /sub {{ nchan_subscriber longpoll; nchan_channel_id default; }}\n\
             location = /pub {{ nchan_publisher; nchan_channel_id default; }}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    )
}

/// Installs nginx's nchan module with apt if it is missing (the driver needs root for that).
fn nchan_available() -> Result<(), String> {
    if Path::new(NCHAN_MODULE).exists() {
        return Ok(());
    }
    println!("comet: installing nginx and libnginx-mod-nchan with apt-get");
    let installed = Command::new("sh")
        .arg("-c")
        .arg("(apt-get install -y -qq nginx-light libnginx-mod-nchan || (apt-get update -qq && apt-get install -y -qq nginx-light libnginx-mod-nchan)) >/dev/null 2>&1")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| e.to_string())?;
    if installed.success() && Path::new(NCHAN_MODULE).exists() {
        Ok(())
    } else {
        Err(format!("apt-get could not install it ({installed})"))
    }
}

/// One request on a fresh connection; the response body.
fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_string()),
        None => Err(io::Error::other(format!("no response head in {text:?}"))),
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

    fn line(&self) -> String {
        format!(
            "connect {:.3} s, notify->last {:.3} s (server cpu {:.2} s, driver cpu {:.2} s), \
             cpu user {:.2} s sys {:.2} s, rss parked {:.1} MB (peak {:.1} MB), \
             {:.0} B/waiter above idle",
            self.connect.as_secs_f64(),
            self.notify_to_last.as_secs_f64(),
            self.notify_cpu.total().as_secs_f64(),
            self.driver_notify_cpu.total().as_secs_f64(),
            self.cpu.user.as_secs_f64(),
            self.cpu.sys.as_secs_f64(),
            self.parked_rss as f64 / 1e6,
            self.peak_rss as f64 / 1e6,
            self.rss_per_waiter(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Parked,
    Answered,
}

struct Waiter {
    stream: mio::net::TcpStream,
    state: State,
    response: Vec<u8>,
}

/// One full run against a server at `addr` (`pid` known when this driver started it).
fn run_once(peer: &Peer, addr: SocketAddr, pid: Option<u32>, n: usize) -> RunResult {
    let mut result = RunResult {
        waiters: n,
        ..RunResult::default()
    };
    let cpu_start = pid.map(CpuTimes::of).unwrap_or_default();
    result.idle_rss = pid.map_or(0, |p| memory(p).rss);

    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(4096);
    let mut waiters: Vec<Waiter> = Vec::with_capacity(n);
    let started = Instant::now();
    let mut connecting = 0;
    let mut parked = 0;
    while parked < n {
        while waiters.len() < n && connecting < MAX_CONNECTING {
            let i = waiters.len();
            let mut stream = connect_from(source_address(i), addr).expect("connect");
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .expect("register");
            waiters.push(Waiter {
                stream,
                state: State::Connecting,
                response: Vec::new(),
            });
            connecting += 1;
        }
        poll.poll(&mut events, Some(Duration::from_secs(1)))
            .expect("poll");
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "connecting took too long: {parked}/{n}"
        );
        for event in events.iter() {
            let waiter = &mut waiters[event.token().0];
            if waiter.state != State::Connecting || !event.is_writable() {
                continue;
            }
            if let Ok(Some(e)) | Err(e) = waiter.stream.take_error() {
                panic!("waiter {} failed to connect: {e}", event.token().0);
            }
            // The request is tiny: one write takes it whole on a fresh socket.
            let request = peer.wait_request();
            let written = waiter.stream.write(request).expect("send wait request");
            assert_eq!(written, request.len(), "short write of the wait request");
            waiter.state = State::Parked;
            connecting -= 1;
            parked += 1;
        }
    }
    result.connect = started.elapsed();

    // The server counts them all as parked before the notify goes out.
    let polling = Instant::now();
    loop {
        match peer.parked(addr) {
            Ok(count) if count >= n => break,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
        assert!(
            polling.elapsed() < RUN_TIMEOUT,
            "the server never counted {n} waiters"
        );
    }
    result.parked_rss = pid.map_or(0, |p| memory(p).rss);

    let cpu_before_notify = pid.map(CpuTimes::of).unwrap_or_default();
    let driver_before_notify = CpuTimes::of(std::process::id());
    let notified = Instant::now();
    let notify_body = peer.notify(addr, n).expect("notify");
    let want = n.to_string();
    if matches!(peer, Peer::Miohttpd) {
        assert_eq!(notify_body.trim(), want, "the notifier's own answer");
    }
    let mut answered = 0;
    let mut last_answer = notified;
    let mut buf = [0u8; 4096];
    while answered < n {
        poll.poll(&mut events, Some(Duration::from_secs(1)))
            .expect("poll");
        assert!(
            notified.elapsed() < RUN_TIMEOUT,
            "only {answered}/{n} waiters answered"
        );
        for event in events.iter() {
            let waiter = &mut waiters[event.token().0];
            if waiter.state != State::Parked {
                continue;
            }
            loop {
                match waiter.stream.read(&mut buf) {
                    Ok(0) => {
                        waiter.state = State::Answered;
                        answered += 1;
                        last_answer = Instant::now();
                        check_answer(event.token().0, &waiter.response, &want);
                        break;
                    }
                    Ok(k) => waiter.response.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("waiter {}: {e}", event.token().0),
                }
            }
        }
    }
    result.notify_to_last = last_answer - notified;
    result.driver_notify_cpu = CpuTimes::of(std::process::id()).since(driver_before_notify);
    if let Some(pid) = pid {
        result.notify_cpu = CpuTimes::of(pid).since(cpu_before_notify);
        result.cpu = CpuTimes::of(pid).since(cpu_start);
        result.peak_rss = memory(pid).peak;
    }
    result
}

fn check_answer(index: usize, response: &[u8], want: &str) {
    let text = String::from_utf8_lossy(response);
    let ok = text.starts_with("HTTP/1.") && text.contains(" 200 ");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim());
    assert!(
        ok && body == Some(want),
        "waiter {index} got {text:?}, want body {want}"
    );
}

fn source_address(index: usize) -> IpAddr {
    let host = 2 + index / PER_SOURCE_ADDRESS;
    IpAddr::V4(Ipv4Addr::new(127, 0, (host >> 8) as u8, host as u8))
}

/// A non-blocking connect from `source` (any port) to `addr`.
fn connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

fn report(waiters: usize, table: &[(String, Vec<RunResult>)]) -> String {
    let mut out = format!(
        "\n{waiters} waiters, medians over runs\n{:<14} {:>10} {:>14} {:>9} {:>9} {:>10} {:>10} {:>11} {:>12}\n",
        "server", "connect s", "notify->last s", "user s", "sys s", "user/sys", "cpu s", "peak MB", "B/waiter"
    );
    for (name, results) in table {
        let med = |f: &dyn Fn(&RunResult) -> f64| {
            let mut v: Vec<f64> = results.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            median(&v)
        };
        let user = med(&|r| r.cpu.user.as_secs_f64());
        let sys = med(&|r| r.cpu.sys.as_secs_f64());
        out.push_str(&format!(
            "{name:<14} {:>10.3} {:>14.3} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>11.1} {:>12.0}\n",
            med(&|r| r.connect.as_secs_f64()),
            med(&|r| r.notify_to_last.as_secs_f64()),
            user,
            sys,
            user / sys.max(0.01),
            med(&|r| r.cpu.total().as_secs_f64()),
            med(&|r| r.peak_rss as f64 / 1e6),
            med(&|r| r.rss_per_waiter()),
        ));
    }
    out
}
