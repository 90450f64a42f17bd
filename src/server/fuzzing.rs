//! One connection of the real server driven over scripted bytes instead of a socket: what
//! the fuzz targets and the split property test call. Not part of the stable API.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use mio::Token;

use super::access_log::AccessLog;
use super::buffers::BufferPool;
use super::child::Children;
use super::conn::{Conn, Ctx, Next, Readiness};
use super::stats::Stats;
use super::syscalls::Poller;
use super::transport::{Counted, InMemory, Transport};
use crate::comet::Comet;
use crate::config::Config;
use crate::handlers::builtin_router;
use crate::http::DateCache;

/// Input handed out one chunk per readable event; every byte written is kept.
#[derive(Default)]
struct Scripted {
    chunk: VecDeque<u8>,
    eof: bool,
    written: Vec<u8>,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunk.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        self.chunk.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Scripted {
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl InMemory for Scripted {}

/// Feeds `chunks` to one connection (builtin routes, default config, a fixed `Date`), one
/// chunk per readable event, then the client's EOF, and returns every byte the server wrote.
/// Turns are bounded: a connection that keeps asking for more is a bug, reported by a panic.
pub fn serve_chunks(chunks: &[&[u8]]) -> Vec<u8> {
    let config = Config::default();
    let service = builtin_router(&config);
    let poll = Poller::new().expect("epoll_create");
    let mut pool = BufferPool::new(
        super::head_buffer_size(&config),
        config.body_buffer_size,
        config.output_high_water * 2,
    );
    let date = DateCache::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut stats = Stats::default();
    let mut comet = Comet::new(config.comet, 1);
    let mut children = Children::default();
    let mut log = AccessLog::off();
    let now = Instant::now();
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut conn = Conn::new(Counted::new(Scripted::default()), peer, now);

    let mut turn = |conn: &mut Conn<Scripted>, event: Readiness| -> Next {
        let mut ctx = Ctx {
            config: &config,
            service: &service,
            date: &date,
            pool: &mut pool,
            stats: &mut stats,
            comet: &mut comet,
            children: &mut children,
            registry: poll.registry(),
            log: &mut log,
            token: Token(0),
            now,
            draining: false,
        };
        let mut next = conn.on_ready(event, &mut ctx);
        let mut turns = 0;
        while next == Next::Yield {
            turns += 1;
            assert!(turns < 1_000_000, "a connection yielded without end");
            next = conn.on_ready(Readiness::default(), &mut ctx);
        }
        // Deliveries of a publish have no other connection to reach here.
        while ctx.comet.take_delivery().is_some() {}
        next
    };

    let mut next = Next::Wait;
    for chunk in chunks {
        conn.stream_mut().script().chunk.extend(chunk.iter());
        let readable = Readiness {
            readable: true,
            hung_up: false,
        };
        next = turn(&mut conn, readable);
        if next == Next::Close {
            break;
        }
    }
    if next != Next::Close {
        conn.stream_mut().script().eof = true;
        let hung_up = Readiness {
            readable: true,
            hung_up: true,
        };
        turn(&mut conn, hung_up);
    }
    std::mem::take(&mut conn.stream_mut().script().written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_requests_get_their_answers_in_order() {
        let whole: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n\
            POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
            GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
        let out = serve_chunks(&[whole]);
        let text = String::from_utf8(out).unwrap();
        let statuses: Vec<&str> = text
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| &text[at + 9..at + 12])
            .collect();
        assert_eq!(statuses, ["200", "200", "404"]);
        assert!(text.contains("Hello, World!"));
        assert!(
            text.contains("900150983cd24fb0d6963f7d28e17f72"),
            "md5 of abc"
        );
        let split: Vec<&[u8]> = whole.chunks(7).collect();
        assert_eq!(serve_chunks(&split), text.as_bytes());
    }

    #[test]
    fn garbage_gets_a_400_and_nothing_after_it() {
        let out = serve_chunks(&[b"\x00\x01 nonsense\r\n\r\nGET / HTTP/1.1\r\n\r\n"]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    }
}
