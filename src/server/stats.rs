//! What the loop counts about its own work: plain integers in one struct the loop owns and
//! lends (`&mut Stats`) to whatever makes a syscall, so counting costs an add, not a lock or
//! an atomic. The syscall counters are bumped by the wrappers that make the syscalls
//! (`transport.rs` for a connection's socket, `syscalls.rs` for the rest), never beside a
//! call, and are meant to be complete, so `miohttpd_syscalls_total` can be checked against an
//! outside count (`strace -c`, `perf stat -e raw_syscalls:sys_enter`); what is left out is
//! listed at [`Stats::syscalls`].
//!
//! Each counter and gauge is declared once, in the tables below: its field, its name and help
//! on `/metrics`, and whether it counts syscalls. The struct, the syscall total and the
//! exposition are all made from that one line.

use std::fmt::Write;
use std::time::Duration;

/// What a table's number is, for the exposition's TYPE and for [`Stats::syscalls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A counter of syscalls: part of `syscalls_total`.
    Syscalls,
    /// A counter of anything else.
    Counter,
    /// A value that goes up and down.
    Gauge,
}

impl Kind {
    fn exposition_type(self) -> &'static str {
        match self {
            Kind::Syscalls | Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One line of a table: how a field is shown on `/metrics` (as `miohttpd_NAME`).
struct Metric<T> {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    value: fn(&T) -> u64,
}

/// Declares a struct of `u64` fields and its table of [`Metric`]s, in one list: each field is
/// `name: Kind "metric_name" "help",`. The table's order is the exposition's.
macro_rules! metrics {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $( $(#[doc = $doc:literal])* $field:ident: $kind:ident $metric:literal $help:literal, )*
        }
        $( also { $($extra:tt)* } )?
    ) => {
        $(#[$attr])*
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: u64, )*
            $( $($extra)* )?
        }

        impl $name {
            const METRICS: &'static [Metric<$name>] = &[
                $( Metric {
                    name: $metric,
                    help: $help,
                    kind: Kind::$kind,
                    value: |it: &$name| it.$field,
                }, )*
            ];
        }
    };
}

metrics! {
    /// Counters since start.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub struct Stats {
        polls: Syscalls "polls_total" "poll(2) waits (epoll_wait, kevent)",
        events: Counter "events_total" "readiness events handled",
        /// Connections accepted.
        accepts: Counter "accepts_total" "connections accepted",
        /// accept(2) calls, the last one of a wake-up (which finds the queue empty) included.
        accept_calls: Syscalls "accept_calls_total" "accept(2) calls, those finding no connection included",
        /// Sockets closed (their fd closed by the drop): connections, and those refused.
        closes: Syscalls "closes_total" "sockets closed (close(2) by the drop)",
        reads: Syscalls "reads_total" "read(2) calls on client sockets",
        short_reads: Counter "short_reads_total" "reads that returned less than asked",
        writes: Syscalls "writes_total" "write(2), writev(2) and sendmsg(2) calls on client sockets",
        vectored_writes: Counter "vectored_writes_total" "writes of two buffers in one writev(2)",
        /// Writes whose bytes wait for the close right after, to leave with the FIN.
        corked_writes: Counter "corked_writes_total" "writes held to leave with the FIN (MSG_MORE)",
        would_blocks: Counter "would_blocks_total" "reads and writes that found the socket not ready",
        shutdowns: Syscalls "shutdowns_total" "shutdown(2) calls (lingering closes)",
        /// Reads from child pipes.
        pipe_reads: Syscalls "pipe_reads_total" "read(2) calls on streamed commands' pipes",
        /// Child pipes closed: at EOF, on a read error, or with their connection.
        pipe_closes: Syscalls "pipe_closes_total" "close(2) calls on streamed commands' pipes",
        setsockopts: Syscalls "setsockopts_total" "setsockopt(2) calls on accepted sockets",
        /// epoll_ctl(2) calls: the listeners', the signal pipe's, each connection's and each
        /// child pipe's registration.
        registrations: Syscalls "registrations_total" "epoll_ctl(2) calls: listeners, connections, pipes",
        /// Syscalls spent on streamed commands: the spawn (an estimate, [`SPAWN_SYSCALLS`]), each
        /// wait4(2) and each kill(2).
        process_syscalls: Syscalls "process_syscalls_total" "syscalls for streamed commands: spawn (estimated), wait4, kill",
        /// write(2) calls of the access log and the `--stats-interval` summary.
        log_writes: Syscalls "log_writes_total" "write(2) calls of the access log and the stats summary",
        requests: Counter "requests_total" "request heads parsed",
        /// Connections over `--max-connections`, answered 503 and closed.
        refused: Counter "refused_connections_total" "connections over the limit, answered 503 and closed",
        /// Times accepting paused because the process was out of file descriptors.
        accept_pauses: Counter "accept_pauses_total" "accept pauses for want of file descriptors",
        bytes_in: Counter "received_bytes_total" "bytes read from clients",
        bytes_out: Counter "sent_bytes_total" "bytes written to clients",
    }
    also {
        /// Final responses by status class, counted where each is encoded: 2xx, 3xx, 4xx, 5xx,
        /// and 600..=999 (which a handler may send) as "other".
        pub responses: [u64; 5],
        /// Wake-ups by the number of events each returned.
        pub events_per_poll: EventsHistogram,
    }
}

