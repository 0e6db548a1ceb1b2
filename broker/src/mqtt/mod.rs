//! MQTT 3.1.1: the packet codec, and topic names as ActiveMQ maps them.
//!
//! ActiveMQ maps MQTT topics onto its own names by swapping characters:
//! `/` ↔ `.`, `+` ↔ `*`, `#` ↔ `>`. MQTT `sensors/hall/temp` is
//! `topic://sensors.hall.temp`, the filter `sensors/+/temp` is
//! `sensors.*.temp`, and `sensors/#` is `sensors.>`; the mapping is its own
//! inverse, so a name crosses back unchanged.

mod codec;
mod retained;

pub use codec::{
    connack, decode, encode, Connect, MqttError, Packet, Publish, QoS, Will, MAX_REMAINING,
    SUBSCRIPTION_FAILED,
};
pub use retained::{Retained, RetainedMessage, MAX_RETAINED, MAX_RETAINED_BYTES};

/// An MQTT topic (or filter) as ActiveMQ names it, and back.
pub fn swap_topic(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            '+' => '*',
            '*' => '+',
            '#' => '>',
            '>' => '#',
            other => other,
        })
        .collect()
}

/// Whether `filter` is a well-formed MQTT topic filter: `#` only as the
/// whole last level, `+` only as a whole level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        l => !l.contains(['#', '+']),
    })
}

/// Whether `topic` may be published to: not empty, no wildcards.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['#', '+'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_as_activemq_maps_them() {
        assert_eq!(swap_topic("sensors/hall/temp"), "sensors.hall.temp");
        assert_eq!(swap_topic("sensors/+/temp"), "sensors.*.temp");
        assert_eq!(swap_topic("sensors/#"), "sensors.>");
        assert_eq!(swap_topic("v1.2/x"), "v1/2.x");
        for name in ["a/b/c", "a/+/#", "x.y", "*"] {
            assert_eq!(swap_topic(&swap_topic(name)), name);
        }
    }

    #[test]
    fn filters_and_topics_are_checked() {
        assert!(valid_filter("a/+/c") && valid_filter("#") && valid_filter("a/#"));
        assert!(!valid_filter("a/#/c") && !valid_filter("a+/b") && !valid_filter(""));
        assert!(valid_topic("a/b") && !valid_topic("a/+") && !valid_topic("#"));
    }
}
