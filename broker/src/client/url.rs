//! Broker URLs as ActiveMQ users write them: `ssl://host:port`,
//! `tcp://host:port`, and `failover:(uri,uri)?option=value&…`.

use std::time::Duration;

/// One broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "ssl" } else { "tcp" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// A parsed broker URL with its failover options (ActiveMQ's names and
/// defaults; a plain URL never reconnects).
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerUrl {
    pub endpoints: Vec<Endpoint>,
    pub failover: bool,
    pub randomize: bool,
    pub initial_reconnect_delay: Duration,
    pub max_reconnect_delay: Duration,
    pub use_exponential_back_off: bool,
    pub back_off_multiplier: f64,
    /// `None`: try forever.
    pub max_reconnect_attempts: Option<u32>,
    /// For the first connection; `None`: as `max_reconnect_attempts`.
    pub startup_max_reconnect_attempts: Option<u32>,
    /// How long a send may wait for a connection; `None`: forever.
    pub timeout: Option<Duration>,
}

impl BrokerUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let mut url = Self {
            endpoints: Vec::new(),
            failover: false,
            randomize: true,
            initial_reconnect_delay: Duration::from_millis(10),
            max_reconnect_delay: Duration::from_secs(30),
            use_exponential_back_off: true,
            back_off_multiplier: 2.0,
            max_reconnect_attempts: None,
            startup_max_reconnect_attempts: None,
            timeout: None,
        };
        let Some(rest) = text.strip_prefix("failover:") else {
            url.endpoints.push(endpoint(text)?);
            url.max_reconnect_attempts = Some(0);
            url.startup_max_reconnect_attempts = Some(0);
            return Ok(url);
        };
        url.failover = true;
        let (list, query) = match rest.strip_prefix('(') {
            Some(inner) => {
                let close = inner
                    .find(')')
                    .ok_or_else(|| format!("invalid broker URL {text:?}: missing ')'"))?;
                let query = inner[close + 1..]
                    .strip_prefix('?')
                    .unwrap_or(&inner[close + 1..]);
                (&inner[..close], query)
            }
            None => rest.split_once('?').unwrap_or((rest, "")),
        };
        for uri in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            url.endpoints.push(endpoint(uri)?);
        }
        if url.endpoints.is_empty() {
            return Err(format!("invalid broker URL {text:?}: no broker address"));
        }
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("invalid option {pair:?} in {text:?}"))?;
            let bad = || format!("invalid value {value:?} for {key} in {text:?}");
            let millis = |v: &str| {
                v.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| bad())
            };
            let attempts = |v: &str| -> Result<Option<u32>, String> {
                match v.parse::<i64>().map_err(|_| bad())? {
                    n if n < 0 => Ok(None),
                    n => Ok(Some(u32::try_from(n).map_err(|_| bad())?)),
                }
            };
            match key {
                "randomize" => url.randomize = value.parse().map_err(|_| bad())?,
                "initialReconnectDelay" => url.initial_reconnect_delay = millis(value)?,
                "maxReconnectDelay" => url.max_reconnect_delay = millis(value)?,
                "useExponentialBackOff" => {
                    url.use_exponential_back_off = value.parse().map_err(|_| bad())?
                }
                "backOffMultiplier" => {
                    url.back_off_multiplier = value.parse().map_err(|_| bad())?
                }
                "maxReconnectAttempts" => url.max_reconnect_attempts = attempts(value)?,
                "startupMaxReconnectAttempts" => {
                    url.startup_max_reconnect_attempts = attempts(value)?
                }
                "timeout" => {
                    url.timeout = match value.parse::<i64>().map_err(|_| bad())? {
                        n if n < 0 => None,
                        n => Some(Duration::from_millis(n as u64)),
                    }
                }
                other => return Err(format!("unknown failover option {other:?} in {text:?}")),
            }
        }
        Ok(url)
    }

    /// The delay before reconnect attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        if !self.use_exponential_back_off {
            return self.initial_reconnect_delay;
        }
        let factor = self
            .back_off_multiplier
            .max(1.0)
            .powi(attempt.min(64) as i32);
        let delay = self.initial_reconnect_delay.as_secs_f64() * factor;
        // Compared as durations: a float round trip can land above a large maximum.
        Duration::try_from_secs_f64(delay)
            .unwrap_or(Duration::MAX)
            .min(self.max_reconnect_delay)
    }
}