/// What the parent spends on one `Command::spawn` of a streamed command plus making its pipe
/// non-blocking, as strace shows it on Linux with glibc's posix_spawn: openat(/dev/null) for
/// stdin, pipe2, four prlimit64, mmap and munmap of the child's stack, two rt_sigprocmask,
/// clone3, two closes, and the ioctl(FIONBIO). Two more (openat and close) when stderr goes to
/// /dev/null. An estimate: another libc or std may differ by a few. The child's own syscalls
/// (the exec'd shell and what it runs) are not the server's and are not counted; `strace -f`
/// would count them.
pub const SPAWN_SYSCALLS: u64 = 14;
/// The extra cost of a spawn whose stderr is /dev/null.
pub const SPAWN_NULL_STDERR_SYSCALLS: u64 = 2;

/// The status classes of [`Stats::responses`], as their label says them.
const CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "other"];

/// Wake-ups counted in power-of-two buckets of events: 0, 1, 2, 3-4, 5-8, ... Plain counts
/// per bucket, made cumulative only when rendered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventsHistogram {
    counts: [u64; 32],
    sum: u64,
}

impl EventsHistogram {
    pub fn record(&mut self, events: usize) {
        self.counts[Self::bucket(events)] += 1;
        self.sum += events as u64;
    }

    /// Bucket 0 holds wake-ups with no event (timeouts); bucket i holds those with up to
    /// 2^(i-1) events and more than the bucket before.
    fn bucket(events: usize) -> usize {
        if events == 0 {
            return 0;
        }
        let ceil_log2 = (usize::BITS - (events - 1).leading_zeros()) as usize;
        (1 + ceil_log2).min(31)
    }

    fn upper_bound(bucket: usize) -> u64 {
        if bucket == 0 {
            0
        } else {
            1 << (bucket - 1)
        }
    }

    /// Wake-ups recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Events in all recorded wake-ups.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// (le, cumulative count) for the finite buckets: 0, 1, 2, 4, ... below `max`, then
    /// `max` itself (no wake-up returns more than the events buffer holds).
    fn cumulative(&self, max: usize) -> Vec<(u64, u64)> {
        let last = Self::bucket(max.max(1));
        let mut running = 0;
        let mut rows = Vec::with_capacity(last + 1);
        for bucket in 0..=last {
            running += self.counts[bucket];
            let le = Self::upper_bound(bucket).min(max as u64);
            rows.push((le, running));
        }
        // Buckets past `max` cannot be reached by the loop; summed in for consistency.
        if let Some(row) = rows.last_mut() {
            row.1 = self.count();
        }
        rows
    }
}

