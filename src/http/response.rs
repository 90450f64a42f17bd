//! Responses: the owned value handlers return, and its encoding into a connection's output
//! buffer (status line, the headers every response carries, framing, body).

use std::borrow::Cow;

use super::date::DATE_LEN;
use super::error::{reason_phrase, RequestError};
use super::head::Version;

/// A complete response, as a handler returns it: plain owned values (or `'static` borrows,
/// so fixed responses cost no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Cow<'static, str>,
    /// Extra header fields. The server writes Server, Date, Content-Length and Connection
    /// itself; a handler that sets them gets a 500 instead (see [`EncodeError`]).
    pub headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    pub body: Cow<'static, [u8]>,
    /// Close the connection after this response even if the request allowed keep-alive.
    pub close: bool,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Cow<'static, str>>) -> Self {
        let body = match body.into() {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        };
        Response {
            status,
            content_type: Cow::Borrowed("text/plain"),
            headers: Vec::new(),
            body,
            close: false,
        }
    }

    /// A response with any content type and body.
    pub fn bytes(
        status: u16,
        content_type: impl Into<Cow<'static, str>>,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        Response {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body: body.into(),
            close: false,
        }
    }

    /// Marks a dynamic answer `Cache-Control: no-store` (RFC 9111 §5.2.2.5): it changes from
    /// one request to the next, so no cache in front of the server may keep and replay it.
    pub fn no_store(self) -> Self {
        self.with_header(NO_STORE.0, NO_STORE.1)
    }

    /// Adds a header field.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The answer to a request the server refuses: its status, a one-line reason, and a
    /// close, since after a protocol error the rest of the stream cannot be trusted.
    pub fn error(error: RequestError) -> Self {
        let mut response = Response::text(error.status(), error_body(error.reason()));
        response.close = true;
        response
    }
}

fn error_body(reason: &'static str) -> String {
    let mut body = String::with_capacity(reason.len() + 1);
    body.push_str(reason);
    body.push('\n');
    body
}

/// Why a handler's response cannot be sent as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A header name that is not a token, or a value with CR, LF or NUL (response splitting).
    InvalidHeader(String),
    /// A header the server owns (framing, persistence, Date, Server).
    ReservedHeader(String),
    /// A status outside 200..=999: 1xx are interim and sent by the server itself.
    InvalidStatus(u16),
}

/// What the encoder needs to know about the request being answered.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'d> {
    pub version: Version,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
    /// A HEAD request: headers as for GET, no body.
    pub head_method: bool,
    pub date: &'d [u8; DATE_LEN],
}

/// The header field of every dynamic answer, for heads written without a [`Response`].
pub const NO_STORE: (&str, &str) = ("Cache-Control", "no-store");

/// The interim response to `Expect: 100-continue` (RFC 9110 §15.2.1).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

const RESERVED_HEADERS: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "server",
    "content-type",
];

/// Checks a response before anything of it is written, so a bad one can be replaced whole.
pub fn validate(response: &Response) -> Result<(), EncodeError> {
    if !(200..=999).contains(&response.status) {
        return Err(EncodeError::InvalidStatus(response.status));
    }
    if !is_field_value(response.content_type.as_bytes()) {
        return Err(EncodeError::InvalidHeader("content-type".into()));
    }
    for (name, value) in &response.headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) || !is_field_value(value.as_bytes())
        {
            return Err(EncodeError::InvalidHeader(name.to_string()));
        }
        if RESERVED_HEADERS
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r))
        {
            return Err(EncodeError::ReservedHeader(name.to_string()));
        }
    }
    Ok(())
}

/// How the body after a head is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Content-Length: this many bytes (omitted for 204, which has no content).
    Length(u64),
    /// Transfer-Encoding: chunked; the body streams until a last chunk.
    Chunked,
    /// No length: the body runs until the connection closes (for HTTP/1.0 streams).
    UntilClose,
}

/// Appends a validated response to `out`. Returns whether the connection must close after it.
pub fn encode(out: &mut Vec<u8>, response: &Response, exchange: &Exchange<'_>) -> bool {
    // RFC 9110 §8.6, §15.3.5, §15.4.5: no content (and no Content-Length for 204) in 204 and 304.
    let no_content = matches!(response.status, 204 | 304);
    let body: &[u8] = if no_content || exchange.head_method {
        &[]
    } else {
        &response.body
    };
    out.reserve(160 + response.content_type.len() + body.len());
    let headers = response.headers.iter().map(|(n, v)| (&**n, &**v));
    let close = encode_head(
        out,
        response.status,
        &response.content_type,
        headers,
        BodyFraming::Length(response.body.len() as u64),
        exchange.keep_alive && !response.close,
        exchange,
    );
    out.extend_from_slice(body);
    close
}

/// Appends a status line and header section with the headers every response carries, the
/// given extra fields and framing. Returns whether the connection must close after the body
/// (an until-close body always does).
pub fn encode_head<'h>(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    headers: impl Iterator<Item = (&'h str, &'h str)>,
    framing: BodyFraming,
    keep_alive: bool,
    exchange: &Exchange<'_>,
) -> bool {
    let keep_alive = keep_alive && framing != BodyFraming::UntilClose;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nServer: miohttpd\r\nDate: ");
    out.extend_from_slice(exchange.date);
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    match framing {
        BodyFraming::Length(_) if status == 204 => {}
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"\r\nContent-Length: ");
            push_decimal(out, n);
        }
        BodyFraming::Chunked => out.extend_from_slice(b"\r\nTransfer-Encoding: chunked"),
        BodyFraming::UntilClose => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"\r\nConnection: close");
    } else if exchange.version == Version::Http10 {
        out.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    for (name, value) in headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    !keep_alive
}

