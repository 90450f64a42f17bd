//! wrk runs: the command line (pinned to the client core, optionally with a Lua script), one
//! measured run against a server (its CPU, fds, and syscalls or a profile when watched), the
//! parse of wrk's report, and a server's runs in one scenario reduced to medians and a table
//! row.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cpu::{pinned_to, tree_cpu, tree_fds, CpuTimes, CLIENT_CORE};
use crate::peers::{apt_install, have_command};
use crate::report::median;

/// A core this busy over a run was the bottleneck.
pub const SATURATED: f64 = 0.9;
use crate::perf::{Profile, Recorder, SyscallCount, SyscallCounter, SyscallTool};

/// wrk, installed with apt-get when missing.
pub fn ensure_wrk(driver: &str) -> Result<(), String> {
    if have_command("wrk", "--version") {
        return Ok(());
    }
    apt_install(driver, &["wrk"])
}

/// What wrk puts on the server: `-tT -cN -dS URL`, and with `script`, `-s SCRIPT URL -- ARGS`.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    pub url: String,
    /// wrk's threads: one per core it may use.
    pub threads: usize,
    pub connections: usize,
    pub seconds: u64,
    pub script: Option<(&'a Path, Vec<String>)>,
    /// The cores wrk is pinned to (a taskset list); `None`: the client core.
    pub cores: Option<String>,
}

impl Load<'_> {
    pub fn command(&self, pin: bool) -> Command {
        let mut wrk = Command::new("wrk");
        wrk.arg(format!("-t{}", self.threads.max(1)))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.seconds));
        if let Some((script, args)) = &self.script {
            wrk.arg("-s")
                .arg(script)
                .arg(&self.url)
                .arg("--")
                .args(args);
        } else {
            wrk.arg(&self.url);
        }
        pinned_to(self.cores.as_deref().unwrap_or(CLIENT_CORE), wrk, pin)
    }
}

/// What wrk reports at its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub requests: u64,
    pub rate: f64,
    /// The socket-error and non-2xx lines, when wrk printed any.
    pub errors: Option<String>,
}

/// Total requests, requests/s, and any error lines from wrk's report.
pub fn parse(out: &str) -> Result<Report, String> {
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
    Ok(Report {
        requests,
        rate,
        errors: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

/// One wrk run against one server process.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub requests: u64,
    pub rate: f64,
    pub wall: Duration,
    pub server_cpu: CpuTimes,
    pub wrk_cpu: CpuTimes,
    /// The server's open fds halfway through: every connection wrk opened should be there.
    pub fds: usize,
    pub errors: Option<String>,
    pub syscalls: Option<SyscallCount>,
    pub profile: Option<Profile>,
}

/// What watches the server during a run, besides its CPU times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Nothing,
    /// Its syscalls counted (perf stat or strace).
    Syscalls(SyscallTool),
    /// Its CPU sampled with call stacks (perf record -g).
    Profile,
}

impl Sample {
    /// `cpu` in ms per 1,000 requests, which is µs per request.
    pub fn per_k(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    pub fn server_busy(&self) -> f64 {
        self.server_cpu.total().as_secs_f64() / self.wall.as_secs_f64()
    }

    pub fn wrk_busy(&self) -> f64 {
        self.wrk_cpu.total().as_secs_f64() / self.wall.as_secs_f64()
    }

    /// One run's line as it happens.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:>9.0} req/s, server {:.2}+{:.2} ms/1k req, server cpu {:>3.0}%, wrk cpu {:>3.0}%, {} fds",
            self.rate,
            self.per_k(self.server_cpu.user),
            self.per_k(self.server_cpu.sys),
            self.server_busy() * 100.0,
            self.wrk_busy() * 100.0,
            self.fds
        );
        let requests = self.requests.max(1) as f64;
        if let Some(n) = self.syscalls {
            let _ = write!(
                line,
                ", {:.3} syscalls/req ({:.3} epoll waits)",
                n.total as f64 / requests,
                n.waits as f64 / requests
            );
        }
        if let Some(profile) = &self.profile {
            for (label, us) in profile.per_request(self.requests) {
                let _ = write!(line, ", {label} {us:.2}");
            }
            line.push_str(" µs/req sampled");
        }
        if let Some(errors) = &self.errors {
            let _ = write!(line, "  ({errors})");
        }
        line
    }
}

