//! The harness the load drivers in `benches/` share. Each module owns one job:
//!
//! - [`cpu`]: `/proc` accounting (CPU times, memory, open fds) and pinning to cores.
//! - [`server`]: a server child process (miohttpd or a peer) started, found and stopped by PID.
//! - [`peers`]: the servers miohttpd is compared with: nginx, nginx+nchan and the Go peers,
//!   installed with apt-get or built when missing.
//! - [`wrk`]: running wrk and reading its report.
//! - [`perf`]: counting a server's syscalls from outside with `perf stat` or `strace -c`.
//! - [`client`]: blocking HTTP/1.1 checks that a server answers what the benchmark expects.
//! - [`longpoll`]: thousands of long-poll clients from one thread, every answer checked.
//! - [`redis`]: a `redis-server` of the driver's own, started on a free port, stopped by PID.
//! - [`report`]: medians, tables and the targets a run is checked against.
//! - [`svg`]: the line charts in `docs/img/`.
//!
//! Nothing here knows a driver's scenarios: drivers pass the paths (`miohttpd` binary, scratch
//! directory) that only Cargo's bench environment knows.

pub mod client;
pub mod cpu;
pub mod longpoll;
pub mod peers;
pub mod perf;
pub mod redis;
pub mod report;
pub mod server;
pub mod svg;
pub mod wrk;
