//! Request body framing: Content-Length and chunked decoders (RFC 9112 §6, §7.1) as pure
//! state machines over byte slices. Data comes back as slices of the input, never copied.

use super::error::ChunkError;
use super::head::Framing;

/// The longest chunk extension we skip per chunk-size line. RFC 9112 §7.1.1 lets a server
/// limit it; a few KiB covers every real use.
pub const MAX_CHUNK_EXTENSION: usize = 4096;

/// One step of decoding: `consumed` bytes of input were used, `data` (a slice of the input,
/// possibly empty) is body content, and `done` says the body is complete.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub consumed: usize,
    pub data: &'a [u8],
    pub done: bool,
}

/// Decodes one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    /// `max_trailer_size` bounds the trailer section of a chunked body.
    pub fn new(framing: Framing, max_trailer_size: usize) -> Self {
        match framing {
            Framing::Length(n) => BodyDecoder::Length { remaining: n },
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(max_trailer_size)),
        }
    }

    /// Decodes from the start of `input`, returning at most one run of data. Call again with
    /// the rest of the input until `done`, or until nothing is consumed (more bytes needed).
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, ChunkError> {
        match self {
            BodyDecoder::Length { remaining } => {
                let n = (*remaining).min(input.len() as u64) as usize;
                *remaining -= n as u64;
                Ok(Decoded {
                    consumed: n,
                    data: &input[..n],
                    done: *remaining == 0,
                })
            }
            BodyDecoder::Chunked(chunked) => chunked.decode(input),
        }
    }

    /// Body bytes still to come, when the framing says (chunked does not).
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length { remaining } => Some(*remaining),
            BodyDecoder::Chunked(_) => None,
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length { remaining } => *remaining == 0,
            BodyDecoder::Chunked(chunked) => chunked.state == ChunkState::Done,
        }
    }
}

/// Where the chunked decoder stands: each state names what the next byte must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Hex digits of a chunk size; `digits` catches a size line with none.
    Size {
        size: u64,
        digits: u32,
    },
    /// BWS after the size: only a `;` may follow it (RFC 9112 §7.1.1).
    SizeWhitespace {
        size: u64,
    },
    /// After a `;`: BWS, then a chunk-ext-name (`started` once its first byte is in).
    ExtensionName {
        size: u64,
        started: bool,
    },
    /// BWS after a name: `=` or `;` must follow.
    ExtensionAfterName {
        size: u64,
    },
    /// After `=`: BWS, then a token or a quoted-string.
    ExtensionValueStart {
        size: u64,
    },
    /// Inside a token value.
    ExtensionToken {
        size: u64,
    },
    /// Inside a quoted-string value; `escaped` right after its backslash.
    ExtensionQuoted {
        size: u64,
        escaped: bool,
    },
    /// After a value: `;` after BWS, or CR or `;` right after a closing quote (`bws` false).
    ExtensionAfterValue {
        size: u64,
        bws: bool,
    },
    /// The CR of a size line was seen; LF must follow.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    /// Chunk data ended; CR must follow, else the chunk was longer than declared.
    DataCr,
    DataLf,
    /// At the start of a trailer field line or of the final empty line.
    TrailerLineStart,
    TrailerLine {
        colon_seen: bool,
    },
    TrailerLf,
    /// The CR of the final empty line was seen; LF ends the body.
    EndLf,
    Done,
}

/// The chunked transfer coding (RFC 9112 §7.1). Extensions are skipped and trailers
/// discarded, both bounded; every line ending must be CRLF, since lenient line endings in
/// framing are what request smuggling feeds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
    extension_len: usize,
    trailer_len: usize,
    max_trailer_size: usize,
}