/// Which core held a run back: the one at [`SATURATED`] or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Wrk,
    Server,
    Both,
    Neither,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Wrk => "wrk",
            Limit::Server => "server",
            Limit::Both => "both",
            Limit::Neither => "neither",
        }
    }

    /// wrk's core was saturated: req/s is wrk's ceiling, not the server's.
    pub fn wrk_bound(self) -> bool {
        matches!(self, Limit::Wrk | Limit::Both)
    }
}

/// One server's runs in one scenario, by what watched them: timed runs give rates and CPU,
/// counted runs syscalls, profiled runs the kernel time by path. Each figure is a median.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    pub timed: Vec<Sample>,
    pub counted: Vec<Sample>,
    pub profiled: Vec<Sample>,
}

impl Runs {
    pub fn push(&mut self, watch: Watch, sample: Sample) {
        match watch {
            Watch::Nothing => self.timed.push(sample),
            Watch::Syscalls(_) => self.counted.push(sample),
            Watch::Profile => self.profiled.push(sample),
        }
    }

    pub fn median_of(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.timed.iter().map(f).collect::<Vec<_>>())
    }

    pub fn rate(&self) -> f64 {
        self.median_of(|s| s.rate)
    }

    /// Server CPU, user and sys, in ms per 1,000 requests (= µs per request).
    pub fn cpu_per_k(&self) -> (f64, f64) {
        (
            self.median_of(|s| s.per_k(s.server_cpu.user)),
            self.median_of(|s| s.per_k(s.server_cpu.sys)),
        )
    }

    pub fn cpu_total_per_k(&self) -> f64 {
        self.median_of(|s| s.per_k(s.server_cpu.total()))
    }

    pub fn syscalls_per_request(&self) -> Option<f64> {
        self.counted_median(|n| n.total)
    }

    /// epoll_wait calls per request: how often the server ran out of work and slept.
    pub fn waits_per_request(&self) -> Option<f64> {
        self.counted_median(|n| n.waits)
    }

    fn counted_median(&self, f: impl Fn(&SyscallCount) -> u64) -> Option<f64> {
        let v: Vec<f64> = self
            .counted
            .iter()
            .filter_map(|s| Some(f(s.syscalls.as_ref()?) as f64 / s.requests.max(1) as f64))
            .collect();
        (!v.is_empty()).then(|| median(&v))
    }

    /// Median µs per request of the kernel and each kernel path, over the profiled runs.
    pub fn kernel_paths(&self) -> Vec<(&'static str, f64)> {
        let per_run: Vec<Vec<(&'static str, f64)>> = self
            .profiled
            .iter()
            .filter_map(|s| Some(s.profile.as_ref()?.per_request(s.requests)))
            .collect();
        let Some(first) = per_run.first() else {
            return Vec::new();
        };
        (0..first.len())
            .map(|i| {
                let values: Vec<f64> = per_run.iter().map(|r| r[i].1).collect();
                (first[i].0, median(&values))
            })
            .collect()
    }

    pub fn limit(&self) -> Limit {
        match (
            self.median_of(Sample::wrk_busy) >= SATURATED,
            self.median_of(Sample::server_busy) >= SATURATED,
        ) {
            (true, false) => Limit::Wrk,
            (false, true) => Limit::Server,
            (true, true) => Limit::Both,
            (false, false) => Limit::Neither,
        }
    }

    pub fn table_header() -> String {
        format!(
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
        )
    }

    /// The medians under [`Runs::table_header`], and any wrk errors.
    pub fn table_row(&self, name: &str) -> String {
        let or_dash = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let (min, max) = self
            .timed
            .iter()
            .map(|s| s.rate)
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
                (lo.min(r), hi.max(r))
            });
        let (user, sys) = self.cpu_per_k();
        let errors = self.timed.iter().find_map(|s| s.errors.clone());
        format!(
            "{:<34} {:>10.0} {:>21} {:>8.3} {:>8.3} {:>8.3} {:>7.0}% {:>7.0}% {:>10} {:>10} {:>6.0} {:>8}{}",
            name,
            self.rate(),
            format!("{min:.0}..{max:.0}"),
            user,
            sys,
            self.cpu_total_per_k(),
            self.median_of(Sample::server_busy) * 100.0,
            self.median_of(Sample::wrk_busy) * 100.0,
            or_dash(self.syscalls_per_request()),
            or_dash(self.waits_per_request()),
            self.median_of(|s| s.fds as f64),
            self.limit().as_str(),
            errors.map_or(String::new(), |e| format!("  ERRORS: {e}"))
        )
    }
}

