//! Server-Sent Events in a real browser: headless Chromium opens a page this test serves
//! itself, whose `EventSource` subscribes to miohttpd cross-origin (allowed by its
//! `Access-Control-Allow-Origin: *`) and reports every event back to the test. The test
//! publishes with `POST /notify/{channel}` and checks what the browser saw: each message's
//! data (multi-line bodies joined by `\n`, as EventSource joins `data:` lines) and its
//! `lastEventId`, which must be the `X-Comet-Id` the publisher got back. Then the page closes
//! its stream, misses two messages, and reopens with `?after=` to get them replayed.
//!
//! Needs Debian's `chromium` at /usr/bin/chromium, which scripts/test.sh installs.

mod common;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{post, Server, IO_TIMEOUT};

const CHROMIUM: &str = "/usr/bin/chromium";

/// How long the test waits for each thing the browser should do. The first step includes
/// Chromium's start, which takes a second or two on an idle machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const CHANNEL: &str = "browser-test";

/// The page. `report` posts `KIND\nLAST_EVENT_ID\nDATA` to the test, one request at a time so
/// reports arrive in the order the events fired. On data `reconnect` it closes its stream and
/// asks `/resume`, which the test answers once it has published what the page must catch up
/// on; a new EventSource sends no `Last-Event-ID`, so it resumes with `?after=`.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>miohttpd SSE</title>
<script>
const stream = "EVENTS_URL";
let reports = Promise.resolve();
function report(kind, id, data) {
  const body = kind + "\n" + id + "\n" + data;
  reports = reports.then(() => fetch("/report", {method: "POST", body})).catch(() => {});
}
window.onerror = (message) => report("jserror", "", String(message));
function listen(url) {
  const es = new EventSource(url);
  es.onopen = () => report("open", "", es.url);
  es.onerror = () => report("error", "", "readyState " + es.readyState);
  es.onmessage = (event) => {
    report("message", event.lastEventId, event.data);
    if (event.data === "reconnect") {
      es.close();
      report("closed", event.lastEventId, "");
      const after = encodeURIComponent(event.lastEventId);
      fetch("/resume").then(() => listen(stream + "?after=" + after));
    }
  };
}
listen(stream);
</script>
"#;

#[test]
fn chromium_event_source_receives_messages_and_resumes_after_reconnect() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/test.sh, which installs Debian's chromium package"
    );
    // A heartbeat comment every second; EventSource must skip them.
    let server = Server::start_with(&["--sse-heartbeat", "1"]);
    let events_url = format!("{}/events/{CHANNEL}", server.url());
    let mut page = PageServer::start(&events_url);
    // Declared last, so dropped first: Chromium dies before the servers it talks to.
    let _browser = Chromium::launch(&page.url());

    page.expect("open", "", &events_url);
    let mut last_id = String::new();
    for body in [
        "first",
        "second line 1\nsecond line 2",
        "third",
        "reconnect",
    ] {
        last_id = publish(&server, body, Some(1));
        page.expect("message", &last_id, body);
        if body == "first" {
            // Long enough for a heartbeat to come between two messages.
            thread::sleep(Duration::from_millis(1500));
        }
    }
    page.expect("closed", &last_id, "");

    // No stream is open now; these can only reach the page by replay. How many connections
    // they reach is not checked: the server may not have seen the close yet.
    let missed: Vec<(String, &str)> = ["fourth", "fifth"]
        .into_iter()
        .map(|body| (publish(&server, body, None), body))
        .collect();
    page.resume();
    page.expect("open", "", &format!("{events_url}?after={last_id}"));
    for (id, body) in &missed {
        page.expect("message", id, body);
    }

    // The resumed stream is live too.
    let id = publish(&server, "sixth", Some(1));
    page.expect("message", &id, "sixth");
    server.assert_still_serves();
}

/// `POST /notify/browser-test` with `body`; returns the message's id from `X-Comet-Id`.
/// `reached`, if given, is the number of connections the answer must report.
fn publish(server: &Server, body: &str, reached: Option<usize>) -> String {
    let path = format!("/notify/{CHANNEL}");
    let response = server.request(&post(&path, body.as_bytes()));
    assert_eq!(response.status, 200, "POST {path} {body:?}: {response:?}");
    if let Some(reached) = reached {
        assert_eq!(
            response.text(),
            reached.to_string(),
            "connections reached by POST {path} {body:?}: {response:?}"
        );
    }
    response
        .header("x-comet-id")
        .unwrap_or_else(|| panic!("no X-Comet-Id in the answer to POST {path}: {response:?}"))
        .to_string()
}

