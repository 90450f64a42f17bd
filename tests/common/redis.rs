//! A real `redis-server` for the tests that need one: started on an ephemeral loopback port in
//! a temporary directory, stopped by PID (never by name) on drop, and a small blocking RESP
//! client to look at or change what it holds. `scripts/test.sh` installs Debian's
//! `redis-server` when it is missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use miohttpd::redis::resp::{encode_command, Decoder, Limits, Value};

/// A `redis-server` process this test owns.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Extra arguments, kept for restarts (a password, say).
    args: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts `redis-server` with `args` on top of the harness's own (port, bind, no
    /// persistence unless asked for with SAVE, logs and data in a temporary directory).
    pub fn start_with(args: &[&str]) -> Redis {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "miohttpd-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("redis temp dir");
        let mut redis = Redis {
            child: None,
            port: 0,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        // The port is picked by binding port 0 and letting it go: another process may take it
        // in between, so a start that fails is retried on a new port.
        for _ in 0..5 {
            redis.port = free_port();
            if redis.spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start; log:\n{}", redis.log());
    }

    /// Starts one on `port` (a test that needed the address before Redis existed).
    pub fn start_on(port: u16) -> Redis {
        let mut redis = Redis::start_with(&[]);
        redis.kill();
        redis.port = port;
        redis.restart();
        redis
    }

    /// Starts it again on the same port and directory: with its data when it was saved
    /// (`SAVE`, or `kill` after a save), empty otherwise.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped redis only");
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            // The old socket may linger a moment.
            thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart; log:\n{}", self.log());
    }

    fn answers_as_ours(&self) -> bool {
        let pid = self.child.as_ref().map(|child| child.id());
        let reply = Client::connect(self.addr()).cmd(&["INFO", "server"]);
        match (pid, reply) {
            (Some(pid), Value::Bulk(text)) => String::from_utf8_lossy(&text)
                .lines()
                .any(|line| line.trim() == format!("process_id:{pid}")),
            _ => false,
        }
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): scripts/test.sh installs it")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            if TcpStream::connect(self.addr()).is_ok() {
                // The port was free when picked, but another test's Redis may have taken it
                // since: what answers is ours only if it gives our child's pid.
                if self.answers_as_ours() {
                    return true;
                }
                self.kill();
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`, for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis is running").id()
    }

    /// A new blocking client connection.
    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }

    /// SIGKILL and reap: gone at once, data only as of the last SAVE.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: connections stay open and nothing is answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a paused (SIGSTOP'd) redis too.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A blocking RESP client: one command, one reply.
pub struct Client {
    stream: TcpStream,
    decoder: Decoder,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            decoder: Decoder::new(Limits::default()),
        }
    }

    /// Sends `args` as one command and returns its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> Value {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        self.stream.write_all(&out).expect("write to redis");
        self.read()
    }

    /// Sends `commands` in one write (Redis answers them in order, and pushes what they
    /// publish to subscribers together) and returns their replies.
    pub fn pipeline(&mut self, commands: &[&[&str]]) -> Vec<Value> {
        let mut out = Vec::new();
        for args in commands {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            encode_command(&mut out, &args);
        }
        self.stream.write_all(&out).expect("write to redis");
        commands.iter().map(|_| self.read()).collect()
    }

    /// The same, with text arguments.
    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command(&args)
    }

    /// The next reply (or pushed pub/sub message).
    pub fn read(&mut self) -> Value {
        let mut buf = [0u8; 16384];
        loop {
            if let Some(value) = self.decoder.next().expect("a well-formed reply") {
                return value;
            }
            let n = self.stream.read(&mut buf).expect("read from redis");
            assert!(n > 0, "redis closed the connection");
            self.decoder.feed(&buf[..n]);
        }
    }
}
