//! What the fuzz targets share: how an input chooses its own read splits, a plain reference
//! chunked decoder to check the real one against, and a strict parser for the server's output.

use std::time::Duration;

use miohttpd::fuzzing::Step;
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

/// The limits of a timed run: short and all different, so that a few advances cross them in
/// many orders.
pub fn timed_config() -> Config {
    Config {
        head_timeout: Duration::from_millis(1000),
        body_timeout: Duration::from_millis(1500),
        idle_timeout: Duration::from_millis(2000),
        send_timeout: Duration::from_millis(700),
        linger: Duration::from_millis(500),
        comet_timeout: Duration::from_millis(3000),
        sse_heartbeat: Duration::from_millis(1200),
        shutdown_grace: Duration::from_millis(4000),
        ..Config::default()
    }
}

/// One thing a timed run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// On the fuzzed connection (or, for an advance or the shutdown, the whole server).
    Client(Step<'a>),
    /// Another client publishes to the channel the payload waits or subscribes on.
    Publish,
}

/// A timed run's script: the `pieces` sent in order on one connection, with what `control`
/// chooses before each piece and after the last: nothing, a short advance of the clock, an
/// advance to one of `config`'s limits (a tick before, at, or a tick after it, counted from
/// now), the client stopping or resuming reading or taking a few bytes, a publish from
/// another client, or the server's shutdown. 0 chooses nothing at all. The script ends with
/// the client reading, then its FIN (or, as `control` says, a hang-up), then an hour: by then
/// every connection must be closed.
pub fn timed_script<'a>(pieces: &[&'a [u8]], control: u8, config: &Config) -> Vec<Action<'a>> {
    const TICK: Duration = Duration::from_nanos(1);
    let limits = [
        config.head_timeout,
        config.body_timeout,
        config.idle_timeout,
        config.send_timeout,
        config.linger,
        config.comet_timeout,
        config.sse_heartbeat,
        config.shutdown_grace,
    ];
    let mut state = u32::from(control).wrapping_mul(0x9e37_79b9) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut steps = Vec::new();
    for piece in pieces.iter().map(Some).chain([None]) {
        if control != 0 {
            let r = next();
            let step = match r % 10 {
                0..=2 => None,
                3 | 4 => Some(Step::Advance(Duration::from_millis(
                    u64::from(r >> 8) % 800,
                ))),
                5 | 6 => {
                    let limit = limits[(r >> 8) as usize % limits.len()];
                    Some(Step::Advance(match (r >> 16) % 3 {
                        0 => limit.saturating_sub(TICK),
                        1 => limit,
                        _ => limit + TICK,
                    }))
                }
                7 => Some(Step::StopReading),
                8 if (r >> 8) % 3 == 0 => Some(Step::StartReading),
                8 => Some(Step::Take((r >> 10) as usize % 4096)),
                _ => match (r >> 8) % 4 {
                    0 => Some(Step::Shutdown),
                    1 | 2 => {
                        steps.push(Action::Publish);
                        None
                    }
                    _ => None,
                },
            };
            steps.extend(step.map(Action::Client));
        }
        if let Some(piece) = piece {
            steps.push(Action::Client(Step::Send(piece)));
        }
    }
    steps.push(Action::Client(Step::StartReading));
    steps.push(Action::Client(if control & 0x83 == 0x83 {
        Step::HangUp
    } else {
        Step::ShutdownWrite
    }));
    steps.push(Action::Client(Step::Advance(Duration::from_secs(3600))));
    steps
}

/// The channel of the first `/wait/NAME` or `/events/NAME` in `payload`, for a publisher to
/// reach it ("w" when there is none: the publish then reaches nobody).
pub fn channel_named(payload: &[u8]) -> &[u8] {
    for prefix in [&b"/wait/"[..], b"/events/"] {
        if let Some(at) = payload.windows(prefix.len()).position(|w| w == prefix) {
            let rest = &payload[at + prefix.len()..];
            let end = rest
                .iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || b"._~-".contains(&b)))
                .unwrap_or(rest.len());
            if end > 0 {
                return &rest[..end];
            }
        }
    }
    b"w"
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
    out: &[u8],
    answers_head: impl Fn(usize) -> bool,
) -> Result<Vec<Parsed>, String> {
    parse_responses_with(out, |i, _| answers_head(i), Ending::Whole)
}

