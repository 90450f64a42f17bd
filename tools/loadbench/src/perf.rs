//! Watching a running server from outside: its syscalls counted with `perf stat` on the
//! syscall tracepoints (cheap), else `strace -c -f` (slows every syscall, so only in runs kept
//! apart from the timed ones); and where its kernel time goes, sampled with `perf record -g`
//! and split by syscall path. Each tool is stopped with SIGINT and its summary parsed here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cpu::{pinned_to, CLIENT_CORE};
use crate::peers::{apt_install, have_command};

/// Time for perf or strace to attach before the load starts.
const ATTACH_DELAY: Duration = Duration::from_millis(400);
/// Every syscall entry, and the epoll waits among them (mio and nginx call epoll_wait, Go
/// epoll_pwait).
const PERF_EVENTS: &str =
    "raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait";
const WAIT_SYSCALLS: [&str; 2] = ["epoll_wait", "epoll_pwait"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallTool {
    Perf,
    Strace,
}

impl SyscallTool {
    pub fn describe(self) -> &'static str {
        match self {
            SyscallTool::Perf => "perf stat -e raw_syscalls:sys_enter (+ epoll waits)",
            SyscallTool::Strace => "strace -c -f",
        }
    }

    fn program_and_package(self) -> (&'static str, &'static str) {
        match self {
            SyscallTool::Perf => ("perf", "linux-perf"),
            SyscallTool::Strace => ("strace", "strace"),
        }
    }

    /// The arguments that count into `output`, before the `-p PID` or command.
    fn counting_args(self, output: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = match self {
            SyscallTool::Perf => ["stat", "-x,", "-e", PERF_EVENTS, "-o"]
                .map(Into::into)
                .into(),
            SyscallTool::Strace => ["-c", "-f", "-o"].map(Into::into).into(),
        };
        args.push(output.into());
        args
    }

    fn parse(self, text: &str) -> Option<SyscallCount> {
        match self {
            SyscallTool::Perf => perf_stat_count(text),
            SyscallTool::Strace => strace_count(text),
        }
    }
}

/// A server's syscalls over one run: all of them, and its epoll waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyscallCount {
    pub total: u64,
    pub waits: u64,
}

/// perf or strace attached to a server for one run.
pub struct SyscallCounter {
    tool: SyscallTool,
    child: Child,
    output: PathBuf,
}

impl SyscallCounter {
    /// Attaches `tool` to `pid` (itself on the client core when `pin`), its summary going to a
    /// file in `scratch`.
    pub fn attach(
        tool: SyscallTool,
        pid: u32,
        pin: bool,
        scratch: &Path,
    ) -> Result<SyscallCounter, String> {
        let output = scratch.join(format!("syscalls-{pid}.txt"));
        let (program, _) = tool.program_and_package();
        let mut cmd = Command::new(program);
        cmd.args(tool.counting_args(&output));
        let child = attach_quietly(cmd, pid, pin, program)?;
        Ok(SyscallCounter {
            tool,
            child,
            output,
        })
    }

    /// Stops the counter with SIGINT (both print their summary on it) and reads the count.
    pub fn finish(mut self) -> Result<SyscallCount, String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.output)
            .map_err(|e| format!("{:?} left no output: {e}", self.tool))?;
        let _ = std::fs::remove_file(&self.output);
        self.tool
            .parse(&text)
            .ok_or_else(|| format!("no syscall count in {:?}'s output:\n{text}", self.tool))
    }
}

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
pub fn perf_stat_count(text: &str) -> Option<SyscallCount> {
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
pub fn strace_count(text: &str) -> Option<SyscallCount> {
    Some(SyscallCount {
        total: strace_calls(text, "total")?,
        waits: WAIT_SYSCALLS
            .iter()
            .filter_map(|w| strace_calls(text, w))
            .sum(),
    })
}

/// The calls of one syscall (or `total`) in `strace -c`'s table. The errors column is empty
/// for a syscall that never failed, so the calls are the fourth column either way.
fn strace_calls(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.last() == Some(&name))
        .and_then(|cols| cols.get(3)?.parse::<u64>().ok())
}

/// perf if it can count syscall tracepoints here, else strace; installs either when missing.
pub fn pick_syscall_tool(driver: &str, scratch: &Path) -> Option<SyscallTool> {
    for tool in [SyscallTool::Perf, SyscallTool::Strace] {
        match syscall_tool_works(driver, tool, scratch) {
            Ok(()) => return Some(tool),
            Err(why) => println!("{driver}: {why}"),
        }
    }
    println!("{driver}: no way to count syscalls here; that column stays empty");
    None
}

