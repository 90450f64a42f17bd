//! RESP2, the Redis wire protocol, as pure code over byte buffers: commands encoded into a
//! reused buffer, replies decoded incrementally from whatever bytes have arrived. It owns the
//! limits that keep a broken or hostile peer from costing unbounded memory (bulk length, array
//! length, nesting depth, line length, bytes per reply); every malformed, oversized or
//! truncated input is an error value, never a panic. It touches no socket (`link.rs` does).
//!
//! RESP2 only, not RESP3 (`HELLO 3`): the subscriber is a connection of its own in subscribe
//! mode, which RESP2 serves completely, and every type RESP3 adds (maps, sets, pushes,
//! doubles, ...) would be decoder surface to fuzz for nothing we use. A RESP3 type byte is an
//! error here. Spec: <https://redis.io/docs/latest/develop/reference/protocol-spec/>.

use std::fmt;

/// One decoded reply (or element of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`: a status line.
    Simple(Vec<u8>),
    /// `-ERR ...`: an error reply (the command failed; the connection is fine).
    Error(Vec<u8>),
    /// `:42`.
    Integer(i64),
    /// `$3 abc`: binary-safe bytes.
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`: the null bulk string or null array (RESP2 has both; nobody needs to
    /// tell them apart).
    Nil,
    /// `*N` followed by N values.
    Array(Vec<Value>),
}

impl Value {
    /// The bytes of a status line or a bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            // Lua numbers come back as integers, but a bulk "42" is as good.
            Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// What the decoder refuses. After any of them the connection is out of step with the peer:
/// the decoder stays failed and the connection must be rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// A type byte RESP2 does not have (RESP3 types included).
    UnknownType(u8),
    /// A length or integer that is not a decimal number in range.
    BadNumber,
    /// A line (status, error, integer, length) longer than `max_line` without its CRLF.
    LineTooLong,
    /// A bulk string longer than `max_bulk`.
    BulkTooLong,
    /// An array with more elements than `max_array`.
    ArrayTooLong,
    /// Arrays nested deeper than `max_depth`.
    TooDeep,
    /// One reply, all its elements counted, larger than `max_reply` bytes.
    ReplyTooLarge,
    /// A bulk string not followed by CRLF.
    BadTerminator,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            RespError::BadNumber => f.write_str("malformed number"),
            RespError::LineTooLong => f.write_str("line too long"),
            RespError::BulkTooLong => f.write_str("bulk string too long"),
            RespError::ArrayTooLong => f.write_str("array too long"),
            RespError::TooDeep => f.write_str("arrays nested too deep"),
            RespError::ReplyTooLarge => f.write_str("reply too large"),
            RespError::BadTerminator => f.write_str("bulk string without its CRLF"),
        }
    }
}

impl std::error::Error for RespError {}

/// Bounds on what one peer may make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string.
    pub max_bulk: usize,
    /// Most elements in one array.
    pub max_array: usize,
    /// Deepest nesting of arrays (1: an array of scalars).
    pub max_depth: usize,
    /// Longest status, error or number line, CRLF excluded.
    pub max_line: usize,
    /// Most wire bytes in one reply, all nested elements included. Decoded values cost at most
    /// a small multiple of this (an element's `Value` is 32 bytes, its smallest wire form 3).
    pub max_reply: usize,
}

impl Default for Limits {
    /// Enough for a comet message (the body limit is 1 MiB by default) and a catch-up read of
    /// a whole history, with room to spare; far below what would hurt the host.
    fn default() -> Self {
        Limits {
            max_bulk: 8 << 20,
            max_array: 1 << 16,
            max_depth: 4,
            max_line: 64 << 10,
            max_reply: 64 << 20,
        }
    }
}

/// Appends one command (`*N` of bulk strings, the only form Redis takes from clients) to
/// `out`, which the caller reuses between commands.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    // Decimal digits without a formatter: this runs once per argument of every command.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push(kind);
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// An array still collecting its elements.
#[derive(Debug)]
struct OpenArray {
    items: Vec<Value>,
    expected: usize,
}

/// One element parsed off the front of the buffer.
enum Element {
    Scalar(Value),
    ArrayStart(usize),
}

/// Incremental reply decoder. Feed it bytes as they arrive ([`Decoder::feed`]), then take
/// replies ([`Decoder::next`]) until it has none. An element is consumed only once it is
/// whole, and arrays in progress live on a stack, so no byte is parsed twice however the
/// reads fall (a bulk string's header is looked at again while its body is still arriving).
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
    /// Bytes after `pos` already searched for the CRLF of the element there.
    scanned: usize,
    stack: Vec<OpenArray>,
    /// Wire bytes of the reply in progress consumed so far.
    reply_bytes: usize,
    failed: Option<RespError>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            stack: Vec::new(),
            reply_bytes: 0,
            failed: None,
        }
    }

    /// Appends bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            // Parsed bytes go before the buffer would grow: it holds at most one unfinished
            // element plus what the last reads brought.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet part of a whole element.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether a reply is partly decoded or bytes of one are waiting: the peer owes us bytes.
    pub fn is_mid_reply(&self) -> bool {
        !self.stack.is_empty() || self.buffered() > 0
    }

    /// Forgets everything, for a new connection.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.scanned = 0;
        self.stack.clear();
        self.reply_bytes = 0;
        self.failed = None;
    }

    /// The next whole reply, `Ok(None)` when more bytes are needed.
    #[allow(clippy::should_implement_trait)] // fallible and resumable: not an Iterator
    pub fn next(&mut self) -> Result<Option<Value>, RespError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.next_inner() {
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
            ok => ok,
        }
    }

    fn next_inner(&mut self) -> Result<Option<Value>, RespError> {
        loop {
            let Some(element) = self.element()? else {
                return Ok(None);
            };
            let mut value = match element {
                Element::Scalar(v) => v,
                Element::ArrayStart(0) => Value::Array(Vec::new()),
                Element::ArrayStart(n) => {
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(RespError::TooDeep);
                    }
                    // Capacity grows with the elements that arrive, not with the count a
                    // peer claims.
                    self.stack.push(OpenArray {
                        items: Vec::with_capacity(n.min(16)),
                        expected: n,
                    });
                    continue;
                }
            };
            loop {
                let Some(top) = self.stack.last_mut() else {
                    self.reply_bytes = 0;
                    return Ok(Some(value));
                };
                top.items.push(value);
                if top.items.len() < top.expected {
                    break;
                }
                let done = self.stack.pop().expect("a top was just seen");
                value = Value::Array(done.items);
            }
        }
    }

    /// Parses one element at `pos` if it is whole, consuming it.
    fn element(&mut self) -> Result<Option<Element>, RespError> {
        let rest = &self.buf[self.pos..];
        let Some(&kind) = rest.first() else {
            return Ok(None);
        };
        if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
            return Err(RespError::UnknownType(kind));
        }
        // The line, CRLF excluded, is rest[1..eol]; a CRLF is looked for only as far as the
        // longest line allowed could reach, so a peer that never sends one is refused early.
        // The search resumes where the last one stopped: a line arriving a byte per read
        // costs linear time, not quadratic.
        let end = rest.len().min(self.limits.max_line + 3);
        let from = self.scanned.saturating_sub(1).min(end);
        let Some(eol) = rest[from..end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|at| from + at)
        else {
            if rest.len() > self.limits.max_line + 2 {
                return Err(RespError::LineTooLong);
            }
            self.scanned = end;
            return Ok(None);
        };
        let line = &rest[1..eol];
        let mut used = eol + 2;
        let element = match kind {
            b'+' => Element::Scalar(Value::Simple(line.to_vec())),
            b'-' => Element::Scalar(Value::Error(line.to_vec())),
            b':' => Element::Scalar(Value::Integer(parse_i64(line)?)),
            b'$' => match parse_length(line)? {
                None => Element::Scalar(Value::Nil),
                Some(len) => {
                    if len > self.limits.max_bulk {
                        return Err(RespError::BulkTooLong);
                    }
                    let total = used + len + 2;
                    // Refused before its bytes are waited for, let alone buffered.
                    if self.reply_bytes + total > self.limits.max_reply {
                        return Err(RespError::ReplyTooLarge);
                    }
                    if rest.len() < total {
                        self.scanned = eol + 1;
                        return Ok(None);
                    }
                    if &rest[used + len..total] != b"\r\n" {
                        return Err(RespError::BadTerminator);
                    }
                    let bytes = rest[used..used + len].to_vec();
                    used = total;
                    Element::Scalar(Value::Bulk(bytes))
                }
            },
            b'*' => match parse_length(line)? {
                None => Element::Scalar(Value::Nil),
                Some(n) if n > self.limits.max_array => return Err(RespError::ArrayTooLong),
                Some(n) => Element::ArrayStart(n),
            },
            _ => unreachable!("type checked above"),
        };
        self.reply_bytes += used;
        if self.reply_bytes > self.limits.max_reply {
            return Err(RespError::ReplyTooLarge);
        }
        self.pos += used;
        self.scanned = 0;
        Ok(Some(element))
    }
}

/// A RESP integer: an optional `-` and 1 to 19 digits, within i64.
fn parse_i64(line: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::BadNumber);
    }
    let mut n: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        n = n.checked_mul(10).ok_or(RespError::BadNumber)?;
        n = if negative {
            n.checked_sub(d)
        } else {
            n.checked_add(d)
        }
        .ok_or(RespError::BadNumber)?;
    }
    Ok(n)
}

/// A bulk or array length: `-1` is null, any other negative is an error.
fn parse_length(line: &[u8]) -> Result<Option<usize>, RespError> {
    match parse_i64(line)? {
        -1 => Ok(None),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| RespError::BadNumber),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &str) -> Value {
        Value::Bulk(b.as_bytes().to_vec())
    }

    /// Everything `input` decodes to with one feed, and how it ends.
    fn decode_all(limits: Limits, pieces: &[&[u8]]) -> (Vec<Value>, Option<RespError>) {
        let mut decoder = Decoder::new(limits);
        let mut values = Vec::new();
        for piece in pieces {
            decoder.feed(piece);
            loop {
                match decoder.next() {
                    Ok(Some(v)) => values.push(v),
                    Ok(None) => break,
                    Err(e) => return (values, Some(e)),
                }
            }
        }
        (values, None)
    }

    fn small() -> Limits {
        Limits {
            max_bulk: 10,
            max_array: 4,
            max_depth: 2,
            max_line: 12,
            max_reply: 30,
        }
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
        out.clear();
        let big = vec![b'x'; 1234];
        encode_command(&mut out, &[&big]);
        assert!(out.starts_with(b"*1\r\n$1234\r\nxxx"));
        assert_eq!(out.len(), 4 + 7 + 1234 + 2);
    }

    #[test]
    fn decodes_the_table_at_every_split_point() {
        use RespError::*;
        let limits = small();
        let table: &[(&[u8], Option<RespError>)] = &[
            (b"+OK\r\n", None),
            (b"-ERR no\r\n", None),
            (b":0\r\n:-12\r\n", None),
            (b"$3\r\nabc\r\n", None),
            (b"$0\r\n\r\n$-1\r\n*-1\r\n", None),
            (b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", None),
            (b"*0\r\n", None),
            (b"$3\r\nabcd\r\n", Some(BadTerminator)),
            (b"$11\r\n", Some(BulkTooLong)),
            (b"*5\r\n", Some(ArrayTooLong)),
            (b"*1\r\n*1\r\n*1\r\n", Some(TooDeep)),
            (b"%1\r\n", Some(UnknownType(b'%'))),
            (b">2\r\n", Some(UnknownType(b'>'))),
            (b":\r\n", Some(BadNumber)),
            (b":1x\r\n", Some(BadNumber)),
            (b":+1\r\n", Some(BadNumber)),
            (b":1-\r\n", Some(BadNumber)),
            (b":-\r\n", Some(BadNumber)),
            (b"$-2\r\n", Some(BadNumber)),
            (b"+abcdefghijklm\r\n", Some(LineTooLong)),
            (b"+abcdefghijklmnop", Some(LineTooLong)),
            (b"*4\r\n$10\r\naaaaaaaaaa\r\n$10\r\n", Some(ReplyTooLarge)),
            (b"+OK\r\n+x", None),
        ];
        for (input, error) in table {
            let (whole, whole_error) = decode_all(limits, &[input]);
            assert_eq!(
                whole_error,
                *error,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
            for at in 0..=input.len() {
                let (a, b) = input.split_at(at);
                assert_eq!(
                    decode_all(limits, &[a, b]),
                    (whole.clone(), whole_error),
                    "input {:?} split at {at}",
                    String::from_utf8_lossy(input)
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_all(limits, &bytes), (whole, whole_error));
        }
        // The values themselves, for the rows that decode.
        let expect: &[(&[u8], Vec<Value>)] = &[
            (b"+OK\r\n", vec![Value::Simple(b"OK".to_vec())]),
            (b"-ERR no\r\n", vec![Value::Error(b"ERR no".to_vec())]),
            (b"$3\r\nabc\r\n", vec![bulk("abc")]),
            (
                b"$0\r\n\r\n$-1\r\n*-1\r\n",
                vec![bulk(""), Value::Nil, Value::Nil],
            ),
            (
                b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
                vec![Value::Array(vec![
                    bulk("a"),
                    Value::Array(vec![Value::Integer(1)]),
                ])],
            ),
            (b"+OK\r\n+x", vec![Value::Simple(b"OK".to_vec())]),
            (b"$4\r\na\r\nb\r\n", vec![bulk("a\r\nb")]),
        ];
        for (input, values) in expect {
            assert_eq!(decode_all(limits, &[input]), (values.clone(), None));
        }
    }

    #[test]
    fn a_failed_decoder_stays_failed_until_reset() {
        let mut decoder = Decoder::new(small());
        decoder.feed(b"?\r\n+OK\r\n");
        assert_eq!(decoder.next(), Err(RespError::UnknownType(b'?')));
        assert_eq!(decoder.next(), Err(RespError::UnknownType(b'?')));
        decoder.reset();
        decoder.feed(b"+OK\r\n");
        assert_eq!(decoder.next(), Ok(Some(Value::Simple(b"OK".to_vec()))));
        assert!(!decoder.is_mid_reply());
    }

    #[test]
    fn the_reply_limit_counts_every_reply_afresh() {
        // Each reply is 20 bytes against a 30-byte limit: many of them in a row are fine.
        let one = b"*1\r\n$10\r\naaaaaaaaaa\r\n";
        let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 10).collect();
        let (values, error) = decode_all(small(), &[&many]);
        assert_eq!((values.len(), error), (10, None));
    }

    #[test]
    fn an_oversized_bulk_is_refused_from_its_header_alone() {
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(b"$999999999999\r\n");
        assert_eq!(decoder.next(), Err(RespError::BulkTooLong));
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(b"*99999999\r\n");
        assert_eq!(decoder.next(), Err(RespError::ArrayTooLong));
        for (number, value) in [
            (
                &b":9223372036854775807\r\n"[..],
                Ok(Some(Value::Integer(i64::MAX))),
            ),
            (
                b":-9223372036854775808\r\n",
                Ok(Some(Value::Integer(i64::MIN))),
            ),
            (b":9223372036854775808\r\n", Err(RespError::BadNumber)),
            (b"$18446744073709551617\r\n", Err(RespError::BadNumber)),
        ] {
            let mut decoder = Decoder::new(Limits::default());
            decoder.feed(number);
            assert_eq!(decoder.next(), value);
        }
    }

    #[test]
    fn a_line_without_crlf_is_held_only_up_to_the_line_limit() {
        let mut decoder = Decoder::new(small());
        decoder.feed(b"+abcdefghijkl");
        assert_eq!(decoder.next(), Ok(None));
        decoder.feed(b"\r");
        assert_eq!(decoder.next(), Ok(None));
        decoder.feed(b"x");
        assert_eq!(decoder.next(), Err(RespError::LineTooLong));
    }
}
