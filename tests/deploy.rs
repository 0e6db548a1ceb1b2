//! Deployment files and the configuration reference stay true: the
//! systemd units verify, the YAML parses, and every configuration key is
//! documented in config/README.md (and every documented key exists).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: skipping the unit check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in ["portico.service", "portico-broker@.service"] {
        let text = std::fs::read_to_string(repo(&format!("deploy/systemd/{unit}"))).unwrap();
        // The binaries are not installed here: stand-ins keep verify about the unit itself.
        let text = text
            .replace("/usr/local/bin/portico-broker", "/bin/true")
            .replace("/usr/local/bin/portico", "/bin/true");
        let name = unit.replace("@.", "@demo.");
        std::fs::write(dir.path().join(&name), text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(&name))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn kubernetes_and_compose_yaml_parse() {
    let files = [
        "deploy/kubernetes/frontdoor.yaml",
        "deploy/kubernetes/brokers.yaml",
        "deploy/compose/compose.yaml",
    ];
    let script = "import sys, yaml\nfor f in sys.argv[1:]:\n    docs = [d for d in yaml.safe_load_all(open(f)) if d]\n    assert docs, f\n    print(f, len(docs))";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(files.iter().map(|f| repo(f)))
        .output()
        .expect("python3 with PyYAML (pip install pyyaml)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fields serde accepts in one table, from its "unknown field" error.
fn fields(toml: &str) -> BTreeSet<String> {
    let path = Path::new("reference.toml");
    let err = portico::Config::parse(toml, path).unwrap_err().to_string();
    let line = err
        .lines()
        .find(|l| l.contains("unknown field `bogus_key`"))
        .unwrap_or_else(|| panic!("no unknown-field error in:\n{err}"));
    // "expected `bind`" or "expected one of `a`, `b`, …"
    line.split("expected")
        .nth(1)
        .unwrap_or_default()
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_front_door_key_is_documented_and_every_documented_key_exists() {
    let tables = [
        "[admin]\nbogus_key = 1\n",
        "[resolver]\nbogus_key = 1\n",
        "[[listener]]\nbogus_key = 1\n",
        "[[listener]]\n[[listener.certificate]]\nbogus_key = 1\n",
        "[[listener]]\n[listener.tls]\nbogus_key = 1\n",
        "[[listener]]\n[listener.limits]\nbogus_key = 1\n",
        "[[target_group]]\nbogus_key = 1\n",
        "[[target_group]]\n[target_group.health_check]\nbogus_key = 1\n",
    ];
    let mut all = BTreeSet::new();
    for t in tables {
        all.extend(fields(t));
    }
    let reference = std::fs::read_to_string(repo("config/README.md")).unwrap();
    let front_door = reference
        .split("# Broker configuration reference")
        .next()
        .unwrap();
    for field in &all {
        // A key is a row of a table, or a sub-table with its own section.
        let documented = front_door.contains(&format!("| `{field}`"))
            || front_door.contains(&format!(".{field}]"));
        assert!(
            documented,
            "`{field}` is not documented in config/README.md"
        );
    }
    // Every key in the first column of the reference's tables is real.
    for row in front_door.lines().filter(|l| l.starts_with("| `")) {
        let keys = row.split('|').nth(1).unwrap();
        for key in keys.split('`').skip(1).step_by(2) {
            let key = key.trim();
            assert!(
                all.contains(key),
                "config/README.md documents `{key}`, which no table accepts"
            );
        }
    }
}
