//! Every knob of the server in one struct, with its default and its flag; `--help` is
//! generated from the same table the parser uses, so the two cannot drift apart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::comet::CometSettings;
use crate::http::head::{HeadLimits, MAX_HEADERS_CAP};
use crate::redis::RedisTarget;
pub use crate::workers::{AcceptModel, CpuAffinity, Workers};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Addresses to listen on, one listener each (`--listen`, repeatable; names are resolved
    /// when the flag is read). Listeners passed by systemd replace them.
    pub listen: Vec<SocketAddr>,
    /// Pending-connection queue length passed to listen(2).
    pub backlog: i32,
    /// Limits on request heads (431, 414).
    pub head_limits: HeadLimits,
    /// Bytes per read(2) while reading heads: the size of the pooled buffers that requests
    /// arrive in. Idle connections hold none.
    pub read_buffer_size: usize,
    /// Bytes per read(2) while a large or chunked body streams in. Few large reads cost far
    /// less than many small ones (on loopback each read also drives the sender's ACK path);
    /// a connection holds such a buffer only while it has body bytes buffered.
    pub body_buffer_size: usize,
    /// Pending response bytes above which a connection stops reading and parsing requests
    /// until the client catches up.
    pub output_high_water: usize,
    /// Readiness events taken per poll(2) wake-up.
    pub events_per_poll: usize,
    /// Connections accepted per listener wake-up before others get a turn.
    pub accepts_per_wakeup: usize,
    /// Bytes one connection may read per turn before others get a turn.
    pub turn_bytes: usize,
    /// Disable Nagle's algorithm on accepted sockets.
    pub tcp_nodelay: bool,
    /// How long a connection closing after an error keeps draining the client's bytes, so
    /// the kernel does not reset the connection before the client has read the response.
    pub linger: Duration,
    /// Channels, history and idle-channel expiry of the comet registry.
    pub comet: CometSettings,
    /// How long a long-poll waiter stays parked before an empty 204 (zero: forever).
    pub comet_timeout: Duration,
    /// Largest body `POST /notify/{channel}` accepts (413 beyond).
    pub comet_body_limit: usize,
    /// Interval of the comment lines that keep an idle event stream alive.
    pub sse_heartbeat: Duration,
    /// Commands `GET /stream/NAME` may run, by name: the operator's text for the shell.
    pub commands: Vec<(String, String)>,
    /// The shell that runs a command's text (`SHELL -c TEXT`).
    pub exec_shell: PathBuf,
    /// Where a command's stderr goes.
    pub exec_stderr: StderrMode,
    /// Commands running at once (503 beyond).
    pub exec_max_running: usize,
    /// How long a command may run (zero: no limit).
    pub exec_time_limit: Duration,
    /// Between SIGTERM and SIGKILL when a command must end.
    pub exec_kill_grace: Duration,
    // Time limits, connection limit, shutdown and access control (docs/reliability.md).
    /// How long a request head may take to arrive, from accept (or from its first byte on a
    /// kept-alive connection); 408 after. Zero: no limit.
    pub head_timeout: Duration,
    /// How long a kept-alive connection may sit between requests before it is closed.
    pub idle_timeout: Duration,
    /// How long a request body may go without a byte; 408 after.
    pub body_timeout: Duration,
    /// How long pending response bytes may go untaken by the client before it is dropped.
    pub send_timeout: Duration,
    /// Connections served at once; beyond, a new connection gets 503. Zero: the open-files
    /// limit less a reserve for pipes and the listener.
    pub max_connections: usize,
    /// After SIGTERM or SIGINT, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    /// The bearer token that publishing and `/metrics` need, when set.
    pub admin_token: Option<Secret>,
    /// Whether streamed commands need the admin token too.
    pub exec_require_token: bool,
    // Instruments and socket knobs (docs/tuning.md).
    /// Interval of the one-line summary on stderr (zero: none).
    pub stats_interval: Duration,
    /// Where the access log (nginx `combined` format) goes, if anywhere.
    pub access_log: Option<LogTarget>,
    /// A second listener that serves only `/metrics`; the main listener then answers 404 there.
    pub admin_listen: Option<SocketAddr>,
    /// SO_REUSEPORT on the listener: several processes may listen on one address.
    pub reuse_port: bool,
    /// TCP_DEFER_ACCEPT on the listener (Linux): accept only once the client has sent data
    /// (zero: off).
    pub defer_accept: Duration,
    /// SO_RCVBUF set on the listener, inherited by accepted sockets (zero: kernel default).
    pub rcvbuf: usize,
    /// SO_SNDBUF set on the listener, inherited by accepted sockets (zero: kernel default).
    pub sndbuf: usize,
    /// Answers to pipelined requests already read share one write; off: one write each.
    pub coalesce: bool,
    /// After a short read, read again until WouldBlock rather than take the short read as
    /// proof that the receive queue is empty: one more read(2) per request.
    pub read_until_wouldblock: bool,
    // Worker processes (docs/tuning.md, "Workers"); src/workers/ runs them.
    /// Worker processes serving the listeners; one: no supervisor, today's single process.
    pub workers: Workers,
    /// How the workers share the `--listen` addresses.
    pub accept_model: AcceptModel,
    /// The CPU each worker is pinned to.
    pub worker_cpu_affinity: CpuAffinity,
    /// A classic BPF program on each reuseport group picks the listener of the worker pinned
    /// to the CPU that took the packet.
    pub steer_by_cpu: bool,
    /// Set in a worker, not by a flag: the supervisor serves `--admin-listen`, so this process
    /// binds nothing there (and still hides `/metrics` on the main listeners).
    pub admin_served_by_supervisor: bool,
    // Comet across hosts (docs/comet.md, "Across hosts: Redis").
    /// The Redis every host sharing comet channels uses (`--redis`); none: nothing connects.
    pub redis: Option<RedisTarget>,
    /// Its password: from the URL, `--redis-password-file` or `$MIOHTTPD_REDIS_PASSWORD`.
    pub redis_password: Option<Secret>,
    /// The key space (and pub/sub channels) of this group of hosts in that Redis.
    pub redis_prefix: String,
    /// How often the subscriber connection is probed and this host's heartbeat sent.
    pub redis_probe_interval: Duration,
    /// How long a Redis reply may be overdue before the link is rebuilt.
    pub redis_timeout: Duration,
}