metrics! {
    /// What is open right now, beside the counters.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Gauges {
        connections: Gauge "connections" "connections open",
        parked: Gauge "parked_waiters" "long-poll waiters parked",
        subscribed: Gauge "subscribed_streams" "event-stream subscribers",
        /// Connections streaming a command's output.
        streaming: Gauge "streaming_connections" "connections streaming a command's output",
        commands_running: Gauge "commands_running" "streamed commands running or being ended",
    }
}

impl Stats {
    /// Counts one final response where it is encoded.
    pub fn count_response(&mut self, status: u16) {
        let class = match status / 100 {
            2 => 0,
            3 => 1,
            4 => 2,
            5 => 3,
            _ => 4,
        };
        self.responses[class] += 1;
    }

    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> u64 {
        self.accepts.saturating_sub(self.closes)
    }

    /// Every syscall the server makes while it runs, summed: the counters the table declares
    /// `Syscalls`. Not counted: what happens before the loop starts (socket, bind,
    /// listen, epoll_create, the signal pipe; the registrations in the poll are counted), vDSO
    /// calls (clock_gettime makes no syscall), the allocator's mmap/brk (the buffer pool keeps
    /// them off the request path), the writes of error log lines on stderr, the reads with
    /// which signal-hook drains its pipe when a signal comes (two or more), a spawn's exact
    /// cost (see [`SPAWN_SYSCALLS`]), and in debug builds only, the fcntl(F_GETFD) with which
    /// std checks each fd before closing it.
    pub fn syscalls(&self) -> u64 {
        Self::METRICS
            .iter()
            .filter(|metric| metric.kind == Kind::Syscalls)
            .map(|metric| (metric.value)(self))
            .sum()
    }

    /// The counters, the gauges and the events-per-wake-up histogram (with buckets up to
    /// `events_per_poll`) in the Prometheus text exposition format, version 0.0.4.
    pub fn render_prometheus(&self, gauges: &Gauges, events_per_poll: usize) -> String {
        let mut out = Exposition(String::with_capacity(4096));
        for metric in Self::METRICS {
            out.metric(metric, self);
        }
        out.syscalls_total(self.syscalls());
        out.family(
            "responses_total",
            "counter",
            "final responses by status class",
        );
        for (class, &value) in CLASSES.iter().zip(&self.responses) {
            out.sample("responses_total", Some(("class", class)), value);
        }
        for metric in Gauges::METRICS {
            out.metric(metric, gauges);
        }
        out.histogram(&self.events_per_poll, events_per_poll);
        out.0
    }

    /// The series of the supervisor (`--workers N`), which counts its syscalls and serves
    /// no request but `/metrics`: the syscall counters, the wake-ups' events, its accepted
    /// (admin) connections and those open, so that accepts less closes is the connections
    /// open in its series as in every process's and in the totals; `syscalls_total` with
    /// `also_syscalls` added (those a part of it counts on its own: the Redis link's); and the
    /// events-per-wake-up histogram with buckets up to `events_per_poll` (the workers', so
    /// that merged buckets line up). Names, HELP and order are `render_prometheus`'s, so the
    /// texts merge; requests, bytes and responses are the workers' alone.
    pub fn render_supervisor_prometheus(
        &self,
        also_syscalls: u64,
        events_per_poll: usize,
    ) -> String {
        let mut out = Exposition(String::with_capacity(2048));
        for metric in Self::METRICS {
            let own = matches!(metric.name, "events_total" | "accepts_total");
            if metric.kind == Kind::Syscalls || own {
                out.metric(metric, self);
            }
        }
        out.syscalls_total(self.syscalls() + also_syscalls);
        let gauges = Gauges {
            connections: self.open_connections(),
            ..Gauges::default()
        };
        for metric in Gauges::METRICS {
            if metric.name == "connections" {
                out.metric(metric, &gauges);
            }
        }
        out.histogram(&self.events_per_poll, events_per_poll);
        out.0
    }

