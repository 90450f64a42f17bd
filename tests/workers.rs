//! `--workers N`: a supervisor and N worker processes serving one port. Everything here is
//! checked from outside: the process tree and each worker's sockets in `/proc`, the wire,
//! the supervisor's stderr. Per-worker connection counts come from `/proc/net/tcp` and each
//! worker's descriptors, so "every worker holds connections" is a fact, not a hope.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::{md5_hex, post, Conn, PseudoRandom, Server, GET_PLAINTEXT};

/// The pids whose parent is `parent` (live or not yet reaped).
fn children(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if process_state(pid).is_some_and(|(_, ppid)| ppid == parent) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// A process's state letter and parent pid, from `/proc/PID/stat`; None once it is gone.
fn process_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Waits (bounded) until the server has exactly `n` live workers, and returns them.
fn workers(server: &Server, n: usize, bound: Duration) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let live: Vec<u32> = children(server.pid())
            .into_iter()
            .filter(|&p| alive(p))
            .collect();
        if live.len() == n {
            return live;
        }
        assert!(
            started.elapsed() < bound,
            "{} workers after {bound:?}, wanted {n}: {live:?}\n{}",
            live.len(),
            server.stderr()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (bounded) until `victim` is gone and `n` workers serve again; returns them.
fn await_replacement(server: &Server, victim: u32, n: usize, bound: Duration) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let live: Vec<u32> = children(server.pid())
            .into_iter()
            .filter(|&p| alive(p))
            .collect();
        if live.len() == n && !live.contains(&victim) {
            return live;
        }
        assert!(
            started.elapsed() < bound,
            "after {bound:?}: {live:?} (victim {victim})\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The inodes of established IPv4 TCP sockets whose local port is `port`.
fn established_inodes(port: u16) -> HashSet<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
            (local_port == port && fields[3] == "01").then(|| fields[9].parse().ok())?
        })
        .collect()
}

