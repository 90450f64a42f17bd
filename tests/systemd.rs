//! systemd's protocols spoken by the test as systemd would, with no systemd: socket
//! activation (a listening socket as fd 3, `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`) and
//! readiness notification (`READY=1` and `STOPPING=1` datagrams to `$NOTIFY_SOCKET`, a path
//! or an abstract `@name`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

use common::{Conn, GET_PLAINTEXT, IO_TIMEOUT};

/// A server started as systemd would start it; killed and reaped on drop.
struct Activated {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Activated {
    /// Starts `miohttpd ARGS` through `sh`. `socket`, when given, is the child's fd 3, and
    /// `sh` sets `LISTEN_PID` to its own pid (which `exec` hands to the server) when
    /// `pid_matches`, or to another pid; `env` is set on top.
    fn start(
        socket: Option<&TcpListener>,
        pid_matches: bool,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Activated {
        let listen_pid = match (socket, pid_matches) {
            (None, _) => "",
            (Some(_), true) => "export LISTEN_PID=$$; ",
            (Some(_), false) => "export LISTEN_PID=1; ",
        };
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{listen_pid}exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_miohttpd"))
            .args(args)
            .env_remove("MIOHTTPD_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(socket) = socket {
            let fd = socket.as_raw_fd();
            command.envs([("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http")]);
            // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe;
            // they put the listening socket at fd 3 without close-on-exec, where the
            // activation protocol puts it. std has no other way to place a child's fd.
            unsafe {
                command.pre_exec(move || place_at_fd_3(fd));
            }
        }
        let mut child = command.spawn().expect("start miohttpd");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Activated { child, stdout }
    }

    /// The address of the next `miohttpd listening on http://ADDR` line.
    fn listening_addr(&mut self) -> SocketAddr {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read stdout");
        line.trim_end()
            .strip_prefix("miohttpd listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn place_at_fd_3(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: plain integer arguments; no memory is touched.
    let done = unsafe {
        if fd == 3 {
            libc::fcntl(3, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, 3)
        }
    };
    if done == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn plaintext_status(addr: SocketAddr) -> u16 {
    let mut conn = Conn::connect(addr);
    conn.send(GET_PLAINTEXT);
    conn.read_response().status
}

/// A datagram socket bound where the server is told to notify, and its `NOTIFY_SOCKET`.
fn notify_socket() -> (UnixDatagram, String, PathBuf) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "miohttpd-notify-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = path.to_str().unwrap().to_string();
    (socket, name, path)
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn an_activated_socket_replaces_listen() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut server = Activated::start(Some(&socket), true, &[], &["--listen", "127.0.0.1:0"]);
    assert_eq!(
        server.listening_addr(),
        addr,
        "serves on fd 3, not --listen"
    );
    // The test keeps its own copy of the socket but never accepts: the answer is the server's.
    assert_eq!(plaintext_status(addr), 200);
    assert_eq!(plaintext_status(addr), 200);
}

#[test]
fn fds_meant_for_another_process_are_left_alone() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut server = Activated::start(Some(&socket), false, &[], &["--listen", "127.0.0.1:0"]);
    let listening = server.listening_addr();
    assert_ne!(listening, addr, "LISTEN_PID names another process");
    assert_eq!(plaintext_status(listening), 200);
}

#[test]
fn commands_inherit_neither_the_sockets_nor_the_variables() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let (_notify, notify_name, path) = notify_socket();
    // The shell running the command lists its own fds: a leaked listener shows as a socket.
    let command = "env; ls -l /proc/$$/fd";
    let exec = format!("look={command}");
    let mut server = Activated::start(
        Some(&socket),
        true,
        &[("NOTIFY_SOCKET", &notify_name)],
        &["--exec", &exec],
    );
    assert_eq!(server.listening_addr(), addr);
    let mut conn = Conn::connect(addr);
    conn.send(b"GET /stream/look HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = conn.read_response();
    assert_eq!(response.status, 200);
    let text = String::from_utf8_lossy(&response.body).into_owned();
    for name in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
    ] {
        assert!(!text.contains(name), "the command saw {name}:\n{text}");
    }
    assert!(text.contains(" -> "), "the command listed its fds:\n{text}");
    assert!(
        !text.contains("socket:"),
        "the command holds a socket:\n{text}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn ready_comes_once_the_port_accepts_and_stopping_at_shutdown() {
    let (notify, name, path) = notify_socket();
    let mut server = Activated::start(
        None,
        true,
        &[("NOTIFY_SOCKET", &name)],
        &["--listen", "127.0.0.1:0", "--shutdown-grace", "5s"],
    );
    assert_eq!(receive(&notify), "READY=1");
    // READY=1 is sent after every listener listens: the port accepts at once. (The
    // listening line is read after; it was written before READY=1.)
    let addr = server.listening_addr();
    TcpStream::connect(addr).expect("the port accepts once READY=1 has come");
    assert_eq!(plaintext_status(addr), 200);
    server.terminate();
    assert_eq!(receive(&notify), "STOPPING=1");
    let _ = std::fs::remove_file(path);
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_notify_sockets_are_reached() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("miohttpd-notify-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let notify = UnixDatagram::bind_addr(&address).expect("bind an abstract socket");
    notify.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let at = format!("@{name}");
    let mut server = Activated::start(
        None,
        true,
        &[("NOTIFY_SOCKET", &at)],
        &["--listen", "127.0.0.1:0"],
    );
    assert_eq!(receive(&notify), "READY=1");
    let addr = server.listening_addr();
    assert_eq!(plaintext_status(addr), 200);
    server.terminate();
    assert_eq!(receive(&notify), "STOPPING=1");
}
