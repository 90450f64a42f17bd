//! The access log: one line per answered request in nginx's `combined` format,
//!
//! ```text
//! $remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//! ```
//!
//! appended to a reused buffer and written in batches: when the buffer passes
//! [`BATCH_BYTES`], at most [`BATCH_DELAY`] after its oldest line was added (the loop's poll
//! timeout brings it back), and when the log is dropped. Never one write per request.
//!
//! A request's half of its line (request line, Referer, User-Agent) is rendered when its head
//! is parsed, into an [`Entry`] whose buffer comes from a free list, because the head's bytes
//! are gone by the time an upload or a parked waiter is answered. Client-sent bytes are
//! escaped as nginx does (`"`, `\`, control bytes and bytes above 0x7e become `\xHH`), so no
//! client can end a line early or forge another.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::stats::Stats;
use super::syscalls::LogWriter;
use crate::config::LogTarget;
use crate::http::response::push_decimal;
use crate::http::{Head, Version};
use crate::sys;

/// Buffered lines past this size are written at once.
pub const BATCH_BYTES: usize = 64 * 1024;
/// The longest a line waits in the buffer.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Entry buffers kept for reuse; one is lent per request in flight.
const MAX_FREE_ENTRIES: usize = 256;
/// An entry buffer that grew past this (a huge User-Agent) is freed rather than kept.
const MAX_POOLED_ENTRY: usize = 4096;

/// The request's half of a log line, kept from its head until its response.
#[derive(Debug)]
pub struct Entry {
    /// `"$request"` then, from `split`, ` "$http_referer" "$http_user_agent"`.
    text: Vec<u8>,
    split: usize,
}

pub struct AccessLog {
    /// None: logging is off and every call is a no-op.
    sink: Option<Sink>,
}

struct Sink {
    file: LogWriter<File>,
    batch: Vec<u8>,
    /// When the oldest line still in `batch` was added.
    oldest: Option<Instant>,
    free_entries: Vec<Vec<u8>>,
    clock: LocalClock,
    /// A failed write was reported; later failures stay quiet.
    failed: bool,
}

impl AccessLog {
    pub fn off() -> Self {
        AccessLog { sink: None }
    }

    /// Opens the log's file (appending, created if missing) or duplicates stdout. Local time
    /// is looked up once here, so the time zone file is read before the loop starts.
    pub fn open(target: Option<&LogTarget>) -> io::Result<Self> {
        let Some(target) = target else {
            return Ok(AccessLog::off());
        };
        let file = match target {
            LogTarget::Stdout => File::from(io::stdout().as_fd().try_clone_to_owned()?),
            LogTarget::File(path) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        };
        let mut clock = LocalClock::default();
        clock.render(SystemTime::now());
        Ok(AccessLog {
            sink: Some(Sink {
                file: LogWriter::new(file),
                batch: Vec::with_capacity(BATCH_BYTES + MAX_POOLED_ENTRY),
                oldest: None,
                free_entries: Vec::new(),
                clock,
                failed: false,
            }),
        })
    }

    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// Renders the request's half of its line; None when logging is off.
    pub fn begin(&mut self, head: &Head<'_>) -> Option<Entry> {
        let sink = self.sink.as_mut()?;
        let mut text = sink.free_entries.pop().unwrap_or_default();
        text.push(b'"');
        escape_into(&mut text, head.method.as_bytes());
        text.push(b' ');
        escape_into(&mut text, head.target.as_bytes());
        text.extend_from_slice(match head.version {
            Version::Http10 => b" HTTP/1.0\"",
            Version::Http11 => b" HTTP/1.1\"",
        });
        let split = text.len();
        for name in ["referer", "user-agent"] {
            text.extend_from_slice(b" \"");
            match head.header(name) {
                Some(value) => escape_into(&mut text, value),
                None => text.push(b'-'),
            }
            text.push(b'"');
        }
        Some(Entry { text, split })
    }