/// How many of the server's established connections process `pid` holds.
fn connections_held(pid: u32, port: u16) -> usize {
    let inodes = established_inodes(port);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

/// Opens `n` kept-alive connections, each answered once.
fn open_served(server: &Server, n: usize) -> Vec<Conn> {
    (0..n)
        .map(|_| {
            let mut conn = server.connect();
            conn.send(GET_PLAINTEXT);
            assert_eq!(conn.read_response().status, 200);
            conn
        })
        .collect()
}

/// Every worker holds at least one of the connections just opened (reuseport hashes them:
/// with 64 connections over 4 workers, a worker with none has odds below 1 in 10^7).
fn assert_every_worker_holds_connections(server: &Server, pids: &[u32]) -> Vec<usize> {
    let port = server.addr().port();
    let held: Vec<usize> = pids.iter().map(|&p| connections_held(p, port)).collect();
    assert!(
        held.iter().all(|&n| n > 0),
        "per-worker connections {held:?}"
    );
    held
}

#[test]
fn metrics_come_from_the_supervisor_with_a_worker_label_and_totals() {
    let server = Server::start_with(&["--workers", "2", "--admin-listen", "127.0.0.1:0"]);
    workers(&server, 2, Duration::from_secs(5));
    let conns = open_served(&server, 32);
    let text = metrics(&server);
    let total = series(&text, "miohttpd_accepts_total").unwrap();
    let w0 = series(&text, "miohttpd_accepts_total{worker=\"0\"}").unwrap();
    let w1 = series(&text, "miohttpd_accepts_total{worker=\"1\"}").unwrap();
    // The supervisor's: its admin connections, this scrape's included.
    let own = series(&text, "miohttpd_accepts_total{worker=\"supervisor\"}").unwrap();
    assert!(own >= 1, "{text}");
    assert_eq!(total, w0 + w1 + own, "{text}");
    assert!(total >= conns.len() as u64, "{text}");
    // Each TYPE line once, so Prometheus takes the text.
    assert_eq!(text.matches("# TYPE miohttpd_accepts_total ").count(), 1);
    // The main listener hides /metrics, as with one process.
    assert_eq!(server.request(&get("/metrics")).status, 404);
}

#[test]
fn the_supervisor_counts_its_own_syscalls_and_they_are_in_the_totals() {
    let server = Server::start_with(&["--workers", "2", "--admin-listen", "127.0.0.1:0"]);
    workers(&server, 2, Duration::from_secs(5));
    let admin = server.admin_addr();
    let first = metrics_at(admin);
    let second = metrics_at(admin);
    let of = |text: &str, name: &str, who: &str| {
        let key = format!("miohttpd_{name}{{worker=\"{who}\"}}");
        series(text, &key).unwrap_or_else(|| panic!("no {key}:\n{text}"))
    };
    for text in [&first, &second] {
        // The total is every process's: both workers' and the supervisor's.
        let labelled: u64 = ["0", "1", "supervisor"]
            .iter()
            .map(|who| of(text, "syscalls_total", who))
            .sum();
        let total = series(text, "miohttpd_syscalls_total").unwrap();
        assert_eq!(total, labelled, "{text}");
        // The supervisor's total is its kinds summed (no Redis link here).
        let kinds: u64 = common::SYSCALL_KINDS
            .iter()
            .map(|name| of(text, name, "supervisor"))
            .sum();
        assert_eq!(of(text, "syscalls_total", "supervisor"), kinds, "{text}");
        // Its admin connections are accepted and counted open (this scrape's own), and are
        // not served requests.
        let key = "miohttpd_requests_total{worker=\"supervisor\"}";
        assert_eq!(series(text, key), None, "{text}");
        assert_eq!(of(text, "connections", "supervisor"), 1, "{text}");
        assert_accepts_less_closes_are_open(text);
        assert_eq!(text.matches("# TYPE miohttpd_syscalls_total ").count(), 1);
    }
    // What answering the first /metrics and taking the second must have cost the supervisor
    // between the two renderings, at least: the first response's write; the second
    // connection's accept and the accept that found the queue empty, its registration, and its
    // request's read with the read that found no more (the client waits for the answer); a
    // query written on each worker's link and its answer read with the read that found no
    // more; a wake-up for the accept, one for the request (the connection is registered only
    // after the first) and one for the answers (asked for only after the second). No worker
    // exited, so no wait4: the supervisor reaps only when a SIGCHLD came.
    let grew = |name: &str| of(&second, name, "supervisor") - of(&first, name, "supervisor");
    assert_eq!(grew("process_syscalls_total"), 0, "{second}");
    let least = [
        ("writes_total", 1 + 2),
        ("accept_calls_total", 2),
        ("registrations_total", 1),
        ("reads_total", 2 + 2 * 2),
        ("polls_total", 3),
    ];
    for (name, at_least) in least {
        assert!(
            grew(name) >= at_least,
            "{name} grew by {}:\n{second}",
            grew(name)
        );
    }
    let at_least: u64 = least.iter().map(|(_, n)| n).sum();
    assert!(grew("syscalls_total") >= at_least, "{second}");
    assert!(grew("events_total") >= 3, "{second}");
}

/// Accepts less closes are the connections open: in the server's totals and in each
/// process's series.
fn assert_accepts_less_closes_are_open(text: &str) {
    for label in ["", "{worker=\"0\"}", "{worker=\"supervisor\"}"] {
        let of = |name: &str| series(text, &format!("miohttpd_{name}{label}")).unwrap();
        let (accepts, closes) = (of("accepts_total"), of("closes_total"));
        assert_eq!(accepts - closes, of("connections"), "{label}:\n{text}");
    }
}

#[test]
fn accepts_less_closes_stay_the_connections_open_when_a_worker_dies() {
    let server = Server::start_with(&["--workers", "2", "--admin-listen", "127.0.0.1:0"]);
    let pids = workers(&server, 2, Duration::from_secs(5));
    server.assert_still_serves();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pids[1].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    await_replacement(&server, pids[1], 2, Duration::from_secs(5));
    // The supervisor closed its end of the dead worker's bus link, which is no connection.
    let text = metrics_at(server.admin_addr());
    assert_accepts_less_closes_are_open(&text);
    assert_eq!(series(&text, "miohttpd_connections"), Some(1), "the scrape");
}

#[test]
fn workers_one_is_a_single_process() {
    let server = Server::start();
    server.assert_still_serves();
    assert_eq!(children(server.pid()), Vec::<u32>::new(), "no supervisor");
}

#[test]
fn every_worker_serves_one_port() {
    for n in [2, 4] {
        let server = Server::start_with(&["--workers", &n.to_string()]);
        let pids = workers(&server, n, Duration::from_secs(5));
        let conns = open_served(&server, 64);
        let held = assert_every_worker_holds_connections(&server, &pids);
        assert_eq!(held.iter().sum::<usize>(), conns.len(), "{held:?}");
        assert_eq!(
            connections_held(server.pid(), server.addr().port()),
            0,
            "the supervisor holds no client connection"
        );
    }
}

#[test]
fn shared_accept_model_serves_from_one_listener() {
    let server = Server::start_with(&["--workers", "2", "--accept-model", "shared"]);
    let pids = workers(&server, 2, Duration::from_secs(5));
    let conns = open_served(&server, 32);
    let port = server.addr().port();
    let held: usize = pids.iter().map(|&p| connections_held(p, port)).sum();
    assert_eq!(held, conns.len());
}

#[test]
fn cpu_affinity_pins_each_worker() {
    let server = Server::start_with(&["--workers", "2", "--worker-cpu-affinity", "0"]);
    for pid in workers(&server, 2, Duration::from_secs(5)) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        assert_eq!(allowed, "0", "worker {pid}");
    }
    server.assert_still_serves();
}

