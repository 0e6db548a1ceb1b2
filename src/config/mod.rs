//! The front door's configuration: `FileConfig` as written (serde), checked
//! in full into the typed `Config` the server runs on.
//!
//! Checking reads every certificate, key and CA bundle, so a `Config` that
//! exists can be served. All problems of a file are reported together, each
//! with its `file:line:column`.

mod check;
mod check_tls;
mod file;
mod model;
mod watch;

use std::hash::{DefaultHasher, Hash};
use std::path::Path;

use check::Checker;
pub use model::*;
pub use portico_core::diagnostics::{ConfigError, Diagnoser, Diagnostic};
pub use portico_core::duration::parse as parse_duration;
pub use watch::ConfigWatcher;

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&portico_core::diagnostics::read_config(path)?, path)
    }

    /// Checks configuration text; `path` names it in errors and anchors
    /// relative paths (to its folder).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("")).to_owned();
        let mut fingerprint = DefaultHasher::new();
        path.hash(&mut fingerprint);
        text.hash(&mut fingerprint);
        let mut checker = Checker {
            d: Diagnoser::new(path, text),
            base,
            files: Vec::new(),
            fingerprint,
        };
        let config = checker.config(text, path);
        checker.d.finish()?;
        // `finish` returned Ok, so nothing was reported and every part was built.
        config.ok_or_else(|| ConfigError::Invalid {
            diagnostics: Vec::new(),
        })
    }

    pub fn target_group(&self, name: &str) -> Option<&TargetGroupConfig> {
        self.target_groups.iter().find(|g| g.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_config(bind_a: &str, bind_b: &str) -> String {
        format!(
            r#"
[[listener]]
name = "a"
bind = "{bind_a}"
protocol = "tcp"
target_group = "g"

[[listener]]
name = "b"
bind = "{bind_b}"
protocol = "tcp"
target_group = "g"

[[target_group]]
name = "g"
protocol = "tcp"
targets = ["127.0.0.1:61614", "broker-b.internal:61614"]
"#
        )
    }

    #[test]
    fn listeners_may_share_port_zero_but_not_a_fixed_address() {
        let path = Path::new("portico.toml");
        let config = Config::parse(&tcp_config("127.0.0.1:0", "127.0.0.1:0"), path).unwrap();
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(
            config.target_groups[0].targets[1],
            TargetSpec::Host {
                host: "broker-b.internal".into(),
                port: 61614
            }
        );
        let Err(ConfigError::Invalid { diagnostics }) =
            Config::parse(&tcp_config("127.0.0.1:7000", "127.0.0.1:7000"), path)
        else {
            panic!("a shared fixed address was accepted");
        };
        assert_eq!(diagnostics.len(), 1);
        assert_eq!((diagnostics[0].line, diagnostics[0].column), (10, 8));
        assert!(diagnostics[0]
            .message
            .contains("already used by listener \"a\""));
    }

    #[test]
    fn status_matchers_and_allow_lists() {
        let m = StatusMatcher::parse("200,204-206").unwrap();
        assert!(m.matches(200) && m.matches(205) && !m.matches(201) && !m.matches(500));
        assert!(StatusMatcher::parse("600").is_err());
        assert!(StatusMatcher::parse("300-200").is_err());
        let allow = AllowList(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(allow.allows("10.1.2.3".parse().unwrap()));
        assert!(
            allow.allows("::ffff:10.1.2.3".parse().unwrap()),
            "IPv4-mapped addresses count as IPv4"
        );
        assert!(!allow.allows("192.0.2.1".parse().unwrap()));
    }
}
