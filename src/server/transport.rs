//! What a connection reads and writes: a TCP socket in the server, scripted bytes in memory
//! when the state machine is fuzzed or property-tested without sockets. A connection holds
//! its transport inside [`Counted`], whose every call counts its syscall in [`Stats`]: the
//! raw transport is out of the connection's reach, so a new read or write cannot go
//! uncounted.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;

use super::stats::Stats;
use super::syscalls::source_by_delegation;

/// The raw byte stream under a connection; only [`Counted`] calls it.
pub trait Transport: Read + Write {
    /// Ends our sending side (FIN) and keeps reading: the first half of a lingering close.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Writes the last bytes before a close; the socket may hold them to leave with the FIN.
    fn write_last(&mut self, bufs: [&[u8]; 2]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(bufs[0]), IoSlice::new(bufs[1])])
    }
}

/// The supervisor's end of a worker's bus link (`--workers N`).
impl Transport for mio::net::UnixStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Transport for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    /// MSG_MORE holds the bytes in the socket so the FIN of the close right after rides in
    /// the same segment: one packet (and one ACK) fewer per connection. It matters when a
    /// notify answers and closes ten thousand waiters at once.
    #[cfg(target_os = "linux")]
    fn write_last(&mut self, [first, second]: [&[u8]; 2]) -> io::Result<usize> {
        socket2::SockRef::from(&*self)
            .send_vectored_with_flags(&[IoSlice::new(first), IoSlice::new(second)], libc::MSG_MORE)
    }
}

/// A connection's transport, every call of which is counted: one syscall counter per call,
/// and what the call found (bytes, a short read, a full socket). The field is private: the
/// methods here are the only way to the socket.
pub struct Counted<T>(T);

impl<T: Transport> Counted<T> {
    pub fn new(transport: T) -> Self {
        Counted(transport)
    }

    /// One read(2) into `buf`.
    pub fn read(&mut self, buf: &mut [u8], stats: &mut Stats) -> io::Result<usize> {
        stats.reads += 1;
        let read = self.0.read(buf);
        match &read {
            Ok(n) => {
                stats.bytes_in += *n as u64;
                // On a stream socket a short read means the receive queue is empty.
                if *n > 0 && *n < buf.len() {
                    stats.short_reads += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stats.would_blocks += 1,
            Err(_) => {}
        }
        read
    }

    /// One write of the pending bytes, `shared` then `own` (either may be empty): write(2)
    /// for one buffer, writev(2) for two, or, when `last` (the close follows and nothing is
    /// left to drain), a send that holds them to leave with the FIN.
    pub fn send(
        &mut self,
        [shared, own]: [&[u8]; 2],
        last: bool,
        stats: &mut Stats,
    ) -> io::Result<usize> {
        stats.writes += 1;
        let written = if last {
            stats.corked_writes += 1;
            self.0.write_last([shared, own])
        } else if shared.is_empty() || own.is_empty() {
            self.0.write(if shared.is_empty() { own } else { shared })
        } else {
            stats.vectored_writes += 1;
            self.0
                .write_vectored(&[IoSlice::new(shared), IoSlice::new(own)])
        };
        match &written {
            Ok(n) => stats.bytes_out += *n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stats.would_blocks += 1,
            Err(_) => {}
        }
        written
    }

    /// shutdown(2) of our sending side: the first half of a lingering close.
    pub fn shutdown_write(&mut self, stats: &mut Stats) -> io::Result<()> {
        stats.shutdowns += 1;
        self.0.shutdown_write()
    }

    /// Closes the transport (close(2) by the drop).
    pub fn close(self, stats: &mut Stats) {
        stats.closes += 1;
        drop(self.0);
    }

    /// Closes a socket that is no connection (the supervisor's end of a dead worker's bus
    /// link): its close(2) counts with that worker's process syscalls, as the link's making
    /// does, so that `closes_total` stays the connections' and accepts less closes the
    /// connections open.
    pub fn close_link(self, stats: &mut Stats) {
        stats.process_syscalls += 1;
        drop(self.0);
    }
}

impl Counted<TcpStream> {
    /// TCP_NODELAY: one setsockopt(2).
    pub fn set_nodelay(&self, stats: &mut Stats) -> io::Result<()> {
        stats.setsockopts += 1;
        self.0.set_nodelay(true)
    }
}

// Registered in the poll through the loop's counting registry (`syscalls::Registrar`).
source_by_delegation!(impl<T: Source> Source for Counted<T>);

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes up to `room` bytes per write, reads from `input`, WouldBlock when either is
    /// exhausted; remembers how each write came.
    #[derive(Default)]
    struct Fake {
        input: Vec<u8>,
        room: usize,
        calls: Vec<&'static str>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls.push("write");
            self.take(buf.len())
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls.push("writev");
            self.take(bufs.iter().map(|b| b.len()).sum())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Fake {
        fn take(&mut self, offered: usize) -> io::Result<usize> {
            match offered.min(self.room) {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => {
                    self.room -= n;
                    Ok(n)
                }
            }
        }
    }

    impl Transport for Fake {
        fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }

        fn write_last(&mut self, bufs: [&[u8]; 2]) -> io::Result<usize> {
            self.calls.push("last");
            self.take(bufs[0].len() + bufs[1].len())
        }
    }

    #[test]
    fn each_read_counts_one_syscall_and_what_it_found() {
        let mut stats = Stats::default();
        let mut counted = Counted::new(Fake {
            input: b"abcdef".to_vec(),
            ..Fake::default()
        });
        let mut buf = [0u8; 4];
        assert_eq!(
            counted.read(&mut buf, &mut stats).unwrap(),
            4,
            "a full read"
        );
        assert_eq!(
            counted.read(&mut buf, &mut stats).unwrap(),
            2,
            "a short read"
        );
        assert!(counted.read(&mut buf, &mut stats).is_err(), "would block");
        let expected = Stats {
            reads: 3,
            short_reads: 1,
            would_blocks: 1,
            bytes_in: 6,
            ..Stats::default()
        };
        assert_eq!(stats, expected);
    }

    #[test]
    fn each_write_counts_one_syscall_and_how_it_went() {
        let mut stats = Stats::default();
        let mut counted = Counted::new(Fake {
            room: 10,
            ..Fake::default()
        });
        let table: [([&[u8]; 2], bool, &str); 4] = [
            ([b"ab", b""], false, "write"),
            ([b"", b"cd"], false, "write"),
            ([b"ab", b"cd"], false, "writev"),
            ([b"ab", b"cd"], true, "last"),
        ];
        for (bufs, last, call) in table {
            counted.send(bufs, last, &mut stats).unwrap();
            assert_eq!(counted.0.calls.last(), Some(&call));
        }
        assert!(
            counted.send([b"x", b""], false, &mut stats).is_err(),
            "full"
        );
        counted.shutdown_write(&mut stats).unwrap();
        counted.close(&mut stats);
        let expected = Stats {
            writes: 5,
            vectored_writes: 1,
            corked_writes: 1,
            would_blocks: 1,
            bytes_out: 10,
            shutdowns: 1,
            closes: 1,
            ..Stats::default()
        };
        assert_eq!(stats, expected);
    }
}
