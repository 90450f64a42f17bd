//! What the fuzz targets share: how an input chooses its own read splits, a plain reference
//! chunked decoder to check the real one against, and a strict parser for the server's output.

use miohttpd::http::body::MAX_CHUNK_EXTENSION;
use miohttpd::http::{header_storage, parse_head, BodyDecoder, Framing, HeadScanner};
use miohttpd::Config;

/// Splits off the `N` control bytes at the end of a fuzz input; None when it is too short.
/// At the end, not the start, so that a seed is a plain request followed by its controls.
pub fn take_controls<const N: usize>(data: &[u8]) -> Option<([u8; N], &[u8])> {
    let at = data.len().checked_sub(N)?;
    let (payload, controls) = data.split_at(at);
    Some((controls.try_into().ok()?, payload))
}

/// Cuts `payload` into the pieces successive reads would deliver, as `control` chooses: 0
/// keeps it whole; otherwise piece lengths come from a xorshift sequence seeded by `control`,
/// each at most a maximum that the low five bits set and the high three scale (1 byte, so
/// `1` feeds a byte per read, to 496 KiB). With `allow_empty`, some pieces are empty (a
/// read that brought nothing new).
pub fn cut(payload: &[u8], control: u8, allow_empty: bool) -> Vec<&[u8]> {
    if control == 0 {
        return vec![payload];
    }
    let max_piece = usize::from(control & 0x1f).max(1) << (2 * (control >> 5));
    let mut state = u32::from(control).wrapping_mul(0x9e37_79b9) | 1;
    let mut pieces = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = if allow_empty {
            state as usize % (max_piece + 1)
        } else {
            state as usize % max_piece + 1
        };
        let len = len.min(rest.len());
        let (piece, tail) = rest.split_at(len);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// How a body ends when all of its input has been fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Complete after this many input bytes.
    Done {
        consumed: usize,
    },
    /// Still waiting for bytes; all of the input was used.
    NeedMore,
    Invalid,
}

/// Decodes `input` the way RFC 9112 §7.1 reads, with the server's strictness (CRLF only, no
/// obs-fold, no control bytes) and its limits, in one straightforward pass: the reference the
/// state machine must agree with, byte for byte.
pub fn reference_chunked(input: &[u8], max_trailer_size: usize) -> (Vec<u8>, Outcome) {
    let mut data = Vec::new();
    let outcome = reference_chunked_into(input, max_trailer_size, &mut data);
    (data, outcome)
}

