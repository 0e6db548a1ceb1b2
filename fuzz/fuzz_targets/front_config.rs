//! The front door's config parser on arbitrary text: an answer (a config
//! or diagnostics), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = portico::Config::parse(text, std::path::Path::new("fuzz/portico.toml")) {
        // Rendering the diagnostics walks their spans over the text.
        let _ = e.to_string();
    }
});
