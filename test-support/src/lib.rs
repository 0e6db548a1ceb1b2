//! What the front door's and the broker's tests share: waiting for a
//! condition with a deadline (never a bare sleep), a process started from a
//! binary and killed when dropped, a plain HTTP/1.1 request, and hostile
//! input for any port.

pub mod hostile;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a test waits for anything.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often a condition is looked at while waiting for it.
pub const POLL: Duration = Duration::from_millis(20);
/// How often a blocking wait looks (short: it measures outages).
pub const SPIN: Duration = Duration::from_millis(2);

/// Waits until `check` holds, or panics with `what` after [`DEADLINE`].
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The same for a thread that is not in the runtime; returns how long it took.
pub fn wait_until(what: &str, deadline: Duration, check: impl FnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    assert!(
        holds_within(deadline, check),
        "timed out waiting for: {what}"
    );
    started.elapsed()
}

/// Whether `check` holds before `deadline` runs out (looked at every
/// [`SPIN`]), for a caller that explains a failure itself.
pub fn holds_within(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while !check() {
        if started.elapsed() >= deadline {
            return false;
        }
        std::thread::sleep(SPIN);
    }
    true
}

/// A process of the test's, its standard error (and output) in a log file;
/// killed (by its id) when dropped.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `binary` with `args` and `env`, logging to `log`.
    pub fn start(binary: &Path, args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self { child, log }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address logged right after `marker` (a "listening on" line).
    pub fn address(&self, marker: &str) -> SocketAddr {
        let mut found = None;
        wait_until(&format!("{marker:?} in the log"), DEADLINE, || {
            found = self.log().lines().find_map(|line| {
                let at = line.find(marker)?;
                line[at + marker.len()..]
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            found.is_some()
        });
        found.unwrap()
    }
}

/// An HTTP/1.1 response: status, head (lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One HTTP/1.1 request with `headers`: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let response = request(addr, method, path, headers).await;
    (response.status, response.body)
}

/// One HTTP/1.1 request with `headers` (the connection closes after it).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    request_with_body(addr, method, path, headers, "").await
}

/// `POST path` with an HTML form's fields (`application/x-www-form-urlencoded`)
/// and the `Origin` a browser sends with it.
pub async fn post_form(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> Response {
    let body: String = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&");
    let origin = format!("http://{addr}");
    let mut all = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", origin.as_str()),
    ];
    all.extend_from_slice(headers);
    request_with_body(addr, "POST", path, &all, &body).await
}

/// Percent-encodes everything but letters and digits (as a form does,
/// spaces as %20).
fn encode_component(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.1 request with `headers` and `body`.
pub async fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_string(&mut out))
        .await
        .expect("no HTTP answer in time")
        .unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {out:?}"));
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Response {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// Runs `command` to its end, its output piped, killing it (and failing
/// the test) if it takes longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> std::process::Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// ActiveMQ's command line (`activemq.jar` of Debian's `activemq`, as its
/// `activemq` script runs it) with `args`, in work folder `base`; its
/// output. TLS trusts `ca` (a PEM certificate). Bounded to 90 s.
pub fn activemq(base: &Path, ca: &Path, args: &[&str]) -> String {
    std::fs::create_dir_all(base).unwrap();
    let log4j = base.join("log4j.properties");
    std::fs::write(
        &log4j,
        "log4j.rootLogger=INFO, out\n\
         log4j.appender.out=org.apache.log4j.ConsoleAppender\n\
         log4j.appender.out.layout=org.apache.log4j.PatternLayout\n\
         log4j.appender.out.layout.ConversionPattern=%m%n\n",
    )
    .unwrap();
    let trust = base.join("trust.p12");
    if !trust.exists() {
        let made = Command::new("keytool")
            .args([
                "-importcert",
                "-noprompt",
                "-alias",
                "portico-dev-ca",
                "-storetype",
                "PKCS12",
                "-storepass",
                "changeit",
                "-file",
            ])
            .arg(ca)
            .arg("-keystore")
            .arg(&trust)
            .output()
            .expect("keytool (a JDK or JRE) is needed");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let jar = Path::new("/usr/share/activemq/bin/activemq.jar");
    assert!(
        jar.exists(),
        "Debian's activemq package is needed (.ci/run installs it)"
    );
    let mut java = Command::new("java");
    java.arg(format!("-Dactivemq.home={}", "/usr/share/activemq"))
        .arg(format!("-Dactivemq.base={}", base.display()))
        .arg(format!("-Dactivemq.conf={}", base.display()))
        .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
        .arg(format!("-Djavax.net.ssl.trustStore={}", trust.display()))
        .arg("-Djavax.net.ssl.trustStorePassword=changeit")
        .arg("-Djavax.net.ssl.trustStoreType=PKCS12")
        .arg("-jar")
        .arg(jar)
        .args(args);
    let out = output_within(&mut java, Duration::from_secs(90));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `GET path`: the body, which must come with a 200.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http(addr, "GET", path, &[]).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}
