//! What a connection reads and writes: a TCP socket in the server, scripted bytes in memory
//! when the state machine is fuzzed or property-tested without sockets.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

pub trait Transport: Read + Write {
    /// Ends our sending side (FIN) and keeps reading: the first half of a lingering close.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Writes the last bytes before a close; the socket may hold them to leave with the FIN.
    fn write_last(&mut self, bufs: [&[u8]; 2]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(bufs[0]), IoSlice::new(bufs[1])])
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
