//! `GET /metrics`: the loop's own counters in the Prometheus text format, and what they
//! prove about the loop (pipelined answers share one write, or not with `--coalesce off`),
//! responses by status class, the gauges, and the events-per-wake-up histogram.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Server, GET_PLAINTEXT, IO_TIMEOUT};

/// The value of one sample, e.g. `miohttpd_writes_total` or
/// `miohttpd_responses_total{class="2xx"}`.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

fn metrics(server: &Server) -> String {
    let mut conn = server.connect();
    conn.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{response:?}"
    );
    response.text().to_string()
}

#[test]
fn every_metric_has_help_type_and_one_sample() {
    let server = Server::start();
    let text = metrics(&server);
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(samples.len() >= 20, "{text}");
    for line in &samples {
        let series = line.split(' ').next().unwrap_or_default();
        let name = series.split('{').next().unwrap_or_default();
        // A histogram's samples belong to the family without their suffix.
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|family| text.contains(&format!("# TYPE {family} histogram\n")))
            .unwrap_or(name);
        assert!(name.starts_with("miohttpd_"), "{line}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    // The connection asking is open while the answer is rendered.
    assert_eq!(sample(&text, "miohttpd_connections"), 1);
}

/// Every family's HELP and TYPE, in order: the names dashboards and alerts are written
/// against. Counters are declared once in a table (`src/server/stats.rs`); this pins what the
/// table renders.
const FAMILIES: &str = "\
# HELP miohttpd_polls_total poll(2) waits (epoll_wait, kevent)
# TYPE miohttpd_polls_total counter
# HELP miohttpd_events_total readiness events handled
# TYPE miohttpd_events_total counter
# HELP miohttpd_accepts_total connections accepted
# TYPE miohttpd_accepts_total counter
# HELP miohttpd_accept_calls_total accept(2) calls, those finding no connection included
# TYPE miohttpd_accept_calls_total counter
# HELP miohttpd_closes_total sockets closed (close(2) by the drop)
# TYPE miohttpd_closes_total counter
# HELP miohttpd_reads_total read(2) calls on client sockets
# TYPE miohttpd_reads_total counter
# HELP miohttpd_short_reads_total reads that returned less than asked
# TYPE miohttpd_short_reads_total counter
# HELP miohttpd_writes_total write(2), writev(2) and sendmsg(2) calls on client sockets
# TYPE miohttpd_writes_total counter
# HELP miohttpd_vectored_writes_total writes of two buffers in one writev(2)
# TYPE miohttpd_vectored_writes_total counter
# HELP miohttpd_corked_writes_total writes held to leave with the FIN (MSG_MORE)
# TYPE miohttpd_corked_writes_total counter
# HELP miohttpd_would_blocks_total reads and writes that found the socket not ready
# TYPE miohttpd_would_blocks_total counter
# HELP miohttpd_shutdowns_total shutdown(2) calls (lingering closes)
# TYPE miohttpd_shutdowns_total counter
# HELP miohttpd_pipe_reads_total read(2) calls on streamed commands' pipes
# TYPE miohttpd_pipe_reads_total counter
# HELP miohttpd_pipe_closes_total close(2) calls on streamed commands' pipes
# TYPE miohttpd_pipe_closes_total counter
# HELP miohttpd_setsockopts_total setsockopt(2) calls on accepted sockets
# TYPE miohttpd_setsockopts_total counter
# HELP miohttpd_registrations_total epoll_ctl(2) calls: listeners, connections, pipes
# TYPE miohttpd_registrations_total counter
# HELP miohttpd_process_syscalls_total syscalls for streamed commands: spawn (estimated), wait4, kill
# TYPE miohttpd_process_syscalls_total counter
# HELP miohttpd_log_writes_total write(2) calls of the access log and the stats summary
# TYPE miohttpd_log_writes_total counter
# HELP miohttpd_requests_total request heads parsed
# TYPE miohttpd_requests_total counter
# HELP miohttpd_refused_connections_total connections over the limit, answered 503 and closed
# TYPE miohttpd_refused_connections_total counter
# HELP miohttpd_accept_pauses_total accept pauses for want of file descriptors
# TYPE miohttpd_accept_pauses_total counter
# HELP miohttpd_received_bytes_total bytes read from clients
# TYPE miohttpd_received_bytes_total counter
# HELP miohttpd_sent_bytes_total bytes written to clients
# TYPE miohttpd_sent_bytes_total counter
# HELP miohttpd_syscalls_total every syscall the loop makes, summed
# TYPE miohttpd_syscalls_total counter
# HELP miohttpd_responses_total final responses by status class
# TYPE miohttpd_responses_total counter
# HELP miohttpd_connections connections open
# TYPE miohttpd_connections gauge
# HELP miohttpd_parked_waiters long-poll waiters parked
# TYPE miohttpd_parked_waiters gauge
# HELP miohttpd_subscribed_streams event-stream subscribers
# TYPE miohttpd_subscribed_streams gauge
# HELP miohttpd_streaming_connections connections streaming a command's output
# TYPE miohttpd_streaming_connections gauge
# HELP miohttpd_commands_running streamed commands running or being ended
# TYPE miohttpd_commands_running gauge
# HELP miohttpd_events_per_poll readiness events returned per poll wake-up
# TYPE miohttpd_events_per_poll histogram
";

#[test]
fn the_families_their_help_and_their_order_stay_as_published() {
    let server = Server::start();
    let text = metrics(&server);
    let families: Vec<&str> = text.lines().filter(|l| l.starts_with("# ")).collect();
    let expected: Vec<&str> = FAMILIES.lines().collect();
    assert_eq!(families, expected, "{text}");
}

#[test]
fn pipelined_requests_are_answered_with_one_write() {
    const PIPELINED: usize = 50;
    let server = Server::start();
    let before = metrics(&server);
    let mut conn = server.connect();
    conn.send(&GET_PLAINTEXT.repeat(PIPELINED));
    for i in 0..PIPELINED {
        let response = conn.read_response();
        assert_eq!(response.status, 200, "response {i}: {response:?}");
    }
    let after = metrics(&server);
    let delta = |name| sample(&after, name) - sample(&before, name);
    // The first /metrics answer's own write, then the fifty answers together.
    assert_eq!(delta("miohttpd_requests_total"), PIPELINED as u64 + 1);
    assert!(
        delta("miohttpd_writes_total") <= 2,
        "{} writes for {PIPELINED} pipelined requests: answers were not coalesced",
        delta("miohttpd_writes_total")
    );
    assert_eq!(delta("miohttpd_accepts_total"), 2);
}

#[test]
fn closed_connections_leave_the_gauge() {
    let server = Server::start();
    for _ in 0..5 {
        let mut conn = server.connect();
        conn.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(conn.read_response().status, 200);
        conn.expect_eof();
    }
    let text = metrics(&server);
    assert_eq!(sample(&text, "miohttpd_connections"), 1, "{text}");
    assert!(sample(&text, "miohttpd_closes_total") >= 5, "{text}");
}

#[test]
fn coalescing_off_writes_each_answer_alone() {
    const PIPELINED: usize = 50;
    let server = Server::start_with(&["--coalesce", "off"]);
    let before = metrics(&server);
    let mut conn = server.connect();
    conn.send(&GET_PLAINTEXT.repeat(PIPELINED));
    for i in 0..PIPELINED {
        let response = conn.read_response();
        assert_eq!(response.status, 200, "response {i}: {response:?}");
        assert_eq!(response.body, b"Hello, World!");
    }
    let after = metrics(&server);
    let delta = |name| sample(&after, name) - sample(&before, name);
    assert_eq!(delta("miohttpd_requests_total"), PIPELINED as u64 + 1);
    assert!(
        delta("miohttpd_writes_total") > PIPELINED as u64,
        "{} writes for {PIPELINED} pipelined requests and a /metrics answer",
        delta("miohttpd_writes_total")
    );
}

#[test]
fn responses_are_counted_by_status_class() {
    let server = Server::start();
    let before = metrics(&server);
    let mut conn = server.connect();
    let requests: [&[u8]; 5] = [
        GET_PLAINTEXT,
        GET_PLAINTEXT,
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"HEAD /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for request in requests {
        conn.send(request);
        if request.starts_with(b"HEAD") {
            assert_eq!(conn.read_head_response().status, 200);
        } else {
            conn.read_response();
        }
    }
    let mut bad = server.connect();
    bad.send(b"GET / HTTP/1.1\r\n\r\n"); // no Host: 400
    assert_eq!(bad.read_response().status, 400);
    let after = metrics(&server);
    let delta = |class: &str| {
        let name = format!("miohttpd_responses_total{{class=\"{class}\"}}");
        sample(&after, &name) - sample(&before, &name)
    };
    // The first /metrics answer is counted once it is encoded, after its own rendering.
    assert_eq!(delta("2xx"), 3 + 1);
    assert_eq!(delta("3xx"), 0);
    assert_eq!(delta("4xx"), 3);
    assert_eq!(delta("5xx"), 0);
}

/// Polls /metrics until `done` holds for it, for at most IO_TIMEOUT.
fn metrics_until(server: &Server, what: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = metrics(server);
        if done(&text) {
            return text;
        }
        assert!(started.elapsed() < IO_TIMEOUT, "never {what}:\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gauges_follow_parked_subscribed_and_streaming_connections() {
    let server = Server::start_with(&["--exec", "slow=echo started; exec sleep 30"]);
    let mut waiter = server.connect();
    waiter.send(b"GET /wait/gauges HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut subscriber = server.connect();
    subscriber.send(b"GET /events/gauges HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(subscriber.read_head_response().status, 200);
    let mut streamer = server.connect();
    streamer.send(b"GET /stream/slow HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(streamer.read_head_response().status, 200);
    assert_eq!(streamer.read_chunk(), b"started\n");

    let text = metrics_until(&server, "parked", |t| {
        sample(t, "miohttpd_parked_waiters") == 1
    });
    assert_eq!(sample(&text, "miohttpd_subscribed_streams"), 1, "{text}");
    assert_eq!(sample(&text, "miohttpd_streaming_connections"), 1, "{text}");
    assert_eq!(sample(&text, "miohttpd_commands_running"), 1, "{text}");
    assert_eq!(sample(&text, "miohttpd_connections"), 4, "{text}");

    drop((waiter, subscriber, streamer));
    let text = metrics_until(&server, "all gone", |t| {
        sample(t, "miohttpd_connections") == 1 && sample(t, "miohttpd_commands_running") == 0
    });
    assert_eq!(sample(&text, "miohttpd_parked_waiters"), 0, "{text}");
    assert_eq!(sample(&text, "miohttpd_subscribed_streams"), 0, "{text}");
    assert_eq!(sample(&text, "miohttpd_streaming_connections"), 0, "{text}");
    // The command cost its spawn, at least one wait4 and one kill, and its pipe a close.
    assert!(
        sample(&text, "miohttpd_process_syscalls_total") >= 16,
        "{text}"
    );
    assert_eq!(sample(&text, "miohttpd_pipe_closes_total"), 1, "{text}");
}

#[test]
fn the_histogram_counts_every_wake_up_up_to_events_per_poll() {
    let server = Server::start_with(&["--events-per-poll", "100"]);
    for _ in 0..5 {
        server.assert_still_serves();
    }
    let text = metrics(&server);
    let count = sample(&text, "miohttpd_events_per_poll_count");
    assert!(
        count >= 10,
        "every request took at least two wake-ups:\n{text}"
    );
    assert_eq!(
        sample(&text, "miohttpd_events_per_poll_bucket{le=\"100\"}"),
        count
    );
    assert_eq!(
        sample(&text, "miohttpd_events_per_poll_bucket{le=\"+Inf\"}"),
        count
    );
    assert!(sample(&text, "miohttpd_events_per_poll_bucket{le=\"64\"}") <= count);
    assert!(
        !text.contains("le=\"128\""),
        "no bucket above --events-per-poll:\n{text}"
    );
    // Every event of a wake-up is in the sum; the events counter also has this request's.
    assert!(
        sample(&text, "miohttpd_events_per_poll_sum") <= sample(&text, "miohttpd_events_total")
    );
    assert!(
        sample(&text, "miohttpd_events_per_poll_sum") >= count / 2,
        "{text}"
    );
}
