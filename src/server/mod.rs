//! The readiness loop: one `mio::Poll` on one thread, the listener, the table of
//! connections, the timer queue, and the turns given to connections with work left over.

mod access_log;
mod as_worker;
mod buffers;
pub(crate) mod child;
mod conn;
mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod instruments;
pub(crate) mod listener;
pub mod stats;
pub(crate) mod syscalls;
mod table;
pub(crate) mod transport;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpStream;
use mio::{Events, Interest, Token};
use signal_hook_mio::v1_0::Signals;

use crate::comet::{self, Comet};
use crate::config::Config;
use crate::http::DateCache;
use crate::router::ServerState;
use crate::router::Service;
use buffers::BufferPool;
use child::{Children, REAP_INTERVAL};
use conn::{Conn, Ctx, Next, Readiness};
use fanout::Fanout;
use instruments::Instruments;
use stats::Stats;
use syscalls::{Listener, Poller};
use table::{listener_index, listener_token, pipe_owner, ConnTable, ADMIN, BUS, SIGNALS};
use transport::Counted;

/// A bound server, ready to run. Binding and running are separate so a caller can learn the
/// address (port 0 picks a free one) before the loop starts.
pub struct Server<S> {
    config: Config,
    service: S,
    poll: Poller,
    listeners: Vec<Listener>,
    local_addrs: Vec<SocketAddr>,
    instruments: Instruments,
    /// With `--workers N`: the link to the hub (`as_worker.rs`).
    link: Option<crate::workers::link::WorkerLink>,
    /// Counting from the first registration, made here.
    stats: Stats,
}

impl<S: Service> Server<S> {
    /// Binds a listener on every `--listen` address and registers them; serves nothing until
    /// [`Server::run`].
    pub fn bind(config: Config, service: S) -> io::Result<Self> {
        let listeners = listener::bind_all(&config)?;
        Self::serve_on(config, listeners, service)
    }

    /// Serves on sockets that are already listening (systemd socket activation) instead of
    /// the `--listen` addresses.
    pub fn with_listeners(
        config: Config,
        listeners: Vec<std::net::TcpListener>,
        service: S,
    ) -> io::Result<Self> {
        if listeners.is_empty() || listeners.len() > table::MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} listeners; 1 to {}",
                    listeners.len(),
                    table::MAX_LISTENERS
                ),
            ));
        }
        let listeners = listeners
            .into_iter()
            .map(listener::adopt)
            .collect::<io::Result<Vec<_>>>()?;
        Self::serve_on(config, listeners, service)
    }

    fn serve_on(config: Config, mut listeners: Vec<Listener>, service: S) -> io::Result<Self> {
        let mut stats = Stats::default();
        let poll = Poller::new()?;
        let mut local_addrs = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.iter_mut().enumerate() {
            local_addrs.push(listener.local_addr()?);
            poll.registry().register(
                listener,
                listener_token(index),
                Interest::READABLE,
                &mut stats,
            )?;
        }
        let instruments = Instruments::bind(&config, poll.registry(), &mut stats)?;
        Ok(Server {
            config,
            service,
            poll,
            listeners,
            local_addrs,
            instruments,
            link: None,
            stats,
        })
    }

    /// The first listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every listener's address, in `--listen` order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Where `--admin-listen` serves `/metrics`, if it was given.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.instruments.admin_addr()
    }

    /// Runs the loop on this thread until SIGTERM or SIGINT has stopped it (see
    /// [`Stopped`]); an error only when polling itself fails.
    pub fn run(self) -> io::Result<Stopped> {
        let Server {
            config,
            service,
            poll,
            listeners,
            mut instruments,
            link,
            mut stats,
            ..
        } = self;
        let config_comet = config.comet;
        let mut signals = Signals::new([libc::SIGTERM, libc::SIGINT])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE, &mut stats)?;
        let max_connections = match config.max_connections {
            0 => crate::sys::open_files_limit()
                .saturating_sub(FD_RESERVE)
                .max(1),
            n => n,
        };
        let pool = BufferPool::new(
            head_buffer_size(&config),
            config.body_buffer_size,
            config.output_high_water.saturating_mul(2),
        );
        instruments.start(&config, Instant::now(), &stats);
        EventLoop {
            config,
            service,
            poll,
            listeners,
            signals,
            max_connections,
            accept_paused_until: None,
            draining_until: None,
            fd_exhaustion_logged: false,
            capacity_logged_at: None,
            conns: ConnTable::new(),
            pool,
            date: DateCache::new(SystemTime::now()),
            stats,
            comet: Comet::new(config_comet, comet::new_epoch()),
            children: Children::default(),
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            timers: BinaryHeap::new(),
            again: Vec::new(),
            turns: Vec::new(),
            accept_pending: 0,
            instruments,
            link,
            hub_answers: Vec::new(),
        }
        .run()
    }
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A signal asked it to stop, and what was in flight finished or ran out of grace.
    Gracefully,
    /// A second signal came during the grace period.
    AtOnce,
}

