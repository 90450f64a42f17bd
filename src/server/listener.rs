//! The listening sockets, built with socket2 because mio's own bind fixes the backlog and
//! sets none of the options below, and handed to the loop as [`Listener`]s, whose accepts
//! are counted.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use super::syscalls::Listener;
use crate::config::Config;

/// Binds the main listener: non-blocking, SO_REUSEADDR (a restart does not wait out
/// TIME_WAIT), the configured backlog, and the socket knobs. Buffer sizes are set on the
/// listener before listen(2), so accepted sockets inherit them (no syscall per accept) and the
/// window scale offered in the handshake already fits them.
pub fn bind(config: &Config) -> io::Result<Listener> {
    let socket = new_socket(config.listen, config.backlog, |socket| {
        if config.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if config.rcvbuf > 0 {
            socket.set_recv_buffer_size(config.rcvbuf)?;
        }
        if config.sndbuf > 0 {
            socket.set_send_buffer_size(config.sndbuf)?;
        }
        set_defer_accept(socket, config.defer_accept.as_secs())
    })?;
    Ok(Listener::new(TcpListener::from_std(socket.into())))
}

/// Binds the admin listener (`--admin-listen`): plain, none of the main listener's knobs.
pub fn bind_admin(addr: SocketAddr) -> io::Result<Listener> {
    let socket = new_socket(addr, 128, |_| Ok(()))?;
    Ok(Listener::new(TcpListener::from_std(socket.into())))
}

fn new_socket(
    addr: SocketAddr,
    backlog: i32,
    options: impl FnOnce(&Socket) -> io::Result<()>,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    options(&socket)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

#[cfg(target_os = "linux")]
fn set_defer_accept(socket: &Socket, seconds: u64) -> io::Result<()> {
    if seconds == 0 {
        return Ok(());
    }
    crate::sys::set_tcp_defer_accept(socket, u32::try_from(seconds).unwrap_or(u32::MAX))
}

#[cfg(not(target_os = "linux"))]
fn set_defer_accept(_: &Socket, seconds: u64) -> io::Result<()> {
    if seconds > 0 {
        eprintln!("miohttpd: --defer-accept is Linux only; ignored");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(knobs: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        };
        knobs(&mut config);
        config
    }

    #[test]
    fn knobs_reach_the_listener() {
        let listener = bind(&config(|c| {
            c.reuse_port = true;
            c.rcvbuf = 64 * 1024;
            c.sndbuf = 96 * 1024;
            c.defer_accept = Duration::from_secs(2);
        }))
        .unwrap();
        let socket = socket2::SockRef::from(&listener);
        assert!(socket.reuse_port().unwrap());
        // Linux doubles the value for its bookkeeping (socket(7)); within rmem_max it keeps it.
        assert!(socket.recv_buffer_size().unwrap() >= 64 * 1024);
        assert!(socket.send_buffer_size().unwrap() >= 96 * 1024);
        #[cfg(target_os = "linux")]
        assert!(crate::sys::tcp_defer_accept(&listener).unwrap() > 0);
    }

    #[test]
    fn defaults_leave_the_kernel_alone() {
        let listener = bind(&config(|_| {})).unwrap();
        let socket = socket2::SockRef::from(&listener);
        assert!(!socket.reuse_port().unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(crate::sys::tcp_defer_accept(&listener).unwrap(), 0);
    }

    #[test]
    fn reuseport_lets_two_listeners_share_a_port() {
        let first = bind(&config(|c| c.reuse_port = true)).unwrap();
        let port = first.local_addr().unwrap().port();
        let shared = config(|c| {
            c.reuse_port = true;
            c.listen.set_port(port);
        });
        assert!(bind(&shared).is_ok());
        let mut exclusive = shared;
        exclusive.reuse_port = false;
        assert!(bind(&exclusive).is_err(), "without it the port is taken");
    }

    #[test]
    fn accepted_sockets_inherit_the_buffer_sizes() {
        let listener = bind(&config(|c| c.rcvbuf = 48 * 1024)).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        // The handshake is complete once connect returns; accept may still race it briefly.
        // A raw accept: the counted one gives no look at the socket's options.
        let listening = socket2::SockRef::from(&listener);
        let accepted = (0..5000)
            .find_map(|_| match listening.accept() {
                Ok((stream, _)) => Some(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                    None
                }
                Err(e) => panic!("{e}"),
            })
            .expect("the connection is accepted within seconds");
        let size = accepted.recv_buffer_size().unwrap();
        assert_eq!(size, listening.recv_buffer_size().unwrap());
    }
}
