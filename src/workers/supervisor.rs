//! The supervisor (`--workers N`, N > 1): the process the user started. A small mio loop of
//! its own that owns no client connection: it makes the listeners (so a worker's death never
//! closes one, and connections queued on it wait for the replacement), starts the workers,
//! reads their bus links, restarts a worker that dies (with back-off when one keeps dying),
//! and passes SIGTERM/SIGINT on. It ends when every worker has.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::server::stats::Stats;
use crate::server::syscalls::{Listener, LogWriter, Pipe, Poller, Process};
use crate::server::transport::Counted;
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::{AcceptModel, WorkerSpec, WORKER_ENV};
use crate::bus::hub::Hub;
use crate::bus::{Frame, FrameReader};
use crate::config::Config;
use crate::server::listener;
use crate::server::stats::SummaryCounters;

const SIGNALS: Token = Token(usize::MAX);
/// The admin listener (`--admin-listen`), served here with every worker's counters.
const ADMIN: Token = Token(usize::MAX - 1);
/// The Redis link's command connection and subscriber (`--redis`).
const REDIS: [Token; 2] = [Token(usize::MAX - 3), Token(usize::MAX - 2)];
/// Admin connections' tokens start here (worker links use their index, below MAX_WORKERS).
const ADMIN_CONN_BASE: usize = 1 << 16;
/// Workers' stderr pipes' tokens start here, below the admin connections'.
const WORKER_LOG_BASE: usize = 1 << 15;
/// A worker's stderr text without a newline this long is passed on as a line of its own.
const MAX_LOG_LINE: usize = 16 * 1024;
/// How long `/metrics` waits for the workers' counters before it answers with those it has.
const STATS_WAIT: Duration = Duration::from_secs(2);
/// Largest admin request head read.
const MAX_ADMIN_HEAD: usize = 16 * 1024;

/// A worker that dies this soon after its start counts towards a crash loop.
const QUICK_DEATH: Duration = Duration::from_secs(5);
/// Back-off before the next start in a crash loop: doubles from the first to the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the hub forgets idle channels.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes queued for a worker that does not read its link, past which it is taken for stuck
/// and restarted rather than buffered without bound.
const MAX_OUTBOX: usize = 64 << 20;

/// A worker's stderr line (with its newline) as the supervisor prints it: named.
fn named_line(worker: u16, line: &[u8], out: &mut Vec<u8>) {
    let text = line.strip_prefix(b"miohttpd: ").unwrap_or(line);
    out.extend_from_slice(format!("miohttpd[worker {worker}]: ").as_bytes());
    out.extend_from_slice(text);
}

/// `into += counters`, field by field.
fn add(into: &mut SummaryCounters, counters: &SummaryCounters) {
    into.requests += counters.requests;
    into.syscalls += counters.syscalls;
    into.events += counters.events;
    into.polls += counters.polls;
    into.bytes_in += counters.bytes_in;
    into.bytes_out += counters.bytes_out;
}

/// The Redis link's syscalls (`--redis`), which it counts itself (`LinkSyscalls`).
fn link_syscalls(across: Option<&super::across::Across>) -> u64 {
    across.map_or(0, |across| {
        let calls = across.stats().syscalls;
        calls.connect + calls.read + calls.write
    })
}

/// The delay before restarting a worker that died `quick_deaths` times in a row soon after
/// starting: none for the first (a one-off crash costs its clients as little as possible),
/// then 100 ms doubling up to 10 s, so a crash loop never spins.
pub fn restart_delay(quick_deaths: u32) -> Duration {
    match quick_deaths {
        0 | 1 => Duration::ZERO,
        n => FIRST_BACKOFF
            .saturating_mul(1 << (n - 2).min(16))
            .min(MAX_BACKOFF),
    }
}

/// One worker slot: the process in it now (if any) and its history.
struct Slot {
    index: u16,
    /// The listeners this slot's worker inherits (indices into `Supervisor::listeners`).
    listeners: Vec<usize>,
    cpu: Option<usize>,
    running: Option<Running>,
    quick_deaths: u32,
    restart_at: Option<Instant>,
}

struct Running {
    child: Process,
    started_at: Instant,
    link: Counted<UnixStream>,
    reader: FrameReader,
    /// Bytes queued for it past which it counts as stuck: [`MAX_OUTBOX`], or the history
    /// replay it joined with if that is larger (a big history must not look like a stall).
    outbox_limit: usize,
}

enum Phase {
    Serving,
    /// A signal came: workers drain; none is restarted.
    Draining,
    /// A second signal came: workers were told to stop at once.
    StoppingAtOnce,
}

/// A client of the admin listener: its request, then (for `/metrics`) the workers' answers
/// being gathered, then the response being written; closed after it.
struct AdminConn {
    stream: Counted<TcpStream>,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    gathering: Option<Gathering>,
    /// Bytes of `input` the request being answered took.
    consumed: usize,
    keep_alive: bool,
    peer_closed: bool,
}