    /// The `--stats-interval` line: what happened since `earlier`, `elapsed` ago.
    pub fn summary_line(&self, earlier: &Stats, elapsed: Duration, connections: u64) -> String {
        let (now, then) = (SummaryCounters::of(self), SummaryCounters::of(earlier));
        now.line_since(&then, elapsed, connections, "")
    }
}

/// The counters a `--stats-interval` line is made of. With workers the supervisor reads them
/// from each worker's metrics text (`workers::metrics::summary_counters`), one line each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SummaryCounters {
    pub requests: u64,
    pub syscalls: u64,
    pub events: u64,
    pub polls: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl SummaryCounters {
    pub fn of(stats: &Stats) -> Self {
        SummaryCounters {
            requests: stats.requests,
            syscalls: stats.syscalls(),
            events: stats.events,
            polls: stats.polls,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
        }
    }

    /// The line for what happened since `earlier`, `elapsed` ago; `label` (`worker=1 `, with
    /// its space) goes before the figures.
    pub fn line_since(
        &self,
        earlier: &SummaryCounters,
        elapsed: Duration,
        connections: u64,
        label: &str,
    ) -> String {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        // Saturating: a restarted worker's counters start again from zero.
        let requests = self.requests.saturating_sub(earlier.requests);
        let polls = self.polls.saturating_sub(earlier.polls);
        let per = |n: u64, of: u64| {
            if of == 0 {
                "-".to_string()
            } else {
                format!("{:.2}", n as f64 / of as f64)
            }
        };
        format!(
            "miohttpd: stats: {label}conns={connections} req/s={:.0} syscalls/req={} \
             events/poll={} in={} out={}\n",
            requests as f64 / seconds,
            per(self.syscalls.saturating_sub(earlier.syscalls), requests),
            per(self.events.saturating_sub(earlier.events), polls),
            rate(self.bytes_in.saturating_sub(earlier.bytes_in) as f64 / seconds),
            rate(self.bytes_out.saturating_sub(earlier.bytes_out) as f64 / seconds),
        )
    }
}

