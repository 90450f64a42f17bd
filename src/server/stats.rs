//! What the loop counts about its own work: plain integers bumped beside each syscall, so
//! counting costs an add, not a lock or an atomic.

/// Counters since start. Each syscall counter is bumped right where the syscall is made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub polls: u64,
    pub events: u64,
    pub accepts: u64,
    pub reads: u64,
    pub short_reads: u64,
    pub writes: u64,
    pub vectored_writes: u64,
    /// Writes whose bytes wait for the close right after, to leave with the FIN.
    pub corked_writes: u64,
    pub would_blocks: u64,
    pub shutdowns: u64,
    /// Reads from child pipes.
    pub pipe_reads: u64,
    pub setsockopts: u64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}
