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

impl Destination {
    /// Parses `/queue/NAME`, `/topic/NAME`, `queue://NAME` or `topic://NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
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
}
