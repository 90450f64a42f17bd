//! Uploads to `POST /` and `POST /md5`: bodies by Content-Length and chunked (chunk sizes,
//! extensions, trailers), a gigabyte streamed in flat server memory while other clients are
//! served, and real clients (curl, Python `requests`) talking to the server.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;

use md5::{Digest, Md5};

use common::{hex, md5_hex, post, post_chunked, Conn, PseudoRandom, Server};

const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// POSTs `request` on `conn` and checks the answer is the 32-hex-digit digest `expected`.
fn assert_digest(conn: &mut Conn, request: &[u8], expected: &str, case: &str) {
    conn.send(request);
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{case}: {response:?}");
    assert_eq!(response.text(), expected, "{case}");
    assert_eq!(
        response.header("content-length"),
        Some("32"),
        "{case}: {response:?}"
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{case}: {response:?}"
    );
}

#[test]
fn content_length_bodies_are_hashed() {
    // Digests from RFC 1321 and common knowledge, so the table does not trust our own md5.
    let known: [(&str, &[u8], &str); 4] = [
        ("empty", b"", EMPTY_MD5),
        ("a", b"a", "0cc175b9c0f1b6a831c399e269772661"),
        ("abc", b"abc", "900150983cd24fb0d6963f7d28e17f72"),
        (
            "quick brown fox",
            b"The quick brown fox jumps over the lazy dog",
            "9e107d9d372bb6826bd81d3542a419d6",
        ),
    ];
    // Sizes around the default 64 KiB read buffer, and one over a mebibyte.
    let sized =
        [65_535, 65_536, 65_537, (1 << 20) + 3].map(|len| PseudoRandom::bytes(len as u64, len));

    let server = Server::start();
    let mut conn = server.connect();
    for path in ["/", "/md5"] {
        for (name, body, digest) in known {
            assert_digest(
                &mut conn,
                &post(path, body),
                digest,
                &format!("{path} {name}"),
            );
        }
        for body in &sized {
            let case = format!("{path} {} random bytes", body.len());
            assert_digest(&mut conn, &post(path, body), &md5_hex(body), &case);
        }
    }
}

#[test]
fn chunked_bodies_are_hashed() {
    let head = "POST /md5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    #[rustfmt::skip]
    let literal: [(&str, &str, &[u8]); 9] = [
        ("one chunk",                      "5\r\nhello\r\n0\r\n\r\n",                              b"hello"),
        ("empty body",                     "0\r\n\r\n",                                            b""),
        ("extension with value",           "5;name=value\r\nhello\r\n0\r\n\r\n",                   b"hello"),
        ("extension without value",        "5;flag\r\nhello\r\n0\r\n\r\n",                         b"hello"),
        ("several extensions, one quoted", "5;a;b=1;c=\"x y\"\r\nhello\r\n0;last=yes\r\n\r\n",      b"hello"),
        ("trailer fields",                 "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n", b"hello"),
        ("uppercase hex size",             "A\r\nhelloworld\r\n0\r\n\r\n",                         b"helloworld"),
        ("lowercase hex size",             "a\r\nhelloworld\r\n0\r\n\r\n",                         b"helloworld"),
        ("sizes with leading zeros",       "0005\r\nhello\r\n000\r\n\r\n",                         b"hello"),
    ];
    let body = PseudoRandom::bytes(7, 300_000);

    let server = Server::start();
    let mut conn = server.connect();
    for (name, encoded, decoded) in literal {
        assert_digest(
            &mut conn,
            format!("{head}{encoded}").as_bytes(),
            &md5_hex(decoded),
            name,
        );
    }
    for chunk_size in [1, 7, 4_096, 65_536, 100_000, 300_000] {
        // One-byte chunks triple the request; a smaller body keeps that quick.
        let body = if chunk_size == 1 {
            &body[..5_000]
        } else {
            &body[..]
        };
        for path in ["/", "/md5"] {
            let case = format!("{path} in {chunk_size}-byte chunks");
            assert_digest(
                &mut conn,
                &post_chunked(path, body, chunk_size),
                &md5_hex(body),
                &case,
            );
        }
    }
}

