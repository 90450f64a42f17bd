//! The bytes a comet message goes out as: its long-poll answer in the three forms a waiter
//! may need and its event-stream chunk, each rendered once per publish and then shared by
//! reference among every connection that sends it.

use std::rc::Rc;

use crate::comet::Message;
use crate::http::date::DATE_LEN;
use crate::http::response::{encode_chunk, encode_head, BodyFraming, Exchange, NO_STORE};
use crate::http::Version;

pub use crate::comet::ID_HEADER;

/// Present when messages were lost to the client: it must resynchronize.
pub const RESYNC_HEADER: &str = "X-Comet-Resync";
/// An event-stream comment that keeps idle proxies and clients from timing out.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// Which rendering a connection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Long-poll answer, HTTP/1.1 keep-alive.
    KeepAlive11,
    /// Long-poll answer, HTTP/1.0 keep-alive (`Connection: keep-alive`).
    KeepAlive10,
    /// Long-poll answer followed by a close (what the original HTTP/1.0 clients get).
    Close,
    /// An event in a chunked event stream.
    EventChunked,
    /// An event in a close-delimited (HTTP/1.0) event stream.
    EventRaw,
}

impl Form {
    pub fn for_reply(version: Version, keep_alive: bool) -> Form {
        match (keep_alive, version) {
            (false, _) => Form::Close,
            (true, Version::Http11) => Form::KeepAlive11,
            (true, Version::Http10) => Form::KeepAlive10,
        }
    }

    pub fn for_events(chunked: bool) -> Form {
        if chunked {
            Form::EventChunked
        } else {
            Form::EventRaw
        }
    }
}

/// One message on its way to many connections, with the forms rendered so far.
pub struct Fanout {
    pub message: Rc<Message>,
    forms: [Option<Rc<[u8]>>; 5],
}

impl Fanout {
    pub fn new(message: Rc<Message>) -> Self {
        Fanout {
            message,
            forms: Default::default(),
        }
    }

    /// The bytes of `form`, rendered on first use.
    pub fn bytes(&mut self, form: Form, date: &[u8; DATE_LEN]) -> &Rc<[u8]> {
        let message = &self.message;
        self.forms[form as usize].get_or_insert_with(|| {
            let mut out = Vec::new();
            let reply = |out: &mut Vec<u8>, version, keep_alive| {
                render_reply(out, message, version, keep_alive, false, date);
            };
            match form {
                Form::KeepAlive11 => reply(&mut out, Version::Http11, true),
                Form::KeepAlive10 => reply(&mut out, Version::Http10, true),
                Form::Close => reply(&mut out, Version::Http11, false),
                Form::EventChunked => render_event(&mut out, message, true),
                Form::EventRaw => render_event(&mut out, message, false),
            }
            Rc::from(out)
        })
    }
}

/// A long-poll answer carrying `message`. Returns whether the connection closes after it.
pub fn render_reply(
    out: &mut Vec<u8>,
    message: &Message,
    version: Version,
    keep_alive: bool,
    resync: bool,
    date: &[u8; DATE_LEN],
) -> bool {
    let id = message.id.to_string();
    let resync_header = [(RESYNC_HEADER, "true")];
    let headers = [NO_STORE, (ID_HEADER, id.as_str())]
        .into_iter()
        .chain(resync_header.into_iter().filter(|_| resync));
    let exchange = Exchange {
        version,
        keep_alive,
        head_method: false,
        date,
    };
    out.reserve(200 + message.body.len());
    let close = encode_head(
        out,
        200,
        &message.content_type,
        headers,
        BodyFraming::Length(message.body.len() as u64),
        keep_alive,
        &exchange,
    );
    out.extend_from_slice(&message.body);
    close
}

/// The head of an event stream: chunked on HTTP/1.1, close-delimited on HTTP/1.0.
pub fn render_stream_head(out: &mut Vec<u8>, version: Version, date: &[u8; DATE_LEN]) {
    let exchange = Exchange {
        version,
        keep_alive: true,
        head_method: false,
        date,
    };
    let framing = match version {
        Version::Http11 => BodyFraming::Chunked,
        Version::Http10 => BodyFraming::UntilClose,
    };
    let headers = [
        NO_STORE,
        // A page served from elsewhere may listen too: events are public like the channel.
        ("Access-Control-Allow-Origin", "*"),
    ];
    encode_head(
        out,
        200,
        "text/event-stream",
        headers.into_iter(),
        framing,
        true,
        &exchange,
    );
}

/// One event (`id:` and one `data:` line per line of the body), as a chunk when `chunked`.
pub fn render_event(out: &mut Vec<u8>, message: &Message, chunked: bool) {
    let mut event = Vec::with_capacity(message.body.len() + 32);
    event.extend_from_slice(b"id: ");
    event.extend_from_slice(message.id.to_string().as_bytes());
    event.push(b'\n');
    for line in message.body.split(|&b| b == b'\n') {
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        event.push(b'\n');
    }
    event.push(b'\n');
    push_stream_bytes(out, &event, chunked);
}

/// Tells a resuming event stream that messages were lost to it.
pub fn render_resync_event(out: &mut Vec<u8>, chunked: bool) {
    push_stream_bytes(out, b"event: resync\ndata:\n\n", chunked);
}

/// Bytes of an event stream, chunk-framed when the stream is chunked.
pub fn push_stream_bytes(out: &mut Vec<u8>, bytes: &[u8], chunked: bool) {
    if chunked {
        encode_chunk(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comet::MessageId;

    const DATE: &[u8; DATE_LEN] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn message(body: &str) -> Rc<Message> {
        Rc::new(Message {
            id: MessageId {
                epoch: 0x5f3a09c1,
                seq: 7,
            },
            content_type: "text/plain".into(),
            body: body.as_bytes().into(),
        })
    }

    #[test]
    fn forms_are_rendered_once_and_shared() {
        let mut fanout = Fanout::new(message("3"));
        let first = Rc::clone(fanout.bytes(Form::Close, DATE));
        let again = fanout.bytes(Form::Close, DATE);
        assert!(Rc::ptr_eq(&first, again));
        let text = String::from_utf8(first.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.contains("\r\nX-Comet-Id: 5f3a09c1-7\r\n"), "{text}");
        assert!(
            text.ends_with(
                "\r\nContent-Length: 1\r\nConnection: close\r\nCache-Control: no-store\r\n\
                 X-Comet-Id: 5f3a09c1-7\r\n\r\n3"
            ),
            "{text}"
        );
        let ten = String::from_utf8(fanout.bytes(Form::KeepAlive10, DATE).to_vec()).unwrap();
        assert!(ten.contains("Connection: keep-alive"), "{ten}");
        let eleven = String::from_utf8(fanout.bytes(Form::KeepAlive11, DATE).to_vec()).unwrap();
        assert!(!eleven.contains("Connection:"), "{eleven}");
    }

    #[test]
    fn events_split_lines_into_data_fields() {
        let mut out = Vec::new();
        render_event(&mut out, &message("one\r\ntwo\nthree"), false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id: 5f3a09c1-7\ndata: one\ndata: two\ndata: three\n\n"
        );
        let mut out = Vec::new();
        render_event(&mut out, &message(""), true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "17\r\nid: 5f3a09c1-7\ndata: \n\n\r\n"
        );
    }
}
