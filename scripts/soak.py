#!/usr/bin/env python3
# scripts/soak.py — the soak driver that scripts/soak.sh runs against a live miohttpd: a mix
# of clients (uploads, comet waiters and notifies, SSE subscribers, streamed commands,
# pipelined plaintext, abrupt hang-ups) for a fixed time, /proc sampling of the server's RSS
# and fds, then a drain, an exact comet round, a settle and the verdict. Standard library
# only: threads and blocking sockets, one thread per client.
#
# With --workers N (the server runs a supervisor and N workers) RSS and fds are summed over
# the supervisor and its workers, /metrics comes from --metrics-url (the supervisor's admin
# listener: totals over the workers), commands are the workers' children, and with
# --kill-worker-at S one worker is SIGKILLed (by PID, a child of the supervisor) S seconds
# into the load. Its clients see resets or closes: an error on a connection the killed
# worker held (its sockets' peers, read from /proc just before the kill), or a connection
# error right at the kill on a connection opened before it, is counted as "by the killed
# worker" and the client reconnects (waiters and subscribers catch up with their last id);
# any other error is still an error.
#
# With --host URL,PID,METRICS_URL (repeated; the hosts run with --redis against one Redis,
# each a supervisor and its workers) the clients are spread over every host: waiters and
# subscribers of one channel sit on every host, each publish goes to the next host in turn,
# so most answers cross hosts and must carry the id the publishing host answered; RSS, fds,
# /metrics and commands are summed over every host. With --redis-restart-at S the Redis
# (--redis-pidfile, restarted with --redis-command in the same dir, its data kept) is
# SIGKILLed S seconds into the load and started again --redis-down seconds later: publishes
# answered 503 with Retry-After from the kill until every host's link is up again are
# counted as refused, not errors; waiters and subscribers that stayed connected must still
# see every message of their channel, in order.
"""Soak driver for miohttpd. Exit status: 0 all checks passed, 1 a check failed, 3 hard timeout."""

import argparse
import collections
import csv
import hashlib
import os
import json
import random
import socket
import struct
import sys
import signal
import subprocess
import threading
import time

# Linux: bind(2) to a source address without reserving a port until connect(2), so the
# 4-tuple, not the source port alone, has to be unique (many clients per source address).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SOURCE_ADDRESSES = [f"127.0.0.{i}" for i in range(2, 102)]

PLAINTEXT_BODY = b"Hello, World!"
PIPELINE_DEPTH = 16
WAITER_CHANNELS = [f"soak-w{i}" for i in range(8)]
SSE_CHANNELS = [f"soak-e{i}" for i in range(4)]
COMET_BODY_LIMIT = 65536  # the server's default --comet-body-limit
UPLOAD_POOL_BYTES = 48 << 20  # random bytes every upload body is cut from
IO_TIMEOUT = 60.0  # any one socket operation of a well-behaved client


class Closed(Exception):
    """The server closed the connection cleanly, before any byte of a response."""


class Refused(Exception):
    """A publish refused (503) while Redis was down: counted, never an error."""


class Broken(Exception):
    """Bytes that are not the expected HTTP, or a close in the middle of a response."""


class Response:
    def __init__(self, version, status, headers):
        self.version = version
        self.status = status
        self.headers = headers  # lower-case name -> value (the last one if repeated)
        self.body = b""
        self.trailers = {}

    def header(self, name):
        return self.headers.get(name)

    def __repr__(self):
        return f"<{self.status} {self.headers} body={self.body[:80]!r}>"


class Reader:
    """Buffered reads of HTTP/1.1 responses from one socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self, size=262144):
        data = self.sock.recv(size)
        if not data:
            raise EOFError
        self.buf += data

    def _line(self):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            if len(self.buf) > 65536:
                raise Broken("a line longer than 64 KiB")
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _fields(self):
        fields = {}
        while True:
            line = self._line()
            if not line:
                return fields
            name, sep, value = line.partition(b":")
            if not sep:
                raise Broken(f"header line without a colon: {line[:80]!r}")
            fields[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")

    def head(self):
        """The status line and header fields of the next response (1xx included)."""
        try:
            if not self.buf:
                try:
                    self._fill()
                except EOFError:
                    raise Closed() from None
            line = self._line()
            version, _, rest = line.partition(b" ")
            status = int(rest[:3])
            if not version.startswith(b"HTTP/1."):
                raise Broken(f"status line {line[:80]!r}")
            return Response(version.decode(), status, self._fields())
        except EOFError:
            raise Broken("closed in the middle of a response head") from None
        except ValueError:
            raise Broken("unparsable status line") from None

    def next_chunk(self, response):
        """The next chunk's data, or None after the last chunk (trailers in response)."""
        try:
            size_line = self._line()
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                response.trailers = self._fields()
                return None
            data = self._exact(size)
            if self._exact(2) != b"\r\n":
                raise Broken("chunk data not followed by CRLF")
            return data
        except EOFError:
            raise Broken("closed in the middle of a chunked body") from None
        except ValueError:
            raise Broken(f"bad chunk size line {size_line[:40]!r}") from None

    def body(self, response, method="GET", sink=None):
        """Reads the body of `response`; hands it to sink(data) piece by piece if given, else
        keeps it in response.body."""
        pieces = []
        sink = sink or pieces.append
        if method == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
            return response
        if response.header("transfer-encoding") == "chunked":
            while (data := self.next_chunk(response)) is not None:
                sink(data)
        elif (length := response.header("content-length")) is not None:
            remaining = int(length)
            try:
                while remaining:
                    if not self.buf:
                        self._fill(min(remaining, 262144))
                    take = bytes(self.buf[:remaining])
                    del self.buf[: len(take)]
                    remaining -= len(take)
                    sink(take)
            except EOFError:
                raise Broken(f"closed with {remaining} bytes of the body missing") from None
        else:  # close-delimited (HTTP/1.0)
            if self.buf:
                sink(bytes(self.buf))
                self.buf.clear()
            while data := self.sock.recv(262144):
                sink(data)
        response.body = b"".join(pieces)
        return response

    def response(self, method="GET", sink=None):
        """The next final response, skipping any 1xx."""
        while True:
            response = self.head()
            if response.status >= 200:
                return self.body(response, method, sink)

    def expect_close(self):
        """The server must close now, with nothing more sent."""
        if self.buf:
            raise Broken(f"bytes after the last response: {bytes(self.buf[:80])!r}")
        if self.sock.recv(1):
            raise Broken("bytes after the last response")


# The connection each client thread opened last: its local endpoint and when, so an error
# can be traced to a killed worker (each thread holds one connection at a time).
CURRENT = threading.local()