/// Installs `tool` when missing and checks it counts the syscalls of `true`.
pub fn syscall_tool_works(driver: &str, tool: SyscallTool, scratch: &Path) -> Result<(), String> {
    let (program, package) = tool.program_and_package();
    if !have_command(program, "--version") {
        apt_install(driver, &[package])?;
    }
    let output = scratch.join(format!("probe-{program}.txt"));
    let probe = Command::new(program)
        .args(tool.counting_args(&output))
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    let _ = std::fs::remove_file(&output);
    if probe.status.success() && tool.parse(&text).is_some() {
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

/// The kernel paths a request's CPU is split into: (label, the functions whose inclusive
/// samples make it up). Each function is the one point every call of that syscall passes, as
/// perf resolves it (writev's `__x64_sys_writev` is often a tail call perf does not see).
const KERNEL_PATHS: [(&str, &[&str]); 4] = [
    (
        "send",
        &["__sys_sendto", "___sys_sendmsg", "do_writev", "ksys_write"],
    ),
    ("recv", &["__sys_recvfrom", "___sys_recvmsg", "ksys_read"]),
    ("epoll", &["do_epoll_wait"]),
    ("ep_send_events", &["ep_send_events"]),
];

/// Where a process's CPU went over one run, from `perf record -g` (cpu-clock samples).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Sampled CPU time, all of it.
    pub sampled: Duration,
    /// Share of the samples in the kernel (self time in `[k]` symbols), 0..1.
    pub kernel: f64,
    /// Share of the samples under each kernel path (send, recv, epoll, and epoll's
    /// ep_send_events), in that order, 0..1.
    pub paths: Vec<(&'static str, f64)>,
}

impl Profile {
    /// (label, µs per request) for the kernel as a whole and then each path.
    pub fn per_request(&self, requests: u64) -> Vec<(&'static str, f64)> {
        let us = self.sampled.as_secs_f64() * 1e6 / requests.max(1) as f64;
        std::iter::once(("kernel", self.kernel * us))
            .chain(self.paths.iter().map(|&(label, share)| (label, share * us)))
            .collect()
    }
}

/// `perf report --children --sort sym --stdio -g none` output, parsed: the event count (ns of
/// cpu-clock), the kernel's self share, and the inclusive share of each kernel path.
pub fn parse_perf_report(text: &str) -> Option<Profile> {
    let nanos: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("# Event count (approx.):"))?
        .trim()
        .parse()
        .ok()?;
    // `    60.35%     0.11%  [k] __x64_sys_sendto`: children, self, space, symbol.
    let rows: Vec<(f64, f64, bool, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let children = cols.next()?.strip_suffix('%')?.parse().ok()?;
            let own = cols.next()?.strip_suffix('%')?.parse().ok()?;
            let kernel = cols.next()? == "[k]";
            Some((children, own, kernel, cols.next()?))
        })
        .collect();
    let share = |symbol: &str| {
        rows.iter()
            .find(|r| r.3 == symbol)
            .map_or(0.0, |r| r.0 / 100.0)
    };
    Some(Profile {
        sampled: Duration::from_nanos(nanos),
        kernel: rows.iter().filter(|r| r.2).map(|r| r.1).sum::<f64>() / 100.0,
        paths: KERNEL_PATHS
            .iter()
            .map(|&(label, symbols)| (label, symbols.iter().map(|s| share(s)).sum()))
            .collect(),
    })
}

/// `perf record -g` attached to a server for one run.
pub struct Recorder {
    child: Child,
    output: PathBuf,
}

impl Recorder {
    pub fn attach(pid: u32, pin: bool, scratch: &Path) -> Result<Recorder, String> {
        let output = scratch.join(format!("profile-{pid}.data"));
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-q", "-g", "-o"]).arg(&output);
        let child = attach_quietly(cmd, pid, pin, "perf record")?;
        Ok(Recorder { child, output })
    }

    /// Stops the recording (SIGINT) and reads the report.
    pub fn finish(mut self) -> Result<Profile, String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let report = Command::new("perf")
            .args([
                "report",
                "--children",
                "--sort",
                "sym",
                "--stdio",
                "-g",
                "none",
                "-i",
            ])
            .arg(&self.output)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("perf report: {e}"))?;
        let _ = std::fs::remove_file(&self.output);
        let text = String::from_utf8_lossy(&report.stdout);
        parse_perf_report(&text)
            .ok_or_else(|| format!("no profile in perf report's output:\n{text}"))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `cmd` (perf or strace) attached to the server `pid` with its output discarded,
