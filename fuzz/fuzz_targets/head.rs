//! Fuzz target `head`: the request-head path. `HeadScanner` fed the input in pieces must
//! stop where one scan of the whole input stops, with the same answer; the span it finds
//! must be a head; `parse_head` on it must not panic, and what it accepts must be coherent.
//!
//! Input: payload, then two control bytes: limits (< 0x80: the defaults; else small limits
//! the fuzzer can reach), then how to cut the payload into reads (see `cut`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use miohttpd::http::head::MAX_HEADERS_CAP;
use miohttpd::http::{
    header_storage, parse_head, Framing, Head, HeadLimits, HeadScanner, HeadSpan, RequestError,
    Version,
};
use miohttpd_fuzz::{cut, take_controls};

fuzz_target!(|data: &[u8]| {
    let Some(([limits_control, cut_control], payload)) = take_controls::<2>(data) else {
        return;
    };
    let limits = limits_from(limits_control);
    let whole = HeadScanner::default().scan(payload, &limits);
    let split = scan_in_pieces(&cut(payload, cut_control, true), &limits);
    if split != whole {
        panic!("split scan {split:?} differs from the whole scan {whole:?}");
    }

    match whole {
        Ok(Some(span)) => check_head(payload, span, &limits),
        Ok(None) => {}
        Err(e) => assert!(matches!(e.status(), 414 | 431 | 501), "scan error {e:?}"),
    }
});

fn limits_from(control: u8) -> HeadLimits {
    if control < 0x80 {
        return HeadLimits::default();
    }
    HeadLimits {
        max_head_size: 16 + usize::from(control & 0x0f) * 16,
        max_headers: 1 + usize::from((control >> 4) & 0x07),
        max_target_size: 4 + usize::from(control & 0x1c) * 2,
    }
}

/// Feeds the pieces as reads would, into one growing buffer, until the scanner answers.
fn scan_in_pieces(pieces: &[&[u8]], limits: &HeadLimits) -> Result<Option<HeadSpan>, RequestError> {
    let mut scanner = HeadScanner::default();
    let mut buffer = Vec::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        if let Some(span) = scanner.scan(&buffer, limits)? {
            return Ok(Some(span));
        }
    }
    // The whole input may be empty, which no piece delivered.
    scanner.scan(&buffer, limits)
}

fn only_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// The span is a head: blank lines, then lines up to the first empty one, within the limit.
fn check_head(payload: &[u8], span: HeadSpan, limits: &HeadLimits) {
    assert!(
        span.skip < span.end && span.end <= payload.len(),
        "{span:?}"
    );
    assert!(only_blank(&payload[..span.skip]), "skipped non-blank bytes");
    let head = &payload[span.skip..span.end];
    // Blank lines count: they sit in the same buffer as the head.
    assert!(span.end <= limits.max_head_size, "head over the limit");
    assert!(head[0] != b'\n' && !head.starts_with(b"\r\n"));
    assert_eq!(
        first_empty_line_end(head),
        Some(head.len()),
        "not the first empty line"
    );

    let mut storage = header_storage();
    match parse_head(head, &mut storage, limits) {
        Ok(parsed) => check_parsed(head, &parsed, limits),
        Err(e) => assert!((400..=505).contains(&e.status()), "{e:?}"),
    }
}

/// The end of the first empty line, found the slow and obvious way.
fn first_empty_line_end(head: &[u8]) -> Option<usize> {
    (0..head.len()).find_map(|i| {
        let lf_lf = head[i] == b'\n' && i >= 1 && head[i - 1] == b'\n';
        let lf_crlf = head[i] == b'\n' && i >= 2 && head[i - 1] == b'\r' && head[i - 2] == b'\n';
        (lf_lf || lf_crlf).then_some(i + 1)
    })
}

