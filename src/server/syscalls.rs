//! The loop's syscalls other than a connection's socket I/O (which is `transport.rs`), each
//! made through a wrapper here that counts it in [`Stats`]: the poll and its registrations,
//! accept, a command's pipe and process, the log's writes. Each wrapper keeps the thing it
//! wraps private, so the counted call is the only call there is; adding a syscall means
//! adding a method here, beside its counter. The counters come in as `&mut Stats`: the loop
//! is one thread, so counting is an add, not a lock.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use mio::event::Source;
use mio::net::{TcpListener, TcpStream};
use mio::unix::pipe;
use mio::{Events, Interest, Poll, Registry, Token};

use super::stats::{Stats, SPAWN_NULL_STDERR_SYSCALLS, SPAWN_SYSCALLS};
use super::transport::Counted;
use crate::sys;

/// `mio::event::Source` for a wrapper of one field that is a source: what mio calls on
/// registration goes to the field. (Registering is counted by [`Registrar`], not here.)
macro_rules! source_by_delegation {
    ($($impl:tt)*) => {
        $($impl)* {
            fn register(
                &mut self,
                registry: &mio::Registry,
                token: mio::Token,
                interests: mio::Interest,
            ) -> std::io::Result<()> {
                self.0.register(registry, token, interests)
            }

            fn reregister(
                &mut self,
                registry: &mio::Registry,
                token: mio::Token,
                interests: mio::Interest,
            ) -> std::io::Result<()> {
                self.0.reregister(registry, token, interests)
            }

            fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
                self.0.deregister(registry)
            }
        }
    };
}
pub(super) use source_by_delegation;

/// The loop's `mio::Poll`: its waits, and its registry through [`Registrar`] only.
pub struct Poller(Poll);

impl Poller {
    /// epoll_create: before the loop, not counted.
    pub fn new() -> io::Result<Self> {
        Poll::new().map(Poller)
    }

    /// One epoll_wait(2).
    pub fn poll(
        &mut self,
        events: &mut Events,
        timeout: Option<Duration>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.polls += 1;
        self.0.poll(events, timeout)
    }

    pub fn registry(&self) -> Registrar<'_> {
        Registrar(self.0.registry())
    }

    /// The registry itself, for a part that counts its own syscalls (the Redis link,
    /// `redis::link`, in `LinkSyscalls`): what it registers there is not counted here.
    pub fn uncounted_registry(&self) -> &Registry {
        self.0.registry()
    }

    /// `--accept-model shared` (`--workers N`): moves a registered listener to an
    /// EPOLLEXCLUSIVE entry, so a connection wakes one worker, not all: two epoll_ctl(2).
    /// A kernel without EPOLLEXCLUSIVE (before 4.5) refuses it; the plain entry is then put
    /// back, with a log line.
    #[cfg(target_os = "linux")]
    pub fn make_exclusive(
        &self,
        listener: &mut Listener,
        token: Token,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.registrations += 2;
        self.0.registry().deregister(listener)?;
        match sys::epoll_add_exclusive(&self.0, listener, token.0) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                eprintln!("miohttpd: EPOLLEXCLUSIVE refused ({e}); every worker wakes");
                self.registry()
                    .register(listener, token, Interest::READABLE, stats)
            }
            Err(e) => Err(e),
        }
    }
}

/// The poll's registry, counting each epoll_ctl(2). The loop only registers: a socket or pipe
/// leaves the epoll set when its fd is closed, with no syscall of its own. The supervisor also
/// deregisters, where a source stays open a while after it is done with.
#[derive(Clone, Copy)]
pub struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    pub fn register<S: Source + ?Sized>(
        &self,
        source: &mut S,
        token: Token,
        interests: Interest,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.registrations += 1;
        self.0.register(source, token, interests)
    }

    /// One epoll_ctl(2) DEL.
    pub fn deregister<S: Source + ?Sized>(
        &self,
        source: &mut S,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.registrations += 1;
        self.0.deregister(source)
    }
}

/// A listening socket, whose accept(2) is counted; registered through [`Registrar`].
pub struct Listener(TcpListener);

impl Listener {
    pub fn new(listener: TcpListener) -> Self {
        Listener(listener)
    }