#[test]
fn a_killed_worker_is_back_within_a_second_and_nothing_is_refused() {
    let server = Server::start_with(&["--workers", "4"]);
    let pids = workers(&server, 4, Duration::from_secs(5));
    let mut conns = open_served(&server, 64);
    assert_every_worker_holds_connections(&server, &pids);
    let victim = pids[1];
    let port = server.addr().port();
    let doomed = connections_held(victim, port);
    let status = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // New connections right away: the ones hashed to the dead worker's listener wait in
    // its backlog (the supervisor keeps the listener) for the replacement.
    for _ in 0..32 {
        let mut conn = server.connect();
        conn.send(GET_PLAINTEXT);
        assert_eq!(conn.read_response().status, 200);
    }
    await_replacement(&server, victim, 4, Duration::from_secs(1));
    // The other workers' clients kept their connections; the victim's were closed.
    let mut served = 0;
    for conn in &mut conns {
        conn.send(GET_PLAINTEXT);
        let _ = conn.stream().set_read_timeout(Some(Duration::from_secs(2)));
        if let Ok(response) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.read_response()))
        {
            assert_eq!(response.status, 200);
            served += 1;
        }
    }
    assert_eq!(
        served,
        conns.len() - doomed,
        "{doomed} were the dead worker's"
    );
    let log = server.stderr();
    assert!(
        log.contains(&format!(
            "worker 1 (pid {victim}) was killed by signal 9 (SIGKILL)"
        )),
        "{log}"
    );
}

#[test]
fn sigterm_lets_uploads_on_every_worker_finish() {
    let mut server = Server::start_with(&["--workers", "2", "--shutdown-grace", "20s"]);
    let pids = workers(&server, 2, Duration::from_secs(5));
    let bodies: Vec<Vec<u8>> = (0..16)
        .map(|i| PseudoRandom::bytes(i, 256 * 1024 + i as usize))
        .collect();
    let mut conns: Vec<Conn> = bodies
        .iter()
        .map(|body| {
            let request = post("/md5", body);
            let mut conn = server.connect();
            // Head and half the body now; the rest after the signal.
            conn.send(&request[..request.len() - body.len() / 2]);
            conn
        })
        .collect();
    // Every worker holds some (they are accepted once their head arrived).
    let started = Instant::now();
    let port = server.addr().port();
    loop {
        let held: Vec<usize> = pids.iter().map(|&p| connections_held(p, port)).collect();
        if held.iter().sum::<usize>() == conns.len() {
            assert!(held.iter().all(|&n| n > 0), "{held:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{held:?}");
        thread::sleep(Duration::from_millis(5));
    }
    server.signal("TERM");
    thread::sleep(Duration::from_millis(200));
    for (conn, body) in conns.iter_mut().zip(&bodies) {
        conn.send(&body[body.len() - body.len() / 2..]);
    }
    for (conn, body) in conns.iter_mut().zip(&bodies) {
        let response = conn.read_response();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.text(), md5_hex(body));
    }
    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived the supervisor");
    }
}