fn reference_chunked_into(input: &[u8], max_trailer: usize, data: &mut Vec<u8>) -> Outcome {
    use Outcome::{Invalid, NeedMore};
    let mut at = 0;
    // Every byte look-up: NeedMore when the input ends there.
    macro_rules! byte {
        () => {
            match input.get(at) {
                Some(&b) => b,
                None => return NeedMore,
            }
        };
    }
    macro_rules! expect {
        ($want:expr) => {
            if byte!() != $want {
                return Invalid;
            }
            at += 1;
        };
    }
    loop {
        // chunk-size = 1*HEXDIG
        let mut size: u64 = 0;
        let mut digits = 0;
        while let Some(digit) = (byte!() as char).to_digit(16) {
            size = match size
                .checked_mul(16)
                .and_then(|s| s.checked_add(digit.into()))
            {
                Some(size) => size,
                None => return Invalid,
            };
            digits += 1;
            at += 1;
        }
        if digits == 0 {
            return Invalid;
        }
        // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), then
        // CRLF (RFC 9112 §7.1.1): every byte between the size and the CR counts against the
        // bound.
        let ext_start = at;
        macro_rules! take {
            () => {
                if at - ext_start >= MAX_CHUNK_EXTENSION {
                    return Invalid;
                }
                at += 1;
            };
        }
        macro_rules! bws {
            () => {{
                let mut any = false;
                while matches!(byte!(), b' ' | b'\t') {
                    take!();
                    any = true;
                }
                any
            }};
        }
        macro_rules! token {
            () => {
                if !is_tchar(byte!()) {
                    return Invalid;
                }
                while is_tchar(byte!()) {
                    take!();
                }
            };
        }
        loop {
            let spaced = bws!();
            match byte!() {
                b'\r' if !spaced => break,
                b';' => {
                    take!();
                }
                _ => return Invalid,
            }
            bws!();
            token!();
            let spaced = bws!();
            match byte!() {
                b'=' => {
                    take!();
                    bws!();
                    if byte!() == b'"' {
                        take!();
                        loop {
                            match byte!() {
                                b'"' => {
                                    take!();
                                    break;
                                }
                                b'\\' => {
                                    take!();
                                    if is_control(byte!()) {
                                        return Invalid;
                                    }
                                    take!();
                                }
                                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80.. => {
                                    take!();
                                }
                                _ => return Invalid,
                            }
                        }
                    } else {
                        token!();
                    }
                }
                b';' => {}
                _ if spaced => return Invalid,
                _ => {}
            }
        }
        expect!(b'\r');
        expect!(b'\n');
        if size == 0 {
            break;
        }
        let available = (input.len() - at) as u64;
        if available < size {
            data.extend_from_slice(&input[at..]);
            return NeedMore;
        }
        let end = at + size as usize;
        data.extend_from_slice(&input[at..end]);
        at = end;
        expect!(b'\r');
        expect!(b'\n');
    }
    // trailer-section: field lines (name, colon, no controls but HTAB), then CRLF.
    let mut trailer_len = 0;
    loop {
        match byte!() {
            b'\r' => {
                at += 1;
                expect!(b'\n');
                return Outcome::Done { consumed: at };
            }
            b' ' | b'\t' | b':' | b'\n' => return Invalid,
            _ => {}
        }
        let mut colon_seen = false;
        loop {
            let b = byte!();
            if b == b'\n' {
                return Invalid;
            }
            trailer_len += 1;
            if trailer_len > max_trailer {
                return Invalid;
            }
            at += 1;
            match b {
                b'\r' if colon_seen => break,
                b':' => colon_seen = true,
                _ if is_control(b) => return Invalid,
                _ => {}
            }
        }
        expect!(b'\n');
    }
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// RFC 9110 §5.5: controls other than HTAB (CR counts: it may only end a line).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// One response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// False for a streamed body the connection's end cut off (an event stream, or one
    /// whose framing is the close itself).
    pub complete: bool,
}

impl Parsed {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
    }
}