/// Runs `load` against the process `server_pid` (it and its children are the CPU that
/// counts: a supervisor and its workers), watched by `watch` (which sees `server_pid` only). Counting and profiling slow the server: keep such runs apart from timed ones.
pub fn measure(
    load: &Load,
    server_pid: u32,
    pin: bool,
    watch: Watch,
    scratch: &Path,
) -> Result<Sample, String> {
    let mut wrk = load.command(pin);
    wrk.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let counter = match watch {
        Watch::Syscalls(tool) => Some(SyscallCounter::attach(tool, server_pid, pin, scratch)?),
        _ => None,
    };
    let recorder = match watch {
        Watch::Profile => Some(Recorder::attach(server_pid, pin, scratch)?),
        _ => None,
    };
    let cpu_before = tree_cpu(server_pid);
    let started = Instant::now();
    let mut child = wrk.spawn().map_err(|e| format!("cannot run wrk: {e}"))?;
    let wrk_pid = child.id();
    std::thread::sleep(Duration::from_millis(load.seconds * 500));
    let fds = tree_fds(server_pid);
    // wrk prints everything at its end, so the pipes never fill before it exits.
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    // Output closed means wrk is exiting: read its CPU before it is reaped.
    let wrk_cpu = cpu_at_exit(wrk_pid);
    let wall = started.elapsed();
    let server_cpu = tree_cpu(server_pid).since(cpu_before);
    let status = child.wait().map_err(|e| format!("wrk: {e}"))?;
    let syscalls = counter.map(SyscallCounter::finish).transpose()?;
    let profile = recorder.map(Recorder::finish).transpose()?;
    if !status.success() {
        return Err(format!("wrk failed ({status}): {out}{err}"));
    }
    let report = parse(&out)?;
    Ok(Sample {
        requests: report.requests,
        rate: report.rate,
        wall,
        server_cpu,
        wrk_cpu,
        fds,
        errors: report.errors,
        syscalls,
        profile,
    })
}

