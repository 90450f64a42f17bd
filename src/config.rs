//! Every knob of the server in one struct, with its default and its flag; `--help` is
//! generated from the same table the parser uses, so the two cannot drift apart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::comet::CometSettings;
use crate::http::head::{HeadLimits, MAX_HEADERS_CAP};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the listener binds.
    pub listen: SocketAddr,
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
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
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
        }
    }
}

/// One command-line flag: its name, what it sets, and how.
struct Flag {
    name: &'static str,
    value: &'static str,
    help: &'static str,
    show: fn(&Config) -> String,
    set: fn(&mut Config, &str) -> Result<(), String>,
}

const FLAGS: &[Flag] = &[
    Flag {
        name: "listen",
        value: "ADDR",
        help: "address to listen on (port 0 picks a free port)",
        show: |c| c.listen.to_string(),
        set: |c, v| {
            c.listen = v
                .parse()
                .map_err(|_| format!("not an IP:port address: {v}"))?;
            Ok(())
        },
    },
    Flag {
        name: "backlog",
        value: "N",
        help: "listen(2) backlog: connections the kernel queues before accept",
        show: |c| c.backlog.to_string(),
        set: |c, v| set_number(&mut c.backlog, v, 1, i32::MAX),
    },
    Flag {
        name: "max-head-size",
        value: "BYTES",
        help: "largest request head (request line and header fields); 431 beyond",
        show: |c| c.head_limits.max_head_size.to_string(),
        set: |c, v| set_number(&mut c.head_limits.max_head_size, v, 64, 1 << 20),
    },
    Flag {
        name: "max-headers",
        value: "N",
        help: "most header fields in a request; 431 beyond",
        show: |c| c.head_limits.max_headers.to_string(),
        set: |c, v| set_number(&mut c.head_limits.max_headers, v, 1, MAX_HEADERS_CAP),
    },
    Flag {
        name: "max-target-size",
        value: "BYTES",
        help: "longest request-target; 414 beyond",
        show: |c| c.head_limits.max_target_size.to_string(),
        set: |c, v| set_number(&mut c.head_limits.max_target_size, v, 1, 1 << 20),
    },
    Flag {
        name: "read-buffer-size",
        value: "BYTES",
        help: "bytes per read(2) for request heads; held only while bytes are buffered",
        show: |c| c.read_buffer_size.to_string(),
        set: |c, v| set_number(&mut c.read_buffer_size, v, 1024, 64 << 20),
    },
    Flag {
        name: "body-buffer-size",
        value: "BYTES",
        help: "bytes per read(2) while a large body streams in",
        show: |c| c.body_buffer_size.to_string(),
        set: |c, v| set_number(&mut c.body_buffer_size, v, 1024, 256 << 20),
    },
    Flag {
        name: "output-high-water",
        value: "BYTES",
        help: "pending response bytes at which a connection stops reading requests",
        show: |c| c.output_high_water.to_string(),
        set: |c, v| set_number(&mut c.output_high_water, v, 1024, 1 << 30),
    },
    Flag {
        name: "events-per-poll",
        value: "N",
        help: "readiness events taken per poll wake-up",
        show: |c| c.events_per_poll.to_string(),
        set: |c, v| set_number(&mut c.events_per_poll, v, 1, 1 << 20),
    },
    Flag {
        name: "accepts-per-wakeup",
        value: "N",
        help: "connections accepted per listener wake-up before others get a turn",
        show: |c| c.accepts_per_wakeup.to_string(),
        set: |c, v| set_number(&mut c.accepts_per_wakeup, v, 1, 1 << 20),
    },
    Flag {
        name: "turn-bytes",
        value: "BYTES",
        help: "bytes one connection may read before others get a turn",
        show: |c| c.turn_bytes.to_string(),
        set: |c, v| set_number(&mut c.turn_bytes, v, 1, 1 << 30),
    },
    Flag {
        name: "tcp-nodelay",
        value: "on|off",
        help: "set TCP_NODELAY on accepted connections",
        show: |c| on_off(c.tcp_nodelay).to_string(),
        set: |c, v| {
            c.tcp_nodelay = parse_on_off(v)?;
            Ok(())
        },
    },
    Flag {
        name: "linger-ms",
        value: "MS",
        help: "how long to drain a client's input after an error response before closing",
        show: |c| c.linger.as_millis().to_string(),
        set: |c, v| {
            let mut ms = 0u64;
            set_number(&mut ms, v, 0, 600_000)?;
            c.linger = Duration::from_millis(ms);
            Ok(())
        },
    },
    Flag {
        name: "comet-timeout",
        value: "SECS",
        help: "how long a long-poll waiter stays parked before an empty 204 (0: forever)",
        show: |c| c.comet_timeout.as_secs().to_string(),
        set: |c, v| set_seconds(&mut c.comet_timeout, v, 0),
    },
    Flag {
        name: "comet-history",
        value: "N",
        help: "messages kept per channel for clients catching up",
        show: |c| c.comet.history.to_string(),
        set: |c, v| set_number(&mut c.comet.history, v, 1, 1 << 16),
    },
    Flag {
        name: "comet-body-limit",
        value: "BYTES",
        help: "largest body POST /notify/{channel} accepts; 413 beyond",
        show: |c| c.comet_body_limit.to_string(),
        set: |c, v| set_number(&mut c.comet_body_limit, v, 0, 64 << 20),
    },
    Flag {
        name: "comet-max-channels",
        value: "N",
        help: "channels that may exist at once; 503 beyond",
        show: |c| c.comet.max_channels.to_string(),
        set: |c, v| set_number(&mut c.comet.max_channels, v, 1, 1 << 24),
    },
    Flag {
        name: "comet-channel-ttl",
        value: "SECS",
        help: "a channel with no waiters and no message for this long is dropped",
        show: |c| c.comet.channel_ttl.as_secs().to_string(),
        set: |c, v| set_seconds(&mut c.comet.channel_ttl, v, 1),
    },
    Flag {
        name: "sse-heartbeat",
        value: "SECS",
        help: "interval of the comment lines that keep an idle event stream alive",
        show: |c| c.sse_heartbeat.as_secs().to_string(),
        set: |c, v| set_seconds(&mut c.sse_heartbeat, v, 1),
    },
    Flag {
        name: "exec",
        value: "NAME=COMMAND",
        help: "let GET /stream/NAME run COMMAND (repeatable; GET /stream runs NAME stream)",
        show: |c| {
            let names: Vec<&str> = c.commands.iter().map(|(n, _)| n.as_str()).collect();
            if names.is_empty() {
                "none".into()
            } else {
                names.join(",")
            }
        },
        set: |c, v| {
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
    },
    Flag {
        name: "exec-shell",
        value: "PATH",
        help: "the shell that runs a command's text",
        show: |c| c.exec_shell.display().to_string(),
        set: |c, v| {
            c.exec_shell = PathBuf::from(v);
            Ok(())
        },
    },
    Flag {
        name: "exec-stderr",
        value: "inherit|merge|discard",
        help: "a command's stderr: to the server's stderr, into the stream, or dropped",
        show: |c| {
            match c.exec_stderr {
                StderrMode::Inherit => "inherit",
                StderrMode::Merge => "merge",
                StderrMode::Discard => "discard",
            }
            .into()
        },
        set: |c, v| {
            c.exec_stderr = match v {
                "inherit" => StderrMode::Inherit,
                "merge" => StderrMode::Merge,
                "discard" => StderrMode::Discard,
                _ => return Err(format!("expected inherit, merge or discard, got {v}")),
            };
            Ok(())
        },
    },
    Flag {
        name: "exec-max-running",
        value: "N",
        help: "commands running at once; 503 beyond",
        show: |c| c.exec_max_running.to_string(),
        set: |c, v| set_number(&mut c.exec_max_running, v, 1, 1 << 16),
    },
    Flag {
        name: "exec-time-limit",
        value: "SECS",
        help: "how long a command may run before it is terminated (0: no limit)",
        show: |c| c.exec_time_limit.as_secs().to_string(),
        set: |c, v| set_seconds(&mut c.exec_time_limit, v, 0),
    },
    Flag {
        name: "exec-kill-grace",
        value: "MS",
        help: "between SIGTERM and SIGKILL when a command must end",
        show: |c| c.exec_kill_grace.as_millis().to_string(),
        set: |c, v| {
            let mut ms = 0u64;
            set_number(&mut ms, v, 0, 600_000)?;
            c.exec_kill_grace = Duration::from_millis(ms);
            Ok(())
        },
    },
    // Instruments and socket knobs (docs/tuning.md).
    Flag {
        name: "stats-interval",
        value: "SECS",
        help: "print one summary line (req/s, syscalls/req, events/poll) on stderr every SECS (0: off)",
        show: |c| c.stats_interval.as_secs().to_string(),
        set: |c, v| set_seconds(&mut c.stats_interval, v, 0),
    },
    Flag {
        name: "access-log",
        value: "PATH|-|off",
        help: "append an nginx combined-format access log to PATH (-: stdout), written in batches",
        show: |c| match &c.access_log {
            None => "off".into(),
            Some(LogTarget::Stdout) => "-".into(),
            Some(LogTarget::File(path)) => path.display().to_string(),
        },
        set: |c, v| {
            c.access_log = match v {
                "off" => None,
                "-" => Some(LogTarget::Stdout),
                "" => return Err("expected a path, - or off".into()),
                path => Some(LogTarget::File(PathBuf::from(path))),
            };
            Ok(())
        },
    },
    Flag {
        name: "admin-listen",
        value: "ADDR|off",
        help: "serve GET /metrics on this second address only (404 there on --listen)",
        show: |c| c.admin_listen.map_or("off".into(), |a| a.to_string()),
        set: |c, v| {
            c.admin_listen = match v {
                "off" => None,
                v => Some(
                    v.parse()
                        .map_err(|_| format!("not an IP:port address: {v}"))?,
                ),
            };
            Ok(())
        },
    },
    Flag {
        name: "reuseport",
        value: "on|off",
        help: "SO_REUSEPORT on the listener: several processes may listen on one port",
        show: |c| on_off(c.reuse_port).to_string(),
        set: |c, v| {
            c.reuse_port = parse_on_off(v)?;
            Ok(())
        },
    },
    Flag {
        name: "defer-accept",
        value: "SECS",
        help: "TCP_DEFER_ACCEPT: accept a connection only once it sent data (Linux; 0: off)",
        show: |c| c.defer_accept.as_secs().to_string(),
        set: |c, v| {
            let mut secs = 0u64;
            set_number(&mut secs, v, 0, 3600)?;
            c.defer_accept = Duration::from_secs(secs);
            Ok(())
        },
    },
    Flag {
        name: "rcvbuf",
        value: "BYTES",
        help: "SO_RCVBUF on the listener, inherited by accepted sockets (0: kernel default)",
        show: |c| c.rcvbuf.to_string(),
        set: |c, v| set_number(&mut c.rcvbuf, v, 0, 1 << 30),
    },
    Flag {
        name: "sndbuf",
        value: "BYTES",
        help: "SO_SNDBUF on the listener, inherited by accepted sockets (0: kernel default)",
        show: |c| c.sndbuf.to_string(),
        set: |c, v| set_number(&mut c.sndbuf, v, 0, 1 << 30),
    },
    Flag {
        name: "coalesce",
        value: "on|off",
        help: "answers to pipelined requests already read share one write (off: one each)",
        show: |c| on_off(c.coalesce).to_string(),
        set: |c, v| {
            c.coalesce = parse_on_off(v)?;
            Ok(())
        },
    },
    Flag {
        name: "read-until-wouldblock",
        value: "on|off",
        help: "after a short read, read again until EAGAIN (one more read(2) per request)",
        show: |c| on_off(c.read_until_wouldblock).to_string(),
        set: |c, v| {
            c.read_until_wouldblock = parse_on_off(v)?;
            Ok(())
        },
    },
    Flag {
        name: "head-timeout",
        value: "SECS",
        help: "time for a request head to arrive, from accept or its first byte; 408 after (0: none)",
        show: |c| show_secs(c.head_timeout),
        set: |c, v| set_duration(&mut c.head_timeout, v),
    },
    Flag {
        name: "idle-timeout",
        value: "SECS",
        help: "time a kept-alive connection may wait for its next request (0: forever)",
        show: |c| show_secs(c.idle_timeout),
        set: |c, v| set_duration(&mut c.idle_timeout, v),
    },
    Flag {
        name: "body-timeout",
        value: "SECS",
        help: "time a request body may go without a byte; 408 after (0: none)",
        show: |c| show_secs(c.body_timeout),
        set: |c, v| set_duration(&mut c.body_timeout, v),
    },
    Flag {
        name: "send-timeout",
        value: "SECS",
        help: "time a client may leave response bytes untaken before it is dropped (0: none)",
        show: |c| show_secs(c.send_timeout),
        set: |c, v| set_duration(&mut c.send_timeout, v),
    },
    Flag {
        name: "max-connections",
        value: "N",
        help: "connections served at once; 503 beyond (0: the open-files limit less 64)",
        show: |c| c.max_connections.to_string(),
        set: |c, v| set_number(&mut c.max_connections, v, 0, 1 << 24),
    },
    Flag {
        name: "shutdown-grace",
        value: "SECS",
        help: "after SIGTERM/SIGINT, time for requests in flight to finish",
        show: |c| show_secs(c.shutdown_grace),
        set: |c, v| set_duration(&mut c.shutdown_grace, v),
    },
    Flag {
        name: "admin-token",
        value: "TOKEN",
        help: "bearer token required by /notify and /metrics (prefer the file or $MIOHTTPD_ADMIN_TOKEN)",
        show: |c| show_token(c),
        set: |c, v| {
            c.admin_token = Some(Secret::new(v)?);
            Ok(())
        },
    },
    Flag {
        name: "admin-token-file",
        value: "PATH",
        help: "read the admin token from the first line of this file",
        show: |c| show_token(c),
        set: |c, v| {
            let text = std::fs::read_to_string(v).map_err(|e| format!("{v}: {e}"))?;
            let first = text.lines().next().unwrap_or("");
            c.admin_token = Some(Secret::new(first).map_err(|e| format!("{v}: {e}"))?);
            Ok(())
        },
    },
    Flag {
        name: "exec-require-token",
        value: "on|off",
        help: "streamed commands need the admin token too",
        show: |c| on_off(c.exec_require_token).to_string(),
        set: |c, v| {
            c.exec_require_token = parse_on_off(v)?;
            Ok(())
        },
    },
];

fn show_token(c: &Config) -> String {
    let set = if c.admin_token.is_some() {
        "set"
    } else {
        "none"
    };
    set.to_string()
}

/// Seconds, with a fraction: `30`, `0.5`.
fn set_duration(field: &mut Duration, value: &str) -> Result<(), String> {
    let secs: f64 = value
        .parse()
        .map_err(|_| format!("not a number of seconds: {value}"))?;
    if !(0.0..=7.0 * 24.0 * 3600.0).contains(&secs) {
        return Err(format!("{value} is outside 0..=604800 seconds"));
    }
    *field = Duration::from_secs_f64(secs);
    Ok(())
}

fn show_secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

fn set_seconds(field: &mut Duration, value: &str, min: u64) -> Result<(), String> {
    let mut secs = 0u64;
    set_number(&mut secs, value, min, 7 * 24 * 3600)?;
    *field = Duration::from_secs(secs);
    Ok(())
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

fn on_off(b: bool) -> &'static str {
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
        while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
            match arg {
                Short('h') | Long("help") => return Ok(Command::Help(Config::help())),
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
                    (flag.set)(&mut config, &value).map_err(|e| format!("--{name}: {e}"))?;
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
        if config.exec_require_token && config.admin_token.is_none() {
            // Otherwise the operator believes the commands are protected and they are not.
            return Err("--exec-require-token on needs an admin token".into());
        }
        Ok(Command::Run(Box::new(config)))
    }

    /// The `--help` text: every flag with its default.
    pub fn help() -> String {
        let defaults = Config::default();
        let mut text = String::from(
            "miohttpd: a small, fast HTTP/1.1 server on one readiness loop\n\n\
             Usage: miohttpd [FLAGS]\n\nFlags:\n",
        );
        for flag in FLAGS {
            let left = format!("--{} {}", flag.name, flag.value);
            text.push_str(&format!(
                "  {left:<28} {} [default: {}]\n",
                flag.help,
                (flag.show)(&defaults)
            ));
        }
        text.push_str(&format!("  {:<28} print this help\n", "-h, --help"));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match Config::from_args(args.iter().copied())? {
            Command::Run(config) => Ok(*config),
            Command::Help(_) => Err("help".into()),
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
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
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
        for bad in ["-1", "soon", "1e9", "NaN"] {
            assert!(run(&["--body-timeout", bad]).is_err(), "{bad}");
        }
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