struct Gathering {
    query: u64,
    awaiting: Vec<u16>,
    texts: Vec<(u16, String)>,
    until: Instant,
    head_only: bool,
}

struct Supervisor {
    model: AcceptModel,
    /// Every listener the workers inherit; closed at shutdown so the kernel refuses new
    /// connections once no worker accepts.
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    poll: Poller,
    /// The supervisor's own counters: every syscall it makes in its loop goes through a
    /// wrapper that counts it here (`server::syscalls`, `server::transport`), as in a worker.
    /// The kinds read as a worker's do, on the supervisor's own things: `reads`/`writes` are
    /// its admin connections' and the workers' bus links', `pipe_reads`/`pipe_closes` the
    /// workers' stderr pipes, `process_syscalls` starting (an estimate,
    /// `WORKER_START_SYSCALLS`), reaping (a wait4 per live worker when a SIGCHLD came) and signalling
    /// workers, `log_writes` the relayed lines and the summary. The Redis link counts its own
    /// (connect, read, write: `LinkSyscalls`), added to `syscalls_total` when shown. Not
    /// counted, beside what a worker leaves out ([`Stats::syscalls`]: the start, signal-hook's
    /// pipe reads, error lines on stderr, ...): the Redis link's epoll_ctl, socket, close and
    /// socket options; systemd's notify; closing the listeners at shutdown; and the worker
    /// end's fcntl(F_GETFD) in debug builds.
    stats: Stats,
    /// stderr, for the workers' relayed lines and the `--stats-interval` summary; error lines
    /// of the supervisor's own go by `eprintln!`, uncounted as in a worker.
    log: LogWriter<io::Stderr>,
    /// The workers' `--events-per-poll`: the buckets of the supervisor's events histogram,
    /// so its series merge with theirs.
    events_per_poll: usize,
    signals: Signals,
    phase: Phase,
    /// Comet ids, history and fan-out across the workers.
    hub: Hub,
    next_sweep: Instant,
    admin: Option<Listener>,
    admin_conns: Slab<AdminConn>,
    next_query: u64,
    /// `--redis`: the link to the other hosts, in the hub.
    across: Option<super::across::Across>,
    /// `--stats-interval`: printed here for every worker and in total (workers print none).
    summary: Option<IntervalSummary>,
    /// Each worker's stderr, passed on line by line with its name (`miohttpd[worker 1]: `);
    /// kept past the worker's death until the pipe ends (its commands may still write).
    worker_logs: Slab<WorkerLog>,
}

/// A worker's stderr pipe and the start of a line not ended yet.
struct WorkerLog {
    worker: u16,
    pipe: Pipe,
    partial: Vec<u8>,
}

/// The `--stats-interval` lines with workers: each interval the workers' counters are asked
/// for over the bus (as for `/metrics`), then one line per worker (`worker=i`) and one for the
/// server (unlabelled, as one process prints it).
struct IntervalSummary {
    interval: Duration,
    next_at: Instant,
    /// The round being gathered, and when it was asked for.
    round: Option<(Gathering, Instant)>,
    /// Each worker's counters at the last line.
    last: Vec<Option<SummaryCounters>>,
    /// The supervisor's syscalls at the last line, for the server's.
    last_own_syscalls: u64,
    last_at: Instant,
}

/// Runs the supervisor until every worker has ended: exit status 0 after a graceful
/// shutdown, 1 after a stop at once or when the loop itself fails.
pub fn supervise(config: Config, activated: Option<Vec<std::net::TcpListener>>) -> ! {
    match Supervisor::start(config, activated) {
        Ok(supervisor) => {
            let status = supervisor.run();
            std::process::exit(status)
        }
        Err(e) => {
            eprintln!("miohttpd[supervisor]: cannot listen: {e}");
            std::process::exit(1);
        }
    }
}

