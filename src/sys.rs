//! The raw system calls the safe APIs do not offer, each with why. All `unsafe` lives here:
//! the crate denies it everywhere else (`#![deny(unsafe_code)]` in `lib.rs`).

#![allow(unsafe_code)]

use std::io;

/// Raises the soft limit on open files to the hard limit and returns the new soft limit.
/// Every connection is a file descriptor, and a default soft limit (1024 on Linux, 256 on
/// macOS) would cap a server meant for tens of thousands of parked clients; the hard limit
/// is what the administrator allows. Unsafe because neither std nor mio nor socket2 wraps
/// getrlimit/setrlimit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let mut raised = limit;
        raised.rlim_cur = limit.rlim_max;
        // macOS refuses a soft limit above OPEN_MAX even when the hard limit is unlimited.
        #[cfg(target_os = "macos")]
        {
            raised.rlim_cur = raised.rlim_cur.min(libc::OPEN_MAX as libc::rlim_t);
        }
        // SAFETY: setrlimit reads one rlimit from a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    // rlim_t is u64 on Linux and macOS but signed on some BSDs.
    #[allow(clippy::useless_conversion)]
    Ok(u64::try_from(limit.rlim_cur).unwrap_or(0))
}

/// The soft limit on open files now (what accept(2) runs into); usize::MAX when unlimited
/// or unknown. Unsafe for the same reason: no safe getrlimit in our dependencies.
pub fn open_files_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return usize::MAX;
    }
    #[allow(clippy::useless_conversion)]
    u64::try_from(limit.rlim_cur)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(usize::MAX)
}

/// The signals the server sends to the commands it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Kill,
}

/// Sends `signal` to every process in the group `group` (a command and what it started).
/// std's `Child::kill` reaches only the child itself, and a shell's children would live on
/// holding the pipe open; std has no way to signal a group, so kill(2) with a negative pid.
pub fn signal_process_group(group: u32, signal: Signal) -> io::Result<()> {
    let signal = match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    let group =
        libc::pid_t::try_from(group).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if group <= 1 {
        // -1 would signal every process we may signal; never.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(-group, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether any process of the group `group` still exists (zombies included, until reaped).
/// kill(2) with signal 0 is the only probe of a group, and std offers none.
pub fn process_group_exists(group: u32) -> bool {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the group exists and may be signalled.
    group > 1 && unsafe { libc::kill(-group, 0) } == 0
}

/// A wall-clock time broken down in the server's local time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 0 = January.
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// East of UTC.
    pub utc_offset_seconds: i64,
}

/// `unix_seconds` in local time, for the access log's `$time_local`. std has no time zones;
/// localtime_r reads the zone (TZ, /etc/localtime) once per process and then makes no
/// syscall; a time zone crate would be a dependency for one log field. A time it cannot
/// convert comes back as the epoch in UTC.
pub fn local_time(unix_seconds: u64) -> LocalTime {
    let time = libc::time_t::try_from(unix_seconds).unwrap_or(0);
    // SAFETY: an all-zero tm is a valid value (integers and, on glibc, a null tm_zone).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads one time_t and writes one tm, both ours; the _r form keeps
    // no shared static buffer.
    if unsafe { libc::localtime_r(&time, &mut tm) }.is_null() {
        return LocalTime {
            year: 1970,
            month: 0,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            utc_offset_seconds: 0,
        };
    }
    let field = |v: libc::c_int| u32::try_from(v).unwrap_or(0);
    LocalTime {
        year: tm.tm_year + 1900,
        month: field(tm.tm_mon),
        day: field(tm.tm_mday),
        hour: field(tm.tm_hour),
        minute: field(tm.tm_min),
        second: field(tm.tm_sec),
        #[allow(clippy::unnecessary_cast)]
        utc_offset_seconds: tm.tm_gmtoff as i64,
    }
}

/// Sets TCP_DEFER_ACCEPT on a listening socket: the kernel completes the handshake but
/// wakes accept only once the client has sent data (or after about `seconds`), so a
/// connection that never sends costs the server no accept and no read. socket2 has no
/// setter for it.
#[cfg(target_os = "linux")]
pub fn set_tcp_defer_accept(socket: &impl std::os::fd::AsRawFd, seconds: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int we own, of the length we pass.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TCP_DEFER_ACCEPT as the kernel keeps it (it rounds to its retransmission steps); socket2
/// has no getter either.
#[cfg(target_os = "linux")]
pub fn tcp_defer_accept(socket: &impl std::os::fd::AsRawFd) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the c_int we own and updates `len`.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(value).unwrap_or(0))
}

/// Takes ownership of a listening socket another process left at `fd`: systemd's socket
/// activation (sd_listen_fds(3)) passes them as fds 3 and up, and by that protocol nothing
/// else in this process owns them. std can only adopt a descriptor through `from_raw_fd`,
/// which is unsafe because it cannot know that; the caller ([`crate::systemd`]) takes each
/// fd once, after clearing the variables that named it. The fd is checked to be open, and
/// marked close-on-exec so the commands the server runs do not inherit it.
pub fn adopt_inherited_listener(fd: std::os::fd::RawFd) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: F_GETFD reads the descriptor's flags and touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open (above) and, by the activation protocol, owned by no one else
    // in this process; the caller adopts each fd at most once.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    socket2::SockRef::from(&listener).set_cloexec(true)?;
    Ok(listener)
}

// ---- Worker processes (src/workers/) ----