/// Reads `out` as the bytes a server wrote on one connection: interim 100 responses and final
/// responses, each HTTP/1.1 with a valid status, framed per RFC 9112 §6.3, nothing after a
/// `Connection: close` or a close-delimited body, and only the last one left unfinished.
/// `answers_head(i)` says whether the i-th final response answers a HEAD (no body follows).
pub fn parse_responses(
    mut out: &[u8],
    answers_head: impl Fn(usize) -> bool,
) -> Result<Vec<Parsed>, String> {
    let mut responses = Vec::new();
    let mut finals = 0;
    while !out.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut slots);
        let head_len = match response.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err(format!("truncated head: {out:?}")),
            Err(e) => return Err(format!("bad head ({e}): {out:?}")),
        };
        if response.version != Some(1) {
            return Err(format!("not HTTP/1.1: {out:?}"));
        }
        let status = response.code.unwrap_or_default();
        if !(100..=599).contains(&status) {
            return Err(format!("status {status} out of range"));
        }
        if !out[..head_len].ends_with(b"\r\n\r\n") || out[..head_len].contains(&0) {
            return Err(format!("head not CRLF-framed: {:?}", &out[..head_len]));
        }
        let headers: Vec<(String, Vec<u8>)> = response
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        out = &out[head_len..];
        let mut parsed = Parsed {
            status,
            headers,
            body: Vec::new(),
            complete: true,
        };
        if status < 200 {
            // Only 100 Continue is ever sent, and it is a bare status line.
            if status != 100 || !parsed.headers.is_empty() {
                return Err(format!("unexpected interim response {parsed:?}"));
            }
            responses.push(parsed);
            continue;
        }
        if parsed.header("date").is_none() {
            return Err(format!("final response without Date: {parsed:?}"));
        }
        let close = parsed
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
        let count = |name: &str| {
            parsed
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .count()
        };
        let (lengths, codings) = (count("content-length"), count("transfer-encoding"));
        if lengths > 1 || codings > 1 || (lengths == 1 && codings == 1) {
            return Err(format!("ambiguous framing: {parsed:?}"));
        }
        let no_body = answers_head(finals) || matches!(status, 204 | 304);
        finals += 1;
        if no_body {
            if status == 204 && lengths + codings > 0 {
                return Err(format!("204 with framing: {parsed:?}"));
            }
        } else if let Some(coding) = parsed.header("transfer-encoding") {
            if coding != b"chunked" {
                return Err(format!("unknown coding: {parsed:?}"));
            }
            let mut decoder = BodyDecoder::new(Framing::Chunked, 0);
            let mut used = 0;
            loop {
                let step = decoder
                    .decode(&out[used..])
                    .map_err(|e| format!("bad chunked body ({e:?}): {out:?}"))?;
                parsed.body.extend_from_slice(step.data);
                used += step.consumed;
                if step.done {
                    break;
                }
                if step.consumed == 0 {
                    parsed.complete = false;
                    break;
                }
            }
            out = &out[used..];
        } else if let Some(length) = parsed.header("content-length") {
            let length = std::str::from_utf8(length)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| format!("bad Content-Length: {parsed:?}"))?;
            if out.len() < length {
                return Err(format!("body shorter than {length}: {out:?}"));
            }
            parsed.body = out[..length].to_vec();
            out = &out[length..];
        } else {
            // RFC 9112 §6.3 rule 8: the body runs to the close.
            parsed.body = out.to_vec();
            parsed.complete = false;
            out = &[];
        }
        let last = out.is_empty();
        responses.push(parsed);
        if !last && close {
            return Err(format!("bytes after Connection: close: {out:?}"));
        }
        if !last && !responses.last().is_some_and(|r| r.complete) {
            return Err(format!("bytes after an unfinished body: {out:?}"));
        }
    }
    Ok(responses)
}

/// For each request in `stream` that the server would answer, in order, whether it is a
/// HEAD (its answer has no body), read with the same sans-IO core and limits as the server.
/// Stops at the first request that cannot be read whole.
pub fn head_methods(stream: &[u8]) -> Vec<bool> {
    let limits = Config::default().head_limits;
    let mut heads = Vec::new();
    let mut rest = stream;
    loop {
        let Ok(Some(span)) = HeadScanner::default().scan(rest, &limits) else {
            return heads;
        };
        let mut storage = header_storage();
        let Ok(head) = parse_head(&rest[span.skip..span.end], &mut storage, &limits) else {
            return heads;
        };
        heads.push(head.is_head_method());
        let mut decoder = BodyDecoder::new(head.framing, limits.max_head_size);
        rest = &rest[span.end..];
        loop {
            match decoder.decode(rest) {
                Ok(step) if step.done => {
                    rest = &rest[step.consumed..];
                    break;
                }
                Ok(step) if step.consumed > 0 => rest = &rest[step.consumed..],
                _ => return heads,
            }
        }
    }
}

