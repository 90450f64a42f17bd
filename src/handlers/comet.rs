//! The comet routes: `GET /wait[/{channel}]` parks until a message, `GET|POST
//! /notify[/{channel}]` publishes one, `GET /events[/{channel}]` streams them as Server-Sent
//! Events, and `GET /` counts the waiters. Written on the public primitives: parking on a
//! channel ([`Route::Park`]) and answering from the server's state ([`Route::Server`]).

use std::rc::Rc;

use crate::comet::{CometError, DEFAULT_CHANNEL, ID_HEADER};
use crate::http::{Head, Response};
use crate::router::{Park, Published, Request, Route, ServerHandler, ServerState};

/// `/wait` means the default channel, `/wait/news` the channel `news`.
fn channel_of(path: &str, prefix: &str) -> String {
    match path
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(name) => name.to_string(),
        None => DEFAULT_CHANNEL.to_string(),
    }
}

/// The last message id the client saw: `?after=ID`, else `Last-Event-ID` (what a browser's
/// EventSource sends when it reconnects).
fn after(head: &Head<'_>) -> Option<String> {
    let from_query = head.query.and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("after="))
            .map(str::to_string)
    });
    from_query.or_else(|| {
        head.header("last-event-id")
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    })
}

/// `GET /wait[/{channel}]`. Route it [`without_head`](crate::Router::without_head): a HEAD
/// would get neither the message nor an end to wait for.
pub fn wait(head: &Head<'_>) -> Route {
    Route::Park(Park::once(channel_of(head.path, "/wait")).after(after(head)))
}

/// `GET /events[/{channel}]`, routed [`without_head`](crate::Router::without_head) as
/// [`wait`] is.
pub fn events(head: &Head<'_>) -> Route {
    Route::Park(Park::events(channel_of(head.path, "/events")).after(after(head)))
}

/// `GET /notify`: the message is the number of waiters it reaches (the original semantics).
pub fn notify_count(_head: &Head<'_>) -> Route {
    Route::Server {
        limit: None,
        handler: Rc::new(|request: Request, server: &mut ServerState<'_>| {
            let channel = channel_of(&request.path, "/notify");
            answer(server.publish_count(&channel))
        }),
    }
}

/// `POST /notify/{channel}`: the message is the request body, at most `limit` bytes.
pub fn notify_body(limit: usize) -> impl Fn(&Head<'_>) -> Route {
    let handler: Rc<dyn ServerHandler> =
        Rc::new(|request: Request, server: &mut ServerState<'_>| {
            let channel = channel_of(&request.path, "/notify");
            let content_type = request
                .header("content-type")
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            let body = request.body.into_boxed_slice();
            answer(server.publish(&channel, &content_type, |_| body))
        });
    move |_head| Route::Server {
        limit: Some(limit),
        handler: Rc::clone(&handler),
    }
}

/// The publisher's answer: how many connections the message reached, and its id.
fn answer(published: Result<Published, CometError>) -> Response {
    match published {
        Ok(Published { id, reached }) => Response::text(200, reached.to_string())
            .with_header(ID_HEADER, id.to_string())
            .no_store(),
        Err(e) => e.response(),
    }
}

/// `GET /`: the number of waiters parked right now.
pub fn count(_head: &Head<'_>) -> Route {
    Route::Server {
        limit: None,
        handler: Rc::new(|_: Request, server: &mut ServerState<'_>| {
            Response::text(200, server.count_waiters().to_string()).no_store()
        }),
    }
}