/// A value kept out of logs and `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: &str) -> Result<Secret, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("the token is empty".into());
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces".into());
        }
        Ok(Secret(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The environment variable the admin token is taken from when no flag gives it, so it
/// need not show in `ps`.
pub const ADMIN_TOKEN_ENV: &str = "MIOHTTPD_ADMIN_TOKEN";

/// The environment variable the Redis password is taken from when neither the `--redis` URL
/// nor `--redis-password-file` gives one.
pub const REDIS_PASSWORD_ENV: &str = "MIOHTTPD_REDIS_PASSWORD";

/// What happens to a streamed command's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrMode {
    /// To the server's own stderr, beside its log lines: the operator sees it, clients do not.
    Inherit,
    /// Into the streamed body, interleaved with stdout.
    Merge,
    /// Nowhere.
    Discard,
}

/// Where the access log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// The server's stdout (`--access-log -`), after its listening line.
    Stdout,
    /// A file, appended to (created if missing).
    File(PathBuf),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            backlog: 1024,
            head_limits: HeadLimits::default(),
            read_buffer_size: 16 * 1024,
            body_buffer_size: 2 << 20,
            output_high_water: 64 * 1024,
            events_per_poll: 1024,
            accepts_per_wakeup: 64,
            turn_bytes: 2 << 20,
            tcp_nodelay: true,
            linger: Duration::from_secs(2),
            comet: CometSettings::default(),
            comet_timeout: Duration::ZERO,
            comet_body_limit: 64 * 1024,
            sse_heartbeat: Duration::from_secs(15),
            commands: Vec::new(),
            exec_shell: PathBuf::from("/bin/sh"),
            exec_stderr: StderrMode::Inherit,
            exec_max_running: 64,
            exec_time_limit: Duration::ZERO,
            exec_kill_grace: Duration::from_secs(2),
            head_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: 0,
            shutdown_grace: Duration::from_secs(10),
            admin_token: None,
            exec_require_token: false,
            stats_interval: Duration::ZERO,
            access_log: None,
            admin_listen: None,
            reuse_port: false,
            defer_accept: Duration::ZERO,
            rcvbuf: 0,
            sndbuf: 0,
            coalesce: true,
            read_until_wouldblock: false,
            workers: Workers::Count(1),
            accept_model: AcceptModel::ReusePort,
            worker_cpu_affinity: CpuAffinity::Off,
            steer_by_cpu: false,
            admin_served_by_supervisor: false,
            redis: None,
            redis_password: None,
            redis_prefix: "miohttpd".into(),
            redis_probe_interval: SECOND,
            redis_timeout: 2 * SECOND,
        }
    }
}

/// One command-line flag: its name, the placeholder `--help` shows for its value, and what
/// it sets. On/off, duration and size flags are one [`on_off`], [`duration`], [`count`] or
/// [`bytes`] line each.
#[derive(Clone, Copy)]
struct Flag {
    name: &'static str,
    value: &'static str,
    help: &'static str,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    OnOff(fn(&mut Config) -> &mut bool),
    Duration(DurationFlag),
    Number(NumberFlag),
    /// Anything else: how to show the default and how to set the field.
    Other {
        show: fn(&Config) -> String,
        set: fn(&mut Config, &str) -> Result<(), String>,
    },
}

#[derive(Clone, Copy)]
struct DurationFlag {
    field: fn(&mut Config) -> &mut Duration,
    min: Duration,
    max: Duration,
    bare: BareNumber,
}

#[derive(Clone, Copy)]
struct NumberFlag {
    field: fn(&mut Config) -> &mut usize,
    min: usize,
    max: usize,
}

/// What a number without a unit means to a duration flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareNumber {
    /// Seconds: the rule for every duration flag.
    Seconds,
    /// Milliseconds: only `--linger-ms`, kept so that old command lines mean what they did.
    Milliseconds,
    /// Refused (except 0): the flag took milliseconds before and now reads units, and reading
    /// `300` as seconds would silently make a grace 1000 times longer.
    Refused,
}

/// The longest any duration flag accepts.
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const SECOND: Duration = Duration::from_secs(1);

/// An on/off flag.
const fn on_off(
    name: &'static str,
    help: &'static str,
    field: fn(&mut Config) -> &mut bool,
) -> Flag {
    Flag {
        name,
        value: "on|off",
        help,
        kind: Kind::OnOff(field),
    }
}

/// A duration flag: `30s`, `250ms`, `1.5s`, `2m`, `1h`; a bare number is seconds; 0 up to a
/// week.
const fn duration(
    name: &'static str,
    help: &'static str,
    field: fn(&mut Config) -> &mut Duration,
) -> Flag {
    duration_within(name, help, field, Duration::ZERO, WEEK, BareNumber::Seconds)
}

const fn duration_within(
    name: &'static str,
    help: &'static str,
    field: fn(&mut Config) -> &mut Duration,
    min: Duration,
    max: Duration,
    bare: BareNumber,
) -> Flag {
    Flag {
        name,
        value: "DURATION",
        help,
        kind: Kind::Duration(DurationFlag {
            field,
            min,
            max,
            bare,
        }),
    }
}

/// A count flag: a whole number from `min` to `max`.
const fn count(
    name: &'static str,
    help: &'static str,
    field: fn(&mut Config) -> &mut usize,
    min: usize,
    max: usize,
) -> Flag {
    number(name, "N", help, NumberFlag { field, min, max })
}

/// A size flag: a number of bytes from `min` to `max`.
const fn bytes(
    name: &'static str,
    help: &'static str,
    field: fn(&mut Config) -> &mut usize,
    min: usize,
    max: usize,
) -> Flag {
    number(name, "BYTES", help, NumberFlag { field, min, max })
}

const fn number(
    name: &'static str,
    value: &'static str,
    help: &'static str,
    n: NumberFlag,
) -> Flag {
    Flag {
        name,
        value,
        help,
        kind: Kind::Number(n),
    }
}

