//! The load generator against its own echo backend, as bench/run.sh drives
//! it: every measuring command completes and reports what it measured.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use portico_core::certs::{write_dev_certs, CertRequest};
use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_portico-loadgen");

/// A process stopped (by its id) when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_echo(certs: &Path) -> (Running, Value) {
    let mut child = Command::new(LOADGEN)
        .args(["echo", "--listen", "127.0.0.1:0", "--health", "127.0.0.1:0"])
        .arg("--cert")
        .arg(certs.join("backend.crt"))
        .arg("--key")
        .arg(certs.join("backend.key"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Running(child), serde_json::from_str(&line).unwrap())
}

fn measure(certs: &Path, target: &str, args: &[&str]) -> Value {
    let mut command = Command::new(LOADGEN);
    command
        .args(args)
        .args(["--target", target, "--server-name", "backend", "--ca"])
        .arg(certs.join("ca.crt"));
    report(command, args)
}

/// Runs a measuring command; its last line of output, as JSON.
fn report(mut command: Command, args: &[&str]) -> Value {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn every_measurement_runs_against_the_echo_backend() {
    let dir = tempfile::tempdir().unwrap();
    let request = CertRequest {
        brokers: vec!["backend".into()],
        ips: vec!["127.0.0.1".parse().unwrap()],
        ..CertRequest::default()
    };
    write_dev_certs(dir.path(), &request).unwrap();
    let (_echo, addrs) = start_echo(dir.path());
    let target = addrs["echo"].as_str().unwrap();
    let short = ["--seconds", "0.3", "--warmup", "0.1"];

    let t = measure(dir.path(), target, &[&["throughput"][..], &short].concat());
    assert!(t["mb_per_s_each_way"].as_f64().unwrap() > 0.0, "{t}");
    assert!(t["total_bytes_each_way"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["tls"], "TLSv1_3 TLS13_AES_128_GCM_SHA256", "{t}");

    let l = measure(dir.path(), target, &[&["latency"][..], &short].concat());
    assert!(l["round_trips"].as_u64().unwrap() > 0, "{l}");
    let (p50, p99) = (l["p50_us"].as_f64().unwrap(), l["p99_us"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{l}");

    let c = measure(
        dir.path(),
        target,
        &[&["connect", "--concurrency", "2"][..], &short].concat(),
    );
    assert!(c["connections"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["errors"], 0, "{c}");

    let i = measure(
        dir.path(),
        target,
        &["idle", "--connections", "20", "--hold", "0"],
    );
    assert_eq!(i["released"], 20, "{i}");

    // The crypto providers side by side, with the backend's ECDSA key.
    let mut command = Command::new(LOADGEN);
    command
        .args(["crypto", "--seconds", "0.1", "--cert"])
        .arg(dir.path().join("backend.crt"))
        .arg("--key")
        .arg(dir.path().join("backend.key"));
    let crypto = report(command, &["crypto"]);
    for provider in ["ring", "aws-lc-rs"] {
        let p = &crypto[provider];
        assert_eq!(p["scheme"], "ECDSA_NISTP256_SHA256", "{crypto}");
        for figure in ["sign_per_s", "verify_per_s", "x25519_exchange_per_s"] {
            assert!(p[figure].as_f64().unwrap() > 0.0, "{crypto}");
        }
    }

    // The health port answers 200 to any GET.
    let health = addrs["health"].as_str().unwrap();
    let mut tcp = std::net::TcpStream::connect(health).unwrap();
    std::io::Write::write_all(&mut tcp, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut tcp, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[test]
fn a_plain_client_against_a_tls_backend_reports_every_failure() {
    let dir = tempfile::tempdir().unwrap();
    let request = CertRequest {
        brokers: vec!["backend".into()],
        ..CertRequest::default()
    };
    write_dev_certs(dir.path(), &request).unwrap();
    let (_echo, addrs) = start_echo(dir.path());
    let out = Command::new(LOADGEN)
        .args(["connect", "--plain", "--seconds", "0.2", "--warmup", "0"])
        .args(["--target", addrs["echo"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["connections"], 0, "{report}");
    assert!(report["errors"].as_u64().unwrap() > 0, "{report}");
}
