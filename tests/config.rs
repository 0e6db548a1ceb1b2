//! Configuration checking: every example parses, unknown keys are refused
//! everywhere, and a bad file gets every error at once with its position —
//! through the library and through `portico check`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use portico::certs::{write_dev_certs, CertRequest};
use portico::{Config, ConfigError};

fn portico() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portico"))
}

/// A copy of the repository's `config/` beside freshly made dev certificates
/// in `certs/dev`, as the examples expect.
fn examples() -> (tempfile::TempDir, Vec<PathBuf>) {
    let root = tempfile::tempdir().unwrap();
    write_dev_certs(
        &root.path().join("certs/dev"),
        &CertRequest {
            domains: vec!["mq.localhost".into()],
            brokers: vec!["broker1".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        },
    )
    .unwrap();
    let config_dir = root.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let mut files = Vec::new();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") && !is_broker_config(&path) {
            let copy = config_dir.join(path.file_name().unwrap());
            std::fs::copy(&path, &copy).unwrap();
            files.push(copy);
        }
    }
    assert!(!files.is_empty());
    (root, files)
}

/// Front-door configs are the ones with listeners.
fn is_broker_config(path: &Path) -> bool {
    !std::fs::read_to_string(path)
        .unwrap()
        .contains("[[listener]]")
}

/// The diagnostics of `text` loaded as `portico.toml` in `dir`.
fn diagnostics_of(dir: &Path, text: &str) -> Vec<(usize, usize, String)> {
    let path = dir.join("portico.toml");
    std::fs::write(&path, text).unwrap();
    diagnostics(Config::load(&path))
}

fn diagnostics(result: Result<Config, ConfigError>) -> Vec<(usize, usize, String)> {
    match result {
        Err(ConfigError::Invalid { diagnostics }) => diagnostics
            .into_iter()
            .map(|d| (d.line, d.column, d.message))
            .collect(),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("the config was accepted"),
    }
}

#[test]
fn every_example_config_is_valid() {
    let (_root, files) = examples();
    for file in files {
        if let Err(e) = Config::load(&file) {
            panic!("{}:\n{e}", file.display());
        }
    }
}

#[test]
fn an_unknown_key_in_any_table_of_any_example_is_rejected_at_its_line() {
    let (_root, files) = examples();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The top level, then after each table header.
        let mut insert_after = vec![None];
        insert_after.extend(
            lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim_start().starts_with('['))
                .map(|(i, _)| Some(i)),
        );
        for at in insert_after {
            let mut edited: Vec<&str> = lines.clone();
            let line_no = match at {
                None => {
                    edited.insert(0, "bogus_key = 1");
                    1
                }
                Some(i) => {
                    edited.insert(i + 1, "bogus_key = 1");
                    i + 2
                }
            };
            let result = Config::parse(&edited.join("\n"), &file);
            let found = diagnostics(result);
            assert!(
                found
                    .iter()
                    .any(|(line, _, msg)| *line == line_no && msg.contains("bogus_key")),
                "{}: bogus_key at line {line_no} not reported: {found:?}",
                file.display()
            );
        }
    }
}

