//! The comet routes: `GET /wait[/{channel}]` parks until a message, `GET|POST
//! /notify[/{channel}]` publishes one, `GET /events[/{channel}]` streams them as Server-Sent
//! Events, and `GET /` counts the waiters. These only name what is wanted; the loop's comet
//! registry does it.

use super::refuse_head;
use crate::comet::DEFAULT_CHANNEL;
use crate::http::Head;
use crate::router::{Payload, Route};

/// `/wait` means the default channel, `/wait/news` the channel `news`.
fn channel(head: &Head<'_>, prefix: &str) -> String {
    match head
        .path
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

pub fn wait(head: &Head<'_>) -> Route {
    if head.is_head_method() {
        return refuse_head();
    }
    Route::Wait {
        channel: channel(head, "/wait"),
        after: after(head),
    }
}

pub fn events(head: &Head<'_>) -> Route {
    if head.is_head_method() {
        return refuse_head();
    }
    Route::Subscribe {
        channel: channel(head, "/events"),
        after: after(head),
    }
}

/// `GET /notify`: the message is the number of waiters it reaches (the original semantics).
pub fn notify_count(head: &Head<'_>) -> Route {
    Route::Publish {
        channel: channel(head, "/notify"),
        payload: Payload::WaiterCount,
    }
}

/// `POST /notify/{channel}`: the message is the request body, at most `limit` bytes.
pub fn notify_body(limit: usize) -> impl Fn(&Head<'_>) -> Route {
    move |head| Route::Publish {
        channel: channel(head, "/notify"),
        payload: Payload::Body { limit },
    }
}

pub fn count(_head: &Head<'_>) -> Route {
    Route::CountWaiters
}
