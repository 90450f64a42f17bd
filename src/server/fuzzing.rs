//! Connections of the real server driven by a script instead of sockets and a wall clock:
//! what the fuzz targets, the split property test and the timer tests call. Not part of the
//! stable API.
//!
//! A [`Driver`] owns what the loop owns (buffers, comet registry, timer queue, the `Poll` a
//! command's pipe would be registered with) and a scripted `now` that starts at one `Instant`
//! and moves only when the script says [`Driver::advance`]. Pipe events are not delivered:
//! streamed commands run real children on real time, and are tested end to end. Timers fire as the loop fires them (`wake_at` armed after
//! every turn, `on_deadline` once the clock reaches it, re-armed after), at the instant they
//! are due, so a test can say "one tick before the limit nothing, at the limit a 408". Every
//! byte a connection writes is kept with the scripted time it was written at, and so are its
//! half-close and its close.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use mio::Token;

use super::access_log::AccessLog;
use super::buffers::BufferPool;
use super::child::Children;
use super::conn::{Conn, Ctx, Next, Readiness};
use super::fanout::Fanout;
use super::stats::Stats;
use super::syscalls::Poller;
use super::transport::{Counted, Transport};
use super::{arm_timer, claim_timer, SWEEP_INTERVAL};
use crate::comet::Comet;
use crate::config::Config;
use crate::handlers::builtin_router;
use crate::http::DateCache;
use crate::router::{Router, ServerState};

/// Which scripted connection, in the order [`Driver::connect`] made them.
pub type ClientId = usize;

/// One step of a one-connection script, for [`run`] (a [`Driver`] has a method for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// The client sends these bytes: one readable event.
    Send(&'a [u8]),
    /// The client shuts down its sending side (FIN) and keeps reading.
    ShutdownWrite,
    /// The client is gone: reads see EOF, writes fail with a reset.
    HangUp,
    /// The client stops taking response bytes: writes return WouldBlock.
    StopReading,
    /// A client that stopped reading takes this many bytes after all, without the writable
    /// edge a socket gives only once much of its buffer is free.
    Take(usize),
    /// The client takes everything again: a writable event.
    StartReading,
    /// The clock moves on; timers fire at the instants they are due.
    Advance(Duration),
    /// SIGTERM: the graceful shutdown starts.
    Shutdown,
}

/// What the server did on one connection, in scripted time since the driver started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Bytes in the order written, each run with the time it was written at.
    pub writes: Vec<(Duration, Vec<u8>)>,
    /// When the server shut down its sending side (the start of a lingering close).
    pub write_shut_at: Option<Duration>,
    pub closed_at: Option<Duration>,
    /// The close came while the client was not taking what it was offered (it stopped
    /// reading, or hung up): the last response may be cut short.
    pub cut_off: bool,
}