/// Bytes per second in SI units: `812B/s`, `12.3kB/s`, `4.6MB/s`.
fn rate(bytes_per_second: f64) -> String {
    let units = [("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)];
    for (unit, size) in units {
        if bytes_per_second >= size {
            return format!("{:.1}{unit}", bytes_per_second / size);
        }
    }
    format!("{bytes_per_second:.0}B/s")
}

/// A text exposition being written: every family's HELP and TYPE, then its samples.
struct Exposition(String);

impl Exposition {
    /// A table's metric: its family and its one unlabelled sample.
    fn metric<T>(&mut self, metric: &Metric<T>, of: &T) {
        self.family(metric.name, metric.kind.exposition_type(), metric.help);
        self.sample(metric.name, None, (metric.value)(of));
    }

    /// `syscalls_total`: its family and its one sample.
    fn syscalls_total(&mut self, value: u64) {
        self.family(
            "syscalls_total",
            "counter",
            "every syscall the loop makes, summed",
        );
        self.sample("syscalls_total", None, value);
    }

    /// The events-per-wake-up histogram, with buckets up to `events_per_poll`.
    fn histogram(&mut self, histogram: &EventsHistogram, events_per_poll: usize) {
        self.family(
            "events_per_poll",
            "histogram",
            "readiness events returned per poll wake-up",
        );
        let mut le = String::new();
        for (bound, count) in histogram.cumulative(events_per_poll) {
            le.clear();
            let _ = write!(le, "{bound}");
            self.sample("events_per_poll_bucket", Some(("le", &le)), count);
        }
        self.sample(
            "events_per_poll_bucket",
            Some(("le", "+Inf")),
            histogram.count(),
        );
        self.sample("events_per_poll_sum", None, histogram.sum());
        self.sample("events_per_poll_count", None, histogram.count());
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(
            self.0,
            "# HELP miohttpd_{name} {help}\n# TYPE miohttpd_{name} {kind}\n"
        );
    }

    /// One sample; label values here are fixed ASCII, never needing escapes.
    fn sample(&mut self, name: &str, label: Option<(&str, &str)>, value: u64) {
        let _ = match label {
            Some((key, label_value)) => {
                writeln!(self.0, "miohttpd_{name}{{{key}=\"{label_value}\"}} {value}")
            }
            None => writeln!(self.0, "miohttpd_{name} {value}"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Checks `text` line by line against the text format 0.0.4: HELP then TYPE opening each
    /// family once, samples only of the family just opened (with a histogram's suffixes),
    /// valid names and labels, numeric values, cumulative buckets ending in +Inf = _count.
    /// Returns the samples by their full name with labels.
    fn parse_exposition(text: &str) -> Result<HashMap<String, f64>, String> {
        fn valid_name(name: &str) -> bool {
            let mut bytes = name.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        }
        if !text.ends_with('\n') {
            return Err("the text must end with a line feed".into());
        }
        let mut samples = HashMap::new();
        let mut families = Vec::<String>::new();
        let mut family: Option<(String, String)> = None; // name, type
        let mut pending_help: Option<String> = None;
        let mut last_bucket: Option<(f64, f64)> = None; // le, count
        for (number, line) in text.lines().enumerate() {
            let at = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("HELP without text"))?;
                if !valid_name(name) || help.is_empty() || pending_help.is_some() {
                    return Err(at("bad HELP"));
                }
                pending_help = Some(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("TYPE without type"))?;
                if pending_help.take().as_deref() != Some(name) {
                    return Err(at("TYPE not right after its HELP"));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(at("unknown type"));
                }
                if families.iter().any(|f| f == name) {
                    return Err(at("family described twice"));
                }
                families.push(name.to_string());
                family = Some((name.to_string(), kind.to_string()));
                last_bucket = None;
            } else if line.starts_with('#') || line.is_empty() {
                return Err(at("stray comment or empty line"));
            } else {
                let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
                let value: f64 = value.parse().map_err(|_| at("value not a number"))?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => {
                        let labels = rest.strip_suffix('}').ok_or_else(|| at("unclosed {"))?;
                        (name, Some(labels))
                    }
                    None => (series, None),
                };
                let (family_name, kind) =
                    family.as_ref().ok_or_else(|| at("sample before TYPE"))?;
                let suffix = name
                    .strip_prefix(family_name.as_str())
                    .ok_or_else(|| at("sample outside its family"))?;
                let allowed: &[&str] = if kind == "histogram" {
                    &["_bucket", "_sum", "_count"]
                } else {
                    &[""]
                };
                if !valid_name(name) || !allowed.contains(&suffix) {
                    return Err(at("bad sample name"));
                }
                let mut le = None;
                for pair in labels.into_iter().flat_map(|l| l.split(',')) {
                    let (key, quoted) =
                        pair.split_once('=').ok_or_else(|| at("label without ="))?;
                    let label_value = quoted
                        .strip_prefix('"')
                        .and_then(|q| q.strip_suffix('"'))
                        .ok_or_else(|| at("label value not quoted"))?;
                    if !valid_name(key) || key.starts_with("__") || label_value.contains('"') {
                        return Err(at("bad label"));
                    }
                    if key == "le" {
                        le = Some(match label_value {
                            "+Inf" => f64::INFINITY,
                            v => v.parse().map_err(|_| at("le not a number"))?,
                        });
                    }
                }
                match (suffix, le) {
                    ("_bucket", Some(le)) => {
                        if let Some((previous_le, previous_count)) = last_bucket {
                            if le <= previous_le || value < previous_count {
                                return Err(at("buckets not ascending and cumulative"));
                            }
                        }
                        last_bucket = Some((le, value));
                    }
                    ("_bucket", None) => return Err(at("bucket without le")),
                    ("_count", _) if kind == "histogram" => match last_bucket {
                        Some((le, count)) if le.is_infinite() && count == value => {}
                        _ => return Err(at("_count differs from the +Inf bucket")),
                    },
                    _ => {}
                }
                if samples.insert(series.to_string(), value).is_some() {
                    return Err(at("sample repeated"));
                }
            }
        }
        if pending_help.is_some() {
            return Err("HELP without TYPE at the end".into());
        }
        Ok(samples)
    }

    fn busy_stats() -> Stats {
        let mut stats = Stats {
            reads: 7,
            writes: 3,
            polls: 4,
            accept_calls: 2,
            registrations: 1,
            ..Stats::default()
        };
        for events in [0, 1, 2, 3, 4, 5, 1000, 1024] {
            stats.events_per_poll.record(events);
        }
        stats.count_response(200);
        stats.count_response(204);
        stats.count_response(404);
        stats.count_response(503);
        stats.count_response(700);
        stats
    }

    #[test]
    fn exposition_is_valid_text_format_line_by_line() {
        let gauges = Gauges {
            connections: 2,
            subscribed: 1,
            ..Gauges::default()
        };
        for events_per_poll in [1, 2, 3, 1000, 1024] {
            let mut stats = busy_stats();
            stats.events_per_poll = EventsHistogram::default();
            for events in [0, 1, events_per_poll] {
                stats.events_per_poll.record(events);
            }
            let text = stats.render_prometheus(&gauges, events_per_poll);
            let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let last_le = format!("miohttpd_events_per_poll_bucket{{le=\"{events_per_poll}\"}}");
            assert_eq!(samples.get(&last_le), Some(&3.0), "{text}");
        }
        let text = busy_stats().render_prometheus(&gauges, 1024);
        let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let value = |series: &str| samples.get(series).copied();
        assert_eq!(value("miohttpd_reads_total"), Some(7.0));
        assert_eq!(value("miohttpd_syscalls_total"), Some(17.0));
        assert_eq!(value("miohttpd_connections"), Some(2.0));
        assert_eq!(value("miohttpd_subscribed_streams"), Some(1.0));
        assert_eq!(value("miohttpd_responses_total{class=\"2xx\"}"), Some(2.0));
        assert_eq!(value("miohttpd_responses_total{class=\"3xx\"}"), Some(0.0));
        assert_eq!(
            value("miohttpd_responses_total{class=\"other\"}"),
            Some(1.0)
        );
        let bucket = |le: &str| value(&format!("miohttpd_events_per_poll_bucket{{le=\"{le}\"}}"));
        assert_eq!(bucket("0"), Some(1.0));
        assert_eq!(bucket("1"), Some(2.0));
        assert_eq!(bucket("2"), Some(3.0));
        assert_eq!(bucket("4"), Some(5.0), "3 and 4 events");
        assert_eq!(bucket("8"), Some(6.0));
        assert_eq!(bucket("512"), Some(6.0));
        assert_eq!(bucket("1024"), Some(8.0));
        assert_eq!(bucket("+Inf"), Some(8.0));
        assert_eq!(value("miohttpd_events_per_poll_sum"), Some(2039.0));
        assert_eq!(value("miohttpd_events_per_poll_count"), Some(8.0));
    }

    #[test]
    fn the_supervisors_series_are_its_syscalls_and_admin_connections_in_order() {
        let mut stats = busy_stats();
        stats.requests = 5;
        stats.accepts = 2;
        stats.bytes_in = 100;
        let text = stats.render_supervisor_prometheus(10, 1024);
        let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let value = |series: &str| samples.get(series).copied();
        assert_eq!(value("miohttpd_reads_total"), Some(7.0));
        assert_eq!(value("miohttpd_polls_total"), Some(4.0));
        assert_eq!(value("miohttpd_syscalls_total"), Some(17.0 + 10.0));
        assert_eq!(value("miohttpd_events_per_poll_count"), Some(8.0));
        for serving in [
            "miohttpd_requests_total",
            "miohttpd_received_bytes_total",
            "miohttpd_parked_waiters",
        ] {
            assert_eq!(value(serving), None, "{text}");
        }
        // Its admin connections: accepted, and open until closed.
        assert_eq!(value("miohttpd_accepts_total"), Some(2.0));
        assert_eq!(
            value("miohttpd_connections"),
            Some(2.0 - stats.closes as f64)
        );
        // Every line is one the full exposition has too, in the same order: the texts merge.
        let gauges = Gauges {
            connections: stats.open_connections(),
            ..Gauges::default()
        };
        let full = stats.render_prometheus(&gauges, 1024);
        let mut rest = full.lines();
        for line in text
            .lines()
            .filter(|l| !l.starts_with("miohttpd_syscalls_total"))
        {
            assert!(rest.any(|l| l == line), "{line} not in order in\n{full}");
        }
    }

    #[test]
    fn the_format_checker_catches_what_it_is_for() {
        let good = "# HELP miohttpd_a a\n# TYPE miohttpd_a counter\nmiohttpd_a 1\n";
        assert!(parse_exposition(good).is_ok());
        let bad = [
            "# HELP miohttpd_a a\n# TYPE miohttpd_a counter\nmiohttpd_a 1",
            "# TYPE miohttpd_a counter\nmiohttpd_a 1\n",
            "# HELP miohttpd_a a\n# TYPE miohttpd_a counter\nmiohttpd_b 1\n",
            "# HELP miohttpd_a a\n# TYPE miohttpd_a counter\nmiohttpd_a one\n",
            "# HELP miohttpd_a a\n# TYPE miohttpd_a counter\nmiohttpd_a{x=1} 1\n",
            "# HELP miohttpd_a a\n# TYPE miohttpd_a counter\nmiohttpd_a 1\nmiohttpd_a 1\n",
            "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"2\"} 3\nh_bucket{le=\"1\"} 3\n",
            "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\n",
            "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
        ];
        for text in bad {
            assert!(parse_exposition(text).is_err(), "{text}");
        }
    }

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        let table = [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 3),
            (5, 4),
            (8, 4),
            (9, 5),
        ];
        for (events, bucket) in table {
            assert_eq!(EventsHistogram::bucket(events), bucket, "{events}");
        }
        assert_eq!(EventsHistogram::bucket(usize::MAX), 31);
    }

    #[test]
    fn syscalls_sum_every_syscall_counter() {
        let stats = Stats {
            polls: 1,
            accept_calls: 2,
            setsockopts: 4,
            registrations: 8,
            closes: 16,
            shutdowns: 32,
            reads: 64,
            writes: 128,
            pipe_reads: 256,
            pipe_closes: 512,
            process_syscalls: 1024,
            log_writes: 2048,
            // Not syscalls of their own.
            accepts: 1 << 20,
            events: 1 << 20,
            short_reads: 1 << 20,
            requests: 1 << 20,
            ..Stats::default()
        };
        assert_eq!(stats.syscalls(), 4095);
    }

    #[test]
    fn summary_line_gives_rates_over_the_interval() {
        let earlier = Stats {
            requests: 100,
            polls: 10,
            events: 10,
            reads: 100,
            writes: 100,
            ..Stats::default()
        };
        let now = Stats {
            requests: 2100,
            polls: 110,
            events: 3810,
            reads: 2100,
            writes: 2100,
            bytes_in: 2_600_000,
            bytes_out: 1500,
            ..Stats::default()
        };
        let line = now.summary_line(&earlier, Duration::from_secs(2), 12);
        assert_eq!(
            line,
            "miohttpd: stats: conns=12 req/s=1000 syscalls/req=2.05 events/poll=38.00 \
             in=1.3MB/s out=750B/s\n"
        );
        let idle = earlier.summary_line(&earlier, Duration::from_secs(1), 0);
        assert!(
            idle.contains("req/s=0 syscalls/req=- events/poll=-"),
            "{idle}"
        );
    }
}