/// File descriptors kept back from connections by default: the listener, the poll and
/// signal fds, command pipes, the log.
const FD_RESERVE: usize = 64;

/// How long accepting pauses after the process ran out of file descriptors, unless a
/// connection closes first.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a connection over `--max-connections` is told before it is closed.
const AT_CAPACITY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nServer: miohttpd\r\nRetry-After: 1\r\n\
Content-Type: text/plain\r\nContent-Length: 27\r\nConnection: close\r\n\r\n\
server at connection limit\n";

/// At most one "at the connection limit" log line per this interval.
const CAPACITY_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How often idle comet channels are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A head buffer must hold a whole head, so a full buffer always means "too large" (431)
/// rather than a read of zero bytes.
fn head_buffer_size(config: &Config) -> usize {
    config
        .read_buffer_size
        .max(config.head_limits.max_head_size + 1)
}

struct EventLoop<S> {
    config: Config,
    service: S,
    poll: Poller,
    /// The `--listen` listeners, index = token's; empty once shutdown began: new connections
    /// are refused by the kernel.
    listeners: Vec<Listener>,
    signals: Signals,
    /// Beyond this many, a new connection gets a 503 and is closed.
    max_connections: usize,
    /// Accepting failed for want of file descriptors; tried again at this time, or sooner
    /// if a connection closes.
    accept_paused_until: Option<Instant>,
    /// Shutting down: what is in flight has until then.
    draining_until: Option<Instant>,
    /// This episode of fd exhaustion has been logged (until an accept succeeds again).
    fd_exhaustion_logged: bool,
    capacity_logged_at: Option<Instant>,
    conns: ConnTable<Conn>,
    pool: BufferPool,
    date: DateCache,
    stats: Stats,
    comet: Comet,
    /// Commands running for `GET /stream/NAME`, and those being ended.
    children: Children,
    /// When idle comet channels are next looked for.
    next_sweep: Instant,
    /// Deadlines, earliest first. Entries are not removed when a deadline changes; a popped
    /// entry is checked against its connection (and its token's generation) instead.
    timers: BinaryHeap<Reverse<(Instant, Token)>>,
    /// Connections that yielded with work left, for the next turn; `turns` is the list
    /// being served now. Two vectors swapped so neither reallocates.
    again: Vec<Token>,
    turns: Vec<Token>,
    /// Listeners (bit = index) that had more connections waiting when their accept budget
    /// ran out.
    accept_pending: u64,
    /// The admin listener, the access log, the periodic summary.
    instruments: Instruments,
    /// With `--workers N`: the link to the hub, and a reused list of its answers.
    link: Option<crate::workers::link::WorkerLink>,
    hub_answers: Vec<(Token, crate::workers::link::HubAnswer)>,
}

impl<S: Service> EventLoop<S> {
    fn run(mut self) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(self.config.events_per_poll);
        self.start_link(Instant::now());
        loop {
            if let Some(until) = self.draining_until {
                if self.conns.is_empty() || Instant::now() >= until {
                    self.stop();
                    return Ok(Stopped::Gracefully);
                }
            }
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout, &mut self.stats) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.date.refresh(SystemTime::now());

