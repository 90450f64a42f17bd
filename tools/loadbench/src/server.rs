//! A server under test as a child process: started (pinned to the server core), its listening
//! address learned from its banner line or known in advance, its worker found, and killed by
//! PID (or by process group, for servers that fork workers) when dropped, panics included.

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cpu::{cpus_allowed, pinned_to, SERVER_CORE};

const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    pub name: String,
    child: Child,
    addr: SocketAddr,
    /// Killed as a process group (nginx's master and its workers).
    group: bool,
}

impl Server {
    /// Starts `cmd --listen 127.0.0.1:0` (under `taskset -c 1` when `pin`) and waits for its
    /// one stdout line `<banner> listening on http://127.0.0.1:PORT` (miohttpd and the Go
    /// peers print it).
    pub fn start_with_banner(name: &str, cmd: Command, banner: &str, pin: bool) -> Server {
        let mut cmd = pinned_to(SERVER_CORE, cmd, pin);
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
                let _ = child.wait();
                panic!("{name}: no listening line within {START_TIMEOUT:?}");
            }
        };
        let Some(addr) = listening_addr(&line, banner) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: bad listening line {line:?}, want {banner} listening on http://ADDR");
        };
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
        let mut cmd = pinned_to(SERVER_CORE, cmd, pin);
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

/// The address in a banner line `<banner> listening on http://ADDR`.
fn listening_addr(line: &str, banner: &str) -> Option<SocketAddr> {
    line.trim_end_matches(['\r', '\n'])
        .strip_prefix(banner)?
        .strip_prefix(" listening on http://")?
        .parse()
        .ok()
}

/// A free loopback port, for servers that must be told one.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_line_gives_the_address() {
        assert_eq!(
            listening_addr("miohttpd listening on http://127.0.0.1:40123\n", "miohttpd"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            listening_addr("plaintext listening on http://127.0.0.1:9\r\n", "plaintext"),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            listening_addr("miohttpd listening on http://127.0.0.1:1", "plaintext"),
            None
        );
        assert_eq!(
            listening_addr("miohttpd listening on http://nowhere", "miohttpd"),
            None
        );
        assert_eq!(listening_addr("", "miohttpd"), None);
    }

    #[test]
    fn a_server_is_started_found_and_killed() {
        // A shell stands in for a server: it prints the banner and waits.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo \"fake listening on http://127.0.0.1:7\"; exec sleep 30",
            "sh",
        ]);
        let server = Server::start_with_banner("fake", cmd, "fake", false);
        assert_eq!(server.addr(), "127.0.0.1:7".parse().unwrap());
        let pid = server.pid();
        assert_eq!(server.worker_pid(), pid);
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(server);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "killed and reaped"
        );
    }
}