    /// One accept(2): the connection comes back already wrapped in its counted transport.
    pub fn accept(&self, stats: &mut Stats) -> io::Result<(Counted<TcpStream>, SocketAddr)> {
        stats.accept_calls += 1;
        let (stream, peer) = self.0.accept()?;
        stats.accepts += 1;
        Ok((Counted::new(stream), peer))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

source_by_delegation!(impl Source for Listener);

/// The fd lent for a look at the socket's options (getsockopt in tests).
impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The read end of a streamed command's stdout, non-blocking; registered through
/// [`Registrar`].
pub struct Pipe(pipe::Receiver);

impl Pipe {
    /// A pipe a stream's source handed over, counted from here on.
    pub fn new(pipe: pipe::Receiver) -> Self {
        Pipe(pipe)
    }

    /// One read(2).
    pub fn read(&mut self, buf: &mut [u8], stats: &mut Stats) -> io::Result<usize> {
        stats.pipe_reads += 1;
        self.0.read(buf)
    }

    /// close(2) by the drop, which also takes it out of the poll.
    pub fn close(self, stats: &mut Stats) {
        stats.pipe_closes += 1;
        drop(self.0);
    }
}

source_by_delegation!(impl Source for Pipe);

/// What the supervisor spends starting a worker, as strace shows it on Linux: the bus link's
/// socketpair, getpid, the stderr pipe2, std's socketpair for exec errors, clone, three
/// closes and the read that waits for the exec, ioctl(FIONBIO) on the stderr pipe and on the
/// link, and the close of the worker's end of the link. Its registrations are counted apart.
/// The pre-exec work happens in the child and is not the supervisor's.
pub const WORKER_START_SYSCALLS: u64 = 12;

/// A streamed command: the shell, in a process group of its own that it leads.
pub struct Process(Child);

impl Process {
    /// Spawns `command` with its stdout as a non-blocking pipe. Counted at the estimate
    /// [`SPAWN_SYSCALLS`] (plus [`SPAWN_NULL_STDERR_SYSCALLS`] when `null_stderr`): std's
    /// spawn makes them out of our sight.
    pub fn spawn(
        command: &mut Command,
        null_stderr: bool,
        stats: &mut Stats,
    ) -> io::Result<(Process, pipe::Receiver)> {
        stats.process_syscalls += SPAWN_SYSCALLS;
        if null_stderr {
            stats.process_syscalls += SPAWN_NULL_STDERR_SYSCALLS;
        }
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let Some(stdout) = child.stdout.take() else {
            // Not reached: stdout was piped just above.
            stats.process_syscalls += 2;
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("no stdout pipe"));
        };
        let stdout = pipe::Receiver::from(stdout);
        stdout.set_nonblocking(true)?;
        Ok((Process(child), stdout))
    }

    /// Starts a worker (`--workers N`) as `command` says, its stderr a non-blocking pipe
    /// returned with it. Counted at the estimate [`WORKER_START_SYSCALLS`], which also covers
    /// the bus link the supervisor makes around the spawn.
    pub fn start_worker(
        command: &mut Command,
        stats: &mut Stats,
    ) -> io::Result<(Process, Option<Pipe>)> {
        stats.process_syscalls += WORKER_START_SYSCALLS;
        let mut child = command.stderr(Stdio::piped()).spawn()?;
        let stderr = match child.stderr.take() {
            Some(stderr) => {
                let stderr = pipe::Receiver::from(stderr);
                stderr.set_nonblocking(true)?;
                Some(Pipe(stderr))
            }
            None => None,
        };
        Ok((Process(child), stderr))
    }

    /// A process spawned elsewhere (a stream source's), counted from here on.
    pub fn adopt(child: Child) -> Self {
        Process(child)
    }

    /// The pid, which is also the group id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// One wait4(2) with WNOHANG: the exit status if it has exited, reaping it.
    pub fn try_wait(&mut self, stats: &mut Stats) -> io::Result<Option<ExitStatus>> {
        stats.process_syscalls += 1;
        self.0.try_wait()
    }

    /// One blocking wait4(2): at exit only, after its group got SIGKILL.
    pub fn wait(&mut self, stats: &mut Stats) -> io::Result<ExitStatus> {
        stats.process_syscalls += 1;
        self.0.wait()
    }

    /// One kill(2) to the whole group.
    pub fn signal_group(&self, signal: sys::Signal, stats: &mut Stats) -> io::Result<()> {
        stats.process_syscalls += 1;
        sys::signal_process_group(self.0.id(), signal)
    }

    /// One kill(2) with signal 0: whether anything of the group is left.
    pub fn group_exists(&self, stats: &mut Stats) -> bool {
        stats.process_syscalls += 1;
        sys::process_group_exists(self.0.id())
    }
}

/// Where counted log text goes: the access log's file, stderr for the summary line.
pub struct LogWriter<W>(W);

impl<W: Write> LogWriter<W> {
    pub fn new(out: W) -> Self {
        LogWriter(out)
    }

    /// Writes all of `bytes`: one counted write(2) per call the kernel needs, usually one.
    pub fn write_all(&mut self, mut bytes: &[u8], stats: &mut Stats) -> io::Result<()> {
        while !bytes.is_empty() {
            stats.log_writes += 1;
            match self.0.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_log_write_is_counted() {
        /// Takes at most three bytes per write, like a pipe that is nearly full.
        struct Trickle(Vec<u8>);
        impl Write for Trickle {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                let n = bytes.len().min(3);
                self.0.extend_from_slice(&bytes[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut stats = Stats::default();
        let mut out = LogWriter::new(Trickle(Vec::new()));
        out.write_all(b"0123456", &mut stats).unwrap();
        assert_eq!(
            (out.0 .0.as_slice(), stats.log_writes),
            (&b"0123456"[..], 3)
        );
    }
}
