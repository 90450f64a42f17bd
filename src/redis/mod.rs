//! Comet across hosts through Redis: the RESP codec ([`resp`]), the atomic publish and the
//! catch-up read as Lua scripts ([`scripts`]), the sans-IO state machine of the two Redis
//! connections ([`session`]), its non-blocking I/O in a `mio::Poll` ([`link`]), and the
//! count of every host's waiters for a publish ([`counts`]); plus the `--redis` URL. Nothing
//! here runs unless `--redis` is given. The design is in docs/comet.md ("Across hosts").

pub mod bridge;
pub mod counts;
pub mod link;
pub mod resp;
pub mod scripts;
pub mod session;

use std::net::{SocketAddr, ToSocketAddrs};

/// Where `--redis` points: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`. The password, if the
/// URL has one, is taken out at parse time (see [`parse_url`]); this holds none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// The address connected to (a name is resolved once, when the flag is read, like
    /// `--listen`: the loop never blocks on DNS).
    pub addr: SocketAddr,
    /// `HOST:PORT` as given, for logs and `--help`.
    pub authority: String,
    /// ACL user (`redis://USER:PASSWORD@...`); none: the default user.
    pub username: Option<String>,
    pub db: u32,
}

/// The default port of Redis.
pub const DEFAULT_PORT: u16 = 6379;

/// Parses a `redis://` URL into the target and the password it carries, if any.
pub fn parse_url(url: &str) -> Result<(RedisTarget, Option<String>), String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or("wants redis://[:PASSWORD@]HOST:PORT[/DB]")?;
    let (authority, db) = match rest.split_once('/') {
        None | Some((_, "")) => (rest.trim_end_matches('/'), 0),
        Some((authority, db)) => {
            let db: u32 = db
                .parse()
                .ok()
                .filter(|n| *n < 1 << 16)
                .ok_or_else(|| format!("database {db:?} is not a number"))?;
            (authority, db)
        }
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let user = percent_decode(user)?;
            let password = percent_decode(password)?;
            (
                (!user.is_empty()).then_some(user),
                (!password.is_empty()).then_some(password),
            )
        }
    };
    if username.is_some() && password.is_none() {
        return Err("a user name needs a password (redis://USER:PASSWORD@HOST)".into());
    }
    if hostport.is_empty() {
        return Err("no host".into());
    }
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let check_port = |port: &str| {
        port.parse::<u16>()
            .map(|_| ())
            .map_err(|_| format!("port {port:?} is not a number"))
    };
    let with_port = if let Some(inner) = hostport.strip_prefix('[') {
        match inner.split_once(']') {
            Some((_, "")) => format!("{hostport}:{DEFAULT_PORT}"),
            Some((_, after)) if after.starts_with(':') => {
                check_port(&after[1..])?;
                hostport.to_owned()
            }
            _ => return Err(format!("{hostport:?}: not [IPv6]:PORT")),
        }
    } else if let Some((host, port)) = hostport.rsplit_once(':') {
        if host.contains(':') {
            return Err("an IPv6 address goes in brackets: [::1]:6379".into());
        }
        check_port(port)?;
        hostport.to_owned()
    } else {
        format!("{hostport}:{DEFAULT_PORT}")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{with_port}: no address"))?;
    Ok((
        RedisTarget {
            addr,
            authority: with_port,
            username,
            db,
        },
        password,
    ))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the URL's user or password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's user or password is not UTF-8".to_string())
}

/// The session settings `config` gives, `None` without `--redis`. `host` is this host's id
/// ([`new_host_id`]).
pub fn session_config(config: &crate::Config, host: String) -> Option<session::SessionConfig> {
    let target = config.redis.as_ref()?;
    Some(session::SessionConfig {
        addr: target.addr,
        username: target.username.clone(),
        password: config.redis_password.clone(),
        db: target.db,
        keys: scripts::KeySpace::new(&config.redis_prefix),
        host,
        history: config.comet.history,
        // A channel's keys outlive its local idle expiry by far: they are its history.
        key_ttl: (config.comet.channel_ttl * 60).max(std::time::Duration::from_secs(3600)),
        probe_interval: config.redis_probe_interval,
        reply_timeout: config.redis_timeout,
        backoff_min: std::time::Duration::from_millis(100),
        backoff_max: std::time::Duration::from_secs(5),
        limits: resp::Limits::default(),
    })
}

