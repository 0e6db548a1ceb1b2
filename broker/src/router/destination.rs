//! Destination names and ActiveMQ wildcard matching.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Queue,
    Topic,
}

/// A queue or topic, written `/queue/NAME` or `/topic/NAME` in STOMP and
/// `queue://NAME` or `topic://NAME` on command lines and in configs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub kind: Kind,
    pub name: String,
}

/// Temporary destinations (JMS's, for request and reply) are named by
/// these prefixes and their client-given name in hex: `/temp-queue/NAME`
/// and `/temp-topic/NAME` in STOMP.
const TEMP_QUEUE_PREFIX: &str = "$tmpq.";
const TEMP_TOPIC_PREFIX: &str = "$tmpt.";

impl Destination {
    /// A temporary destination for `original`, the name its connection
    /// gave it (`ID:host-…:1:1`).
    pub fn temporary(kind: Kind, original: &str) -> Result<Self, String> {
        let prefix = match kind {
            Kind::Queue => TEMP_QUEUE_PREFIX,
            Kind::Topic => TEMP_TOPIC_PREFIX,
        };
        let mut name = String::with_capacity(prefix.len() + original.len() * 2);
        name.push_str(prefix);
        for b in original.bytes() {
            name.push_str(&format!("{b:02x}"));
        }
        if original.is_empty() || name.len() > 200 {
            return Err(format!("invalid temporary destination name {original:?}"));
        }
        Ok(Self { kind, name })
    }

    /// The name its connection gave a temporary destination.
    pub fn temporary_name(&self) -> Option<String> {
        let hex = self
            .name
            .strip_prefix(TEMP_QUEUE_PREFIX)
            .or_else(|| self.name.strip_prefix(TEMP_TOPIC_PREFIX))?;
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        String::from_utf8(bytes?).ok()
    }

    pub fn is_temporary(&self) -> bool {
        self.name.starts_with(TEMP_QUEUE_PREFIX) || self.name.starts_with(TEMP_TOPIC_PREFIX)
    }

    /// Parses `/queue/NAME`, `/topic/NAME`, `queue://NAME` or `topic://NAME`
    /// (and `/temp-queue/NAME`, `/temp-topic/NAME`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(n) = text.strip_prefix("/temp-queue/") {
            return Self::temporary(Kind::Queue, n);
        }
        if let Some(n) = text.strip_prefix("/temp-topic/") {
            return Self::temporary(Kind::Topic, n);
        }
        let (kind, name) = if let Some(n) = text.strip_prefix("/queue/") {
            (Kind::Queue, n)
        } else if let Some(n) = text.strip_prefix("/topic/") {
            (Kind::Topic, n)
        } else if let Some(n) = text.strip_prefix("queue://") {
            (Kind::Queue, n)
        } else if let Some(n) = text.strip_prefix("topic://") {
            (Kind::Topic, n)
        } else {
            return Err(format!(
                "invalid destination {text:?}: use /queue/NAME or /topic/NAME"
            ));
        };
        let valid = !name.is_empty()
            && name.len() <= 200
            && !name.split('.').any(str::is_empty)
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '*' | '>' | '$'));
        if !valid {
            return Err(format!(
                "invalid destination {text:?}: names are letters, digits, '.', '-', '_' (dot-separated parts)"
            ));
        }
        if name.starts_with(TEMP_QUEUE_PREFIX) || name.starts_with(TEMP_TOPIC_PREFIX) {
            return Err(format!(
                "invalid destination {text:?}: temporary destinations are /temp-queue/NAME and /temp-topic/NAME"
            ));
        }
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }

    /// The STOMP form, `/queue/NAME` or `/topic/NAME`.
    pub fn stomp(&self) -> String {
        self.to_string()
    }

    pub fn is_wildcard(&self) -> bool {
        self.name.contains(['*', '>'])
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(original) = self.temporary_name() {
            return match self.kind {
                Kind::Queue => write!(f, "/temp-queue/{original}"),
                Kind::Topic => write!(f, "/temp-topic/{original}"),
            };
        }
        match self.kind {
            Kind::Queue => write!(f, "/queue/{}", self.name),
            Kind::Topic => write!(f, "/topic/{}", self.name),
        }
    }
}