impl Trace {
    /// Every byte written.
    pub fn output(&self) -> Vec<u8> {
        self.writes
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    /// Every byte written, lossily as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// The bytes written at exactly `at`.
    pub fn written_at(&self, at: Duration) -> Vec<u8> {
        let at_that_time = self.writes.iter().filter(|(t, _)| *t == at);
        at_that_time.flat_map(|(_, b)| b.iter().copied()).collect()
    }

    /// When the last byte was written.
    pub fn last_write_at(&self) -> Option<Duration> {
        self.writes.last().map(|(at, _)| *at)
    }
}

/// The client's end of one scripted connection, shared by the driver and the transport.
#[derive(Default)]
struct Wire {
    input: VecDeque<u8>,
    /// The client sent its FIN: reads return 0 once the input is taken.
    eof: bool,
    /// The client is gone: writes fail.
    reset: bool,
    /// None while the client reads freely; else how many more bytes the socket takes.
    window: Option<usize>,
    /// The scripted time of the turn under way.
    at: Duration,
    /// The last write could not put out everything offered.
    blocked: bool,
    trace: Trace,
}

/// The connection's side of the wire.
struct Scripted(Rc<RefCell<Wire>>);

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut wire = self.0.borrow_mut();
        if wire.input.is_empty() {
            return if wire.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        wire.input.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut wire = self.0.borrow_mut();
        if wire.reset {
            wire.blocked = true;
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let n = wire.window.map_or(buf.len(), |room| room.min(buf.len()));
        wire.blocked = n < buf.len();
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if let Some(room) = &mut wire.window {
            *room -= n;
        }
        let at = wire.at;
        match wire.trace.writes.last_mut() {
            Some((last, bytes)) if *last == at => bytes.extend_from_slice(&buf[..n]),
            _ => wire.trace.writes.push((at, buf[..n].to_vec())),
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Scripted {
    fn shutdown_write(&mut self) -> io::Result<()> {
        let mut wire = self.0.borrow_mut();
        wire.trace.write_shut_at = Some(wire.at);
        Ok(())
    }
}

/// What a connection is given a turn for.
enum Event<'f> {
    Ready(Readiness),
    Deadline,
    Shutdown,
    Deliver(&'f mut Fanout),
}

/// Everything of the loop's that a connection's turn borrows.
struct Parts {
    config: Config,
    service: Router,
    poll: Poller,
    pool: BufferPool,
    date: DateCache,
    stats: Stats,
    comet: Comet,
    children: Children,
    log: AccessLog,
}

// ---- The adapter: the only code here that knows Conn's entry points and Ctx's fields ----
// ---- (timers are armed and claimed by the loop's own `arm_timer` and `claim_timer`). ----
// ---- Re-fit this when they change. ----

/// A connection accepted now, as `EventLoop::accept` makes it.
fn accept(wire: &Rc<RefCell<Wire>>, peer: SocketAddr, now: Instant) -> Conn<Scripted> {
    Conn::new(Counted::new(Scripted(Rc::clone(wire))), peer, now)
}

/// Gives `conn` its turn for `event` with the loop's context, as `EventLoop::with_conn` does.
fn turn(
    parts: &mut Parts,
    conn: &mut Conn<Scripted>,
    token: Token,
    now: Instant,
    draining: bool,
    event: Event<'_>,
) -> Next {
    let mut ctx = Ctx {
        config: &parts.config,
        service: &parts.service,
        date: &parts.date,
        pool: &mut parts.pool,
        stats: &mut parts.stats,
        comet: &mut parts.comet,
        children: &mut parts.children,
        registry: parts.poll.registry(),
        log: &mut parts.log,
        token,
        now,
        draining,
    };
    match event {
        Event::Ready(readiness) => conn.on_ready(readiness, &mut ctx),
        Event::Deadline => conn.on_deadline(&mut ctx),
        Event::Shutdown => conn.on_shutdown(&mut ctx),
        Event::Deliver(fanout) => conn.deliver(fanout, &mut ctx),
    }
}

/// Closes `conn` as `EventLoop::close` does: off its channel, its command ended, its buffers
/// back to the pool.
fn close(parts: &mut Parts, conn: Conn<Scripted>, now: Instant) {
    let mut server = ServerState {
        peer: None,
        config: &parts.config,
        comet: &mut parts.comet,
        stats: &mut parts.stats,
        children: &mut parts.children,
        now,
    };
    conn.close(&mut parts.log, &mut parts.pool, &mut server);
}

// ---- The driver ----

struct Client {
    wire: Rc<RefCell<Wire>>,
    /// None once closed.
    conn: Option<Conn<Scripted>>,
}

/// Scripted connections of the real server (builtin routes, a fixed `Date`) under a scripted
/// clock. See the module documentation.
pub struct Driver {
    parts: Parts,
    start: Instant,
    now: Instant,
    clients: Vec<Client>,
    timers: BinaryHeap<Reverse<(Instant, Token)>>,
    /// Connections that yielded with work left, for another turn at the same instant.
    again: Vec<Token>,
    draining_until: Option<Instant>,
    stopped_at: Option<Duration>,
    next_sweep: Instant,
}

/// A turn that yields without end, or a deadline re-armed without end, is a bug: the driver
/// panics rather than hang.
const MAX_TURNS: usize = 1_000_000;

impl Driver {
    pub fn new(config: Config) -> Driver {
        let service = builtin_router(&config);
        let pool = BufferPool::new(
            super::head_buffer_size(&config),
            config.body_buffer_size,
            config.output_high_water.saturating_mul(2),
        );
        let comet = Comet::new(config.comet, 1);
        let start = Instant::now();
        Driver {
            parts: Parts {
                config,
                service,
                poll: Poller::new().expect("epoll_create"),
                pool,
                date: DateCache::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                stats: Stats::default(),
                comet,
                children: Children::default(),
                log: AccessLog::off(),
            },
            start,
            now: start,
            clients: Vec::new(),
            timers: BinaryHeap::new(),
            again: Vec::new(),
            draining_until: None,
            stopped_at: None,
            next_sweep: start + SWEEP_INTERVAL,
        }
    }

    pub fn config(&self) -> &Config {
        &self.parts.config
    }

    /// Scripted time since the driver started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// When the server would have exited after a shutdown (nothing left, or the grace over).
    pub fn stopped_at(&self) -> Option<Duration> {
        self.stopped_at
    }

    /// What the server did on `client` so far.
    pub fn trace(&self, client: ClientId) -> Trace {
        self.clients[client].wire.borrow().trace.clone()
    }

    pub fn is_open(&self, client: ClientId) -> bool {
        self.clients[client].conn.is_some()
    }

    /// A client connects (accepted now; its head timeout starts).
    pub fn connect(&mut self) -> ClientId {
        let id = self.clients.len();
        let wire = Rc::new(RefCell::new(Wire::default()));
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000 + id as u16));
        let conn = if self.draining_until.is_some() {
            // The listener is closed: the connection is refused.
            wire.borrow_mut().trace.closed_at = Some(self.elapsed());
            None
        } else {
            Some(accept(&wire, peer, self.now))
        };
        self.clients.push(Client { wire, conn });
        self.arm(Token(id));
        id
    }

    pub fn step(&mut self, client: ClientId, step: Step<'_>) {
        match step {
            Step::Send(bytes) => self.send(client, bytes),
            Step::ShutdownWrite => self.shutdown_write(client),
            Step::HangUp => self.hang_up(client),
            Step::StopReading => self.stop_reading(client),
            Step::Take(n) => self.take(client, n),
            Step::StartReading => self.start_reading(client),
            Step::Advance(by) => self.advance(by),
            Step::Shutdown => self.shutdown(),
        }
    }

    pub fn send(&mut self, client: ClientId, bytes: &[u8]) {
        self.clients[client].wire.borrow_mut().input.extend(bytes);
        self.ready(client, true, false);
    }

    pub fn shutdown_write(&mut self, client: ClientId) {
        self.clients[client].wire.borrow_mut().eof = true;
        self.ready(client, true, true);
    }

    pub fn hang_up(&mut self, client: ClientId) {
        {
            let mut wire = self.clients[client].wire.borrow_mut();
            wire.eof = true;
            wire.reset = true;
        }
        self.ready(client, true, true);
    }

    pub fn stop_reading(&mut self, client: ClientId) {
        self.clients[client].wire.borrow_mut().window = Some(0);
    }

    pub fn take(&mut self, client: ClientId, n: usize) {
        if let Some(room) = &mut self.clients[client].wire.borrow_mut().window {
            *room += n;
        }
    }

    pub fn start_reading(&mut self, client: ClientId) {
        self.clients[client].wire.borrow_mut().window = None;
        self.ready(client, false, false);
    }

    /// The clock moves on by `by`; every timer due on the way fires at its own instant, and
    /// the shutdown grace ends at its.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        let mut fired = 0;
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let stop = self.draining_until.filter(|_| self.stopped_at.is_none());
            let next = match (next_timer, stop) {
                // The loop fires the timers of a wake-up before it looks at the grace again.
                (Some(timer), Some(stop)) if stop < timer => Err(stop),
                (Some(timer), _) => Ok(timer),
                (None, Some(stop)) => Err(stop),
                (None, None) => break,
            };
            match next {
                Ok(at) if at <= until => {
                    self.now = self.now.max(at);
                    let Some(Reverse((at, token))) = self.timers.pop() else {
                        break;
                    };
                    fired += 1;
                    assert!(fired < MAX_TURNS, "a deadline re-armed without end");
                    // Only the connection's live entry fires; it re-arms for what it waits
                    // for now.
                    let live = self.clients[token.0].conn.as_mut();
                    if live.is_some_and(|conn| claim_timer(conn, at)) {
                        self.serve(token, Event::Deadline);
                    }
                }
                Err(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.stop();
                }
                _ => break,
            }
        }
        self.now = until;
        self.parts.children.poll(self.now, &mut self.parts.stats);
        if self.now >= self.next_sweep {
            self.parts.comet.sweep(self.now);
            self.next_sweep = self.now + SWEEP_INTERVAL;
        }
    }

