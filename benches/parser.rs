//! Parser micro-benchmarks: a typical browser request head, an 8 KiB head fed one byte per
//! read (incremental scan versus re-parsing from the start), and a 1 MiB chunked body.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use miohttpd::http::{header_storage, parse_head, BodyDecoder, Framing, HeadLimits, HeadScanner};

const BROWSER_HEAD: &[u8] = b"GET /static/app.js?v=12 HTTP/1.1\r\n\
Host: localhost:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: http://localhost:8080/index.html\r\n\
Connection: keep-alive\r\n\
Cookie: session=4f2a9c1e8b7d6e5f4a3b2c1d0e9f8a7b; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
Priority: u=2\r\n\r\n";

fn head_of_size(size: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    let mut i = 0;
    while head.len() + 64 < size {
        head.extend_from_slice(format!("X-Filler-{i:04}: {}\r\n", "v".repeat(40)).as_bytes());
        i += 1;
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn limits() -> HeadLimits {
    HeadLimits {
        max_head_size: 64 * 1024,
        max_headers: 1024,
        max_target_size: 8192,
    }
}

fn browser_head(c: &mut Criterion) {
    let limits = limits();
    let mut group = c.benchmark_group("head");
    group.throughput(Throughput::Bytes(BROWSER_HEAD.len() as u64));
    group.bench_function("browser request, scan + parse", |b| {
        b.iter(|| {
            let raw = black_box(BROWSER_HEAD);
            let span = HeadScanner::default().scan(raw, &limits).unwrap().unwrap();
            let mut storage = header_storage();
            let head = parse_head(&raw[span.skip..span.end], &mut storage, &limits).unwrap();
            black_box(head.framing);
        })
    });
    group.finish();
}

/// The point of the incremental scanner: one byte per read costs linear time in total.
fn byte_by_byte(c: &mut Criterion) {
    let limits = limits();
    let head = head_of_size(8192);
    let mut group = c.benchmark_group("8 KiB head, one byte per read");
    group.throughput(Throughput::Bytes(head.len() as u64));
    group.bench_function("incremental scan, one parse", |b| {
        b.iter(|| {
            let mut scanner = HeadScanner::default();
            for len in 1..head.len() {
                assert!(scanner.scan(&head[..len], &limits).unwrap().is_none());
            }
            let span = scanner.scan(&head, &limits).unwrap().unwrap();
            let mut storage = header_storage();
            black_box(parse_head(&head[span.skip..span.end], &mut storage, &limits).unwrap());
        })
    });
    // What a server that calls httparse from the start on every read does: quadratic.
    group.sample_size(10);
    group.bench_function("httparse from the start on every read", |b| {
        b.iter(|| {
            let mut headers = vec![httparse::EMPTY_HEADER; 1024];
            for len in 1..=head.len() {
                let mut request = httparse::Request::new(&mut headers);
                let status = request.parse(&head[..len]).unwrap();
                if status.is_complete() {
                    black_box(request.method);
                }
            }
        })
    });
    group.finish();
}

fn chunked_body(c: &mut Criterion) {
    const BODY: usize = 1 << 20;
    let mut group = c.benchmark_group("1 MiB chunked body");
    group.throughput(Throughput::Bytes(BODY as u64));
    for chunk in [256usize, 4096, 65536] {
        let mut encoded = Vec::with_capacity(BODY + BODY / chunk * 16);
        for piece in vec![0x5au8; BODY].chunks(chunk) {
            encoded.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            encoded.extend_from_slice(piece);
            encoded.extend_from_slice(b"\r\n");
        }
        encoded.extend_from_slice(b"0\r\n\r\n");
        group.bench_with_input(
            BenchmarkId::new("decode, chunk size", chunk),
            &encoded,
            |b, encoded| {
                b.iter(|| {
                    let mut decoder = BodyDecoder::new(Framing::Chunked, 8192);
                    let mut input = &encoded[..];
                    let mut total = 0;
                    loop {
                        let step = decoder.decode(input).unwrap();
                        total += black_box(step.data).len();
                        input = &input[step.consumed..];
                        if step.done {
                            break;
                        }
                    }
                    assert_eq!(total, BODY);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, browser_head, byte_by_byte, chunked_body);
criterion_main!(benches);
