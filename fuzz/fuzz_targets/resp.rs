//! Fuzz target `resp`: the RESP2 reply `Decoder` fed arbitrary bytes in arbitrary pieces must
//! decode the same replies and end the same way (waiting, or the same error after the same
//! replies) as one feed of the whole input; never hold more than one unfinished element plus
//! the last piece; and every reply it accepts, written back as RESP, decodes to itself.
//!
//! Input: payload, then two control bytes: the limits (below 0x80 the defaults; else small
//! limits derived from the byte, so every limit check is reached with short inputs), then how
//! to cut the payload into reads (see `cut`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use miohttpd::redis::resp::{Decoder, Limits, RespError, Value};
use miohttpd_fuzz::{cut, take_controls};

fuzz_target!(|data: &[u8]| {
    let Some(([limits_control, cut_control], payload)) = take_controls::<2>(data) else {
        return;
    };
    let limits = if limits_control < 0x80 {
        Limits::default()
    } else {
        let b = usize::from(limits_control & 0x7f);
        Limits {
            max_bulk: b % 17,
            max_array: b % 5 + 1,
            max_depth: b % 3 + 1,
            max_line: b % 23 + 1,
            max_reply: 16 + b,
        }
    };
    let whole = feed(limits, &[payload]);
    let split = feed(limits, &cut(payload, cut_control, true));
    assert_eq!(split, whole, "split feed differs from the whole feed");

    for value in &whole.0 {
        let mut wire = Vec::new();
        encode(value, &mut wire);
        let mut decoder = Decoder::new(limits);
        decoder.feed(&wire);
        assert_eq!(decoder.next(), Ok(Some(value.clone())), "re-encoded reply");
        assert!(!decoder.is_mid_reply(), "re-encoded reply left bytes");
    }
});

fn feed(limits: Limits, pieces: &[&[u8]]) -> (Vec<Value>, Option<RespError>) {
    let mut decoder = Decoder::new(limits);
    let mut values = Vec::new();
    // One unfinished element: a line up to its limit, or a bulk string with its header.
    let held = limits.max_line + 3 + limits.max_bulk + 2;
    for piece in pieces {
        decoder.feed(piece);
        loop {
            match decoder.next() {
                Ok(Some(v)) => values.push(v),
                Ok(None) => break,
                Err(e) => return (values, Some(e)),
            }
        }
        assert!(
            decoder.buffered() <= held,
            "holds {} bytes, more than one element ({held})",
            decoder.buffered()
        );
    }
    (values, None)
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Simple(b) => line(out, b'+', b),
        Value::Error(b) => line(out, b'-', b),
        Value::Integer(n) => line(out, b':', n.to_string().as_bytes()),
        Value::Bulk(b) => {
            line(out, b'$', b.len().to_string().as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Array(items) => {
            line(out, b'*', items.len().to_string().as_bytes());
            for item in items {
                encode(item, out);
            }
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    out.push(kind);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}
