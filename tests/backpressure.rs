//! Load shapes that break servers that buffer without bound or lose track of connections: a
//! client pipelining tens of megabytes while not reading, hundreds of concurrent keep-alive
//! connections, and thousands of short connections. Only correctness and bounded memory are
//! asserted, never speed.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{md5_hex, post, Server, GET_PLAINTEXT};

const MAX_GROWTH_KIB: u64 = 32 * 1024;

#[test]
fn a_client_that_does_not_read_cannot_grow_server_memory() {
    // ~50 MB of 44-byte requests; unbounded buffering of their ~4x larger answers would cost
    // the server ~200 MB.
    const BATCH_REQUESTS: usize = 65_536 / GET_PLAINTEXT.len();
    const BATCHES: usize = 50_000_000 / (BATCH_REQUESTS * GET_PLAINTEXT.len());
    let batch = GET_PLAINTEXT.repeat(BATCH_REQUESTS);

    let server = Server::start();
    server.assert_still_serves();
    let before = server.memory();

    let mut conn = server.connect();
    let mut writer = conn.stream().try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let sender = {
        let written = Arc::clone(&written);
        thread::spawn(move || {
            for _ in 0..BATCHES {
                writer.write_all(&batch).expect("pipelining requests");
                written.fetch_add(batch.len(), Ordering::Relaxed);
            }
        })
    };

    // Wait until the server stops taking requests (the writer stalls) or takes them all.
    let mut last = usize::MAX;
    while !sender.is_finished() {
        thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let stalled = server.memory();
    let growth = stalled.rss_kib.saturating_sub(before.rss_kib);
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew {growth} KiB while the client did not read ({} bytes of requests taken): before {before:?}, now {stalled:?}",
        written.load(Ordering::Relaxed)
    );

    // Now read: every request gets exactly one answer, in order.
    for i in 0..BATCHES * BATCH_REQUESTS {
        let response = conn.read_response();
        assert!(
            response.status == 200 && response.body == b"Hello, World!",
            "response {i}: {response:?}"
        );
    }
    sender.join().expect("request writer");
    // The next answer must be to this request, not a stray extra one.
    conn.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let last = conn.read_response();
    assert!(last.status == 200 && last.closes(), "{last:?}");
    conn.expect_eof();

    let after = server.memory();
    let growth = after.hwm_kib.saturating_sub(before.hwm_kib);
    assert!(
        growth < MAX_GROWTH_KIB,
        "peak RSS grew {growth} KiB: before {before:?}, after {after:?}"
    );
}

#[test]
fn hundreds_of_concurrent_keep_alive_connections_are_all_served() {
    const CONNECTIONS: usize = 200;
    const ROUNDS: usize = 5;
    let server = Server::start();
    // All connections are open at once; each round writes to every one before reading any.
    let mut conns: Vec<_> = (0..CONNECTIONS).map(|_| server.connect()).collect();
    let body = |c: usize, round: usize| format!("connection {c} round {round}");
    for round in 0..ROUNDS {
        for (c, conn) in conns.iter_mut().enumerate() {
            if round % 2 == 0 {
                conn.send(GET_PLAINTEXT);
            } else {
                conn.send(&post("/md5", body(c, round).as_bytes()));
            }
        }
        for (c, conn) in conns.iter_mut().enumerate() {
            let response = conn.read_response();
            let expected = if round % 2 == 0 {
                "Hello, World!".to_string()
            } else {
                md5_hex(body(c, round).as_bytes())
            };
            assert_eq!(
                response.status, 200,
                "connection {c} round {round}: {response:?}"
            );
            assert_eq!(response.text(), expected, "connection {c} round {round}");
        }
    }
}

#[test]
fn thousands_of_short_connections_are_all_answered() {
    const THREADS: usize = 8;
    const CYCLES_PER_THREAD: usize = 250;
    let server = Server::start();
    let addr = server.addr();
    let clients: Vec<_> = (0..THREADS)
        .map(|_| {
            thread::spawn(move || {
                for cycle in 0..CYCLES_PER_THREAD {
                    let mut conn = common::Conn::connect(addr);
                    conn.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    let response = conn.read_response();
                    assert_eq!(response.status, 200, "cycle {cycle}: {response:?}");
                    assert_eq!(response.body, b"Hello, World!", "cycle {cycle}");
                    conn.expect_eof();
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    server.assert_still_serves();
}
