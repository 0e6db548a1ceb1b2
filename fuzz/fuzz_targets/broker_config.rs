//! The broker's config parser on arbitrary text: an answer (a config or
//! diagnostics), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("fuzz/broker.toml");
    if let Err(e) = portico_broker::config::BrokerConfig::parse(text, path) {
        let _ = e.to_string();
    }
});
