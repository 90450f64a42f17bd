//! Request heads: finding where a head ends as bytes trickle in, tokenizing it once with
//! httparse, and deciding its framing, persistence and expectations (RFC 9112 §2-§6, §9.3).
//!
//! It owns no buffer and no socket: the caller keeps the bytes and a [`HeadScanner`] that
//! remembers how far it has already looked.

use std::mem::MaybeUninit;

use super::error::RequestError;

/// The most header slots a parse may use: the storage lives on the stack, uninitialized, so a
/// generous cap costs nothing until headers are actually present.
pub const MAX_HEADERS_CAP: usize = 1024;

/// Uninitialized header storage for one [`parse_head`] call.
pub type HeaderStorage<'a> = [MaybeUninit<httparse::Header<'a>>; MAX_HEADERS_CAP];

/// A fresh, uninitialized [`HeaderStorage`].
pub fn header_storage<'a>() -> HeaderStorage<'a> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP]
}

/// Limits applied while a head arrives and when it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Bytes from the request line to the empty line, inclusive (431 beyond).
    pub max_head_size: usize,
    /// Header field lines (431 beyond). At most [`MAX_HEADERS_CAP`].
    pub max_headers: usize,
    /// Bytes of the request-target (414 beyond).
    pub max_target_size: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_size: 8192,
            max_headers: 100,
            // RFC 9112 §3: recipients SHOULD support request-lines of at least 8000 octets.
            // The target may have 8000 of them; the head limit above leaves the rest of an
            // 8000-byte request line room for a few short header fields.
            max_target_size: 8000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited (RFC 9112 §6.3). Requests are never close-delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Content-Length; a request with neither header has `Length(0)`.
    Length(u64),
    Chunked,
}

impl Framing {
    pub fn has_body(self) -> bool {
        self != Framing::Length(0)
    }

    /// Whether the declared length is already over `limit` (chunked bodies declare none).
    pub fn exceeds(self, limit: usize) -> bool {
        matches!(self, Framing::Length(n) if n > limit as u64)
    }
}

/// A parsed, validated request head borrowing the connection's buffer.
#[derive(Debug)]
pub struct Head<'a> {
    pub method: &'a str,
    /// The request-target as sent.
    pub target: &'a str,
    /// The path the router matches: the origin-form path, or the path of an absolute-form
    /// target (RFC 9112 §3.2.2), without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub version: Version,
    pub headers: &'a [httparse::Header<'a>],
    pub framing: Framing,
    /// Whether the connection may carry another request after this one (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// HTTP/1.1 `Expect: 100-continue`; ignored for HTTP/1.0 (RFC 9110 §10.1.1).
    pub expect_continue: bool,
}

