//! `portico-broker`: the broker network that the portico front door fronts.
//!
//! The STOMP broker, its journal, active/standby pairs and network connectors
//! live here; see the repository's DESIGN notes for the plan.