/// pinned to the client core, and gives it time to attach before the load starts.
fn attach_quietly(mut cmd: Command, pid: u32, pin: bool, what: &str) -> Result<Child, String> {
    cmd.args(["-p", &pid.to_string()]);
    let child = pinned_to(CLIENT_CORE, cmd, pin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    std::thread::sleep(ATTACH_DELAY);
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `perf stat -x, -e ... -p PID` as captured against miohttpd (perf 6.1).
    const PERF_STAT: &str = "\
# started on Wed Dec  2 04:10:11 2026

2021770,,raw_syscalls:sys_enter,5012431877,100.00,,
23361,,syscalls:sys_enter_epoll_wait,5012431877,100.00,,
<not counted>,,syscalls:sys_enter_epoll_pwait,0,100.00,,
";

    /// `strace -c -f -p PID` as captured against nginx's worker (strace 6.1).
    const STRACE_C: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 52.13    0.170095          39      4304           writev
 40.33    0.131588          30      4304           recvfrom
  1.02    0.004293          95        45           epoll_wait
  1.10    0.004630          45       102         1 accept4
------ ----------- ----------- --------- --------- ----------------
100.00    0.326283          37      8755         1 total
";

    #[test]
    fn perf_stat_counts_all_syscalls_and_the_waits() {
        assert_eq!(
            perf_stat_count(PERF_STAT),
            Some(SyscallCount {
                total: 2_021_770,
                waits: 23_361
            })
        );
        assert_eq!(perf_stat_count("# started\n\n"), None);
        assert_eq!(
            perf_stat_count("<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n"),
            None
        );
    }

    #[test]
    fn strace_c_counts_the_calls_column_with_or_without_errors() {
        assert_eq!(
            strace_count(STRACE_C),
            Some(SyscallCount {
                total: 8755,
                waits: 45
            })
        );
        assert_eq!(strace_calls(STRACE_C, "accept4"), Some(102));
        assert_eq!(strace_calls(STRACE_C, "writev"), Some(4304));
        assert_eq!(strace_calls(STRACE_C, "sendto"), None);
        assert_eq!(strace_count("strace: Process 1 attached\n"), None);
    }

    /// `perf report --children --sort sym --stdio -g none` of miohttpd under wrk (perf 6.1),
    /// shortened.
    const PERF_REPORT: &str = "\
# Samples: 2K of event 'cpu-clock:pppH'
# Event count (approx.): 664000000
#
# Children      Self  Symbol
# ........  ........  ....................
#
    88.18%     2.15%  [k] do_syscall_64
    62.35%     0.98%  [.] __send
    60.35%     0.11%  [k] __x64_sys_sendto
    60.24%     0.49%  [k] __sys_sendto
    13.63%     0.78%  [k] __sys_recvfrom
    12.37%     0.18%  [k] do_epoll_wait
    10.01%     0.90%  [k] ep_send_events
     4.23%     4.23%  [.] miohttpd::server::conn::Conn<T>::finish_turn
     2.94%     2.94%  [k] tcp_poll
";

    #[test]
    fn a_perf_report_splits_kernel_time_by_path() {
        let p = parse_perf_report(PERF_REPORT).unwrap();
        assert_eq!(p.sampled, Duration::from_millis(664));
        // Self time of the [k] rows: 2.15 + 0.11 + 0.49 + 0.78 + 0.18 + 0.90 + 2.94.
        assert!((p.kernel - 0.0755).abs() < 1e-9, "{}", p.kernel);
        let share = |label| p.paths.iter().find(|x| x.0 == label).unwrap().1;
        assert!((share("send") - 0.6024).abs() < 1e-9);
        assert!((share("recv") - 0.1363).abs() < 1e-9);
        assert!((share("epoll") - 0.1237).abs() < 1e-9);
        // 664 ms over 100,000 requests is 6.64 µs each; the send path is 60.24% of it.
        let per = p.per_request(100_000);
        assert_eq!(per[0].0, "kernel");
        assert!((per[1].1 - 6.64 * 0.6024).abs() < 1e-9);
        assert_eq!(parse_perf_report("# no samples\n"), None);
    }

    #[test]
    fn both_tools_write_their_summary_to_the_given_file() {
        let out = Path::new("/tmp/out.txt");
        let perf = SyscallTool::Perf.counting_args(out);
        assert_eq!(perf.first().map(|a| a.as_os_str()), Some("stat".as_ref()));
        assert_eq!(perf.last().map(|a| a.as_os_str()), Some(out.as_os_str()));
        let strace = SyscallTool::Strace.counting_args(out);
        assert_eq!(strace, ["-c", "-f", "-o", "/tmp/out.txt"]);
    }
}