#[test]
fn no_worker_outlives_a_killed_supervisor() {
    let mut server = Server::start_with(&["--workers", "4"]);
    let pids = workers(&server, 4, Duration::from_secs(5));
    let status = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_exit(Duration::from_secs(5));
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "orphans: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A duplicate of worker `pid`'s end of its bus link, taken with pidfd_getfd(2) (we are
/// root, or its parent's user): the test can then write what a broken worker would.
fn steal_bus_link(pid: u32) -> std::os::unix::net::UnixStream {
    use std::os::fd::FromRawFd;
    // A worker just forked has the supervisor's environment until it execs.
    let started = Instant::now();
    let spec = loop {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let spec = environ
            .split(|&b| b == 0)
            .find_map(|var| var.strip_prefix(b"MIOHTTPD_WORKER="))
            .map(<[u8]>::to_vec);
        if let Some(spec) = spec {
            break spec;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "worker {pid} never exec'd"
        );
        thread::sleep(Duration::from_millis(5));
    };
    let bus_fd: i32 = std::str::from_utf8(&spec)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: plain syscalls with integer arguments; the fd returned is new and ours.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, bus_fd, 0) as i32;
        assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        libc::close(pidfd);
        std::os::unix::net::UnixStream::from_raw_fd(fd)
    }
}

#[test]
fn bad_frames_on_the_bus_never_crash_the_hub() {
    let server = Server::start_with(&["--workers", "2"]);
    let garbage: [&[u8]; 4] = [
        &[0xff, 0xff, 0xff, 0xff], // length beyond the limit
        &[0, 0, 0, 0],             // no kind
        &[1, 0, 0, 0, 0xee],       // unknown kind
        &[3, 0, 0, 0, 1, 0, 0],    // a hello cut short
    ];
    for (round, bytes) in garbage.iter().enumerate() {
        let pids = workers(&server, 2, Duration::from_secs(5));
        let victim = pids[round % 2];
        let mut link = steal_bus_link(victim);
        link.write_all(bytes).unwrap();
        drop(link);
        let started = Instant::now();
        while alive(victim) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{}",
                server.stderr()
            );
            thread::sleep(Duration::from_millis(5));
        }
        server.assert_still_serves();
    }
    workers(&server, 2, Duration::from_secs(5));
    let log = server.stderr();
    assert_eq!(log.matches("sent a bad frame").count(), 4, "{log}");
}