/// wrk's CPU from `/proc/PID/stat` once it has exited but is not yet reaped (a zombie keeps
/// its times there, its threads' included).
fn cpu_at_exit(pid: u32) -> CpuTimes {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk 4.1.0's report, as captured from a keep-alive run.
    const CLEAN: &str = "\
Running 5s test @ http://127.0.0.1:40123/plaintext
  1 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   519.04us  120.55us   3.85ms   87.13%
    Req/Sec   192.92k    11.04k  205.71k    80.00%
  959926 requests in 5.00s, 117.18MB read
Requests/sec: 191962.66
Transfer/sec:     23.43MB
";

    #[test]
    fn a_clean_report_gives_requests_and_rate() {
        assert_eq!(
            parse(CLEAN),
            Ok(Report {
                requests: 959_926,
                rate: 191_962.66,
                errors: None
            })
        );
    }

    #[test]
    fn error_lines_are_kept() {
        let out = "  1000 requests in 5.00s, 1.00MB read\n  Socket errors: connect 0, read 1, \
                   write 0, timeout 0\n  Non-2xx or 3xx responses: 7\nRequests/sec:    200.00\n";
        assert_eq!(
            parse(out),
            Ok(Report {
                requests: 1000,
                rate: 200.0,
                errors: Some(
                    "Socket errors: connect 0, read 1, write 0, timeout 0; \
                     Non-2xx or 3xx responses: 7"
                        .into()
                )
            })
        );
    }

    #[test]
    fn a_report_without_totals_is_an_error() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
        assert!(parse("  10 requests in 1.00s, 1KB read\n").is_err());
    }

    #[test]
    fn the_command_line_has_one_thread_and_the_script_after_the_url() {
        let script = Path::new("/b/pipeline.lua");
        let load = Load {
            url: "http://127.0.0.1:1/plaintext".into(),
            threads: 1,
            connections: 100,
            seconds: 5,
            script: Some((script, vec!["16".into()])),
            cores: None,
        };
        let cmd = load.command(true);
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "taskset");
        assert_eq!(
            args,
            [
                "-c",
                CLIENT_CORE,
                "wrk",
                "-t1",
                "-c100",
                "-d5s",
                "-s",
                "/b/pipeline.lua",
                "http://127.0.0.1:1/plaintext",
                "--",
                "16"
            ]
        );
    }

    fn run(requests: u64, rate: f64, user_ms: u64, sys_ms: u64, wall_ms: u64) -> Sample {
        Sample {
            requests,
            rate,
            wall: Duration::from_millis(wall_ms),
            server_cpu: CpuTimes {
                user: Duration::from_millis(user_ms),
                sys: Duration::from_millis(sys_ms),
            },
            ..Sample::default()
        }
    }

    #[test]
    fn runs_take_medians_of_their_own_kind() {
        let mut runs = Runs::default();
        // 1,000,000 requests each: ms of CPU are µs per request / 1000.
        runs.push(Watch::Nothing, run(1_000_000, 100.0, 500, 4000, 5000));
        runs.push(Watch::Nothing, run(1_000_000, 300.0, 700, 4400, 5000));
        runs.push(Watch::Nothing, run(1_000_000, 200.0, 600, 4200, 5000));
        let mut counted = run(1_000_000, 1.0, 0, 0, 5000);
        counted.syscalls = Some(SyscallCount {
            total: 2_050_000,
            waits: 50_000,
        });
        runs.push(Watch::Syscalls(SyscallTool::Perf), counted);
        assert_eq!(
            runs.rate(),
            200.0,
            "the counted run's rate is not a timed one"
        );
        let (user, sys) = runs.cpu_per_k();
        assert!((user - 0.6).abs() < 1e-9 && (sys - 4.2).abs() < 1e-9);
        assert!((runs.cpu_total_per_k() - 4.8).abs() < 1e-9);
        assert_eq!(runs.syscalls_per_request(), Some(2.05));
        assert_eq!(runs.waits_per_request(), Some(0.05));
        assert!(runs.kernel_paths().is_empty());
        // 4.8 s of CPU in 5 s: the server's core was the limit.
        assert_eq!(runs.limit(), Limit::Server);
        assert!(!runs.limit().wrk_bound());
        let row = runs.table_row("miohttpd");
        assert!(row.starts_with("miohttpd "), "{row}");
        assert!(row.contains("100..300") && row.contains("2.050") && row.ends_with("server"));
    }

    #[test]
    fn per_k_is_microseconds_per_request() {
        let s = Sample {
            requests: 1_000_000,
            ..Sample::default()
        };
        assert!((s.per_k(Duration::from_secs(2)) - 2.0).abs() < 1e-9);
    }
}
