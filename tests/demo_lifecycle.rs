//! The demo owns its brokers: a start that fails leaves none behind and
//! says why, and they stop with the demo even when it is killed with
//! SIGKILL. One test, in its own binary: the demo binds fixed ports, so
//! its runs must not overlap (test binaries run one after another).

#![cfg(feature = "demo")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// Waits for `check` (a process table or an exit status) until `DEADLINE`.
fn wait_until(what: &str, check: impl FnMut() -> bool) {
    portico_test_support::wait_until(what, DEADLINE, check);
}

/// A demo's folder: the repository's front-door config, nothing else.
fn demo_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("config")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/portico.toml"),
        root.path().join("config/portico.toml"),
    )
    .unwrap();
    root
}

fn demo(root: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("demo")
        .current_dir(root)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Live (not zombie) processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// The brokers' data folder in `root`: every broker process names it.
fn brokers_of(root: &Path) -> String {
    root.join("data/demo").display().to_string()
}

#[test]
fn the_demo_owns_its_brokers() {
    a_demo_that_cannot_start_leaves_nothing_behind_and_says_why();
    the_brokers_stop_with_the_demo_even_on_sigkill();
}

fn a_demo_that_cannot_start_leaves_nothing_behind_and_says_why() {
    let root = demo_root();
    // Someone else holds the front door's port.
    let _taken = std::net::TcpListener::bind("127.0.0.1:61617").unwrap();
    let mut child = demo(root.path());
    let mut status = None;
    wait_until("the demo to give up", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(2));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("127.0.0.1:61617") && stderr.contains("another program holds the port"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("run the demo from the repository"),
        "{stderr}"
    );
    assert_eq!(
        processes_mentioning(&brokers_of(root.path())),
        Vec::<u32>::new()
    );
}

fn the_brokers_stop_with_the_demo_even_on_sigkill() {
    let root = demo_root();
    let mut child = demo(root.path());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut ready = false;
    for line in stderr.lines().map_while(Result::ok) {
        if line.contains("portico demo ready") {
            ready = true;
            break;
        }
    }
    assert!(ready, "the demo never got ready");
    let brokers = processes_mentioning(&brokers_of(root.path()));
    assert_eq!(brokers.len(), 4, "four broker processes: {brokers:?}");
    assert!(Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let _ = child.wait();
    wait_until("every broker to stop with the demo", || {
        processes_mentioning(&brokers_of(root.path())).is_empty()
    });
    // And their ports are free for the next demo.
    std::net::TcpListener::bind("127.0.0.1:61614").expect("broker1-a's port is free");
}