impl ChunkedDecoder {
    pub fn new(max_trailer_size: usize) -> Self {
        ChunkedDecoder {
            state: ChunkState::Size { size: 0, digits: 0 },
            extension_len: 0,
            trailer_len: 0,
            max_trailer_size,
        }
    }

    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data { remaining } => {
                    let n = remaining.min((input.len() - at) as u64) as usize;
                    self.state = match remaining - n as u64 {
                        0 => ChunkState::DataCr,
                        left => ChunkState::Data { remaining: left },
                    };
                    return Ok(Decoded {
                        consumed: at + n,
                        data: &input[at..at + n],
                        done: false,
                    });
                }
                state => {
                    self.state = self.step(state, input[at])?;
                    at += 1;
                }
            }
        }
        Ok(Decoded {
            consumed: at,
            data: &[],
            done: self.state == ChunkState::Done,
        })
    }

    /// Counts one more byte of a size line after its digits (whitespace and extensions),
    /// which RFC 9112 §7.1.1 lets a server bound, and moves on.
    fn extension(&mut self, next: ChunkState) -> Result<ChunkState, ChunkError> {
        self.extension_len += 1;
        if self.extension_len > MAX_CHUNK_EXTENSION {
            return Err(ChunkError::BadExtension);
        }
        Ok(next)
    }

    /// One framing byte: the next state, or why the framing is broken.
    fn step(&mut self, state: ChunkState, byte: u8) -> Result<ChunkState, ChunkError> {
        use ChunkState::*;
        Ok(match (state, byte) {
            (Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
                let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                let size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or(ChunkError::SizeOverflow)?;
                Size {
                    size,
                    digits: digits.saturating_add(1),
                }
            }
            (Size { digits: 0, .. }, _) => return Err(ChunkError::BadSize),
            (
                Size { .. }
                | SizeWhitespace { .. }
                | ExtensionName { .. }
                | ExtensionAfterName { .. }
                | ExtensionValueStart { .. }
                | ExtensionToken { .. }
                | ExtensionQuoted { .. }
                | ExtensionAfterValue { .. },
                b'\n',
            ) => return Err(ChunkError::BareLf),
            (Size { size, .. }, b'\r') => SizeLf { size },
            // chunk-size [ chunk-ext ] CRLF: whitespace after the size is the BWS before an
            // extension's `;`, never alone.
            (Size { size, .. } | SizeWhitespace { size }, b' ' | b'\t') => {
                self.extension(SizeWhitespace { size })?
            }
            (Size { size, .. } | SizeWhitespace { size }, b';') => {
                self.extension(ExtensionName {
                    size,
                    started: false,
                })?
            }
            (Size { .. } | SizeWhitespace { .. }, _) => return Err(ChunkError::BadSize),
            // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
            (
                ExtensionName {
                    size,
                    started: true,
                },
                b'\r',
            ) => SizeLf { size },
            (ExtensionName { size, started }, _) => {
                let next = match byte {
                    _ if is_tchar(byte) => ExtensionName {
                        size,
                        started: true,
                    },
                    b' ' | b'\t' if !started => ExtensionName { size, started },
                    b' ' | b'\t' => ExtensionAfterName { size },
                    b'=' if started => ExtensionValueStart { size },
                    b';' if started => ExtensionName {
                        size,
                        started: false,
                    },
                    _ => return Err(ChunkError::BadExtension),
                };
                self.extension(next)?
            }
            (ExtensionAfterName { size }, _) => {
                let next = match byte {
                    b' ' | b'\t' => ExtensionAfterName { size },
                    b'=' => ExtensionValueStart { size },
                    b';' => ExtensionName {
                        size,
                        started: false,
                    },
                    _ => return Err(ChunkError::BadExtension),
                };
                self.extension(next)?
            }
            // chunk-ext-val = token / quoted-string
            (ExtensionValueStart { size }, _) => {
                let next = match byte {
                    b' ' | b'\t' => ExtensionValueStart { size },
                    b'"' => ExtensionQuoted {
                        size,
                        escaped: false,
                    },
                    _ if is_tchar(byte) => ExtensionToken { size },
                    _ => return Err(ChunkError::BadExtension),
                };
                self.extension(next)?
            }
            (ExtensionToken { size }, b'\r') => SizeLf { size },
            (ExtensionToken { size }, _) => {
                let next = match byte {
                    _ if is_tchar(byte) => ExtensionToken { size },
                    b' ' | b'\t' => ExtensionAfterValue { size, bws: true },
                    b';' => ExtensionName {
                        size,
                        started: false,
                    },
                    _ => return Err(ChunkError::BadExtension),
                };
                self.extension(next)?
            }
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 §5.6.4)
            (
                ExtensionQuoted {
                    size,
                    escaped: true,
                },
                _,
            ) => {
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                if is_control(byte) {
                    return Err(ChunkError::BadExtension);
                }
                self.extension(ExtensionQuoted {
                    size,
                    escaped: false,
                })?
            }
            (
                ExtensionQuoted {
                    size,
                    escaped: false,
                },
                _,
            ) => {
                let next = match byte {
                    b'\\' => ExtensionQuoted {
                        size,
                        escaped: true,
                    },
                    b'"' => ExtensionAfterValue { size, bws: false },
                    // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                    b'\t' | b' '..=b'~' | 0x80..=0xff => ExtensionQuoted {
                        size,
                        escaped: false,
                    },
                    // A CR here leaves the string unterminated; other controls are not qdtext.
                    _ => return Err(ChunkError::BadExtension),
                };
                self.extension(next)?
            }
            (ExtensionAfterValue { size, bws: false }, b'\r') => SizeLf { size },
            (ExtensionAfterValue { size, .. }, _) => {
                let next = match byte {
                    b' ' | b'\t' => ExtensionAfterValue { size, bws: true },
                    b';' => ExtensionName {
                        size,
                        started: false,
                    },
                    _ => return Err(ChunkError::BadExtension),
                };
                self.extension(next)?
            }
            (SizeLf { size }, b'\n') => {
                self.extension_len = 0;
                match size {
                    0 => TrailerLineStart,
                    size => Data { remaining: size },
                }
            }
            (SizeLf { .. }, _) => return Err(ChunkError::BareLf),
            (DataCr, b'\r') => DataLf,
            (DataCr, _) => return Err(ChunkError::MissingCrlf),
            (DataLf, b'\n') => Size { size: 0, digits: 0 },
            (DataLf, _) => return Err(ChunkError::MissingCrlf),
            (TrailerLineStart, b'\r') => EndLf,
            (TrailerLineStart | TrailerLine { .. }, b'\n') => return Err(ChunkError::BareLf),
            // A line starting with whitespace would be obs-fold; one starting with ':' has no name.
            (TrailerLineStart, b' ' | b'\t' | b':') => return Err(ChunkError::BadTrailer),
            (TrailerLineStart | TrailerLine { .. }, _) => {
                self.trailer_len += 1;
                if self.trailer_len > self.max_trailer_size {
                    return Err(ChunkError::TrailerTooLarge);
                }
                let colon_seen = state == (TrailerLine { colon_seen: true });
                match byte {
                    b'\r' if colon_seen => TrailerLf,
                    b':' => TrailerLine { colon_seen: true },
                    b'\r' => return Err(ChunkError::BadTrailer),
                    _ if is_control(byte) => return Err(ChunkError::BadTrailer),
                    _ => TrailerLine { colon_seen },
                }
            }
            (TrailerLf, b'\n') => TrailerLineStart,
            (TrailerLf, _) => return Err(ChunkError::BareLf),
            (EndLf, b'\n') => Done,
            (EndLf, _) => return Err(ChunkError::BareLf),
            (Data { .. } | Done, _) => unreachable!("data and done are handled by decode"),
        })
    }
}