fn endpoint(uri: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
        format!("invalid broker address {uri:?}: expected ssl://host:port or tcp://host:port")
    })?;
    let tls = match scheme {
        "ssl" | "stomp+ssl" | "stomp+tls" | "tls" => true,
        "tcp" | "stomp" => false,
        other => {
            return Err(format!(
                "unsupported scheme {other:?} in {uri:?}: use ssl:// or tcp://"
            ))
        }
    };
    let rest = rest.split(['?', '/']).next().unwrap_or(rest);
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid broker address {uri:?}: missing port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("invalid port in {uri:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("invalid broker address {uri:?}: missing host"));
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_failover_urls_as_activemq_writes_them() {
        let url = BrokerUrl::parse(
            "failover:(ssl://mq.example.com:61617,tcp://10.0.0.2:61613)?randomize=false&initialReconnectDelay=10&maxReconnectDelay=30000&maxReconnectAttempts=-1&timeout=5000",
        )
        .unwrap();
        assert!(url.failover && !url.randomize);
        assert_eq!(url.endpoints.len(), 2);
        assert_eq!(
            url.endpoints[0],
            Endpoint {
                host: "mq.example.com".into(),
                port: 61617,
                tls: true
            }
        );
        assert!(!url.endpoints[1].tls);
        assert_eq!(url.max_reconnect_attempts, None);
        assert_eq!(url.timeout, Some(Duration::from_secs(5)));
        assert_eq!(url.delay(0), Duration::from_millis(10));
        assert_eq!(url.delay(3), Duration::from_millis(80));
        assert_eq!(url.delay(40), Duration::from_secs(30));
    }

    #[test]
    fn a_plain_url_is_one_endpoint_without_reconnects() {
        let url = BrokerUrl::parse("ssl://127.0.0.1:61617").unwrap();
        assert!(!url.failover);
        assert_eq!(url.max_reconnect_attempts, Some(0));
        assert_eq!(
            BrokerUrl::parse("failover:tcp://a:1,tcp://b:2")
                .unwrap()
                .endpoints
                .len(),
            2
        );
        assert_eq!(
            BrokerUrl::parse("tcp://[::1]:61613").unwrap().endpoints[0].host,
            "::1"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (bad, needle) in [
            ("mq.example.com:61617", "expected ssl://"),
            ("http://a:1", "unsupported scheme"),
            ("ssl://a", "missing port"),
            ("failover:(ssl://a:1", "missing ')'"),
            ("failover:(ssl://a:1)?bogus=1", "unknown failover option"),
            (
                "failover:(ssl://a:1)?maxReconnectAttempts=x",
                "invalid value",
            ),
            ("failover:()", "no broker address"),
        ] {
            let err = BrokerUrl::parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    /// Found by the `failover_url` fuzz target: with a maximum this large a
    /// float round trip put the delay a few hundred nanoseconds above it.
    #[test]
    fn the_delay_never_exceeds_a_very_large_maximum() {
        let url =
            BrokerUrl::parse("failover:(ssl://t.0.2:61613)?&maxReconnectDelay=3000001656683661")
                .unwrap();
        for attempt in [0, 10, 63, 64, u32::MAX] {
            assert!(url.delay(attempt) <= url.max_reconnect_delay, "{attempt}");
        }
        assert_eq!(url.delay(u32::MAX), url.max_reconnect_delay);
    }
}
