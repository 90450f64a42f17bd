//! The worker side of `--accept-model shared`: the one listener every worker inherits is
//! put in this worker's poll with EPOLLEXCLUSIVE, so a connection wakes one worker rather
//! than all of them. A child module of the loop's so it reaches the poll and listeners
//! without widening `Server`'s API beyond this one method.

use std::io;

use super::table::listener_token;
use super::Server;
use crate::router::Service;

impl<S: Service> Server<S> {
    /// Re-adds every listener with EPOLLEXCLUSIVE (Linux 4.5; older kernels refuse it with
    /// EINVAL and the plain registration is kept, with a log line).
    #[cfg(target_os = "linux")]
    pub fn accept_exclusively(&mut self) -> io::Result<()> {
        for (index, listener) in self.listeners.iter_mut().enumerate() {
            self.poll.registry().deregister(listener)?;
            let token = listener_token(index);
            match crate::sys::epoll_add_exclusive(&self.poll, listener, token.0) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    eprintln!("miohttpd: EPOLLEXCLUSIVE refused ({e}); every worker wakes");
                    self.poll
                        .registry()
                        .register(listener, token, mio::Interest::READABLE)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Elsewhere there is no EPOLLEXCLUSIVE: every worker's poll wakes for a connection.
    #[cfg(not(target_os = "linux"))]
    pub fn accept_exclusively(&mut self) -> io::Result<()> {
        Ok(())
    }
}