/// Appends one chunk of a chunked body (RFC 9112 §7.1); an empty `data` would end the body,
/// so callers send the last chunk with [`LAST_CHUNK`] instead.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(!data.is_empty());
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = data.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the decimal digits of `value` without allocating.
pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// tchar (RFC 9110 §5.6.2).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A field value may hold visible bytes, SP and HTAB, never CR, LF or NUL (RFC 9110 §5.5).
fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8; DATE_LEN] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn exchange(version: Version, keep_alive: bool, head_method: bool) -> Exchange<'static> {
        Exchange {
            version,
            keep_alive,
            head_method,
            date: DATE,
        }
    }

    fn encoded(response: &Response, exchange: &Exchange<'_>) -> (String, bool) {
        let mut out = Vec::new();
        let close = encode(&mut out, response, exchange);
        (String::from_utf8(out).unwrap(), close)
    }

    #[test]
    fn encodes_the_headers_every_response_carries() {
        let table: &[(Exchange<'static>, &str, bool)] = &[
            (exchange(Version::Http11, true, false), "", false),
            (
                exchange(Version::Http11, false, false),
                "Connection: close\r\n",
                true,
            ),
            (
                exchange(Version::Http10, true, false),
                "Connection: keep-alive\r\n",
                false,
            ),
            (
                exchange(Version::Http10, false, false),
                "Connection: close\r\n",
                true,
            ),
        ];
        for (ex, connection, want_close) in table {
            let (text, close) = encoded(&Response::text(200, "Hello, World!"), ex);
            assert_eq!(
                text,
                format!(
                    "HTTP/1.1 200 OK\r\nServer: miohttpd\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
                     Content-Type: text/plain\r\nContent-Length: 13\r\n{connection}\r\nHello, World!"
                )
            );
            assert_eq!(close, *want_close);
        }
    }

    #[test]
    fn head_keeps_the_length_and_drops_the_body() {
        let (text, _) = encoded(
            &Response::text(200, "Hello, World!"),
            &exchange(Version::Http11, true, true),
        );
        assert!(text.ends_with("Content-Length: 13\r\n\r\n"), "{text}");
    }

    #[test]
    fn no_content_statuses_send_no_body() {
        let (text, _) = encoded(
            &Response::text(204, "x"),
            &exchange(Version::Http11, true, false),
        );
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        let (text, _) = encoded(
            &Response::text(304, "x"),
            &exchange(Version::Http11, true, false),
        );
        assert!(text.ends_with("Content-Length: 1\r\n\r\n"), "{text}");
    }

    #[test]
    fn errors_close_and_say_why() {
        let response = Response::error(RequestError::ConflictingFraming);
        let (text, close) = encoded(&response, &exchange(Version::Http11, true, false));
        assert!(close);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nboth Content-Length and Transfer-Encoding\n"));
    }

    #[test]
    fn validation_rejects_splitting_and_reserved_headers() {
        let ok = Response::text(200, "x").with_header("X-Id", "a b\tc");
        assert_eq!(validate(&ok), Ok(()));
        let table = [
            Response::text(200, "x").with_header("X-Id", "a\r\nSet-Cookie: x"),
            Response::text(200, "x").with_header("Bad Name", "v"),
            Response::text(200, "x").with_header("", "v"),
            Response::text(200, "x").with_header("content-length", "3"),
            Response::text(200, "x").with_header("Transfer-Encoding", "chunked"),
            Response::bytes(200, "text/plain\r\nX: y", &b""[..]),
            Response::text(101, "x"),
        ];
        for response in table {
            assert!(validate(&response).is_err(), "{response:?}");
        }
    }

    #[test]
    fn streaming_heads_and_chunks() {
        let mut out = Vec::new();
        let ex = exchange(Version::Http11, true, false);
        let close = encode_head(
            &mut out,
            200,
            "text/event-stream",
            [("Cache-Control", "no-cache")].into_iter(),
            BodyFraming::Chunked,
            true,
            &ex,
        );
        assert!(!close);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\r\nTransfer-Encoding: chunked\r\n"),
            "{text}"
        );
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(
            text.ends_with("\r\nCache-Control: no-cache\r\n\r\n"),
            "{text}"
        );

        let mut out = Vec::new();
        let ex10 = exchange(Version::Http10, true, false);
        let close = encode_head(
            &mut out,
            200,
            "text/event-stream",
            [].into_iter(),
            BodyFraming::UntilClose,
            true,
            &ex10,
        );
        assert!(close, "a close-delimited body ends with the connection");
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Connection: close"));

        for (data, want) in [
            (&b"a"[..], "1\r\na\r\n"),
            (&[b'x'; 26][..], "1a\r\nxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"),
        ] {
            let mut out = Vec::new();
            encode_chunk(&mut out, data);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn decimal_digits() {
        for value in [0, 7, 10, 13, 1_048_576, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }
}