impl Supervisor {
    fn start(config: Config, activated: Option<Vec<std::net::TcpListener>>) -> io::Result<Self> {
        let workers = config.workers.resolve();
        let cpus = config.worker_cpu_affinity.cpus(workers);
        let mut model = config.accept_model;
        // Per worker, the indices of its listeners in `listeners`.
        let mut listeners = Vec::new();
        let mut sets: Vec<Vec<usize>> = Vec::new();
        match activated {
            Some(sockets) => {
                if model == AcceptModel::ReusePort {
                    // systemd made one socket per address: every worker shares it.
                    eprintln!("miohttpd[supervisor]: sockets from systemd: accept model shared");
                    model = AcceptModel::Shared;
                }
                for socket in sockets {
                    listeners.push(listener::adopt(socket)?);
                }
                sets = vec![(0..listeners.len()).collect(); workers];
            }
            None if model == AcceptModel::Shared => {
                listeners = listener::bind_all(&config)?;
                sets = vec![(0..listeners.len()).collect(); workers];
            }
            None => {
                // One SO_REUSEPORT listener per worker and address. The first set picks any
                // port 0; the others bind the addresses it got.
                let mut reuse = config.clone();
                reuse.reuse_port = true;
                for _ in 0..workers {
                    let set = listener::bind_all(&reuse)?;
                    if reuse.listen != config.listen || sets.is_empty() {
                        reuse.listen = set
                            .iter()
                            .map(|l| l.local_addr())
                            .collect::<io::Result<_>>()?;
                    }
                    let first = listeners.len();
                    listeners.extend(set);
                    sets.push((first..listeners.len()).collect());
                }
                #[cfg(target_os = "linux")]
                if config.steer_by_cpu {
                    match &cpus {
                        // Any socket of a group sets the group's program: worker 0's.
                        Some(cpus) => {
                            for &index in &sets[0] {
                                crate::sys::attach_reuseport_cpu_steering(&listeners[index], cpus)?;
                            }
                        }
                        None => eprintln!(
                            "miohttpd[supervisor]: --steer-by-cpu needs --worker-cpu-affinity; not steering"
                        ),
                    }
                }
            }
        }
        let mut admin_listener = match config.admin_listen {
            Some(addr) => {
                let std_listener = std::net::TcpListener::bind(addr)?;
                std_listener.set_nonblocking(true)?;
                Some(Listener::new(TcpListener::from_std(std_listener)))
            }
            None => None,
        };
        let admin = match &admin_listener {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };
        {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            // Tests and scripts read the first line for the address.
            for &index in &sets[0] {
                let addr = listeners[index].local_addr()?;
                let _ = writeln!(stdout, "miohttpd listening on http://{addr}");
            }
            if let Some(admin) = admin {
                let _ = writeln!(stdout, "miohttpd admin listening on http://{admin}");
            }
            let _ = stdout.flush();
        }
        let poll = Poller::new()?;
        let mut stats = Stats::default();
        let mut signals = Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGCHLD])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE, &mut stats)?;
        if let Some(listener) = &mut admin_listener {
            poll.registry()
                .register(listener, ADMIN, Interest::READABLE, &mut stats)?;
        }
        let slots = sets
            .into_iter()
            .enumerate()
            .map(|(index, listeners)| Slot {
                index: index as u16,
                listeners,
                cpu: cpus.as_ref().map(|cpus| cpus[index]),
                running: None,
                quick_deaths: 0,
                restart_at: Some(Instant::now()),
            })
            .collect();
        eprintln!(
            "miohttpd[supervisor]: pid {}: {workers} workers, accept model {model}",
            std::process::id()
        );
        let mut hub = Hub::new(config.comet, crate::comet::new_epoch(), workers);
        let host = crate::redis::new_host_id();
        let across = crate::redis::session_config(&config, host).map(|session| {
            hub.use_redis();
            super::across::Across::new(session, REDIS, poll.uncounted_registry())
        });
        Ok(Supervisor {
            model,
            listeners,
            slots,
            poll,
            stats,
            log: LogWriter::new(io::stderr()),
            events_per_poll: config.events_per_poll,
            signals,
            phase: Phase::Serving,
            hub,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            admin: admin_listener,
            admin_conns: Slab::new(),
            next_query: 1,
            worker_logs: Slab::new(),
            summary: (!config.stats_interval.is_zero()).then(|| IntervalSummary {
                interval: config.stats_interval,
                next_at: Instant::now() + config.stats_interval,
                round: None,
                last: vec![None; workers],
                last_own_syscalls: 0,
                last_at: Instant::now(),
            }),
            across,
        })
    }

    fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(64);
        self.start_due(Instant::now());
        crate::systemd::notify("READY=1");
        loop {
            if !matches!(self.phase, Phase::Serving)
                && self.slots.iter().all(|s| s.running.is_none())
            {
                // The workers' last lines first (written before they exited).
                let keys: Vec<usize> = self.worker_logs.iter().map(|(key, _)| key).collect();
                for key in keys {
                    self.relay_log(key, true);
                }
                eprintln!("miohttpd[supervisor]: every worker has stopped");
                if let Some(across) = &mut self.across {
                    across.close(self.poll.uncounted_registry());
                }
                return match self.phase {
                    Phase::StoppingAtOnce => 1,
                    _ => 0,
                };
            }
            let restarts = self.slots.iter().filter_map(|s| s.restart_at);
            let gathering = self.admin_conns.iter();
            let gathering = gathering.filter_map(|(_, c)| c.gathering.as_ref().map(|g| g.until));
            let hub_due = self.hub.next_due();
            let redis_due = self.across.as_ref().map(|a| a.next_deadline());
            let summary_due = self.summary.as_ref().map(|s| match &s.round {
                Some((round, _)) => round.until,
                None => s.next_at,
            });
            let next = restarts
                .chain(gathering)
                .chain(hub_due)
                .chain(summary_due)
                .chain(redis_due)
                .chain([self.next_sweep])
                .min();
            let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout, &mut self.stats) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!(
                    "miohttpd[supervisor]: supervisor poll failed: {e}; stopping the workers"
                );
                self.signal_all(libc::SIGKILL);
                return 1;
            }
            let woken_by = events.iter().count();
            self.stats.events += woken_by as u64;
            self.stats.events_per_poll.record(woken_by);
            let mut signalled = false;
            for event in events.iter() {
                match event.token() {
                    SIGNALS => signalled = true,
                    ADMIN => self.accept_admin(),
                    token if self.across.as_ref().is_some_and(|a| a.owns(token)) => {
                        if let Some(across) = &mut self.across {
                            across.ready(self.poll.uncounted_registry(), token, Instant::now());
                        }
                    }
                    Token(key) if key >= ADMIN_CONN_BASE => self.serve_admin(key - ADMIN_CONN_BASE),
                    Token(key) if key >= WORKER_LOG_BASE => {
                        self.relay_log(key - WORKER_LOG_BASE, false)
                    }
                    Token(index) => self.read_link(index),
                }
            }
            // Reaped only when a child exited: a wait4 per worker on every wake-up (every
            // publish passes through the hub) would cost more than the wake-up itself.
            if signalled && self.on_signals() {
                self.reap();
            }
            let now = Instant::now();
            self.start_due(now);
            if now >= self.next_sweep {
                self.hub.sweep(now);
                self.next_sweep = now + SWEEP_INTERVAL;
            }
            let missing = self.hub.expire(now);
            if !missing.is_empty() {
                eprintln!(
                    "miohttpd[supervisor]: workers {missing:?} gave no count within {}s; answered without",
                    crate::bus::hub::ANSWER_WAIT.as_secs()
                );
            }
            if let Some(across) = &mut self.across {
                across.turn(&mut self.hub, self.poll.uncounted_registry(), now);
            }
            self.finish_gathering(now);
            self.summarize(now);
            self.flush_links();
        }
    }

    /// Acts on the signals that came; true if one was SIGCHLD (a worker exited: reap).
    fn on_signals(&mut self) -> bool {
        let pending: Vec<i32> = self.signals.pending().collect();
        let mut child_exited = false;
        for signal in pending {
            if signal == libc::SIGCHLD {
                child_exited = true;
                continue;
            }
            let name = signal_name(signal);
            match self.phase {
                Phase::Serving => {
                    eprintln!(
                        "miohttpd[supervisor]: {name}: telling every worker to finish and stop"
                    );
                    self.phase = Phase::Draining;
                    crate::systemd::notify("STOPPING=1");
                    // Workers close their copies; once these go too, the kernel refuses.
                    self.listeners.clear();
                    for slot in &mut self.slots {
                        slot.restart_at = None;
                    }
                    self.signal_all(libc::SIGTERM);
                }
                Phase::Draining | Phase::StoppingAtOnce => {
                    eprintln!("miohttpd[supervisor]: {name} again: every worker stops at once");
                    self.phase = Phase::StoppingAtOnce;
                    // A worker's second signal is its own "at once".
                    self.signal_all(libc::SIGTERM);
                }
            }
        }
        child_exited
    }

    fn signal_all(&mut self, signal: i32) {
        for slot in &self.slots {
            if let Some(running) = &slot.running {
                // A worker leads its own process group (process_group(0)), so its group
                // is its pid; the commands it runs lead groups of their own.
                let signal = match signal {
                    libc::SIGKILL => crate::sys::Signal::Kill,
                    _ => crate::sys::Signal::Terminate,
                };
                let _ = running.child.signal_group(signal, &mut self.stats);
            }
        }
    }

    /// Reads what a worker sent on its link. A frame that does not decode means the worker
    /// is broken: its link is dropped and it is killed (and restarted like any dead worker);
    /// the supervisor itself carries on.
    fn read_link(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(running) = slot.running.as_mut() else {
            return;
        };
        loop {
            let spare = running.reader.spare(16 * 1024);
            let len = spare.len();
            match running.link.read(spare, &mut self.stats) {
                Ok(0) => {
                    running.reader.filled(len, 0);
                    // The worker closed its end: it is exiting; SIGCHLD follows.
                    let registry = self.poll.registry();
                    let _ = registry.deregister(&mut running.link, &mut self.stats);
                    return;
                }
                Ok(n) => running.reader.filled(len, n),
                Err(e) => {
                    running.reader.filled(len, 0);
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if e.kind() != io::ErrorKind::WouldBlock {
                        eprintln!("miohttpd[supervisor]: worker {index} link: {e}");
                    }
                    break;
                }
            }
        }
        let now = Instant::now();
        loop {
            let broken = match running.reader.next_frame() {
                Ok(Some(Frame::Hello { worker, .. })) if worker != slot.index => {
                    format!("a hello from worker {worker}")
                }
                Ok(Some(Frame::Stats { query, text })) => {
                    let text = String::from_utf8_lossy(text).into_owned();
                    let round = self.summary.as_mut().and_then(|s| s.round.as_mut());
                    if let Some((g, _)) = round.filter(|(g, _)| g.query == query) {
                        g.awaiting.retain(|&w| w != slot.index);
                        g.texts.push((slot.index, text));
                        continue;
                    }
                    for (_, conn) in self.admin_conns.iter_mut() {
                        if let Some(g) = conn.gathering.as_mut().filter(|g| g.query == query) {
                            g.awaiting.retain(|&w| w != slot.index);
                            g.texts.push((slot.index, text));
                            break;
                        }
                    }
                    continue;
                }
                Ok(Some(frame)) => match self.hub.on_frame(slot.index, frame, now) {
                    Ok(()) => continue,
                    Err(unexpected) => {
                        format!("a {} frame, which only the hub sends", unexpected.0)
                    }
                },
                Ok(None) => break,
                Err(e) => format!("a bad frame ({e})"),
            };
            eprintln!(
                "miohttpd[supervisor]: worker {index} (pid {}) sent {broken}; dropping its link and \
                 restarting it",
                running.child.id()
            );
            self.hub.leave(slot.index);
            let _ = self
                .poll
                .registry()
                .deregister(&mut running.link, &mut self.stats);
            let _ = running
                .child
                .signal_group(crate::sys::Signal::Kill, &mut self.stats);
            break;
        }
    }

    /// Writes what the hub queued for each worker, as far as its link takes it now; the rest
    /// waits for the link's next writable edge. A worker that lets too much pile up is stuck:
    /// it is killed and restarted.
    fn flush_links(&mut self) {
        for slot in &mut self.slots {
            let Some(running) = slot.running.as_mut() else {
                continue;
            };
            let outbox = self.hub.outbox(slot.index as usize);
            let mut written = 0;
            while written < outbox.len() {
                match running
                    .link
                    .send([&outbox[written..], &[]], false, &mut self.stats)
                {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // WouldBlock, or a dead link that reap() will see
                }
            }
            outbox.drain(..written);
            if outbox.len() > running.outbox_limit {
                eprintln!(
                    "miohttpd[supervisor]: worker {} (pid {}) does not read its link; restarting it",
                    slot.index,
                    running.child.id()
                );
                self.hub.leave(slot.index);
                let _ = running
                    .child
                    .signal_group(crate::sys::Signal::Kill, &mut self.stats);
            }
        }
    }

    fn accept_admin(&mut self) {
        loop {
            let Some(listener) = &self.admin else {
                return;
            };
            let mut stream = match listener.accept(&mut self.stats) {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("miohttpd[supervisor]: admin accept: {e}");
                    return;
                }
            };
            let entry = self.admin_conns.vacant_entry();
            let token = Token(ADMIN_CONN_BASE + entry.key());
            let interest = Interest::READABLE | Interest::WRITABLE;
            let registry = self.poll.registry();
            if registry
                .register(&mut stream, token, interest, &mut self.stats)
                .is_ok()
            {
                entry.insert(AdminConn {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    written: 0,
                    gathering: None,
                    consumed: 0,
                    keep_alive: false,
                    peer_closed: false,
                });
            } else {
                stream.close(&mut self.stats);
            }
        }
    }

    /// Reads admin requests; `/metrics` asks every live worker for its counters (answered
    /// by [`Supervisor::finish_gathering`]); anything else is answered at once. Keep-alive and
    /// pipelining as on a worker's admin listener: one request at a time, in order.
    fn serve_admin(&mut self, key: usize) {
        let Some(conn) = self.admin_conns.get_mut(key) else {
            return;
        };
        let mut buf = [0u8; 4096];
        while conn.input.len() <= MAX_ADMIN_HEAD {
            match conn.stream.read(&mut buf, &mut self.stats) {
                Ok(0) => {
                    conn.peer_closed = true;
                    break;
                }
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    conn.peer_closed = true;
                    break;
                }
            }
        }
        self.next_admin_request(key);
        self.write_admin(key);
    }

    /// Starts on the next request already read, unless one is being answered.
    fn next_admin_request(&mut self, key: usize) {
        let Some(conn) = self.admin_conns.get_mut(key) else {
            return;
        };
        if !conn.output.is_empty() || conn.gathering.is_some() {
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&conn.input) {
            Ok(httparse::Status::Complete(used)) => {
                conn.consumed = used;
                let close_asked = request.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
                conn.keep_alive = request.version == Some(1) && !close_asked;
                let close = !conn.keep_alive;
                let path = request.path.unwrap_or("");
                let path = path.split_once('?').map_or(path, |(p, _)| p);
                match (path, request.method.unwrap_or("")) {
                    ("/metrics", method @ ("GET" | "HEAD")) => {
                        let query = self.next_query;
                        self.next_query += 1;
                        let awaiting: Vec<u16> = self
                            .slots
                            .iter()
                            .filter(|s| s.running.is_some())
                            .map(|s| s.index)
                            .collect();
                        for &worker in &awaiting {
                            self.hub.send_to(worker, &Frame::StatsQuery { query });
                        }
                        conn.gathering = Some(Gathering {
                            query,
                            awaiting,
                            texts: Vec::new(),
                            until: Instant::now() + STATS_WAIT,
                            head_only: method == "HEAD",
                        });
                    }
                    ("/metrics", _) => {
                        conn.output = admin_response(
                            "405 Method Not Allowed",
                            "Allow: GET, HEAD\r\n",
                            b"method not allowed\n",
                            false,
                            close,
                        )
                    }
                    _ => {
                        conn.output =
                            admin_response("404 Not Found", "", b"not found\n", false, close)
                    }
                }
            }
            Ok(httparse::Status::Partial) if conn.input.len() <= MAX_ADMIN_HEAD => {
                if conn.peer_closed {
                    self.close_admin(key);
                }
            }
            _ => {
                conn.keep_alive = false;
                conn.consumed = conn.input.len();
                conn.output = admin_response("400 Bad Request", "", b"bad request\n", false, true);
            }
        }
    }

    /// Passes on what a worker wrote on its stderr, each whole line once with the worker's
    /// name in front (`miohttpd: ...` becomes `miohttpd[worker 1]: ...`; other text, such as
    /// a panic or a command's, gets the name in front too). At the pipe's end (or `last`,
    /// when the supervisor exits) the unfinished line goes too.
    fn relay_log(&mut self, key: usize, last: bool) {
        let Some(log) = self.worker_logs.get_mut(key) else {
            return;
        };
        let mut ended = last;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match log.pipe.read(&mut buf, &mut self.stats) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => log.partial.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(end) = log.partial[start..].iter().position(|&b| b == b'\n') {
            named_line(log.worker, &log.partial[start..start + end + 1], &mut out);
            start += end + 1;
        }
        log.partial.drain(..start);
        if !log.partial.is_empty() && (ended || log.partial.len() >= MAX_LOG_LINE) {
            log.partial.push(b'\n');
            named_line(log.worker, &log.partial, &mut out);
            log.partial.clear();
        }
        // One write per wake-up: a line is never split by another's. stderr gone is no
        // reason to stop.
        let _ = self.log.write_all(&out, &mut self.stats);
        if ended && !last {
            let mut log = self.worker_logs.remove(key);
            let _ = self
                .poll
                .registry()
                .deregister(&mut log.pipe, &mut self.stats);
            log.pipe.close(&mut self.stats);
        }
    }

    /// `--stats-interval`: asks the workers for their counters when an interval is over, and
    /// prints the lines once all have answered (or the wait ran out).
    fn summarize(&mut self, now: Instant) {
        let own_syscalls = self.own_syscalls();
        let Some(summary) = self.summary.as_mut() else {
            return;
        };
        let Some((round, asked_at)) = summary.round.take() else {
            if now >= summary.next_at {
                let query = self.next_query;
                self.next_query += 1;
                let awaiting: Vec<u16> = self
                    .slots
                    .iter()
                    .filter(|s| s.running.is_some())
                    .map(|s| s.index)
                    .collect();
                for &worker in &awaiting {
                    self.hub.send_to(worker, &Frame::StatsQuery { query });
                }
                let round = Gathering {
                    query,
                    awaiting,
                    texts: Vec::new(),
                    until: now + STATS_WAIT.min(summary.interval),
                    head_only: false,
                };
                summary.round = Some((round, now));
                // The next line one interval after this one: a stalled loop prints one late
                // line rather than a burst.
                summary.next_at = now + summary.interval;
            }
            return;
        };
        if !round.awaiting.is_empty() && now < round.until {
            summary.round = Some((round, asked_at));
            return;
        }
        let mut texts = round.texts;
        texts.sort_by_key(|(w, _)| *w);
        let elapsed = asked_at.saturating_duration_since(summary.last_at);
        let (mut total, mut total_then, mut total_conns) = Default::default();
        let mut lines = String::new();
        for (worker, text) in &texts {
            let (counters, connections) = super::metrics::summary_counters(text);
            let last = &mut summary.last[*worker as usize];
            // A worker restarted since starts from zero.
            let then = last
                .filter(|t| t.requests <= counters.requests && t.polls <= counters.polls)
                .unwrap_or_default();
            *last = Some(counters);
            let label = format!("worker={worker} ");
            lines.push_str(&counters.line_since(&then, elapsed, connections, &label));
            add(&mut total, &counters);
            add(&mut total_then, &then);
            total_conns += connections;
        }
        // The server's line counts the supervisor's syscalls too: they are the server's cost.
        total.syscalls += own_syscalls;
        total_then.syscalls += summary.last_own_syscalls;
        summary.last_own_syscalls = own_syscalls;
        lines.push_str(&total.line_since(&total_then, elapsed, total_conns, ""));
        summary.last_at = asked_at;
        // One write: the lines of an interval stay together; stderr gone is no reason to stop.
        let _ = self.log.write_all(lines.as_bytes(), &mut self.stats);
    }

    /// Every syscall the supervisor has made: its own counters' and the Redis link's.
    fn own_syscalls(&self) -> u64 {
        self.stats.syscalls() + link_syscalls(self.across.as_ref())
    }

    /// Answers every `/metrics` whose workers have all reported, or whose wait ran out.
    fn finish_gathering(&mut self, now: Instant) {
        let mut done = Vec::new();
        for (key, conn) in self.admin_conns.iter_mut() {
            let Some(g) = &conn.gathering else {
                continue;
            };
            if g.awaiting.is_empty() || now >= g.until {
                let mut g = conn.gathering.take().expect("checked");
                g.texts.sort_by_key(|(w, _)| *w);
                let own = (self.stats).render_supervisor_prometheus(
                    link_syscalls(self.across.as_ref()),
                    self.events_per_poll,
                );
                let mut body = super::metrics::merge(&g.texts, &own);
                if let Some(across) = &self.across {
                    crate::redis::write_metrics(&mut body, across.state(), &across.stats());
                }
                conn.output = admin_response(
                    "200 OK",
                    "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
                    body.as_bytes(),
                    g.head_only,
                    !conn.keep_alive,
                );
                done.push(key);
            }
        }
        for key in done {
            self.write_admin(key);
        }
    }

    /// Writes an admin response; closes the connection once it is all written (or fails).
    fn write_admin(&mut self, key: usize) {
        let Some(conn) = self.admin_conns.get_mut(key) else {
            return;
        };
        if conn.output.is_empty() {
            return;
        }
        while conn.written < conn.output.len() {
            match conn
                .stream
                .send([&conn.output[conn.written..], &[]], false, &mut self.stats)
            {
                Ok(0) => break,
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    conn.keep_alive = false;
                    break;
                }
            }
        }
        if conn.keep_alive && conn.written == conn.output.len() {
            // Answered: on to the next request, pipelined or still to come.
            conn.input.drain(..conn.consumed);
            conn.consumed = 0;
            conn.output.clear();
            conn.written = 0;
            if !conn.input.is_empty() {
                self.next_admin_request(key);
                return self.write_admin(key);
            }
            if !conn.peer_closed {
                return;
            }
        }
        self.close_admin(key);
    }

    /// Takes an admin connection out of the poll and closes it.
    fn close_admin(&mut self, key: usize) {
        let mut conn = self.admin_conns.remove(key);
        let _ = self
            .poll
            .registry()
            .deregister(&mut conn.stream, &mut self.stats);
        conn.stream.close(&mut self.stats);
    }

    /// Collects every worker that has exited, logs how, and schedules its restart.
    fn reap(&mut self) {
        let now = Instant::now();
        for slot in &mut self.slots {
            let Some(running) = slot.running.as_mut() else {
                continue;
            };
            let status = match running.child.try_wait(&mut self.stats) {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("miohttpd[supervisor]: worker {}: wait: {e}", slot.index);
                    continue;
                }
            };
            let running = slot.running.take().expect("checked above");
            self.hub.leave(slot.index);
            for (_, conn) in self.admin_conns.iter_mut() {
                if let Some(g) = conn.gathering.as_mut() {
                    g.awaiting.retain(|&w| w != slot.index);
                }
            }
            let pid = running.child.id();
            let lived = now.saturating_duration_since(running.started_at);
            let mut link = running.link;
            let _ = self.poll.registry().deregister(&mut link, &mut self.stats);
            link.close_link(&mut self.stats);
            if !matches!(self.phase, Phase::Serving) {
                eprintln!(
                    "miohttpd[supervisor]: worker {} (pid {pid}) {}",
                    slot.index,
                    describe(status)
                );
                continue;
            }
            slot.quick_deaths = if lived < QUICK_DEATH {
                slot.quick_deaths + 1
            } else {
                1
            };
            let delay = restart_delay(slot.quick_deaths);
            eprintln!(
                "miohttpd[supervisor]: worker {} (pid {pid}) {} after {:.1}s; restarting in {}ms",
                slot.index,
                describe(status),
                lived.as_secs_f64(),
                delay.as_millis()
            );
            slot.restart_at = Some(now + delay);
        }
    }

    /// Starts every worker whose (re)start is due.
    fn start_due(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.running.is_some() || slot.restart_at.map_or(true, |at| at > now) {
                continue;
            }
            match self.spawn(index) {
                Ok(running) => {
                    let slot = &mut self.slots[index];
                    slot.running = Some(running);
                    slot.restart_at = None;
                }
                Err(e) => {
                    let slot = &mut self.slots[index];
                    slot.quick_deaths += 1;
                    let delay = restart_delay(slot.quick_deaths).max(FIRST_BACKOFF);
                    eprintln!(
                        "miohttpd[supervisor]: cannot start worker {index}: {e}; again in {}ms",
                        delay.as_millis()
                    );
                    slot.restart_at = Some(now + delay);
                }
            }
        }
    }

    fn spawn(&mut self, index: usize) -> io::Result<Running> {
        let slot = &self.slots[index];
        let (supervisor_end, worker_end) = std::os::unix::net::UnixStream::pair()?;
        let listener_fds: Vec<RawFd> = slot
            .listeners
            .iter()
            .map(|&i| self.listeners[i].as_raw_fd())
            .collect();
        let spec = WorkerSpec {
            index: slot.index,
            bus_fd: worker_end.as_raw_fd(),
            model: self.model,
            listener_fds: listener_fds.clone(),
        };
        let mut command = Command::new(program());
        {
            use std::os::unix::process::CommandExt;
            let mut args = std::env::args_os();
            if let Some(arg0) = args.next() {
                command.arg0(arg0);
            }
            command.args(args);
            // Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which
            // passes it on once (a worker's second SIGINT would mean "stop at once").
            command.process_group(0);
        }
        command.env(WORKER_ENV, spec.to_env());
        let mut keep_fds = listener_fds;
        keep_fds.push(worker_end.as_raw_fd());
        #[cfg(target_os = "linux")]
        crate::sys::prepare_worker(
            &mut command,
            crate::sys::WorkerExec {
                keep_fds,
                cpu: slot.cpu,
                supervisor: std::process::id(),
            },
        );
        // Its log lines come back through the supervisor, named (see `relay_log`).
        let (child, stderr) = Process::start_worker(&mut command, &mut self.stats)?;
        if let Some(mut pipe) = stderr {
            let entry = self.worker_logs.vacant_entry();
            let token = Token(WORKER_LOG_BASE + entry.key());
            self.poll
                .registry()
                .register(&mut pipe, token, Interest::READABLE, &mut self.stats)?;
            entry.insert(WorkerLog {
                worker: slot.index,
                pipe,
                partial: Vec::new(),
            });
        }
        // The worker has its end now; ours would keep the link open after it died.
        drop(worker_end);
        supervisor_end.set_nonblocking(true)?;
        let mut link = Counted::new(UnixStream::from_std(supervisor_end));
        self.poll.registry().register(
            &mut link,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
            &mut self.stats,
        )?;
        self.hub.join(slot.index);
        let replay = self.hub.outbox(slot.index as usize).len();
        Ok(Running {
            child,
            started_at: Instant::now(),
            link,
            reader: FrameReader::new(),
            outbox_limit: MAX_OUTBOX.max(replay.saturating_add(MAX_OUTBOX / 4)),
        })
    }
}

