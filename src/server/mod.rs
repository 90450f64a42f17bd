//! The readiness loop: one `mio::Poll` on one thread, the listener, the table of
//! connections, the timer queue, and the turns given to connections with work left over.

mod access_log;
mod buffers;
mod child;
mod conn;
mod fanout;
mod instruments;
mod listener;
pub mod stats;
mod table;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::comet::{self, Comet};
use crate::config::Config;
use crate::http::DateCache;
use crate::router::Service;
use buffers::BufferPool;
use child::{Children, REAP_INTERVAL};
use conn::{Conn, Ctx, Next, Readiness};
use fanout::Fanout;
use instruments::Instruments;
use stats::Stats;
use table::{pipe_owner, ConnTable, ADMIN, LISTENER};

/// A bound server, ready to run. Binding and running are separate so a caller can learn the
/// address (port 0 picks a free one) before the loop starts.
pub struct Server<S> {
    config: Config,
    service: S,
    poll: Poll,
    listener: TcpListener,
    local_addr: SocketAddr,
    instruments: Instruments,
}

impl<S: Service> Server<S> {
    /// Binds the listener and registers it; serves nothing until [`Server::run`].
    pub fn bind(config: Config, service: S) -> io::Result<Self> {
        let mut listener = listener::bind(&config)?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let instruments = Instruments::bind(&config, poll.registry())?;
        Ok(Server {
            config,
            service,
            poll,
            listener,
            local_addr,
            instruments,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `--admin-listen` serves `/metrics`, if it was given.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.instruments.admin_addr()
    }

    /// Runs the loop on this thread; returns only on a poll failure.
    pub fn run(self) -> io::Result<()> {
        let Server {
            config,
            service,
            poll,
            listener,
            mut instruments,
            ..
        } = self;
        let config_comet = config.comet;
        let pool = BufferPool::new(
            head_buffer_size(&config),
            config.body_buffer_size,
            config.output_high_water.saturating_mul(2),
        );
        let mut stats = Stats::default();
        instruments.start(&config, Instant::now(), &mut stats);
        EventLoop {
            config,
            service,
            poll,
            listener,
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
            accept_pending: false,
            instruments,
        }
        .run()
    }
}

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
    poll: Poll,
    listener: TcpListener,
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
    /// The listener had more connections waiting when its accept budget ran out.
    accept_pending: bool,
    /// The admin listener, the access log, the periodic summary.
    instruments: Instruments,
}

impl<S: Service> EventLoop<S> {
    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.config.events_per_poll);
        loop {
            let timeout = self.poll_timeout();
            self.stats.polls += 1;
            if let Err(e) = self.poll.poll(&mut events, timeout) {
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
            let mut accept_admin = std::mem::take(&mut self.instruments.admin_accept_pending);
            let events_before = self.stats.events;
            for event in events.iter() {
                self.stats.events += 1;
                let token = event.token();
                if token == LISTENER {
                    accept = true;
                } else if token == ADMIN {
                    accept_admin = true;
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
            if accept {
                self.accept_pending = self.accept(Listening::Main);
            }
            if accept_admin {
                self.instruments.admin_accept_pending = self.accept(Listening::Admin);
            }
            self.expire_timers(now);
            self.instruments.after_wakeup(now, &mut self.stats);
        }
    }

    /// Zero when work is owed, else until the next deadline, else forever.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() || self.accept_pending || self.instruments.admin_accept_pending {
            return Some(Duration::ZERO);
        }
        let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let next_timer = match (next_timer, self.instruments.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let next_timer = next_timer.map(|at| at.saturating_duration_since(Instant::now()));
        // Children being ended are looked at on a short interval until they are reaped.
        let reaping = self.children.any_ending().then_some(REAP_INTERVAL);
        match (next_timer, reaping) {
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
        };
        match turn(conn, &mut ctx) {
            Next::Wait => {}
            Next::Yield => self.again.push(token),
            Next::Close => return self.close(token),
        }
        if let Some(at) = conn.new_deadline() {
            self.timers.push(Reverse((at, token)));
        }
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
        if let Some(mut conn) = self.conns.remove(token) {
            self.stats.closes += 1;
            conn.record_close(&mut self.instruments.log, &mut self.stats);
            if let Some(spot) = conn.spot() {
                self.comet.unpark(spot);
            }
            if let Some(child) = conn.take_child(&mut self.stats) {
                let grace = self.config.exec_kill_grace;
                self.children
                    .end(child, Instant::now(), grace, &mut self.stats);
            }
            // Dropping the stream closes the fd, which also removes it from the epoll set:
            // no deregister syscall needed.
            conn.release(&mut self.pool);
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, token))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
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
    fn accept(&mut self, from: Listening) -> bool {
        for _ in 0..self.config.accepts_per_wakeup {
            let listener = match (from, &self.instruments.admin) {
                (Listening::Admin, Some(admin)) => admin,
                (Listening::Admin, None) => return false,
                (Listening::Main, _) => &self.listener,
            };
            self.stats.accept_calls += 1;
            let (stream, peer) = match listener.accept() {
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
                Err(e) => {
                    eprintln!("miohttpd: accept: {e}");
                    return false;
                }
            };
            self.stats.accepts += 1;
            if self.config.tcp_nodelay {
                self.stats.setsockopts += 1;
                // Failure only costs latency; the connection still works.
                let _ = stream.set_nodelay(true);
            }
            let Some(token) = self.conns.insert(|_| Conn::new(stream, peer)) else {
                eprintln!("miohttpd: connection table full; refusing {peer}");
                self.stats.closes += 1;
                continue;
            };
            let conn = self.conns.get_mut(token).expect("just inserted");
            if from == Listening::Admin {
                conn.mark_admin();
            }
            // Both interests once, edge-triggered: no re-registration syscalls later. Bytes
            // that arrived before registration are reported by the registration itself.
            self.stats.registrations += 1;
            let registered = self.poll.registry().register(
                conn.stream_mut(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            );
            if let Err(e) = registered {
                eprintln!("miohttpd: register {peer}: {e}");
                self.close(token);
            }
        }
        true
    }
}

/// Which listener a connection is accepted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listening {
    Main,
    /// `--admin-listen`: its connections are served `/metrics` only.
    Admin,
}