    /// SIGTERM, as `EventLoop::begin_shutdown` handles it.
    pub fn shutdown(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(self.now + self.parts.config.shutdown_grace);
        for id in 0..self.clients.len() {
            self.serve(Token(id), Event::Shutdown);
        }
        self.settle();
    }

    /// The end of the grace: whatever is still open is closed.
    fn stop(&mut self) {
        for id in 0..self.clients.len() {
            self.close(Token(id));
        }
        self.stopped_at = Some(self.elapsed());
    }

    fn ready(&mut self, client: ClientId, readable: bool, hung_up: bool) {
        let readiness = Readiness { readable, hung_up };
        self.serve(Token(client), Event::Ready(readiness));
        self.settle();
    }

    /// What the loop does after a round of events: turns owed, deliveries, timers due now.
    fn settle(&mut self) {
        let mut turns = 0;
        while !self.again.is_empty() {
            for token in std::mem::take(&mut self.again) {
                turns += 1;
                assert!(turns < MAX_TURNS, "a connection yielded without end");
                self.serve(token, Event::Ready(Readiness::default()));
            }
        }
        self.advance(Duration::ZERO);
        if self.draining_until.is_some() && self.clients.iter().all(|c| c.conn.is_none()) {
            self.stopped_at.get_or_insert(self.elapsed());
        }
    }