impl<'a> Head<'a> {
    /// The value of the first header field with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// HEAD asks for the headers of the GET response without its body.
    pub fn is_head_method(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Where a complete head sits in the buffer: `skip` bytes of empty lines before it (RFC 9112
/// §2.2 lets a server ignore them), then the head itself up to `end`, its empty line included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadSpan {
    pub skip: usize,
    pub end: usize,
}

/// Finds the end of a head across partial reads without looking at any byte twice, so a
/// head fed one byte per read costs linear time. (Calling httparse from the start on every
/// read would be quadratic.)
#[derive(Debug, Clone, Default)]
pub struct HeadScanner {
    /// Empty-line bytes before the request line.
    skip: usize,
    /// Whether the request line has begun (no more empty lines to skip).
    started: bool,
    /// Bytes of the buffer already examined.
    scanned: usize,
    /// Whether the request line has ended: before that, an oversized head is a long target.
    saw_first_line_end: bool,
}

impl HeadScanner {
    /// Looks at the bytes after those seen by earlier calls on the same buffer (`buf` must
    /// start where the head starts and only grow between calls). The verdict depends on the
    /// first `max_head_size + 1` bytes alone, never on where reads happened to end, and a
    /// buffer that holds that many always gets one.
    pub fn scan(
        &mut self,
        buf: &[u8],
        limits: &HeadLimits,
    ) -> Result<Option<HeadSpan>, RequestError> {
        let window = &buf[..buf.len().min(limits.max_head_size + 1)];
        let full = window.len() > limits.max_head_size;
        if !self.started {
            // Empty lines before the request line (RFC 9112 §2.2) count against the limit:
            // they sit in the same buffer.
            loop {
                match &window[self.skip..] {
                    [b'\r', b'\n', ..] => self.skip += 2,
                    [b'\n', ..] => self.skip += 1,
                    [] | [b'\r'] if full => return Err(RequestError::HeadTooLarge),
                    [] | [b'\r'] => return Ok(None),
                    _ => break,
                }
            }
            self.started = true;
            self.scanned = self.skip;
        }
        let start = self.skip;
        while let Some(offset) = find_newline(&window[self.scanned..]) {
            let at = self.scanned + offset;
            self.scanned = at + 1;
            self.saw_first_line_end = true;
            // An empty line: this LF directly follows the previous line's LF or CRLF.
            let empty_line = (at > start && window[at - 1] == b'\n')
                || (at > start + 1 && window[at - 1] == b'\r' && window[at - 2] == b'\n');
            if empty_line {
                if at + 1 > limits.max_head_size {
                    return Err(RequestError::HeadTooLarge);
                }
                return Ok(Some(HeadSpan {
                    skip: start,
                    end: at + 1,
                }));
            }
        }
        self.scanned = window.len();
        if !full {
            return Ok(None);
        }
        let first_line = &window[start..];
        if !self.saw_first_line_end && first_line.len() > limits.max_target_size {
            // RFC 9112 §3: a method longer than any implemented is a 501, not a long target.
            if !first_line.contains(&b' ') {
                return Err(RequestError::MethodTooLong);
            }
            return Err(RequestError::TargetTooLong);
        }
        Err(RequestError::HeadTooLarge)
    }
}

/// The first LF in `bytes`, eight bytes at a time: a head is mostly long lines, and a
/// byte-at-a-time loop was most of the cost of parsing a browser's head.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default()) ^ LFS;
        // A zero byte of `word` is an LF. The lowest flagged byte is exact (a false flag
        // can only sit above a true one), and little-endian puts the first byte lowest.
        let zero_bytes = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero_bytes != 0 {
            return Some(offset + (zero_bytes.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| offset + p)
}

/// Tokenizes a complete head (as found by [`HeadScanner`]) and validates it.
pub fn parse_head<'a>(
    head: &'a [u8],
    storage: &'a mut HeaderStorage<'a>,
    limits: &HeadLimits,
) -> Result<Head<'a>, RequestError> {
    let slots = limits.max_headers.min(MAX_HEADERS_CAP);
    // Our own request-line grammar first (RFC 9112 §3): httparse is laxer about the target
    // and knows no version but 1.0 and 1.1.
    let line = parse_request_line(head)?;
    let (method, target, headers): (&'a str, &'a str, &'a [httparse::Header<'a>]) =
        if line.minor_version <= 1 {
            let mut request = httparse::Request::new(&mut []);
            match request.parse_with_uninit_headers(head, &mut storage[..slots]) {
                Ok(httparse::Status::Complete(_)) => {}
                // The scanner found an empty line, so a partial parse means a malformed line
                // ending.
                Ok(httparse::Status::Partial) => return Err(RequestError::MalformedHead),
                Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
                Err(_) => return Err(RequestError::MalformedHead),
            }
            let method = request.method.unwrap_or_default();
            let target = request.path.unwrap_or_default();
            (method, target, request.headers)
        } else {
            let ascii = |bytes| std::str::from_utf8(bytes).map_err(|_| RequestError::MalformedHead);
            let target_end = line.method_len + 1 + line.target_len;
            let method = ascii(&head[..line.method_len])?;
            let target = ascii(&head[line.method_len + 1..target_end])?;
            let headers = higher_minor_fields(&head[line.len..], storage, slots)?;
            (method, target, headers)
        };
    // httparse read the same line: what it accepts includes all our grammar does.
    debug_assert_eq!(
        (method.len(), target.len()),
        (line.method_len, line.target_len)
    );
    let version = line.version;
    if target.len() > limits.max_target_size {
        return Err(RequestError::TargetTooLong);
    }
    let (path, query) = split_target(method, target, &line)?;
    let fields = FieldSummary::collect(headers, version)?;

    // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without exactly one
    // Host, and to any request with more than one.
    if fields.host_count > 1 || (version == Version::Http11 && fields.host_count == 0) {
        return Err(RequestError::BadHost);
    }
    let framing = fields.framing(version)?;
    let keep_alive = match version {
        Version::Http11 => !fields.connection_close,
        Version::Http10 => fields.connection_keep_alive && !fields.connection_close,
    };
    Ok(Head {
        method,
        target,
        path,
        query,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue: version == Version::Http11 && fields.expect_continue,
    })
}

