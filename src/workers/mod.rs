//! N worker processes behaving as one server (`--workers N|auto`). The process the user
//! starts becomes a supervisor ([`supervisor`]): it makes the listeners, starts the workers,
//! restarts one that dies and passes shutdown signals on; it serves no client. Each worker is
//! today's single-threaded loop ([`crate::Server`]) on listeners it inherits.
//!
//! A worker is the same binary started again (`/proc/self/exe`, same arguments) with
//! [`WORKER_ENV`] naming its index and the descriptors it inherits, rather than a bare
//! fork: the exec gives it a clean process (no copy of the supervisor's poll, signal pipe or
//! other workers' links) and runs the program's own `main`, so a library user's
//! `serve_from_args(router)` rebuilds the user's own `Router` in every worker.
//!
//! `--workers 1` (the default) never reaches this module: one process, no supervisor, no bus;
//! except with `--redis`, whose link lives in the supervisor's hub ([`across`]), which then
//! runs one worker.

pub mod across;
pub mod link;
pub mod metrics;
pub mod supervisor;

use std::fmt;
use std::os::fd::RawFd;
use std::str::FromStr;

use crate::bus::{self, Frame};
use crate::config::Config;
use crate::router::Service;
use crate::server::{Server, Stopped};

/// `--workers`: how many worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Count(usize),
    /// One per CPU in this process's affinity mask.
    Auto,
}

/// The most workers: far above any core count worth pinning to, low enough that a typo
/// cannot fork-bomb the host.
pub const MAX_WORKERS: usize = 512;

impl Workers {
    /// How many workers this means on this host (at least 1).
    pub fn resolve(self) -> usize {
        match self {
            Workers::Count(n) => n.max(1),
            Workers::Auto => allowed_cpus().len().clamp(1, MAX_WORKERS),
        }
    }
}

impl FromStr for Workers {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        if v == "auto" {
            return Ok(Workers::Auto);
        }
        match v.parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Workers::Count(n)),
            _ => Err(format!("expected auto or 1..={MAX_WORKERS}, got {v}")),
        }
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Count(n) => write!(f, "{n}"),
            Workers::Auto => f.write_str("auto"),
        }
    }
}

/// `--accept-model`: how workers share a `--listen` address (the two models nginx offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptModel {
    /// Every worker its own SO_REUSEPORT listener; the kernel hashes connections over them.
    ReusePort,
    /// One listener in every worker's poll, added with EPOLLEXCLUSIVE so a connection wakes
    /// one worker; whoever accepts first takes it.
    Shared,
}

impl FromStr for AcceptModel {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v {
            "reuseport" => Ok(AcceptModel::ReusePort),
            "shared" => Ok(AcceptModel::Shared),
            _ => Err(format!("expected reuseport or shared, got {v}")),
        }
    }
}

impl fmt::Display for AcceptModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcceptModel::ReusePort => "reuseport",
            AcceptModel::Shared => "shared",
        })
    }
}

/// `--worker-cpu-affinity`: which CPU each worker is pinned to (nginx's
/// `worker_cpu_affinity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuAffinity {
    Off,
    /// Worker i on the i-th CPU of the affinity mask (wrapping).
    Auto,
    /// Worker i on the i-th CPU of this list (wrapping).
    List(Vec<usize>),
}

impl CpuAffinity {
    /// The CPU of each of `workers` workers, or `None` when off.
    pub fn cpus(&self, workers: usize) -> Option<Vec<usize>> {
        let pool = match self {
            CpuAffinity::Off => return None,
            CpuAffinity::Auto => allowed_cpus(),
            CpuAffinity::List(list) => list.clone(),
        };
        if pool.is_empty() {
            return None;
        }
        Some((0..workers).map(|i| pool[i % pool.len()]).collect())
    }
}

/// Highest CPU number a list may name (the size of the kernel's `cpu_set_t`).
const MAX_CPU: usize = 1023;

impl FromStr for CpuAffinity {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        match v {
            "off" => return Ok(CpuAffinity::Off),
            "auto" => return Ok(CpuAffinity::Auto),
            _ => {}
        }
        let bad = || format!("expected auto, off or a CPU list like 0,2,4-7, got {v}");
        let mut list = Vec::new();
        for part in v.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            let first: usize = first.parse().map_err(|_| bad())?;
            let last: usize = last.parse().map_err(|_| bad())?;
            if first > last || last > MAX_CPU {
                return Err(bad());
            }
            list.extend(first..=last);
        }
        Ok(CpuAffinity::List(list))
    }
}

