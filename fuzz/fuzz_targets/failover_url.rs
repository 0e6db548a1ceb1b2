//! Broker URLs as a user might type them: parsing never panics, and the
//! reconnect delays of whatever parses stay within `maxReconnectDelay`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_broker::client::BrokerUrl;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = BrokerUrl::parse(text) else {
        return;
    };
    assert!(!url.endpoints.is_empty());
    for endpoint in &url.endpoints {
        assert!(!endpoint.host.is_empty());
    }
    for attempt in [0, 1, 2, 10, 63, 64, 1000, u32::MAX] {
        let delay = url.delay(attempt);
        if url.use_exponential_back_off {
            assert!(delay <= url.max_reconnect_delay.max(url.initial_reconnect_delay));
        }
    }
});
