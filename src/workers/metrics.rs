//! `/metrics` for the whole server when it runs as workers: the supervisor asks every worker
//! for its counters over the bus and merges them here (pure text in, text out). Each series
//! appears once as the server's total (no `worker` label, so dashboards built on one process
//! keep working) and once per worker with a `worker="i"` label, so reuseport imbalance shows
//! directly.

use std::collections::HashMap;

use crate::server::stats::SummaryCounters;

/// A series' total and its value text on each worker.
type Values<'a> = (f64, Vec<(u16, &'a str)>);

/// Merges the workers' Prometheus texts (`(worker, text)`): comments once, then for every
/// series its total and its value on each worker, family by family in the first text's order.
pub fn merge(texts: &[(u16, String)]) -> String {
    let mut order: Vec<&str> = Vec::new();
    // series -> (sum, per-worker values)
    let mut series: HashMap<&str, Values<'_>> = HashMap::new();
    for (worker, text) in texts {
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if line.starts_with('#') {
                if !series.contains_key(line) {
                    series.insert(line, (0.0, Vec::new()));
                    order.push(line);
                }
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let entry = series.entry(key).or_insert_with(|| {
                order.push(key);
                (0.0, Vec::new())
            });
            entry.0 += value.parse::<f64>().unwrap_or(0.0);
            entry.1.push((*worker, value));
        }
    }
    let mut out = String::new();
    for key in order {
        if key.starts_with('#') {
            out.push_str(key);
            out.push('\n');
            continue;
        }
        let (sum, values) = &series[key];
        out.push_str(&format!("{key} {}\n", show(*sum)));
        for (worker, value) in values {
            out.push_str(&with_worker(key, *worker));
            out.push(' ');
            out.push_str(value);
            out.push('\n');
        }
    }
    out
}

/// What a `--stats-interval` line needs from one worker's metrics text: its counters and
/// its open connections (a series missing or unreadable counts as zero).
pub fn summary_counters(text: &str) -> (SummaryCounters, u64) {
    let mut counters = SummaryCounters::default();
    let mut connections = 0;
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(name) = key.strip_prefix("miohttpd_") else {
            continue;
        };
        let slot = match name {
            "requests_total" => &mut counters.requests,
            "syscalls_total" => &mut counters.syscalls,
            "events_total" => &mut counters.events,
            "polls_total" => &mut counters.polls,
            "received_bytes_total" => &mut counters.bytes_in,
            "sent_bytes_total" => &mut counters.bytes_out,
            "connections" => &mut connections,
            _ => continue,
        };
        *slot = value.parse().unwrap_or(0);
    }
    (counters, connections)
}

/// `name{a="b"}` -> `name{worker="3",a="b"}`; `name` -> `name{worker="3"}`.
fn with_worker(key: &str, worker: u16) -> String {
    match key.split_once('{') {
        Some((name, labels)) => format!("{name}{{worker=\"{worker}\",{labels}"),
        None => format!("{key}{{worker=\"{worker}\"}}"),
    }
}

/// Counters are integers: shown without a fraction when they are one.
fn show(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_then_each_worker_family_by_family() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\nh_bucket{le=\"1\"} 2\n";
        let b = "# HELP x_total X.\n# TYPE x_total counter\nx_total 4\nh_bucket{le=\"1\"} 0\n";
        let merged = merge(&[(0, a.into()), (1, b.into())]);
        assert_eq!(
            merged,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total 7\nx_total{worker=\"0\"} 3\n\
             x_total{worker=\"1\"} 4\nh_bucket{le=\"1\"} 2\nh_bucket{worker=\"0\",le=\"1\"} 2\n\
             h_bucket{worker=\"1\",le=\"1\"} 0\n"
        );
    }

    #[test]
    fn a_summary_reads_its_counters_from_the_text() {
        let text = "# TYPE miohttpd_requests_total counter\nmiohttpd_requests_total 40\n\
                    miohttpd_syscalls_total 120\nmiohttpd_events_total 9\nmiohttpd_polls_total 3\n\
                    miohttpd_received_bytes_total 4000\nmiohttpd_sent_bytes_total 8000\n\
                    miohttpd_connections 5\nmiohttpd_connections_max 7\njunk\n";
        let (counters, connections) = summary_counters(text);
        assert_eq!(connections, 5);
        let expected = SummaryCounters {
            requests: 40,
            syscalls: 120,
            events: 9,
            polls: 3,
            bytes_in: 4000,
            bytes_out: 8000,
        };
        assert_eq!(counters, expected);
    }

    #[test]
    fn junk_lines_are_skipped_not_fatal() {
        let merged = merge(&[(0, "novalue\nx 1.5\n".into()), (1, "x 1\n".into())]);
        assert_eq!(merged, "x 2.5\nx{worker=\"0\"} 1.5\nx{worker=\"1\"} 1\n");
    }
}
