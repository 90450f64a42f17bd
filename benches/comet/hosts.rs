//! `cargo bench --bench comet -- --cross-host`: comet across hosts on one Redis. miohttpd with
//! `--redis` on one host (N waiters) and on two (N/2 each), and nginx+nchan with its channel in
//! Redis (`nchan_redis_pass`) likewise, interleaved run by run, each run on a fresh
//! `redis-server` this driver starts on a free loopback port and stops by PID. Per run: the
//! time from the publish (sent to the first host) to the last waiter's answer on any host,
//! each host's CPU, and Redis's CPU (from `/proc` of its PID). Included by `comet.rs` (not a
//! bench target of its own).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use loadbench::cpu::{process_tree, scheduled_time, CpuTimes};
use loadbench::peers::{ensure_nchan, nchan_redis_config, start_nginx};
use loadbench::redis::{ensure_redis, RedisServer};
use loadbench::report::{median, Bound, Targets};
use loadbench::server::Server;
use loadbench::svg::{LineChart, Scale, Series};

use super::{Clients, Options, STALL_TIMEOUT};

/// The channel every waiter of a run parks on.
const CHANNEL: &str = "bench";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Miohttpd,
    NchanRedis,
}

/// One series: a server kind on `hosts` hosts sharing one Redis.
#[derive(Clone, Copy)]
struct Fleet {
    kind: Kind,
    hosts: usize,
}

impl Fleet {
    fn name(&self) -> String {
        let kind = match self.kind {
            Kind::Miohttpd => "miohttpd",
            Kind::NchanRedis => "nchan+redis",
        };
        let s = if self.hosts == 1 { "" } else { "s" };
        format!("{kind} {} host{s}", self.hosts)
    }

    fn wait_path(&self) -> String {
        match self.kind {
            Kind::Miohttpd => format!("/wait/{CHANNEL}"),
            Kind::NchanRedis => "/sub".into(),
        }
    }

    fn start(&self, bin: &Path, redis: &RedisServer, run: usize) -> Vec<Server> {
        (0..self.hosts)
            .map(|h| {
                let name = format!("{} #{}", self.name(), h + 1);
                match self.kind {
                    Kind::Miohttpd => {
                        let mut cmd = Command::new(bin);
                        cmd.arg("--redis")
                            .arg(redis.url())
                            .arg("--redis-prefix")
                            .arg(format!("bench{run}"));
                        Server::start_with_banner(&name, cmd, "miohttpd", false)
                    }
                    Kind::NchanRedis => start_nginx(
                        &name,
                        Path::new(env!("CARGO_TARGET_TMPDIR")),
                        nchan_redis_config(&redis.url()),
                        false,
                    )
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
                }
            })
            .collect()
    }