#[test]
fn a_library_users_own_router_runs_in_every_worker() {
    let server = Server::start_example("echo", &["--workers", "2"]);
    let pids = workers(&server, 2, Duration::from_secs(5));
    let conns: Vec<Conn> = (0..32)
        .map(|i| {
            let mut conn = server.connect();
            let body = format!("hello {i}");
            conn.send(&post("/echo", body.as_bytes()));
            assert_eq!(conn.read_response().text(), body);
            conn
        })
        .collect();
    assert_every_worker_holds_connections(&server, &pids);
    drop(conns);
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// `GET /` on a new connection: parked waiters on every worker.
fn count_waiters(server: &Server) -> usize {
    let response = server.request(&get("/"));
    assert_eq!(response.status, 200, "{response:?}");
    response.text().parse().unwrap()
}

/// Waits (bounded) until `GET /` says `n`.
fn await_waiters(server: &Server, n: usize) {
    let started = Instant::now();
    loop {
        let parked = count_waiters(server);
        if parked == n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{parked} parked, wanted {n}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// POSTs `body` to `/notify/CHANNEL`; returns the answer's count and message id.
fn publish(server: &Server, channel: &str, body: &str) -> (usize, String) {
    let response = server.request(&post(&format!("/notify/{channel}"), body.as_bytes()));
    assert_eq!(response.status, 200, "{response:?}");
    let id = response.header("x-comet-id").expect("an id").to_string();
    (response.text().parse().unwrap(), id)
}

/// `EPOCH-SEQ` split.
fn split_id(id: &str) -> (String, u64) {
    let (epoch, seq) = id.split_once('-').unwrap();
    (epoch.to_string(), seq.parse().unwrap())
}

/// `/metrics` from the supervisor's admin listener (whose address can be read only once).
fn metrics(server: &Server) -> String {
    metrics_at(server.admin_addr())
}

/// `/metrics` from the admin listener at `admin`.
fn metrics_at(admin: std::net::SocketAddr) -> String {
    let mut conn = Conn::connect(admin);
    conn.send(&get("/metrics"));
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    response.text().to_string()
}

/// The value of the series `key` (`name` or `name{labels}`) in a metrics text.
fn series(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_notify_reaches_waiters_on_every_worker_and_counts_them_all() {
    for n in [2, 4] {
        let server =
            Server::start_with(&["--workers", &n.to_string(), "--admin-listen", "127.0.0.1:0"]);
        let pids = workers(&server, n, Duration::from_secs(5));
        let mut waiters: Vec<Conn> = (0..64)
            .map(|_| {
                let mut conn = server.connect();
                conn.send(&get("/wait/news"));
                conn
            })
            .collect();
        await_waiters(&server, 64);
        assert_every_worker_holds_connections(&server, &pids);
        // The supervisor's /metrics says the same, per worker and in total.
        let text = metrics(&server);
        assert_eq!(series(&text, "miohttpd_parked_waiters"), Some(64), "{text}");
        let per_worker: Vec<u64> = (0..n)
            .map(|i| series(&text, &format!("miohttpd_parked_waiters{{worker=\"{i}\"}}")).unwrap())
            .collect();
        assert!(per_worker.iter().all(|&w| w > 0), "{per_worker:?}");
        assert_eq!(per_worker.iter().sum::<u64>(), 64);
        let (reached, id) = publish(&server, "news", "to everyone");
        assert_eq!(reached, 64, "n counts the waiters of every worker");
        for conn in &mut waiters {
            let got = conn.read_response();
            assert_eq!(got.status, 200);
            assert_eq!(got.text(), "to everyone");
            assert_eq!(got.header("x-comet-id"), Some(id.as_str()));
        }
        await_waiters(&server, 0);
    }
}

#[test]
fn ids_are_one_order_and_catch_up_answers_the_same_on_every_worker() {
    let server = Server::start_with(&["--workers", "4"]);
    let pids = workers(&server, 4, Duration::from_secs(5));
    // Each publish on a new connection: they land on all the workers.
    let ids: Vec<String> = (0..12)
        .map(|i| publish(&server, "log", &format!("m{i}")).1)
        .collect();
    let (epoch, first) = split_id(&ids[0]);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(split_id(id), (epoch.clone(), first + i as u64), "{ids:?}");
    }
    // `?after=` the 5th id: the 6th message, whichever worker answers. The connections
    // stay open until all have been asked, so each worker is seen to answer some.
    let mut asked = Vec::new();
    for _ in 0..64 {
        let mut conn = server.connect();
        conn.send(&get(&format!("/wait/log?after={}", ids[4])));
        let got = conn.read_response();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "m5");
        assert_eq!(got.header("x-comet-id"), Some(ids[5].as_str()));
        assert_eq!(got.header("x-comet-resync"), None);
        asked.push(conn);
    }
    assert_every_worker_holds_connections(&server, &pids);
}

#[test]
fn event_streams_on_every_worker_get_every_message_in_order() {
    let server = Server::start_with(&["--workers", "2"]);
    let pids = workers(&server, 2, Duration::from_secs(5));
    let mut streams: Vec<Conn> = (0..32)
        .map(|_| {
            let mut conn = server.connect();
            conn.send(&get("/events/feed"));
            assert_eq!(conn.read_head_response().status, 200);
            conn
        })
        .collect();
    assert_every_worker_holds_connections(&server, &pids);
    // A stream is parked once its head is sent: every publish reaches all 32, on both
    // workers, and the subscribers are counted in n.
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let (reached, id) = publish(&server, "feed", &format!("e{i}"));
            assert_eq!(reached, 32);
            id
        })
        .collect();
    for conn in &mut streams {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let chunk = String::from_utf8(conn.read_chunk()).unwrap();
            if !chunk.starts_with(':') {
                seen.push(chunk); // not a heartbeat
            }
        }
        for (i, event) in seen.iter().enumerate() {
            assert!(event.contains(&format!("id: {}", ids[i])), "{event:?}");
            assert!(event.contains(&format!("data: e{i}")), "{event:?}");
        }
    }
}