impl fmt::Display for CpuAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuAffinity::Off => f.write_str("off"),
            CpuAffinity::Auto => f.write_str("auto"),
            CpuAffinity::List(list) => {
                let parts: Vec<String> = list.iter().map(usize::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    crate::sys::allowed_cpus().unwrap_or_else(|_| vec![0])
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

/// The environment variable that makes a process a worker: `INDEX BUS_FD MODEL FD,FD,...`
/// (its index, its end of the bus link, the accept model, the listeners it inherits). Set
/// only by the supervisor for the process it starts; removed as soon as it is read.
pub const WORKER_ENV: &str = "MIOHTTPD_WORKER";

/// What the supervisor told a worker through [`WORKER_ENV`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub index: u16,
    pub bus_fd: RawFd,
    pub model: AcceptModel,
    pub listener_fds: Vec<RawFd>,
}

impl WorkerSpec {
    pub fn to_env(&self) -> String {
        let fds: Vec<String> = self.listener_fds.iter().map(RawFd::to_string).collect();
        format!(
            "{} {} {} {}",
            self.index,
            self.bus_fd,
            self.model,
            fds.join(",")
        )
    }

    pub fn parse(text: &str) -> Option<WorkerSpec> {
        let mut parts = text.split(' ');
        let index = parts.next()?.parse().ok()?;
        let bus_fd = parts.next()?.parse().ok()?;
        let model = parts.next()?.parse().ok()?;
        let listener_fds = parts
            .next()?
            .split(',')
            .map(|fd| fd.parse().ok())
            .collect::<Option<Vec<RawFd>>>()?;
        if parts.next().is_some() || listener_fds.is_empty() {
            return None;
        }
        Some(WorkerSpec {
            index,
            bus_fd,
            model,
            listener_fds,
        })
    }

    /// This process's spec if the supervisor started it as a worker; the variables are
    /// removed so nothing the worker runs inherits them. Exits (status 2) when the variable
    /// is there but malformed: a worker that cannot find its descriptors must not guess.
    pub fn take() -> Option<WorkerSpec> {
        let text = std::env::var(WORKER_ENV).ok()?;
        std::env::remove_var(WORKER_ENV);
        match WorkerSpec::parse(&text) {
            Some(spec) => Some(spec),
            None => {
                eprintln!("miohttpd: ${WORKER_ENV} is malformed: {text:?}");
                std::process::exit(2);
            }
        }
    }
}

/// A worker's life: adopt the inherited link and listeners, greet the hub, and run today's
/// loop on them. The worker prints no listening line (the supervisor did) and tells systemd
/// nothing (the supervisor is the service's main process).
pub fn serve_as_worker<S: Service>(
    spec: WorkerSpec,
    mut config: Config,
    make_service: impl FnOnce(&Config) -> S,
) -> ! {
    let fail = |what: &str, e: std::io::Error| -> ! {
        eprintln!("miohttpd: worker {}: {what}: {e}", spec.index);
        std::process::exit(1);
    };
    // The supervisor serves --admin-listen (every worker's counters); a worker binds nothing
    // there but still hides /metrics on the main listeners.
    config.admin_served_by_supervisor = true;
    // The supervisor prints --stats-interval for every worker and in total.
    config.stats_interval = std::time::Duration::ZERO;
    let mut bus_link = match crate::sys::adopt_inherited_unix_stream(spec.bus_fd) {
        Ok(link) => link,
        Err(e) => fail("bus link", e),
    };
    let mut hello = Vec::new();
    bus::encode(
        &Frame::Hello {
            worker: spec.index,
            pid: std::process::id(),
        },
        &mut hello,
    )
    .expect("a hello frame fits");
    if let Err(e) = std::io::Write::write_all(&mut bus_link, &hello) {
        fail("bus link", e);
    }
    let listeners = spec
        .listener_fds
        .iter()
        .map(|&fd| crate::sys::adopt_inherited_listener(fd))
        .collect::<std::io::Result<Vec<_>>>();
    let listeners = match listeners {
        Ok(listeners) => listeners,
        Err(e) => fail("inherited listener", e),
    };
    if let Err(e) = crate::sys::raise_open_files_limit() {
        eprintln!("miohttpd: cannot raise the open-files limit: {e}");
    }
    let service = make_service(&config);
    let mut server = match Server::with_listeners(config, listeners, service) {
        Ok(server) => server,
        Err(e) => fail("cannot serve", e),
    };
    if spec.model == AcceptModel::Shared {
        if let Err(e) = server.accept_exclusively() {
            fail("EPOLLEXCLUSIVE", e);
        }
    }
    // The hub's replay and welcome first, so this worker's history and ids are the
    // server's before it serves a client.
    let link = match link::WorkerLink::new(bus_link) {
        Ok(link) => link,
        Err(e) => fail("waiting for the hub", e),
    };
    if let Err(e) = server.attach_link(link) {
        fail("bus link", e);
    }
    let stopped = server.run();
    match stopped {
        Ok(Stopped::Gracefully) => std::process::exit(0),
        Ok(Stopped::AtOnce) => std::process::exit(1),
        Err(e) => fail("event loop failed", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_show_back() {
        for text in ["1", "4", "auto"] {
            assert_eq!(text.parse::<Workers>().unwrap().to_string(), text);
        }
        for bad in ["0", "-1", "", "many", "513"] {
            assert!(bad.parse::<Workers>().is_err(), "{bad}");
        }
        for text in ["reuseport", "shared"] {
            assert_eq!(text.parse::<AcceptModel>().unwrap().to_string(), text);
        }
        assert!("both".parse::<AcceptModel>().is_err());
        assert_eq!(
            "0,2,4-6".parse::<CpuAffinity>().unwrap(),
            CpuAffinity::List(vec![0, 2, 4, 5, 6])
        );
        for bad in ["", "1-", "3-1", "x", "1,,2", "2000"] {
            assert!(bad.parse::<CpuAffinity>().is_err(), "{bad}");
        }
        assert_eq!(
            CpuAffinity::List(vec![1, 3]).cpus(3),
            Some(vec![1, 3, 1]),
            "wraps"
        );
        assert_eq!(CpuAffinity::Off.cpus(3), None);
        assert!(Workers::Auto.resolve() >= 1);
    }

    #[test]
    fn worker_spec_round_trips_and_refuses_junk() {
        let spec = WorkerSpec {
            index: 3,
            bus_fd: 7,
            model: AcceptModel::Shared,
            listener_fds: vec![8, 9],
        };
        let back = WorkerSpec::parse(&spec.to_env()).unwrap();
        assert_eq!(back, spec);
        for bad in [
            "",
            "1 2",
            "1 2 shared",
            "1 2 shared ",
            "x 2 shared 3",
            "1 2 shared 3 4",
        ] {
            assert_eq!(WorkerSpec::parse(bad), None, "{bad:?}");
        }
    }
}
