//! A `redis-server` the benchmarks start themselves: on a free loopback port, no persistence,
//! its files in a scratch directory, installed with apt-get when missing, and stopped by PID
//! (never by name) when dropped. Its PID is what the drivers read Redis's CPU from.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers::{apt_install, have_command};
use crate::server::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `redis-server`, installed from Debian's package when missing.
pub fn ensure_redis(driver: &str) -> Result<(), String> {
    if have_command("redis-server", "--version") {
        return Ok(());
    }
    apt_install(driver, &["redis-server"])?;
    if have_command("redis-server", "--version") {
        Ok(())
    } else {
        Err("redis-server still missing after apt-get".into())
    }
}

/// One running `redis-server` this process owns.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts one under `scratch/redis-PORT/`; a start that fails (the port taken between
    /// picking and binding it) is retried on another port.
    pub fn start(scratch: &Path) -> Result<RedisServer, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let addr = free_port();
            let dir = scratch.join(format!("redis-{}", addr.port()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut child = Command::new("redis-server")
                .args(redis_args(addr, &dir))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run redis-server: {e}"))?;
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("redis-server exited ({status}); see {}", dir.display());
                    break;
                }
                if TcpStream::connect(addr).is_ok() {
                    return Ok(RedisServer { child, addr });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            if last.is_empty() {
                last = format!("redis-server not listening within {START_TIMEOUT:?}");
            }
        }
        Err(last)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT`, for `--redis` and `nchan_redis_url`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line: loopback only, nothing saved, logs in `dir`.
fn redis_args(addr: SocketAddr, dir: &Path) -> Vec<String> {
    let dir: PathBuf = dir.into();
    [
        "--port",
        &addr.port().to_string(),
        "--bind",
        &addr.ip().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--dir",
        &dir.display().to_string(),
        "--logfile",
        &dir.join("redis.log").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_runs_on_loopback_without_persistence() {
        let args = redis_args("127.0.0.1:6390".parse().unwrap(), Path::new("/tmp/r"));
        let joined = args.join(" ");
        assert!(joined.starts_with("--port 6390 --bind 127.0.0.1 --save  --appendonly no"));
        assert!(joined.ends_with("--dir /tmp/r --logfile /tmp/r/redis.log"));
    }

    #[test]
    fn a_redis_is_started_answers_and_is_stopped_by_pid() {
        if !have_command("redis-server", "--version") {
            eprintln!("redis-server missing: skipped (scripts/test.sh installs it)");
            return;
        }
        let scratch = std::env::temp_dir().join(format!("loadbench-redis-{}", std::process::id()));
        let redis = RedisServer::start(&scratch).expect("redis starts");
        let pid = redis.pid();
        let mut conn = TcpStream::connect(redis.addr()).unwrap();
        use std::io::{Read, Write};
        conn.write_all(b"PING\r\n").unwrap();
        let mut pong = [0u8; 7];
        conn.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        drop(redis);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "killed and reaped"
        );
        let _ = std::fs::remove_dir_all(scratch);
    }
}