#[test]
fn history_survives_a_killed_worker_and_its_replacement_answers_catch_ups() {
    let server = Server::start_with(&["--workers", "2"]);
    let pids = workers(&server, 2, Duration::from_secs(5));
    let ids: Vec<String> = (0..3)
        .map(|i| publish(&server, "keep", &format!("k{i}")).1)
        .collect();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let after = await_replacement(&server, pids[0], 2, Duration::from_secs(1));
    let newcomer = *after.iter().find(|p| !pids.contains(p)).unwrap();
    // Enough catch-ups that the new worker answers some of them.
    let mut asked = Vec::new();
    for _ in 0..48 {
        let mut conn = server.connect();
        conn.send(&get(&format!("/wait/keep?after={}", ids[0])));
        let got = conn.read_response();
        assert_eq!(got.status, 200, "{got:?}");
        assert_eq!(got.text(), "k1");
        assert_eq!(got.header("x-comet-id"), Some(ids[1].as_str()));
        assert_eq!(got.header("x-comet-resync"), None);
        asked.push(conn);
    }
    assert!(connections_held(newcomer, server.addr().port()) > 0);
    // Ids go on from where they were, in the same epoch.
    let (_, next) = publish(&server, "keep", "k3");
    let (epoch, seq) = split_id(&next);
    assert_eq!((epoch, seq), (split_id(&ids[2]).0, split_id(&ids[2]).1 + 1));
}

/// `GET /notify/CHANNEL`: the answer's count and message id.
fn notify_count(server: &Server, channel: &str) -> (String, String) {
    let response = server.request(&get(&format!("/notify/{channel}")));
    assert_eq!(response.status, 200, "{response:?}");
    let id = response.header("x-comet-id").expect("an id").to_string();
    (response.text().to_string(), id)
}

#[test]
fn a_get_notify_body_is_its_answer_while_waiters_park_all_the_time() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = Server::start_with(&["--workers", "2"]);
    workers(&server, 2, Duration::from_secs(5));
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    // Waiters park again as soon as they are answered, each on a new connection (so on
    // either worker): some always park while a count is under way.
    let parkers: Vec<_> = (0..16)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut conn = Conn::connect(addr);
                    conn.send(&get("/wait/race"));
                    let got = conn.read_response();
                    assert_eq!(got.status, 200, "{got:?}");
                    let id = got.header("x-comet-id").expect("an id").to_string();
                    answers.push((id, got.text().to_string()));
                }
                answers
            })
        })
        .collect();
    let mut notified = HashMap::new();
    let started = Instant::now();
    while notified.len() < 300 || started.elapsed() < Duration::from_secs(1) {
        let (n, id) = notify_count(&server, "race");
        notified.insert(id, n);
    }
    stop.store(true, Ordering::Relaxed);
    // Whoever parked before seeing the flag is answered by these.
    while !parkers.iter().all(|p| p.is_finished()) {
        let (n, id) = notify_count(&server, "race");
        notified.insert(id, n);
        thread::sleep(Duration::from_millis(5));
    }
    let mut answered = 0;
    let mut differ = Vec::new();
    for parker in parkers {
        for (id, body) in parker.join().unwrap() {
            let n = notified.get(&id).expect("a notified id");
            answered += 1;
            if *n != body {
                differ.push(format!("{id}: body {body}, notifier's answer {n}"));
            }
        }
    }
    assert!(answered > 100, "only {answered} answers");
    assert!(
        differ.is_empty(),
        "{} of {answered} differ: {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
}