/// What a parsed head says must agree with its bytes, as httparse reads them independently.
fn check_parsed(head: &[u8], parsed: &Head<'_>, limits: &HeadLimits) {
    // httparse knows no HTTP/1.y beyond 1.1, which we read as 1.1 (RFC 9110 §2.5): it reads
    // a copy that says 1.1.
    let line_end = head.iter().position(|&b| b == b'\n').expect("a line");
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let mut as_http_1_1 = head.to_vec();
    if let [.., b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] = *line {
        assert!(minor.is_ascii_digit());
        as_http_1_1[line.len() - 1] = if minor == b'0' { b'0' } else { b'1' };
    } else {
        panic!("accepted a request-line without HTTP/1.y: {line:?}");
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let mut request = httparse::Request::new(&mut slots);
    assert_eq!(
        request.parse(&as_http_1_1),
        Ok(httparse::Status::Complete(head.len())),
        "the head must be exactly what httparse reads: no byte of it left unread"
    );
    assert_eq!(request.method, Some(parsed.method));
    assert_eq!(request.path, Some(parsed.target));
    assert_eq!(request.headers.len(), parsed.headers.len());
    for (theirs, ours) in request.headers.iter().zip(parsed.headers) {
        assert_eq!((theirs.name, theirs.value), (ours.name, ours.value));
    }
    // The request-line is exactly `method SP target SP version` (RFC 9112 §3).
    let expected_line = [
        parsed.method.as_bytes(),
        b" ",
        parsed.target.as_bytes(),
        b" ",
    ]
    .concat();
    assert!(line.starts_with(&expected_line) && line.len() == expected_line.len() + 8);
    // RFC 3986 bytes only: no fragment, space, control, non-ASCII or "<>\^`{|}; `%` then
    // two hex digits.
    let target = parsed.target.as_bytes();
    for (i, &b) in target.iter().enumerate() {
        let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?[]%".contains(&b);
        assert!(allowed, "target byte {b:#x} in {target:?}");
        if b == b'%' {
            let pair = target.get(i + 1..i + 3).expect("two digits after %");
            assert!(pair.iter().all(u8::is_ascii_hexdigit), "{target:?}");
        }
    }
    match target {
        [b'/', ..] => assert!(!target.contains(&b'[')),
        b"*" => assert_eq!(parsed.method, "OPTIONS"),
        _ if parsed.method == "CONNECT" && !target.contains(&b'/') => {}
        _ => assert!(
            target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://")
                || target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://"),
            "{target:?}"
        ),
    }
    assert!(parsed.headers.len() <= limits.max_headers);
    assert!(!parsed.target.is_empty() && parsed.target.len() <= limits.max_target_size);
    let literal = matches!(parsed.path, "/" | "*");
    assert!(
        within(parsed.path, parsed.target) || literal,
        "path not from target"
    );
    if let Some(query) = parsed.query {
        assert!(within(query, parsed.target), "query not from target");
    }

    let values = |name: &str| -> Vec<&[u8]> {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    let lengths = values("content-length");
    let codings = values("transfer-encoding");
    match parsed.framing {
        Framing::Chunked => {
            assert_eq!(parsed.version, Version::Http11);
            assert!(lengths.is_empty(), "chunked with Content-Length");
            let last = codings
                .iter()
                .flat_map(|v| v.split(|&b| b == b','))
                .map(trim_ows)
                .rfind(|c| !c.is_empty());
            assert!(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        }
        Framing::Length(n) => {
            assert!(codings.is_empty(), "length framing with Transfer-Encoding");
            for value in lengths.iter().flat_map(|v| v.split(|&b| b == b',')) {
                let digits = trim_ows(value);
                assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit));
                let value = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok());
                assert_eq!(value, Some(n), "Content-Length {digits:?} is not {n}");
            }
            if lengths.is_empty() {
                assert_eq!(n, 0);
            }
        }
    }
    let hosts = values("host").len();
    match parsed.version {
        Version::Http11 => assert_eq!(hosts, 1),
        Version::Http10 => assert!(hosts <= 1),
    }
    if parsed.expect_continue {
        assert_eq!(parsed.version, Version::Http11);
        assert!(!values("expect").is_empty());
    }
    let options: Vec<&[u8]> = values("connection")
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .collect();
    if options.iter().any(|o| o.eq_ignore_ascii_case(b"close")) {
        assert!(!parsed.keep_alive, "kept alive despite Connection: close");
    }
    if parsed.version == Version::Http10 && parsed.keep_alive {
        assert!(options
            .iter()
            .any(|o| o.eq_ignore_ascii_case(b"keep-alive")));
    }
}

/// Whether `part` is a slice of `whole` (not merely equal to some part of it).
fn within(part: &str, whole: &str) -> bool {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let at = part.as_ptr() as usize;
    at >= start && at + part.len() <= end
}

/// Optional whitespace (RFC 9110 §5.6.3) trimmed from both ends.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |at| at + 1);
    &bytes[start..end]
}
