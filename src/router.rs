//! The handler API: how a request is routed from its head alone, and how a handler declares
//! up front what it needs: its body buffered (whole, under a limit) or streamed, the server's
//! own state, a channel to park on, or a source for the loop to poll. The built-in routes
//! (`src/handlers/`) use exactly these; nothing is reserved for them.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::process::Child;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::unix::pipe;

use crate::comet::{Comet, CometError, MessageId};
use crate::config::Config;
use crate::http::{Head, Response, Version};
use crate::server::child::Children;
use crate::server::stats::Stats;
use crate::server::syscalls::Process;

/// Chooses what to do with a request, from its head only, before any body byte is read.
/// [`Router`] is the usual implementation; implement this for routing it cannot express.
pub trait Service {
    fn route(&self, head: &Head<'_>) -> Route;
}

/// What a [`Service`] decided for one request.
pub enum Route {
    /// Answer with this response. A request body, if any, is read and discarded first.
    Respond(Response),
    /// Collect the whole body (at most `limit` bytes, else 413 and close), then call `handler`.
    Buffered {
        limit: usize,
        handler: Rc<dyn BufferedHandler>,
    },
    /// Hand each piece of the body to the sink as it is decoded.
    Streamed(Box<dyn BodySink>),
    /// Answer from the server's own state: `handler` gets the request and a [`ServerState`]
    /// (channels to publish into, waiter counts, the metrics). With `limit: Some(n)` the body
    /// is collected (at most `n` bytes, else 413 and close); with `None` it is discarded.
    Server {
        limit: Option<usize>,
        handler: Rc<dyn ServerHandler>,
    },
    /// Park the connection on a named channel until a message (see [`Park`]). A body, if
    /// any, is discarded.
    Park(Park),
    /// Answer with the output of a source the loop polls, as it comes (see [`Source`]). `start`
    /// runs once the body (discarded) is read, and not at all while the server shuts down.
    Stream(Box<dyn StartStream>),
}

/// Where and how a request parks: on the channel named `channel` (1 to 64 of `A-Z a-z 0-9 .
/// _ ~ -`, made on first use), after the message id `after` (as `?after=` or
/// `Last-Event-ID` carry it; a malformed one gets 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Park {
    pub channel: String,
    pub after: Option<String>,
    pub mode: ParkMode,
}

/// What a parked request is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkMode {
    /// Long-poll: the next message after `after` as the response (now, if the history has
    /// it), or 204 at `--comet-timeout`.
    Once,
    /// Server-Sent Events: the history after `after`, then every message as it comes, with
    /// heartbeats, until the client goes.
    Events,
}

impl Park {
    /// A long-poll on `channel`.
    pub fn once(channel: impl Into<String>) -> Self {
        Park {
            channel: channel.into(),
            after: None,
            mode: ParkMode::Once,
        }
    }

    /// An event stream of `channel`.
    pub fn events(channel: impl Into<String>) -> Self {
        Park {
            channel: channel.into(),
            after: None,
            mode: ParkMode::Events,
        }
    }

    /// Only messages after this id.
    pub fn after(self, after: Option<String>) -> Self {
        Park { after, ..self }
    }
}

/// A handler that answers from the server's state, after the body (if it takes one).
pub trait ServerHandler {
    fn handle(&self, request: Request, server: &mut ServerState<'_>) -> Response;
}

impl<F: Fn(Request, &mut ServerState<'_>) -> Response> ServerHandler for F {
    fn handle(&self, request: Request, server: &mut ServerState<'_>) -> Response {
        self(request, server)
    }
}

/// What a handler may see and do of the server, during one call: publish into channels,
/// count waiters, read the metrics, and hand a process over to the reaper.
pub struct ServerState<'a> {
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) config: &'a Config,
    pub(crate) comet: &'a mut Comet,
    pub(crate) stats: &'a mut Stats,
    pub(crate) children: &'a mut Children,
    pub(crate) now: Instant,
}

/// A message was published: its id, and how many connections it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: MessageId,
    pub reached: usize,
}