/// Any other flag.
const fn other(
    name: &'static str,
    value: &'static str,
    help: &'static str,
    show: fn(&Config) -> String,
    set: fn(&mut Config, &str) -> Result<(), String>,
) -> Flag {
    Flag {
        name,
        value,
        help,
        kind: Kind::Other { show, set },
    }
}

impl Flag {
    /// The value this flag has in `config`, as `--help` shows a default.
    fn show(&self, config: &Config) -> String {
        // The field accessors take `&mut`, so they are applied to a copy.
        let mut copy = config.clone();
        match self.kind {
            Kind::OnOff(field) => on_off_text(*field(&mut copy)).into(),
            Kind::Duration(d) => match d.bare {
                BareNumber::Milliseconds => (d.field)(&mut copy).as_millis().to_string(),
                _ => show_duration(*(d.field)(&mut copy)),
            },
            Kind::Number(n) => (n.field)(&mut copy).to_string(),
            Kind::Other { show, .. } => show(config),
        }
    }

    fn set(&self, config: &mut Config, value: &str) -> Result<(), String> {
        match self.kind {
            Kind::OnOff(field) => *field(config) = parse_on_off(value)?,
            Kind::Duration(d) => {
                let parsed = parse_duration_as(value, d.bare)?;
                if parsed < d.min || parsed > d.max {
                    return Err(format!(
                        "{value} is outside {}..={}",
                        show_duration(d.min),
                        show_duration(d.max)
                    ));
                }
                *(d.field)(config) = parsed;
            }
            Kind::Number(n) => set_number((n.field)(config), value, n.min, n.max)?,
            Kind::Other { set, .. } => set(config, value)?,
        }
        Ok(())
    }
}