#[test]
fn a_small_read_buffer_changes_nothing() {
    // Chunk headers and body bytes now straddle many reads, and bodies move from head
    // buffers to body buffers mid-stream.
    let server = Server::start_with(&[
        "--read-buffer-size",
        "1024",
        "--body-buffer-size",
        "1536",
        "--turn-bytes",
        "1",
    ]);
    let body = PseudoRandom::bytes(3, 200_000);
    let mut conn = server.connect();
    assert_digest(
        &mut conn,
        &post("/md5", &body),
        &md5_hex(&body),
        "Content-Length",
    );
    for chunk_size in [3, 1_000, 1_023, 1_024, 1_025, 5_000] {
        let case = format!("{chunk_size}-byte chunks");
        assert_digest(
            &mut conn,
            &post_chunked("/md5", &body, chunk_size),
            &md5_hex(&body),
            &case,
        );
    }
    let long_head = format!(
        "POST /md5 HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\nContent-Length: 5\r\n\r\nhello",
        "h".repeat(5_000)
    );
    assert_digest(
        &mut conn,
        long_head.as_bytes(),
        &md5_hex(b"hello"),
        "head longer than the buffer",
    );
}

#[test]
fn a_gigabyte_upload_streams_in_flat_memory_while_others_are_served() {
    const TOTAL: usize = 1 << 30;
    const BLOCK: usize = 256 * 1024;
    const POOL_SLACK: usize = 65_521;
    const MAX_GROWTH_KIB: u64 = 32 * 1024;

    let server = Server::start();
    server.assert_still_serves();
    let before = server.memory();

    let (halfway, reached_halfway) = mpsc::channel();
    let (resume, resumed) = mpsc::channel::<()>();
    let addr = server.addr();
    let uploader = thread::spawn(move || {
        let mut conn = Conn::connect(addr);
        conn.send(
            format!("POST /md5 HTTP/1.1\r\nHost: x\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes(),
        );
        // The body is made, hashed and sent a block at a time: it never exists whole. Each
        // block is a window into a random pool at its own offset, stamped with its index so no
        // two blocks are equal; a copy per block keeps even a debug build quick.
        let pool = PseudoRandom::bytes(0x0069_6761_6279_7465, BLOCK + POOL_SLACK);
        let mut digest = Md5::new();
        let mut block = vec![0; BLOCK];
        for i in 0..TOTAL / BLOCK {
            if i == TOTAL / BLOCK / 2 {
                halfway.send(()).unwrap();
                let _ = resumed.recv();
            }
            let offset = i * 40_503 % POOL_SLACK;
            block.copy_from_slice(&pool[offset..offset + BLOCK]);
            block[..8].copy_from_slice(&(i as u64).to_le_bytes());
            digest.update(&block);
            conn.send(&block);
        }
        (conn.read_response(), hex(&digest.finalize()))
    });

    // Half the body is in and the upload's connection is open mid-body: others get answers.
    if reached_halfway.recv().is_err() {
        panic!("uploader failed: {:?}", uploader.join().err());
    }
    let mut keep_alive = server.connect();
    for i in 0..20 {
        server.assert_still_serves();
        let body = format!("small upload {i}");
        assert_digest(
            &mut keep_alive,
            &post("/md5", body.as_bytes()),
            &md5_hex(body.as_bytes()),
            "during big upload",
        );
    }
    resume.send(()).unwrap();

    let (response, expected) = uploader.join().expect("uploader thread");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), expected);
    let after = server.memory();
    let growth = after.hwm_kib.saturating_sub(before.hwm_kib);
    assert!(
        growth < MAX_GROWTH_KIB,
        "peak RSS grew {growth} KiB during a streamed upload: before {before:?}, after {after:?}"
    );
}

/// A file in the temp directory, removed on drop.
struct ScratchFile(PathBuf);