impl ServerState<'_> {
    /// The client this call is for (None once its connection is gone).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The loop's clock for this event.
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn config(&self) -> &Config {
        self.config
    }

    /// Long-poll waiters parked right now, on every channel.
    pub fn waiters(&self) -> usize {
        self.comet.parked()
    }

    /// Publishes a message on `channel` (made if new) to its waiters and subscribers, and
    /// keeps it in the channel's history. `body` makes the message from the number of
    /// connections it reaches.
    pub fn publish(
        &mut self,
        channel: &str,
        content_type: &str,
        body: impl FnOnce(usize) -> Box<[u8]>,
    ) -> Result<Published, CometError> {
        let key = self.comet.channel(channel, self.now)?;
        let (id, reached) = self.comet.publish(key, content_type, body, self.now);
        Ok(Published { id, reached })
    }

    /// The server's counters and gauges in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let gauges = crate::server::instruments::gauges(self.stats, self.comet, self.children);
        self.stats
            .render_prometheus(&gauges, self.config.events_per_poll)
    }

    /// Processes a stream source started, running now (what `--exec-max-running` bounds).
    pub fn processes_running(&self) -> usize {
        self.children.running()
    }

    /// A stream source started a process (counted while it runs).
    pub fn process_started(&mut self) {
        self.children.started();
    }

    /// A source's process exited and was reaped by the source.
    pub fn process_exited(&mut self) {
        self.children.exited();
    }

    /// Takes a started process whose stream is over before it exited: SIGTERM to its
    /// process group now, SIGKILL after `grace`, and reaped, with no connection left.
    pub fn reap(&mut self, child: Child, grace: Duration) {
        self.reap_process(Process::adopt(child), grace);
    }

    /// [`ServerState::reap`] for a process the crate spawned, already counted.
    pub(crate) fn reap_process(&mut self, child: Process, grace: Duration) {
        self.children.end(child, self.now, grace, self.stats);
    }

    /// The counters, for a source that makes syscalls of its own.
    pub(crate) fn stats(&mut self) -> &mut Stats {
        self.stats
    }
}

/// Starts a stream once the request is read: a source to poll, or a response instead
/// (the source is missing, busy, or could not start).
pub trait StartStream {
    fn start(self: Box<Self>, server: &mut ServerState<'_>) -> Result<Polled, Response>;
}

impl<F: FnOnce(&mut ServerState<'_>) -> Result<Polled, Response>> StartStream for F {
    fn start(self: Box<Self>, server: &mut ServerState<'_>) -> Result<Polled, Response> {
        self(server)
    }
}

/// A started stream: the pipe the loop reads (registered in its poll, read as it becomes
/// readable, each read sent as one chunk, until EOF), the response head, and the source
/// that says when the stream is over.
pub struct Polled {
    pub pipe: pipe::Receiver,
    pub content_type: Cow<'static, str>,
    pub headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    /// A trailer field the stream ends with (declared in the head; sent on HTTP/1.1 only).
    pub trailer: Option<&'static str>,
    pub source: Box<dyn Source>,
}

/// What is behind a polled pipe (a child process, say): the loop asks it when the stream is
/// over, tells it to wind down at shutdown, and hands it back if the client goes first.
pub trait Source {
    /// When to look first, before the pipe's EOF (a time limit), if at all.
    fn first_look(&self) -> Option<Instant> {
        None
    }
    /// A look after the pipe's EOF (`pipe_open` false), or at the time the last look asked
    /// for: done (with the trailer's value), or when to look again.
    fn look(&mut self, pipe_open: bool, server: &mut ServerState<'_>) -> Look;
    /// The server is shutting down: wind down (the stream then ends as usual).
    fn stop(&mut self, server: &mut ServerState<'_>);
    /// The client went away before the stream ended.
    fn abandon(self: Box<Self>, server: &mut ServerState<'_>);
}

/// A [`Source`]'s answer to a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Not over: look again at this time (or only after the pipe's EOF).
    Again(Option<Instant>),
    /// Over: the last chunk goes out, with this value for the declared trailer.
    Done(Option<String>),
}

/// A handler that sees the whole request as one owned value.
pub trait BufferedHandler {
    fn handle(&self, request: Request) -> Response;
}

impl<F: Fn(Request) -> Response> BufferedHandler for F {
    fn handle(&self, request: Request) -> Response {
        self(request)
    }
}

/// Receives a streamed body. One sink serves one request.
pub trait BodySink {
    /// Body bytes, in order, as they are decoded (chunk framing already removed).
    fn data(&mut self, bytes: &[u8]);
    /// The body is complete: the response to send.
    fn finish(self: Box<Self>) -> Response;
}

/// A request with its body, as a buffered handler receives it: plain owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub path: String,
    pub query: Option<String>,
    pub version: Version,
    /// Header fields in the order received; names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Copies a head out of the connection's buffer; the body is filled in as it arrives.
    pub fn from_head(head: &Head<'_>) -> Self {
        Request {
            method: head.method.to_owned(),
            target: head.target.to_owned(),
            path: head.path.to_owned(),
            query: head.query.map(str::to_owned),
            version: head.version,
            headers: head
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_owned()))
                .collect(),
            body: Vec::new(),
        }
    }