const FLAGS: &[Flag] = &[
    other(
        "listen",
        "ADDR",
        "IP:PORT, [IPv6]:PORT, NAME:PORT (every address of NAME) or :PORT (all); repeatable; \
         port 0: a free one",
        |c| {
            let addrs: Vec<String> = c.listen.iter().map(|a| a.to_string()).collect();
            addrs.join(",")
        },
        |c, v| {
            for addr in resolve_listen(v)? {
                if !c.listen.contains(&addr) {
                    c.listen.push(addr);
                }
            }
            Ok(())
        },
    ),
    other(
        "backlog",
        "N",
        "listen(2) backlog: connections the kernel queues before accept",
        |c| c.backlog.to_string(),
        |c, v| set_number(&mut c.backlog, v, 1, i32::MAX),
    ),
    bytes(
        "max-head-size",
        "largest request head (request line and header fields); 431 beyond",
        |c| &mut c.head_limits.max_head_size,
        64,
        1 << 20,
    ),
    count(
        "max-headers",
        "most header fields in a request; 431 beyond",
        |c| &mut c.head_limits.max_headers,
        1,
        MAX_HEADERS_CAP,
    ),
    bytes(
        "max-target-size",
        "longest request-target; 414 beyond",
        |c| &mut c.head_limits.max_target_size,
        1,
        1 << 20,
    ),
    bytes(
        "read-buffer-size",
        "bytes per read(2) for request heads; held only while bytes are buffered",
        |c| &mut c.read_buffer_size,
        1024,
        64 << 20,
    ),
    bytes(
        "body-buffer-size",
        "bytes per read(2) while a large body streams in",
        |c| &mut c.body_buffer_size,
        1024,
        256 << 20,
    ),
    bytes(
        "output-high-water",
        "pending response bytes at which a connection stops reading requests",
        |c| &mut c.output_high_water,
        1024,
        1 << 30,
    ),
    count(
        "events-per-poll",
        "readiness events taken per poll wake-up",
        |c| &mut c.events_per_poll,
        1,
        1 << 20,
    ),
    count(
        "accepts-per-wakeup",
        "connections accepted per listener wake-up before others get a turn",
        |c| &mut c.accepts_per_wakeup,
        1,
        1 << 20,
    ),
    bytes(
        "turn-bytes",
        "bytes one connection may read before others get a turn",
        |c| &mut c.turn_bytes,
        1,
        1 << 30,
    ),
    on_off(
        "tcp-nodelay",
        "set TCP_NODELAY on accepted connections",
        |c| &mut c.tcp_nodelay,
    ),
    duration_within(
        "linger",
        "how long to drain a client's input after an error response before closing",
        |c| &mut c.linger,
        Duration::ZERO,
        Duration::from_secs(600),
        BareNumber::Seconds,
    ),
    Flag {
        value: "MS",
        ..duration_within(
            "linger-ms",
            "the same as --linger, a bare number in milliseconds (kept for old command lines)",
            |c| &mut c.linger,
            Duration::ZERO,
            Duration::from_secs(600),
            BareNumber::Milliseconds,
        )
    },
    duration(
        "comet-timeout",
        "how long a long-poll waiter stays parked before an empty 204 (0: forever)",
        |c| &mut c.comet_timeout,
    ),
    count(
        "comet-history",
        "messages kept per channel for clients catching up",
        |c| &mut c.comet.history,
        1,
        1 << 16,
    ),
    bytes(
        "comet-body-limit",
        "largest body POST /notify/{channel} accepts; 413 beyond",
        |c| &mut c.comet_body_limit,
        0,
        64 << 20,
    ),
    count(
        "comet-max-channels",
        "channels that may exist at once; 503 beyond",
        |c| &mut c.comet.max_channels,
        1,
        1 << 24,
    ),
    duration_within(
        "comet-channel-ttl",
        "a channel with no waiters and no message for this long is dropped (at least 1s)",
        |c| &mut c.comet.channel_ttl,
        SECOND,
        WEEK,
        BareNumber::Seconds,
    ),
    duration_within(
        "sse-heartbeat",
        "interval of the comment lines that keep an idle event stream alive (at least 1s)",
        |c| &mut c.sse_heartbeat,
        SECOND,
        WEEK,
        BareNumber::Seconds,
    ),
    other(
        "exec",
        "NAME=COMMAND",
        "let GET /stream/NAME run COMMAND (repeatable; GET /stream runs NAME stream)",
        |c| {
            let names: Vec<&str> = c.commands.iter().map(|(n, _)| n.as_str()).collect();
            if names.is_empty() {
                "none".into()
            } else {
                names.join(",")
            }
        },
        |c, v| {
            let (name, command) = v
                .split_once('=')
                .ok_or_else(|| format!("expected NAME=COMMAND, got {v}"))?;
            if !crate::comet::is_valid_channel_name(name) {
                return Err(format!(
                    "names are 1 to 64 of A-Z a-z 0-9 . _ ~ -, got {name}"
                ));
            }
            if c.commands.iter().any(|(n, _)| n == name) {
                return Err(format!("{name} is registered twice"));
            }
            c.commands.push((name.to_string(), command.to_string()));
            Ok(())
        },
    ),
    other(
        "exec-shell",
        "PATH",
        "the shell that runs a command's text",
        |c| c.exec_shell.display().to_string(),
        |c, v| {
            c.exec_shell = PathBuf::from(v);
            Ok(())
        },
    ),
    other(
        "exec-stderr",
        "MODE",
        "a command's stderr: inherit (the server's stderr), merge (into the stream), discard",
        |c| {
            match c.exec_stderr {
                StderrMode::Inherit => "inherit",
                StderrMode::Merge => "merge",
                StderrMode::Discard => "discard",
            }
            .into()
        },
        |c, v| {
            c.exec_stderr = match v {
                "inherit" => StderrMode::Inherit,
                "merge" => StderrMode::Merge,
                "discard" => StderrMode::Discard,
                _ => return Err(format!("expected inherit, merge or discard, got {v}")),
            };
            Ok(())
        },
    ),
    count(
        "exec-max-running",
        "commands running at once, per worker; 503 beyond",
        |c| &mut c.exec_max_running,
        1,
        1 << 16,
    ),
    duration(
        "exec-time-limit",
        "how long a command may run before it is terminated (0: no limit)",
        |c| &mut c.exec_time_limit,
    ),
    duration_within(
        "exec-kill-grace",
        "between SIGTERM and SIGKILL when a command must end (give a unit: 300ms, 2s)",
        |c| &mut c.exec_kill_grace,
        Duration::ZERO,
        Duration::from_secs(600),
        BareNumber::Refused,
    ),
    // Worker processes (docs/tuning.md).
    other(
        "workers",
        "N|auto",
        "worker processes, each one loop, under a supervisor (auto: CPUs this process may use; \
         1: one process, no supervisor, unless --redis)",
        |c| c.workers.to_string(),
        |c, v| {
            c.workers = v.parse()?;
            Ok(())
        },
    ),
    other(
        "accept-model",
        "MODEL",
        "with workers: reuseport (a SO_REUSEPORT listener each) or shared (one listener in every \
         worker's poll, EPOLLEXCLUSIVE)",
        |c| c.accept_model.to_string(),
        |c, v| {
            c.accept_model = v.parse()?;
            Ok(())
        },
    ),
    other(
        "worker-cpu-affinity",
        "CPUS",
        "with workers: off, auto (worker i on the i-th allowed CPU) or a list (0,2,4-7)",
        |c| c.worker_cpu_affinity.to_string(),
        |c, v| {
            c.worker_cpu_affinity = v.parse()?;
            Ok(())
        },
    ),
    on_off(
        "steer-by-cpu",
        "with reuseport and affinity: a BPF program gives a connection to the worker on the CPU \
         that received it",
        |c| &mut c.steer_by_cpu,
    ),
    // Instruments and socket knobs (docs/tuning.md).
    duration(
        "stats-interval",
        "print one summary line (req/s, syscalls/req, events/poll) on stderr this often (0: off)",
        |c| &mut c.stats_interval,
    ),
    other(
        "access-log",
        "PATH|-|off",
        "append an nginx combined-format access log to PATH (-: stdout), written in batches",
        |c| match &c.access_log {
            None => "off".into(),
            Some(LogTarget::Stdout) => "-".into(),
            Some(LogTarget::File(path)) => path.display().to_string(),
        },
        |c, v| {
            c.access_log = match v {
                "off" => None,
                "-" => Some(LogTarget::Stdout),
                "" => return Err("expected a path, - or off".into()),
                path => Some(LogTarget::File(PathBuf::from(path))),
            };
            Ok(())
        },
    ),
    other(
        "admin-listen",
        "ADDR|off",
        "serve GET /metrics on this second address only (404 there on --listen)",
        |c| c.admin_listen.map_or("off".into(), |a| a.to_string()),
        |c, v| {
            c.admin_listen = match v {
                "off" => None,
                v => Some(
                    v.parse()
                        .map_err(|_| format!("not an IP:port address: {v}"))?,
                ),
            };
            Ok(())
        },
    ),
    on_off(
        "reuseport",
        "SO_REUSEPORT on the listeners: several processes may listen on one port",
        |c| &mut c.reuse_port,
    ),
    duration_within(
        "defer-accept",
        "TCP_DEFER_ACCEPT: accept a connection only once it sent data (Linux; 0: off)",
        |c| &mut c.defer_accept,
        Duration::ZERO,
        Duration::from_secs(3600),
        BareNumber::Seconds,
    ),
    bytes(
        "rcvbuf",
        "SO_RCVBUF on the listeners, inherited by accepted sockets (0: kernel default)",
        |c| &mut c.rcvbuf,
        0,
        1 << 30,
    ),
    bytes(
        "sndbuf",
        "SO_SNDBUF on the listeners, inherited by accepted sockets (0: kernel default)",
        |c| &mut c.sndbuf,
        0,
        1 << 30,
    ),
    on_off(
        "coalesce",
        "answers to pipelined requests already read share one write (off: one each)",
        |c| &mut c.coalesce,
    ),
    on_off(
        "read-until-wouldblock",
        "after a short read, read again until EAGAIN (one more read(2) per request)",
        |c| &mut c.read_until_wouldblock,
    ),
    duration(
        "head-timeout",
        "time for a request head to arrive, from accept or its first byte; 408 after (0: none)",
        |c| &mut c.head_timeout,
    ),
    duration(
        "idle-timeout",
        "time a kept-alive connection may wait for its next request (0: forever)",
        |c| &mut c.idle_timeout,
    ),
    duration(
        "body-timeout",
        "time a request body may go without a byte; 408 after (0: none)",
        |c| &mut c.body_timeout,
    ),
    duration(
        "send-timeout",
        "time a client may leave response bytes untaken before it is dropped (0: none)",
        |c| &mut c.send_timeout,
    ),
    count(
        "max-connections",
        "connections served at once, per worker; 503 beyond (0: the open-files limit less 64)",
        |c| &mut c.max_connections,
        0,
        1 << 24,
    ),
    duration(
        "shutdown-grace",
        "after SIGTERM/SIGINT, time for requests in flight to finish",
        |c| &mut c.shutdown_grace,
    ),
    other(
        "admin-token",
        "TOKEN",
        "bearer token required by /notify and /metrics (prefer the file or $MIOHTTPD_ADMIN_TOKEN)",
        show_token,
        |c, v| {
            c.admin_token = Some(Secret::new(v)?);
            Ok(())
        },
    ),
    other(
        "admin-token-file",
        "PATH",
        "read the admin token from the first line of this file",
        show_token,
        |c, v| {
            let text = std::fs::read_to_string(v).map_err(|e| format!("{v}: {e}"))?;
            let first = text.lines().next().unwrap_or("");
            c.admin_token = Some(Secret::new(first).map_err(|e| format!("{v}: {e}"))?);
            Ok(())
        },
    ),
    on_off(
        "exec-require-token",
        "streamed commands need the admin token too",
        |c| &mut c.exec_require_token,
    ),
    other(
        "redis",
        "URL",
        "redis://[:PASSWORD@]HOST:PORT[/DB]: share comet channels with every host on this Redis \
         (a password here shows in ps: prefer the file or $MIOHTTPD_REDIS_PASSWORD)",
        |c| {
            c.redis.as_ref().map_or("none".into(), |r| {
                format!("redis://{}/{}", r.authority, r.db)
            })
        },
        |c, v| {
            let (target, password) = crate::redis::parse_url(v)?;
            if let Some(password) = password {
                c.redis_password = Some(
                    Secret::new(&password).map_err(|_| "the password must be printable ASCII")?,
                );
            }
            c.redis = Some(target);
            Ok(())
        },
    ),
    other(
        "redis-password-file",
        "PATH",
        "read the Redis password from the first line of this file",
        |c| {
            if c.redis_password.is_some() {
                "set"
            } else {
                "none"
            }
            .into()
        },
        |c, v| {
            let text = std::fs::read_to_string(v).map_err(|e| format!("{v}: {e}"))?;
            let first = text.lines().next().unwrap_or("");
            c.redis_password = Some(
                Secret::new(first).map_err(|_| format!("{v}: no password on its first line"))?,
            );
            Ok(())
        },
    ),
    other(
        "redis-prefix",
        "NAME",
        "the key space in Redis of the hosts that share channels ([A-Za-z0-9._:-], 1 to 64)",
        |c| c.redis_prefix.clone(),
        |c, v| {
            if !crate::redis::is_valid_prefix(v) {
                return Err(format!("{v:?}: 1 to 64 of A-Z a-z 0-9 . _ : -"));
            }
            c.redis_prefix = v.to_owned();
            Ok(())
        },
    ),
    duration_within(
        "redis-probe",
        "how often the Redis subscription is probed and this host's heartbeat sent",
        |c| &mut c.redis_probe_interval,
        Duration::from_millis(10),
        Duration::from_secs(60),
        BareNumber::Seconds,
    ),
    duration_within(
        "redis-timeout",
        "how long a Redis reply may be overdue before the link is rebuilt (and publishes get 503)",
        |c| &mut c.redis_timeout,
        Duration::from_millis(10),
        Duration::from_secs(60),
        BareNumber::Seconds,
    ),
];

