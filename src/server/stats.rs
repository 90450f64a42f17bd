//! What the loop counts about its own work: plain integers bumped beside each syscall, so
//! counting costs an add, not a lock or an atomic.

/// Counters since start. Each syscall counter is bumped right where the syscall is made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub polls: u64,
    pub events: u64,
    pub accepts: u64,
    /// Connections closed (their fd closed by the drop).
    pub closes: u64,
    pub reads: u64,
    pub short_reads: u64,
    pub writes: u64,
    pub vectored_writes: u64,
    /// Writes whose bytes wait for the close right after, to leave with the FIN.
    pub corked_writes: u64,
    pub would_blocks: u64,
    pub shutdowns: u64,
    /// Reads from child pipes.
    pub pipe_reads: u64,
    pub setsockopts: u64,
    pub requests: u64,
    /// Connections over `--max-connections`, answered 503 and closed.
    pub refused: u64,
    /// Times accepting paused because the process was out of file descriptors.
    pub accept_pauses: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What is open right now, beside the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub connections: u64,
    pub parked: u64,
    pub commands_running: u64,
}

impl Stats {
    /// The counters and gauges in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, gauges: &Gauges) -> String {
        let counters: [(&str, &str, u64); 19] = [
            (
                "polls_total",
                "poll(2) waits (epoll_wait, kevent)",
                self.polls,
            ),
            ("events_total", "readiness events handled", self.events),
            ("accepts_total", "connections accepted", self.accepts),
            ("closes_total", "connections closed", self.closes),
            ("reads_total", "read(2) calls on client sockets", self.reads),
            (
                "short_reads_total",
                "reads that returned less than asked",
                self.short_reads,
            ),
            (
                "writes_total",
                "write(2), writev(2) and sendmsg(2) calls on client sockets",
                self.writes,
            ),
            (
                "vectored_writes_total",
                "writes of two buffers in one writev(2)",
                self.vectored_writes,
            ),
            (
                "corked_writes_total",
                "writes held to leave with the FIN (MSG_MORE)",
                self.corked_writes,
            ),
            (
                "would_blocks_total",
                "reads and writes that found the socket not ready",
                self.would_blocks,
            ),
            (
                "shutdowns_total",
                "shutdown(2) calls (lingering closes)",
                self.shutdowns,
            ),
            (
                "pipe_reads_total",
                "read(2) calls on streamed commands' pipes",
                self.pipe_reads,
            ),
            ("setsockopts_total", "setsockopt(2) calls", self.setsockopts),
            ("requests_total", "request heads parsed", self.requests),
            (
                "refused_connections_total",
                "connections over the limit, answered 503 and closed",
                self.refused,
            ),
            (
                "accept_pauses_total",
                "accept pauses for want of file descriptors",
                self.accept_pauses,
            ),
            (
                "received_bytes_total",
                "bytes read from clients",
                self.bytes_in,
            ),
            (
                "sent_bytes_total",
                "bytes written to clients",
                self.bytes_out,
            ),
            (
                "syscalls_total",
                "the syscalls above, together",
                self.syscalls(),
            ),
        ];
        let gauges: [(&str, &str, u64); 3] = [
            ("connections", "connections open", gauges.connections),
            ("parked_waiters", "long-poll waiters parked", gauges.parked),
            (
                "commands_running",
                "streamed commands running or being ended",
                gauges.commands_running,
            ),
        ];
        let mut out = String::with_capacity(2048);
        for (kind, rows) in [("counter", &counters[..]), ("gauge", &gauges[..])] {
            for (name, help, value) in rows {
                out.push_str(&format!(
                    "# HELP miohttpd_{name} {help}\n# TYPE miohttpd_{name} {kind}\nmiohttpd_{name} {value}\n"
                ));
            }
        }
        out
    }

    /// The syscalls the loop counts, summed (closes are close(2) calls made by the drop).
    pub fn syscalls(&self) -> u64 {
        self.polls
            + self.accepts
            + self.closes
            + self.reads
            + self.writes
            + self.shutdowns
            + self.pipe_reads
            + self.setsockopts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_value_for_every_metric() {
        let stats = Stats {
            reads: 7,
            writes: 3,
            ..Stats::default()
        };
        let text = stats.render_prometheus(&Gauges {
            connections: 2,
            ..Gauges::default()
        });
        assert!(text.contains("# TYPE miohttpd_reads_total counter\nmiohttpd_reads_total 7\n"));
        assert!(text.contains("miohttpd_syscalls_total 10\n"));
        assert!(text.contains("# TYPE miohttpd_connections gauge\nmiohttpd_connections 2\n"));
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, 22);
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP")).count(),
            samples
        );
    }
}