/// How the server's output may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every response it began is there whole (a streamed one may stop at the close).
    Whole,
    /// The connection was dropped while the client took nothing: the last response may stop
    /// anywhere, even inside its head.
    MayBeCutOff,
}

/// [`parse_responses`], where whether the i-th final response has no body may depend on its
/// status too (a 408 answers no request: it has a body even where a HEAD was on its way),
/// and the output may have been cut off.
pub fn parse_responses_with(
    mut out: &[u8],
    answers_head: impl Fn(usize, u16) -> bool,
    ending: Ending,
) -> Result<Vec<Parsed>, String> {
    let cut_off = ending == Ending::MayBeCutOff;
    let mut responses = Vec::new();
    let mut finals = 0;
    while !out.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut slots);
        let head_len = match response.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if cut_off => return Ok(responses),
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
        let no_body = answers_head(finals, status) || matches!(status, 204 | 304);
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
            if out.len() < length && cut_off {
                parsed.body = out.to_vec();
                parsed.complete = false;
                responses.push(parsed);
                return Ok(responses);
            }
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
    fn timed_scripts_send_every_piece_in_order_and_end_the_client() {
        let config = timed_config();
        let payload: Vec<u8> = (0..=255).collect();
        let pieces = cut(&payload, 3, false);
        for control in 0..=255u8 {
            let script = timed_script(&pieces, control, &config);
            let sent: Vec<&[u8]> = script
                .iter()
                .filter_map(|step| match step {
                    Action::Client(Step::Send(bytes)) => Some(*bytes),
                    _ => None,
                })
                .collect();
            assert_eq!(sent, pieces, "control {control}");
            let end = &script[script.len() - 3..];
            assert_eq!(end[0], Action::Client(Step::StartReading));
            assert!(matches!(
                end[1],
                Action::Client(Step::ShutdownWrite | Step::HangUp)
            ));
            if control == 0 {
                assert_eq!(script.len(), pieces.len() + 3);
            }
        }
        let tick_before = Step::Advance(config.head_timeout - Duration::from_nanos(1));
        let any = |action: Action| {
            (1..=255u8).any(|control| timed_script(&pieces, control, &config).contains(&action))
        };
        assert!(
            any(Action::Client(tick_before)),
            "no control reaches a tick before a limit"
        );
        assert!(any(Action::Publish), "no control publishes");
        assert!(any(Action::Client(Step::Shutdown)), "no control shuts down");
        assert_eq!(channel_named(b"GET /events/c?x HTTP/1.1\r\n"), b"c");
        assert_eq!(
            channel_named(b"GET /wait/ HTTP/1.1\r\nGET /events/a.b_~-"),
            b"a.b_~-"
        );
        assert_eq!(channel_named(b"GET / HTTP/1.1\r\n"), b"w");
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

        // Dropped while the client took nothing: the last response may stop anywhere.
        let cut = format!("HTTP/1.1 200 OK\r\n{date}\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 20");
        let whole = parse_responses_with(cut.as_bytes(), |_, _| false, Ending::Whole);
        assert!(whole.is_err());
        let parsed = parse_responses_with(cut.as_bytes(), |_, _| false, Ending::MayBeCutOff);
        assert_eq!(parsed.unwrap().len(), 1);
        let short_body = format!("HTTP/1.1 200 OK\r\n{date}\r\nContent-Length: 5\r\n\r\nhi");
        let parsed = parse_responses_with(short_body.as_bytes(), |_, _| false, Ending::MayBeCutOff);
        assert!(!parsed.unwrap()[0].complete);
    }
}