def connect(address, timeout=IO_TIMEOUT):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((random.choice(SOURCE_ADDRESSES), 0))
        sock.settimeout(timeout)
        CURRENT.opened = time.monotonic()
        CURRENT.endpoint = None
        sock.connect(address)
        CURRENT.endpoint = sock.getsockname()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def peer_endpoints(pid):
    """The remote (address, port) of every TCP socket process `pid` holds open: for a
    server's accepted connection, its client's local endpoint."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    peers = set()
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[9] in inodes:
                address, port = fields[2].split(":")
                ip = socket.inet_ntoa(struct.pack("<I", int(address, 16)))
                peers.add((ip, int(port, 16)))
    return peers


def hang_up(sock, reset):
    """Closes as a vanishing client does: a FIN, or an RST when reset (SO_LINGER 0)."""
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def request(method, target, headers=(), version="HTTP/1.1", body=b""):
    lines = [f"{method} {target} {version}", "Host: soak"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def join_all(threads, seconds):
    """Joins threads within one deadline for all of them."""
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def pick_size(rng):
    """Upload sizes from 0 bytes to tens of MiB, log-uniform inside each band."""
    band = rng.random()
    if band < 0.02:
        return 0
    low, high = (
        (1, 256) if band < 0.40 else
        (256, 64 << 10) if band < 0.65 else
        (64 << 10, 3 << 20) if band < 0.87 else
        (3 << 20, 40 << 20)
    )
    return int(low * (high / low) ** rng.random())


class Tally:
    """Counts per kind and the unexpected errors, shared by every client thread."""

    MAX_KEPT_ERRORS = 40

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.errors = collections.Counter()
        self.error_samples = []

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    excuse = None  # set by Soak: whether an error right now is the killed worker's doing

    def error(self, kind, message):
        if self.excuse is not None and self.excuse(kind, message):
            return
        with self.lock:
            self.errors[kind] += 1
            if len(self.error_samples) < self.MAX_KEPT_ERRORS:
                self.error_samples.append(f"[{time.strftime('%H:%M:%S')}] {kind}: {message}")

    def total_errors(self):
        with self.lock:
            return sum(self.errors.values())


class Soak:
    def __init__(self, args):
        self.args = args

        def address(url):
            host, _, port = url.removeprefix("http://").partition(":")
            return host, int(port)

        # Every host: (its HTTP address, its PID, its /metrics address). The first is --url.
        self.hosts = [(address(args.url), args.pid, address(args.metrics_url or args.url))]
        for spec in args.host:
            url, pid, metrics_url = spec.split(",")
            self.hosts.append((address(url), int(pid), address(metrics_url)))
        # With workers or --redis each host is a supervisor and its workers.
        self.supervised = args.workers > 1 or args.redis
        # Each host's /metrics connection is counted by the process that serves it (the one
        # server, or the supervisor with workers) while it is read: one per host in the sum.
        self.metrics_connections = len(self.hosts)
        self.redis_down_at = None  # monotonic time of the Redis kill
        self.redis_up_at = None  # monotonic time every host's link was up again after it
        self.refused_channels = collections.Counter()  # channel -> publishes refused with 503
        self.killed_at = None  # monotonic time of the worker kill
        self.killed_peers = set()  # client endpoints the killed worker held
        self.killed_worker = None
        self.tally = Tally()
        self.tally.excuse = self.excused
        self.stop = threading.Event()  # load clients finish their current exchange and exit
        self.drain = threading.Event()  # waiters and subscribers exit after their next message
        self.started = time.monotonic()
        self.upload_pool = os.urandom(UPLOAD_POOL_BYTES)
        self.expected_ticks = b"".join(b"tick %d\n" % i for i in range(1, args.ticks + 1))
        flood = b"".join(b"%d\n" % i for i in range(1, args.flood_lines + 1))
        self.expected_flood = (len(flood), hashlib.md5(flood).hexdigest())
        # Comet bookkeeping: what each notify published, and what each waiter received.
        self.lock = threading.Lock()
        self.published = {}  # comet id -> (channel, body bytes, content type or None, n reached)
        self.published_on = {}  # comet id -> the host that published it
        self.order = collections.defaultdict(list)  # channel -> ids in publish order
        self.answers = []  # (waiter index, mode, channel, comet id, body, content type)
        self.waiters_running = 0
        self.sse_published = {}  # comet id -> (channel, seq, body text)
        self.sse_seen = []  # (comet id, channel, data, host) of every event a subscriber read
        self.sse_published_on = {}  # comet id -> the host that published it
        self.refused_sse = False  # the SSE publisher's last publish was refused (503)
        # Publishes whose answer the kill took: maybe published, maybe not.
        self.lost_notifies = collections.Counter()  # channel -> count
        self.lost_sse = collections.defaultdict(set)  # channel -> seqs
        self.notified_at = {}  # comet id -> monotonic time its notify was answered

    # ----- helpers -------------------------------------------------------------------------

    @property
    def address(self):
        """The host the calling client thread talks to (CURRENT.host, set when it starts)."""
        return self.hosts[getattr(CURRENT, "host", 0) % len(self.hosts)][0]

    def on_host(self, index, target, *args):
        """Runs target(*args) in this thread as a client of host `index`."""
        CURRENT.host = index % len(self.hosts)
        return target(*args)

    def in_outage(self):
        """Whether Redis is down or some host's link not yet back: publishes are refused."""
        if self.redis_down_at is None:
            return False
        return self.redis_up_at is None or time.monotonic() < self.redis_up_at + 2.0

    def refused(self, response, channel):
        """Whether a publish's answer is the refusal of a host whose Redis link is down: 503
        with Retry-After during the outage. Such a publish may still have reached Redis (the
        kill took its reply), so its channel may see an id nobody was answered."""
        if response.status != 503 or not self.in_outage():
            return False
        if response.header("retry-after") is None:
            raise Broken("a 503 without Retry-After while Redis was down")
        with self.lock:
            self.refused_channels[channel] += 1
        self.tally.add("publish refused (503) while Redis was down")
        return True

    def log(self, text):
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", flush=True)

    def by_kill(self, message=""):
        """Whether the calling thread's failure is the killed worker's: its connection was one
        the worker held, or a connection error came right at the kill on a connection opened
        before it (one still in the killed worker's accept queue, say)."""
        if self.killed_at is None:
            return False
        if getattr(CURRENT, "endpoint", None) in self.killed_peers:
            return True
        opened = getattr(CURRENT, "opened", None)
        connection_error = any(word in message for word in (
            "Reset", "Broken", "Closed", "closed", "Refused", "EOF", "Aborted"))
        return (connection_error and opened is not None and opened <= self.killed_at
                and time.monotonic() - self.killed_at < 5.0)

    def excused(self, kind, message):
        if not self.by_kill(message):
            return False
        self.tally.add(f"by the killed worker: {kind}")
        return True

    def guard(self, kind, exchange, *args):
        """Runs one exchange of a well-behaved client: any exception is an unexpected error."""
        try:
            exchange(*args)
            return True
        except Refused:
            time.sleep(0.2)
            return False
        except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
            self.tally.error(kind, f"{type(e).__name__}: {e}")
            time.sleep(0.2)  # a broken server must not turn this into a busy loop
            return False

    def simple(self, method, target, body=b"", headers=(), address=None):
        """One request on a fresh connection, with Connection: close."""
        with connect(address or self.address, 30) as sock:
            reader = Reader(sock)
            if body:
                headers = (*headers, ("Content-Length", len(body)))
            sock.sendall(request(method, target, (*headers, ("Connection", "close")), body=body))
            return reader.response(method)

    def host_metrics(self, metrics_address):
        response = self.simple("GET", "/metrics", address=metrics_address)
        if response.status != 200:
            raise Broken(f"/metrics answered {response.status}")
        values = {}
        for line in response.body.decode().splitlines():
            if line.startswith("miohttpd_"):
                name, _, value = line.partition(" ")
                try:
                    values[name.removeprefix("miohttpd_")] = int(value)
                except ValueError:
                    pass  # a float gauge: none the soak reads
        return values

    def metrics(self):
        """/metrics summed over every host."""
        total = collections.defaultdict(int)
        for _, _, metrics_address in self.hosts:
            for name, value in self.host_metrics(metrics_address).items():
                total[name] += value
        return total

    def parked(self):
        """GET / on the first host: with --redis it counts every host's parked waiters."""
        response = self.simple("GET", "/", address=self.hosts[0][0])
        if response.status != 200:
            raise Broken(f"GET / answered {response.status}")
        if len(self.hosts) > 1:
            counted = response.header("x-comet-hosts")
            if counted != f"{len(self.hosts)}/{len(self.hosts)}":
                raise Broken(f"GET / counted hosts {counted!r}, not all {len(self.hosts)}")
        return int(response.body)

    def processes(self, host=None):
        """The servers' processes: the one per host, or each supervisor and its workers
        (of one host, or of all)."""
        pids = [pid for _, pid, _ in self.hosts] if host is None else [self.hosts[host][1]]
        if not self.supervised:
            return pids
        return [*pids, *self.workers(host)]

    def workers(self, host=None):
        found = []
        for _, pid, _ in self.hosts if host is None else [self.hosts[host]]:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                found += [int(p) for p in f.read().split()]
        return found

    def host_samples(self):
        """[(RSS KiB, fds)] of each host, summed over its processes."""
        return [self.proc_sample(host) for host in range(len(self.hosts))]

    def proc_sample(self, host=None):
        """RSS (KiB) and open fds, summed over the server's processes (or one host's)."""
        rss = fds = 0
        for pid in self.processes(host):
            try:
                with open(f"/proc/{pid}/status") as status:
                    rss += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
                fds += len(os.listdir(f"/proc/{pid}/fd"))
            except (OSError, StopIteration):
                if any(pid == host_pid for _, host_pid, _ in self.hosts):
                    raise
        return rss, fds

    def kill_worker(self):
        """SIGKILLs one worker S seconds into the load, its clients' endpoints noted first."""
        if self.stop.wait(self.args.kill_worker_at):
            return
        victim = self.workers()[0]
        self.killed_peers = peer_endpoints(victim)
        self.killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        self.killed_worker = victim
        self.log(f"SIGKILLed worker {victim} (it held {len(self.killed_peers)} client connections)")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            workers = self.workers()
            if len(workers) == self.args.workers * len(self.hosts) and victim not in workers:
                self.tally.add("worker killed and replaced")
                self.log(f"worker replaced after {time.monotonic() - self.killed_at:.2f} s: {workers}")
                return
            time.sleep(0.02)
        self.tally.error("worker restart", f"no replacement for worker {victim} within 5 s")

    def restart_redis(self):
        """SIGKILLs Redis S seconds into the load, starts it again (same port, same dir, its
        append-only file) --redis-down seconds later, and waits for every host's link."""
        if self.stop.wait(self.args.redis_restart_at):
            return
        with open(self.args.redis_pidfile) as f:
            victim = int(f.read())
        self.redis_down_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        self.log(f"SIGKILLed redis-server {victim}")
        time.sleep(self.args.redis_down)
        with open(self.args.redis_log, "ab") as log:
            # Its own session: soak.sh stops it by the PID in the pidfile, as the first one.
            subprocess.Popen(json.loads(self.args.redis_command), stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        restarted = time.monotonic()
        deadline = restarted + 60
        while time.monotonic() < deadline:
            try:
                up = all(self.host_metrics(m).get('redis_link_state{state="up"}') == 1
                         for _, _, m in self.hosts)
            except Exception:  # noqa: BLE001 - a host busy answering: ask again
                up = False
            if up:
                self.redis_up_at = time.monotonic()
                self.tally.add("redis killed and restarted, every link up again")
                self.log(f"redis restarted; every host's link up {self.redis_up_at - restarted:.2f} s "
                         f"after the restart ({self.redis_up_at - self.redis_down_at:.2f} s after the kill)")
                return
            time.sleep(0.05)
        self.redis_up_at = time.monotonic()
        self.tally.error("redis restart", "some host's link not up within 60 s of the restart")

    # ----- uploads -------------------------------------------------------------------------

    def upload_client(self, rng):
        while not self.stop.is_set():
            self.guard("upload", self.upload_connection, rng)

    def upload_connection(self, rng):
        with connect(self.address) as sock:
            reader = Reader(sock)
            for _ in range(rng.randint(1, 3)):
                if self.stop.is_set():
                    return
                self.upload(rng, sock, reader)

    def upload(self, rng, sock, reader):
        size = pick_size(rng)
        start = rng.randrange(0, UPLOAD_POOL_BYTES - size + 1)
        body = memoryview(self.upload_pool)[start : start + size]
        chunked = rng.random() < 0.4
        expect = size > 0 and rng.random() < 0.3
        path = rng.choice(["/", "/md5"])
        headers = [("Transfer-Encoding", "chunked") if chunked else ("Content-Length", size)]
        if expect:
            headers.append(("Expect", "100-continue"))
        head = request("POST", path, headers)
        if rng.random() < 0.1:  # a head split across two segments
            cut = rng.randrange(1, len(head))
            sock.sendall(head[:cut])
            time.sleep(0.002)
            sock.sendall(head[cut:])
        else:
            sock.sendall(head)
        if expect:
            interim = reader.head()
            if interim.status != 100:
                raise Broken(f"Expect: 100-continue answered {interim.status}, not 100")
            self.tally.add("upload 100-continue")
        if chunked:
            self.send_chunked(rng, sock, body)
        else:
            sock.sendall(body)
        response = reader.response("POST")
        digest = hashlib.md5(body).hexdigest().encode()
        if response.status != 200 or response.body != digest:
            raise Broken(f"{size}-byte upload ({'chunked' if chunked else 'length'}): "
                         f"{response.status} {response.body[:40]!r}, expected {digest!r}")
        self.tally.add("upload")
        self.tally.add("upload chunked" if chunked else "upload content-length")
        self.tally.add("upload bytes", size)

    @staticmethod
    def send_chunked(rng, sock, body):
        largest = max(1, min(len(body) // 4 + 1, 2 << 20))
        offset = 0
        while offset < len(body):
            n = min(len(body) - offset, rng.randint(1, largest))
            sock.sendall(b"%x\r\n" % n)
            sock.sendall(body[offset : offset + n])
            sock.sendall(b"\r\n")
            offset += n
        sock.sendall(b"0\r\n\r\n")

    # ----- comet: waiters and notifies ----------------------------------------------------

    def waiter(self, index, channel, mode):
        """One long-poll client for the whole run. Modes: `keep` (HTTP/1.1, waits again on
        the same connection), `after` (the same, passing back the last id: it must see every
        message of its channel, in order), `pipelined` (a GET /plaintext pipelined behind each
        wait, answered after it), `http10` (one connection per wait, closed by the server
        after the answer)."""
        sock = reader = None
        last_id = None
        try:
            while True:
                try:
                    if sock is None:
                        sock = connect(self.address, self.args.silence)
                        reader = Reader(sock)
                    target = f"/wait/{channel}"
                    if mode == "after" and last_id:
                        target += f"?after={last_id}"
                    wait = request("GET", target, version="HTTP/1.0" if mode == "http10" else "HTTP/1.1")
                    sock.sendall(wait + request("GET", "/plaintext") if mode == "pipelined" else wait)
                    try:
                        response = reader.response()
                    except socket.timeout:
                        self.tally.error("waiter silence", f"waiter {index} ({mode}) on {channel}: nothing "
                                         f"for {self.args.silence:.0f} s while notifies went on")
                        return
                    except Closed:
                        self.tally.add("waiter closed by the server without an answer")
                        sock.close()
                        sock = None
                        continue
                    if response.status != 200:
                        raise Broken(f"wait answered {response.status}")
                    if response.header("x-comet-resync"):
                        raise Broken(f"resync after {last_id}: a message fell out of the history")
                    comet_id = response.header("x-comet-id")
                    with self.lock:
                        self.answers.append((index, mode, channel, comet_id, response.body,
                                             response.header("content-type"), CURRENT.host))
                    last_id = comet_id
                    self.tally.add("waiter answered")
                    if mode == "pipelined":
                        behind = reader.response()
                        if behind.status != 200 or behind.body != PLAINTEXT_BODY:
                            raise Broken(f"the request pipelined behind a wait: {behind!r}")
                        self.tally.add("waiter: GET pipelined behind, answered after")
                    if mode == "http10":
                        if response.header("connection") != "close":
                            raise Broken("an HTTP/1.0 waiter's answer without Connection: close")
                        reader.expect_close()
                        sock.close()
                        sock = None
                    if self.drain.is_set():
                        self.tally.add("waiter finished")
                        return
                except Exception as e:  # noqa: BLE001
                    if not self.by_kill(f"{type(e).__name__}: {e}"):
                        raise
                    self.tally.add("by the killed worker: waiter reconnected")
                    if sock is not None:
                        sock.close()
                    sock = None
        except Exception as e:  # noqa: BLE001
            self.tally.error("waiter", f"waiter {index} ({mode}) on {channel}: {type(e).__name__}: {e}")
        finally:
            if sock is not None:
                sock.close()
            with self.lock:
                self.waiters_running -= 1

    def notifier(self, rng):
        """Notifies the waiter channels round-robin, GET (the count) or POST (a body), until
        the load stops and every waiter has left."""
        turn = 0
        drain_deadline = None
        while True:
            if self.drain.is_set():
                drain_deadline = drain_deadline or time.monotonic() + self.args.silence + 10
                with self.lock:
                    running = self.waiters_running
                if running == 0 or time.monotonic() > drain_deadline:
                    return
            channel = WAITER_CHANNELS[turn % len(WAITER_CHANNELS)]
            CURRENT.host = turn % len(self.hosts)  # publishes go round the hosts
            turn += 1
            if not self.guard("notify", self.notify, rng, channel) and self.by_kill("Reset"):
                with self.lock:
                    self.lost_notifies[channel] += 1
            time.sleep(self.args.notify_every)

    def notify(self, rng, channel):
        roll = rng.random()
        if roll < 0.4:
            response = self.simple("GET", f"/notify/{channel}")
            body, content_type = None, None
        else:
            size = rng.choice([0, rng.randint(1, 100), rng.randint(100, 8192), rng.randint(8192, 65536)])
            if roll > 0.98:
                size = COMET_BODY_LIMIT + 1
            body = rng.randbytes(size)
            content_type = rng.choice(["application/octet-stream", "text/plain", "application/json"])
            response = self.simple("POST", f"/notify/{channel}", body, [("Content-Type", content_type)])
            if size > COMET_BODY_LIMIT:
                if response.status != 413:
                    raise Broken(f"a {size}-byte notify answered {response.status}, not 413")
                self.tally.add("notify over limit (413)")
                return
        if self.refused(response, channel):
            return
        if response.status != 200 or not response.body.isdigit():
            raise Broken(f"notify answered {response!r}")
        comet_id = response.header("x-comet-id")
        reached = int(response.body)
        if body is None:
            body = response.body
        counted = response.header("x-comet-hosts")
        if len(self.hosts) > 1 and counted != f"{len(self.hosts)}/{len(self.hosts)}":
            # A host that did not count back within the bound: n leaves its waiters out.
            self.tally.add(f"notify counted hosts {counted}")
            reached = None
        with self.lock:
            self.published[comet_id] = (channel, body, content_type, reached)
            self.notified_at[comet_id] = time.monotonic()
            self.published_on[comet_id] = CURRENT.host
            self.order[channel].append(comet_id)
        self.tally.add("notify")

    def check_answers(self):
        """Every answer a waiter got is a message published on its channel, with that body;
        no notify reached fewer connections than our plain waiters it answered; an `after`
        waiter saw its channel's messages one after the other, none skipped."""
        position = {cid: (ch, i) for ch, ids in self.order.items() for i, cid in enumerate(ids)}
        plain_counts = collections.Counter()
        last_position = {}
        for index, mode, channel, cid, body, content_type, host in self.answers:
            published = self.published.get(cid)
            if published is None and self.lost_notifies[channel]:
                # A notify whose answer the killed worker took may still have been published.
                self.tally.add("answer to a notify whose answer the kill took")
                continue
            if published is None and self.refused_channels[channel]:
                # A notify refused as Redis died may have reached it before the kill.
                self.tally.add("answer to a notify refused (503) as Redis died")
                continue
            if published is None:
                self.tally.error("waiter answer", f"waiter {index} got id {cid}, never published")
                continue
            p_channel, p_body, p_type, _ = published
            if (self.killed_at is not None and p_type is None and p_channel == channel
                    and body.isdigit() and p_body.isdigit() and int(body) > int(p_body)
                    and abs(self.notified_at[cid] - self.killed_at) < 5.0):
                # GET /notify across workers is exact (each worker sets aside the waiters
                # it counts for that message), but waiters counted on the worker killed
                # before the message came are in the body and were never reached.
                self.tally.add("GET notify: waiters counted on the killed worker")
                p_body = body
            if p_channel != channel or p_body != body or (p_type and p_type != content_type):
                self.tally.error("waiter answer", f"waiter {index} on {channel}: {cid} was "
                                 f"{len(p_body)} bytes {p_type} on {p_channel}, got {len(body)} bytes {content_type}")
                continue
            if len(self.hosts) > 1:
                self.tally.add("waiter answers from another host" if self.published_on[cid] != host
                               else "waiter answers from its own host")
            if mode != "after":
                plain_counts[cid] += 1
                continue
            _, at = position[cid]
            if index in last_position and at != last_position[index] + 1:
                self.tally.error("waiter order", f"after-waiter {index} on {channel}: message "
                                 f"#{at} followed #{last_position[index]}")
            last_position[index] = at
        for cid, count in plain_counts.items():
            if self.published[cid][3] is not None and count > self.published[cid][3]:
                self.tally.error("notify count", f"{cid} reached {self.published[cid][3]} but "
                                 f"{count} of our waiters got it")
        self.tally.add("waiter answers checked", len(self.answers))

    # ----- SSE -----------------------------------------------------------------------------

    def sse_publisher(self, rng):
        seq = collections.Counter()
        turn = 0
        while not self.drain.is_set():
            channel = SSE_CHANNELS[turn % len(SSE_CHANNELS)]
            CURRENT.host = turn % len(self.hosts)  # publishes go round the hosts
            turn += 1
            seq[channel] += 1
            lines = [f"{channel} {seq[channel]}"]
            lines += ["".join(rng.choices("abcdefghij klmnop:xyz0123456789", k=rng.randint(0, 300)))
                      for _ in range(rng.randint(0, 4))]
            if not self.guard("sse publish", self.sse_publish, channel, seq[channel], "\n".join(lines)):
                if self.by_kill("Reset") or self.refused_sse:
                    # Maybe published before the worker (or Redis) died: the number is spent.
                    self.refused_sse = False
                    with self.lock:
                        self.lost_sse[channel].add(seq[channel])
                else:
                    seq[channel] -= 1  # a failed publish keeps its number for the next try
            time.sleep(self.args.sse_every)
        for channel in SSE_CHANNELS:  # the end marker each subscriber reads up to
            seq[channel] += 1
            self.guard("sse publish", self.sse_publish, channel, seq[channel], f"{channel} {seq[channel]} end")

    def sse_publish(self, channel, seq, text):
        response = self.simple("POST", f"/notify/{channel}", text.encode(), [("Content-Type", "text/plain")])
        if self.refused(response, channel):
            self.refused_sse = True
            raise Refused("refused while Redis was down")
        if response.status != 200:
            raise Broken(f"SSE publish answered {response.status}")
        with self.lock:
            self.sse_published[response.header("x-comet-id")] = (channel, seq, text)
            self.sse_published_on[response.header("x-comet-id")] = CURRENT.host
        self.tally.add("sse published")

    def check_events(self):
        """Every event a subscriber read carries exactly the data published under its id."""
        for event_id, channel, text, host in self.sse_seen:
            published = self.sse_published.get(event_id)
            if published is None and self.lost_sse[channel]:
                self.tally.add("sse event of a publish whose answer the kill took (or refused as Redis died)")
                continue
            if len(self.hosts) > 1 and published is not None:
                self.tally.add("sse events from another host" if self.sse_published_on[event_id] != host
                               else "sse events from its own host")
            if published is None or published[0] != channel or published[2] != text:
                self.tally.error("sse data", f"event {event_id} on {channel}: {text[:60]!r} is not what was "
                                 f"published ({published and published[2][:60]!r})")
        self.tally.add("sse events checked", len(self.sse_seen))

    def sse_subscriber(self, rng, index, channel, reconnects):
        """Reads the event stream of `channel` until the end marker, checking that the events
        come one after the other; a reconnecting subscriber comes back with Last-Event-ID
        every few seconds and must continue exactly where it left off."""
        position = [None, None]  # last id, last seq: kept by sse_session as events arrive
        try:
            while True:
                stay = rng.uniform(3, 12) if reconnects else None
                if reconnects and position[0]:
                    CURRENT.host = (CURRENT.host + 1) % len(self.hosts)  # catch up on the next host
                try:
                    done = self.sse_session(channel, position, stay)
                except Exception as e:  # noqa: BLE001
                    if not self.by_kill(f"{type(e).__name__}: {e}"):
                        raise
                    self.tally.add("by the killed worker: sse subscriber reconnected")
                    continue
                if done:
                    self.tally.add("sse subscriber finished")
                    return
                self.tally.add("sse reconnect")
        except socket.timeout:
            self.tally.error("sse silence", f"subscriber {index} on {channel}: nothing for {self.args.silence:.0f} s")
        except Exception as e:  # noqa: BLE001
            self.tally.error("sse", f"subscriber {index} on {channel}: {type(e).__name__}: {e}")

    def sse_session(self, channel, position, stay):
        """One event-stream connection from `position` ([last id, last seq], updated as events
        arrive); whether the end marker came."""
        last_id, last_seq = position
        headers = [("Last-Event-ID", last_id)] if last_id else []
        with connect(self.address, self.args.silence) as sock:
            reader = Reader(sock)
            sock.sendall(request("GET", f"/events/{channel}", headers))
            response = reader.head()
            if response.status != 200 or not (response.header("content-type") or "").startswith("text/event-stream"):
                raise Broken(f"events answered {response!r}")
            if response.header("transfer-encoding") != "chunked":
                raise Broken("an HTTP/1.1 event stream that is not chunked")
            until = time.monotonic() + stay if stay else None
            text = ""
            while until is None or time.monotonic() < until:
                data = reader.next_chunk(response)
                if data is None:
                    raise Broken("the event stream ended")
                text += data.decode()
                while "\n\n" in text:
                    block, text = text.split("\n\n", 1)
                    event = self.sse_event(channel, block, last_seq)
                    if event is None:
                        continue
                    last_id, last_seq, end = event
                    position[:] = [last_id, last_seq]
                    if end:
                        return True
            return False

    def sse_event(self, channel, block, last_seq):
        """Checks one event block; returns (id, seq, is the end marker), or None for a comment."""
        event_id, kind, data = None, "message", []
        for line in block.split("\n"):
            if line.startswith(":"):
                self.tally.add("sse heartbeat")
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                event_id = value
            elif name == "event":
                kind = value
            elif name == "data":
                data.append(value)
        if event_id is None and not data:
            return None
        if kind != "message":
            raise Broken(f"event {kind!r} (id {event_id}) after seq {last_seq}")
        text = "\n".join(data)
        ch, _, rest = text.partition(" ")
        seq = int(rest.split("\n", 1)[0].split(" ", 1)[0])
        if ch != channel:
            raise Broken(f"an event of {ch} on {channel}")
        skipped = set(range(last_seq + 1, seq)) if last_seq is not None else set()
        with self.lock:
            lost = skipped <= self.lost_sse[channel]
        if last_seq is not None and seq != last_seq + 1 and not (seq > last_seq and lost):
            raise Broken(f"event #{seq} after #{last_seq}: out of order or lost")
        with self.lock:
            self.sse_seen.append((event_id, channel, text, CURRENT.host))
        self.tally.add("sse event")
        return event_id, seq, text.endswith(" end") and "\n" not in text

    # ----- streamed commands ---------------------------------------------------------------

    def stream_client(self, rng):
        while not self.stop.is_set():
            self.guard("stream", self.stream_connection, rng)

    def stream_connection(self, rng):
        http10 = rng.random() < 0.15
        with connect(self.address) as sock:
            reader = Reader(sock)
            while True:
                name = "flood" if rng.random() < 0.35 else "ticks"
                slow = rng.random() < 0.3
                sock.sendall(request("GET", f"/stream/{name}", version="HTTP/1.0" if http10 else "HTTP/1.1"))
                response = reader.head()
                if response.status != 200:
                    raise Broken(f"/stream/{name} answered {response.status}")
                digest, length = hashlib.md5(), [0]

                def sink(data):
                    digest.update(data)
                    length[0] += len(data)
                    if slow:  # ticks at a tenth of a second a line, flood at about 2 MB/s
                        time.sleep(0.1 if name == "ticks" else len(data) / 2e6)

                reader.body(response, sink=sink)
                expected = (
                    (len(self.expected_ticks), hashlib.md5(self.expected_ticks).hexdigest())
                    if name == "ticks" else self.expected_flood
                )
                if (length[0], digest.hexdigest()) != expected:
                    raise Broken(f"/stream/{name}: {length[0]} bytes {digest.hexdigest()}, expected {expected}")
                if http10:
                    self.tally.add("stream read (HTTP/1.0, close-delimited)")
                    return
                if response.trailers.get("x-exit-status") != "0":
                    raise Broken(f"/stream/{name} trailers {response.trailers}, expected X-Exit-Status: 0")
                self.tally.add(f"stream {name} read{' slowly' if slow else ''}")
                if self.stop.is_set() or rng.random() < 0.5:
                    return

    # ----- pipelined plaintext ---------------------------------------------------------------

    def pipeline_client(self, rng):
        while not self.stop.is_set():
            self.guard("pipeline", self.pipeline_connection, rng)

    def pipeline_connection(self, rng):
        with connect(self.address) as sock:
            reader = Reader(sock)
            for _ in range(rng.randint(1, 40)):
                if self.stop.is_set():
                    return
                methods = rng.choices(["GET", "HEAD"], weights=[7, 1], k=PIPELINE_DEPTH)
                sock.sendall(b"".join(request(method, "/plaintext") for method in methods))
                for i, method in enumerate(methods):
                    response = reader.response(method)
                    length = response.header("content-length")
                    if (response.status, length) != (200, str(len(PLAINTEXT_BODY))) or response.body != (
                        PLAINTEXT_BODY if method == "GET" else b""
                    ):
                        raise Broken(f"pipelined response {i} to {method}: {response!r}")
                self.tally.add("pipelined responses", PIPELINE_DEPTH)
            sock.sendall(request("GET", "/plaintext", [("Connection", "close")]))
            response = reader.response()
            if response.status != 200 or response.body != PLAINTEXT_BODY:
                raise Broken(f"last response: {response!r}")
            reader.expect_close()
            self.tally.add("pipelined responses")

    # ----- abrupt hang-ups ---------------------------------------------------------------

    def abrupt_client(self, rng):
        scenarios = [
            self.vanish_mid_upload, self.vanish_mid_chunked_upload, self.vanish_after_100_continue,
            self.vanish_mid_head, self.vanish_mid_stream, self.vanish_mid_pipeline,
            self.vanish_parked, self.vanish_parked_fresh_channel, self.vanish_subscribed,
        ]
        while not self.stop.is_set():
            scenario = rng.choice(scenarios)
            reset = rng.random() < 0.5
            self.tally.add(f"hang-up {scenario.__name__.removeprefix('vanish_')}{' (RST)' if reset else ''}")
            try:
                sock = connect(self.address)
            except OSError as e:
                self.tally.error("hang-up connect", f"{type(e).__name__}: {e}")
                time.sleep(0.2)
                continue
            try:
                scenario(rng, sock, Reader(sock))
            except Exception as e:  # noqa: BLE001
                # Everything before the hang-up is a well-behaved exchange: it must go right.
                self.tally.error("hang-up", f"{scenario.__name__}: {type(e).__name__}: {e}")
            finally:
                hang_up(sock, reset)
            time.sleep(rng.uniform(0, 0.05))

    def vanish_mid_upload(self, rng, sock, reader):
        size = rng.randint(1 << 20, 20 << 20)
        sock.sendall(request("POST", "/md5", [("Content-Length", size)]))
        sock.sendall(memoryview(self.upload_pool)[: rng.randrange(size)])

    def vanish_mid_chunked_upload(self, rng, sock, reader):
        sock.sendall(request("POST", "/", [("Transfer-Encoding", "chunked")]))
        for _ in range(rng.randint(1, 20)):
            n = rng.randint(1, 100_000)
            sock.sendall(b"%x\r\n" % n + self.upload_pool[:n] + b"\r\n")
        sock.sendall(b"4\r\nab")  # in the middle of a chunk

    def vanish_after_100_continue(self, rng, sock, reader):
        sock.sendall(request("POST", "/", [("Content-Length", 5000), ("Expect", "100-continue")]))
        if reader.head().status != 100:
            raise Broken("no 100 Continue")

    def vanish_mid_head(self, rng, sock, reader):
        head = request("GET", "/plaintext", [("X-Padding", "p" * rng.randint(0, 4000))])
        sock.sendall(head[: rng.randrange(1, len(head) - 2)])
        time.sleep(rng.uniform(0, 0.2))

    def vanish_mid_stream(self, rng, sock, reader):
        name = rng.choice(["ticks", "flood"])
        sock.sendall(request("GET", f"/stream/{name}"))
        response = reader.head()
        if response.status != 200:
            raise Broken(f"/stream/{name} answered {response.status}")
        for _ in range(rng.randint(0, 5)):
            reader.next_chunk(response)
        time.sleep(rng.uniform(0, 1))  # not reading: the pipe fills and the command blocks

    def vanish_mid_pipeline(self, rng, sock, reader):
        sock.sendall(request("GET", "/plaintext") * (PIPELINE_DEPTH * rng.randint(1, 64)))
        if rng.random() < 0.5:
            reader.response()
        time.sleep(rng.uniform(0, 0.5))  # not reading: the answers back up in the server

    def vanish_parked(self, rng, sock, reader):
        sock.sendall(request("GET", f"/wait/{rng.choice(WAITER_CHANNELS)}",
                             version=rng.choice(["HTTP/1.1", "HTTP/1.0"])))
        sock.settimeout(rng.uniform(0.05, 3))
        try:
            reader.response()  # an answer before the hang-up is fine; it is not tracked
        except socket.timeout:
            pass

    def vanish_parked_fresh_channel(self, rng, sock, reader):
        """A channel made for one waiter that leaves: the channel must be dropped after its TTL."""
        sock.sendall(request("GET", f"/wait/soak-x{rng.randrange(1 << 30)}"))
        sock.settimeout(rng.uniform(0.05, 1))
        try:
            reader.response()
            raise Broken("a waiter on a fresh channel nobody notifies got an answer")
        except socket.timeout:
            pass

    def vanish_subscribed(self, rng, sock, reader):
        sock.sendall(request("GET", f"/events/{rng.choice(SSE_CHANNELS)}"))
        response = reader.head()
        if response.status != 200:
            raise Broken(f"events answered {response.status}")
        for _ in range(rng.randint(0, 3)):
            reader.next_chunk(response)

    # ----- sampling ------------------------------------------------------------------------

    def sampler(self, writer, csv_file, rows):
        next_at = time.monotonic()
        last_requests = None
        while not self.stop.is_set():
            self.take_sample(writer, csv_file, rows, last_requests)
            last_requests = rows[-1]["requests"] if rows else None
            next_at += self.args.sample_every
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def take_sample(self, writer, csv_file, rows, last_requests=None, phase="load"):
        try:
            rss, fds = self.proc_sample()
            # Each host's too, at the same moment (before /metrics opens a connection).
            per_host = self.host_samples() if len(self.hosts) > 1 else []
        except (OSError, StopIteration) as e:
            self.tally.error("server gone", f"/proc/{self.args.pid}: {e}")
            self.stop.set()
            return
        try:
            m = self.metrics()
        except Exception as e:  # noqa: BLE001
            self.tally.error("metrics", f"{type(e).__name__}: {e}")
            m = collections.defaultdict(int)
        row = {
            "t_s": round(time.monotonic() - self.started, 1), "phase": phase, "rss_kib": rss, "fds": fds,
            "connections": m["connections"], "parked": m["parked_waiters"],
            "commands": m["commands_running"], "requests": m["requests_total"],
        }
        for host, (host_rss, host_fds) in enumerate(per_host, 1):
            row[f"rss_kib_h{host}"], row[f"fds_h{host}"] = host_rss, host_fds
        row["req_per_s"] = (
            round((row["requests"] - last_requests) / self.args.sample_every) if last_requests is not None else ""
        )
        rows.append(row)
        writer.writerow(row)
        csv_file.flush()

    # ----- phases --------------------------------------------------------------------------

    def warm_up_once(self):
        """One exchange of every kind before the baseline, so anything the server opens once
        and keeps on purpose is counted in it."""
        for host in range(len(self.hosts)):
            CURRENT.host = host
            rng = random.Random(1)
            with connect(self.address) as sock:
                self.upload(rng, sock, Reader(sock))
            response = self.simple("GET", "/stream/ticks")
            if response.status != 200 or response.trailers.get("x-exit-status") != "0":
                raise Broken(f"/stream/ticks: {response!r}")
            self.simple("GET", "/notify/soak-warm")
        CURRENT.host = 0

    def final_round(self):
        """After the drain: fresh waiters on every waiter channel, the server must report
        exactly that many parked, and one notify per channel must reach exactly them."""
        count = self.args.waiters
        sockets = []
        try:
            for i in range(count):
                CURRENT.host = (i // len(WAITER_CHANNELS)) % len(self.hosts)
                sock = connect(self.address, 30)
                sockets.append((WAITER_CHANNELS[i % len(WAITER_CHANNELS)], sock, Reader(sock)))
                sock.sendall(request("GET", f"/wait/{sockets[-1][0]}"))
            deadline = time.monotonic() + 60
            while (parked := self.parked()) != count:
                if time.monotonic() > deadline:
                    raise Broken(f"{count} waiters connected, the server reports {parked} parked")
                time.sleep(0.2)
            per_channel = collections.Counter(ch for ch, _, _ in sockets)
            answers = {}
            for turn, (channel, expected) in enumerate(per_channel.items()):
                CURRENT.host = turn % len(self.hosts)
                if len(self.hosts) > 1:
                    # Across hosts: a body of our own; the answer must count every host.
                    body = f"final {channel}".encode()
                    response = self.simple("POST", f"/notify/{channel}", body)
                else:
                    response = self.simple("GET", f"/notify/{channel}")
                    body = response.body
                if response.status != 200 or response.body != str(expected).encode():
                    raise Broken(f"final notify of {channel} reached {response.body!r}, {expected} were parked")
                answers[channel] = response.header("x-comet-id"), body
            for channel, sock, reader in sockets:
                response = reader.response()
                got = response.header("x-comet-id"), response.body
                if response.status != 200 or got != answers[channel]:
                    raise Broken(f"final waiter on {channel} got {response.status} {got}, expected {answers[channel]}")
            self.tally.add("final-round waiters answered", count)
            if (parked := self.parked()) != 0:
                raise Broken(f"{parked} still parked after the final notifies")
        finally:
            for _, sock, _ in sockets:
                sock.close()

    def settle(self):
        """Waits (bounded) until the server holds nothing for clients: only the /metrics
        connection asking is open, nothing parked, no command running or unreaped, fds at
        the baseline."""
        deadline = time.monotonic() + self.args.settle
        while True:
            m = self.metrics()
            _, fds = self.proc_sample()
            children = self.children()
            workers_back = not self.supervised or len(self.workers()) == self.args.workers * len(self.hosts)
            hosts_back = len(self.hosts) == 1 or [f for _, f in self.host_samples()] == self.baseline_host_fds
            settled = (m["connections"] == self.metrics_connections and m["parked_waiters"] == 0
                       and m["commands_running"] == 0 and fds == self.baseline_fds and not children
                       and workers_back and hosts_back)
            if settled or time.monotonic() > deadline:
                return m, fds, children
            time.sleep(0.5)

    def children(self):
        """The server's commands, zombies included (one not reaped): its child processes, or
        with workers the workers' children."""
        parents = [pid for _, pid, _ in self.hosts] if not self.supervised else self.workers()
        found = []
        for pid in parents:
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    found += f.read().split()
            except OSError:
                pass
        return found

    def run(self):
        args = self.args
        threading.Thread(target=self.watchdog, daemon=True).start()
        self.log(f"server pid {args.pid} at {args.url}; load for {args.seconds} s")
        _, fresh_fds = self.proc_sample()
        metrics_start = self.metrics()
        self.warm_up_once()
        time.sleep(0.5)
        rss_start, self.baseline_fds = self.proc_sample()
        self.baseline_host_fds = [f for _, f in self.host_samples()]

        rows = []
        csv_file = open(args.csv, "w", newline="")
        columns = ["t_s", "phase", "rss_kib", "fds", "connections", "parked", "commands", "requests", "req_per_s"]
        if len(self.hosts) > 1:  # each host's own, as well as the sums
            columns += [f"{kind}_h{host}" for host in range(1, len(self.hosts) + 1) for kind in ("rss_kib", "fds")]
        writer = csv.DictWriter(csv_file, fieldnames=columns)
        writer.writeheader()
        self.take_sample(writer, csv_file, rows, phase="baseline")

        self.log(f"seed {args.seed}; fds {fresh_fds} fresh, {self.baseline_fds} after one exchange of each "
                 f"kind (the baseline); RSS {rss_start} KiB")
        seeds = random.Random(args.seed)

        def spawn(target, *extra, host=0):
            thread = threading.Thread(target=self.on_host,
                                      args=(host, target, random.Random(seeds.random()), *extra), daemon=True)
            thread.start()
            return thread

        threading.stack_size(512 << 10)
        # Spread over the hosts; waiters and subscribers so that every channel has some on each.
        load = [spawn(self.upload_client, host=i) for i in range(args.uploaders)]
        load += [spawn(self.stream_client, host=i) for i in range(args.streamers)]
        load += [spawn(self.pipeline_client, host=i) for i in range(args.pipeliners)]
        load += [spawn(self.abrupt_client, host=i) for i in range(args.abrupt)]
        modes = ["keep"] * 5 + ["after", "after", "pipelined", "http10", "http10"]
        waiters = []
        with self.lock:
            self.waiters_running = args.waiters
        for i in range(args.waiters):
            waiters.append(threading.Thread(
                target=self.on_host, args=((i // len(WAITER_CHANNELS)) % len(self.hosts), self.waiter, i,
                                           WAITER_CHANNELS[i % len(WAITER_CHANNELS)], modes[i % len(modes)]),
                daemon=True))
            waiters[-1].start()
        subscribers = [spawn(self.sse_subscriber, i, SSE_CHANNELS[i % len(SSE_CHANNELS)], i % 2 == 1,
                             host=i // len(SSE_CHANNELS))
                       for i in range(args.subscribers)]
        time.sleep(0.5)  # subscribers first, so they see the first events
        publishers = [spawn(self.notifier), spawn(self.sse_publisher)]
        sampler = threading.Thread(target=self.sampler, args=(writer, csv_file, rows), daemon=True)
        sampler.start()
        if args.kill_worker_at:
            threading.Thread(target=self.kill_worker, daemon=True).start()
        if args.redis_restart_at:
            threading.Thread(target=self.restart_redis, daemon=True).start()

        load_until = time.monotonic() + args.seconds
        while time.monotonic() < load_until and not self.stop.is_set():
            time.sleep(min(1.0, max(0.0, load_until - time.monotonic())))
        self.log("load done; draining")
        self.stop.set()
        sampler.join()
        join_all(load, IO_TIMEOUT + 10)
        self.drain.set()
        join_all(publishers + waiters + subscribers, args.silence * 2 + 15)
        stuck = sum(t.is_alive() for t in load + publishers + waiters + subscribers)
        if stuck:
            self.tally.error("stuck", f"{stuck} client threads still running after the drain")
        self.check_answers()
        self.check_events()

        self.log("final comet round")
        self.guard("final round", self.final_round)
        self.log("settling")
        metrics_end, end_fds, children = self.settle()
        time.sleep(1.0)
        rss_end, _ = self.proc_sample()
        self.end_host = self.host_samples()
        self.take_sample(writer, csv_file, rows, phase="settled")
        csv_file.close()
        return self.report(rows, rss_start, fresh_fds, metrics_start, metrics_end, rss_end, end_fds, children)

    def watchdog(self):
        limit = self.args.seconds + self.args.silence * 2 + self.args.settle + 240
        time.sleep(limit)
        print(f"soak: hard timeout: still running {limit:.0f} s after start", file=sys.stderr, flush=True)
        os._exit(3)

    # ----- verdict -------------------------------------------------------------------------

    def report(self, rows, rss_start, fresh_fds, m0, m1, rss_end, end_fds, children):
        args = self.args
        load_rows = [r for r in rows if r["phase"] == "load"]
        warm_rows = [r for r in load_rows if r["t_s"] <= rows[0]["t_s"] + args.warmup] or load_rows[:1]
        rss_warm = max(r["rss_kib"] for r in warm_rows)
        rss_peak = max(r["rss_kib"] for r in rows)
        fds_peak = max(r["fds"] for r in rows)
        rss_bound = rss_warm + args.rss_margin_kib

        print("\nserver RSS and fds (every row of the CSV: " + args.csv + ")")
        print(f"{'t (s)':>7} {'phase':>8} {'RSS MiB':>8} {'fds':>6} {'conns':>6} {'parked':>6} {'cmds':>5} {'req/s':>7}")
        step = max(1, len(rows) // 20)
        shown = sorted(set(range(0, len(rows), step)) | {len(rows) - 1})
        for r in (rows[i] for i in shown):
            print(f"{r['t_s']:7.1f} {r['phase']:>8} {r['rss_kib'] / 1024:8.1f} {r['fds']:6d} {r['connections']:6d} "
                  f"{r['parked']:6d} {r['commands']:5d} {r['req_per_s']!s:>7}")

        counts = self.tally.counts
        print("\nexchanges")
        for key in sorted(counts):
            value = counts[key]
            print(f"  {key:<44} {value / (1 << 20):,.1f} MiB" if key == "upload bytes" else f"  {key:<44} {value:,}")

        def delta(name):
            return m1[name] - m0[name]

        print("\nserver /metrics, start -> end")
        for name in ["accepts_total", "closes_total", "connections", "parked_waiters", "commands_running",
                     "requests_total", "received_bytes_total", "sent_bytes_total"]:
            print(f"  {name:<24} {m0[name]:>14,} -> {m1[name]:>14,}  (+{delta(name):,})")

        failures = []
        if self.tally.total_errors():
            failures.append(f"{self.tally.total_errors()} unexpected errors: {dict(self.tally.errors)}")
        if children:
            failures.append(f"the server still has child processes after settling: {children}")
        if end_fds != self.baseline_fds:
            failures.append(f"fds: {end_fds} after settling, baseline {self.baseline_fds}")
        host_lines = []
        if len(self.hosts) > 1:
            for host, (h_rss, h_fds) in enumerate(self.end_host, 1):
                h_warm = max(r[f"rss_kib_h{host}"] for r in warm_rows)
                h_peak = max(r[f"rss_kib_h{host}"] for r in rows)
                h_bound = h_warm + args.rss_margin_kib
                h_base = self.baseline_host_fds[host - 1]
                host_lines.append(f"  host {host}              RSS KiB start {rows[0][f'rss_kib_h{host}']}, after warm-up "
                                  f"{h_warm}, peak {h_peak}, end {h_rss} (bound {h_bound}); fds baseline {h_base}, "
                                  f"peak {max(r[f'fds_h{host}'] for r in rows)}, end {h_fds}")
                if h_fds != h_base:
                    failures.append(f"host {host} fds: {h_fds} after settling, baseline {h_base}")
                if h_rss > h_bound:
                    failures.append(f"host {host} RSS {h_rss} KiB after settling > {h_bound} KiB")
        if rss_end > rss_bound:
            failures.append(f"RSS {rss_end} KiB after settling > {rss_bound} KiB "
                            f"(warm-up level {rss_warm} + margin {args.rss_margin_kib})")
        if (m1["connections"], m1["parked_waiters"], m1["commands_running"]) != (self.metrics_connections, 0, 0):
            failures.append(f"gauges after settling: {m1['connections']} connections "
                            f"({self.metrics_connections}: the /metrics one where it is counted), "
                            f"{m1['parked_waiters']} parked, {m1['commands_running']} commands")
        if m1["accepts_total"] - m1["closes_total"] != m1["connections"]:
            failures.append(f"accepts {m1['accepts_total']} - closes {m1['closes_total']} != "
                            f"{m1['connections']} open")
        if args.redis_restart_at and counts["redis killed and restarted, every link up again"] != 1:
            failures.append("the Redis restart did not happen or some host's link did not come back")
        if args.kill_worker_at and counts["worker killed and replaced"] != 1:
            failures.append("the worker kill did not happen or the worker did not come back")
        if counts["waiter finished"] != args.waiters:
            failures.append(f"{counts['waiter finished']} of {args.waiters} waiters got their last answer")
        if counts["sse subscriber finished"] != args.subscribers:
            failures.append(f"{counts['sse subscriber finished']} of {args.subscribers} subscribers read to the end")
        minimums = {"upload": 1, "waiter answered": 1, "sse event": 1, "stream ticks read": 1,
                    "pipelined responses": PIPELINE_DEPTH, "final-round waiters answered": 1}
        for key, least in minimums.items():
            if counts[key] < least:
                failures.append(f"only {counts[key]} × {key}: that load did not run")

        print("\nsummary")
        print(f"  duration            {args.seconds} s of load, seed {args.seed}")
        print(f"  upload digests      {counts['upload']:,} checked ({counts['upload bytes'] / (1 << 20):,.0f} MiB)")
        print(f"  waiter answers      {counts['waiter answers checked']:,} checked, "
              f"{counts['final-round waiters answered']} in the final round")
        print(f"  SSE events          {counts['sse event']:,} in order, {counts['sse events checked']:,} data checked")
        print(f"  errors              {self.tally.total_errors()}")
        if len(self.hosts) > 1:
            print(f"  across hosts        {len(self.hosts)} hosts; waiter answers from another host "
                  f"{counts['waiter answers from another host']:,}, from its own "
                  f"{counts['waiter answers from its own host']:,}; SSE events from another host "
                  f"{counts['sse events from another host']:,}, from its own {counts['sse events from its own host']:,}")
        if self.redis_down_at is not None:
            up = f"{self.redis_up_at - self.redis_down_at:.2f} s later" if self.redis_up_at else "never"
            print(f"  redis restart       SIGKILL at {self.redis_down_at - self.started:.1f} s, every link up {up}; "
                  f"{counts['publish refused (503) while Redis was down']} publishes refused (503)")
        if self.killed_worker:
            excused = {k: v for k, v in counts.items() if k.startswith("by the killed worker")}
            print(f"  killed worker       {self.killed_worker} (SIGKILL at {self.killed_at - self.started:.1f} s, "
                  f"{len(self.killed_peers)} client connections): {excused}")
        print(f"  RSS KiB             start {rss_start}, after warm-up {rss_warm}, peak {rss_peak}, "
              f"end {rss_end} (bound {rss_bound})")
        print(f"  fds                 fresh {fresh_fds}, baseline {self.baseline_fds}, peak {fds_peak}, end {end_fds}")
        for line in host_lines:
            print(line)
        for line in self.tally.error_samples:
            print(f"  ! {line}")
        if failures:
            print("\nSOAK FAILED")
            for failure in failures:
                print(f"  - {failure}")
            return 1
        print("\nSOAK PASSED")
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT of the running server")
    parser.add_argument("--pid", type=int, required=True, help="the server's PID, for /proc")
    parser.add_argument("--workers", type=int, default=1,
                        help="the server's --workers: above 1, --pid is the supervisor")
    parser.add_argument("--metrics-url", help="where /metrics is (with workers, the admin listener)")
    parser.add_argument("--kill-worker-at", type=float, default=0.0,
                        help="SIGKILL one worker this many seconds into the load (0: never)")
    parser.add_argument("--host", action="append", default=[], metavar="URL,PID,METRICS_URL",
                        help="another host on the same Redis (repeat for more)")
    parser.add_argument("--redis", action="store_true",
                        help="the hosts run with --redis: each is a supervisor and its workers")
    parser.add_argument("--redis-restart-at", type=float, default=0.0,
                        help="SIGKILL Redis this many seconds into the load and start it again (0: never)")
    parser.add_argument("--redis-down", type=float, default=3.0, help="seconds Redis stays down")
    parser.add_argument("--redis-pidfile", help="the Redis pidfile (its --pidfile)")
    parser.add_argument("--redis-command", help="the Redis command line, a JSON list, to restart it")
    parser.add_argument("--redis-log", help="where the restarted Redis logs")
    parser.add_argument("--seconds", type=int, default=600, help="how long the load runs")
    parser.add_argument("--csv", required=True, help="where the RSS/fd samples go")
    parser.add_argument("--ticks", type=int, required=True, help="lines of the server's --exec ticks")
    parser.add_argument("--flood-lines", type=int, required=True, help="N of the server's --exec flood='seq N'")
    parser.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    parser.add_argument("--waiters", type=int, default=300)
    parser.add_argument("--subscribers", type=int, default=24)
    parser.add_argument("--uploaders", type=int, default=3)
    parser.add_argument("--streamers", type=int, default=3)
    parser.add_argument("--pipeliners", type=int, default=2)
    parser.add_argument("--abrupt", type=int, default=2)
    parser.add_argument("--notify-every", type=float, default=0.25, help="seconds between notifies (round-robin)")
    parser.add_argument("--sse-every", type=float, default=0.2, help="seconds between SSE publishes (round-robin)")
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--silence", type=float, default=30.0,
                        help="a waiter or subscriber hearing nothing this long is an error")
    parser.add_argument("--settle", type=float, default=30.0, help="longest wait for the server to settle")
    parser.add_argument("--warmup", type=float, help="seconds of load whose peak RSS is the reference")
    parser.add_argument("--rss-margin-kib", type=int, default=8192,
                        help="how far above the warm-up RSS the settled RSS may be")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = min(60.0, max(10.0, args.seconds / 10))
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    soak = Soak(args)
    try:
        status = soak.run()
    except Exception as e:  # noqa: BLE001 - e.g. the server died: a failed soak, not a traceback
        print(f"\nSOAK FAILED: {type(e).__name__}: {e}")
        print(f"  {soak.tally.total_errors()} unexpected errors before: {dict(soak.tally.errors)}")
        for line in soak.tally.error_samples:
            print(f"  ! {line}")
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