/// What may differ between two runs over the same bytes cut differently, made equal:
/// - `100 Continue` is sent only when no body byte came with the head (RFC 9110 §10.1.1);
/// - `/metrics` counts reads, so its body (and length) depend on them.
pub fn normalise(responses: Vec<Parsed>) -> Vec<Parsed> {
    let mut responses: Vec<Parsed> = responses.into_iter().filter(|r| r.status != 100).collect();
    let replace_body = |response: &mut Parsed, placeholder: &str| {
        response.body = placeholder.as_bytes().to_vec();
        response
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-length"));
    };
    for response in &mut responses {
        let metrics = response
            .header("content-type")
            .is_some_and(|t| t.starts_with(b"text/plain; version=0.0.4"));
        if metrics {
            replace_body(response, "(metrics)");
        }
    }
    responses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_cover_the_payload_in_order() {
        let payload: Vec<u8> = (0..=255).collect();
        for control in 0..=255u8 {
            for allow_empty in [false, true] {
                let pieces = cut(&payload, control, allow_empty);
                assert_eq!(pieces.concat(), payload, "control {control}");
                if !allow_empty {
                    assert!(pieces.iter().all(|p| !p.is_empty()), "control {control}");
                }
            }
        }
        assert_eq!(cut(b"abc", 1, false), [b"a", b"b", b"c"]);
    }

    #[test]
    #[rustfmt::skip]
    fn reference_decoder_table() {
        use Outcome::*;
        let table: &[(&[u8], &[u8], Outcome)] = &[
            (b"5\r\nhello\r\n0\r\n\r\nNEXT", b"hello", Done { consumed: 15 }),
            (b"5;a=b\r\nhello\r\n0 ;x\r\nT: v\r\n\r\n", b"hello", Done { consumed: 28 }),
            (b"5\r\nhel", b"hel", NeedMore),
            (b"5\nhello", b"", Invalid),
            (b"0\r\n: v\r\n\r\n", b"", Invalid),
            (b"0\r\nT v\r\n\r\n", b"", Invalid),
            (b"10000000000000000\r\n", b"", Invalid),
            (b"5 ;a=\"q\\\"x\" ; b = c\r\nhello\r\n0\r\n\r\n", b"hello", Done { consumed: 33 }),
            (b"5 \r\nhello\r\n0\r\n\r\n", b"", Invalid),
            (b"5;\r\nhello\r\n0\r\n\r\n", b"", Invalid),
            (b"5;bad[=x\r\n", b"", Invalid),
            (b"5;a=\"q\r\nhello\r\n0\r\n\r\n", b"", Invalid),
            (b"5;a=\"q", b"", NeedMore),
        ];
        for (input, data, outcome) in table {
            assert_eq!(reference_chunked(input, 64), (data.to_vec(), outcome.clone()), "{input:?}");
        }
    }

    #[test]
    fn responses_parse_strictly() {
        let date = "Date: Thu, 01 Jan 1970 00:00:00 GMT";
        let ok = format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n{date}\r\nContent-Length: 2\r\n\r\nhi\
             HTTP/1.1 200 OK\r\n{date}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
             HTTP/1.1 200 OK\r\n{date}\r\nContent-Length: 5\r\n\r\n\
             HTTP/1.1 400 Bad Request\r\n{date}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        let parsed = parse_responses(ok.as_bytes(), |i| i == 2).unwrap();
        let statuses: Vec<u16> = parsed.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [100, 200, 200, 200, 400]);
        assert_eq!(parsed[2].body, b"hi");

        let after_close = format!(
            "{}HTTP/1.1 200 OK\r\n{date}\r\n\r\n",
            &ok[ok.find("HTTP/1.1 400").unwrap()..]
        );
        assert!(parse_responses(after_close.as_bytes(), |_| false).is_err());
        let short = format!("HTTP/1.1 200 OK\r\n{date}\r\nContent-Length: 5\r\n\r\nhi");
        assert!(parse_responses(short.as_bytes(), |_| false).is_err());
        let both = format!(
            "HTTP/1.1 200 OK\r\n{date}\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert!(parse_responses(both.as_bytes(), |_| false).is_err());
        assert!(parse_responses(b"HTTP/1.1 999 X\r\n\r\n", |_| false).is_err());
    }
}