    /// Every host's waiters: as the first host counts them for miohttpd (`GET /` counts every
    /// host's), the sum of each nginx's own subscribers (`nchan_stub_status`) for nchan.
    fn parked(&self, addrs: &[SocketAddr]) -> Option<usize> {
        match self.kind {
            Kind::Miohttpd => body(&request(addrs[0], "GET / HTTP/1.0\r\n\r\n").ok()?)
                .trim()
                .parse()
                .ok(),
            Kind::NchanRedis => addrs
                .iter()
                .map(|&addr| {
                    request(addr, "GET /nchan_status HTTP/1.0\r\n\r\n")
                        .ok()?
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("subscribers:"))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                })
                .sum(),
        }
    }

    /// miohttpd's hosts all see each other through Redis (`X-Comet-Hosts: H/H` on `GET /`);
    /// nchan's have no such signal: its status answering is what there is.
    fn ready(&self, addr: SocketAddr) -> bool {
        match self.kind {
            Kind::Miohttpd => request(addr, "GET / HTTP/1.0\r\n\r\n").is_ok_and(|r| {
                let want = format!("x-comet-hosts: {0}/{0}", self.hosts);
                r.to_ascii_lowercase().contains(&want)
            }),
            Kind::NchanRedis => self.parked(&[addr]).is_some(),
        }
    }

    /// The publish, on the first host; its body is N, what every waiter must get.
    fn publish(&self, addr: SocketAddr, n: usize) -> Result<(), String> {
        let body = n.to_string();
        let path = match self.kind {
            Kind::Miohttpd => format!("/notify/{CHANNEL}"),
            Kind::NchanRedis => "/pub".into(),
        };
        let answer = request(
            addr,
            &format!(
                "POST {path} HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
        .map_err(|e| format!("publish: {e}"))?;
        if self.kind == Kind::Miohttpd && self::body(&answer).trim() != body {
            return Err(format!("the publisher got {answer:?}, want n = {body}"));
        }
        Ok(())
    }
}

/// One request on a new connection, the whole answer (head and body) to the close.
fn request(addr: SocketAddr, text: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(text.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[derive(Default, Clone)]
struct HostsResult {
    connect: Duration,
    notify_to_last: Duration,
    /// Each host's CPU (its whole process tree) over the whole run and from the publish to
    /// the last answer, and Redis's; from schedstat (ns), since the fan-out takes a few ticks.
    hosts_cpu: Vec<Duration>,
    hosts_notify_cpu: Vec<Duration>,
    redis_cpu: Duration,
    redis_notify_cpu: Duration,
    clients_notify_cpu: CpuTimes,
}

impl HostsResult {
    fn line(&self) -> String {
        let secs = |v: &[Duration]| {
            v.iter()
                .map(|c| format!("{:.3}", c.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        format!(
            "connect {:.3} s, notify->last {:.3} s; host cpu {} s (fan-out {} s), redis cpu {:.3} s \
             (fan-out {:.3} s), clients' fan-out cpu {:.2} s",
            self.connect.as_secs_f64(),
            self.notify_to_last.as_secs_f64(),
            secs(&self.hosts_cpu),
            secs(&self.hosts_notify_cpu),
            self.redis_cpu.as_secs_f64(),
            self.redis_notify_cpu.as_secs_f64(),
            self.clients_notify_cpu.total().as_secs_f64(),
        )
    }
}

fn sum(cpus: &[Duration]) -> f64 {
    cpus.iter().map(Duration::as_secs_f64).sum()
}

/// CPU time of a process and its children (a miohttpd supervisor and its worker, nginx's
/// master and worker), every thread, from schedstat.
fn tree_scheduled(pid: u32) -> Duration {
    process_tree(pid)
        .into_iter()
        .filter_map(scheduled_time)
        .sum()
}

/// The whole cross-host mode: every fleet `opts.runs` times, interleaved; the report, the
/// targets and the chart.
pub fn run(opts: &Options) -> bool {
    let n = opts.waiters;
    if let Err(why) = ensure_redis("comet") {
        panic!("comet --cross-host needs redis-server: {why}");
    }
    let mut fleets = vec![
        Fleet {
            kind: Kind::Miohttpd,
            hosts: 1,
        },
        Fleet {
            kind: Kind::Miohttpd,
            hosts: 2,
        },
    ];
    if opts.bench && opts.peer {
        match ensure_nchan("comet") {
            Ok(()) => fleets.extend([1, 2].map(|hosts| Fleet {
                kind: Kind::NchanRedis,
                hosts,
            })),
            Err(why) => println!("comet: nginx+nchan peer skipped: {why}"),
        }
    }
    println!(
        "comet --cross-host: {n} waiters per run over 1 or 2 hosts on one redis-server, 2 client \
         processes, nothing pinned, {} run(s) each, {}",
        opts.runs,
        loadbench::report::host_summary()
    );
    let mut results: Vec<(String, Vec<HostsResult>, Option<String>)> = fleets
        .iter()
        .map(|f| (f.name(), Vec::new(), None))
        .collect();
    let mut miohttpd_failed = false;
    for run in 1..=opts.runs {
        for (i, fleet) in fleets.iter().enumerate() {
            if results[i].2.is_some() {
                continue;
            }
            let name = fleet.name();
            match run_once(fleet, n, opts, run) {
                Ok(r) => {
                    println!(
                        "comet: {name} {n} waiters run {run}/{}: {}",
                        opts.runs,
                        r.line()
                    );
                    results[i].1.push(r);
                }
                Err(why) => {
                    println!(
                        "comet: {name} run {run}/{}: FAILED, skipped: {why}",
                        opts.runs
                    );
                    miohttpd_failed |= fleet.kind == Kind::Miohttpd;
                    results[i].2 = Some(why);
                }
            }
        }
    }
    print!("{}", report(n, &results));
    if let Some(dir) = opts.plots.as_ref().filter(|_| opts.bench) {
        write_chart(dir, n, opts.runs, &fleets, &results);
    }
    !miohttpd_failed
}

fn run_once(fleet: &Fleet, n: usize, opts: &Options, run: usize) -> Result<HostsResult, String> {
    let redis = RedisServer::start(Path::new(env!("CARGO_TARGET_TMPDIR")))?;
    let servers = fleet.start(&opts.bin, &redis, run);
    let addrs: Vec<SocketAddr> = servers.iter().map(Server::addr).collect();
    // miohttpd with --redis runs a supervisor (the hub, which holds the link) and a worker.
    let deadline = Instant::now() + STALL_TIMEOUT;
    while !(servers
        .iter()
        .all(|s| fleet.kind != Kind::Miohttpd || process_tree(s.pid()).len() >= 2)
        && addrs.iter().all(|&a| fleet.ready(a)))
    {
        if Instant::now() > deadline {
            return Err(format!(
                "hosts not ready (linked to Redis) within {STALL_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpus = || {
        servers
            .iter()
            .map(|s| tree_scheduled(s.pid()))
            .collect::<Vec<_>>()
    };
    let since = |now: Vec<Duration>, then: &[Duration]| {
        now.into_iter()
            .zip(then)
            .map(|(a, &b)| a.saturating_sub(b))
            .collect::<Vec<_>>()
    };
    let redis_cpu = || scheduled_time(redis.pid()).unwrap_or_default();
    let (start_cpu, start_redis) = (cpus(), redis_cpu());

    // Two client processes always, so one host and two differ only in where the waiters go.
    let share = n.div_ceil(2);
    let parts: Vec<(SocketAddr, usize, usize)> = (0..2)
        .map(|k| (addrs[k % addrs.len()], k * share, share.min(n - k * share)))
        .collect();
    let started = Instant::now();
    let mut clients = Clients::spawn_parts(opts, &parts, n, &fleet.wait_path())?;
    let connect = started.elapsed();

    let mut best = 0;
    let mut progress_at = Instant::now();
    loop {
        match fleet.parked(&addrs) {
            Some(count) if count >= n => break,
            Some(count) if count > best => {
                best = count;
                progress_at = Instant::now();
            }
            _ => {}
        }
        if progress_at.elapsed() > STALL_TIMEOUT {
            return Err(format!(
                "counted {best} of {n} waiters, no growth for {STALL_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (before_cpu, before_redis, before_clients) = (cpus(), redis_cpu(), clients.cpu());
    let published = SystemTime::now();
    fleet.publish(addrs[0], n)?;
    let last = clients.answers(&n.to_string())?;
    let result = HostsResult {
        connect,
        notify_to_last: last.duration_since(published).unwrap_or_default(),
        hosts_notify_cpu: since(cpus(), &before_cpu),
        hosts_cpu: since(cpus(), &start_cpu),
        redis_notify_cpu: redis_cpu().saturating_sub(before_redis),
        redis_cpu: redis_cpu().saturating_sub(start_redis),
        clients_notify_cpu: clients.cpu().since(before_clients),
    };
    clients.finish();
    drop(servers);
    drop(redis);
    Ok(result)
}

fn median_of(rs: &[HostsResult], f: impl Fn(&HostsResult) -> f64) -> f64 {
    median(&rs.iter().map(f).collect::<Vec<_>>())
}

fn report(n: usize, results: &[(String, Vec<HostsResult>, Option<String>)]) -> String {
    let mut out = format!(
        "\n{n} waiters across hosts, medians over runs (min..max for notify->last)\n\
         {:<20} {:>9} {:>22} {:>16} {:>14} {:>11} {:>13}\n",
        "fleet",
        "connect s",
        "notify->last s",
        "host cpu s",
        "fan-out cpu s",
        "redis cpu s",
        "redis fan-out"
    );
    for (name, rs, failure) in results {
        if let Some(why) = failure {
            out.push_str(&format!("{name:<20} skipped: {why}\n"));
            continue;
        }
        if rs.is_empty() {
            continue;
        }
        let hosts = rs[0].hosts_cpu.len();
        let per_host = (0..hosts)
            .map(|h| format!("{:.3}", median_of(rs, |r| r.hosts_cpu[h].as_secs_f64())))
            .collect::<Vec<_>>()
            .join("+");
        let fanout = (0..hosts)
            .map(|h| {
                format!(
                    "{:.3}",
                    median_of(rs, |r| r.hosts_notify_cpu[h].as_secs_f64())
                )
            })
            .collect::<Vec<_>>()
            .join("+");
        let notify: Vec<f64> = rs.iter().map(|r| r.notify_to_last.as_secs_f64()).collect();
        let (lo, hi) = notify
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        out.push_str(&format!(
            "{name:<20} {:>9.3} {:>22} {per_host:>16} {fanout:>14} {:>11.3} {:>13.3}\n",
            median_of(rs, |r| r.connect.as_secs_f64()),
            format!("{:.3} ({lo:.3}..{hi:.3})", median(&notify)),
            median_of(rs, |r| r.redis_cpu.as_secs_f64()),
            median_of(rs, |r| r.redis_notify_cpu.as_secs_f64()),
        ));
        out.push_str(&format!(
            "{:<20} all hosts + redis over the run: {:.2} s\n",
            "",
            median_of(rs, |r| sum(&r.hosts_cpu) + r.redis_cpu.as_secs_f64())
        ));
    }
    let notify = |name: &str| {
        results
            .iter()
            .find(|(n, rs, f)| n == name && f.is_none() && !rs.is_empty())
            .map(|(_, rs, _)| median_of(rs, |r| r.notify_to_last.as_secs_f64()))
    };
    let mut targets = Targets::default();
    if let (Some(two), Some(one)) = (notify("miohttpd 2 hosts"), notify("miohttpd 1 host")) {
        targets.check(
            "notify->last, miohttpd 2 hosts / 1 host",
            two / one,
            Bound::AtMost(1.5),
            None,
        );
    }
    if let (Some(two), Some(nchan)) = (notify("miohttpd 2 hosts"), notify("nchan+redis 2 hosts")) {
        targets.check(
            "notify->last, miohttpd 2 hosts / nchan+redis 2 hosts",
            two / nchan,
            Bound::AtMost(1.0),
            None,
        );
    }
    if let (Some(two), Some(one)) = (notify("nchan+redis 2 hosts"), notify("nchan+redis 1 host")) {
        out.push_str(&format!(
            "\nfor reference: notify->last, nchan+redis 2 hosts / 1 host: {:.3}\n",
            two / one
        ));
    }
    out.push_str(&targets.render("cross-host targets (ratios of medians from this run)"));
    out
}

/// `comet-hosts.svg`: notify to last answer against the host count, one line per server.
fn write_chart(
    dir: &Path,
    n: usize,
    runs: usize,
    fleets: &[Fleet],
    results: &[(String, Vec<HostsResult>, Option<String>)],
) {
    let mut series: Vec<Series> = Vec::new();
    for (fleet, (_, rs, failure)) in fleets.iter().zip(results) {
        let name = match fleet.kind {
            Kind::Miohttpd => "miohttpd --redis",
            Kind::NchanRedis => "nginx+nchan, Redis storage",
        };
        if failure.is_some() || rs.is_empty() {
            continue;
        }
        let point = (
            fleet.hosts as f64,
            median_of(rs, |r| r.notify_to_last.as_secs_f64()),
        );
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(Series {
                name: name.into(),
                points: vec![point],
            }),
        }
    }
    let chart = LineChart {
        title: format!("Comet across hosts on one Redis: publish -> last of {n} answers"),
        note: format!(
            "cargo bench --bench comet -- --cross-host; median of {runs} run(s); {n} waiters over the hosts; 2 cores shared, unpinned"
        ),
        x_label: "hosts".into(),
        y_label: "publish -> last answer (s)".into(),
        x_scale: Scale::Linear,
        series,
    };
    let path = dir.join("comet-hosts.svg");
    match chart.write(&path) {
        Ok(()) => println!("comet: wrote {}", path.display()),
        Err(e) => eprintln!("comet: cannot write {}: {e}", path.display()),
    }
}
