//! Test harness: a dev PKI, in-process TLS backends and consoles on
//! loopback, a portico server from TOML text, and TLS clients.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use portico::certs::DevCa;
use portico::{Config, Server};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

mod front;

pub use front::*;
pub use portico_test_support::{hostile, wait_for, DEADLINE, POLL};

/// A dev CA and a folder of certificates issued by it.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
}

impl Pki {
    /// A PKI with a `front` certificate for `mq.localhost` and a `broker`
    /// one for `broker.internal`.
    pub fn front_and_broker() -> Self {
        let pki = Self::new();
        pki.issue("front", &["mq.localhost"]);
        pki.issue("broker", &["broker.internal"]);
        pki
    }

    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        Self { dir, ca }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a certificate for `names`, written as `stem.crt` / `stem.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let issued = self.ca.issue(&names).unwrap();
        let (crt, key) = (
            self.path(&format!("{stem}.crt")),
            self.path(&format!("{stem}.key")),
        );
        std::fs::write(&crt, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem).unwrap();
        (crt, key)
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for cert in portico::tls::load_certificates(&self.path("ca.crt")).unwrap() {
            roots.add(cert).unwrap();
        }
        roots
    }

    pub fn server_config(&self, stem: &str) -> Arc<ServerConfig> {
        let ck = portico::tls::load_certified_key(
            &self.path(&format!("{stem}.crt")),
            &self.path(&format!("{stem}.key")),
        )
        .unwrap();
        let resolver = Arc::new(portico::tls::CertResolver::new(vec![ck]));
        let config = ServerConfig::builder_with_provider(portico::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        Arc::new(config)
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_provider(portico::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(self.roots())
                .with_no_client_auth(),
        )
    }

    /// A client that presents the certificate `stem` (mutual TLS).
    pub fn client_config_with_cert(&self, stem: &str) -> Arc<ClientConfig> {
        let certs = portico::tls::load_certificates(&self.path(&format!("{stem}.crt"))).unwrap();
        let key_pem = std::fs::read(self.path(&format!("{stem}.key"))).unwrap();
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(&key_pem).unwrap();
        Arc::new(
            ClientConfig::builder_with_provider(portico::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(self.roots())
                .with_client_auth_cert(certs, key)
                .unwrap(),
        )
    }
}

/// What a backend saw.
#[derive(Default)]
pub struct BackendLog {
    pub accepted: AtomicUsize,
    pub served: AtomicUsize,
    pub sni: Mutex<Vec<Option<String>>>,
    pub first_bytes: Mutex<Vec<Vec<u8>>>,
}

/// An in-process broker stand-in: on each connection it writes its name and
/// a newline, then echoes every byte back; on EOF it closes its side.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub log: Arc<BackendLog>,
    task: JoinHandle<()>,
}

impl Backend {
    /// A TLS backend on `ip` (port `port`, 0 for any) with certificate `stem`.
    pub async fn tls(name: &str, ip: &str, port: u16, pki: &Pki, stem: &str) -> Self {
        Self::start(
            name,
            ip,
            port,
            Some(TlsAcceptor::from(pki.server_config(stem))),
            false,
        )
        .await
    }

    /// A plain TCP backend.
    pub async fn tcp(name: &str, ip: &str, port: u16) -> Self {
        Self::start(name, ip, port, None, false).await
    }

    /// A plain TCP backend that expects a PROXY v2 header first.
    pub async fn tcp_proxy_protocol(name: &str, ip: &str, port: u16) -> Self {
        Self::start(name, ip, port, None, true).await
    }

    async fn start(name: &str, ip: &str, port: u16, tls: Option<TlsAcceptor>, proxy: bool) -> Self {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(BackendLog::default());
        let (name_owned, log2) = (name.to_owned(), log.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                log2.accepted.fetch_add(1, Ordering::SeqCst);
                let (tls, name, log) = (tls.clone(), name_owned.clone(), log2.clone());
                tokio::spawn(async move {
                    let mut greeting = format!("{name}\n");
                    if proxy {
                        let mut buf = vec![0u8; 16];
                        if tcp.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
                        buf.resize(16 + len, 0);
                        if tcp.read_exact(&mut buf[16..]).await.is_err() {
                            return;
                        }
                        let (header, _) = portico::proxy_protocol::ProxyHeader::decode(&buf)
                            .unwrap()
                            .unwrap();
                        let header = header.unwrap();
                        greeting = format!("{name} from {}\n", header.source);
                        log.first_bytes.lock().unwrap().push(buf);
                    }
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_owned);
                            log.sni.lock().unwrap().push(sni);
                            log.served.fetch_add(1, Ordering::SeqCst);
                            echo(stream, &greeting).await;
                        }
                        None => {
                            log.served.fetch_add(1, Ordering::SeqCst);
                            echo(tcp, &greeting).await;
                        }
                    }
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            log,
            task,
        }
    }

    pub fn served(&self) -> usize {
        self.log.served.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.log.accepted.load(Ordering::SeqCst)
    }

    /// Stops accepting (connections already open run on until their peer closes).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    greeting: &str,
) {
    if stream.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// A console stand-in for TCP health checks: a port that is open or not.
pub struct Console {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Binds `ip:port`; a port a console of this test just let go of may take
/// a moment to be free (its task is being cancelled): tried until the deadline.
async fn bind_again(ip: &str, port: u16) -> TcpListener {
    let addr = (ip.parse::<IpAddr>().unwrap(), port);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) if port != 0 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => panic!("cannot bind {ip}:{port}: {e}"),
        }
    }
}

impl Console {
    pub async fn open(ip: &str, port: u16) -> Self {
        let listener = bind_again(ip, port).await;
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((tcp, _)) = listener.accept().await {
                    drop(tcp);
                }
            }
        });
        Self { addr, task }
    }

    /// An HTTP console answering every request with `status`.
    pub async fn http(ip: &str, port: u16, status: u16) -> Self {
        Self::serve_http(ip, port, status, None).await
    }

    /// An HTTPS console with certificate `stem`.
    pub async fn https(ip: &str, port: u16, status: u16, pki: &Pki, stem: &str) -> Self {
        let acceptor = TlsAcceptor::from(pki.server_config(stem));
        Self::serve_http(ip, port, status, Some(acceptor)).await
    }

    async fn serve_http(ip: &str, port: u16, status: u16, tls: Option<TlsAcceptor>) -> Self {
        let listener = bind_again(ip, port).await;
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer_http(stream, status).await;
                            }
                        }
                        None => answer_http(tcp, status).await,
                    }
                });
            }
        });
        Self { addr, task }
    }
}

/// Reads a request head and answers with `status` and no body.
async fn answer_http<S>(stream: S, status: u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = reader.get_mut().write_all(response.as_bytes()).await;
    let _ = reader.get_mut().shutdown().await;
}

impl Drop for Console {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the same free port on two loopback addresses (two "hosts").
pub async fn same_port_on(a: &str, b: &str) -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind((a.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap();
        let port = first.local_addr().unwrap().port();
        if TcpListener::bind((b.parse::<IpAddr>().unwrap(), port))
            .await
            .is_ok()
        {
            return port;
        }
    }
    panic!("no port free on both {a} and {b}");
}

/// A portico server from TOML text written into `dir` (relative paths in
/// the text are relative to it).
pub async fn start_portico(dir: &Path, toml: &str) -> Server {
    let path = dir.join("portico.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("config:\n{e}"));
    Server::start(config).await.unwrap()
}

/// Connects through a TLS listener and reads the backend's greeting line.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sni: &str,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let stream = tokio::time::timeout(DEADLINE, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let mut reader = BufReader::new(stream);
    let line = greeting(&mut reader).await?;
    Ok((reader.into_inner(), line))
}

/// The first line a backend sends: its name.
pub async fn greeting<S: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<S>,
) -> std::io::Result<String> {
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("greeting timed out"))??;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before greeting",
        ));
    }
    Ok(line.trim_end().to_owned())
}

/// Which backend answers a new TLS connection (its greeting).
pub async fn who(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<String> {
    tls_connect(addr, config, "mq.localhost")
        .await
        .map(|(_, name)| name)
}

/// Connects through a TCP listener and reads the greeting line.
pub async fn tcp_who(addr: SocketAddr) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    greeting(&mut BufReader::new(tcp)).await
}

/// GET from the admin server: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    portico_test_support::http(addr, "GET", path, &[]).await
}

/// GET from the admin server with extra request headers: (status, the
/// response's head, lower-cased, body).
pub async fn admin_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let r = portico_test_support::request(addr, "GET", path, headers).await;
    (r.status, r.head, r.body)
}

/// The states `/targets` reports, as (target address, state).
pub fn states(server: &Server) -> Vec<(String, String)> {
    server
        .targets()
        .into_iter()
        .map(|t| (t.address, t.state.to_owned()))
        .collect()
}

pub fn state_of(server: &Server, address: SocketAddr) -> Option<String> {
    server
        .targets()
        .into_iter()
        .find(|t| t.address == address.to_string())
        .map(|t| t.state.to_owned())
}
