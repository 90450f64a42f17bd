//! The listening sockets, built with socket2 because mio's own bind fixes the backlog and
//! sets none of the options below, and handed to the loop as [`Listener`]s, whose accepts
//! are counted.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use super::syscalls::Listener;
use super::table::MAX_LISTENERS;
use crate::config::Config;

/// Binds a listener on every `--listen` address, each with the same knobs. Port 0 picks a
/// free port once: the addresses after the first that also ask for port 0 get the same one,
/// so `:0` or `localhost:0` is one port on every address. An address family the host does not
/// have (`[::]` on a kernel without IPv6) is skipped with a warning while another listener
/// binds; any other failure names the address.
pub fn bind_all(config: &Config) -> io::Result<Vec<Listener>> {
    if config.listen.len() > MAX_LISTENERS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} addresses; at most {MAX_LISTENERS}", config.listen.len()),
        ));
    }
    let mut listeners = Vec::with_capacity(config.listen.len());
    let mut picked_port = None;
    for &wanted in &config.listen {
        let mut addr = wanted;
        if addr.port() == 0 {
            addr.set_port(picked_port.unwrap_or(0));
        }
        // Beside an IPv4 listener on the same port, an IPv6 one must leave IPv4 to it: a
        // dual-stack [::] would take the IPv4 port too and the second bind would fail.
        let v6_only = addr.is_ipv6()
            && config
                .listen
                .iter()
                .any(|other| other.is_ipv4() && other.port() == wanted.port());
        match bind(addr, v6_only, config) {
            Ok(listener) => {
                if wanted.port() == 0 && picked_port.is_none() {
                    picked_port = Some(listener.local_addr()?.port());
                }
                listeners.push(listener);
            }
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) && config.listen.len() > 1 => {
                eprintln!("miohttpd: not listening on {addr}: {e}");
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{addr}: {e}"))),
        }
    }
    if listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address could be listened on",
        ));
    }
    Ok(listeners)
}

/// Binds one main listener: non-blocking, SO_REUSEADDR (a restart does not wait out
/// TIME_WAIT), the configured backlog, and the socket knobs. Buffer sizes are set on the
/// listener before listen(2), so accepted sockets inherit them (no syscall per accept) and the
/// window scale offered in the handshake already fits them. `v6_only` (IPV6_V6ONLY) makes an
/// IPv6 listener leave IPv4 alone whatever the host's `net.ipv6.bindv6only` says, so that
/// `:PORT` can listen on `0.0.0.0` and `[::]` side by side; otherwise the kernel's default
/// stands, as it always did for `--listen [::]:PORT`.
pub fn bind(addr: SocketAddr, v6_only: bool, config: &Config) -> io::Result<Listener> {
    let socket = new_socket(addr, config.backlog, |socket| {
        if v6_only {
            socket.set_only_v6(true)?;
        }
        if config.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if config.rcvbuf > 0 {
            socket.set_recv_buffer_size(config.rcvbuf)?;
        }
        if config.sndbuf > 0 {
            socket.set_send_buffer_size(config.sndbuf)?;
        }
        set_defer_accept(socket, config.defer_accept)
    })?;
    Ok(Listener::new(TcpListener::from_std(socket.into())))
}

/// Takes over a socket that is already listening (passed by systemd): it must be a listening
/// TCP socket; it is made non-blocking. Its options are the `.socket` unit's to set.
pub fn adopt(listener: std::net::TcpListener) -> io::Result<Listener> {
    let socket = socket2::SockRef::from(&listener);
    if socket.r#type()? != Type::STREAM || !socket.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening stream socket",
        ));
    }
    listener.set_nonblocking(true)?;
    Ok(Listener::new(TcpListener::from_std(listener)))
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
fn set_defer_accept(socket: &Socket, wait: Duration) -> io::Result<()> {
    if wait.is_zero() {
        return Ok(());
    }
    // The option counts whole seconds; a fraction rounds up rather than turn it off.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    crate::sys::set_tcp_defer_accept(socket, u32::try_from(seconds).unwrap_or(u32::MAX))
}

#[cfg(not(target_os = "linux"))]
fn set_defer_accept(_: &Socket, wait: Duration) -> io::Result<()> {
    if !wait.is_zero() {
        eprintln!("miohttpd: --defer-accept is Linux only; ignored");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(knobs: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Config::default()
        };
        knobs(&mut config);
        config
    }

    fn bind_one(config: &Config) -> io::Result<Listener> {
        bind(config.listen[0], false, config)
    }

    #[test]
    fn port_zero_is_one_port_on_every_address() {
        let config = config(|c| {
            c.listen = vec![
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SocketAddr::from(([127, 0, 0, 2], 0)),
            ];
        });
        let listeners = bind_all(&config).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0], ports[1]);
        assert_ne!(ports[0], 0);
    }

    #[test]
    fn ipv6_listeners_leave_ipv4_to_their_own() {
        // `--listen :0`: 0.0.0.0 and [::] on one port, whatever net.ipv6.bindv6only says.
        let every = config(|c| {
            c.listen = vec![
                SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
            ]
        });
        let listeners = bind_all(&every).unwrap();
        if listeners.len() == 1 {
            return; // no IPv6 on this host: the [::] half was skipped
        }
        assert!(socket2::SockRef::from(&listeners[1]).only_v6().unwrap());
        assert_eq!(
            listeners[0].local_addr().unwrap().port(),
            listeners[1].local_addr().unwrap().port()
        );
    }

    #[test]
    fn knobs_reach_the_listener() {
        let listener = bind_one(&config(|c| {
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
        let listener = bind_one(&config(|_| {})).unwrap();
        let socket = socket2::SockRef::from(&listener);
        assert!(!socket.reuse_port().unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(crate::sys::tcp_defer_accept(&listener).unwrap(), 0);
    }

    #[test]
    fn reuseport_lets_two_listeners_share_a_port() {
        let first = bind_one(&config(|c| c.reuse_port = true)).unwrap();
        let port = first.local_addr().unwrap().port();
        let shared = config(|c| {
            c.reuse_port = true;
            c.listen[0].set_port(port);
        });
        assert!(bind_one(&shared).is_ok());
        let mut exclusive = shared;
        exclusive.reuse_port = false;
        assert!(
            bind_one(&exclusive).is_err(),
            "without it the port is taken"
        );
    }

    #[test]
    fn accepted_sockets_inherit_the_buffer_sizes() {
        let listener = bind_one(&config(|c| c.rcvbuf = 48 * 1024)).unwrap();
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