            // Turns owed from the last round go after this round's events, so a busy
            // connection cannot starve the ones that just became ready.
            std::mem::swap(&mut self.again, &mut self.turns);
            let mut accept = std::mem::take(&mut self.accept_pending);
            let mut signalled = false;
            let mut accept_admin = std::mem::take(&mut self.instruments.admin_accept_pending);
            let events_before = self.stats.events;
            for event in events.iter() {
                self.stats.events += 1;
                let token = event.token();
                if let Some(index) = listener_index(token) {
                    accept |= 1 << index;
                } else if token == SIGNALS {
                    signalled = true;
                } else if token == ADMIN {
                    accept_admin = true;
                } else if token == BUS {
                    self.on_link(now);
                } else if let Some(owner) = pipe_owner(token) {
                    self.with_conn(owner, now, |conn, ctx| conn.on_pipe_ready(ctx));
                } else {
                    let readiness = Readiness {
                        readable: event.is_readable() || event.is_error(),
                        hung_up: event.is_read_closed() || event.is_error(),
                    };
                    self.serve(token, readiness, now);
                }
            }
            let mut turns = std::mem::take(&mut self.turns);
            for token in turns.drain(..) {
                self.serve(token, Readiness::default(), now);
            }
            self.turns = turns;
            let woken_by = self.stats.events - events_before;
            self.stats.events_per_poll.record(woken_by as usize);
            if self.accept_paused_until.is_some_and(|until| now >= until) {
                self.accept_paused_until = None;
                accept = u64::MAX;
            }
            if accept != 0 && self.accept_paused_until.is_none() {
                for index in 0..self.listeners.len() {
                    if accept & (1 << index) != 0 && self.accept(Listening::Main(index), now) {
                        self.accept_pending |= 1 << index;
                    }
                }
            }
            if accept_admin {
                self.instruments.admin_accept_pending = self.accept(Listening::Admin, now);
            }
            self.expire_timers(now);
            self.pump_link(now);
            self.instruments.after_wakeup(now, &mut self.stats);
            if signalled && self.on_signals(now) {
                self.stop();
                return Ok(Stopped::AtOnce);
            }
        }
    }

    /// SIGTERM or SIGINT: the first starts a graceful shutdown, a second one during it
    /// asks to stop at once (true).
    fn on_signals(&mut self, now: Instant) -> bool {
        let mut at_once = false;
        for signal in self.signals.pending() {
            let name = if signal == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if self.draining_until.is_some() {
                eprintln!("miohttpd: {name} again: stopping at once");
                at_once = true;
            } else {
                self.begin_shutdown(name, now);
            }
        }
        at_once
    }

    /// Stops accepting and lets what is in flight finish: idle connections close now,
    /// waiters are told to come back, streamed commands are ended, requests being read get
    /// their answer with `Connection: close`.
    fn begin_shutdown(&mut self, signal: &str, now: Instant) {
        let grace = self.config.shutdown_grace;
        eprintln!(
            "miohttpd: {signal}: shutting down; {} connections have {}s to finish",
            self.conns.len(),
            grace.as_secs_f64()
        );
        self.draining_until = Some(now + grace);
        // Dropping the listeners closes them: the kernel refuses new connections from here on.
        self.listeners.clear();
        self.accept_pending = 0;
        crate::systemd::notify("STOPPING=1");
        for token in self.conns.tokens() {
            self.with_conn(token, now, |conn, ctx| conn.on_shutdown(ctx));
        }
        self.fan_out(now);
    }

    /// The end: whatever is still open is closed and every command's group killed.
    fn stop(&mut self) {
        for token in self.conns.tokens() {
            self.close(token);
        }
        self.children.kill_all(&mut self.stats);
        eprintln!("miohttpd: stopped");
    }

    /// Zero when work is owed, else until the next deadline, else forever.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty()
            || self.accept_pending != 0
            || self.instruments.admin_accept_pending
        {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let deadlines = [
            next_timer,
            self.instruments.next_due(),
            self.accept_paused_until,
            self.draining_until,
        ];
        let next = deadlines.into_iter().flatten().min();
        let next = next.map(|at| at.saturating_duration_since(now));
        // Children being ended are looked at on a short interval until they are reaped.
        let reaping = self.children.any_ending().then_some(REAP_INTERVAL);
        match (next, reaping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives one connection its turn. A stale token (its connection closed earlier in this
    /// batch, its slot possibly reused) finds nothing and is ignored.
    fn serve(&mut self, token: Token, readiness: Readiness, now: Instant) {
        self.with_conn(token, now, |conn, ctx| conn.on_ready(readiness, ctx));
        self.fan_out(now);
    }

    /// Runs `turn` on a live connection with the loop's context, then does what it returned.
    fn with_conn(
        &mut self,
        token: Token,
        now: Instant,
        turn: impl FnOnce(&mut Conn, &mut Ctx<'_, S>) -> Next,
    ) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let mut ctx = Ctx {
            config: &self.config,
            service: &self.service,
            date: &self.date,
            pool: &mut self.pool,
            stats: &mut self.stats,
            comet: &mut self.comet,
            children: &mut self.children,
            registry: self.poll.registry(),
            log: &mut self.instruments.log,
            token,
            now,
            draining: self.draining_until.is_some(),
        };
        match turn(conn, &mut ctx) {
            Next::Wait => {}
            Next::Yield => self.again.push(token),
            Next::Close => return self.close(token),
        }
        arm_timer(&mut self.timers, conn, token, &self.config);
    }

    /// Delivers what the last turn published: one rendering per form, shared by all.
    fn fan_out(&mut self, now: Instant) {
        while let Some(delivery) = self.comet.take_delivery() {
            let mut fanout = Fanout::new(delivery.message);
            let waiters = delivery.waiters.iter().map(|(_, &token)| token);
            for token in waiters.chain(delivery.subscribers.iter().copied()) {
                self.with_conn(token, now, |conn, ctx| conn.deliver(&mut fanout, ctx));
            }
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(conn) = self.conns.remove(token) {
            if self.accept_paused_until.take().is_some() {
                // An fd is free now: the backlog may hold clients no new edge will announce.
                self.accept_pending = u64::MAX;
            }
            let mut server = ServerState {
                peer: None,
                config: &self.config,
                comet: &mut self.comet,
                stats: &mut self.stats,
                children: &mut self.children,
                now: Instant::now(),
            };
            // Closing the socket also removes it from the epoll set: no deregister syscall
            // needed.
            conn.close(&mut self.instruments.log, &mut self.pool, &mut server);
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, token))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            // Only the connection's earliest entry fires; later ones are left from before
            // its deadline moved, and it re-arms for whatever it waits for now.
            if !self
                .conns
                .get_mut(token)
                .is_some_and(|conn| claim_timer(conn, at))
            {
                continue;
            }
            self.with_conn(token, now, |conn, ctx| conn.on_deadline(ctx));
        }
        self.fan_out(now);
        self.children.poll(now, &mut self.stats);
        if now >= self.next_sweep {
            self.comet.sweep(now);
            self.next_sweep = now + SWEEP_INTERVAL;
        }
    }

    /// Accepts up to the per-wake-up budget. Returns whether connections may be left, for
    /// the listener to get another turn after the others.
    fn accept(&mut self, from: Listening, now: Instant) -> bool {
        for _ in 0..self.config.accepts_per_wakeup {
            let listener = match (from, &self.instruments.admin) {
                (Listening::Admin, Some(admin)) => admin,
                (Listening::Main(index), _) if index < self.listeners.len() => {
                    &self.listeners[index]
                }
                // No admin listener, or shutdown closed the main one.
                _ => return false,
            };
            let (stream, peer) = match listener.accept(&mut self.stats) {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Edge-triggered: the connections left in the backlog will not be
                    // announced again, so look again after a pause or the next close,
                    // rather than spin on an accept that cannot succeed.
                    if !self.fd_exhaustion_logged {
                        eprintln!(
                            "miohttpd: accept: out of file descriptors ({e}); pausing accepts"
                        );
                        self.fd_exhaustion_logged = true;
                    }
                    self.stats.accept_pauses += 1;
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return false;
                }
                Err(e) => {
                    eprintln!("miohttpd: accept: {e}");
                    return false;
                }
            };
            self.fd_exhaustion_logged = false;
            if self.conns.len() >= self.max_connections {
                self.refuse(stream, peer);
                continue;
            }
            if self.config.tcp_nodelay {
                // Failure only costs latency; the connection still works.
                let _ = stream.set_nodelay(&mut self.stats);
            }
            let token = match self.conns.insert(Conn::new(stream, peer, now)) {
                Ok(token) => token,
                Err(conn) => {
                    eprintln!("miohttpd: connection table full; refusing {peer}");
                    conn.release(&mut self.pool, &mut self.stats);
                    continue;
                }
            };
            let conn = self.conns.get_mut(token).expect("just inserted");
            if from == Listening::Admin {
                conn.mark_admin();
            }
            // Both interests once, edge-triggered: no re-registration syscalls later. Bytes
            // that arrived before registration are reported by the registration itself.
            let registered = self.poll.registry().register(
                conn.stream_mut(),
                token,
                Interest::READABLE | Interest::WRITABLE,
                &mut self.stats,
            );
            if let Err(e) = registered {
                eprintln!("miohttpd: register {peer}: {e}");
                self.close(token);
                continue;
            }
            // The head timeout runs from accept, even for a client that never sends a byte.
            arm_timer(&mut self.timers, conn, token, &self.config);
        }
        true
    }

    /// Over the connection limit: a 503 and a close, without a slot in the table. What the
    /// client already sent is read first, so the close is a FIN and not a reset that could
    /// destroy the 503 before the client reads it.
    fn refuse(&mut self, mut stream: Counted<TcpStream>, peer: SocketAddr) {
        let quiet_since = self.capacity_logged_at.map(|at| at.elapsed());
        if quiet_since.map_or(true, |quiet| quiet >= CAPACITY_LOG_INTERVAL) {
            eprintln!(
                "miohttpd: {} connections open, the limit: refusing new ones with 503 ({peer})",
                self.conns.len()
            );
            self.capacity_logged_at = Some(Instant::now());
        }
        self.stats.refused += 1;
        let mut scratch = [0u8; 4096];
        let _ = stream.read(&mut scratch, &mut self.stats);
        let _ = stream.send([AT_CAPACITY, &[]], false, &mut self.stats);
        stream.close(&mut self.stats);
    }
}

