//! A process seen through `/proc`: its user and system CPU time, memory, open fds and allowed
//! cores; and pinning, so a load generator and the server it measures never share a core.

use std::process::Command;
use std::time::Duration;

/// The core the load generator (the driver itself, or wrk) runs on.
pub const CLIENT_CORE: &str = "0";
/// The core every server runs on.
pub const SERVER_CORE: &str = "1";
/// Set on a re-executed driver so a failed pin cannot loop.
const PINNED_ENV: &str = "MIOHTTPD_BENCH_PINNED";
/// `/proc/PID/stat` counts CPU in clock ticks of 10 ms (USER_HZ = 100 on Linux).
const TICK: Duration = Duration::from_millis(10);

/// Re-executes this driver under `taskset -c 0` unless it already runs on core 0 alone.
/// Returns whether driver and servers can be pinned to separate cores.
pub fn pin_self_to_client_core(driver: &str) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus_allowed("self").as_deref() == Some(CLIENT_CORE) {
        return true;
    }
    if std::env::var_os(PINNED_ENV).is_some() || cores < 2 {
        eprintln!(
            "{driver}: warning: not pinned (cores available: {cores}); numbers will be noisy"
        );
        return false;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let err = {
        use std::os::unix::process::CommandExt;
        Command::new("taskset")
            .arg("-c")
            .arg(CLIENT_CORE)
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(PINNED_ENV, "1")
            .exec()
    };
    eprintln!("{driver}: warning: cannot re-exec under taskset ({err}); running unpinned");
    false
}

/// `cmd` run under `taskset -c CORE` when `pin`; taskset execs the program, so the PID of the
/// child is the program's own.
pub fn pinned_to(core: &str, cmd: Command, pin: bool) -> Command {
    if !pin {
        return cmd;
    }
    let mut t = Command::new("taskset");
    t.arg("-c").arg(core).arg(cmd.get_program());
    t.args(cmd.get_args());
    t.envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    if let Some(dir) = cmd.get_current_dir() {
        t.current_dir(dir);
    }
    t
}

/// `Cpus_allowed_list` from `/proc/<pid>/status`, e.g. "0" or "0-1".
pub fn cpus_allowed(pid: &str) -> Option<String> {
    status_field(pid, "Cpus_allowed_list:")
}

/// One field of `/proc/<pid>/status` (`pid` may be `self`), its value trimmed.
pub fn status_field(pid: &str, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_value(&status, field)
}

fn status_value(status: &str, field: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
}

/// Resident and peak resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

pub fn memory(pid: u32) -> Memory {
    Memory::from_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
}

impl Memory {
    fn from_status(status: &str) -> Memory {
        let kib = |field| {
            status_value(status, field)
                .and_then(|v| v.trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        Memory {
            rss: kib("VmRSS:"),
            peak: kib("VmHWM:"),
        }
    }
}

/// User and system CPU time of a process (all its threads), from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTimes {
    pub fn of(pid: u32) -> CpuTimes {
        CpuTimes::from_stat(
            &std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
        )
    }

    /// utime and stime, fields 14 and 15 of a `/proc/PID/stat` line; zero if it is not one.
    pub fn from_stat(stat: &str) -> CpuTimes {
        // The fields after the command name (which may hold spaces and parentheses) start at
        // the last `) `; utime and stime are the 12th and 13th after it.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        };
        CpuTimes {
            user: TICK * ticks(11),
            sys: TICK * ticks(12),
        }
    }

    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }

    pub fn total(self) -> Duration {
        self.user + self.sys
    }
}

/// CPU time of every thread of `pid` (Go runs several), from `/proc/PID/task/*/schedstat`,
/// whose first field is nanoseconds on CPU: finer than the ticks of [`CpuTimes`].
pub fn scheduled_time(pid: u32) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += schedstat_on_cpu(&stat)?;
    }
    Some(total)
}

fn schedstat_on_cpu(schedstat: &str) -> Option<Duration> {
    Some(Duration::from_nanos(
        schedstat.split_whitespace().next()?.parse().ok()?,
    ))
}

/// How many fds the process has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `pid` and every process below it (a supervisor and its workers, nginx's master and its
/// workers), parents first, from `/proc/PID/task/TID/children`.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut at = 0;
    while at < tree.len() {
        let parent = tree[at];
        at += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            tree.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    tree
}

