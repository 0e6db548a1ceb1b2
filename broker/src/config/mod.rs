//! The broker's configuration (`broker.toml`): serde mirrors (`file`)
//! checked (`check`) into a typed `BrokerConfig` (`model`), every error
//! reported with `file:line:column`.

mod check;
mod file;
mod model;

use std::path::Path;

use portico_core::diagnostics::{ConfigError, Diagnoser};

pub use model::*;

impl BrokerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&portico_core::diagnostics::read_config(path)?, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut d = Diagnoser::new(path, text);
        let base = path.parent().unwrap_or(Path::new("")).to_owned();
        let config = check::check(&mut d, text, path, &base);
        d.finish()?;
        config.ok_or_else(|| ConfigError::Invalid {
            diagnostics: Vec::new(),
        })
    }
}
