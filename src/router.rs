//! The handler API: how a request is routed from its head alone, and how a handler declares
//! up front whether it takes its body buffered (whole, under a limit) or streamed.

use std::borrow::Cow;
use std::rc::Rc;

use crate::http::{Head, Response, Version};

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
    /// Comet long-poll: answer with the next message on `channel` after `after` (a message
    /// id, from `?after=` or `Last-Event-ID`), parking the connection until there is one.
    Wait {
        channel: String,
        after: Option<String>,
    },
    /// Server-Sent Events: stream every message on `channel`, first replaying the history
    /// after `after`.
    Subscribe {
        channel: String,
        after: Option<String>,
    },
    /// Publish a message to `channel` and answer with the number of waiters it reached.
    Publish { channel: String, payload: Payload },
    /// Answer with the number of waiters parked right now.
    CountWaiters,
    /// Run the operator's command registered as `name` and stream its output.
    Exec { name: String },
    /// Answer with the server's counters in the Prometheus text format.
    Metrics,
}

/// What a published message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The number of waiters notified, as a decimal (the original `GET /notify`).
    WaiterCount,
    /// The request body, at most `limit` bytes (413 beyond).
    Body { limit: usize },
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
/// `/wait/` and every path under it). GET routes answer HEAD too; a known path with
/// another method gets 405 with `Allow`; an unknown path gets 404.
#[derive(Default)]
pub struct Router {
    routes: Vec<RouteEntry>,
}

struct RouteEntry {
    method: Cow<'static, str>,
    path: Cow<'static, str>,
    handler: Handler,
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

    /// A handler that decides the whole [`Route`] itself (comet routes are built this way).
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
        });
    }

    /// The `Allow` value for a path: its methods in registration order, HEAD after GET.
    fn allow(&self, path: &str) -> String {
        let mut allow = String::new();
        for entry in self.routes.iter().filter(|e| path_matches(&e.path, path)) {
            for method in [&*entry.method, "HEAD"] {
                if method == "HEAD" && entry.method != "GET" {
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
        let mut path_known = false;
        for entry in &self.routes {
            if !path_matches(&entry.path, head.path) {
                continue;
            }
            path_known = true;
            let method_matches =
                entry.method == head.method || (head.method == "HEAD" && entry.method == "GET");
            if !method_matches {
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
            .route("GET", "/wait/*", |_| Route::CountWaiters);
        let table: &[(&str, u16, Option<&str>)] = &[
            ("GET /plaintext HTTP/1.1", 200, None),
            ("HEAD /plaintext HTTP/1.1", 200, None),
            ("GET /plaintext?x=1 HTTP/1.1", 200, None),
            ("POST /plaintext HTTP/1.1", 405, Some("GET, HEAD")),
            ("POST /echo HTTP/1.1", 1, None),
            ("POST /md5 HTTP/1.1", 2, None),
            ("DELETE /md5 HTTP/1.1", 405, Some("POST, PUT")),
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
}
