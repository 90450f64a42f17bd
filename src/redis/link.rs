//! The I/O of the Redis link: two non-blocking TCP connections registered in a `mio::Poll`
//! the caller owns (the single loop, or a hub), driven by the sans-IO [`Session`]. It never
//! blocks: connects are asynchronous, reads and writes stop at WouldBlock, and a Redis that
//! stops answering is the session's timers' business, not a blocked call's.
//!
//! The caller gives two tokens, routes readiness events on them to [`Link::ready`], calls
//! [`Link::tick`] when [`Link::next_deadline`] has passed, and takes [`Event`]s.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::session::{
    Action, Conn, Event, Failure, LinkState, LinkStats, LinkSyscalls, Publish, Session,
    SessionConfig,
};

/// Bytes per read(2) from Redis.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes read from one connection per turn before the loop's other work gets a turn: a busy
/// bus (other hosts publishing hard) must not starve local HTTP service. Reading resumes on
/// the next `tick`, which `next_deadline` makes due at once.
const READ_BUDGET: usize = 256 * 1024;

#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    /// The connect is still in flight: the first writable event says how it ended.
    connecting: bool,
}

/// The link to Redis: a [`Session`] and its two sockets.
#[derive(Debug)]
pub struct Link {
    session: Session,
    tokens: [Token; 2],
    sockets: [Option<Socket>; 2],
    /// A connection left with bytes unread when its budget ran out (edge-triggered: no new
    /// event will say so), and when.
    unread: [Option<Instant>; 2],
    syscalls: LinkSyscalls,
}

impl Link {
    /// Starts connecting at once; `tokens` are the command connection's and the subscriber's.
    pub fn new(
        config: SessionConfig,
        tokens: [Token; 2],
        registry: &Registry,
        now: Instant,
    ) -> Link {
        let mut link = Link {
            session: Session::new(config, now),
            tokens,
            sockets: [None, None],
            unread: [None, None],
            syscalls: LinkSyscalls::default(),
        };
        link.pump(registry, now);
        link
    }

    /// Whether `token` is one of the link's.
    pub fn owns(&self, token: Token) -> bool {
        self.tokens.contains(&token)
    }

    pub fn state(&self) -> LinkState {
        self.session.state()
    }

    pub fn stats(&self) -> LinkStats {
        LinkStats {
            syscalls: self.syscalls,
            ..self.session.stats()
        }
    }

    pub fn next_deadline(&self) -> Instant {
        let unread = self.unread.iter().flatten().copied();
        unread.fold(self.session.next_deadline(), Instant::min)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.session.poll_event()
    }