fn show_token(c: &Config) -> String {
    let set = if c.admin_token.is_some() {
        "set"
    } else {
        "none"
    };
    set.to_string()
}

/// Parses a duration: a decimal number and a unit, `ms`, `s`, `m` or `h` (`250ms`, `1.5s`,
/// `2m`); a bare number is seconds. Exact to the nanosecond: no floating point, so `0.1s`
/// is 100ms and not 99.999...ms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_as(text, BareNumber::Seconds)
}

fn parse_duration_as(text: &str, bare: BareNumber) -> Result<Duration, String> {
    let wrong = || format!("expected a duration like 30s, 250ms or 1.5s, got {text:?}");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || fraction.contains('.')
        || number.ends_with('.')
        || fraction.len() > 9
    {
        return Err(wrong());
    }
    let nanos_per_unit: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" => match bare {
            BareNumber::Seconds => 1_000_000_000,
            BareNumber::Milliseconds => 1_000_000,
            BareNumber::Refused if number.bytes().all(|b| b == b'0' || b == b'.') => 1,
            BareNumber::Refused => {
                return Err(format!(
                    "give a unit, e.g. {text}ms or {text}s (this flag took milliseconds before, \
                     and a bare number would now be seconds)"
                ))
            }
        },
        _ => return Err(wrong()),
    };
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| wrong())?
    };
    let fraction_nanos: u128 = format!("{fraction:0<9}").parse().map_err(|_| wrong())?;
    let units_in_nanos = whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(fraction_nanos))
        .and_then(|n| n.checked_mul(nanos_per_unit))
        .ok_or_else(|| format!("{text} is too long"))?;
    let nanos =
        u64::try_from(units_in_nanos / 1_000_000_000).map_err(|_| format!("{text} is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// The shortest text [`parse_duration`] reads back as `d`: `0`, `250ms`, `30s`, `1.5s`.
pub fn show_duration(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 && d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.subsec_millis())
    } else {
        let fraction = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), fraction.trim_end_matches('0'))
    }
}