/// The CPUs this process may run on (its affinity mask, which a container or `taskset` may
/// narrow below the machine's count). std's `available_parallelism` also reads cgroup
/// quotas and gives a count, not the CPU numbers that pinning needs.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the size we pass into the set we own.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads the set we own, at an index below its size.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// What a worker process gets between fork and exec (see [`prepare_worker`]).
#[derive(Debug, Clone)]
pub struct WorkerExec {
    /// Descriptors the worker inherits: their close-on-exec flag is cleared in the child
    /// only, so the supervisor's other descriptors (other workers' links) never leak.
    pub keep_fds: Vec<std::os::fd::RawFd>,
    /// The CPU to pin the worker to.
    pub cpu: Option<usize>,
    /// The supervisor's pid: the child checks it is still its parent after asking to die
    /// with it, closing the race where the supervisor died before the request.
    pub supervisor: u32,
}

/// Makes `command` start a worker: it dies (SIGKILL) when the supervisor dies, even by
/// SIGKILL (PR_SET_PDEATHSIG, kept across exec), it inherits `keep_fds`, and it is pinned to
/// `cpu`. std's Command has no door for any of these but `pre_exec`, which is unsafe because
/// the closure runs between fork and exec, where only async-signal-safe calls are allowed:
/// the closure makes syscalls only (prctl, getppid, fcntl, sched_setaffinity) and
/// allocates nothing (the fd list and CPU set are built before the fork).
#[cfg(target_os = "linux")]
pub fn prepare_worker(command: &mut std::process::Command, exec: WorkerExec) {
    use std::os::unix::process::CommandExt;
    let cpu_set = exec.cpu.map(|cpu| {
        // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it (the
        // index is bounded by the set's size first).
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
        unsafe { libc::CPU_SET(cpu % max, &mut set) };
        set
    });
    let keep_fds = exec.keep_fds;
    let supervisor = libc::pid_t::try_from(exec.supervisor).unwrap_or(0);
    // SAFETY: see above: only async-signal-safe syscalls on memory made before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != supervisor {
                // The supervisor died before the request above: nobody would reap us.
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            for &fd in &keep_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(set) = &cpu_set {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Takes ownership of the worker's end of its bus link, left at `fd` by the supervisor
/// ([`prepare_worker`]) and named in the worker's environment, which nothing else in the
/// process reads. `from_raw_fd` is unsafe because std cannot know the fd is ours; it is
/// checked to be open and a Unix stream socket, and made close-on-exec again so commands
/// the worker runs do not inherit it.
pub fn adopt_inherited_unix_stream(
    fd: std::os::fd::RawFd,
) -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: F_GETFD reads the descriptor's flags and touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open (above) and, by the worker protocol, owned by no one else in
    // this process; the worker adopts it once, at start.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    let socket = socket2::SockRef::from(&stream);
    if socket.domain()? != socket2::Domain::UNIX || socket.r#type()? != socket2::Type::STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a Unix stream socket",
        ));
    }
    socket.set_cloexec(true)?;
    Ok(stream)
}

/// Adds a listening socket to an epoll set with EPOLLEXCLUSIVE (Linux 4.5): one shared
/// listener in every worker's poll then wakes one worker per connection, not all of them
/// (the thundering herd). mio cannot set the flag, so the listener is added to mio's epoll
/// fd directly, with the token in the event's data as mio itself stores it. Edge-triggered
/// like every mio registration.
#[cfg(target_os = "linux")]
pub fn epoll_add_exclusive(
    epoll: &impl std::os::fd::AsRawFd,
    socket: &impl std::os::fd::AsRawFd,
    token: usize,
) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32,
        u64: token as u64,
    };
    // SAFETY: epoll_ctl reads one epoll_event we own; the fds are borrowed, so open.
    let done = unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            socket.as_raw_fd(),
            &mut event,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches a classic BPF program to a SO_REUSEPORT group (through any of its sockets) that
/// returns, for a connection, the index of the listener whose worker is pinned to the CPU
/// that received it: `cpus[i]` is worker i's CPU, and listener i the i-th to join the group.
/// A CPU no worker is pinned to falls back to `cpu % cpus.len()`. socket2 has no setter for
/// SO_ATTACH_REUSEPORT_CBPF.
#[cfg(target_os = "linux")]
pub fn attach_reuseport_cpu_steering(
    socket: &impl std::os::fd::AsRawFd,
    cpus: &[usize],
) -> io::Result<()> {
    // Instruction encodings from linux/filter.h and linux/bpf_common.h.
    const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
    const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const RET_A: u16 = 0x06 | 0x10; // BPF_RET | BPF_A
    const MOD_K: u16 = 0x04 | 0x90; // BPF_ALU | BPF_MOD | BPF_K
    const SKF_AD_CPU: u32 = (-0x1000i32 + 36) as u32; // SKF_AD_OFF + SKF_AD_CPU
    if cpus.is_empty() || cpus.len() > 100 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut program = vec![op(LD_W_ABS, 0, 0, SKF_AD_CPU)];
    for (index, &cpu) in cpus.iter().enumerate() {
        program.push(op(JEQ_K, 0, 1, cpu as u32));
        program.push(op(RET_K, 0, 0, index as u32));
    }
    program.push(op(MOD_K, 0, 0, cpus.len() as u32));
    program.push(op(RET_A, 0, 0, 0));
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: setsockopt reads the sock_fprog and the program it points to, both alive here.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_time_is_a_plausible_date() {
        let t = super::local_time(86_400 * 365 * 30);
        assert!((1999..=2001).contains(&t.year), "{t:?}");
        assert!(
            t.month < 12 && (1..=31).contains(&t.day) && t.hour < 24,
            "{t:?}"
        );
        assert!(t.utc_offset_seconds.abs() <= 14 * 3600, "{t:?}");
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = super::raise_open_files_limit().unwrap();
        assert!(soft >= 64, "{soft}");
        assert_eq!(super::raise_open_files_limit().unwrap(), soft, "idempotent");
    }
}
