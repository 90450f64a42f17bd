//! The listening socket, built with socket2 because mio's own bind fixes the backlog.

use std::io;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;

/// Binds a non-blocking listener with SO_REUSEADDR (a restart does not wait out TIME_WAIT)
/// and the configured backlog.
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(config.listen),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&config.listen.into())?;
    socket.listen(config.backlog)?;
    Ok(TcpListener::from_std(socket.into()))
}