    /// The value of the first header field with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Routes by path and method. A path is exact (`/wait`) or a prefix (`/wait/*` matches
/// `/wait/` and every path under it). GET routes answer HEAD too, unless added
/// [`without_head`](Router::without_head). A method no route has gets 501 (RFC 9110
/// §15.6.2); a known path with another method gets 405 with an `Allow` naming exactly what
/// the path accepts (§15.5.6); an unknown path gets 404. A [`fallback`](Router::fallback)
/// route serves only paths no other route claims.
#[derive(Default)]
pub struct Router {
    routes: Vec<RouteEntry>,
}

struct RouteEntry {
    method: Cow<'static, str>,
    path: Cow<'static, str>,
    handler: Handler,
    head: HeadRequests,
    reach: Reach,
}

/// What a GET route does with HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadRequests {
    AnsweredAsGet,
    Refused,
}

/// Which of the paths its pattern matches a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// All of them: the path is known, and other methods on it get 405.
    Claims,
    /// Only those no claiming route matches; other methods on them get 404.
    Fallback,
}

impl RouteEntry {
    fn accepts(&self, method: &str) -> bool {
        self.method == method
            || (method == "HEAD"
                && self.method == "GET"
                && self.head == HeadRequests::AnsweredAsGet)
    }
}

/// Makes the sink for one request's body.
type StartSink = Box<dyn Fn(&Head<'_>) -> Box<dyn BodySink>>;

enum Handler {
    Immediate(Box<dyn Fn(&Head<'_>) -> Response>),
    Route(Box<dyn Fn(&Head<'_>) -> Route>),
    Buffered {
        limit: usize,
        handler: Rc<dyn BufferedHandler>,
    },
    Streamed(StartSink),
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// A handler answered from the head alone (a body, if sent, is discarded).
    pub fn respond(
        mut self,
        method: impl Into<Cow<'static, str>>,
        path: impl Into<Cow<'static, str>>,
        handler: impl Fn(&Head<'_>) -> Response + 'static,
    ) -> Self {
        self.add(method, path, Handler::Immediate(Box::new(handler)));
        self
    }

    /// A handler that receives the whole body, at most `limit` bytes.
    pub fn buffered(
        mut self,
        method: impl Into<Cow<'static, str>>,
        path: impl Into<Cow<'static, str>>,
        limit: usize,
        handler: impl BufferedHandler + 'static,
    ) -> Self {
        let handler = Handler::Buffered {
            limit,
            handler: Rc::new(handler),
        };
        self.add(method, path, handler);
        self
    }

    /// A handler that decides the whole [`Route`] itself, from the head: a park, a stream,
    /// an answer from the server's state.
    pub fn route(
        mut self,
        method: impl Into<Cow<'static, str>>,
        path: impl Into<Cow<'static, str>>,
        decide: impl Fn(&Head<'_>) -> Route + 'static,
    ) -> Self {
        self.add(method, path, Handler::Route(Box::new(decide)));
        self
    }

    /// A handler whose `start` makes a fresh sink for each request's body.
    pub fn streamed(
        mut self,
        method: impl Into<Cow<'static, str>>,
        path: impl Into<Cow<'static, str>>,
        start: impl Fn(&Head<'_>) -> Box<dyn BodySink> + 'static,
    ) -> Self {
        self.add(method, path, Handler::Streamed(Box::new(start)));
        self
    }

    fn add(
        &mut self,
        method: impl Into<Cow<'static, str>>,
        path: impl Into<Cow<'static, str>>,
        handler: Handler,
    ) {
        self.routes.push(RouteEntry {
            method: method.into(),
            path: path.into(),
            handler,
            head: HeadRequests::AnsweredAsGet,
            reach: Reach::Claims,
        });
    }

    /// The GET route added last does not answer HEAD (405): for a route with a side effect,
    /// which HEAD must not have (RFC 9110 §9.3.2), or whose answer is a wait or a stream.
    pub fn without_head(mut self) -> Self {
        if let Some(entry) = self.routes.last_mut() {
            entry.head = HeadRequests::Refused;
        }
        self
    }

    /// The route added last serves only the paths (of those its pattern matches) that no
    /// other route claims; it adds nothing to any path's `Allow`, and other methods on such a
    /// path get 404. (`PUT /*` uploads: any path nothing else serves.)
    pub fn fallback(mut self) -> Self {
        if let Some(entry) = self.routes.last_mut() {
            entry.reach = Reach::Fallback;
        }
        self
    }

    /// Whether any route has `method` (HEAD: any GET route): else a request is a 501
    /// wherever it goes.
    pub fn implements(&self, method: &str) -> bool {
        let method = if method == "HEAD" { "GET" } else { method };
        self.routes.iter().any(|e| e.method == method)
    }

    /// The `Allow` value for a path: the methods of the routes that claim it, in registration
    /// order, HEAD after a GET that answers it.
    pub fn allow(&self, path: &str) -> String {
        let mut allow = String::new();
        let claiming = self
            .routes
            .iter()
            .filter(|e| e.reach == Reach::Claims && path_matches(&e.path, path));
        for entry in claiming {
            for method in [&*entry.method, "HEAD"] {
                if method == "HEAD" && !(entry.method == "GET" && entry.accepts("HEAD")) {
                    continue;
                }
                if !allow.split(", ").any(|m| m == method) {
                    if !allow.is_empty() {
                        allow.push_str(", ");
                    }
                    allow.push_str(method);
                }
            }
        }
        allow
    }
}

impl Service for Router {
    fn route(&self, head: &Head<'_>) -> Route {
        if !self.implements(head.method) {
            return Route::Respond(Response::text(501, "method not implemented\n"));
        }
        let mut path_known = false;
        let reached = self.routes.iter().filter(|e| e.reach == Reach::Claims);
        let fallbacks = self.routes.iter().filter(|e| e.reach == Reach::Fallback);
        for entry in reached.chain(fallbacks) {
            if !path_matches(&entry.path, head.path) {
                continue;
            }
            if entry.reach == Reach::Fallback && path_known {
                break;
            }
            path_known |= entry.reach == Reach::Claims;
            if !entry.accepts(head.method) {
                continue;
            }
            return match &entry.handler {
                Handler::Immediate(respond) => Route::Respond(respond(head)),
                Handler::Route(decide) => decide(head),
                Handler::Buffered { limit, handler } => Route::Buffered {
                    limit: *limit,
                    handler: Rc::clone(handler),
                },
                Handler::Streamed(start) => Route::Streamed(start(head)),
            };
        }
        if path_known {
            let allow = self.allow(head.path);
            Route::Respond(Response::text(405, "method not allowed\n").with_header("Allow", allow))
        } else {
            Route::Respond(Response::text(404, "not found\n"))
        }
    }
}

/// `/a/*` matches `/a/` and everything under it (the handler judges the rest, so `/a/`
/// with nothing after it gets the handler's answer, not a 404); any other pattern matches
/// exactly.
fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{header_storage, parse_head, HeadLimits};

    fn route_status(router: &Router, request_line: &str) -> (u16, Option<String>) {
        let raw = format!("{request_line}\r\nHost: a\r\n\r\n");
        let mut storage = header_storage();
        let head = parse_head(raw.as_bytes(), &mut storage, &HeadLimits::default()).unwrap();
        match router.route(&head) {
            Route::Respond(r) => {
                let allow = r
                    .headers
                    .iter()
                    .find(|(n, _)| n == "Allow")
                    .map(|(_, v)| v.to_string());
                (r.status, allow)
            }
            Route::Buffered { .. } => (1, None),
            Route::Streamed(_) => (2, None),
            _ => (3, None),
        }
    }

    struct Discard;
    impl BodySink for Discard {
        fn data(&mut self, _: &[u8]) {}
        fn finish(self: Box<Self>) -> Response {
            Response::text(200, "")
        }
    }

    #[test]
    fn routes_by_method_and_path() {
        let router = Router::new()
            .respond("GET", "/plaintext", |_| {
                Response::text(200, "Hello, World!")
            })
            .buffered("POST", "/echo", 10, |r: Request| {
                Response::bytes(200, "application/octet-stream", r.body)
            })
            .streamed("POST", "/md5", |_| Box::new(Discard))
            .streamed("PUT", "/md5", |_| Box::new(Discard))
            .route("GET", "/wait/*", |_| Route::Park(Park::once("x")));
        let table: &[(&str, u16, Option<&str>)] = &[
            ("GET /plaintext HTTP/1.1", 200, None),
            ("HEAD /plaintext HTTP/1.1", 200, None),
            ("GET /plaintext?x=1 HTTP/1.1", 200, None),
            ("POST /plaintext HTTP/1.1", 405, Some("GET, HEAD")),
            ("POST /echo HTTP/1.1", 1, None),
            ("POST /md5 HTTP/1.1", 2, None),
            // DELETE is in no route at all: 501 (see below); GET is known, so 405.
            ("GET /md5 HTTP/1.1", 405, Some("POST, PUT")),
            ("GET /nope HTTP/1.1", 404, None),
            ("GET /plaintext/ HTTP/1.1", 404, None),
            ("GET /wait/news HTTP/1.1", 3, None),
            ("GET /wait/a/b HTTP/1.1", 3, None),
            ("GET /wait/ HTTP/1.1", 3, None),
            ("GET /wait HTTP/1.1", 404, None),
            ("POST /wait/news HTTP/1.1", 405, Some("GET, HEAD")),
        ];
        for &(line, status, allow) in table {
            assert_eq!(
                route_status(&router, line),
                (status, allow.map(str::to_string)),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_methods_heads_refused_and_fallbacks() {
        let router = Router::new()
            .respond("GET", "/plaintext", |_| Response::text(200, "hi"))
            .route("GET", "/notify", |_| Route::Park(Park::once("n")))
            .without_head()
            .route("POST", "/notify", |_| Route::Park(Park::once("n")))
            .streamed("POST", "/md5", |_| Box::new(Discard))
            .streamed("PUT", "/md5", |_| Box::new(Discard))
            .streamed("PUT", "/*", |_| Box::new(Discard))
            .fallback();
        let table: &[(&str, u16, Option<&str>)] = &[
            // RFC 9110 §15.6.2: a method no route has is a 501 on any path.
            ("FOO /plaintext HTTP/1.1", 501, None),
            ("XGET /plaintext HTTP/1.1", 501, None),
            ("get /plaintext HTTP/1.1", 501, None),
            ("DELETE /nope HTTP/1.1", 501, None),
            ("OPTIONS * HTTP/1.1", 501, None),
            ("CONNECT h:443 HTTP/1.1", 501, None),
            // A GET without HEAD: HEAD gets 405, and Allow does not name it.
            ("GET /notify HTTP/1.1", 3, None),
            ("HEAD /notify HTTP/1.1", 405, Some("GET, POST")),
            ("PUT /notify HTTP/1.1", 405, Some("GET, POST")),
            ("HEAD /plaintext HTTP/1.1", 200, None),
            // The fallback serves what nothing claims, and only that.
            ("PUT /anything/else HTTP/1.1", 2, None),
            ("PUT /md5 HTTP/1.1", 2, None),
            ("PUT /plaintext HTTP/1.1", 405, Some("GET, HEAD")),
            ("GET /anything HTTP/1.1", 404, None),
            ("POST /anything HTTP/1.1", 404, None),
            ("DELETE /md5 HTTP/1.1", 501, None),
            ("GET /md5 HTTP/1.1", 405, Some("POST, PUT")),
        ];
        for &(line, status, allow) in table {
            assert_eq!(
                route_status(&router, line),
                (status, allow.map(str::to_string)),
                "{line}"
            );
        }
        assert!(router.implements("HEAD") && router.implements("PUT"));
        assert!(!router.implements("DELETE") && !router.implements("get"));
    }
}