/// Appends the link's families to a `/metrics` text exposition (format 0.0.4): its state
/// (one sample per state, 1 for the current one, so an alert needs no number-to-name table)
/// and its counters.
pub fn write_metrics(out: &mut String, state: session::LinkState, stats: &session::LinkStats) {
    use session::LinkState;
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# HELP miohttpd_redis_link_state the Redis link: 1 for the state it is in\n\
         # TYPE miohttpd_redis_link_state gauge\n"
    );
    for s in [LinkState::Down, LinkState::Connecting, LinkState::Up] {
        let _ = writeln!(
            out,
            "miohttpd_redis_link_state{{state=\"{}\"}} {}",
            s.as_str(),
            u8::from(s == state)
        );
    }
    let counters = [
        (
            "redis_outages",
            "times the Redis link went down",
            stats.outages,
        ),
        (
            "redis_failed_attempts",
            "attempts to connect to Redis that failed",
            stats.failed_attempts,
        ),
        (
            "redis_published",
            "publishes Redis gave an id",
            stats.published,
        ),
        (
            "redis_received",
            "messages from other hosts",
            stats.received,
        ),
        (
            "redis_probes",
            "probes sent on the subscriber",
            stats.probes,
        ),
    ];
    for (name, help, value) in counters {
        let _ = write!(
            out,
            "# HELP miohttpd_{name} {help}\n# TYPE miohttpd_{name} counter\nmiohttpd_{name} {value}\n"
        );
    }
    let _ = write!(
        out,
        "# HELP miohttpd_redis_hosts live hosts sharing the prefix, this one included, as of \
         the last heartbeat\n# TYPE miohttpd_redis_hosts gauge\nmiohttpd_redis_hosts {}\n",
        stats.live_hosts
    );
    let _ = write!(
        out,
        "# HELP miohttpd_redis_syscalls_total syscalls on the Redis link's sockets, by kind\n\
         # TYPE miohttpd_redis_syscalls_total counter\n"
    );
    let calls = stats.syscalls;
    for (kind, value) in [
        ("connect", calls.connect),
        ("read", calls.read),
        ("write", calls.write),
    ] {
        let _ = writeln!(
            out,
            "miohttpd_redis_syscalls_total{{kind=\"{kind}\"}} {value}"
        );
    }
}

/// `--redis-prefix`: 1 to 64 of `[A-Za-z0-9._:-]` (no braces: they are hash tags to Redis
/// Cluster; no spaces or newlines: the bus message format relies on them).
pub fn is_valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An id for this host among those sharing the prefix: new at every start (clock, pid).
pub fn new_host_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{mixed:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_the_password_taken_out() {
        // URL, authority, user, password, database.
        type Row = (
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            u32,
        );
        let table: &[Row] = &[
            ("redis://127.0.0.1:6380", "127.0.0.1:6380", None, None, 0),
            ("redis://127.0.0.1", "127.0.0.1:6379", None, None, 0),
            ("redis://127.0.0.1:6380/", "127.0.0.1:6380", None, None, 0),
            (
                "redis://:s3cret@127.0.0.1:6380/2",
                "127.0.0.1:6380",
                None,
                Some("s3cret"),
                2,
            ),
            (
                "redis://app:p%40ss%3A@127.0.0.1/15",
                "127.0.0.1:6379",
                Some("app"),
                Some("p@ss:"),
                15,
            ),
            ("redis://[::1]:7000", "[::1]:7000", None, None, 0),
            ("redis://[::1]", "[::1]:6379", None, None, 0),
            ("redis://localhost:6379", "localhost:6379", None, None, 0),
        ];
        for (url, authority, user, password, db) in table {
            let (target, pw) = parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(target.authority, *authority, "{url}");
            assert_eq!(target.username.as_deref(), *user, "{url}");
            assert_eq!(pw.as_deref(), *password, "{url}");
            assert_eq!(target.db, *db, "{url}");
            assert!(!format!("{target:?}").contains("s3cret"));
        }
        for bad in [
            "127.0.0.1:6379",
            "http://127.0.0.1",
            "redis://",
            "redis://127.0.0.1:port",
            "redis://127.0.0.1:99999",
            "redis://127.0.0.1/x",
            "redis://127.0.0.1/99999",
            "redis://user@127.0.0.1",
            "redis://:%zz@127.0.0.1",
            "redis://::1",
            "redis://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_name_the_state() {
        let mut out = String::new();
        let stats = session::LinkStats {
            outages: 2,
            live_hosts: 3,
            ..Default::default()
        };
        write_metrics(&mut out, session::LinkState::Connecting, &stats);
        assert!(out.contains("miohttpd_redis_link_state{state=\"down\"} 0\n"));
        assert!(out.contains("miohttpd_redis_link_state{state=\"connecting\"} 1\n"));
        assert!(out.contains("miohttpd_redis_link_state{state=\"up\"} 0\n"));
        assert!(out.contains("# TYPE miohttpd_redis_outages counter\nmiohttpd_redis_outages 2\n"));
        assert!(out.contains("miohttpd_redis_syscalls_total{kind=\"read\"} 0\n"));
        assert!(out.contains("# TYPE miohttpd_redis_hosts gauge\nmiohttpd_redis_hosts 3\n"));
        assert_eq!(out.matches("# HELP").count(), 8);
    }

    #[test]
    fn prefixes_and_host_ids() {
        assert!(is_valid_prefix("miohttpd"));
        assert!(is_valid_prefix("site:prod-1"));
        for bad in ["", "a{b}", "a b", "a\nb", &"x".repeat(65)] {
            assert!(!is_valid_prefix(bad), "{bad:?}");
        }
        let id = new_host_id();
        assert_eq!(id.len(), 16);
        assert!(!id.contains('\n'));
    }
}
