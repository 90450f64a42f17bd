//! What the load drivers share: pinning the driver and its servers to separate cores, server
//! child processes killed by PID when dropped, readings of a process from /proc, installing
//! missing tools with apt-get, building the Go peers, and SVG line charts (`svg`).

#![allow(dead_code)] // each driver uses its own subset

pub mod svg;

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const MIOHTTPD: &str = env!("CARGO_BIN_EXE_miohttpd");
pub const CLIENT_CORE: &str = "0";
pub const SERVER_CORE: &str = "1";
/// Set on a re-executed driver so a failed pin cannot loop.
const PINNED_ENV: &str = "MIOHTTPD_BENCH_PINNED";
const START_TIMEOUT: Duration = Duration::from_secs(10);

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

/// `Cpus_allowed_list` from `/proc/<pid>/status`, e.g. "0" or "0-1".
pub fn cpus_allowed(pid: &str) -> Option<String> {
    status_field(pid, "Cpus_allowed_list:")
}

fn status_field(pid: &str, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
}

/// Resident and peak resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

pub fn memory(pid: u32) -> Memory {
    let kib = |field| {
        status_field(&pid.to_string(), field)
            .and_then(|v| v.trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Memory {
        rss: kib("VmRSS:"),
        peak: kib("VmHWM:"),
    }
}

/// User and system CPU time of a process (all its threads), from `/proc/PID/stat`. The kernel
/// counts them in clock ticks, 10 ms here.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTimes {
    pub fn of(pid: u32) -> CpuTimes {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at `) `.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name.
        let tick = Duration::from_millis(10);
        CpuTimes {
            user: tick * ticks(11) as u32,
            sys: tick * ticks(12) as u32,
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

/// A server child process; dropping it kills the process (and with `group`, its process
/// group, for servers like nginx that fork workers) by PID and reaps it.
pub struct Server {
    pub name: String,
    child: Child,
    addr: SocketAddr,
    group: bool,
}

impl Server {
    /// Starts `cmd --listen 127.0.0.1:0` (under `taskset -c 1` when `pin`) and waits for its
    /// one stdout line `<banner> listening on http://127.0.0.1:PORT`.
    pub fn start_with_banner(name: &str, cmd: Command, banner: &str, pin: bool) -> Server {
        let mut cmd = pinned(cmd, pin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", cmd.get_program()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so a chatty server never blocks on a full pipe.
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("{name}: no listening line within {START_TIMEOUT:?}");
            }
        };
        let prefix = format!("{banner} listening on http://");
        let addr = line
            .trim_end_matches(['\r', '\n'])
            .strip_prefix(&prefix)
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("{name}: bad listening line {line:?}, want {prefix}ADDR"));
        Server::announce(Server {
            name: name.to_string(),
            child,
            addr,
            group: false,
        })
    }

    /// Starts a server that listens on `addr` as configured (nginx), in its own process
    /// group, and waits until it accepts connections.
    pub fn start_at(name: &str, cmd: Command, addr: SocketAddr, pin: bool) -> Server {
        use std::os::unix::process::CommandExt;
        let mut cmd = pinned(cmd, pin);
        cmd.stdin(Stdio::null()).process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", cmd.get_program()));
        let server = Server {
            name: name.to_string(),
            child,
            addr,
            group: true,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{name}: not accepting on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server::announce(server)
    }

    fn announce(server: Server) -> Server {
        println!(
            "{}: pid {} on {}, cores {}",
            server.name,
            server.pid(),
            server.addr,
            cpus_allowed(&server.pid().to_string()).unwrap_or_else(|| "?".into())
        );
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process doing the work: the server itself, or nginx's single worker. nginx's
    /// master listens (and the kernel accepts) before it forks the worker, so wait for it.
    pub fn worker_pid(&self) -> u32 {
        if !self.group {
            return self.pid();
        }
        let children = format!("/proc/{pid}/task/{pid}/children", pid = self.pid());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let worker = std::fs::read_to_string(&children)
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok());
            match worker {
                Some(pid) => return pid,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                None => panic!("{}: no worker process under pid {}", self.name, self.pid()),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.group {
            // `--`: without it, kill(1) reads the negative process-group id as an option.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.pid())])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cmd` run under `taskset -c SERVER_CORE` when `pin`; taskset execs the program, so the
/// PID held is the server's own.
fn pinned(cmd: Command, pin: bool) -> Command {
    if !pin {
        return cmd;
    }
    let mut t = Command::new("taskset");
    t.arg("-c").arg(SERVER_CORE).arg(cmd.get_program());
    t.args(cmd.get_args());
    t.envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    t
}

/// A free loopback port, for servers that must be told one.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// A comma-separated list of positive counts, e.g. `10,100,1000`.
pub fn number_list(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|n| match n.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(format!("{n:?} in {text:?} is not a positive count")),
        })
        .collect()
}

pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Whether `program` runs at all (`program ARG` started; its exit status does not matter).
pub fn have_command(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Installs Debian `packages` with apt-get (through sudo when not root). `apt-get update` only
/// when the first attempt fails: it is the slow part, and a fresh machine needs it once.
pub fn apt_install(driver: &str, packages: &[&str]) -> Result<(), String> {
    eprintln!("{driver}: installing {} with apt-get", packages.join(" "));
    let root = status_field("self", "Uid:").is_some_and(|uids| uids.starts_with("0\t"));
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install: Vec<&str> = ["install", "-y", "-qq", "--no-install-recommends"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect();
    if apt(&install) || (apt(&["update", "-qq"]) && apt(&install)) {
        Ok(())
    } else {
        Err(format!("apt-get could not install {}", packages.join(" ")))
    }
}

/// Builds a Go peer from one standard-library-only source file with plain `go build` (GOPATH
/// mode, no network) into `CARGO_TARGET_TMPDIR/peers/NAME`, installing Debian's golang-go
/// first if `go` is missing.
pub fn build_go_peer(driver: &str, source: &Path, name: &str) -> Result<PathBuf, String> {
    if !have_command("go", "version") {
        apt_install(driver, &["golang-go"])?;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("peers");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = dir.join(name);
    let status = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(source)
        .current_dir(&dir)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", dir.join("go-cache"))
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("running go build: {e}"))?;
    if status.success() {
        Ok(out)
    } else {
        Err(format!("go build {} failed ({status})", source.display()))
    }
}