/// An ActiveMQ destination filter: `queue://>`, `topic://PRICES.*`,
/// `>` (any destination of either kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    kind: Option<Kind>,
    parts: Vec<String>,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, pattern) = if let Some(p) = text.strip_prefix("queue://") {
            (Some(Kind::Queue), p)
        } else if let Some(p) = text.strip_prefix("topic://") {
            (Some(Kind::Topic), p)
        } else {
            (None, text)
        };
        if pattern.is_empty() || pattern.split('.').any(str::is_empty) {
            return Err(format!("invalid destination filter {text:?}"));
        }
        let parts: Vec<String> = pattern.split('.').map(str::to_owned).collect();
        if parts.iter().take(parts.len() - 1).any(|p| p == ">") {
            return Err(format!(
                "invalid destination filter {text:?}: '>' must be last"
            ));
        }
        Ok(Self { kind, parts })
    }

    /// `.` separates parts, `*` matches one part, `>` the rest.
    pub fn matches(&self, destination: &Destination) -> bool {
        if self.kind.is_some_and(|k| k != destination.kind) {
            return false;
        }
        let names: Vec<&str> = destination.name.split('.').collect();
        let mut i = 0;
        for part in &self.parts {
            match part.as_str() {
                ">" => return true,
                "*" => {
                    if i >= names.len() {
                        return false;
                    }
                }
                literal => {
                    if names.get(i) != Some(&literal) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_in_both_spellings() {
        let q = Destination::parse("/queue/MyQueue").unwrap();
        assert_eq!(q, Destination::parse("queue://MyQueue").unwrap());
        assert_eq!(q.to_string(), "/queue/MyQueue");
        assert_eq!(Destination::parse("topic://a.b").unwrap().kind, Kind::Topic);
        for bad in [
            "/queue/",
            "queue",
            "/queue/a..b",
            "/queue/a b",
            "/exchange/x",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_match_as_in_activemq() {
        let d = |s: &str| Destination::parse(s).unwrap();
        let f = |s: &str| Filter::parse(s).unwrap();
        assert!(f("queue://>").matches(&d("/queue/a.b.c")));
        assert!(!f("queue://>").matches(&d("/topic/a")));
        assert!(f(">").matches(&d("/topic/a")));
        assert!(f("topic://PRICES.*").matches(&d("/topic/PRICES.IBM")));
        assert!(!f("topic://PRICES.*").matches(&d("/topic/PRICES.IBM.NYSE")));
        assert!(f("topic://PRICES.>").matches(&d("/topic/PRICES.IBM.NYSE")));
        assert!(f("queue://A.*.C").matches(&d("/queue/A.B.C")));
        assert!(!f("queue://A").matches(&d("/queue/A.B")));
        // As in ActiveMQ, `>` matches none or more parts.
        assert!(f("queue://A.>").matches(&d("/queue/A")));
        assert!(Filter::parse("queue://>.a").is_err());
    }

    #[test]
    fn temporary_destinations_keep_their_client_given_names() {
        let t = Destination::parse("/temp-queue/ID:host-1-2-3:1:1").unwrap();
        assert!(t.is_temporary());
        assert_eq!(t.temporary_name().as_deref(), Some("ID:host-1-2-3:1:1"));
        assert_eq!(t.to_string(), "/temp-queue/ID:host-1-2-3:1:1");
        assert_eq!(Destination::parse(&t.to_string()).unwrap(), t);
        // Only by their own syntax.
        assert!(Destination::parse(&format!("/queue/{}", t.name)).is_err());
    }
}
