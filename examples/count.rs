//! A user-defined streamed handler: `POST /count` counts the bytes and lines of a body of
//! any size as it arrives, holding nothing but two counters.
//!
//! `cargo run --example count -- --listen 127.0.0.1:8082`, then
//! `curl --data-binary @big.log localhost:8082/count`.

use miohttpd::{BodySink, Response, Router};

#[derive(Default)]
struct LineCounter {
    bytes: u64,
    lines: u64,
}

impl BodySink for LineCounter {
    fn data(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    }

    fn finish(self: Box<Self>) -> Response {
        Response::text(200, format!("{} {}\n", self.bytes, self.lines))
    }
}

fn main() {
    miohttpd::serve_from_args(|_config| {
        Router::new().streamed("POST", "/count", |_head| Box::<LineCounter>::default())
    });
}
