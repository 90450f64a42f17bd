//! What the loop keeps so it can be watched from outside: the admin listener (which serves
//! `/metrics` only), the access log, and the `--stats-interval` summary on stderr. All of it
//! runs on the loop's thread, driven by the poll timeout: no thread, no timer fd. The
//! counters themselves are in `stats.rs`; each connection's half of the access log is in
//! `conn/record.rs`.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::Interest;

use super::access_log::AccessLog;
use super::child::Children;
use super::listener;
use super::stats::{Gauges, Stats};
use super::syscalls::{Listener, LogWriter, Registrar};
use super::table::ADMIN;
use crate::comet::Comet;
use crate::config::Config;
use crate::http::{Head, Response};
use crate::router::Route;

pub struct Instruments {
    /// `--admin-listen`: registered with [`ADMIN`].
    pub admin: Option<Listener>,
    /// The admin listener had more connections waiting when its accept budget ran out.
    pub admin_accept_pending: bool,
    pub log: AccessLog,
    summary: Option<Summary>,
}

/// The `--stats-interval` reporter: the counters at the last line, to print rates since.
struct Summary {
    interval: Duration,
    next_at: Instant,
    last: Stats,
    last_at: Instant,
    out: LogWriter<io::Stderr>,
}

impl Instruments {
    /// Binds and registers the admin listener and opens the access log, before the loop runs.
    pub fn bind(config: &Config, registry: Registrar<'_>, stats: &mut Stats) -> io::Result<Self> {
        let admin = match config.admin_listen {
            Some(addr) => {
                let context = |e: io::Error| io::Error::new(e.kind(), format!("admin {addr}: {e}"));
                let mut admin = listener::bind_admin(addr).map_err(context)?;
                registry
                    .register(&mut admin, ADMIN, Interest::READABLE, stats)
                    .map_err(context)?;
                Some(admin)
            }
            None => None,
        };
        let log = AccessLog::open(config.access_log.as_ref())
            .map_err(|e| io::Error::new(e.kind(), format!("access log: {e}")))?;
        Ok(Instruments {
            admin,
            admin_accept_pending: false,
            log,
            summary: None,
        })
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The loop starts: the summary's first interval begins.
    pub fn start(&mut self, config: &Config, now: Instant, stats: &Stats) {
        if !config.stats_interval.is_zero() {
            self.summary = Some(Summary {
                interval: config.stats_interval,
                next_at: now + config.stats_interval,
                last: stats.clone(),
                last_at: now,
                out: LogWriter::new(io::stderr()),
            });
        }
    }

    /// The next instant something here is due: a summary line or a batch of log lines.
    pub fn next_due(&self) -> Option<Instant> {
        let summary = self.summary.as_ref().map(|s| s.next_at);
        match (summary, self.log.flush_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// After each wake-up: prints the summary and writes the log's batch if they are due.
    pub fn after_wakeup(&mut self, now: Instant, stats: &mut Stats) {
        self.log.flush_if_due(now, stats);
        if let Some(line) = self.summary_due(now, stats) {
            if let Some(summary) = self.summary.as_mut() {
                // stderr gone is no reason to stop serving.
                let _ = summary.out.write_all(line.as_bytes(), stats);
            }
        }
    }

    /// The summary line, if one is due; the next interval starts.
    fn summary_due(&mut self, now: Instant, stats: &Stats) -> Option<String> {
        let summary = self.summary.as_mut()?;
        if now < summary.next_at {
            return None;
        }
        let line = stats.summary_line(
            &summary.last,
            now.saturating_duration_since(summary.last_at),
            stats.open_connections(),
        );
        // The next line one interval after this one, not after the missed due time: a
        // stalled loop prints one late line rather than a burst.
        summary.next_at = now + summary.interval;
        summary.last = stats.clone();
        summary.last_at = now;
        Some(line)
    }
}

/// The gauges `/metrics` shows, read from the loop's parts.
pub fn gauges(stats: &Stats, comet: &Comet, children: &Children) -> Gauges {
    Gauges {
        connections: stats.open_connections(),
        parked: comet.parked() as u64,
        subscribed: comet.subscribed() as u64,
        streaming: children.streaming() as u64,
        commands_running: children.running() as u64,
    }
}

/// What a request on the admin listener gets: the metrics, and nothing else.
pub fn admin_route(head: &Head<'_>) -> Route {
    match (head.path, head.method) {
        ("/metrics", "GET" | "HEAD") => crate::handlers::metrics::metrics(head),
        ("/metrics", _) => Route::Respond(
            Response::text(405, "method not allowed\n").with_header("Allow", "GET, HEAD"),
        ),
        _ => Route::Respond(Response::text(404, "not found\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{header_storage, parse_head, HeadLimits};
    use crate::server::syscalls::Poller;

    fn status_of(route: Route) -> u16 {
        match route {
            Route::Server { .. } => 0,
            Route::Respond(response) => response.status,
            _ => 1,
        }
    }

    fn with_head<T>(request_line: &str, f: impl FnOnce(&Head<'_>) -> T) -> T {
        let raw = format!("{request_line}\r\nHost: a\r\n\r\n");
        let mut storage = header_storage();
        let head = parse_head(raw.as_bytes(), &mut storage, &HeadLimits::default()).unwrap();
        f(&head)
    }

    #[test]
    fn the_admin_listener_serves_metrics_only() {
        let table = [
            ("GET /metrics HTTP/1.1", 0),
            ("HEAD /metrics HTTP/1.1", 0),
            ("GET /metrics?x=1 HTTP/1.1", 0),
            ("POST /metrics HTTP/1.1", 405),
            ("GET /plaintext HTTP/1.1", 404),
            ("GET / HTTP/1.1", 404),
            ("GET /metrics/ HTTP/1.1", 404),
        ];
        for (line, want) in table {
            assert_eq!(
                with_head(line, |h| status_of(admin_route(h))),
                want,
                "{line}"
            );
        }
    }

    #[test]
    fn summary_is_due_each_interval() {
        let config = Config {
            stats_interval: Duration::from_secs(2),
            ..Config::default()
        };
        let poll = Poller::new().unwrap();
        let mut stats = Stats::default();
        let mut instruments = Instruments::bind(&config, poll.registry(), &mut stats).unwrap();
        assert_eq!(stats.registrations, 0, "no admin listener");
        let start = Instant::now();
        instruments.start(&config, start, &stats);
        assert_eq!(instruments.next_due(), Some(start + Duration::from_secs(2)));
        assert_eq!(
            instruments.summary_due(start + Duration::from_secs(1), &stats),
            None
        );
        stats.requests += 10;
        let later = start + Duration::from_secs(3);
        let line = instruments.summary_due(later, &stats).expect("due");
        assert!(
            line.starts_with("miohttpd: stats: conns=0 req/s=3 "),
            "{line}"
        );
        assert_eq!(instruments.next_due(), Some(later + Duration::from_secs(2)));
        assert_eq!(instruments.summary_due(later, &stats), None);
    }

    #[test]
    fn no_interval_no_summary() {
        let poll = Poller::new().unwrap();
        let config = Config::default();
        let mut stats = Stats::default();
        let mut instruments = Instruments::bind(&config, poll.registry(), &mut stats).unwrap();
        instruments.start(&config, Instant::now(), &stats);
        assert_eq!(instruments.next_due(), None);
    }
}
