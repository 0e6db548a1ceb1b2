#!/usr/bin/env python3
"""portico's benchmark harness: the same workloads through portico and the
peers users would pick instead (HAProxy, nginx stream, ActiveMQ), alternated in
one run on one machine, written up as a markdown table. `bench/run.sh` installs
the peers and builds portico, then runs this; see bench/README.md."""

import argparse
import re
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
PORTICO = BIN / "portico"
BROKER = BIN / "portico-broker"
LOADGEN = BIN / "portico-loadgen"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# TLS 1.3 suites in portico's order of preference; HAProxy and nginx are set
# to the same, so every contender negotiates the same suite.
SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
FRONT_NAME = "mq.bench.test"  # the front doors' certificate
BACKEND_NAME = "backend"  # the backend's and the brokers' certificate


# ---------------------------------------------------------------- plumbing


class Bench:
    """The work folder, the log of every command run, and the results."""

    def __init__(self, work: Path):
        self.work = work
        self.commands = {}  # label -> first command line seen under it
        self.results = {}  # (section, key, contender) -> [values]
        # The front door's certificates: ECDSA P-256 (`portico certs`) or
        # RSA-2048 (what AWS Certificate Manager issues by default). Front
        # door figures are recorded under the key type's scope.
        self.keys = "ecdsa"
        self.suites = {}  # key type -> contender -> negotiated suite

    @property
    def certs(self):
        return self.work / ("certs" if self.keys == "ecdsa" else f"certs-{self.keys}")

    @property
    def scope(self):
        return "" if self.keys == "ecdsa" else f" {self.keys}"

    def note_command(self, label, argv):
        line = " ".join(shlex.quote(str(a)) for a in argv)
        self.commands.setdefault(label, line.replace(str(self.work), "$WORK"))

    def record(self, section, key, contender, value):
        self.results.setdefault((section, key, contender), []).append(value)

    def median(self, section, key, contender):
        values = [v for v in self.results.get((section, key, contender), []) if v is not None]
        return statistics.median(values) if values else None

    def runs(self, section, key, contender):
        return self.results.get((section, key, contender), [])


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def listening(port):
    """Whether some socket listens on this TCP port (without connecting to it)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def port_open(host, port):
    with socket.create_connection((host, port), timeout=0.5):
        return True


class Proc:
    """A process this harness started, with its output in the work folder."""

    def __init__(self, bench, label, argv, env=None, log_name=None):
        self.label = label
        bench.note_command(label, argv)
        self.log_path = bench.work / f"{log_name or label}.log"
        self.log_file = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            [str(a) for a in argv],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def tree(self):
        """This process and its descendants (nginx's workers)."""
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                    parents.setdefault(ppid, []).append(int(entry.name))
                except (OSError, ValueError):
                    continue
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(parents.get(pid, []))
        return found

    def kill(self):
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self, sig=signal.SIGTERM, grace=10.0):
        if self.alive():
            os.kill(self.pid, sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        self.log_file.close()

    def output(self):
        return self.log_path.read_text(errors="replace")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        except OSError:
            continue
    return total


def loadgen(bench, label, args, timeout=120):
    argv = [LOADGEN, *args]
    bench.note_command(label, argv)
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{label}: loadgen failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def capture(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"
    return (done.stdout + done.stderr).strip()


# ---------------------------------------------------------------- contenders


class Contender:
    """One way of reaching the backend: `direct` (no proxy) or a front door."""

    name = "?"

    def __init__(self, bench):
        self.bench = bench
        self.proc = None
        self.host = "127.0.0.1"
        self.port = None

    def target_args(self):
        return [
            "--target", f"{self.host}:{self.port}",
            "--ca", self.bench.certs / "ca.crt",
            "--server-name", self.server_name(),
        ]

    def server_name(self):
        return FRONT_NAME

    def pids(self):
        return self.proc.tree() if self.proc else []

    def start(self, echo_backend=True):
        self.launch()
        wait_for(lambda: port_open(self.host, self.port), f"{self.name} to listen")
        if echo_backend:
            # Ready once a TLS round trip through it reaches the backend.
            wait_for(self.relays, f"{self.name} to relay to the backend")

    def relays(self):
        if self.proc and not self.proc.alive():
            raise RuntimeError(f"{self.name} exited; see {self.proc.log_path}")
        try:
            loadgen(
                self.bench,
                f"probe {self.name}",
                ["latency", *self.target_args(), "--seconds", "0.05", "--warmup", "0"],
                timeout=10,
            )
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def launch(self):
        raise NotImplementedError


class Direct(Contender):
    name = "direct"

    def __init__(self, bench, backend):
        super().__init__(bench)
        self.host, self.port = backend

    def server_name(self):
        return BACKEND_NAME

    def launch(self):
        pass


class Portico(Contender):
    name = "portico"

    def __init__(self, bench, upstreams, health_port, interval="1s", fall=2, rise=2, binary=None, name=None):
        super().__init__(bench)
        self.upstreams, self.health_port = upstreams, health_port
        self.interval, self.fall, self.rise = interval, fall, rise
        self.binary = binary or PORTICO
        self.name = name or self.name

    def launch(self):
        self.port = free_port()
        certs = self.bench.certs
        targets = ", ".join(f'"{h}:{p}"' for h, p in self.upstreams)
        pairs = f"pairs = [[{targets}]]" if len(self.upstreams) == 2 else ""
        config = self.bench.work / f"portico-{self.port}.toml"
        config.write_text(
            f"""
[[listener]]
name = "bench"
bind = "{self.host}:{self.port}"
protocol = "tls"
target_group = "backend"
  [[listener.certificate]]
  cert = "{certs}/{FRONT_NAME}.crt"
  key = "{certs}/{FRONT_NAME}.key"

[[target_group]]
name = "backend"
protocol = "tls"
ca = "{certs}/ca.crt"
server_name = "{BACKEND_NAME}"
targets = [{targets}]
{pairs}
  [target_group.health_check]
  protocol = "http"
  port = {self.health_port}
  path = "/health"
  matcher = "200"
  interval = "{self.interval}"
  timeout = "{self.interval}"
  healthy_threshold = {self.rise}
  unhealthy_threshold = {self.fall}
"""
        )
        # Like the peers' configs here, no per-connection logging.
        self.proc = Proc(
            self.bench,
            self.name,
            [self.binary, "serve", "--config", config, "--no-watch"],
            env={"RUST_LOG": "warn"},
        )


class Haproxy(Contender):
    name = "haproxy"

    def __init__(self, bench, upstreams, health_port, interval="1s", fall=2, rise=2):
        super().__init__(bench)
        self.upstreams, self.health_port = upstreams, health_port
        self.interval, self.fall, self.rise = interval, fall, rise

    def launch(self):
        self.port = free_port()
        certs = self.bench.certs
        pem = self.bench.work / f"haproxy-front-{self.port}.pem"
        pem.write_text(
            (certs / f"{FRONT_NAME}.crt").read_text() + (certs / f"{FRONT_NAME}.key").read_text()
        )
        servers = "\n".join(
            f"  server s{i} {h}:{p} ssl verify required ca-file {certs}/ca.crt "
            f"verifyhost {BACKEND_NAME} sni str({BACKEND_NAME}) "
            f"check port {self.health_port} addr {h} no-check-ssl "
            f"inter {self.interval} fall {self.fall} rise {self.rise}"
            for i, (h, p) in enumerate(self.upstreams)
        )
        config = self.bench.work / f"haproxy-{self.port}.cfg"
        config.write_text(
            f"""global
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.2
  # The same suite preference as portico (HAProxy enforces the server's order).
  ssl-default-bind-ciphersuites {SUITES}
  ssl-default-server-ciphersuites {SUITES}
defaults
  mode tcp
  timeout connect 2s
  timeout client 350s
  timeout server 350s
frontend bench
  bind {self.host}:{self.port} ssl crt {pem}
  default_backend backend
backend backend
  # What an operator fronting an active/standby pair sets: a refused connect
  # is retried on the other server instead of the same one.
  option redispatch 1
  retries 3
  option httpchk GET /health
  http-check expect status 200
{servers}
"""
        )
        self.proc = Proc(self.bench, self.name, ["haproxy", "-db", "-f", config])


class Nginx(Contender):
    name = "nginx"

    def __init__(self, bench, upstreams):
        super().__init__(bench)
        self.upstreams = upstreams

    def launch(self):
        self.port = free_port()
        certs = self.bench.certs
        prefix = self.bench.work / f"nginx-{self.port}"
        prefix.mkdir(exist_ok=True)
        # Open-source nginx has no active health checks: a failed connect
        # marks the server down for fail_timeout and the next one is tried.
        servers = "\n".join(
            f"    server {h}:{p} max_fails=1 fail_timeout=2s;" for h, p in self.upstreams
        )
        config = prefix / "nginx.conf"
        config.write_text(
            f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes auto;
worker_rlimit_nofile 20000;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 9000; }}
stream {{
  upstream backend {{
{servers}
  }}
  server {{
    listen {self.host}:{self.port} ssl;
    ssl_certificate {certs}/{FRONT_NAME}.crt;
    ssl_certificate_key {certs}/{FRONT_NAME}.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    # The same suite preference as portico, on both legs.
    ssl_conf_command Ciphersuites {SUITES};
    ssl_prefer_server_ciphers on;
    proxy_ssl_conf_command Ciphersuites {SUITES};
    proxy_pass backend;
    proxy_connect_timeout 2s;
    proxy_timeout 350s;
    proxy_ssl on;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate {certs}/ca.crt;
    proxy_ssl_name {BACKEND_NAME};
    proxy_ssl_server_name on;
    proxy_ssl_session_reuse on;
  }}
}}
"""
        )
        self.proc = Proc(
            self.bench, self.name, ["nginx", "-p", prefix, "-e", prefix / "error.log", "-c", config]
        )


# ---------------------------------------------------------------- machine


CRYPTO_ROWS = [
    ("RSA-2048", "rsa2048", ["sign", "verify"]),
    ("ECDSA P-256", "ecdsap256", ["sign", "verify"]),
    ("X25519", "ecdhx25519", ["key agreement"]),
]
KEY_NAMES = {"ecdsa": "ECDSA P-256", "rsa": "RSA-2048"}


def crypto_floor(machine, keys):
    """Milliseconds of public-key crypto in one proxied connection with full
    handshakes on both legs, from the `openssl speed` rows: as a server, one
    signature (CertificateVerify) and one X25519 exchange (key generation
    and agreement: two scalar multiplications); as a client to the backend,
    two verifications (the backend's CertificateVerify and its certificate's
    signature by the CA) and one more X25519 exchange."""
    rate = {label: value for label, value, _unit in machine}
    name = KEY_NAMES[keys]
    try:
        sign = rate[f"openssl speed {name} sign, one core"]
        verify = rate[f"openssl speed {name} verify, one core"]
        x25519 = rate["openssl speed X25519 key agreement, one core"]
    except KeyError:
        return None
    return 1000 * (1 / sign + 2 / verify + 4 / x25519)


def rsa_certs(bench):
    """RSA-2048 certificates (a CA, the front door's, the backend's), as AWS
    Certificate Manager issues by default, made with openssl."""
    out = bench.work / "certs-rsa"
    out.mkdir(exist_ok=True)

    def run(label, argv):
        bench.note_command(f"RSA certificates: {label}", argv)
        subprocess.run([str(a) for a in argv], check=True, capture_output=True)

    run("CA", ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
               "-subj", "/CN=portico bench RSA CA", "-keyout", out / "ca.key", "-out", out / "ca.crt",
               "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
    for name, sans in [(FRONT_NAME, f"DNS:{FRONT_NAME}"),
                       (BACKEND_NAME, f"DNS:{BACKEND_NAME},IP:127.0.0.1,IP:127.0.0.2")]:
        ext = out / f"{name}.ext"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"
                       "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
        run(f"{name} key and request", ["openssl", "req", "-newkey", "rsa:2048", "-nodes",
                                        "-subj", f"/CN={name}", "-keyout", out / f"{name}.key",
                                        "-out", out / f"{name}.csr"])
        run(f"{name} certificate", ["openssl", "x509", "-req", "-in", out / f"{name}.csr", "-days", "30",
                                    "-CA", out / "ca.crt", "-CAkey", out / "ca.key", "-CAcreateserial",
                                    "-extfile", ext, "-out", out / f"{name}.crt"])


def machine_rows(bench, quick):
    rows = []
    seconds = "1" if quick else "3"
    for label, cipher in [
        ("AES-128-GCM", "aes-128-gcm"),
        ("AES-256-GCM", "aes-256-gcm"),
        ("ChaCha20-Poly1305", "chacha20-poly1305"),
    ]:
        argv = ["openssl", "speed", "-seconds", seconds, "-bytes", "16384", "-evp", cipher]
        bench.note_command(f"openssl speed {label}", argv)
        out = capture(argv)
        value = None
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0].lower() == cipher and parts[-1].endswith("k"):
                value = float(parts[-1][:-1]) * 1000 / 1e6  # 1000s of bytes/s -> MB/s
        rows.append((f"openssl speed {label}, one core, 16 KiB blocks", value, "MB/s"))
    # Public-key operations, one core: what a handshake cannot avoid.
    for label, algorithm, kinds in CRYPTO_ROWS:
        argv = ["openssl", "speed", "-seconds", seconds, algorithm]
        bench.note_command(f"openssl speed {label}", argv)
        out = capture(argv)
        for line in out.splitlines():
            parts = line.split()
            # "rsa 2048 bits 0.000623s 0.000017s 1605.4 58764.3" (sign/s,
            # verify/s last); "253 bits ecdsa (nistp256) ... sign/s verify/s";
            # "253 bits ecdh (X25519) 0.0000s 24000.0" (op/s last).
            if algorithm == "rsa2048" and parts[:3] == ["rsa", "2048", "bits"]:
                values = parts[-2:]
            elif algorithm == "ecdsap256" and "(nistp256)" in parts and "ecdsa" in parts:
                values = parts[-2:]
            elif algorithm == "ecdhx25519" and "(X25519)" in parts:
                values = parts[-1:]
            else:
                continue
            for kind, value in zip(kinds, values):
                rows.append((f"openssl speed {label} {kind}, one core", float(value), "/s"))
    # The same operations through rustls's crypto providers, as portico
    # makes them (the provider is chosen by these rows).
    for keys, certs in [("ecdsa", bench.work / "certs"), ("rsa", bench.work / "certs-rsa")]:
        if not (certs / f"{FRONT_NAME}.key").exists():
            continue
        argv = [LOADGEN, "crypto", "--cert", certs / f"{FRONT_NAME}.crt",
                "--key", certs / f"{FRONT_NAME}.key", "--seconds", seconds]
        bench.note_command(f"rustls providers {KEY_NAMES[keys]}", argv)
        try:
            done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
            out = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError, subprocess.TimeoutExpired) as e:
            rows.append((f"rustls providers ({e})", None, "/s"))
            continue
        for provider, figures in out.items():
            rows.append((f"rustls {provider} {KEY_NAMES[keys]} sign, one core", figures["sign_per_s"], "/s"))
            rows.append((f"rustls {provider} {KEY_NAMES[keys]} verify, one core", figures["verify_per_s"], "/s"))
            if keys == "ecdsa":
                rows.append((f"rustls {provider} X25519 key pair + agreement, one core",
                             figures["x25519_exchange_per_s"], "/s"))
    port = free_port()
    server = Proc(bench, "iperf3 server", ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", port])
    try:
        wait_for(lambda: listening(port), "iperf3 to listen")
        argv = ["iperf3", "-c", "127.0.0.1", "-p", port, "-t", seconds, "-J"]
        bench.note_command("iperf3 client", argv)
        out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
        bps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
        rows.append(("loopback TCP, iperf3, one stream", bps / 8 / 1e6, "MB/s"))
    except (ValueError, KeyError, subprocess.TimeoutExpired, RuntimeError) as e:
        rows.append((f"loopback TCP, iperf3 ({e})", None, "MB/s"))
    finally:
        server.stop()
    return rows


def versions():
    def first_line(argv):
        out = capture(argv)
        return out.splitlines()[0] if out else "?"

    return {
        "portico": capture(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "rustc": first_line(["rustc", "--version"]),
        "HAProxy": first_line(["haproxy", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "OpenSSL": first_line(["openssl", "version"]),
        "ActiveMQ": capture(["dpkg-query", "-W", "-f", "${Version}", "activemq"]),
        "Java": first_line(["java", "-version"]),
    }


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


# ---------------------------------------------------------------- front door


def front_door(bench, args):
    certs = bench.certs
    sc = bench.scope
    backend_addr = ("127.0.0.2", free_port("127.0.0.2"))
    health_port = free_port("127.0.0.2")
    backend = Proc(
        bench,
        "backend (echo)",
        [
            LOADGEN, "echo",
            "--listen", f"{backend_addr[0]}:{backend_addr[1]}",
            "--health", f"{backend_addr[0]}:{health_port}",
            "--cert", certs / f"{BACKEND_NAME}.crt",
            "--key", certs / f"{BACKEND_NAME}.key",
            # Every proxy would otherwise resume its upstream leg (rustls's
            # client and HAProxy both do): the connection rows measure full
            # handshakes on both legs, as the crypto floor counts them.
            "--no-resumption",
        ],
        log_name="backend",
    )
    contenders = [
        Direct(bench, backend_addr),
        Portico(bench, [backend_addr], health_port),
        *[
            Portico(bench, [backend_addr], health_port, binary=path, name=f"portico {label}")
            for label, path in args.baseline
        ],
        Haproxy(bench, [backend_addr], health_port),
        Nginx(bench, [backend_addr]),
    ]
    rounds = args.rounds
    secs = ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    try:
        wait_for(lambda: port_open(*backend_addr), "the backend")
        for contender in contenders:
            contender.start()
        suites = bench.suites.setdefault(bench.keys, {c.name: None for c in contenders})

        for r in range(rounds):
            log(f"throughput, CPU per GB and latency: round {r + 1}/{rounds}")
            for c in contenders:
                pids = c.pids()
                cpu_before = cpu_seconds(pids)
                out = loadgen(
                    bench,
                    f"throughput {c.name}",
                    ["throughput", *c.target_args(), *secs, "--connections", args.streams],
                )
                cpu = cpu_seconds(pids) - cpu_before
                suites[c.name] = out["tls"]
                bench.record(f"throughput{sc}", "mb_s", c.name, out["mb_per_s_each_way"])
                relayed_gb = 2 * out["total_bytes_each_way"] / 1e9
                if pids:
                    bench.record(f"throughput{sc}", "cpu_s_per_gb", c.name, cpu / relayed_gb)
            for c in contenders:
                out = loadgen(bench, f"latency {c.name}", ["latency", *c.target_args(), *secs])
                for key in ("p50_us", "p99_us", "p999_us"):
                    bench.record(f"latency{sc}", key, c.name, out[key])

        for concurrency in args.concurrency:
            for r in range(rounds):
                log(f"new connections/s at concurrency {concurrency}: round {r + 1}/{rounds}")
                for c in contenders:
                    pids = c.pids()
                    cpu_before = cpu_seconds(pids)
                    out = loadgen(
                        bench,
                        f"connect {c.name}",
                        ["connect", *c.target_args(), *secs, "--concurrency", concurrency],
                    )
                    cpu = cpu_seconds(pids) - cpu_before
                    if out["errors"]:
                        log(f"  {c.name}: {out['errors']} failed connections ({out['first_error']})")
                    bench.record(f"connect{sc}", concurrency, c.name, out["per_second"])
                    bench.record(f"connect_errors{sc}", concurrency, c.name, out["errors"])
                    if pids and out["connections"]:
                        # CPU over warm-up and measurement, per connection made in both.
                        total = out["per_second"] * (args.seconds + args.warmup)
                        bench.record(f"connect_cpu{sc}", concurrency, c.name, cpu / total * 1000)
    finally:
        for contender in contenders:
            contender.stop()

    # Memory: each front door started fresh, so earlier phases leave no heap behind.
    try:
        for r in range(rounds):
            log(f"memory per idle TLS connection: round {r + 1}/{rounds}")
            for c in contenders[1:]:
                c.start()
                try:
                    before = rss_kib(c.pids())
                    idle_kib = idle_memory(bench, c, args.idle)
                    bench.record(f"memory{sc}", "base_kib", c.name, before)
                    bench.record(f"memory{sc}", "kib_per_conn", c.name, idle_kib)
                finally:
                    c.stop()
    finally:
        backend.stop()


def idle_memory(bench, contender, count):
    argv = [LOADGEN, "idle", *contender.target_args(), "--connections", count, "--hold", "120"]
    bench.note_command(f"idle {contender.name}", argv)
    pids = contender.pids()
    before = rss_kib(pids)
    holder = subprocess.Popen(
        [str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = holder.stdout.readline()
        status = json.loads(line)
        if status["established"] != count:
            raise RuntimeError(f"idle {contender.name}: {status}")
        # Let the front door finish its side of every connection.
        time.sleep(0.5)
        after = rss_kib(contender.pids())
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.communicate(timeout=30)
    return (after - before) / count


# ---------------------------------------------------------------- broker


def broker_config(bench, name, data_dir, bind_host, stomp_port, ssl_port=None, console_port=None,
                  openwire_port=None):
    certs = bench.work / "certs"
    path = bench.work / f"{name}.toml"
    text = f"""[broker]
name = "{name}"
data_dir = "{data_dir}"

[[transport]]
name = "stomp"
bind = "{bind_host}:{stomp_port}"
"""
    if openwire_port:
        text += f"""
[[transport]]
name = "openwire"
bind = "{bind_host}:{openwire_port}"
"""
    if ssl_port:
        text += f"""
[[transport]]
name = "stomp+ssl"
bind = "{bind_host}:{ssl_port}"
cert = "{certs}/{BACKEND_NAME}.crt"
key = "{certs}/{BACKEND_NAME}.key"
"""
    if console_port:
        text += f"""
[console]
bind = "{bind_host}:{console_port}"
"""
    path.write_text(text)
    return path


ACTIVEMQ_XML = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="bench"
          dataDirectory="${activemq.data}">
    <persistenceAdapter><kahaDB directory="${activemq.data}/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp+nio://127.0.0.1:PORT?transport.tcpNoDelay=true"/>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:OWPORT"/>
      <transportConnector name="mqtt" uri="mqtt+nio://127.0.0.1:MQTTPORT"/>
    </transportConnectors>
  </broker>
</beans>
"""


def start_activemq(bench):
    port = free_port()
    bench.activemq_openwire = free_port()
    bench.activemq_mqtt = free_port()
    base = bench.work / "activemq"
    (base / "conf").mkdir(parents=True, exist_ok=True)
    (base / "data").mkdir(exist_ok=True)
    # Debian's activemq leaves out the MQTT codec its MQTT transport needs:
    # libmqtt-client-java's jar goes in the instance's lib folder.
    (base / "lib").mkdir(exist_ok=True)
    codec = Path("/usr/share/java/mqtt-client.jar")
    if codec.exists() and not (base / "lib" / codec.name).exists():
        (base / "lib" / codec.name).symlink_to(codec)
    (base / "conf" / "activemq.xml").write_text(
        ACTIVEMQ_XML.replace("OWPORT", str(bench.activemq_openwire))
        .replace("MQTTPORT", str(bench.activemq_mqtt))
        .replace("PORT", str(port))
    )
    home = Path("/usr/share/activemq")
    proc = Proc(
        bench,
        "activemq",
        [
            "java", "-Xms1G", "-Xmx1G",
            f"-Dactivemq.home={home}", f"-Dactivemq.base={base}",
            f"-Dactivemq.conf={base / 'conf'}", f"-Dactivemq.data={base / 'data'}",
            "-jar", home / "bin" / "activemq.jar",
            "start", f"xbean:file:{base / 'conf' / 'activemq.xml'}",
        ],
    )
    wait_for(lambda: port_open("127.0.0.1", port), "ActiveMQ's STOMP port", timeout=120)
    return proc, port


def stomp_run(bench, label, port, tag, pairs, count, persistent, selectors=False):
    """pairs producers and pairs consumers, one queue per pair (or, with
    selectors, one queue for all: producer i stamps part=i and consumer i
    selects part = 'i'); messages/s from the first producer's start to the
    last consumer's last message."""
    url = f"tcp://127.0.0.1:{port}"
    common = ["--broker-url", url, "--message-count", count]
    consumers, producers = [], []

    def queue(i):
        return f"queue://bench.{tag}.sel" if selectors else f"queue://bench.{tag}.{i}"

    for i in range(pairs):
        dest = ["--destination", queue(i)]
        if selectors:
            dest += ["--selector", f"part = '{i}'"]
        argv = [BROKER, "consumer", *common, *dest]
        bench.note_command(f"stomp consumer {label}", argv)
        consumers.append(subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    # Consumers subscribe before anything is sent, so nothing waits on disk.
    time.sleep(0.3)
    started = time.monotonic()
    for i in range(pairs):
        argv = [
            BROKER, "producer", *common,
            "--destination", queue(i),
            "--message-size", "1024", "--persistent", "true" if persistent else "false",
        ]
        if selectors:
            argv += ["--header", f"part={i}"]
        bench.note_command(f"stomp producer {label}", argv)
        producers.append(subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in producers:
        if p.wait(timeout=600) != 0:
            raise RuntimeError(f"{label}: a producer failed")
    summaries = []
    for c in consumers:
        out, _ = c.communicate(timeout=600)
        summaries.append(out.strip().splitlines()[-1] if out.strip() else "")
        if c.returncode != 0:
            raise RuntimeError(f"{label}: a consumer failed: {summaries[-1]}")
    elapsed = time.monotonic() - started
    missing = [s for s in summaries if " 0 missing" not in s]
    if missing:
        raise RuntimeError(f"{label}: messages missing: {missing}")
    return pairs * count / elapsed


def activemq_cli(bench, label, args):
    """ActiveMQ's command line (its `producer` / `consumer`), the same client
    for every broker; its output."""
    base = bench.work / "activemq-cli"
    base.mkdir(exist_ok=True)
    log4j = base / "log4j.properties"
    log4j.write_text(
        "log4j.rootLogger=INFO, out\nlog4j.appender.out=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.out.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.out.layout.ConversionPattern=%m%n\n"
    )
    home = Path("/usr/share/activemq")
    argv = [
        "java", f"-Dactivemq.home={home}", f"-Dactivemq.base={base}", f"-Dactivemq.conf={base}",
        f"-Dlog4j.configuration=file:{log4j}", "-jar", home / "bin" / "activemq.jar", *args,
    ]
    bench.note_command(label, argv)
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600)
    return out.stdout + out.stderr


OPENWIRE_MODES = {
    "persistent, synchronous sends": ("", "true"),
    "persistent, asynchronous sends": ("?jms.useAsyncSend=true", "true"),
    "non-persistent": ("", "false"),
}


def openwire_run(bench, label, port, tag, count, mode):
    """ActiveMQ's producer sends `count` 1 KiB messages, then its consumer
    takes them: (producer msg/s, consumer msg/s), each from the elapsed
    time the command itself prints (JVM start-up left out)."""
    query, persistent = OPENWIRE_MODES[mode]
    url = f"tcp://127.0.0.1:{port}{query}"
    dest = f"queue://bench.ow.{tag}"
    elapsed = re.compile(r"Elapsed time in milli second : (\d+)")
    produced = activemq_cli(bench, f"openwire producer {label}", [
        "producer", "--brokerUrl", url, "--destination", dest, "--messageCount", count,
        "--messageSize", "1024", "--persistent", persistent,
    ])
    if f"Produced: {count} messages" not in produced:
        raise RuntimeError(f"{label}: the producer failed: {produced[-2000:]}")
    # The consumer command prints no elapsed time: one that takes a single
    # message measures its start-up and connection, and the rest are
    # timed beyond that.
    def consume(n):
        started = time.monotonic()
        out = activemq_cli(bench, f"openwire consumer {label}", [
            "consumer", "--brokerUrl", url, "--destination", dest, "--messageCount", n,
        ])
        if f"Consumed: {n} messages" not in out:
            raise RuntimeError(f"{label}: the consumer failed: {out[-2000:]}")
        return time.monotonic() - started

    overhead = consume(1)
    drained = consume(count - 1)
    p_ms = max(1, int(elapsed.search(produced).group(1)))
    return count * 1000 / p_ms, (count - 1) / max(drained - overhead, 0.001)


# The latency cases: (name, persistent, messages/s or None for one SEND in
# flight, each waiting for its receipt).
LATENCY_CASES = [
    ("persistent, one SEND in flight", True, None),
    ("non-persistent, 2,000 msg/s", False, 2000),
]


def stomp_latency(bench, label, port, tag, persistent, rate, args, user=None, password=None):
    """`portico-broker stomp-bench`: one producer and one consumer on one
    queue; send-to-delivery latency and messages/s."""
    count = args.latency_count if rate is None else rate * int(max(args.seconds, 1))
    argv = [BROKER, "stomp-bench", "--broker-url", f"tcp://127.0.0.1:{port}",
            "--destination", f"queue://bench.{tag}", "--count", count,
            "--persistent", "true" if persistent else "false"]
    if rate:
        argv += ["--rate", rate]
    if user:
        argv += ["--user", user, "--password", password]
    bench.note_command(f"stomp-bench {'persistent' if persistent else 'non-persistent'} {label}", argv)
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{label}: stomp-bench failed: {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def broker_bench(bench, args):
    port = free_port()
    openwire_port = free_port()
    config = broker_config(bench, "bench", bench.work / "broker-data", "127.0.0.1", port,
                           openwire_port=openwire_port)
    ours = Proc(bench, "portico-broker", [BROKER, "run", "--config", config], env={"RUST_LOG": "warn"})
    procs = [ours]
    brokers = [("portico-broker", port)]
    # Earlier builds of portico-broker, for a before/after in the same run.
    for label, binary in args.broker_baseline:
        b_port = free_port()
        b_config = broker_config(bench, f"bench-{label}", bench.work / f"broker-data-{label}", "127.0.0.1", b_port)
        name = f"portico-broker {label}"
        procs.append(Proc(bench, name, [binary, "run", "--config", b_config], env={"RUST_LOG": "warn"}))
        brokers.append((name, b_port))
    theirs, amq_port = start_activemq(bench)
    procs.append(theirs)
    brokers.append(("ActiveMQ", amq_port))
    try:
        for name, p in brokers:
            wait_for(lambda p=p: port_open("127.0.0.1", p), name)
        # Both get the same warm-up (the JVM needs one to compile its hot paths).
        for name, p in brokers:
            log(f"broker warm-up: {name}")
            for persistent in (False, True):
                stomp_run(bench, "warm-up", p, f"warm.{persistent}", 2, args.broker_count // 4, persistent)
        cases = [
            (f"1 producer, 1 consumer, {'persistent' if pers else 'non-persistent'}", 1, pers)
            for pers in (False, True)
        ] + [
            (f"8 producers, 8 consumers, {'persistent' if pers else 'non-persistent'}", 8, pers)
            for pers in (False, True)
        ]
        # One queue, eight consumers with disjoint selectors: the current
        # brokers only (an earlier portico-broker may predate selectors).
        baselines = {f"portico-broker {label}" for label, _ in args.broker_baseline}
        selecting = [(n, p) for n, p in brokers if n not in baselines]
        cases.append(("8 producers, 8 consumers, one queue, disjoint selectors, non-persistent", 8, False))
        for r in range(args.rounds):
            log(f"broker latency at low load: round {r + 1}/{args.rounds}")
            for c, (case, persistent, rate) in enumerate(LATENCY_CASES):
                k = (r + c) % len(brokers)
                for name, p in brokers[k:] + brokers[:k]:
                    tag = f"lat.r{r}.{c}.{name[:3]}.{len(name)}"
                    out = stomp_latency(bench, name, p, tag, persistent, rate, args)
                    bench.record("broker_latency", f"{case}: msg/s", name, out["msgs_per_s"])
                    bench.record("broker_latency", f"{case}: p50 µs", name, out["p50_us"])
                    bench.record("broker_latency", f"{case}: p99 µs", name, out["p99_us"])
            if "broker" not in args.only:
                continue
            log(f"broker messages/s: round {r + 1}/{args.rounds}")
            for c, (case, pairs, persistent) in enumerate(cases):
                selectors = "selectors" in case
                contenders = selecting if selectors else brokers
                # Whoever runs right after ActiveMQ meets its background work
                # (KahaDB, GC): the order rotates so each broker takes each
                # place in turn.
                k = (r + c) % len(contenders)
                for name, p in contenders[k:] + contenders[:k]:
                    per_pair = args.broker_count // pairs
                    tag = f"r{r}.{pairs}.{persistent}.{name[:3]}"
                    rate = stomp_run(bench, name, p, tag, pairs, per_pair, persistent, selectors)
                    bench.record("broker", case, name, rate)
            # OpenWire: ActiveMQ's own client against both (a baseline may
            # predate OpenWire).
            openwire = [("portico-broker", openwire_port), ("ActiveMQ", bench.activemq_openwire)]
            for m, mode in enumerate(OPENWIRE_MODES):
                k = (r + m) % len(openwire)
                for name, p in openwire[k:] + openwire[:k]:
                    count = args.broker_count // 2
                    sent, taken = openwire_run(bench, name, p, f"r{r}.{m}.{name[:3]}", count, mode)
                    bench.record("openwire", f"{mode}: producer", name, sent)
                    bench.record("openwire", f"{mode}: consumer", name, taken)
    finally:
        for proc in procs:
            proc.stop()


# ---------------------------------------------------------------- logins

LOGIN_USER = "bench"
LOGIN_PASSWORD = "bench-login-password"
LOGIN_CLIENTS = 16


def stomp_login(port):
    """One CONNECT with the bench user's password: seconds to CONNECTED, or
    None if the broker answered anything else."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(
            f"CONNECT\naccept-version:1.2\nhost:/\nlogin:{LOGIN_USER}\n"
            f"passcode:{LOGIN_PASSWORD}\n\n\0".encode()
        )
        data = b""
        while b"\0" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if not data.startswith(b"CONNECTED"):
            return None
        s.sendall(b"DISCONNECT\n\n\0")
    return time.monotonic() - started


class LoginBurst:
    """LOGIN_CLIENTS threads logging in and out as fast as the broker lets
    them, until stopped: logins/s and each CONNECT's time to CONNECTED."""

    def __init__(self, port):
        self.port = port
        self.stop_flag = threading.Event()
        self.times = []
        self.refused = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(LOGIN_CLIENTS)]

    def client(self):
        while not self.stop_flag.is_set():
            took = stomp_login(self.port)
            with self.lock:
                if took is None:
                    self.refused += 1
                else:
                    self.times.append(took)

    def __enter__(self):
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.started
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=120)
        return False


def login_bench(bench, args):
    """A broker whose user has an argon2id hash (what `hash-password`
    makes): the paced latency probe alone, then during a burst of logins
    by LOGIN_CLIENTS other clients."""
    port = free_port()
    hashed = subprocess.run([str(BROKER), "hash-password"], input=LOGIN_PASSWORD + "\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    bench.note_command("password hash", [BROKER, "hash-password"])
    config = broker_config(bench, "logins", bench.work / "broker-data-logins", "127.0.0.1", port)
    with open(config, "a") as f:
        f.write(f'\n[[user]]\nname = "{LOGIN_USER}"\npassword_hash = "{hashed}"\n')
    broker = Proc(bench, "portico-broker logins", [BROKER, "run", "--config", config], env={"RUST_LOG": "warn"})
    probe = dict(user=LOGIN_USER, password=LOGIN_PASSWORD)
    try:
        wait_for(lambda: port_open("127.0.0.1", port), "portico-broker (logins)")
        if stomp_login(port) is None:
            raise RuntimeError("the bench user's login was refused")
        for r in range(args.rounds):
            log(f"logins: round {r + 1}/{args.rounds}")
            for burst in ((False, True) if r % 2 == 0 else (True, False)):
                tag = f"login.r{r}.{burst}"
                if not burst:
                    out = stomp_latency(bench, "quiet", port, tag, False, 2000, args, **probe)
                    case = "quiet"
                else:
                    with LoginBurst(port) as b:
                        out = stomp_latency(bench, "during a login burst", port, tag, False, 2000, args, **probe)
                    if b.refused:
                        raise RuntimeError(f"{b.refused} logins refused during the burst")
                    case = "login burst"
                    bench.record("logins", "logins/s", case, len(b.times) / b.elapsed)
                    bench.record("logins", "CONNECT p50 ms", case, statistics.median(b.times) * 1000)
                bench.record("logins", "p50 µs", case, out["p50_us"])
                bench.record("logins", "p99 µs", case, out["p99_us"])
    finally:
        broker.stop()


# ---------------------------------------------------------------- MQTT

MQTT_CASES = [("QoS 0", 0), ("QoS 1", 1)]


def mqtt_bench(bench, args):
    """One publisher and one subscriber on one topic, QoS 0 and QoS 1, the
    same client (`portico-broker mqtt-bench`) against portico-broker,
    mosquitto and ActiveMQ's MQTT transport."""
    ours_port, mosq_port = free_port(), free_port()
    config = bench.work / "mqtt-broker.toml"
    config.write_text(
        f'[broker]\nname = "mqtt-bench"\ndata_dir = "{bench.work / "mqtt-broker-data"}"\n\n'
        f'[[transport]]\nname = "mqtt"\nbind = "127.0.0.1:{ours_port}"\n'
    )
    mosq_conf = bench.work / "mosquitto.conf"
    # No persistence, and room for a whole run's messages per client (its
    # defaults would drop QoS 1 messages past 1,000 queued).
    mosq_conf.write_text(
        f"listener {mosq_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 100\n"
    )
    procs = [
        Proc(bench, "portico-broker (MQTT)", [BROKER, "run", "--config", config], env={"RUST_LOG": "warn"}),
        Proc(bench, "mosquitto", ["mosquitto", "-c", mosq_conf]),
    ]
    theirs, _ = start_activemq(bench)
    procs.append(theirs)
    brokers = [("portico-broker", ours_port), ("mosquitto", mosq_port), ("ActiveMQ", bench.activemq_mqtt)]
    count = args.broker_count // 2
    try:
        for name, p in brokers:
            wait_for(lambda p=p: port_open("127.0.0.1", p), name)
        for name, p in brokers:
            log(f"MQTT warm-up: {name}")
            for _case, qos in MQTT_CASES:
                mqtt_run(bench, name, p, qos, count // 2, "bench/warm")
        for r in range(args.rounds):
            log(f"MQTT: round {r + 1}/{args.rounds}")
            for c, (case, qos) in enumerate(MQTT_CASES):
                k = (r + c) % len(brokers)
                for name, p in brokers[k:] + brokers[:k]:
                    result = mqtt_run(bench, name, p, qos, count, f"bench/r{r}/{qos}")
                    bench.record("mqtt", f"{case}: msg/s", name, result["msgs_per_s"])
                    bench.record("mqtt", f"{case}: p50 ms", name, result["p50_ms"])
                    bench.record("mqtt", f"{case}: p99 ms", name, result["p99_ms"])
    finally:
        for proc in procs:
            proc.stop()


def mqtt_run(bench, label, port, qos, count, topic):
    argv = [BROKER, "mqtt-bench", "--port", port, "--qos", qos, "--count", count, "--topic", topic]
    bench.note_command(f"mqtt-bench {label}", argv)
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"mqtt-bench against {label}: {done.stdout} {done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- failover


def console_active(host, port):
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False


def failover_bench(bench, args):
    """An active/standby pair of portico-broker nodes (shared data folder) on
    127.0.0.1 and 127.0.0.2, behind each front door; SIGKILL the active node
    while a client sends, and report the longest gap between receipts."""
    ssl_port, stomp_port, console_port = free_port(), free_port(), free_port()
    for host in ("127.0.0.2",):
        for p in (ssl_port, stomp_port, console_port):
            with socket.socket() as s:
                s.bind((host, p))  # the same ports must be free on both hosts
    data = bench.work / "pair-data"
    hosts = ["127.0.0.1", "127.0.0.2"]
    configs = {
        h: broker_config(bench, f"pair-{i}", data, h, stomp_port, ssl_port, console_port)
        for i, h in enumerate(hosts)
    }
    nodes = {}

    def start_node(host):
        nodes[host] = Proc(
            bench, f"pair node {host}", [BROKER, "run", "--config", configs[host]],
            env={"RUST_LOG": "warn"}, log_name=f"pair-{host}",
        )

    upstreams = [(h, ssl_port) for h in hosts]
    check = dict(interval="200ms", fall=2, rise=1)
    contenders = [
        Portico(bench, upstreams, console_port, **check),
        Haproxy(bench, upstreams, console_port, **check),
        Nginx(bench, upstreams),
    ]
    try:
        start_node(hosts[0])
        wait_for(lambda: console_active(hosts[0], console_port), "the first pair node")
        start_node(hosts[1])
        for c in contenders:
            c.start(echo_backend=False)
        for r in range(args.rounds):
            log(f"failover outage: round {r + 1}/{args.rounds}")
            for c in contenders:
                for h in hosts:  # the node that was killed last comes back as standby
                    if not nodes[h].alive():
                        start_node(h)
                active = None

                def one_active():
                    nonlocal active
                    up = [h for h in hosts if console_active(h, console_port)]
                    active = up[0] if len(up) == 1 else None
                    return active is not None

                wait_for(one_active, "one active node")
                time.sleep(1.0)  # both health checkers see the new state (interval 200 ms)
                argv = [
                    LOADGEN, "failover", *c.target_args(),
                    "--seconds", str(args.failover_seconds), "--interval-ms", "5",
                ]
                bench.note_command(f"failover {c.name}", argv)
                probe = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, text=True)
                time.sleep(args.failover_seconds / 4)
                nodes[active].kill()
                out, _ = probe.communicate(timeout=args.failover_seconds + 30)
                result = json.loads(out.strip().splitlines()[-1])
                if not result["recovered"]:
                    log(f"  {c.name}: no receipt for the last {result['outage_ms']:.0f} ms: {result['errors']}")
                bench.record("failover", "outage_ms", c.name, result["outage_ms"])
                bench.record("failover", "recovered", c.name, result["recovered"])
    finally:
        for c in contenders:
            c.stop()
        for node in nodes.values():
            node.stop()


# ---------------------------------------------------------------- report


def fmt(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "—"
    return f"{a / b:.2f}×"


def front_report(b, args, keys, fronts, floor):
    """The front door's tables for one key type."""
    sc = "" if keys == "ecdsa" else f" {keys}"
    suites = b.suites.get(keys, {})

    def m(section, key, contender):
        return b.median(section + sc, key, contender)

    lines = []
    lines += [
        "",
        f"## Front door: TLS in, TLS re-encrypted to one backend ({KEY_NAMES[keys]} certificates)",
        "",
        f"Every contender terminates TLS with the same {KEY_NAMES[keys]} certificate and "
        "re-encrypts to the same backend (`portico-loadgen echo`, TLS, on 127.0.0.2), "
        "verifying it against the same CA. `direct` is the client talking to the backend "
        "itself. Negotiated: "
        + "; ".join(f"{k} {v}" for k, v in suites.items() if v)
        + ".",
        "",
        f"### Bulk throughput ({args.streams} connections streaming both ways) and CPU per GB",
        "",
        "| contender | MB/s each way | vs HAProxy | proxy CPU s per GB relayed | vs HAProxy |",
        "|---|---|---|---|---|",
    ]
    hap_t = m("throughput", "mb_s", "haproxy")
    hap_c = m("throughput", "cpu_s_per_gb", "haproxy")
    for c in fronts:
        t = m("throughput", "mb_s", c)
        cpu = m("throughput", "cpu_s_per_gb", c)
        lines.append(f"| {c} | {fmt(t)} | {ratio(t, hap_t)} | {fmt(cpu, 2)} | {ratio(cpu, hap_c)} |")
    lines += [
        "",
        "GB relayed counts both directions (bytes in plus bytes out of the client's stream).",
        "",
        "### New TLS connections per second (full handshakes on both legs: the backend resumes no session; one 32-byte round trip)",
        "",
        "| contender | " + " | ".join(f"c={n}" for n in args.concurrency)
        + " | vs HAProxy | proxy CPU ms per connection |",
        "|---|" + "---|" * len(args.concurrency) + "---|---|",
    ]
    for c in fronts:
        cells = [fmt(m("connect", n, c)) for n in args.concurrency]
        rel = " / ".join(
            ratio(m("connect", n, c), m("connect", n, "haproxy"))
            for n in args.concurrency
        )
        cpu = " / ".join(fmt(m("connect_cpu", n, c), 2) for n in args.concurrency)
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {rel} | {cpu} |")
    errors = {
        (c, n): sum(b.runs("connect_errors" + sc, n, c)) for c in fronts for n in args.concurrency
    }
    failed = [f"{c} c={n}: {e}" for (c, n), e in errors.items() if e]
    lines.append("")
    lines.append("Failed connections: " + ("; ".join(failed) if failed else "none") + ".")
    lines += [
        "",
        "### Round-trip latency, 1 KiB request and response, one established connection",
        "",
        "| contender | p50 µs | p99 µs | p99.9 µs | p50 added over direct | p50 vs HAProxy | p99 vs HAProxy |",
        "|---|---|---|---|---|---|---|",
    ]
    direct50 = m("latency", "p50_us", "direct")
    for c in fronts:
        p50, p99, p999 = (m("latency", k, c) for k in ("p50_us", "p99_us", "p999_us"))
        added = fmt(p50 - direct50) if c != "direct" and p50 and direct50 else "—"
        lines.append(
            f"| {c} | {fmt(p50)} | {fmt(p99)} | {fmt(p999)} | {added} | "
            f"{ratio(p50, m('latency', 'p50_us', 'haproxy'))} | "
            f"{ratio(p99, m('latency', 'p99_us', 'haproxy'))} |"
        )
    lines += [
        "",
        f"### Memory per idle TLS connection ({args.idle} connections held open)",
        "",
        "| contender | resident KiB at start | KiB per idle connection | vs HAProxy |",
        "|---|---|---|---|",
    ]
    hap_m = m("memory", "kib_per_conn", "haproxy")
    for c in fronts[1:]:
        kib = m("memory", "kib_per_conn", c)
        lines.append(f"| {c} | {fmt(m('memory', 'base_kib', c))} | {fmt(kib, 1)} | {ratio(kib, hap_m)} |")
    lines += [
        "",
        "Resident memory (all of a contender's processes: nginx's master and workers) "
        "after the connections are up, minus before, divided by their number; each "
        "front door is started fresh for this.",
    ]
    if floor:
        ours = [m("connect_cpu", n, "portico") for n in args.concurrency]
        ours = [v for v in ours if v]
        lines += [
            "",
            f"The crypto a proxied connection cannot avoid (one server handshake, one client "
            f"handshake, from the `openssl speed` rows above): {floor:.3f} ms. portico's CPU per "
            "connection: " + (" / ".join(f"{v / floor:.2f}×" for v in ours) or "—")
            + " that floor (c=" + "/".join(str(n) for n in args.concurrency) + ").",
        ]
    return lines


def write_report(bench, args, machine, started, sections):
    b = bench
    fronts = ["direct", "portico", *[f"portico {label}" for label, _ in args.baseline], "haproxy", "nginx"]
    lines = [
        "# portico benchmark results",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; wall time {(datetime.datetime.now(datetime.timezone.utc) - started).seconds // 60} min",
        f"- Machine: {os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}",
        f"- Rounds: {args.rounds} (contenders alternated within each round); figures are medians",
        "- Client, proxy and backend share the machine's cores, as in the goals.",
    ]
    for name, version in versions().items():
        lines.append(f"- {name}: {version}")
    lines += ["", "## The machine's limits", "", "| measure | value |", "|---|---|"]
    for label, value, unit in machine:
        lines.append(f"| {label} | {fmt(value)} {unit} |")

    for keys in getattr(args, "keys", ["ecdsa"]) if "front" in sections else []:
        lines += front_report(b, args, keys, fronts, crypto_floor(machine, keys))

    if "failover" in sections:
        lines += [
            "",
            "## Failover: SIGKILL the active node of a portico-broker pair behind each front door",
            "",
            "A client sends a persistent SEND with a receipt every 5 ms through the front door and "
            "reconnects at once on any failure; the outage is the longest time between two receipts. "
            "portico and HAProxy check each node's console (`/health`, 200 only on the active node) "
            "every 200 ms, out after 2 failures, in after 1 success; open-source nginx has no active "
            "checks and relies on a refused connect (`max_fails=1`, then the next server). The "
            "standby takes over once the lock is free and the lease is stale (`takeover_after` 500 ms).",
            "",
            "| front door | outage ms (median) | runs | vs HAProxy |",
            "|---|---|---|---|",
        ]
        hap_f = b.median("failover", "outage_ms", "haproxy")
        for c in ("portico", "haproxy", "nginx"):
            f = b.median("failover", "outage_ms", c)
            runs = ", ".join(fmt(v) for v in b.runs("failover", "outage_ms", c))
            lines.append(f"| {c} | {fmt(f)} | {runs} | {ratio(f, hap_f)} |")

    if "broker" in sections:
        lines += [
            "",
            "## Broker: STOMP messages/s, 1 KiB messages, plain STOMP on loopback",
            "",
            "The same client (`portico-broker producer` / `consumer`) against each broker; with 8 "
            "of each, pair i uses queue i (in the selector case all use one queue: producer i "
            "stamps `part=i`, consumer i subscribes with the selector `part = 'i'`). Rate = all messages / time from the first producer's "
            f"start to the last consumer's last message ({args.broker_count} messages per run). "
            "ActiveMQ: Debian's package, KahaDB, `stomp+nio` transport, 1 GiB heap; "
            "portico-broker: group-committed journal. Persistent means stored (fsync) before the receipt.",
            "",
        ]
        names = ["portico-broker", *[f"portico-broker {label}" for label, _ in args.broker_baseline]]
        lines.append(
            "| case | " + " | ".join(f"{n} msg/s" for n in names) + " | ActiveMQ msg/s | "
            + " | ".join(f"{n} vs ActiveMQ" for n in names) + " |"
        )
        lines.append("|---" * (2 + 2 * len(names)) + "|")
        for case in sorted({k for (s, k, _c) in b.results if s == "broker"}):
            rates = [b.median("broker", case, n) for n in names]
            theirs = b.median("broker", case, "ActiveMQ")
            lines.append(
                f"| {case} | " + " | ".join(fmt(r) for r in rates) + f" | {fmt(theirs)} | "
                + " | ".join(ratio(r, theirs) for r in rates) + " |"
            )

    if any(s == "broker_latency" for (s, _k, _c) in b.results):
        names = ["portico-broker", *[f"portico-broker {label}" for label, _ in args.broker_baseline]]
        lines += [
            "",
            "## Broker: latency at low load, STOMP, 1 KiB messages",
            "",
            "`portico-broker stomp-bench` (the same client for every broker): one producer and one "
            "consumer (`ack:auto`) on one queue. *One SEND in flight*: each persistent SEND waits "
            f"for its RECEIPT before the next ({args.latency_count} messages), as a JMS "
            "`send()` of a persistent message does; messages/s is then the synchronous send rate. "
            "*2,000 msg/s*: non-persistent SENDs on a fixed schedule. Latency: from the SEND "
            "written to the MESSAGE read (p50, p99).",
            "",
            "| case | " + " | ".join(names) + " | ActiveMQ | "
            + " | ".join(f"{n} vs ActiveMQ" for n in names) + " |",
            "|---" * (2 + 2 * len(names)) + "|",
        ]
        for case, _persistent, rate in LATENCY_CASES:
            for measure in ("msg/s", "p50 µs", "p99 µs"):
                if rate and measure == "msg/s":
                    continue
                key = f"{case}: {measure}"
                ours = [b.median("broker_latency", key, n) for n in names]
                theirs = b.median("broker_latency", key, "ActiveMQ")
                lines.append(
                    f"| {key} | " + " | ".join(fmt(v) for v in ours) + f" | {fmt(theirs)} | "
                    + " | ".join(ratio(v, theirs) for v in ours) + " |"
                )

    if "broker" in sections and any(s == "openwire" for (s, _k, _c) in b.results):
        lines += [
            "",
            "## Broker: OpenWire messages/s, 1 KiB messages, ActiveMQ's own client",
            "",
            "ActiveMQ's `producer` then its `consumer` command (the same JMS client for both "
            f"brokers; {args.broker_count // 2} messages per run). Producer rate: from the elapsed "
            "time the producer prints. Consumer rate: the wall time of a consumer of all but one "
            "message, less that of a consumer of one (its JVM start-up and connection). "
            "Synchronous sends wait for the broker's answer to each persistent message; "
            "asynchronous ones (`jms.useAsyncSend=true`) do not.",
            "",
            "| case | portico-broker msg/s | ActiveMQ msg/s | portico-broker vs ActiveMQ |",
            "|---|---|---|---|",
        ]
        for case in [f"{m}: {side}" for m in OPENWIRE_MODES for side in ("producer", "consumer")]:
            ours = b.median("openwire", case, "portico-broker")
            theirs = b.median("openwire", case, "ActiveMQ")
            lines.append(f"| {case} | {fmt(ours)} | {fmt(theirs)} | {ratio(ours, theirs)} |")

    if "logins" in sections:
        lines += [
            "",
            "## Broker: logins with argon2id password hashes",
            "",
            "A portico-broker whose user has a `hash-password` hash (argon2id, 19 MiB, 2 passes). "
            "The latency probe (`stomp-bench`, non-persistent, 2,000 msg/s, logged in as that user) "
            f"runs alone, then while {LOGIN_CLIENTS} other clients log in and out as fast as the "
            "broker lets them (CONNECT with the password, CONNECTED, DISCONNECT). Password checks "
            "run on threads of their own, one per core but one, never on the workers that move "
            "messages.",
            "",
            "| case | logins/s | CONNECT to CONNECTED p50 ms | probe p50 µs | probe p99 µs |",
            "|---|---|---|---|---|",
        ]
        for case in ("quiet", "login burst"):
            cells = [b.median("logins", k, case) for k in ("logins/s", "CONNECT p50 ms", "p50 µs", "p99 µs")]
            lines.append(
                f"| {case} | " + " | ".join(fmt(v, 1 if i == 1 else 0) for i, v in enumerate(cells)) + " |"
            )

    if "mqtt" in sections:
        lines += [
            "",
            "## Broker: MQTT, one publisher and one subscriber on one topic",
            "",
            f"`portico-broker mqtt-bench` (the same client for every broker; {args.broker_count // 2} "
            "messages of 256 bytes per run, the publisher as fast as the broker takes them, "
            "QoS 1 with 100 PUBLISHes in flight): messages/s from the first PUBLISH sent to the "
            "last one received, and the time from send to delivery (p50, p99; at QoS 0 it is "
            "the queueing of a saturated run). mosquitto without persistence; ActiveMQ's "
            "`mqtt+nio` transport (QoS 1 publishes are persistent there, as here, but a topic "
            "message is not stored without a durable subscriber on either).",
            "",
            "| case | portico-broker | mosquitto | ActiveMQ | vs mosquitto | vs ActiveMQ |",
            "|---|---|---|---|---|---|",
        ]
        for case, _qos in MQTT_CASES:
            for measure in ("msg/s", "p50 ms", "p99 ms"):
                key = f"{case}: {measure}"
                ours = b.median("mqtt", key, "portico-broker")
                mosq = b.median("mqtt", key, "mosquitto")
                amq = b.median("mqtt", key, "ActiveMQ")
                digits = 0 if measure == "msg/s" else 2
                lines.append(
                    f"| {key} | {fmt(ours, digits)} | {fmt(mosq, digits)} | {fmt(amq, digits)} | "
                    f"{ratio(ours, mosq)} | {ratio(ours, amq)} |"
                )

    lines += ["", "## Commands", "", "`$WORK` is the run's work folder (certificates, configs, logs).", ""]
    for label, line in bench.commands.items():
        if label.startswith("probe"):
            continue
        lines.append(f"- {label}: `{line}`")
    lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new one under /tmp)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--broker-count", type=int, default=40000)
    parser.add_argument("--latency-count", type=int, default=5000,
                        help="messages per synchronous latency run")
    parser.add_argument(
        "--broker-baseline", nargs=2, action="append", default=[], metavar=("LABEL", "BINARY"),
        help="also run this portico-broker binary as a broker contender (before/after a change)",
    )
    parser.add_argument("--failover-seconds", type=float, default=8.0)
    parser.add_argument(
        "--only", nargs="+", choices=["front", "failover", "broker", "broker-latency", "logins", "mqtt"],
        default=["front", "failover", "broker", "logins", "mqtt"],
    )
    parser.add_argument(
        "--baseline", nargs=2, action="append", default=[], metavar=("LABEL", "BINARY"),
        help="also run this portico binary as a front-door contender (before/after a change)",
    )
    parser.add_argument(
        "--keys", nargs="+", choices=["ecdsa", "rsa"], default=["ecdsa", "rsa"],
        help="the front door's certificates: ECDSA P-256 and/or RSA-2048 (both legs)",
    )
    parser.add_argument("--quick", action="store_true", help="one short round of everything (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 1.0, 0.3
        args.idle, args.broker_count, args.latency_count = 200, 4000, 1000
        args.concurrency = [8]

    for binary in (PORTICO, BROKER, LOADGEN):
        if not binary.exists():
            sys.exit(f"{binary} is missing: build with `cargo build --release --workspace` (bench/run.sh does)")
    started = datetime.datetime.now(datetime.timezone.utc)
    work = args.work or Path(f"/tmp/portico-bench-{started:%Y%m%d-%H%M%S}")
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work)
    log(f"work folder {work}")
    argv = [PORTICO, "certs", "--out", work / "certs", "--domain", FRONT_NAME,
            "--broker", BACKEND_NAME, "--ip", "127.0.0.1", "--ip", "127.0.0.2"]
    bench.note_command("certificates", argv)
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)

    if "front" in args.only and "rsa" in args.keys:
        rsa_certs(bench)
    log("machine limits (openssl speed, iperf3)")
    machine = machine_rows(bench, args.quick)
    if "front" in args.only:
        for keys in args.keys:
            bench.keys = keys
            log(f"front door with {KEY_NAMES[keys]} certificates")
            front_door(bench, args)
        bench.keys = "ecdsa"
    if "failover" in args.only:
        failover_bench(bench, args)
    if "broker" in args.only or "broker-latency" in args.only:
        broker_bench(bench, args)
    if "logins" in args.only:
        login_bench(bench, args)
    if "mqtt" in args.only:
        mqtt_bench(bench, args)
    report = write_report(bench, args, machine, started, args.only)
    args.out.write_text(report)
    (work / "results.json").write_text(
        json.dumps({f"{s}|{k}|{c}": v for (s, k, c), v in bench.results.items()}, indent=1)
    )
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