/// A file with one mistake per line marked `<-`; all must be reported.
fn broken_config(dir: &Path) -> PathBuf {
    let pki = common::Pki::new();
    let (crt, _) = pki.issue("front", &["mq.localhost"]);
    let (_, other_key) = pki.issue("other", &["other.localhost"]);
    std::fs::copy(&crt, dir.join("front.crt")).unwrap();
    std::fs::copy(&other_key, dir.join("other.key")).unwrap();
    std::fs::copy(pki.path("ca.crt"), dir.join("ca.crt")).unwrap();
    let text = r#"[[listener]]
name = "a"
bind = "127.0.0.1:0"
target_group = "missing"
allow = ["10.0.0.0/33"]
handshake_timeout = "10 parsecs"
  [[listener.certificate]]
  cert = "front.crt"
  key = "other.key"

[[listener]]
name = "b"
bind = "127.0.0.1:0"
target_group = "brokers"
colour = "blue"

[[target_group]]
name = "brokers"
ca = "ca.crt"
targets = ["127.0.0.1:61614", "no-port"]
  [target_group.health_check]
  healthy_threshold = 0
  unhealthy_threshold = 2

[[target_group]]
name = "more"
ca = "nowhere/ca.crt"
targets = []
"#;
    let path = dir.join("broken.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_error_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = broken_config(dir.path());
    let found = diagnostics(Config::load(&path));
    let expect = [
        (4, 16, "not defined"),
        (5, 10, "invalid CIDR"),
        (6, 21, "duration"),
        (9, 9, "does not match"),
        (15, 1, "unknown field `colour`"),
        (20, 31, "no port"),
        (22, 23, "between 1 and 100"),
        (27, 6, "cannot read"),
    ];
    for (line, column, needle) in expect {
        assert!(
            found
                .iter()
                .any(|(l, c, m)| *l == line && *c == column && m.contains(needle)),
            "expected {line}:{column} {needle:?} among {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn portico_check_prints_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = broken_config(dir.path());
    let out = portico()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let shown = path.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{shown}:4:16: error: listener \"a\" names target group \"missing\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{shown}:15:1: error: unknown field `colour`")),
        "{stderr}"
    );
    assert!(stderr.contains("8 errors"), "{stderr}");
}

#[test]
fn portico_check_accepts_a_good_file_and_reports_syntax_errors() {
    let (_root, files) = examples();
    let out = portico()
        .args(["check", "--config"])
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("syntax.toml");
    std::fs::write(&bad, "[admin]\nbind = \"127.0.0.1:9090\n").unwrap();
    let out = portico()
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{}:2:", bad.display())),
        "{stderr}"
    );

    let out = portico()
        .args(["check", "--config", "/nonexistent/portico.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/portico.toml"));
}

#[test]
fn portico_certs_makes_a_ca_and_keeps_it_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("dev");
    let run = |args: &[&str]| {
        let out = portico()
            .args(["certs", "--out"])
            .arg(&out_dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "--domain",
        "mq.localhost",
        "--broker",
        "broker1",
        "--ip",
        "127.0.0.1",
        "--ip",
        "127.0.0.2",
    ]);
    let ca = std::fs::read(out_dir.join("ca.crt")).unwrap();
    run(&["--broker", "broker2"]);
    assert_eq!(
        std::fs::read(out_dir.join("ca.crt")).unwrap(),
        ca,
        "the CA was replaced"
    );

    // Every certificate verifies against the CA for its names.
    let roots = portico::tls::load_roots(&out_dir.join("ca.crt")).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.into(),
        portico::tls::provider(),
    )
    .build()
    .unwrap();
    let check = |stem: &str, name: &str| {
        let chain = portico::tls::load_certificates(&out_dir.join(format!("{stem}.crt"))).unwrap();
        portico::tls::load_certified_key(
            &out_dir.join(format!("{stem}.crt")),
            &out_dir.join(format!("{stem}.key")),
        )
        .unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &[],
                &rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("{stem} for {name}: {e}"));
    };
    check("mq.localhost", "mq.localhost");
    check("mq.localhost", "127.0.0.1");
    check("broker1", "broker1");
    check("broker1", "127.0.0.2");
    check("broker2", "broker2");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("broker1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private keys must not be readable by others"
        );
    }
}

use rustls::client::danger::ServerCertVerifier;