    /// One turn of a live connection, then what it asked for (as `EventLoop::with_conn`),
    /// then the deliveries it caused (as `EventLoop::fan_out`).
    fn serve(&mut self, token: Token, event: Event<'_>) {
        self.give_turn(token, event);
        while let Some(delivery) = self.parts.comet.take_delivery() {
            let mut fanout = Fanout::new(delivery.message);
            let waiters = delivery.waiters.iter().map(|(_, &token)| token);
            for token in waiters.chain(delivery.subscribers.iter().copied()) {
                self.give_turn(token, Event::Deliver(&mut fanout));
            }
        }
    }

    fn give_turn(&mut self, token: Token, event: Event<'_>) {
        let Some(client) = self.clients.get_mut(token.0) else {
            return;
        };
        let Some(conn) = client.conn.as_mut() else {
            return;
        };
        client.wire.borrow_mut().at = self.now - self.start;
        let draining = self.draining_until.is_some();
        match turn(&mut self.parts, conn, token, self.now, draining, event) {
            Next::Wait => {}
            Next::Yield => self.again.push(token),
            Next::Close => return self.close(token),
        }
        arm_timer(&mut self.timers, conn, token, &self.parts.config);
    }

    fn close(&mut self, token: Token) {
        let client = &mut self.clients[token.0];
        if let Some(conn) = client.conn.take() {
            let mut wire = client.wire.borrow_mut();
            wire.trace.closed_at = Some(self.now - self.start);
            wire.trace.cut_off = wire.blocked;
            drop(wire);
            close(&mut self.parts, conn, self.now);
        }
    }

    fn arm(&mut self, token: Token) {
        if let Some(conn) = self.clients[token.0].conn.as_mut() {
            arm_timer(&mut self.timers, conn, token, &self.parts.config);
        }
    }
}

/// Feeds `chunks` to one connection (builtin routes, default config, a fixed `Date`, the
/// clock standing still), one chunk per readable event, then the client's EOF, and returns
/// every byte the server wrote. Turns are bounded: a connection that keeps asking for more is
/// a bug, reported by a panic.
pub fn serve_chunks(chunks: &[&[u8]]) -> Vec<u8> {
    let mut driver = Driver::new(Config::default());
    let client = driver.connect();
    for chunk in chunks {
        if !driver.is_open(client) {
            break;
        }
        driver.send(client, chunk);
    }
    if driver.is_open(client) {
        driver.shutdown_write(client);
    }
    driver.trace(client).output()
}

/// Runs a one-connection script under `config` and returns what the server did.
pub fn run(config: Config, steps: &[Step<'_>]) -> Trace {
    let mut driver = Driver::new(config);
    let client = driver.connect();
    for &step in steps {
        driver.step(client, step);
    }
    driver.trace(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_requests_get_their_answers_in_order() {
        let whole: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n\
            POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
            GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
        let out = serve_chunks(&[whole]);
        let text = String::from_utf8(out).unwrap();
        let statuses: Vec<&str> = text
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| &text[at + 9..at + 12])
            .collect();
        assert_eq!(statuses, ["200", "200", "404"]);
        assert!(text.contains("Hello, World!"));
        assert!(
            text.contains("900150983cd24fb0d6963f7d28e17f72"),
            "md5 of abc"
        );
        let split: Vec<&[u8]> = whole.chunks(7).collect();
        assert_eq!(serve_chunks(&split), text.as_bytes());
    }

    #[test]
    fn garbage_gets_a_400_and_nothing_after_it() {
        let out = serve_chunks(&[b"\x00\x01 nonsense\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    }

    /// The driver closes a connection as the loop does, counting its close(2) once.
    #[test]
    fn a_close_is_counted_once() {
        let mut driver = Driver::new(Config::default());
        let client = driver.connect();
        driver.send(client, b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n");
        driver.hang_up(client);
        assert!(!driver.is_open(client));
        assert_eq!(driver.parts.stats.closes, 1);
    }

    /// Each timer fires at its own instant, however far one advance goes.
    #[test]
    fn timers_fire_at_their_own_instant_within_one_advance() {
        let config = Config {
            head_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let mut driver = Driver::new(config);
        let early = driver.connect();
        driver.advance(Duration::from_millis(400));
        let late = driver.connect();
        driver.advance(Duration::from_secs(10));
        assert_eq!(driver.trace(early).closed_at, Some(Duration::from_secs(1)));
        assert_eq!(
            driver.trace(late).closed_at,
            Some(Duration::from_millis(1400))
        );
        assert_eq!(driver.elapsed(), Duration::from_millis(10_400));
    }
}
