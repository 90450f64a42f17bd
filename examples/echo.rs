//! A user-defined buffered handler: `POST /echo` answers with the request body, which is
//! collected whole under a 1 MiB limit (413 beyond it, decided before the body is read when
//! Content-Length says so).
//!
//! `cargo run --example echo -- --listen 127.0.0.1:8081`, then
//! `curl --data-binary @file localhost:8081/echo`.

use miohttpd::{Request, Response, Router};

const LIMIT: usize = 1 << 20;

fn main() {
    miohttpd::serve_from_args(|_config| {
        Router::new().buffered("POST", "/echo", LIMIT, |request: Request| {
            // The request is a plain owned value: its body moves into the response.
            Response::bytes(200, "application/octet-stream", request.body)
        })
    });
}