/// One thing the page told the test: an EventSource event (`open`, `message`, `error`), its
/// own `closed`, or a `jserror`.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    kind: String,
    last_event_id: String,
    data: String,
}

impl Report {
    fn parse(body: &[u8]) -> Report {
        let text = String::from_utf8_lossy(body);
        let mut parts = text.splitn(3, '\n');
        let mut next = || parts.next().unwrap_or_default().to_string();
        Report {
            kind: next(),
            last_event_id: next(),
            data: next(),
        }
    }
}

/// The test's own HTTP server for the page: `GET /` serves it, `POST /report` takes a report,
/// `GET /resume` answers once the test calls [`PageServer::resume`]. A thread per connection,
/// since `/resume` blocks and Chromium may open connections it leaves idle.
struct PageServer {
    addr: SocketAddr,
    reports: Receiver<Report>,
    resume: Sender<()>,
    /// Every report so far, shown when an expectation fails.
    seen: Vec<Report>,
}

impl PageServer {
    fn start(events_url: &str) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        let addr = listener.local_addr().expect("page server address");
        let page: Arc<str> = PAGE.replace("EVENTS_URL", events_url).into();
        let (report_tx, reports) = mpsc::channel();
        let (resume, resume_rx) = mpsc::channel();
        let resume_rx = Arc::new(Mutex::new(resume_rx));
        // Runs until the test process exits; it holds nothing the test must release.
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (page, report_tx, resume_rx) =
                    (Arc::clone(&page), report_tx.clone(), Arc::clone(&resume_rx));
                thread::spawn(move || {
                    if let Err(e) = serve(stream, &page, &report_tx, &resume_rx) {
                        eprintln!("page server: {e}");
                    }
                });
            }
        });
        PageServer {
            addr,
            reports,
            resume,
            seen: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Waits for the page's next report and checks it is this one.
    fn expect(&mut self, kind: &str, last_event_id: &str, data: &str) {
        let expected = Report {
            kind: kind.to_string(),
            last_event_id: last_event_id.to_string(),
            data: data.to_string(),
        };
        let report = match self.reports.recv_timeout(STEP_TIMEOUT) {
            Ok(report) => report,
            Err(_) => panic!(
                "no report from the page within {STEP_TIMEOUT:?}; expected {expected:?}; \
                 reports so far: {:#?}",
                self.seen
            ),
        };
        self.seen.push(report.clone());
        assert_eq!(
            report, expected,
            "unexpected report from the page; reports so far: {:#?}",
            self.seen
        );
    }

    /// Lets the page's pending `GET /resume` answer, so it reopens its stream.
    fn resume(&self) {
        self.resume.send(()).expect("page server is running");
    }
}

fn serve(
    stream: TcpStream,
    page: &str,
    reports: &Sender<Report>,
    resume: &Mutex<Receiver<()>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(()); // A speculative connection closed unused.
    }
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;

    let mut words = request_line.split_whitespace();
    let (status, content_type, answer) = match (words.next(), words.next()) {
        (Some("GET"), Some("/")) => ("200 OK", "text/html; charset=utf-8", page),
        (Some("POST"), Some("/report")) => {
            // The test may have failed and gone; the page does not care.
            let _ = reports.send(Report::parse(&body));
            ("204 No Content", "text/plain", "")
        }
        (Some("GET"), Some("/resume")) => {
            // Answered when the test says so, or when it gave up waiting anyway.
            let _ = resume
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(STEP_TIMEOUT);
            ("204 No Content", "text/plain", "")
        }
        _ => ("404 Not Found", "text/plain", ""),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}

/// Headless Chromium showing one page, killed with all its helper processes on drop.
struct Chromium {
    child: Child,
    /// A fresh profile (`--user-data-dir`), removed on drop; Chromium's stderr is kept in it.
    dir: PathBuf,
}

impl Chromium {
    fn launch(url: &str) -> Chromium {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("miohttpd-browser-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create Chromium's profile directory");
        let stderr = File::create(dir.join("stderr.log")).expect("create Chromium's log file");
        let child = Command::new(CHROMIUM)
            // As root Chromium needs --no-sandbox. The background-networking flags stop it
            // reaching for Google's hosts, which this machine's closed network refuses.
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group, so one kill reaches the renderer and helper processes.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        Chromium { child, dir }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            // Without a D-Bus on the machine, Chromium logs a failed call at every turn.
            let log = fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains(":dbus/")).collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!(
                "---- chromium stderr (last 40 lines, D-Bus errors left out) ----\n{tail}\n\
                 ---- end of chromium stderr ----"
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
