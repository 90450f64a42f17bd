//! Many long-poll clients from one thread, for the comet benchmark: N non-blocking connects
//! spread over loopback source addresses (127.0.0.2 and up, 5,000 each: one address's
//! ephemeral ports slow connects well before they run out), at most 512 in flight so the
//! listen backlog never overflows into SYN retries, each sending one request once connected;
//! later every answer is read to the close and checked.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

/// Connections per source address.
const PER_SOURCE_ADDRESS: usize = 5_000;
/// Connects in flight at once.
const MAX_CONNECTING: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Waiting,
    Answered,
}

struct Waiter {
    stream: TcpStream,
    state: State,
    response: Vec<u8>,
}

/// N clients, each with its request sent.
pub struct Waiters {
    poll: Poll,
    events: Events,
    waiters: Vec<Waiter>,
}

impl Waiters {
    /// Connects `n` clients to `addr` and sends each `request` (one small write); returns once
    /// every request is sent, or an error when a connect fails or it all takes over `timeout`.
    pub fn connect(
        addr: SocketAddr,
        n: usize,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Waiters, String> {
        Waiters::connect_range(addr, 0, n, request, timeout)
    }

    /// As [`Waiters::connect`], for clients `first..first + n` of a load spread over several
    /// processes: client `first + i` takes the source address it would take in one process,
    /// so the load spreads over the addresses the same way.
    pub fn connect_range(
        addr: SocketAddr,
        first: usize,
        n: usize,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Waiters, String> {
        let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let mut events = Events::with_capacity(4096);
        let mut waiters: Vec<Waiter> = Vec::with_capacity(n);
        let started = Instant::now();
        let mut connecting = 0;
        let mut sent = 0;
        while sent < n {
            while waiters.len() < n && connecting < MAX_CONNECTING {
                let i = waiters.len();
                let mut stream = connect_from(source_address(first + i), addr)
                    .map_err(|e| format!("connect of waiter {}: {e}", first + i))?;
                poll.registry()
                    .register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map_err(|e| format!("register: {e}"))?;
                waiters.push(Waiter {
                    stream,
                    state: State::Connecting,
                    response: Vec::new(),
                });
                connecting += 1;
            }
            poll_once(&mut poll, &mut events)?;
            if started.elapsed() > timeout {
                return Err(format!("connecting took too long: {sent}/{n}"));
            }
            for event in events.iter() {
                let index = event.token().0;
                let waiter = &mut waiters[index];
                if waiter.state != State::Connecting || !event.is_writable() {
                    continue;
                }
                if let Ok(Some(e)) | Err(e) = waiter.stream.take_error() {
                    return Err(format!("waiter {index} failed to connect: {e}"));
                }
                // The request is tiny: one write takes it whole on a fresh socket.
                match waiter.stream.write(request) {
                    Ok(written) if written == request.len() => {}
                    Ok(written) => return Err(format!("short write of the request: {written}")),
                    Err(e) => return Err(format!("waiter {index}: sending the request: {e}")),
                }
                waiter.state = State::Waiting;
                connecting -= 1;
                sent += 1;
            }
        }
        Ok(Waiters {
            poll,
            events,
            waiters,
        })
    }

    /// Reads every client's answer to its close, each checked by `check(index, bytes)`;
    /// returns when the last one closed, or an error after `timeout`.
    pub fn answers(
        &mut self,
        timeout: Duration,
        check: impl Fn(usize, &[u8]) -> Result<(), String>,
    ) -> Result<Instant, String> {
        let n = self.waiters.len();
        let started = Instant::now();
        let mut answered = 0;
        let mut last_answer = started;
        let mut buf = [0u8; 4096];
        while answered < n {
            poll_once(&mut self.poll, &mut self.events)?;
            if started.elapsed() > timeout {
                return Err(format!("only {answered}/{n} waiters answered"));
            }
            for event in self.events.iter() {
                let index = event.token().0;
                let waiter = &mut self.waiters[index];
                if waiter.state != State::Waiting {
                    continue;
                }
                loop {
                    match waiter.stream.read(&mut buf) {
                        Ok(0) => {
                            waiter.state = State::Answered;
                            answered += 1;
                            last_answer = Instant::now();
                            check(index, &waiter.response)?;
                            break;
                        }
                        Ok(k) => waiter.response.extend_from_slice(&buf[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("waiter {index}: {e}")),
                    }
                }
            }
        }
        Ok(last_answer)
    }
}

/// One wait for events, at most a second, so the callers' timeouts are checked.
fn poll_once(poll: &mut Poll, events: &mut Events) -> Result<(), String> {
    poll.poll(events, Some(Duration::from_secs(1)))
        .map_err(|e| format!("poll: {e}"))
}

/// An HTTP/1.x 200 whose body, trimmed, is `want`.
pub fn check_answer(index: usize, response: &[u8], want: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(response);
    let ok = text.starts_with("HTTP/1.") && text.contains(" 200 ");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim());
    if ok && body == Some(want) {
        Ok(())
    } else {
        Err(format!("waiter {index} got {text:?}, want body {want}"))
    }
}

/// The loopback source address of client `index`: 127.0.0.2 for the first 5,000, and so on.
fn source_address(index: usize) -> IpAddr {
    let host = 2 + index / PER_SOURCE_ADDRESS;
    IpAddr::V4(Ipv4Addr::new(127, 0, (host >> 8) as u8, host as u8))
}

/// A non-blocking connect from `source` (any port) to `addr`.
fn connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_spread_over_source_addresses() {
        assert_eq!(source_address(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(
            source_address(4_999),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(
            source_address(5_000),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))
        );
        // 19,000 waiters stay within 127.0.0.2-127.0.0.5; past 254 hosts the third byte moves.
        assert_eq!(
            source_address(19_000),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))
        );
        assert_eq!(
            source_address(254 * 5_000),
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, 0))
        );
    }

    #[test]
    fn an_answer_is_a_200_with_the_body() {
        assert_eq!(
            check_answer(0, b"HTTP/1.0 200 OK\r\nX: y\r\n\r\n300\n", "300"),
            Ok(())
        );
        assert!(check_answer(1, b"HTTP/1.0 204 No Content\r\n\r\n", "300").is_err());
        assert!(check_answer(2, b"HTTP/1.0 200 OK\r\n\r\n299", "300").is_err());
        assert!(check_answer(3, b"", "300").is_err());
    }

    #[test]
    fn waiters_connect_send_and_read_every_answer() {
        // A stand-in server: accepts 3 connections, reads each request, answers and closes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut held = Vec::new();
            for _ in 0..3 {
                let (mut s, peer) = listener.accept().unwrap();
                assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
                let mut request = [0u8; 64];
                let n = s.read(&mut request).unwrap();
                assert_eq!(&request[..n], b"GET /wait HTTP/1.0\r\n\r\n");
                held.push(s);
            }
            // Answer only once all three wait, as a notify would.
            for mut s in held {
                s.write_all(b"HTTP/1.0 200 OK\r\n\r\n3").unwrap();
            }
        });
        let timeout = Duration::from_secs(10);
        let mut waiters =
            Waiters::connect(addr, 3, b"GET /wait HTTP/1.0\r\n\r\n", timeout).unwrap();
        waiters
            .answers(timeout, |i, r| check_answer(i, r, "3"))
            .unwrap();
        server.join().unwrap();
    }
}