/// A whole admin response.
fn admin_response(
    status: &str,
    headers: &str,
    body: &[u8],
    head_only: bool,
    close: bool,
) -> Vec<u8> {
    let date = crate::http::DateCache::new(std::time::SystemTime::now());
    let date = String::from_utf8_lossy(date.as_bytes()).into_owned();
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nServer: miohttpd\r\nDate: {date}\r\n{headers}\
         Content-Length: {}\r\nCache-Control: no-store\r\n{connection}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The running binary itself: on Linux `/proc/self/exe` still names it after the file was
/// replaced or deleted (an upgrade in place), which its path would not.
fn program() -> std::path::PathBuf {
    if cfg!(target_os = "linux") {
        "/proc/self/exe".into()
    } else {
        std::env::current_exe().unwrap_or_else(|_| "miohttpd".into())
    }
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal} ({})", signal_name(signal)),
        _ => "ended".into(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGCHLD => "SIGCHLD",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_grows_to_a_cap_and_a_one_off_crash_restarts_at_once() {
        assert_eq!(restart_delay(1), Duration::ZERO);
        assert_eq!(restart_delay(2), Duration::from_millis(100));
        assert_eq!(restart_delay(3), Duration::from_millis(200));
        assert_eq!(restart_delay(9), MAX_BACKOFF);
        assert_eq!(restart_delay(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn exit_statuses_read_as_sentences() {
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
    }
}
