//! `GET /metrics`: the loop's own counters in the Prometheus text format, and what they
//! prove about the loop (pipelined answers share one write).

mod common;

use common::{Server, GET_PLAINTEXT};

/// The value of one sample, e.g. `miohttpd_writes_total`.
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
        let name = line.split(' ').next().unwrap_or_default();
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