/// The processes of a server that forks: their CPU, memory and fds summed. A process that
/// exits between two readings takes its CPU with it: compare trees only while none dies.
pub fn tree_cpu(pid: u32) -> CpuTimes {
    process_tree(pid)
        .into_iter()
        .map(CpuTimes::of)
        .fold(CpuTimes::default(), |a, b| CpuTimes {
            user: a.user + b.user,
            sys: a.sys + b.sys,
        })
}

/// RSS and peak RSS summed over `pid`'s tree (peaks need not coincide: an upper bound).
pub fn tree_memory(pid: u32) -> Memory {
    process_tree(pid)
        .into_iter()
        .map(memory)
        .fold(Memory::default(), |a, b| Memory {
            rss: a.rss + b.rss,
            peak: a.peak + b.peak,
        })
}

/// Open fds summed over `pid`'s tree.
pub fn tree_fds(pid: u32) -> usize {
    process_tree(pid).into_iter().map(open_fds).sum()
}

/// The cores this process may run on, from its affinity mask (`Cpus_allowed_list`).
pub fn allowed_cores() -> Vec<usize> {
    cpus_allowed("self")
        .and_then(|list| parse_core_list(&list))
        .unwrap_or_else(|| {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
        })
}

/// "0-2,5" as [0, 1, 2, 5].
pub fn parse_core_list(list: &str) -> Option<Vec<usize>> {
    let mut cores = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cores.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
            None => cores.push(part.trim().parse().ok()?),
        }
    }
    (!cores.is_empty()).then_some(cores)
}

/// [0, 1, 2, 5] as "0,1,2,5", for taskset and nginx.
pub fn core_list(cores: &[usize]) -> String {
    cores
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1021 0 0 0 \
                    731 268 0 0 20 0 1 0 12345 9000000 500 18446744073709551615";
        assert_eq!(
            CpuTimes::from_stat(stat),
            CpuTimes {
                user: Duration::from_millis(7310),
                sys: Duration::from_millis(2680)
            }
        );
        assert_eq!(CpuTimes::from_stat(""), CpuTimes::default());
    }

    #[test]
    fn since_never_goes_negative() {
        let a = CpuTimes {
            user: Duration::from_millis(30),
            sys: Duration::from_millis(10),
        };
        let b = CpuTimes {
            user: Duration::from_millis(50),
            sys: Duration::from_millis(5),
        };
        assert_eq!(
            b.since(a),
            CpuTimes {
                user: Duration::from_millis(20),
                sys: Duration::ZERO
            }
        );
        assert_eq!(b.since(a).total(), Duration::from_millis(20));
    }

    #[test]
    fn memory_and_fields_come_from_status_lines() {
        let status = "Name:\tmiohttpd\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\n\
                      Cpus_allowed_list:\t1\n";
        assert_eq!(
            Memory::from_status(status),
            Memory {
                rss: 8192 * 1024,
                peak: 10240 * 1024
            }
        );
        assert_eq!(
            status_value(status, "Cpus_allowed_list:").as_deref(),
            Some("1")
        );
        assert_eq!(status_value(status, "Uid:"), None);
    }

    #[test]
    fn schedstat_first_field_is_nanoseconds() {
        assert_eq!(
            schedstat_on_cpu("123456789 2000 31\n"),
            Some(Duration::from_nanos(123_456_789))
        );
        assert_eq!(schedstat_on_cpu(""), None);
    }

    #[test]
    fn core_lists_parse_and_print() {
        assert_eq!(parse_core_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_core_list("1"), Some(vec![1]));
        assert_eq!(parse_core_list(""), None);
        assert_eq!(parse_core_list("a"), None);
        assert_eq!(core_list(&[0, 1, 2, 5]), "0,1,2,5");
        assert!(!allowed_cores().is_empty());
    }

    #[test]
    fn a_process_tree_holds_the_children() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let me = std::process::id();
        let tree = process_tree(me);
        assert_eq!(tree[0], me);
        assert!(tree.contains(&child.id()), "{tree:?}");
        assert!(tree_memory(me).rss >= memory(me).rss);
        assert!(tree_fds(me) >= open_fds(me));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn this_process_is_visible() {
        let me = std::process::id();
        assert!(open_fds(me) >= 3, "stdin, stdout, stderr at least");
        assert!(memory(me).rss > 0);
        assert!(cpus_allowed("self").is_some());
    }
}
