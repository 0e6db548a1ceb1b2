//! systemd readiness notification (`Type=notify`): a datagram to
//! `$NOTIFY_SOCKET`. Without that variable (not under systemd) it does
//! nothing.

/// Sends `state` (such as `READY=1` or `STOPPING=1`); errors are ignored,
/// as systemd treats a missing notification as its own problem to report.
pub fn notify(state: &str) {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let Ok(socket) = UnixDatagram::unbound() else {
            return;
        };
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(std::path::Path::new(&path)),
        };
        if let Ok(address) = address {
            let _ = socket.send_to_addr(state.as_bytes(), &address);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = state;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn readiness_reaches_the_notify_socket() {
        let dir = tempfile_dir();
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        super::notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("portico-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