#[test]
fn an_expired_certificate_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::new(vec!["mq.localhost".to_owned()]).unwrap();
    params.not_before = now - time::Duration::days(60);
    params.not_after = now - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("old.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("old.key"), key.serialize_pem()).unwrap();
    let text = r#"[[listener]]
name = "a"
bind = "127.0.0.1:0"
target_group = "g"
  [[listener.certificate]]
  cert = "old.crt"
  key = "old.key"

[[target_group]]
name = "g"
protocol = "tcp"
targets = ["127.0.0.1:61614"]
"#;
    let found = diagnostics_of(dir.path(), text);
    assert!(
        found
            .iter()
            .any(|(l, c, m)| *l == 6 && *c == 10 && m.contains("old.crt expired at ")),
        "{found:#?}"
    );
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn limits_of_zero_are_refused_where_zero_means_nothing_would_be_served() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[[listener]]
name = "a"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "g"
  [listener.limits]
  max_connections = 0
  max_connections_per_source = 0
  max_handshakes = 0

[[target_group]]
name = "g"
protocol = "tcp"
targets = ["127.0.0.1:61614"]
"#;
    let found = diagnostics_of(dir.path(), text);
    assert!(
        found
            .iter()
            .any(|(l, _, m)| *l == 7 && m.contains("`max_connections` must be at least 1")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|(l, _, m)| *l == 9 && m.contains("`max_handshakes` must be at least 1")),
        "{found:#?}"
    );
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn the_admin_endpoint_and_the_broker_console_default_to_loopback() {
    let path = Path::new("portico.toml");
    let config = Config::parse("[admin]\n", path).unwrap();
    let admin = config.admin.unwrap().bind;
    assert_eq!(admin, "127.0.0.1:9090".parse().unwrap());
    assert!(admin.ip().is_loopback());
    assert!(Config::parse("", path).unwrap().admin.is_none());

    let broker = portico_broker::config::BrokerConfig::parse(
        "[broker]\nname = \"b\"\ndata_dir = \"data\"\n[console]\n",
        Path::new("broker.toml"),
    )
    .unwrap();
    let console = broker.console.unwrap();
    assert_eq!(console, "127.0.0.1:8162".parse().unwrap());
}

/// One mistake, one error: a target group with a typo in it is still
/// defined, so the listener that names it is not reported as well.
#[test]
fn a_typo_in_a_target_group_does_not_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[[listener]]
name = "stomp"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "brokers"

[[target_group]]
name = "brokers"
protocol = "tcp"
algorithm = "round-robin"
targets = ["127.0.0.1:61614"]
"#;
    let found = diagnostics_of(dir.path(), text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (10, 13), "{found:?}");
    assert!(found[0].2.contains("round-robin"), "{found:?}");
}

/// A syntax error does not hide the other mistakes: a missing certificate
/// is reported in the same run.
#[test]
fn a_syntax_error_and_a_missing_file_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"[admin]
bind = "127.0.0.1:9090

[[listener]]
name = "stomp"
bind = "127.0.0.1:0"
target_group = "brokers"
  [[listener.certificate]]
  cert = "missing.crt"
  key = "missing.key"

[[target_group]]
name = "brokers"
protocol = "tcp"
targets = ["127.0.0.1:61614"]
"#;
    let found = diagnostics_of(dir.path(), text);
    let at: Vec<(usize, usize)> = found.iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(at, [(2, 23), (9, 10)], "{found:?}");
    assert!(found[1].2.contains("cannot read"), "{found:?}");
}

/// The README's example of a mistake is what `portico check` prints for
/// it, position and all.
#[test]
fn the_readmes_example_error_is_what_check_prints() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let example = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("config/portico.toml:") && l.contains("brokrs"))
        .expect("the README shows a check error");
    let (root, _) = examples();
    let config = root.path().join("config/portico.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let typo = text.replacen("target_group = \"brokers\"", "target_group = \"brokrs\"", 1);
    assert_ne!(text, typo);
    std::fs::write(&config, typo).unwrap();
    let out = portico()
        .args(["check", "--config", "config/portico.toml"])
        .current_dir(root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let printed = String::from_utf8(out.stderr).unwrap();
    assert!(
        printed.lines().any(|l| l == example),
        "README: {example}\nprinted:\n{printed}"
    );
}