impl ScratchFile {
    fn new(name: &str, contents: &[u8]) -> ScratchFile {
        let path = std::env::temp_dir().join(format!("miohttpd-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        ScratchFile(path)
    }

    fn at_path(&self) -> String {
        format!("@{}", self.0.display())
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a client tool; a missing tool fails the test, since skipping would hide a gap.
fn run_tool(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): run scripts/test.sh, which installs the test clients"
            )
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn curl(args: &[&str]) -> Output {
    run_tool(
        "curl",
        &["--silent", "--show-error", "--max-time", "60"]
            .iter()
            .chain(args)
            .copied()
            .collect::<Vec<_>>(),
    )
}

/// Bytes without CR or LF, which `curl -d` would strip.
fn text_without_newlines(len: usize) -> Vec<u8> {
    PseudoRandom::bytes(11, len)
        .iter()
        .map(|b| b'a' + b % 26)
        .collect()
}

#[test]
fn curl_data_binary_upload() {
    let server = Server::start();
    let body = PseudoRandom::bytes(5, 300_000);
    let file = ScratchFile::new("data-binary", &body);
    let output = curl(&[
        "-X",
        "POST",
        "--data-binary",
        &file.at_path(),
        &format!("{}/md5", server.url()),
    ]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), md5_hex(&body));
}

#[test]
fn curl_form_data_upload_with_headers_shown() {
    let server = Server::start();
    let body = text_without_newlines(100_000);
    let file = ScratchFile::new("form-data", &body);
    let output = curl(&[
        "-i",
        "-X",
        "POST",
        "-d",
        &file.at_path(),
        &format!("{}/", server.url()),
    ]);
    let shown = String::from_utf8_lossy(&output.stdout);
    let (head, digest) = shown
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in curl output {shown:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("server: miohttpd"),
        "{head}"
    );
    assert_eq!(digest, md5_hex(&body));
}

#[test]
fn curl_large_upload_uses_100_continue() {
    // curl asks `Expect: 100-continue` for bodies over 1 MiB and, without an answer, sends the
    // body after a second anyway; the verbose log shows whether the server did answer.
    let server = Server::start();
    let body = PseudoRandom::bytes(9, 3 << 20);
    let file = ScratchFile::new("large", &body);
    let output = curl(&[
        "-v",
        "-X",
        "POST",
        "--data-binary",
        &file.at_path(),
        &format!("{}/md5", server.url()),
    ]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("> Expect: 100-continue"),
        "curl did not ask for 100-continue:\n{log}"
    );
    assert!(
        log.contains("< HTTP/1.1 100 Continue"),
        "server sent no 100 Continue:\n{log}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), md5_hex(&body));
}

#[test]
fn curl_chunked_upload() {
    let server = Server::start();
    let body = PseudoRandom::bytes(13, 500_000);
    let file = ScratchFile::new("chunked", &body);
    let output = curl(&[
        "-v",
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &file.at_path(),
        &format!("{}/md5", server.url()),
    ]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("> Transfer-Encoding: chunked"),
        "curl did not send chunked:\n{log}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), md5_hex(&body));
}

/// Runs a Python script using `requests`; its last stdout lines are compared by the caller.
fn python_requests(script: &str, url: &str) -> Vec<String> {
    common::require_python_requests();
    let output = run_tool("python3", &["-c", script, url]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Prints status, content type, the server's digest, Python's digest and the framing used.
const PYTHON_REPORT: &str = r#"
sent = payload()
whole = sent if isinstance(sent, bytes) else b"".join(payload())
r = requests.post(sys.argv[1] + "/md5", data=sent)
print(r.status_code)
print(r.headers["Content-Type"])
print(r.text)
print(hashlib.md5(whole).hexdigest())
print(r.request.headers.get("Transfer-Encoding", "Content-Length: " + r.request.headers.get("Content-Length", "?")))
"#;

#[test]
fn python_requests_posts_bytes() {
    let server = Server::start();
    let script = format!(
        "import hashlib, sys, requests\n\
         def payload():\n    return bytes(range(256)) * 4000 + b'tail'\n\
         {PYTHON_REPORT}"
    );
    let lines = python_requests(&script, &server.url());
    let [status, content_type, served, local, framing] = &lines[..] else {
        panic!("unexpected python output {lines:?}");
    };
    assert_eq!(status, "200");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(served, local);
    assert_eq!(framing, "Content-Length: 1024004");
}

#[test]
fn python_requests_posts_a_generator_chunked() {
    let server = Server::start();
    let script = format!(
        "import hashlib, sys, requests\n\
         def payload():\n    return (bytes([i % 256]) * (i * 37 % 5000) for i in range(300))\n\
         {PYTHON_REPORT}"
    );
    let lines = python_requests(&script, &server.url());
    let [status, _content_type, served, local, framing] = &lines[..] else {
        panic!("unexpected python output {lines:?}");
    };
    assert_eq!(status, "200");
    assert_eq!(served, local);
    assert_eq!(framing, "chunked");
}