    /// Appends the line of an answered request; `entry` is None for a request whose head could
    /// not be parsed (its request shows as `"-"`). Writes the batch once it is large enough.
    pub fn finish(
        &mut self,
        entry: Option<Entry>,
        peer: IpAddr,
        status: u16,
        body_bytes: u64,
        now: Instant,
        stats: &mut Stats,
    ) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        let time = sink.clock.render(SystemTime::now());
        let line = &mut sink.batch;
        // IpAddr's Display writes into a stack buffer; no allocation.
        let _ = write!(line, "{peer} - - [");
        line.extend_from_slice(time);
        line.extend_from_slice(b"] ");
        let (request, headers): (&[u8], &[u8]) = match &entry {
            Some(entry) => entry.text.split_at(entry.split),
            None => (b"\"-\"", b" \"-\" \"-\""),
        };
        line.extend_from_slice(request);
        line.push(b' ');
        push_decimal(line, u64::from(status));
        line.push(b' ');
        push_decimal(line, body_bytes);
        line.extend_from_slice(headers);
        line.push(b'\n');
        sink.oldest.get_or_insert(now);
        if let Some(mut text) = entry.map(|e| e.text) {
            if sink.free_entries.len() < MAX_FREE_ENTRIES && text.capacity() <= MAX_POOLED_ENTRY {
                text.clear();
                sink.free_entries.push(text);
            }
        }
        if sink.batch.len() >= BATCH_BYTES {
            sink.write_batch(stats);
        }
    }

    /// Gives back an entry that will not be logged.
    pub fn discard(&mut self, entry: Entry) {
        if let Some(sink) = self.sink.as_mut() {
            if sink.free_entries.len() < MAX_FREE_ENTRIES {
                let mut text = entry.text;
                text.clear();
                sink.free_entries.push(text);
            }
        }
    }

    /// When the oldest buffered line must be written, if any line is buffered.
    pub fn flush_due(&self) -> Option<Instant> {
        self.sink.as_ref()?.oldest.map(|at| at + BATCH_DELAY)
    }

    /// Writes the batch if its oldest line has waited long enough.
    pub fn flush_if_due(&mut self, now: Instant, stats: &mut Stats) {
        if self.flush_due().is_some_and(|due| now >= due) {
            self.flush(stats);
        }
    }

    pub fn flush(&mut self, stats: &mut Stats) {
        if let Some(sink) = self.sink.as_mut() {
            sink.write_batch(stats);
        }
    }
}

impl Drop for AccessLog {
    /// The lines of the last second are not lost when the loop ends.
    fn drop(&mut self) {
        self.flush(&mut Stats::default());
    }
}

impl Sink {
    /// One write(2) per call the kernel needs: usually exactly one for the whole batch. A
    /// failed batch is dropped (reported once) rather than retried: the log must not hold up
    /// serving.
    fn write_batch(&mut self, stats: &mut Stats) {
        if let Err(e) = self.file.write_all(&self.batch, stats) {
            if !self.failed {
                eprintln!("miohttpd: access log: {e}; lines are being dropped");
                self.failed = true;
            }
        }
        self.batch.clear();
        self.oldest = None;
    }
}

/// Appends `bytes` with `"`, `\`, control bytes and bytes above 0x7e as `\xHH` (as nginx does).
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
    }
}

/// `$time_local` (`10/Oct/2000:13:55:36 -0700`), rendered at most once per second.
#[derive(Default)]
struct LocalClock {
    second: Option<u64>,
    text: Vec<u8>,
}

impl LocalClock {
    fn render(&mut self, now: SystemTime) -> &[u8] {
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if self.second != Some(second) {
            self.second = Some(second);
            self.text.clear();
            format_local_time(&mut self.text, &sys::local_time(second));
        }
        &self.text
    }
}