/// The shape of a request-line (RFC 9112 §3): `method SP request-target SP HTTP-version`,
/// then CRLF (or the bare LF §2.2 lets a server accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestLine {
    method_len: usize,
    /// The target starts after the method and its SP. Its bytes are all RFC 3986's.
    target_len: usize,
    /// `[` or `]`, which only an authority may hold (an IP-literal).
    target_has_brackets: bool,
    /// Where the first `?` is in the target, if anywhere: the query follows it.
    query_at: Option<usize>,
    version: Version,
    minor_version: u8,
    /// Bytes of the line, its line ending included.
    len: usize,
}

/// Checks a request-line in one pass: exactly one SP between its parts (RFC 9112 §3: the
/// lenient whitespace splitting it allows is how a target with a space in it turns into a
/// different request); a target of RFC 3986 bytes only (§3.2: no fragment, raw space,
/// control or non-ASCII byte, no `"<>\^`{|}`, a `%` then two hex digits). A well-formed
/// `HTTP/x.y` with a major version other than 1 is a 505 (RFC 9110 §15.6.6), `HTTP/0.9`
/// included; 1.y with y > 1 is read as 1.1 (RFC 9110 §2.5: the highest minor version we
/// speak); anything else is a malformed line, 400.
fn parse_request_line(head: &[u8]) -> Result<RequestLine, RequestError> {
    // method = token (RFC 9110 §9.1)
    let method_len = head.iter().position(|&b| !is_tchar(b)).unwrap_or(0);
    if method_len == 0 || head.get(method_len) != Some(&b' ') {
        return Err(RequestError::MalformedHead);
    }
    let target_start = method_len + 1;
    let mut at = target_start;
    let mut target_has_brackets = false;
    let mut query_at = None;
    while let Some(&b) = head.get(at) {
        match TARGET_BYTES[usize::from(b)] {
            URI_PLAIN => at += 1,
            URI_QUESTION_MARK => {
                query_at = query_at.or(Some(at - target_start));
                at += 1;
            }
            URI_PERCENT => match head.get(at + 1..at + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => at += 3,
                _ => return Err(RequestError::BadTarget),
            },
            URI_BRACKET => {
                target_has_brackets = true;
                at += 1;
            }
            _ => break,
        }
    }
    let target_len = at - target_start;
    match head.get(at) {
        Some(b' ') if target_len > 0 => {}
        Some(b' ' | b'\r' | b'\n') | None => return Err(RequestError::MalformedHead),
        Some(_) => return Err(RequestError::BadTarget),
    }
    let version_at = at + 1;
    let version = head
        .get(version_at..version_at + 8)
        .ok_or(RequestError::MalformedHead)?;
    let line_ending = match &head[version_at + 8..] {
        [b'\r', b'\n', ..] => 2,
        [b'\n', ..] => 1,
        _ => return Err(RequestError::MalformedHead),
    };
    let (version, minor_version) = match *version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            let minor = minor - b'0';
            let version = if minor == 0 {
                Version::Http10
            } else {
                Version::Http11
            };
            (version, minor)
        }
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(RequestError::UnsupportedVersion)
        }
        _ => return Err(RequestError::MalformedHead),
    };
    Ok(RequestLine {
        method_len,
        target_len,
        target_has_brackets,
        query_at,
        version,
        minor_version,
        len: version_at + 8 + line_ending,
    })
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    matches!(b, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'..=b'`' | b'|' | b'~')
        || b.is_ascii_alphanumeric()
}

/// A request httparse knows with an empty field line `a:` for each header slot.
const FILLER_LINE: &[u8] = b"GET / HTTP/1.1\r\n";
const FILLER_LEN: usize = FILLER_LINE.len() + 4 * MAX_HEADERS_CAP + 2;
static FILLER: [u8; FILLER_LEN] = {
    let mut bytes = [b'\n'; FILLER_LEN];
    let mut i = 0;
    while i < FILLER_LINE.len() {
        bytes[i] = FILLER_LINE[i];
        i += 1;
    }
    while i < FILLER_LEN {
        bytes[i] = if i + 2 < FILLER_LEN { b'a' } else { b'\r' };
        if i + 2 < FILLER_LEN {
            bytes[i + 1] = b':';
            bytes[i + 2] = b'\r';
        }
        i += 4;
    }
    bytes
};

/// The field lines of an HTTP/1.y request with y > 1, which httparse refuses whole. Its
/// header-only parser wants initialized slots, and the storage is uninitialized: httparse
/// itself initializes them all, parsing a static request with one empty field per slot, then
/// the real fields overwrite the first `slots`. (Rare, so the extra parse costs nothing that
/// matters, and no `unsafe` is needed.)
fn higher_minor_fields<'a>(
    fields: &'a [u8],
    storage: &'a mut HeaderStorage<'a>,
    slots: usize,
) -> Result<&'a [httparse::Header<'a>], RequestError> {
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(&FILLER, storage) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(RequestError::MalformedHead),
    }
    let initialized = &mut request.headers[..slots];
    match httparse::parse_headers(fields, initialized) {
        Ok(httparse::Status::Complete((_, headers))) => Ok(headers),
        Ok(httparse::Status::Partial) => Err(RequestError::MalformedHead),
        Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooManyHeaders),
        Err(_) => Err(RequestError::MalformedHead),
    }
}

/// Splits a request-target into the path the router sees and the query, refusing any form
/// RFC 9112 §3.2 does not allow, and bytes RFC 3986 does not allow where they are.
fn split_target<'a>(
    method: &str,
    target: &'a str,
    line: &RequestLine,
) -> Result<(&'a str, Option<&'a str>), RequestError> {
    let path_and_query = if target.starts_with('/') {
        // origin-form = absolute-path [ "?" query ]: the request-line checked its bytes,
        // all but the brackets only an authority may hold, and found the `?`.
        if line.target_has_brackets {
            return Err(RequestError::BadTarget);
        }
        return Ok(
            match line.query_at.and_then(|at| target.split_at_checked(at)) {
                Some((path, query)) => (path, Some(&query[1..])),
                None => (target, None),
            },
        );
    } else if let Some(rest) = strip_http_scheme(target) {
        // absolute-form (§3.2.2): authority, then an optional path-abempty and query.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        // RFC 9110 §4.2.4: userinfo in an http(s) URI is to be treated as an error.
        if authority_end == 0 || !is_authority(&rest[..authority_end]) {
            return Err(RequestError::BadTarget);
        }
        match &rest[authority_end..] {
            "" => "/",
            p if p.starts_with('?') => {
                if !is_path_and_query(p) {
                    return Err(RequestError::BadTarget);
                }
                return Ok(("/", Some(&p[1..])));
            }
            p => p,
        }
    } else if target == "*" && method == "OPTIONS" {
        // asterisk-form (§3.2.4)
        return Ok(("*", None));
    } else if method == "CONNECT" && is_host_and_port(target) {
        // authority-form (§3.2.3): the router sees it as the path, as it sees `*`.
        return Ok((target, None));
    } else {
        return Err(RequestError::BadTarget);
    };
    if !is_path_and_query(path_and_query) {
        return Err(RequestError::BadTarget);
    }
    Ok(match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    })
}

/// What a byte is in a request-target, as the request-line scan sees it: not RFC 3986's,
/// allowed as it is, `%` (two hex digits must follow), a bracket, or `?`.
const URI_INVALID: u8 = 0;
const URI_PLAIN: u8 = 1;
const URI_PERCENT: u8 = 2;
const URI_BRACKET: u8 = 3;
const URI_QUESTION_MARK: u8 = 4;

static TARGET_BYTES: [u8; 256] = {
    let mut table = [URI_INVALID; 256];
    let mut b = 0;
    while b < 256 {
        if URI_BYTES[b] != 0 {
            table[b] = URI_PLAIN;
        }
        b += 1;
    }
    table[b'%' as usize] = URI_PERCENT;
    table[b'[' as usize] = URI_BRACKET;
    table[b']' as usize] = URI_BRACKET;
    table[b'?' as usize] = URI_QUESTION_MARK;
    table
};

/// Which bytes a part of a request-target may hold as they are (RFC 3986 §2-§3).
const PATH_OR_QUERY: u8 = 1;
const AUTHORITY: u8 = 2;

/// RFC 3986 byte classes: unreserved and sub-delims anywhere; `:` `@` `/` `?` in a path or
/// query (pchar, §3.3-§3.4); `:` `[` `]` in an authority (host and port, §3.2; no userinfo).
/// `%` is checked apart, with the two hex digits it needs.
static URI_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let both = PATH_OR_QUERY | AUTHORITY;
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            table[b] = both;
        }
        b += 1;
    }
    let unreserved_and_sub_delims = b"-._~!$&'()*+,;=";
    let mut i = 0;
    while i < unreserved_and_sub_delims.len() {
        table[unreserved_and_sub_delims[i] as usize] = both;
        i += 1;
    }
    table[b':' as usize] = both;
    table[b'@' as usize] = PATH_OR_QUERY;
    table[b'/' as usize] = PATH_OR_QUERY;
    table[b'?' as usize] = PATH_OR_QUERY;
    table[b'[' as usize] = AUTHORITY;
    table[b']' as usize] = AUTHORITY;
    table
};

/// Whether every byte of `part` belongs to `class`, a `%` counting with the two hex
/// digits after it.
fn uri_bytes_are(part: &[u8], class: u8) -> bool {
    let mut at = 0;
    while at < part.len() {
        let b = part[at];
        if b == b'%' {
            match part.get(at + 1..at + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => at += 3,
                _ => return false,
            }
        } else if URI_BYTES[usize::from(b)] & class != 0 {
            at += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_path_and_query(part: &str) -> bool {
    uri_bytes_are(part.as_bytes(), PATH_OR_QUERY)
}

fn is_authority(part: &str) -> bool {
    uri_bytes_are(part.as_bytes(), AUTHORITY)
}

/// uri-host ":" port (RFC 9112 §3.2.3), for CONNECT.
fn is_host_and_port(target: &str) -> bool {
    match target.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && is_authority(host)
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn strip_http_scheme(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if target.len() >= scheme.len()
            && target.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

/// What the header fields say about framing, persistence and expectations, gathered in one
/// pass over the fields.
#[derive(Debug, Default)]
struct FieldSummary {
    content_length: Option<u64>,
    transfer_encoding: TransferCodings,
    host_count: usize,
    connection_close: bool,
    connection_keep_alive: bool,
    expect_continue: bool,
}

/// The transfer codings named across all Transfer-Encoding field lines, in order.
#[derive(Debug, Default)]
struct TransferCodings {
    present: bool,
    chunked_count: usize,
    last_is_chunked: bool,
    others: usize,
}

impl FieldSummary {
    fn collect(headers: &[httparse::Header<'_>], version: Version) -> Result<Self, RequestError> {
        let mut fields = FieldSummary::default();
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                fields.add_content_length(header.value)?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                fields.transfer_encoding.add(header.value);
            } else if name.eq_ignore_ascii_case("host") {
                if !is_valid_host(header.value) {
                    return Err(RequestError::BadHost);
                }
                fields.host_count += 1;
            } else if name.eq_ignore_ascii_case("connection") {
                for option in list_elements(header.value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        fields.connection_close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        fields.connection_keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") && version == Version::Http11 {
                for expectation in list_elements(header.value) {
                    if !expectation.eq_ignore_ascii_case(b"100-continue") {
                        return Err(RequestError::UnsupportedExpectation);
                    }
                    fields.expect_continue = true;
                }
            }
        }
        Ok(fields)
    }

    /// RFC 9110 §8.6: Content-Length is 1*DIGIT; a list of identical values may be taken
    /// as one, differing values are an error.
    fn add_content_length(&mut self, value: &[u8]) -> Result<(), RequestError> {
        let mut any = false;
        for element in value.split(|&b| b == b',') {
            let element = trim_ows(element);
            let length = parse_decimal(element).ok_or(RequestError::BadContentLength)?;
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(RequestError::BadContentLength);
            }
            self.content_length = Some(length);
            any = true;
        }
        if any {
            Ok(())
        } else {
            Err(RequestError::BadContentLength)
        }
    }

    /// RFC 9112 §6.1 and §6.3, in the order the RFC decides them.
    fn framing(&self, version: Version) -> Result<Framing, RequestError> {
        let te = &self.transfer_encoding;
        if !te.present {
            return Ok(Framing::Length(self.content_length.unwrap_or(0)));
        }
        // §6.1: a server MAY reject CL together with TE, and MUST close either way; we reject.
        if self.content_length.is_some() {
            return Err(RequestError::ConflictingFraming);
        }
        // §6.1: TE in an HTTP/1.0 message means the framing is faulty.
        if version == Version::Http10 {
            return Err(RequestError::BadTransferEncoding);
        }
        // §6.3 rule 4: chunked not final in a request is a 400; §7: chunked at most once.
        if !te.last_is_chunked || te.chunked_count != 1 {
            return Err(RequestError::BadTransferEncoding);
        }
        // §6.1: a coding we do not understand deserves 501.
        if te.others > 0 {
            return Err(RequestError::UnsupportedTransferCoding);
        }
        Ok(Framing::Chunked)
    }
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list_elements(value) {
            self.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if self.last_is_chunked {
                self.chunked_count += 1;
            } else {
                self.others += 1;
            }
        }
    }
}

/// The non-empty elements of a comma-separated field value (RFC 9110 §5.6.1), OWS trimmed.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// 1*DIGIT as a u64; None for anything else, including overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// uri-host [ ":" port ] (RFC 9110 §7.2): reg-name, IPv4 or IP-literal characters only.
/// Empty is allowed: a client sends an empty Host when the target has no authority.
fn is_valid_host(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<(Framing, bool, bool, String, Option<String>), RequestError> {
        let limits = HeadLimits::default();
        let span = HeadScanner::default()
            .scan(raw, &limits)?
            .expect("complete head");
        let mut storage = header_storage();
        let head = parse_head(&raw[span.skip..span.end], &mut storage, &limits)?;
        Ok((
            head.framing,
            head.keep_alive,
            head.expect_continue,
            head.path.to_string(),
            head.query.map(str::to_string),
        ))
    }

    fn status(raw: &str) -> u16 {
        match parse(raw.as_bytes()) {
            Ok(_) => 200,
            Err(e) => e.status(),
        }
    }

    #[test]
    #[rustfmt::skip]
    fn framing_and_validation_table() {
        let table: &[(&str, &str, u16)] = &[
            ("plain get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("bare LF lines", "GET / HTTP/1.1\nHost: a\n\n", 200),
            ("leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 200),
            ("no host", "GET / HTTP/1.1\r\n\r\n", 400),
            ("two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            ("two hosts in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 200),
            ("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400),
            ("http/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("http/1.2 read as 1.1", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 200),
            ("http/x", "GET / HTTP/x\r\nHost: a\r\n\r\n", 400),
            ("garbage line", "HELLO\r\n\r\n", 400),
            ("cl+te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("te+cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            ("cl differs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            ("cl list differs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400),
            ("cl list same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 200),
            ("cl repeated same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 200),
            ("cl letters", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
            ("cl negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            ("cl plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400),
            ("cl inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400),
            ("cl empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
            ("cl overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("te gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("te gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("te chunked, gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("te chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            ("te chunked twice split", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("te empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400),
            ("te in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("te case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", 200),
            ("expect other", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
            ("expect in 1.0 ignored", "POST / HTTP/1.0\r\nExpect: 200-ok\r\n\r\n", 200),
            ("authority form", "GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("asterisk get", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("asterisk options", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("absolute no authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ];
        for (name, raw, want) in table {
            assert_eq!(status(raw), *want, "{name}: {raw:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn request_line_and_target_grammar() {
        // RFC 9112 §3, §3.2, RFC 3986: what is not the grammar is a 400, not a 505 or a path.
        let table: &[(&str, u16)] = &[
            ("GET /a HTTP/1.1", 200),
            ("GET /a%20b?x=%7B1%7D HTTP/1.1", 200),
            ("GET /-._~!$&'()*+,;=:@/?/? HTTP/1.1", 200),
            ("GET /a  HTTP/1.1", 400),
            ("GET  /a HTTP/1.1", 400),
            ("GET /a b HTTP/1.1", 400),
            ("GET /a HTTP/1.1 ", 400),
            ("GET\t/a HTTP/1.1", 400),
            ("GET /a\tb HTTP/1.1", 400),
            ("GET /a HTTP/1.1\r", 400),
            ("GET /a", 400),
            ("GET", 400),
            (" /a HTTP/1.1", 400),
            ("G(T /a HTTP/1.1", 400),
            ("GET /a http/1.1", 400),
            ("GET /a HTTP/1", 400),
            ("GET /a HTTP/1.10", 400),
            ("GET /a HTTP/11.1", 400),
            ("GET /a HTTP/x.1", 400),
            ("GET /a HTTP/2.0", 505),
            ("GET /a HTTP/0.9", 505),
            ("GET /a HTTP/9.9", 505),
            ("GET /a HTTP/1.0", 200),
            ("GET /a HTTP/1.2", 200),
            ("GET /a HTTP/1.9", 200),
            ("GET /a#frag HTTP/1.1", 400),
            ("GET /a?b#frag HTTP/1.1", 400),
            ("GET /caf\u{e9} HTTP/1.1", 400),
            ("GET /%zz HTTP/1.1", 400),
            ("GET /%4 HTTP/1.1", 400),
            ("GET /a% HTTP/1.1", 400),
            ("GET /\" HTTP/1.1", 400),
            ("GET /< HTTP/1.1", 400),
            ("GET /> HTTP/1.1", 400),
            ("GET /{ HTTP/1.1", 400),
            ("GET /} HTTP/1.1", 400),
            ("GET /\\ HTTP/1.1", 400),
            ("GET /^ HTTP/1.1", 400),
            ("GET /` HTTP/1.1", 400),
            ("GET /| HTTP/1.1", 400),
            ("GET /[ HTTP/1.1", 400),
            ("GET /?a=\x01 HTTP/1.1", 400),
            ("GET /\x7f HTTP/1.1", 400),
            ("GET http://h/a HTTP/1.1", 200),
            ("GET http://[::1]:8080/a?b HTTP/1.1", 200),
            ("GET http://user@h/a HTTP/1.1", 400),
            ("GET http://h/a#f HTTP/1.1", 400),
            ("GET http://h</a HTTP/1.1", 400),
            ("GET http://h?<  HTTP/1.1", 400),
            ("GET ftp://h/a HTTP/1.1", 400),
            ("OPTIONS * HTTP/1.1", 200),
            ("GET * HTTP/1.1", 400),
            ("CONNECT h:443 HTTP/1.1", 200),
            ("CONNECT [::1]:443 HTTP/1.1", 200),
            ("CONNECT h HTTP/1.1", 400),
            ("CONNECT h: HTTP/1.1", 400),
            ("CONNECT :443 HTTP/1.1", 400),
            ("GET h:443 HTTP/1.1", 400),
        ];
        for (line, want) in table {
            let raw = format!("{line}\r\nHost: h\r\n\r\n");
            assert_eq!(status(&raw), *want, "{line:?}");
        }
        let mut storage = header_storage();
        let raw = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n".as_slice();
        assert_eq!(parse_head(raw, &mut storage, &HeadLimits::default()).unwrap().target, "/a");
    }

    #[test]
    fn a_higher_minor_version_is_read_as_http_1_1_with_its_fields() {
        // RFC 9110 §2.5: answered as the highest 1.x we speak; its fields as for 1.1.
        let limits = HeadLimits::default();
        let raw = b"POST /a?q HTTP/1.7\r\nHost: h\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n";
        let mut storage = header_storage();
        let head = parse_head(raw, &mut storage, &limits).unwrap();
        assert_eq!(head.version, Version::Http11);
        assert_eq!(
            (head.method, head.path, head.query),
            ("POST", "/a", Some("q"))
        );
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(head.headers.len(), 3);
        assert_eq!(head.header("x-a"), Some(&b"1"[..]));
        assert!(head.keep_alive);

        let no_host = b"GET / HTTP/1.2\r\n\r\n";
        let mut storage = header_storage();
        let error = parse_head(no_host, &mut storage, &limits).unwrap_err();
        assert_eq!(error, RequestError::BadHost);

        let few = HeadLimits {
            max_headers: 2,
            ..limits
        };
        let three = b"GET / HTTP/1.3\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        let mut storage = header_storage();
        let error = parse_head(three, &mut storage, &few).unwrap_err();
        assert_eq!(error, RequestError::TooManyHeaders);
        let mut storage = header_storage();
        let most = HeadLimits {
            max_headers: MAX_HEADERS_CAP,
            ..limits
        };
        let folded = b"GET / HTTP/1.3\r\nHost: h\r\nA: 1\r\n 2\r\n\r\n";
        let error = parse_head(folded, &mut storage, &most).unwrap_err();
        assert_eq!(error, RequestError::MalformedHead);
    }

    #[test]
    #[rustfmt::skip]
    fn framing_persistence_and_targets() {
        use Framing::*;
        const KEEP: bool = true;
        const CLOSE: bool = false;
        const EXPECT: bool = true;
        const NO: bool = false;
        // (request, framing, persistence, 100-continue, path, query)
        type Row = (&'static str, Framing, bool, bool, &'static str, Option<&'static str>);
        let table: &[Row] = &[
            ("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", Length(0), KEEP, NO, "/a", Some("b=1")),
            ("GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Length(0), CLOSE, NO, "/a", None),
            ("GET /a HTTP/1.0\r\n\r\n", Length(0), CLOSE, NO, "/a", None),
            ("GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Length(0), KEEP, NO, "/a", None),
            ("GET /a HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", Length(0), CLOSE, NO, "/a", None),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nExpect: 100-Continue\r\n\r\n", Length(12), KEEP, EXPECT, "/", None),
            ("POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n", Length(1), CLOSE, NO, "/", None),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", Chunked, KEEP, NO, "/", None),
            ("GET http://example.com/plaintext HTTP/1.1\r\nHost: x\r\n\r\n", Length(0), KEEP, NO, "/plaintext", None),
            ("GET HTTP://example.com HTTP/1.1\r\nHost: x\r\n\r\n", Length(0), KEEP, NO, "/", None),
            ("GET https://example.com?q HTTP/1.1\r\nHost: x\r\n\r\n", Length(0), KEEP, NO, "/", Some("q")),
        ];
        for &(raw, framing, keep_alive, expect, path, query) in table {
            let got = parse(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            let want = (framing, keep_alive, expect, path.to_string(), query.map(str::to_string));
            assert_eq!(got, want, "{raw:?}");
        }
    }

    #[test]
    fn scanner_finds_the_end_at_every_split() {
        let raw = b"\r\nPOST /md5 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
        let head_end = raw.len() - 2;
        let limits = HeadLimits::default();
        for split in 0..=raw.len() {
            let mut scanner = HeadScanner::default();
            let first = scanner.scan(&raw[..split], &limits).unwrap();
            let span = first
                .or_else(|| scanner.scan(raw, &limits).unwrap())
                .unwrap();
            assert_eq!(
                span,
                HeadSpan {
                    skip: 2,
                    end: head_end
                },
                "split at {split}"
            );
        }
    }

    #[test]
    fn scanner_fed_byte_by_byte_never_rescans() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..100 {
            raw.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(40)).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let limits = HeadLimits {
            max_head_size: 1 << 20,
            ..HeadLimits::default()
        };
        let mut scanner = HeadScanner::default();
        for len in 1..raw.len() {
            assert_eq!(scanner.scan(&raw[..len], &limits).unwrap(), None);
            assert_eq!(scanner.scanned, len);
        }
        assert!(scanner.scan(&raw, &limits).unwrap().is_some());
    }

    #[test]
    fn limits_give_431_and_414() {
        let limits = HeadLimits {
            max_head_size: 64,
            max_headers: 2,
            max_target_size: 32,
        };
        let scan = |raw: &[u8]| HeadScanner::default().scan(raw, &limits);
        // An unfinished request line longer than the head limit is a long target.
        assert_eq!(
            scan(format!("GET /{}", "a".repeat(80)).as_bytes()),
            Err(RequestError::TargetTooLong)
        );
        // A long head whose request line ended is just too large.
        assert_eq!(
            scan(format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(80)).as_bytes()),
            Err(RequestError::HeadTooLarge)
        );
        assert_eq!(
            scan(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(80)).as_bytes()),
            Err(RequestError::HeadTooLarge)
        );
        // A method that never ends is not a long target: 501 (RFC 9112 §3).
        assert_eq!(
            scan("A".repeat(80).as_bytes()),
            Err(RequestError::MethodTooLong)
        );
        // Empty lines before the request line count against the limit: the buffer holding
        // them and an unfinished head must never fill up without a verdict.
        let mut padded = "\r\n".repeat(20);
        padded.push_str(&format!("GET /{}", "a".repeat(24)));
        assert_eq!(padded.len(), 69);
        assert_eq!(scan(padded.as_bytes()), Err(RequestError::HeadTooLarge));
        let mut padded = "\r\n".repeat(20);
        padded.push_str("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(scan(padded.as_bytes()), Err(RequestError::HeadTooLarge));
        let parse = |raw: &str| {
            let mut storage = header_storage();
            parse_head(raw.as_bytes(), &mut storage, &limits).map(|_| ())
        };
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"),
            Err(RequestError::TooManyHeaders)
        );
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n"), Ok(()));
        assert_eq!(
            parse(&format!(
                "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
                "a".repeat(32)
            )),
            Err(RequestError::TargetTooLong)
        );
    }

    #[test]
    fn the_verdict_does_not_depend_on_where_reads_end() {
        let limits = HeadLimits {
            max_head_size: 64,
            max_headers: 8,
            max_target_size: 32,
        };
        let streams = [
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(90)),
            format!("{}GET /p HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n".repeat(31)),
            format!("{}GET /p HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n".repeat(40)),
            format!("{} / HTTP/1.1\r\n\r\n", "M".repeat(70)),
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(60)),
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ];
        for stream in &streams {
            let raw = stream.as_bytes();
            let whole = HeadScanner::default().scan(raw, &limits);
            for cut in 0..raw.len() {
                let mut scanner = HeadScanner::default();
                let split = match scanner.scan(&raw[..cut], &limits) {
                    Ok(None) => scanner.scan(raw, &limits),
                    decided => decided,
                };
                assert_eq!(split, whole, "{stream:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn newline_search_matches_a_plain_scan() {
        let mut bytes = vec![b'a'; 40];
        assert_eq!(find_newline(&bytes), None);
        for at in 0..40 {
            bytes[at] = b'\n';
            assert_eq!(find_newline(&bytes), Some(at), "LF at {at}");
            for later in at + 1..40 {
                bytes[later] = b'\n';
                assert_eq!(find_newline(&bytes), Some(at), "LFs at {at} and {later}");
                bytes[later] = b'a';
            }
            bytes[at] = 0x8a; // high bit set, low bits of LF: must not match
            assert_eq!(find_newline(&bytes), None);
            bytes[at] = b'a';
        }
    }

    #[test]
    fn decimal_parsing() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"0012"), Some(12));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1a"), None);
    }
}
