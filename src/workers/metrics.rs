//! `/metrics` for the whole server when it runs as workers: the supervisor asks every worker
//! for its counters over the bus and merges them here with its own (pure text in, text out).
//! Each series appears once as the server's total (no `worker` label, so dashboards built on
//! one process keep working), once per worker with a `worker="i"` label, so reuseport
//! imbalance shows directly, and once as `worker="supervisor"` for the series the supervisor
//! has: its syscalls, wake-ups, events and admin connections
//! (`Stats::render_supervisor_prometheus`). The total is then what all the server's processes
//! did; requests, bytes and responses are the workers' alone.

use std::collections::HashMap;

use crate::server::stats::SummaryCounters;

/// Whose a labelled value is: the `worker` label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    Worker(u16),
    Supervisor,
}

/// A series' total and its value text on each process.
type Values<'a> = (f64, Vec<(Process, &'a str)>);

/// Merges the workers' Prometheus texts (`(worker, text)`) and the supervisor's own
/// (`supervisor`, last): comments once, then for every series its total and its value on each
/// process, family by family in the first text's order. A series the supervisor's text has
/// not is the workers' alone.
pub fn merge(texts: &[(u16, String)], supervisor: &str) -> String {
    let mut order: Vec<&str> = Vec::new();
    // series -> (sum, per-process values)
    let mut series: HashMap<&str, Values<'_>> = HashMap::new();
    let workers = texts
        .iter()
        .map(|(worker, text)| (Process::Worker(*worker), text.as_str()));
    for (process, text) in workers.chain([(Process::Supervisor, supervisor)]) {
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
            entry.1.push((process, value));
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
        for (process, value) in values {
            out.push_str(&with_worker(key, *process));
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

/// `name{a="b"}` -> `name{worker="3",a="b"}`; `name` -> `name{worker="supervisor"}`.
fn with_worker(key: &str, process: Process) -> String {
    let worker = match process {
        Process::Worker(index) => index.to_string(),
        Process::Supervisor => "supervisor".to_string(),
    };
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
        let merged = merge(&[(0, a.into()), (1, b.into())], "");
        assert_eq!(
            merged,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total 7\nx_total{worker=\"0\"} 3\n\
             x_total{worker=\"1\"} 4\nh_bucket{le=\"1\"} 2\nh_bucket{worker=\"0\",le=\"1\"} 2\n\
             h_bucket{worker=\"1\",le=\"1\"} 0\n"
        );
    }

    #[test]
    fn the_supervisors_series_are_labelled_and_in_the_totals() {
        let worker = "# HELP s_total S.\n# TYPE s_total counter\ns_total 3\n\
                      # HELP r_total R.\n# TYPE r_total counter\nr_total 5\n\
                      h_bucket{le=\"1\"} 2\n";
        let supervisor = "# HELP s_total S.\n# TYPE s_total counter\ns_total 10\n\
                          h_bucket{le=\"1\"} 1\n";
        let merged = merge(&[(0, worker.into()), (1, worker.into())], supervisor);
        assert_eq!(
            merged,
            "# HELP s_total S.\n# TYPE s_total counter\ns_total 16\ns_total{worker=\"0\"} 3\n\
             s_total{worker=\"1\"} 3\ns_total{worker=\"supervisor\"} 10\n\
             # HELP r_total R.\n# TYPE r_total counter\nr_total 10\nr_total{worker=\"0\"} 5\n\
             r_total{worker=\"1\"} 5\nh_bucket{le=\"1\"} 5\nh_bucket{worker=\"0\",le=\"1\"} 2\n\
             h_bucket{worker=\"1\",le=\"1\"} 2\nh_bucket{worker=\"supervisor\",le=\"1\"} 1\n"
        );
        // With no worker answering, the supervisor's series are the server's.
        assert_eq!(
            merge(&[], "s_total 10\n"),
            "s_total 10\ns_total{worker=\"supervisor\"} 10\n"
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
        let merged = merge(&[(0, "novalue\nx 1.5\n".into()), (1, "x 1\n".into())], "");
        assert_eq!(merged, "x 2.5\nx{worker=\"0\"} 1.5\nx{worker=\"1\"} 1\n");
    }
}