/// What `--listen` accepts: `IP:PORT`, `[IPv6]:PORT`, `:PORT` (every address: `0.0.0.0` and
/// `[::]`, two listeners rather than one dual-stack socket, see README) and `NAME:PORT`,
/// resolved here, at start-up, to every address the name has.
fn resolve_listen(text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("expected HOST:PORT, [IPv6]:PORT or :PORT, got {text:?}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("not a port (0 to 65535): {port:?} in {text:?}"))?;
    if host.is_empty() {
        return Ok(vec![
            SocketAddr::from(([0, 0, 0, 0], port)),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
        ]);
    }
    if host.starts_with('[') || host.contains(':') {
        return Err(format!("not an IPv6 address: {host:?} in {text:?}"));
    }
    use std::net::ToSocketAddrs;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    for addr in resolved {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    Ok(addrs)
}

fn set_number<T>(field: &mut T, value: &str, min: T, max: T) -> Result<(), String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n: T = value
        .parse()
        .map_err(|_| format!("not a number: {value}"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}..={max}"));
    }
    *field = n;
    Ok(())
}

fn on_off_text(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn parse_on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected on or off, got {v}")),
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help(String),
    /// `--version`: `miohttpd 0.1.0`.
    Version(String),
}

/// What `--version` prints.
pub fn version() -> String {
    format!("miohttpd {}\n", env!("CARGO_PKG_VERSION"))
}

impl Config {
    /// Parses flags (without the program name) into a config over the defaults.
    pub fn from_args<I>(args: I) -> Result<Command, String>
    where
        I: IntoIterator,
        I::Item: Into<std::ffi::OsString>,
    {
        use lexopt::prelude::*;
        let mut config = Config::default();
        let mut parser = lexopt::Parser::from_args(args);
        // The first --listen replaces the default address; later ones add to it.
        let mut listen_given = false;
        while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
            match arg {
                Short('h') | Long("help") => return Ok(Command::Help(Config::help())),
                Short('V') | Long("version") => return Ok(Command::Version(version())),
                Long(name) => {
                    let name = name.to_owned();
                    let flag = FLAGS
                        .iter()
                        .find(|f| f.name == name)
                        .ok_or_else(|| format!("unknown flag --{name} (see --help)"))?;
                    let value = parser.value().map_err(|e| e.to_string())?;
                    let value = value
                        .into_string()
                        .map_err(|_| format!("--{name}: value is not UTF-8"))?;
                    if flag.name == "listen" && !listen_given {
                        config.listen.clear();
                        listen_given = true;
                    }
                    flag.set(&mut config, &value)
                        .map_err(|e| format!("--{name}: {e}"))?;
                }
                other => return Err(other.unexpected().to_string()),
            }
        }
        if config.admin_token.is_none() {
            if let Some(value) = std::env::var_os(ADMIN_TOKEN_ENV) {
                let value = value
                    .into_string()
                    .map_err(|_| format!("${ADMIN_TOKEN_ENV} is not UTF-8"))?;
                let token = Secret::new(&value).map_err(|e| format!("${ADMIN_TOKEN_ENV}: {e}"))?;
                config.admin_token = Some(token);
            }
        }
        if config.redis.is_some() && config.redis_password.is_none() {
            if let Some(value) = std::env::var_os(REDIS_PASSWORD_ENV) {
                let value = value
                    .into_string()
                    .map_err(|_| format!("${REDIS_PASSWORD_ENV} is not UTF-8"))?;
                let password = Secret::new(&value)
                    .map_err(|_| format!("${REDIS_PASSWORD_ENV}: empty or not printable ASCII"))?;
                config.redis_password = Some(password);
            }
        }
        if config.redis.is_none() && config.redis_password.is_some() {
            return Err("--redis-password-file without --redis".into());
        }
        if config.exec_require_token && config.admin_token.is_none() {
            // Otherwise the operator believes the commands are protected and they are not.
            return Err("--exec-require-token on needs an admin token".into());
        }
        Ok(Command::Run(Box::new(config)))
    }

    /// The `--help` text: every flag with its default, the descriptions in one column.
    pub fn help() -> String {
        let defaults = Config::default();
        let mut text = format!(
            "miohttpd {}: a small, fast HTTP/1.1 server on one readiness loop\n\n\
             Usage: miohttpd [FLAGS]\n\n\
             DURATION is 30s, 250ms, 1.5s, 2m or 1h; a bare number is seconds.\n\nFlags:\n",
            env!("CARGO_PKG_VERSION")
        );
        let lefts: Vec<String> = FLAGS
            .iter()
            .map(|flag| format!("--{} {}", flag.name, flag.value))
            .collect();
        let width = lefts.iter().map(String::len).max().unwrap_or(0);
        for (flag, left) in FLAGS.iter().zip(&lefts) {
            text.push_str(&format!(
                "  {left:<width$}  {} [default: {}]\n",
                flag.help,
                flag.show(&defaults)
            ));
        }
        text.push_str(&format!("  {:<width$}  print this help\n", "-h, --help"));
        text.push_str(&format!(
            "  {:<width$}  print the name and version\n",
            "-V, --version"
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match Config::from_args(args.iter().copied())? {
            Command::Run(config) => Ok(*config),
            Command::Help(_) | Command::Version(_) => Err("help".into()),
        }
    }

    #[test]
    fn flags_set_fields() {
        let config = run(&[
            "--listen",
            "0.0.0.0:9000",
            "--max-head-size=16384",
            "--max-headers",
            "20",
            "--tcp-nodelay",
            "off",
            "--linger-ms",
            "500",
            "--exec",
            "stream=echo 1 && sleep 3 && echo 2",
            "--exec",
            "date=date -u",
            "--exec-stderr",
            "merge",
        ])
        .unwrap();
        assert_eq!(config.listen, ["0.0.0.0:9000".parse().unwrap()]);
        assert_eq!(config.head_limits.max_head_size, 16384);
        assert_eq!(config.head_limits.max_headers, 20);
        assert!(!config.tcp_nodelay);
        assert_eq!(config.linger, Duration::from_millis(500));
        assert_eq!(
            config.commands,
            [
                (
                    "stream".to_string(),
                    "echo 1 && sleep 3 && echo 2".to_string()
                ),
                ("date".to_string(), "date -u".to_string()),
            ]
        );
        assert_eq!(config.exec_stderr, StderrMode::Merge);
    }

    #[test]
    fn instrument_and_socket_flags() {
        let defaults = Config::default();
        assert_eq!(defaults.stats_interval, Duration::ZERO);
        assert_eq!(defaults.access_log, None);
        assert_eq!(defaults.admin_listen, None);
        assert!(!defaults.reuse_port && !defaults.read_until_wouldblock && defaults.coalesce);
        assert_eq!((defaults.rcvbuf, defaults.sndbuf), (0, 0));
        let config = run(&[
            "--stats-interval",
            "5",
            "--access-log",
            "/var/log/miohttpd.log",
            "--admin-listen",
            "127.0.0.1:9100",
            "--reuseport",
            "on",
            "--defer-accept",
            "3",
            "--rcvbuf",
            "262144",
            "--sndbuf",
            "1048576",
            "--coalesce",
            "off",
            "--read-until-wouldblock",
            "on",
        ])
        .unwrap();
        assert_eq!(config.stats_interval, Duration::from_secs(5));
        assert_eq!(
            config.access_log,
            Some(LogTarget::File("/var/log/miohttpd.log".into()))
        );
        assert_eq!(config.admin_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(config.reuse_port && config.read_until_wouldblock && !config.coalesce);
        assert_eq!(config.defer_accept, Duration::from_secs(3));
        assert_eq!((config.rcvbuf, config.sndbuf), (262144, 1048576));
        let stdout = run(&["--access-log", "-", "--admin-listen", "off"]).unwrap();
        assert_eq!(stdout.access_log, Some(LogTarget::Stdout));
        assert_eq!(stdout.admin_listen, None);
        assert_eq!(run(&["--access-log", "off"]).unwrap().access_log, None);
    }

    #[test]
    fn bad_flags_are_errors_not_defaults() {
        for args in [
            &["--listen", "nowhere"][..],
            &["--listen", "localhost:99999"],
            &["--listen", "localhost:http"],
            &["--listen", "[::1]"],
            &["--listen", "[::1:80"],
            &["--listen", "no-such-host.invalid:80"],
            &["--listen", ""],
            &["--max-headers", "0"],
            &["--max-headers", "100000"],
            &["--read-buffer-size", "big"],
            &["--no-such-flag", "1"],
            &["--tcp-nodelay", "maybe"],
            &["stray"],
            &["--exec", "no-equals-sign"],
            &["--exec", "bad/name=true"],
            &["--exec", "a=true", "--exec", "a=false"],
            &["--exec-stderr", "file"],
            &["--stats-interval", "-1"],
            &["--access-log", ""],
            &["--admin-listen", "localhost"],
            &["--reuseport", "maybe"],
            &["--defer-accept", "3601"],
            &["--rcvbuf", "-5"],
            &["--coalesce", "2"],
            &["--read-until-wouldblock", "sometimes"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn durations_read_one_syntax() {
        let ms = Duration::from_millis;
        let table: &[(&str, Result<Duration, ()>)] = &[
            ("30s", Ok(Duration::from_secs(30))),
            ("250ms", Ok(ms(250))),
            ("1.5s", Ok(ms(1500))),
            ("0.1s", Ok(ms(100))),
            (".5s", Ok(ms(500))),
            ("2m", Ok(Duration::from_secs(120))),
            ("1h", Ok(Duration::from_secs(3600))),
            ("1.5ms", Ok(Duration::from_micros(1500))),
            ("30", Ok(Duration::from_secs(30))),
            ("0.25", Ok(ms(250))),
            ("0", Ok(Duration::ZERO)),
            ("0ms", Ok(Duration::ZERO)),
            ("0.000000001", Ok(Duration::from_nanos(1))),
            ("", Err(())),
            (".", Err(())),
            ("5.", Err(())),
            ("1.2.3", Err(())),
            ("-1", Err(())),
            ("+1s", Err(())),
            ("1e9", Err(())),
            ("NaN", Err(())),
            ("inf", Err(())),
            ("s", Err(())),
            ("10 s", Err(())),
            ("10S", Err(())),
            ("10sec", Err(())),
            ("10us", Err(())),
            ("1.0000000001s", Err(())),
            ("99999999999999999999h", Err(())),
        ];
        for (text, expected) in table {
            let parsed = parse_duration(text).map_err(|_| ());
            assert_eq!(parsed, *expected, "{text:?}");
        }
    }

    #[test]
    fn shown_durations_read_back() {
        for d in [0, 1, 999, 1000, 1500, 2000, 250, 86_400_000, 1_234_567] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&show_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn every_time_flag_takes_units_and_bare_seconds() {
        let config = run(&[
            "--head-timeout=1.5s",
            "--idle-timeout=250ms",
            "--body-timeout=2m",
            "--send-timeout=7",
            "--comet-timeout=0.5",
            "--comet-channel-ttl=90s",
            "--sse-heartbeat=2",
            "--exec-time-limit=1500ms",
            "--exec-kill-grace=300ms",
            "--linger=100ms",
            "--stats-interval=5",
            "--shutdown-grace=1m",
            "--defer-accept=3s",
        ])
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(config.head_timeout, ms(1500));
        assert_eq!(config.idle_timeout, ms(250));
        assert_eq!(config.body_timeout, ms(120_000));
        assert_eq!(config.send_timeout, ms(7000));
        assert_eq!(config.comet_timeout, ms(500));
        assert_eq!(config.comet.channel_ttl, ms(90_000));
        assert_eq!(config.sse_heartbeat, ms(2000));
        assert_eq!(config.exec_time_limit, ms(1500));
        assert_eq!(config.exec_kill_grace, ms(300));
        assert_eq!(config.linger, ms(100));
        assert_eq!(config.stats_interval, ms(5000));
        assert_eq!(config.shutdown_grace, ms(60_000));
        assert_eq!(config.defer_accept, ms(3000));
    }

    #[test]
    fn millisecond_flags_do_not_silently_change_meaning() {
        // --linger-ms keeps its milliseconds; --exec-kill-grace refuses a bare number rather
        // than read yesterday's "300" (ms) as 300 seconds.
        let ms = Duration::from_millis;
        assert_eq!(run(&["--linger-ms", "500"]).unwrap().linger, ms(500));
        assert_eq!(run(&["--linger-ms", "2s"]).unwrap().linger, ms(2000));
        assert_eq!(run(&["--linger", "2"]).unwrap().linger, ms(2000));
        let refused = run(&["--exec-kill-grace", "300"]).unwrap_err();
        assert!(refused.contains("300ms"), "{refused}");
        assert_eq!(
            run(&["--exec-kill-grace", "0"]).unwrap().exec_kill_grace,
            Duration::ZERO
        );
        assert!(
            run(&["--sse-heartbeat", "500ms"]).is_err(),
            "below its minimum"
        );
        assert!(
            run(&["--comet-channel-ttl", "0"]).is_err(),
            "below its minimum"
        );
        assert!(run(&["--head-timeout", "8d"]).is_err());
        assert!(run(&["--head-timeout", "169h"]).is_err(), "above a week");
    }

    #[test]
    fn listen_takes_names_ports_and_repeats() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(Config::default().listen, [addr("127.0.0.1:8080")]);
        let config = run(&["--listen", "[::1]:8080", "--listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(config.listen, [addr("[::1]:8080"), addr("127.0.0.1:0")]);
        let every = run(&["--listen", ":8080"]).unwrap();
        assert_eq!(every.listen, [addr("0.0.0.0:8080"), addr("[::]:8080")]);
        let local = run(&["--listen", "localhost:8080"]).unwrap();
        assert!(!local.listen.is_empty());
        assert!(local
            .listen
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
        let twice = run(&["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:1"]).unwrap();
        assert_eq!(twice.listen, [addr("127.0.0.1:1")], "the same address once");
    }

    #[test]
    fn version_names_the_program() {
        let Ok(Command::Version(text)) = Config::from_args(["--version"]) else {
            panic!("--version is not a version");
        };
        assert_eq!(text, format!("miohttpd {}\n", env!("CARGO_PKG_VERSION")));
        assert!(matches!(Config::from_args(["-V"]), Ok(Command::Version(_))));
        assert!(Config::help().contains("--version"));
    }

    #[test]
    fn help_descriptions_start_in_one_column() {
        let help = Config::help();
        let columns: Vec<usize> = help
            .lines()
            .filter(|line| line.starts_with("  -"))
            .map(|line| {
                let rest = &line[2..];
                let padding = &rest[rest.find("  ").unwrap()..];
                line.len() - padding.trim_start().len()
            })
            .collect();
        assert!(columns.len() > FLAGS.len());
        assert!(columns.iter().all(|&c| c == columns[0]), "{help}");
    }

    #[test]
    fn timeouts_take_fractions_and_zero() {
        let config = run(&[
            "--head-timeout",
            "0.25",
            "--idle-timeout",
            "0",
            "--send-timeout=7",
        ])
        .unwrap();
        assert_eq!(config.head_timeout, Duration::from_millis(250));
        assert_eq!(config.idle_timeout, Duration::ZERO);
        assert_eq!(config.send_timeout, Duration::from_secs(7));
        for bad in ["-1", "soon", "1e9", "NaN", "5 s"] {
            assert!(run(&["--body-timeout", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_flags_parse_and_the_password_is_never_shown() {
        let config = run(&[]).unwrap();
        assert_eq!(
            (config.redis.as_ref(), config.redis_prefix.as_str()),
            (None, "miohttpd")
        );
        let config = run(&[
            "--redis",
            "redis://:pw1@127.0.0.1:6390/3",
            "--redis-prefix",
            "site:a",
        ])
        .unwrap();
        let target = config.redis.as_ref().unwrap();
        assert_eq!((target.addr.port(), target.db), (6390, 3));
        assert_eq!(
            config.redis_password.as_ref().map(Secret::expose),
            Some("pw1")
        );
        assert_eq!(config.redis_prefix, "site:a");
        assert!(!format!("{config:?}").contains("pw1"));
        let path = std::env::temp_dir().join(format!("miohttpd-redis-pw-{}", std::process::id()));
        std::fs::write(&path, "pw2\n").unwrap();
        let file = path.to_str().unwrap();
        let config = run(&[
            "--redis",
            "redis://127.0.0.1",
            "--redis-password-file",
            file,
        ])
        .unwrap();
        assert_eq!(
            config.redis_password.as_ref().map(Secret::expose),
            Some("pw2")
        );
        assert!(
            run(&["--redis-password-file", file]).is_err(),
            "needs --redis"
        );
        std::fs::remove_file(&path).unwrap();
        let config = run(&["--redis-probe", "250ms", "--redis-timeout", "1.5s"]).unwrap();
        assert_eq!(config.redis_probe_interval, Duration::from_millis(250));
        assert_eq!(config.redis_timeout, Duration::from_millis(1500));
        for bad in [
            &["--redis", "127.0.0.1:6379"][..],
            &["--redis", "redis://127.0.0.1:x"],
            &["--redis-prefix", "a{b}"],
            &["--redis-probe", "0"],
            &["--redis-timeout", "2h"],
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
        let help = Config::help();
        assert!(help.contains("--redis URL") && help.contains("MIOHTTPD_REDIS_PASSWORD"));
    }

    #[test]
    fn admin_token_from_flag_or_file_never_shown() {
        let config = run(&["--admin-token", "abc123"]).unwrap();
        assert_eq!(
            config.admin_token.as_ref().map(Secret::expose),
            Some("abc123")
        );
        assert!(!format!("{config:?}").contains("abc123"));
        let path = std::env::temp_dir().join(format!("miohttpd-token-{}", std::process::id()));
        std::fs::write(&path, "  from-file \nsecond line\n").unwrap();
        let config = run(&["--admin-token-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(
            config.admin_token.as_ref().map(Secret::expose),
            Some("from-file")
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(run(&["--admin-token-file", path.to_str().unwrap()]).is_err());
        std::fs::remove_file(&path).unwrap();
        for bad in ["", "   ", "two words"] {
            assert!(run(&["--admin-token", bad]).is_err(), "{bad:?}");
        }
        assert!(run(&["--admin-token-file", "/nonexistent/token"]).is_err());
        assert!(run(&["--exec-require-token", "on"]).is_err());
        assert!(run(&["--exec-require-token", "on", "--admin-token", "t"]).is_ok());
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let help = Config::help();
        for flag in FLAGS {
            assert!(help.contains(&format!("--{} ", flag.name)), "{}", flag.name);
        }
        assert!(help.contains("[default: 127.0.0.1:8080]"));
        assert!(matches!(
            Config::from_args(["--help"]),
            Ok(Command::Help(_))
        ));
    }
}
