//! Test harness: brokers on ephemeral loopback ports with certificates from
//! portico's dev CA.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use portico::certs::DevCa;
use portico_broker::config::BrokerConfig;
use portico_broker::Broker;

/// A folder with a dev CA, a broker certificate for 127.0.0.1 and localhost,
/// and a broker.toml.
pub struct BrokerDir {
    pub dir: tempfile::TempDir,
}

impl BrokerDir {
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let issued = ca.issue(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(dir.path().join("broker.crt"), issued.cert_pem).unwrap();
        std::fs::write(dir.path().join("broker.key"), issued.key_pem).unwrap();
        let toml = format!(
            r#"
[broker]
name = "test-broker"
data_dir = "data"

[[transport]]
name = "stomp+ssl"
bind = "127.0.0.1:0"
cert = "broker.crt"
key = "broker.key"

[[transport]]
name = "stomp"
bind = "127.0.0.1:0"

[console]
bind = "127.0.0.1:0"
{extra}
"#
        );
        std::fs::write(dir.path().join("broker.toml"), toml).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> BrokerConfig {
        BrokerConfig::load(&self.path("broker.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn start(&self) -> Broker {
        Broker::start(self.config()).await.unwrap()
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }
}

pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}