/// The `conns=` of a stats line.
fn stats_conns(line: &str) -> usize {
    let field = line.split(' ').find_map(|f| f.strip_prefix("conns="));
    field.unwrap_or_else(|| panic!("{line}")).parse().unwrap()
}

#[test]
fn the_stats_interval_prints_a_line_per_worker_and_the_total() {
    let server = Server::start_with(&["--workers", "2", "--stats-interval", "200ms"]);
    let pids = workers(&server, 2, Duration::from_secs(5));
    let conns = open_served(&server, 64);
    let held = assert_every_worker_holds_connections(&server, &pids);
    // Which pid has which index is not known here: the workers' counts are compared as a set.
    let mut expected = held;
    expected.sort_unstable();
    let started = Instant::now();
    let block = loop {
        let log = server.stderr();
        // Whole lines only: the log may be read while a line is being written.
        let log = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("miohttpd: stats: "))
            .collect();
        // Every unlabelled (total) line comes right after worker 1's: workers print none.
        for (at, line) in lines.iter().enumerate() {
            if !line.starts_with("miohttpd: stats: worker=") {
                assert!(
                    at >= 2
                        && lines[at - 2].starts_with("miohttpd: stats: worker=0 ")
                        && lines[at - 1].starts_with("miohttpd: stats: worker=1 "),
                    "a total line not after each worker's:\n{log}"
                );
            }
        }
        let found = lines.windows(3).rev().find(|w| stats_conns(w[2]) == 64);
        if let Some(w) = found {
            break [w[0].to_string(), w[1].to_string(), w[2].to_string()];
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no stats lines with the 64 connections:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let mut per_worker = vec![stats_conns(&block[0]), stats_conns(&block[1])];
    per_worker.sort_unstable();
    assert_eq!(per_worker, expected, "{block:?}");
    let fields: Vec<&str> = block[2]
        .trim_start_matches("miohttpd: stats: ")
        .split(' ')
        .map(|f| f.split_once('=').unwrap_or_else(|| panic!("{block:?}")).0)
        .collect();
    assert_eq!(
        fields,
        ["conns", "req/s", "syscalls/req", "events/poll", "in", "out"],
        "the total line reads as one process's"
    );
    drop(conns);
}

#[test]
fn log_lines_name_the_worker_or_the_supervisor() {
    let mut server = Server::start_with(&["--workers", "2"]);
    let pids = workers(&server, 2, Duration::from_secs(5));
    // Both serve (so both have their signal handlers) before the signal.
    let conns = open_served(&server, 32);
    assert_every_worker_holds_connections(&server, &pids);
    drop(conns);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    let log = server.stderr();
    for line in log.lines() {
        assert!(
            line.starts_with("miohttpd[supervisor]: ")
                || line.starts_with("miohttpd[worker 0]: ")
                || line.starts_with("miohttpd[worker 1]: "),
            "an unnamed line {line:?}:\n{log}"
        );
    }
    for worker in 0..2 {
        let shutting = format!("miohttpd[worker {worker}]: SIGTERM: shutting down");
        assert!(log.contains(&shutting), "{log}");
    }
    assert!(
        log.contains("miohttpd[supervisor]: SIGTERM: telling every worker"),
        "{log}"
    );
    // One process says it as it always did.
    let mut single = Server::start_with(&["--workers", "1"]);
    single.assert_still_serves();
    single.signal("TERM");
    assert!(single.wait_exit(Duration::from_secs(10)).success());
    let log = single.stderr();
    assert!(log.contains("miohttpd: SIGTERM: shutting down"), "{log}");
    assert!(!log.contains("miohttpd["), "{log}");
}