/// tchar (RFC 9110 §5.6.2): the bytes of an extension's name or token value.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Bytes no field value may contain (RFC 9110 §5.5): controls other than HTAB.
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; returns the body, or the error.
    fn decode_in_pieces(
        framing: Framing,
        input: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut decoder = BodyDecoder::new(framing, 64);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut used = 0;
        for part in input.chunks(piece.max(1)) {
            pending.extend_from_slice(part);
            loop {
                let step = decoder.decode(&pending)?;
                body.extend_from_slice(step.data);
                let (consumed, done) = (step.consumed, step.done);
                pending.drain(..consumed);
                used += consumed;
                if done {
                    return Ok((body, used));
                }
                if consumed == 0 {
                    break;
                }
            }
        }
        Err(ChunkError::MissingCrlf).map(|()| (body, used))
    }

    #[test]
    #[rustfmt::skip]
    fn valid_chunked_bodies_at_every_piece_size() {
        let table: &[(&str, &[u8], &[u8])] = &[
            ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                "two chunks",
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                b"hello world",
            ),
            ("empty body", b"0\r\n\r\n", b""),
            (
                "hex sizes",
                b"A\r\n0123456789\r\nf\r\nabcdefghijklmno\r\n0\r\n\r\n",
                b"0123456789abcdefghijklmno",
            ),
            (
                "upper hex",
                b"00B\r\nhello world\r\n0\r\n\r\n",
                b"hello world",
            ),
            (
                "extensions",
                b"5;name=value;flag\r\nhello\r\n0;last\r\n\r\n",
                b"hello",
            ),
            (
                "quoted extension",
                b"5 ; n=\"a b;c\"\r\nhello\r\n0\r\n\r\n",
                b"hello",
            ),
            ("token extension", b"5;a=b\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("BWS before ;", b"5 ;a=\"q\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("escaped quote", b"5;a=\"q\\\"x\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("BWS everywhere", b"5 \t; a = b ;c\t=\t\"\" ; d\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("quoted obs-text and pairs", b"5;a=\"\xe9\\\t\\\\\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("names and flags", b"5;a;b;c=d;e\r\nhello\r\n0;x=\"y\"\r\n\r\n", b"hello"),
            (
                "trailers",
                b"5\r\nhello\r\n0\r\nX-Digest: abc\r\nX-Other:\r\n\r\n",
                b"hello",
            ),
            ("body with CRLF", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n"),
        ];
        for (name, input, want) in table {
            for piece in 1..=input.len() {
                let (body, used) = decode_in_pieces(Framing::Chunked, input, piece)
                    .unwrap_or_else(|e| panic!("{name} piece {piece}: {e:?}"));
                assert_eq!(&body[..], *want, "{name} piece {piece}");
                assert_eq!(used, input.len(), "{name} piece {piece}");
            }
        }
    }

    #[test]
    #[rustfmt::skip]
    fn broken_chunked_framing_table() {
        let table: &[(&str, &[u8], ChunkError)] = &[
            ("no size", b"\r\n", ChunkError::BadSize),
            ("bad hex", b"zz\r\n", ChunkError::BadSize),
            ("size then junk", b"5x\r\nhello\r\n", ChunkError::BadSize),
            ("negative", b"-5\r\n", ChunkError::BadSize),
            (
                "overflow",
                b"fffffffffffffffff\r\n",
                ChunkError::SizeOverflow,
            ),
            (
                "longer than declared",
                b"5\r\nhelloEXTRA\r\n0\r\n\r\n",
                ChunkError::MissingCrlf,
            ),
            (
                "missing CRLF after data",
                b"5\r\nhello0\r\n\r\n",
                ChunkError::MissingCrlf,
            ),
            (
                "CR without LF after data",
                b"5\r\nhello\rX",
                ChunkError::MissingCrlf,
            ),
            (
                "bare LF after size",
                b"5\nhello\r\n0\r\n\r\n",
                ChunkError::BareLf,
            ),
            ("CR then junk after size", b"5\rXhello", ChunkError::BareLf),
            (
                "bare LF after data",
                b"5\r\nhello\n0\r\n\r\n",
                ChunkError::MissingCrlf,
            ),
            ("bare LF final", b"0\r\n\n", ChunkError::BareLf),
            (
                "control in extension",
                b"5;a\x01\r\nhello",
                ChunkError::BadExtension,
            ),
            // RFC 9112 §7.1, §7.1.1: BWS only before `;` and around `=`; names and token
            // values are tokens, quoted values end.
            ("space before CRLF", b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            ("tab before CRLF", b"5\t\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            ("empty extension", b"5;\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
            ("BWS only after ;", b"5; \r\nhello", ChunkError::BadExtension),
            ("non-token in name", b"5;bad[=x\r\nhello", ChunkError::BadExtension),
            ("non-token in value", b"5;a=b@c\r\nhello", ChunkError::BadExtension),
            ("space inside a value", b"5;a=b c\r\nhello", ChunkError::BadExtension),
            ("BWS before CRLF after name", b"5;a \r\nhello", ChunkError::BadExtension),
            ("BWS before CRLF after value", b"5;a=b \r\nhello", ChunkError::BadExtension),
            ("no name", b"5;=b\r\nhello", ChunkError::BadExtension),
            ("no value", b"5;a=\r\nhello", ChunkError::BadExtension),
            ("two ;", b"5;;a\r\nhello", ChunkError::BadExtension),
            ("unterminated quote", b"5;a=\"q\r\nhello\r\n0\r\n\r\n", ChunkError::BadExtension),
            ("text after a quote", b"5;a=\"q\"x\r\nhello", ChunkError::BadExtension),
            ("control in a quote", b"5;a=\"q\x01\"\r\nhello", ChunkError::BadExtension),
            ("escaped control", b"5;a=\"q\\\x01\"\r\nhello", ChunkError::BadExtension),
            ("bare LF in a quote", b"5;a=\"q\nhello", ChunkError::BareLf),
            ("non-ASCII in a name", b"5;\xe9\r\nhello", ChunkError::BadExtension),
            (
                "obs-fold trailer",
                b"0\r\nA: 1\r\n 2\r\n\r\n",
                ChunkError::BadTrailer,
            ),
            (
                "trailer without colon",
                b"0\r\nnocolon\r\n\r\n",
                ChunkError::BadTrailer,
            ),
            (
                "trailer without name",
                b"0\r\n: v\r\n\r\n",
                ChunkError::BadTrailer,
            ),
            (
                "trailer too large",
                &[b"0\r\nX: ".as_slice(), &[b'a'; 100], b"\r\n\r\n"].concat(),
                ChunkError::TrailerTooLarge,
            ),
        ];
        for (name, input, want) in table {
            for piece in [1, 2, 3, input.len()] {
                assert_eq!(
                    decode_in_pieces(Framing::Chunked, input, piece),
                    Err(*want),
                    "{name} piece {piece}"
                );
            }
        }
        let long_extension = [b"1;".as_slice(), &[b'e'; MAX_CHUNK_EXTENSION + 1]].concat();
        assert_eq!(
            decode_in_pieces(Framing::Chunked, &long_extension, 7),
            Err(ChunkError::BadExtension)
        );
        // Whitespace counts against the same bound.
        let long_bws = [b"1".as_slice(), &[b' '; MAX_CHUNK_EXTENSION + 1]].concat();
        assert_eq!(
            decode_in_pieces(Framing::Chunked, &long_bws, 7),
            Err(ChunkError::BadExtension)
        );
        // The bound is per size line: many extensions, each under it, are fine.
        let quoted = format!("1;e=\"{}\"\r\nx\r\n", "q".repeat(MAX_CHUNK_EXTENSION - 8));
        let many = [quoted.repeat(3).as_bytes(), b"0\r\n\r\n"].concat();
        assert_eq!(
            decode_in_pieces(Framing::Chunked, &many, 5).map(|(body, _)| body),
            Ok(b"xxx".to_vec())
        );
    }

    #[test]
    fn decoding_stops_exactly_at_the_end_of_the_body() {
        let mut decoder = BodyDecoder::new(Framing::Chunked, 64);
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let first = decoder.decode(input).unwrap();
        assert_eq!(
            (first.consumed, first.data, first.done),
            (6, &b"abc"[..], false)
        );
        let rest = decoder.decode(&input[6..]).unwrap();
        assert_eq!((rest.consumed, rest.done), (7, true));
        assert!(decoder.is_done());

        let mut length = BodyDecoder::new(Framing::Length(3), 64);
        let step = length.decode(b"abcdef").unwrap();
        assert_eq!(
            (step.consumed, step.data, step.done),
            (3, &b"abc"[..], true)
        );
    }

    #[test]
    fn length_bodies_at_every_piece_size() {
        let input = b"0123456789";
        for piece in 1..=input.len() {
            let (body, used) = decode_in_pieces(Framing::Length(10), input, piece).unwrap();
            assert_eq!((&body[..], used), (&input[..], 10));
        }
        let mut empty = BodyDecoder::new(Framing::Length(0), 64);
        assert!(empty.decode(b"").unwrap().done);
    }
}