    /// A readiness event on one of the link's tokens.
    pub fn ready(&mut self, registry: &Registry, token: Token, now: Instant) {
        let Some(at) = self.tokens.iter().position(|t| *t == token) else {
            return;
        };
        let conn = Conn::BOTH[at];
        let Some(socket) = &mut self.sockets[at] else {
            return; // an event still queued for a socket already closed
        };
        if socket.connecting {
            match connect_result(&socket.stream) {
                Ok(false) => return,
                Ok(true) => {
                    socket.connecting = false;
                    let _ = socket.stream.set_nodelay(true);
                    self.session.connected(conn, now);
                }
                Err(e) => {
                    self.session.failed(conn, &format!("connect: {e}"), now);
                    return self.pump(registry, now);
                }
            }
        }
        self.read(conn, now);
        self.pump(registry, now);
    }

    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        for conn in Conn::BOTH {
            if self.unread[conn_index(conn)].take().is_some() {
                self.read(conn, now);
            }
        }
        self.session.tick(now);
        self.pump(registry, now);
    }

    pub fn publish(
        &mut self,
        registry: &Registry,
        request: u64,
        message: Publish<'_>,
        now: Instant,
    ) -> Result<(), Failure> {
        self.session.publish(request, message, now)?;
        self.pump(registry, now);
        Ok(())
    }

    pub fn history(
        &mut self,
        registry: &Registry,
        request: u64,
        channel: &str,
        after: Option<(u32, u64)>,
        fenced: bool,
        now: Instant,
    ) -> Result<(), Failure> {
        self.session.history(request, channel, after, fenced, now)?;
        self.pump(registry, now);
        Ok(())
    }

    pub fn reply_to_host(&mut self, registry: &Registry, to: &str, payload: &[u8], now: Instant) {
        self.session.reply_to_host(to, payload, now);
        self.pump(registry, now);
    }

    pub fn announce(
        &mut self,
        registry: &Registry,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), Failure> {
        self.session.announce(payload, now)?;
        self.pump(registry, now);
        Ok(())
    }

    pub fn live_hosts(&self) -> u64 {
        self.session.live_hosts()
    }

    /// Closes both connections (server shutdown).
    pub fn close(&mut self, registry: &Registry) {
        for at in 0..2 {
            if let Some(socket) = self.sockets[at].take() {
                let mut stream = socket.stream;
                let _ = registry.deregister(&mut stream);
            }
        }
    }

    /// Reads until WouldBlock (edge-triggered), feeding the session.
    fn read(&mut self, conn: Conn, now: Instant) {
        let at = conn_index(conn);
        let mut buf = [0u8; READ_CHUNK];
        let mut budget = READ_BUDGET;
        loop {
            let Some(socket) = &mut self.sockets[at] else {
                return;
            };
            if budget == 0 {
                self.unread[at] = Some(now);
                return;
            }
            self.syscalls.read += 1;
            match socket.stream.read(&mut buf) {
                Ok(0) => return self.session.failed(conn, "closed by Redis", now),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.session.received(conn, &buf[..n], now);
                    if !self.session.is_connecting_or_up() {
                        // The bytes broke the link: the rest of them are not worth reading.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.session.failed(conn, &format!("read: {e}"), now),
            }
        }
    }

    /// Carries out the session's actions and writes what it has queued, until neither leaves
    /// anything to do (a failed write is one more action).
    fn pump(&mut self, registry: &Registry, now: Instant) {
        loop {
            while let Some(action) = self.session.poll_action() {
                match action {
                    Action::Close(conn) => self.drop_socket(registry, conn),
                    Action::Connect(conn) => {
                        self.drop_socket(registry, conn);
                        let at = conn_index(conn);
                        self.syscalls.connect += 1;
                        match TcpStream::connect(self.session.config().addr) {
                            Ok(mut stream) => {
                                let interest = Interest::READABLE | Interest::WRITABLE;
                                match registry.register(&mut stream, self.tokens[at], interest) {
                                    Ok(()) => {
                                        self.sockets[at] = Some(Socket {
                                            stream,
                                            connecting: true,
                                        })
                                    }
                                    Err(e) => {
                                        self.session.failed(conn, &format!("register: {e}"), now)
                                    }
                                }
                            }
                            Err(e) => self.session.failed(conn, &format!("connect: {e}"), now),
                        }
                    }
                }
            }
            let mut failed = false;
            for conn in Conn::BOTH {
                if let Err(e) = self.flush(conn) {
                    self.session.failed(conn, &format!("write: {e}"), now);
                    failed = true;
                }
            }
            if !failed {
                return;
            }
        }
    }

    /// Writes the session's output for `conn` until it is empty or the socket is full.
    fn flush(&mut self, conn: Conn) -> io::Result<()> {
        let at = conn_index(conn);
        let Some(socket) = &mut self.sockets[at] else {
            return Ok(());
        };
        if socket.connecting {
            return Ok(());
        }
        while !self.session.output(conn).is_empty() {
            self.syscalls.write += 1;
            match socket.stream.write(self.session.output(conn)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.session.wrote(conn, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn drop_socket(&mut self, registry: &Registry, conn: Conn) {
        self.unread[conn_index(conn)] = None;
        if let Some(socket) = self.sockets[conn_index(conn)].take() {
            let mut stream = socket.stream;
            let _ = registry.deregister(&mut stream);
        }
    }
}

fn conn_index(conn: Conn) -> usize {
    match conn {
        Conn::Command => 0,
        Conn::Subscriber => 1,
    }
}

/// How a non-blocking connect ended: `Ok(true)` connected, `Ok(false)` still in flight.
fn connect_result(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// The link with the registry its sockets live in: what [`super::bridge::Bridge`] asks
/// requests of.
pub struct Linked<'a> {
    pub link: &'a mut Link,
    pub registry: &'a Registry,
}

impl super::bridge::Requests for Linked<'_> {
    fn publish(&mut self, request: u64, message: Publish<'_>, now: Instant) -> Result<(), Failure> {
        self.link.publish(self.registry, request, message, now)
    }

    fn history(
        &mut self,
        request: u64,
        channel: &str,
        after: Option<(u32, u64)>,
        fenced: bool,
        now: Instant,
    ) -> Result<(), Failure> {
        self.link
            .history(self.registry, request, channel, after, fenced, now)
    }

    fn reply_to_host(&mut self, to: &str, payload: &[u8], now: Instant) {
        self.link.reply_to_host(self.registry, to, payload, now)
    }

    fn announce(&mut self, payload: &[u8], now: Instant) -> Result<(), Failure> {
        self.link.announce(self.registry, payload, now)
    }

    fn live_hosts(&self) -> u64 {
        self.link.live_hosts()
    }
}