fn format_local_time(out: &mut Vec<u8>, t: &sys::LocalTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.get(t.month as usize).copied().unwrap_or("Jan");
    let offset_minutes = t.utc_offset_seconds / 60;
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let offset_minutes = offset_minutes.unsigned_abs();
    let _ = write!(
        out,
        "{:02}/{month}/{:04}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        t.day,
        t.year,
        t.hour,
        t.minute,
        t.second,
        offset_minutes / 60,
        offset_minutes % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{header_storage, parse_head, HeadLimits};
    use std::path::PathBuf;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("miohttpd-{name}-{}.log", std::process::id()))
    }

    /// Logs one request with the given head to a fresh file and returns the file's text.
    fn log_one(name: &str, raw_head: &[u8], status: u16, bytes: u64) -> String {
        let path = temp_path(name);
        let _ = std::fs::remove_file(&path);
        let mut log = AccessLog::open(Some(&LogTarget::File(path.clone()))).unwrap();
        let mut storage = header_storage();
        let head = parse_head(raw_head, &mut storage, &HeadLimits::default()).unwrap();
        let entry = log.begin(&head);
        let peer = IpAddr::from([192, 0, 2, 7]);
        let mut stats = Stats::default();
        log.finish(entry, peer, status, bytes, Instant::now(), &mut stats);
        assert_eq!(stats.log_writes, 0, "one line is batched, not written");
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        text
    }

    /// The line without its time, which depends on when and where the test runs.
    fn without_time(line: &str) -> String {
        let open = line.find('[').unwrap();
        let close = line.find(']').unwrap();
        format!("{}[TIME]{}", &line[..open], &line[close + 1..])
    }

    #[test]
    fn combined_format_and_flush_on_drop() {
        let text = log_one(
            "combined",
            b"GET /plaintext?a=1 HTTP/1.1\r\nHost: x\r\nReferer: http://r/\r\n\
              User-Agent: curl/8.0\r\n\r\n",
            200,
            13,
        );
        assert_eq!(
            without_time(&text),
            "192.0.2.7 - - [TIME] \"GET /plaintext?a=1 HTTP/1.1\" 200 13 \"http://r/\" \
             \"curl/8.0\"\n"
        );
        let time = &text[text.find('[').unwrap() + 1..text.find(']').unwrap()];
        // 10/Oct/2000:13:55:36 -0700
        let bytes = time.as_bytes();
        assert_eq!(time.len(), 26, "{time}");
        assert_eq!(
            (bytes[2], bytes[6], bytes[11], bytes[20]),
            (b'/', b'/', b':', b' ')
        );
        assert!(matches!(bytes[21], b'+' | b'-'), "{time}");

        let text = log_one("no-headers", b"POST /md5 HTTP/1.0\r\n\r\n", 413, 0);
        assert!(
            without_time(&text).ends_with("\"POST /md5 HTTP/1.0\" 413 0 \"-\" \"-\"\n"),
            "{text}"
        );
    }

    #[test]
    fn client_bytes_cannot_forge_a_line() {
        let text = log_one(
            "forged",
            // A raw `"` or `\` in the target is a 400 before anything is logged (RFC 3986);
            // its percent-encoded form is logged as it came.
            b"GET /a%22b%5Cc HTTP/1.1\r\nHost: x\r\nReferer: \"\t\xc3\xa9\r\n\
              User-Agent: x\" 200 1 \"-\" \"\xff[31m\r\n\r\n",
            404,
            10,
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(
            without_time(&text),
            "192.0.2.7 - - [TIME] \"GET /a%22b%5Cc HTTP/1.1\" 404 10 \"\\x22\\x09\\xC3\\xA9\" \
             \"x\\x22 200 1 \\x22-\\x22 \\x22\\xFF[31m\"\n"
        );
        // Between the quotes that delimit a field, no bare quote is left.
        let fields: Vec<&str> = text.split('"').collect();
        assert_eq!(fields.len(), 7, "{text}");
    }

    #[test]
    fn escaping_table() {
        let table: &[(&[u8], &str)] = &[
            (b"plain/ASCII~", "plain/ASCII~"),
            (b"\"", "\\x22"),
            (b"\\", "\\x5C"),
            (b"\n\r\0", "\\x0A\\x0D\\x00"),
            (b"\x7f\x80\xff", "\\x7F\\x80\\xFF"),
            ("é".as_bytes(), "\\xC3\\xA9"),
        ];
        for (input, want) in table {
            let mut out = Vec::new();
            escape_into(&mut out, input);
            assert_eq!(String::from_utf8(out).unwrap(), *want, "{input:?}");
        }
    }

    #[test]
    fn lines_are_written_in_batches() {
        let path = temp_path("batches");
        let _ = std::fs::remove_file(&path);
        let mut log = AccessLog::open(Some(&LogTarget::File(path.clone()))).unwrap();
        let mut storage = header_storage();
        let raw = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = parse_head(raw, &mut storage, &HeadLimits::default()).unwrap();
        let mut stats = Stats::default();
        let start = Instant::now();
        let peer = IpAddr::from([127, 0, 0, 1]);
        let mut lines = 0;
        while stats.log_writes == 0 {
            let entry = log.begin(&head);
            log.finish(entry, peer, 200, 13, start, &mut stats);
            lines += 1;
        }
        assert_eq!(stats.log_writes, 1, "the batch went out in one write");
        let line_len = std::fs::read(&path).unwrap().len() / lines;
        assert_eq!(
            lines,
            BATCH_BYTES.div_ceil(line_len),
            "written when it passed {BATCH_BYTES} bytes, not before"
        );
        assert_eq!(log.flush_due(), None, "nothing buffered");

        let entry = log.begin(&head);
        log.finish(entry, peer, 200, 13, start, &mut stats);
        assert_eq!(log.flush_due(), Some(start + BATCH_DELAY));
        log.flush_if_due(start + BATCH_DELAY / 2, &mut stats);
        assert_eq!(stats.log_writes, 1, "not due yet");
        log.flush_if_due(start + BATCH_DELAY, &mut stats);
        assert_eq!(stats.log_writes, 2, "due one delay after the oldest line");
        assert_eq!(log.flush_due(), None);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), lines + 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn entry_buffers_are_reused() {
        let path = temp_path("reuse");
        let mut log = AccessLog::open(Some(&LogTarget::File(path.clone()))).unwrap();
        let mut storage = header_storage();
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = parse_head(raw, &mut storage, &HeadLimits::default()).unwrap();
        let entry = log.begin(&head).unwrap();
        let buffer = entry.text.as_ptr();
        let mut stats = Stats::default();
        log.finish(
            Some(entry),
            IpAddr::from([127, 0, 0, 1]),
            200,
            0,
            Instant::now(),
            &mut stats,
        );
        assert_eq!(log.begin(&head).unwrap().text.as_ptr(), buffer);
        drop(log);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn off_does_nothing() {
        let mut log = AccessLog::off();
        let mut storage = header_storage();
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = parse_head(raw, &mut storage, &HeadLimits::default()).unwrap();
        assert!(log.begin(&head).is_none());
        assert!(!log.is_on());
        assert_eq!(log.flush_due(), None);
    }

    #[test]
    fn local_time_format() {
        let mut out = Vec::new();
        let t = sys::LocalTime {
            year: 2000,
            month: 9,
            day: 10,
            hour: 13,
            minute: 55,
            second: 36,
            utc_offset_seconds: -7 * 3600,
        };
        format_local_time(&mut out, &t);
        assert_eq!(out, b"10/Oct/2000:13:55:36 -0700");
        let t = sys::LocalTime {
            utc_offset_seconds: 5 * 3600 + 30 * 60,
            ..t
        };
        out.clear();
        format_local_time(&mut out, &t);
        assert_eq!(out, b"10/Oct/2000:13:55:36 +0530");
    }
}
