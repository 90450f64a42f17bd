//! The servers miohttpd is measured beside: nginx with one worker (plaintext), nginx with the
//! nchan module (comet), and the Go standard-library peers in `benches/peers/`. Each is
//! installed with apt-get or built with `go build` when missing, configured in a scratch
//! directory, and started as a [`Server`] pinned like miohttpd.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cpu::status_field;
use crate::server::{free_port, Server};

/// The body every plaintext server answers `GET /plaintext` with.
pub const PLAINTEXT_BODY: &str = "Hello, World!";
const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// Whether `program` runs at all (`program ARG` started; its exit status does not matter).
pub fn have_command(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Installs Debian `packages` with apt-get (through sudo when not root). `apt-get update` only
/// when the first attempt fails: it is the slow part, and a fresh machine needs it once.
pub fn apt_install(driver: &str, packages: &[&str]) -> Result<(), String> {
    eprintln!("{driver}: installing {} with apt-get", packages.join(" "));
    let root = status_field("self", "Uid:").is_some_and(|uids| uids.starts_with("0\t"));
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install: Vec<&str> = ["install", "-y", "-qq", "--no-install-recommends"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect();
    if apt(&install) || (apt(&["update", "-qq"]) && apt(&install)) {
        Ok(())
    } else {
        Err(format!("apt-get could not install {}", packages.join(" ")))
    }
}

/// nginx, installed (nginx-light, else nginx) when missing.
pub fn ensure_nginx(driver: &str) -> Result<(), String> {
    if have_command("nginx", "-v") {
        return Ok(());
    }
    apt_install(driver, &["nginx-light"]).or_else(|_| apt_install(driver, &["nginx"]))
}

/// nginx's nchan module, installed with apt-get when missing.
pub fn ensure_nchan(driver: &str) -> Result<(), String> {
    if Path::new(NCHAN_MODULE).exists() {
        return Ok(());
    }
    apt_install(driver, &["nginx-light", "libnginx-mod-nchan"])?;
    if Path::new(NCHAN_MODULE).exists() {
        Ok(())
    } else {
        Err(format!("{NCHAN_MODULE} still missing after apt-get"))
    }
}

/// nginx with the configuration `config(addr, dir)` gives, on a free port, its files in
/// `scratch/<name>-<port>/`. Stopped with its workers when the [`Server`] drops.
pub fn start_nginx(
    name: &str,
    scratch: &Path,
    config: impl Fn(std::net::SocketAddr, &Path) -> String,
    pin: bool,
) -> Result<Server, String> {
    let addr = free_port();
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = scratch.join(format!("{slug}-{}", addr.port()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(addr, &dir)).map_err(|e| format!("{}: {e}", conf.display()))?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
    Ok(Server::start_at(name, cmd, addr, pin))
}

/// One worker answering `GET /plaintext` with [`PLAINTEXT_BODY`], as many keep-alive requests
/// per connection as wrk sends, no access log.
pub fn nginx_plaintext_config(addr: std::net::SocketAddr, dir: &Path) -> String {
    nginx_plaintext_config_with(addr, dir, 1, NginxAccept::Shared, None)
}

/// How nginx's workers share the listening port: the two models nginx offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxAccept {
    /// One listening socket in every worker's epoll (`accept_mutex off`, the default since
    /// 1.11.3, with `EPOLLEXCLUSIVE` where the kernel has it).
    Shared,
    /// `listen ... reuseport`: a socket per worker, the kernel hashes connections over them.
    Reuseport,
}

/// [`nginx_plaintext_config`] with `workers` workers, the accept model, and worker i pinned to
/// `cores[i]` (`worker_cpu_affinity` as bit masks) when given.
pub fn nginx_plaintext_config_with(
    addr: std::net::SocketAddr,
    dir: &Path,
    workers: usize,
    accept: NginxAccept,
    cores: Option<&[usize]>,
) -> String {
    let affinity = cores.map_or(String::new(), |cores| {
        let masks: Vec<String> = cores.iter().take(workers).map(|&c| cpu_mask(c)).collect();
        format!("worker_cpu_affinity {};\n", masks.join(" "))
    });
    let reuseport = match accept {
        NginxAccept::Shared => "",
        NginxAccept::Reuseport => " reuseport",
    };
    format!(
        "worker_processes {workers};\n\
         {affinity}\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         worker_rlimit_nofile 20000;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n\
           access_log off;\n\
           keepalive_requests 1000000000;\n\
           client_body_temp_path {dir};\n\
           server {{\n\
             listen {addr} backlog=4096{reuseport};\n\
             location = /plaintext {{ default_type text/plain; return 200 \"{PLAINTEXT_BODY}\"; }}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    )
}

/// nginx's CPU mask for one core: core 0 is "1", core 2 is "100".
fn cpu_mask(core: usize) -> String {
    let mut mask = "1".to_string();
    mask.push_str(&"0".repeat(core));
    mask
}

/// One worker, longpoll subscribers on `/sub`, the publisher on `/pub`. `worker_connections`
/// is a table size, not an fd count: nginx starts closing idle connections to reuse them once
/// fewer than 1/16 of the table is free, which with 20,000 slots dropped waiters from about
/// 18,750 on. 32,768 slots keep 19,000 waiters whole; the fd limit still caps real sockets.
pub fn nchan_config(addr: std::net::SocketAddr, dir: &Path) -> String {
    format!(
        "load_module {NCHAN_MODULE};\n\
         worker_processes 1;\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         worker_rlimit_nofile 20000;\n\
         events {{ worker_connections 32768; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {dir};\n\
           server {{\n\
             listen {addr} backlog=4096;\n\
             location = /sub {{ nchan_subscriber longpoll; nchan_channel_id default; }}\n\
             location = /pub {{ nchan_publisher; nchan_channel_id default; }}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    )
}

/// [`nchan_config`] with the channel kept in Redis, as nchan 1.3 asks for it (an `upstream`
/// with `nchan_redis_server`, `nchan_redis_pass` in the locations; `nchan_redis_url` and
/// `nchan_use_redis` still work but warn), in its default `distributed` storage mode: several
/// nginx on one Redis are one nchan, a publish on any reaches every subscriber, and the
/// channel info counts every instance's subscribers.
pub fn nchan_redis_config(redis_url: &str) -> impl Fn(std::net::SocketAddr, &Path) -> String + '_ {
    move |addr, dir| {
        nchan_config(addr, dir)
            .replace(
                "nchan_channel_id default;",
                "nchan_channel_id default; nchan_redis_pass bench_redis;",
            )
            // This instance's own subscribers: the channel's count, kept in Redis for every
            // instance, lags and once stuck at 1 of 2,000 over two instances.
            .replace(
                "location = /pub",
                "location = /nchan_status { nchan_stub_status; }\n    location = /pub",
            )
            .replace(
                "client_body_temp_path",
                &format!(
                    "upstream bench_redis {{ nchan_redis_server {redis_url}; }}\n  client_body_temp_path"
                ),
            )
    }
}

/// Builds a Go peer from one standard-library-only source file with plain `go build` (GOPATH
/// mode, no network) into `scratch/peers/NAME`, installing Debian's golang-go first if `go`
/// is missing.
pub fn build_go_peer(
    driver: &str,
    scratch: &Path,
    source: &Path,
    name: &str,
) -> Result<PathBuf, String> {
    if !have_command("go", "version") {
        apt_install(driver, &["golang-go"])?;
    }
    let dir = scratch.join("peers");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = dir.join(name);
    let status = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(source)
        .current_dir(&dir)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", dir.join("go-cache"))
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("running go build: {e}"))?;
    if status.success() {
        Ok(out)
    } else {
        Err(format!("go build {} failed ({status})", source.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_workers_pinned_and_reuseport() {
        let addr = "127.0.0.1:8080".parse().unwrap();
        let one = nginx_plaintext_config(addr, Path::new("/d"));
        assert!(one.starts_with("worker_processes 1;\ndaemon off;"));
        assert!(one.contains("listen 127.0.0.1:8080 backlog=4096;"));
        let four = nginx_plaintext_config_with(
            addr,
            Path::new("/d"),
            2,
            NginxAccept::Reuseport,
            Some(&[0, 2]),
        );
        assert!(four.contains("worker_processes 2;\nworker_cpu_affinity 1 100;\n"));
        assert!(four.contains("backlog=4096 reuseport;"));
    }

    #[test]
    fn nginx_configs_name_the_address_and_scratch_dir() {
        let addr = "127.0.0.1:4321".parse().unwrap();
        let dir = Path::new("/tmp/x");
        let plain = nginx_plaintext_config(addr, dir);
        assert!(plain.contains("listen 127.0.0.1:4321 backlog=4096;"));
        assert!(plain.contains("pid /tmp/x/nginx.pid;"));
        assert!(plain.contains("return 200 \"Hello, World!\""));
        assert!(plain.contains("worker_processes 1;"));
        let nchan = nchan_config(addr, dir);
        assert!(nchan.starts_with(&format!("load_module {NCHAN_MODULE};")));
        assert!(nchan.contains("nchan_subscriber longpoll"));
        let redis = nchan_redis_config("redis://127.0.0.1:6390")(addr, dir);
        assert!(
            redis.contains("upstream bench_redis { nchan_redis_server redis://127.0.0.1:6390; }")
        );
        assert_eq!(redis.matches("nchan_redis_pass bench_redis;").count(), 2);
        assert!(redis.contains("location = /nchan_status { nchan_stub_status; }"));
        // Balanced braces: nginx refuses the file otherwise.
        for conf in [plain, nchan, redis] {
            assert_eq!(conf.matches('{').count(), conf.matches('}').count());
        }
    }

    #[test]
    fn have_command_tells_present_from_missing() {
        assert!(have_command("sh", "-c"));
        assert!(!have_command("no-such-program-for-loadbench", "-v"));
    }
}