/// Puts a connection's next wake-up in the timer queue, unless an entry at or before it is
/// already there: deadlines that move later (every request pushes the idle timeout back)
/// cost no queue operation at all.
fn arm_timer<T: transport::Transport>(
    timers: &mut BinaryHeap<Reverse<(Instant, Token)>>,
    conn: &mut Conn<T>,
    token: Token,
    config: &Config,
) {
    if let Some(at) = conn.wake_at(config) {
        if conn.armed.map_or(true, |armed| at < armed) {
            timers.push(Reverse((at, token)));
            conn.armed = Some(at);
        }
    }
}

/// Whether the timer entry `at` is the connection's live one (then it is used up): entries
/// left from before its deadline moved are skipped.
fn claim_timer<T: transport::Transport>(conn: &mut Conn<T>, at: Instant) -> bool {
    if conn.armed == Some(at) {
        conn.armed = None;
        return true;
    }
    false
}

/// Which listener a connection is accepted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listening {
    /// One of the `--listen` listeners, by index.
    Main(usize),
    /// `--admin-listen`: its connections are served `/metrics` only.
    Admin,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::builtin_router;

    #[test]
    fn the_listeners_registrations_are_counted_from_bind() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let second = SocketAddr::from(([127, 0, 0, 2], 0));
        let table = [
            (vec![loopback], None, 1),
            (vec![loopback], Some(loopback), 2),
            (vec![loopback, second], Some(loopback), 3),
        ];
        for (listen, admin_listen, registrations) in table {
            let config = Config {
                listen,
                admin_listen,
                ..Config::default()
            };
            let service = builtin_router(&config);
            let server = Server::bind(config, service).unwrap();
            assert_eq!(
                server.stats.registrations, registrations,
                "{admin_listen:?}"
            );
        }
    }
}
