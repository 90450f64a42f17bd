//! Blocking HTTP/1.1 exchanges that check a server answers what a benchmark relies on, before
//! any load is put on it: keep-alive and pipelined `GET /plaintext`, one whole response with a
//! Content-Length, chunked or until-close body, and a one-shot request's body.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::peers::PLAINTEXT_BODY;

/// `requests` sequential keep-alive `GET /plaintext` on one connection, sent `depth` at a
/// time in one write; every answer must be a 200 with [`PLAINTEXT_BODY`]. Returns one
/// response's size in bytes, head and body.
pub fn check_plaintext(addr: SocketAddr, requests: usize, depth: usize) -> Result<usize, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET /plaintext HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut buf: Vec<u8> = Vec::new();
    let mut size = 0;
    let mut answered = 0;
    while answered < requests {
        let batch = depth.max(1).min(requests - answered);
        stream
            .write_all(request.repeat(batch).as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        for _ in 0..batch {
            size = read_plaintext_response(&mut stream, &mut buf)
                .map_err(|e| format!("response {}: {e}", answered + 1))?;
            answered += 1;
        }
    }
    Ok(size)
}

/// Reads one response from `stream` (bytes beyond it stay in `buf`), checks it, returns its size.
fn read_plaintext_response(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(size) = take_plaintext_response(buf)? {
            return Ok(size);
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a whole response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The first response in `buf`, if whole: checked, removed, its size returned.
fn take_plaintext_response(buf: &mut Vec<u8>) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) =
        response.parse(buf).map_err(|e| format!("bad head: {e}"))?
    else {
        return Ok(None);
    };
    let length: usize = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .ok_or("no Content-Length")?;
    if buf.len() < head + length {
        return Ok(None);
    }
    if response.code != Some(200) || &buf[head..head + length] != PLAINTEXT_BODY.as_bytes() {
        return Err(format!(
            "want 200 {PLAINTEXT_BODY:?}, got {:?}",
            String::from_utf8_lossy(&buf[..head + length])
        ));
    }
    buf.drain(..head + length);
    Ok(Some(head + length))
}

/// One request on a fresh connection, read to the close; the response body.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_string()),
        None => Err(io::Error::other(format!("no response head in {text:?}"))),
    }
}

/// A whole response: its status and body, framing undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The status and the start of the body, for error messages.
    pub fn summary(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
        format!("status {} body {body:?}", self.status)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one response: the head via httparse, then a Content-Length, chunked or until-close
/// body (the last two read to the close: use them only with `Connection: close`).
pub fn read_response(stream: &mut impl Read) -> Result<Response, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    let (status, head_len, framing) = loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("reading response: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before a complete response head ({} bytes: {:?})",
                buf.len(),
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let mut framing = Framing::UntilClose;
                for h in parsed.headers.iter() {
                    let value = String::from_utf8_lossy(h.value);
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let n = value
                            .trim()
                            .parse()
                            .map_err(|_| format!("bad Content-Length {value:?}"))?;
                        framing = Framing::Length(n);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                        && value.to_ascii_lowercase().contains("chunked")
                    {
                        framing = Framing::Chunked;
                    }
                }
                break (parsed.code.unwrap_or(0), len, framing);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("bad response head: {e}")),
        }
    };
    let mut body = buf.split_off(head_len);
    match framing {
        Framing::Length(n) => {
            while body.len() < n {
                let got = stream
                    .read(&mut chunk)
                    .map_err(|e| format!("reading body: {e}"))?;
                if got == 0 {
                    return Err(format!("body ended at {} of {n} bytes", body.len()));
                }
                body.extend_from_slice(&chunk[..got]);
            }
            body.truncate(n);
        }
        Framing::Chunked | Framing::UntilClose => {
            stream
                .read_to_end(&mut body)
                .map_err(|e| format!("reading body: {e}"))?;
            if framing == Framing::Chunked {
                body = dechunk(&body)?;
            }
        }
    }
    Ok(Response { status, body })
}

/// A chunked body's data (RFC 9112 §7.1), extensions ignored, trailers not read.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without CRLF")?;
        let line = String::from_utf8_lossy(&raw[..eol]);
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| format!("chunk size {line:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAINTEXT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";

    #[test]
    fn plaintext_responses_are_taken_one_at_a_time_across_reads() {
        let two = [PLAINTEXT, PLAINTEXT].concat();
        // Delivered in 7-byte pieces: the parse must wait for whole responses.
        let mut reader = Pieces(two.chunks(7).map(<[u8]>::to_vec).collect(), 0);
        let mut buf = Vec::new();
        assert_eq!(
            read_plaintext_response(&mut reader, &mut buf),
            Ok(PLAINTEXT.len())
        );
        assert_eq!(
            read_plaintext_response(&mut reader, &mut buf),
            Ok(PLAINTEXT.len())
        );
        assert!(buf.is_empty());
        assert!(
            read_plaintext_response(&mut reader, &mut buf).is_err(),
            "closed"
        );
    }

    #[test]
    fn a_wrong_plaintext_answer_is_an_error() {
        let mut buf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec();
        assert!(take_plaintext_response(&mut buf).is_err());
        let mut buf = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        assert!(take_plaintext_response(&mut buf).is_err());
        let mut buf = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        assert!(
            take_plaintext_response(&mut buf).is_err(),
            "no Content-Length"
        );
    }

    #[test]
    fn responses_are_read_by_length_chunks_or_close() {
        let by_length = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello-extra";
        assert_eq!(
            read_response(&mut &by_length[..]),
            Ok(Response {
                status: 200,
                body: b"hello".to_vec()
            })
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\n\r\n";
        assert_eq!(read_response(&mut &chunked[..]).unwrap().body, b"hello!");
        let until_close = b"HTTP/1.0 413 Payload Too Large\r\n\r\ntoo big";
        let r = read_response(&mut &until_close[..]).unwrap();
        assert_eq!(r.status, 413);
        assert_eq!(r.summary(), "status 413 body \"too big\"");
        assert!(
            read_response(&mut &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..]).is_err()
        );
        assert!(read_response(&mut &b"HTTP/1.1 200"[..]).is_err());
    }

    #[test]
    fn dechunk_rejects_bad_sizes_and_truncation() {
        assert_eq!(dechunk(b"0\r\n\r\n"), Ok(Vec::new()));
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nhel").is_err());
        assert!(dechunk(b"5").is_err());
    }

    /// A reader that hands out the given pieces one per read, then end of stream.
    struct Pieces(Vec<Vec<u8>>, usize);

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let Some(piece) = self.0.get(self.1) else {
                return Ok(0);
            };
            out[..piece.len()].copy_from_slice(piece);
            self.1 += 1;
            Ok(piece.len())
        }
    }
}
