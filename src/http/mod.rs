//! Sans-IO HTTP/1.1: request heads, body decoders and response encoding over byte buffers.
//! Nothing here touches a socket; the server feeds bytes in and takes bytes out.

pub mod body;
pub mod date;
pub mod error;
pub mod head;
pub mod response;

pub use body::{BodyDecoder, Decoded};
pub use date::DateCache;
pub use error::{ChunkError, RequestError};
pub use head::{
    header_storage, parse_head, Framing, Head, HeadLimits, HeadScanner, HeadSpan, Version,
};
pub use response::Response;

/// The sans-IO core as the connection drives it: heads found by the scanner, parsed, then
/// bodies decoded, over a byte stream cut at arbitrary points.
#[cfg(test)]
mod split_property {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Message {
        method: String,
        path: String,
        body: Vec<u8>,
    }

    #[derive(Debug, Clone)]
    struct Wire {
        /// The request-target sent; `message.path` is what the router must see of it.
        target: String,
        message: Message,
        /// Chunk sizes for a chunked body; None for Content-Length.
        chunks: Option<Vec<usize>>,
        extra_headers: Vec<(String, String)>,
        trailer: bool,
    }

    const EXTENSIONS: [&str; 5] = ["", ";ext=v", " \t;a=\"q\\\"x; y\"", ";a ; b = c", ";n=\"\""];

    fn encode(wire: &Wire, out: &mut Vec<u8>) {
        let m = &wire.message;
        let head = format!("{} {} HTTP/1.1\r\nHost: x\r\n", m.method, wire.target);
        out.extend_from_slice(head.as_bytes());
        for (name, value) in &wire.extra_headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        match &wire.chunks {
            None => {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", m.body.len()).as_bytes(),
                );
                out.extend_from_slice(&m.body);
            }
            Some(sizes) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &m.body[..];
                let mut sizes = sizes.iter().cycle();
                while !rest.is_empty() {
                    let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
                    // Every form of chunk-ext the grammar allows (RFC 9112 §7.1.1).
                    let extension = EXTENSIONS[n % EXTENSIONS.len()];
                    out.extend_from_slice(format!("{n:x}{extension}\r\n").as_bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                out.extend_from_slice(b"0\r\n");
                if wire.trailer {
                    out.extend_from_slice(b"X-Trailer: done\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    enum Reading {
        Head(HeadScanner),
        Body(BodyDecoder, Message),
    }

    /// Feeds `pieces` in order, as reads would deliver them; returns the messages read.
    fn read_stream(pieces: &[&[u8]]) -> Vec<Message> {
        let limits = HeadLimits::default();
        let mut buffer = Vec::new();
        let mut messages = Vec::new();
        let mut reading = Reading::Head(HeadScanner::default());
        for piece in pieces {
            buffer.extend_from_slice(piece);
            loop {
                match &mut reading {
                    Reading::Head(scanner) => {
                        let Some(span) = scanner.scan(&buffer, &limits).expect("valid head") else {
                            break;
                        };
                        let mut storage = header_storage();
                        let head = parse_head(&buffer[span.skip..span.end], &mut storage, &limits)
                            .expect("valid head");
                        let message = Message {
                            method: head.method.to_string(),
                            path: head.path.to_string(),
                            body: Vec::new(),
                        };
                        let decoder = BodyDecoder::new(head.framing, limits.max_head_size);
                        buffer.drain(..span.end);
                        reading = Reading::Body(decoder, message);
                    }
                    Reading::Body(decoder, message) => {
                        let step = decoder.decode(&buffer).expect("valid body");
                        message.body.extend_from_slice(step.data);
                        let (consumed, done) = (step.consumed, step.done);
                        buffer.drain(..consumed);
                        if done {
                            let finished = std::mem::replace(
                                &mut reading,
                                Reading::Head(HeadScanner::default()),
                            );
                            if let Reading::Body(_, message) = finished {
                                messages.push(message);
                            }
                        } else if consumed == 0 {
                            break;
                        }
                    }
                }
            }
        }
        assert!(buffer.is_empty(), "bytes left over: {buffer:?}");
        messages
    }

    fn wire_strategy() -> impl Strategy<Value = Wire> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
            "/[a-z0-9]{0,8}(\\?[a-z=&]{0,8})?",
            vec(any::<u8>(), 0..200),
            prop::option::of(vec(1usize..64, 1..6)),
            vec(("X-[A-Za-z]{1,8}", "[!-~]([ -~]{0,20}[!-~])?"), 0..4),
            any::<bool>(),
        )
            .prop_map(|(method, target, body, chunks, extra_headers, trailer)| {
                // The router sees the path without the query.
                let path = target.split('?').next().unwrap_or_default().to_string();
                Wire {
                    target,
                    message: Message {
                        method: method.to_string(),
                        path,
                        body,
                    },
                    chunks,
                    extra_headers,
                    trailer,
                }
            })
    }

    proptest! {
        #[test]
        fn any_split_of_a_request_stream_reads_the_same_requests(
            wires in vec(wire_strategy(), 1..6),
            cuts in vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let mut stream = Vec::new();
            for wire in &wires {
                encode(wire, &mut stream);
            }
            let expected: Vec<Message> = wires.iter().map(|w| w.message.clone()).collect();
            prop_assert_eq!(&read_stream(&[&stream]), &expected);

            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for at in points {
                pieces.push(&stream[from..at]);
                from = at;
            }
            pieces.push(&stream[from..]);
            prop_assert_eq!(&read_stream(&pieces), &expected);
        }

        #[test]
        fn one_byte_per_read_reads_the_same_requests(wires in vec(wire_strategy(), 1..3)) {
            let mut stream = Vec::new();
            for wire in &wires {
                encode(wire, &mut stream);
            }
            let pieces: Vec<&[u8]> = stream.chunks(1).collect();
            let expected: Vec<Message> = wires.iter().map(|w| w.message.clone()).collect();
            prop_assert_eq!(read_stream(&pieces), expected);
        }
    }
}
