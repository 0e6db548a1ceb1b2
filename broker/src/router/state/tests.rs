//! The router's state, driven op by op with no task and no socket: what
//! each connection's outbox gets, what is held back and what is counted.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::State;
use crate::router::{
    AckId, AckMode, ConnId, ConnectionInfo, Consumer, Destination, Message, Op, Outbox,
    OutboxReceiver, Policies, Policy, Retired, RouterLimits, Stats,
};
use crate::selector::Selector;

/// What one delivery looked like: (subscription, body, ack id, redelivered).
type Seen = (String, String, Option<String>, bool);

struct Harness {
    state: State,
    outboxes: HashMap<ConnId, OutboxReceiver>,
    retired: mpsc::UnboundedReceiver<Retired>,
    next_seq: u64,
}

impl Harness {
    fn new(limits: RouterLimits) -> Self {
        Self::with_policies(limits, Vec::new())
    }

    fn with_policies(limits: RouterLimits, policies: Vec<Policy>) -> Self {
        let (demand, _) = watch::channel(0);
        let (retired_tx, retired) = mpsc::unbounded_channel();
        let policies = Arc::new(Policies::new(policies));
        Self {
            state: State::new(limits, policies, demand, retired_tx),
            outboxes: HashMap::new(),
            retired,
            next_seq: 1,
        }
    }

    /// Lets `after` pass for the router's timers (redelivery delays).
    fn later(&mut self, after: Duration) {
        self.state.tick(Instant::now() + after);
    }

    /// What the router gave up on since last asked: (body, cause, to).
    fn retired(&mut self) -> Vec<(String, String, Option<String>)> {
        let mut seen = Vec::new();
        while let Ok(r) = self.retired.try_recv() {
            let body = String::from_utf8_lossy(&r.message.body)
                .trim_end()
                .to_owned();
            seen.push((body, r.cause.to_string(), r.to.map(|d| d.to_string())));
        }
        seen
    }

    fn connect(&mut self, conn: ConnId) {
        let (outbox, rx) = Outbox::new(256);
        let info = ConnectionInfo::new(
            conn,
            "test".into(),
            "test".into(),
            "test".into(),
            "1.2".into(),
        );
        self.state.handle(Op::Register { conn, outbox, info });
        self.outboxes.insert(conn, rx);
    }

    fn ask<T>(&mut self, op: impl FnOnce(oneshot::Sender<T>) -> Op) -> Option<T> {
        let (reply, mut answer) = oneshot::channel();
        self.state.handle(op(reply));
        answer.try_recv().ok()
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        id: &str,
        destination: &str,
        ack: AckMode,
        prefetch: usize,
    ) -> Result<(), String> {
        self.subscribe_selecting(conn, id, destination, ack, prefetch, None)
    }

    fn subscribe_selecting(
        &mut self,
        conn: ConnId,
        id: &str,
        destination: &str,
        ack: AckMode,
        prefetch: usize,
        selector: Option<&str>,
    ) -> Result<(), String> {
        let destination = Destination::parse(destination).unwrap();
        self.ask(|reply| Op::Subscribe {
            conn,
            id: id.into(),
            destination,
            consumer: Consumer {
                ack,
                prefetch,
                selector: selector.map(|s| Arc::new(Selector::parse(s).unwrap())),
            },
            network: None,
            reply,
        })
        .expect("answered at once")
        .map_err(|e| e.to_string())
    }

    /// Sends a message of `size` body bytes; the receiver of its reply
    /// (it has a value once the router took the message).
    fn send(&mut self, destination: &str, body: &str, size: usize) -> oneshot::Receiver<()> {
        self.send_with(destination, body, size, |_| {})
    }

    /// `send`, with the message changed by `tweak` first.
    fn send_with(
        &mut self,
        destination: &str,
        body: &str,
        size: usize,
        tweak: impl FnOnce(&mut Message),
    ) -> oneshot::Receiver<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut bytes = body.as_bytes().to_vec();
        bytes.resize(size.max(bytes.len()), b' ');
        let mut message = Message {
            seq,
            message_id: format!("ID:test-{seq}"),
            destination: Destination::parse(destination).unwrap(),
            headers: Vec::new(),
            body: bytes,
            stored: false,
            sender: None,
            expires: 0,
            priority: crate::router::DEFAULT_PRIORITY,
            group: None,
            deliver_at: 0,
        };
        tweak(&mut message);
        let (reply, answer) = oneshot::channel();
        self.state.handle(Op::Send {
            message: Arc::new(message),
            reply,
        });
        answer
    }

    fn taken(&mut self, destination: &str, body: &str) {
        let mut answer = self.send(destination, body, 0);
        assert!(answer.try_recv().is_ok(), "{body} was held back");
    }

    /// What `conn`'s outbox got since last asked.
    fn delivered(&mut self, conn: ConnId) -> Vec<Seen> {
        let rx = self.outboxes.get_mut(&conn).unwrap();
        let mut seen = Vec::new();
        while let Some(d) = rx.try_recv() {
            let body = String::from_utf8_lossy(&d.message.body)
                .trim_end()
                .to_owned();
            seen.push((d.subscription, body, d.ack, d.redelivered));
        }
        seen
    }

    fn ack(&mut self, conn: ConnId, ack: &str) -> Result<Vec<u64>, String> {
        let ack = AckId::parse(ack).unwrap();
        self.ask(|reply| Op::Ack {
            conn,
            ack,
            only: false,
            reply,
        })
        .expect("answered at once")
        .map_err(|e| e.to_string())
    }

    fn nack(&mut self, conn: ConnId, ack: &str) -> Result<(), String> {
        let ack = AckId::parse(ack).unwrap();
        self.ask(|reply| Op::Nack {
            conn,
            ack,
            poison: None,
            reply,
        })
        .expect("answered at once")
        .map_err(|e| e.to_string())
    }

    fn stats(&mut self) -> Stats {
        self.ask(|reply| Op::Stats { reply }).unwrap()
    }

    fn dequeued(&mut self, queue: &str) -> u64 {
        let stats = self.stats();
        stats
            .queues
            .iter()
            .find(|q| q.name == queue)
            .unwrap()
            .dequeued
    }
}

fn bodies(seen: &[Seen]) -> Vec<&str> {
    seen.iter().map(|s| s.1.as_str()).collect()
}

#[test]
fn queue_messages_go_round_robin_to_consumers_with_room() {
    let mut h = Harness::new(RouterLimits::default());
    for conn in [ConnId(1), ConnId(2)] {
        h.connect(conn);
        h.subscribe(conn, "s", "/queue/q", AckMode::Auto, 1000)
            .unwrap();
    }
    for i in 0..4 {
        h.taken("/queue/q", &format!("m{i}"));
    }
    assert_eq!(bodies(&h.delivered(ConnId(1))), ["m0", "m2"]);
    assert_eq!(bodies(&h.delivered(ConnId(2))), ["m1", "m3"]);
    assert_eq!(h.dequeued("q"), 4, "auto mode: done once handed over");
}

/// Three messages delivered (m0, m1, m2), then one ACK or NACK of `m1`.
#[test]
fn acknowledgement_modes() {
    struct Case {
        mode: AckMode,
        nack: bool,
        dequeued: u64,
        redelivered: &'static [&'static str],
    }
    let cases = [
        // Cumulative: m1 and everything delivered before it.
        Case {
            mode: AckMode::Client,
            nack: false,
            dequeued: 2,
            redelivered: &[],
        },
        Case {
            mode: AckMode::ClientIndividual,
            nack: false,
            dequeued: 1,
            redelivered: &[],
        },
        // A NACK is cumulative in client mode too, and keeps the order.
        Case {
            mode: AckMode::Client,
            nack: true,
            dequeued: 0,
            redelivered: &["m0", "m1"],
        },
        Case {
            mode: AckMode::ClientIndividual,
            nack: true,
            dequeued: 0,
            redelivered: &["m1"],
        },
    ];
    for case in cases {
        let mut h = Harness::new(RouterLimits::default());
        h.connect(ConnId(1));
        // A window of three: whatever is given back comes again at once.
        h.subscribe(ConnId(1), "s", "/queue/q", case.mode, 3)
            .unwrap();
        for i in 0..3 {
            h.taken("/queue/q", &format!("m{i}"));
        }
        let first = h.delivered(ConnId(1));
        assert_eq!(bodies(&first), ["m0", "m1", "m2"]);
        let ack = first[1].2.clone().unwrap();
        if case.nack {
            h.nack(ConnId(1), &ack).unwrap();
            // Refused: back after the default redelivery delay (1 s).
            assert!(h.delivered(ConnId(1)).is_empty(), "not before its delay");
            h.later(Duration::from_millis(1100));
        } else {
            h.ack(ConnId(1), &ack).unwrap();
        }
        let again = h.delivered(ConnId(1));
        assert_eq!(
            bodies(&again),
            case.redelivered,
            "{:?} nack={}",
            case.mode,
            case.nack
        );
        assert!(again.iter().all(|s| s.3), "marked redelivered");
        assert_eq!(
            h.dequeued("q"),
            case.dequeued,
            "{:?} nack={}",
            case.mode,
            case.nack
        );
        if !case.nack {
            // An id acknowledged already is no longer known.
            assert!(h.ack(ConnId(1), &ack).is_err());
        }
    }
}

#[test]
fn a_full_queue_holds_its_sender_until_acknowledgements_make_room() {
    let mut h = Harness::new(RouterLimits {
        queue_memory: 3 * 1024,
        ..RouterLimits::default()
    });
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "s", "/queue/q", AckMode::ClientIndividual, 1000)
        .unwrap();
    // Unacknowledged deliveries count against the queue.
    let mut answers: Vec<_> = (0..4)
        .map(|i| h.send("/queue/q", &format!("m{i}"), 1000))
        .collect();
    let taken: Vec<bool> = answers.iter_mut().map(|a| a.try_recv().is_ok()).collect();
    assert_eq!(taken, [true, true, false, false]);
    let seen = h.delivered(ConnId(1));
    assert_eq!(bodies(&seen), ["m0", "m1"]);
    assert_eq!(h.stats().memory.held_senders, 2);
    h.ack(ConnId(1), seen[0].2.as_ref().unwrap()).unwrap();
    assert!(answers[2].try_recv().is_ok(), "room for one more");
    assert!(answers[3].try_recv().is_err());
    assert_eq!(bodies(&h.delivered(ConnId(1))), ["m2"]);
}

#[test]
fn the_broker_memory_limit_holds_every_sender() {
    let mut h = Harness::new(RouterLimits {
        memory_limit: 3 * 1024,
        ..RouterLimits::default()
    });
    // No consumers: messages wait in two queues, against one limit.
    let mut a = h.send("/queue/a", "a0", 1000);
    let mut b = h.send("/queue/b", "b0", 1000);
    let mut c = h.send("/queue/a", "a1", 1000);
    assert!(a.try_recv().is_ok() && b.try_recv().is_ok());
    assert!(c.try_recv().is_err(), "over the broker's limit");
    let stats = h.stats();
    assert!(stats.memory.used <= 3 * 1024, "{:?}", stats.memory);
    assert_eq!(stats.memory.held_senders, 1);
    // A consumer takes queue b's message (auto): the held sender gets in.
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "s", "/queue/b", AckMode::Auto, 1000)
        .unwrap();
    assert_eq!(bodies(&h.delivered(ConnId(1))), ["b0"]);
    assert!(c.try_recv().is_ok());
}

#[test]
fn prefetch_and_unacknowledged_bytes_bound_what_a_connection_holds() {
    let mut h = Harness::new(RouterLimits {
        max_inflight_bytes: 2500,
        ..RouterLimits::default()
    });
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "small", "/queue/small", AckMode::Client, 2)
        .unwrap();
    h.subscribe(ConnId(1), "big", "/queue/big", AckMode::Client, 1000)
        .unwrap();
    for i in 0..3 {
        h.taken("/queue/small", &format!("s{i}"));
    }
    assert_eq!(
        bodies(&h.delivered(ConnId(1))),
        ["s0", "s1"],
        "a window of 2"
    );
    for i in 0..3 {
        let mut answer = h.send("/queue/big", &format!("b{i}"), 1000);
        assert!(answer.try_recv().is_ok());
    }
    // Two messages of about 1 KiB fit in 2,500 bytes with the small ones.
    let big = h.delivered(ConnId(1));
    assert_eq!(bodies(&big), ["b0", "b1"]);
    // Acknowledging frees the bytes: the third comes.
    h.ack(ConnId(1), big[1].2.as_ref().unwrap()).unwrap();
    assert_eq!(bodies(&h.delivered(ConnId(1))), ["b2"]);
}

#[test]
fn destinations_and_subscriptions_are_capped() {
    let mut h = Harness::new(RouterLimits {
        max_destinations: 2,
        max_subscriptions_per_connection: 2,
        ..RouterLimits::default()
    });
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "a", "/queue/a", AckMode::Auto, 1)
        .unwrap();
    h.subscribe(ConnId(1), "b", "/topic/b", AckMode::Auto, 1)
        .unwrap();
    let third = h
        .subscribe(ConnId(1), "c", "/queue/c", AckMode::Auto, 1)
        .unwrap_err();
    assert!(third.contains("at most 2 subscriptions"), "{third}");
    h.connect(ConnId(2));
    let new = h
        .subscribe(ConnId(2), "c", "/queue/c", AckMode::Auto, 1)
        .unwrap_err();
    assert!(new.contains("maximum of 2 destinations"), "{new}");
    // Existing destinations are fine.
    h.subscribe(ConnId(2), "a", "/queue/a", AckMode::Auto, 1)
        .unwrap();
    assert!(
        h.subscribe(ConnId(2), "a", "/queue/a", AckMode::Auto, 1)
            .is_err(),
        "id in use"
    );
}

#[test]
fn a_consumer_that_leaves_gives_its_messages_back_redelivered() {
    let mut h = Harness::new(RouterLimits::default());
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "s", "/queue/q", AckMode::ClientIndividual, 1000)
        .unwrap();
    for i in 0..2 {
        h.taken("/queue/q", &format!("m{i}"));
    }
    assert_eq!(h.delivered(ConnId(1)).len(), 2);
    h.state.handle(Op::Unregister { conn: ConnId(1) });
    h.connect(ConnId(2));
    h.subscribe(ConnId(2), "s", "/queue/q", AckMode::ClientIndividual, 1000)
        .unwrap();
    let again = h.delivered(ConnId(2));
    assert_eq!(bodies(&again), ["m0", "m1"]);
    assert!(again.iter().all(|s| s.3));
    let stats = h.stats();
    assert_eq!(stats.queues[0].dequeued, 0);
}

/// A message refused more often than `max_redeliveries` allows becomes a
/// dead letter; each redelivery waits out a delay that backs off.
#[test]
fn a_message_refused_too_often_is_a_dead_letter() {
    let policy = Policy {
        max_redeliveries: 2,
        redelivery_delay: Duration::from_millis(100),
        redelivery_backoff: 2.0,
        ..Policy::defaults()
    };
    let mut h = Harness::with_policies(RouterLimits::default(), vec![policy]);
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "s", "/queue/q", AckMode::ClientIndividual, 10)
        .unwrap();
    h.taken("/queue/q", "poison");
    h.taken("/queue/q", "fine");
    let first = h.delivered(ConnId(1));
    assert_eq!(bodies(&first), ["poison", "fine"]);
    h.ack(ConnId(1), first[1].2.as_deref().unwrap()).unwrap();
    let mut poison = first[0].clone();
    for delivery in 1..=3u32 {
        h.nack(ConnId(1), poison.2.as_deref().unwrap()).unwrap();
        if delivery == 3 {
            break;
        }
        let delay = Duration::from_millis(100 * 2u64.pow(delivery - 1));
        h.later(delay / 2);
        assert!(h.delivered(ConnId(1)).is_empty(), "back before its delay");
        h.later(delay + Duration::from_millis(50));
        let again = h.delivered(ConnId(1));
        assert_eq!(bodies(&again), ["poison"], "delivery {}", delivery + 1);
        assert!(again[0].3, "marked redelivered");
        poison = again[0].clone();
    }
    h.later(Duration::from_secs(10));
    assert!(h.delivered(ConnId(1)).is_empty(), "never again");
    let retired = h.retired();
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(retired[0].0, "poison");
    assert!(retired[0].1.contains("Delivery[3]"), "{}", retired[0].1);
    assert_eq!(retired[0].2.as_deref(), Some("/queue/ActiveMQ.DLQ"));
    let q = &h.stats().queues[0];
    assert_eq!((q.dead_lettered, q.pending, q.bytes), (1, 0, 0));
}

/// A consumer that goes with a message unacknowledged counts as a failed
/// delivery too, but the message is offered again at once.
#[test]
fn a_consumer_that_goes_counts_as_a_failed_delivery() {
    let policy = Policy {
        max_redeliveries: 1,
        ..Policy::defaults()
    };
    let mut h = Harness::with_policies(RouterLimits::default(), vec![policy]);
    h.connect(ConnId(2));
    h.subscribe(ConnId(2), "s", "/queue/q", AckMode::Client, 10)
        .unwrap();
    h.taken("/queue/q", "m");
    for conn in [ConnId(1), ConnId(3)] {
        h.connect(conn);
        h.subscribe(conn, "s", "/queue/q", AckMode::Client, 10)
            .unwrap();
    }
    assert_eq!(bodies(&h.delivered(ConnId(2))), ["m"]);
    h.state.handle(Op::Unregister { conn: ConnId(2) });
    // Offered again at once (no delay), to one of the others.
    let again: Vec<Seen> = [ConnId(1), ConnId(3)]
        .into_iter()
        .flat_map(|c| h.delivered(c))
        .collect();
    assert_eq!(bodies(&again), ["m"]);
    h.state.handle(Op::Unregister { conn: ConnId(1) });
    h.state.handle(Op::Unregister { conn: ConnId(3) });
    let retired = h.retired();
    assert_eq!(retired.len(), 1, "the second failure is one too many");
}

/// An expired message is never delivered: dropped at the head of its queue
/// or when it arrives, counted, and handed on by its policy.
#[test]
fn expired_messages_are_never_delivered() {
    let mut h = Harness::with_policies(
        RouterLimits::default(),
        vec![Policy {
            destination: crate::router::Filter::parse("queue://drop.>").unwrap(),
            expired_to_dead_letter: false,
            ..Policy::defaults()
        }],
    );
    for (queue, body) in [("/queue/keep", "k"), ("/queue/drop.q", "d")] {
        let mut answer = h.send_with(queue, body, 0, |m| m.expires = 1_000);
        assert!(answer.try_recv().is_ok(), "taken, not held back");
    }
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "a", "/queue/keep", AckMode::Auto, 10)
        .unwrap();
    h.subscribe(ConnId(1), "b", "/queue/drop.q", AckMode::Auto, 10)
        .unwrap();
    assert!(h.delivered(ConnId(1)).is_empty());
    let retired = h.retired();
    assert_eq!(
        retired,
        [
            (
                "k".into(),
                "Message expired".into(),
                Some("/queue/ActiveMQ.DLQ".into())
            ),
            ("d".into(), "Message expired".into(), None),
        ]
    );
    let stats = h.stats();
    let expired: Vec<(String, u64, usize)> = stats
        .queues
        .iter()
        .map(|q| (q.name.clone(), q.expired, q.bytes))
        .collect();
    assert_eq!(expired, [("drop.q".into(), 1, 0), ("keep".into(), 1, 0)]);
}

/// Among waiting messages the higher priority goes first; within one
/// priority, first in first out; a message given back keeps its place.
#[test]
fn higher_priorities_are_delivered_first() {
    let mut h = Harness::new(RouterLimits::default());
    for (body, priority) in [("low", 1), ("a", 4), ("urgent", 9), ("b", 4), ("c", 4)] {
        let mut answer = h.send_with("/queue/q", body, 0, |m| m.priority = priority);
        assert!(answer.try_recv().is_ok());
    }
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "s", "/queue/q", AckMode::ClientIndividual, 2)
        .unwrap();
    let first = h.delivered(ConnId(1));
    assert_eq!(bodies(&first), ["urgent", "a"]);
    // Abandoned: "urgent" and "a" come back before "b", "c" and "low".
    h.state.handle(Op::Unregister { conn: ConnId(1) });
    h.connect(ConnId(2));
    h.subscribe(ConnId(2), "s", "/queue/q", AckMode::Auto, 10)
        .unwrap();
    assert_eq!(
        bodies(&h.delivered(ConnId(2))),
        ["urgent", "a", "b", "c", "low"]
    );
}

/// A message group's messages go to one consumer while it lives, then to
/// another one.
#[test]
fn a_message_group_sticks_to_one_consumer_while_it_lives() {
    let mut h = Harness::new(RouterLimits::default());
    for conn in [ConnId(1), ConnId(2)] {
        h.connect(conn);
        h.subscribe(conn, "s", "/queue/q", AckMode::Auto, 100)
            .unwrap();
    }
    let grouped = |h: &mut Harness, body: &str, group: &str| {
        let group: Arc<str> = Arc::from(group);
        let mut answer = h.send_with("/queue/q", body, 0, |m| m.group = Some(group));
        assert!(answer.try_recv().is_ok());
    };
    for i in 0..3 {
        grouped(&mut h, &format!("a{i}"), "A");
        grouped(&mut h, &format!("b{i}"), "B");
        grouped(&mut h, &format!("c{i}"), "C");
    }
    let one = bodies(&h.delivered(ConnId(1))).join(" ");
    let two = bodies(&h.delivered(ConnId(2))).join(" ");
    assert_eq!(
        (one.as_str(), two.as_str()),
        ("a0 c0 a1 c1 a2 c2", "b0 b1 b2")
    );
    // The consumer of A and C goes: their next messages go to the other.
    h.state.handle(Op::Unregister { conn: ConnId(1) });
    grouped(&mut h, "a3", "A");
    grouped(&mut h, "c3", "C");
    assert_eq!(bodies(&h.delivered(ConnId(2))), ["a3", "c3"]);
}

#[test]
fn virtual_topic_queues_are_named_as_in_activemq() {
    use crate::router::virtual_topic_queue as takes;
    let topic = "VirtualTopic.Orders";
    assert!(takes("Consumer.A.VirtualTopic.Orders", topic));
    assert!(
        !takes("Consumer.A.B.VirtualTopic.Orders", topic),
        "one part"
    );
    assert!(!takes("Consumer..VirtualTopic.Orders", topic));
    assert!(!takes("Consumer.A.VirtualTopic.Orders.X", topic));
    assert!(!takes("Consumer.A.Orders", "Orders"), "not a virtual topic");
}

/// A scheduled message waits for its time, counted as the broker's, then
/// goes where it was sent.
#[test]
fn a_scheduled_message_waits_for_its_time() {
    let mut h = Harness::new(RouterLimits::default());
    h.connect(ConnId(1));
    h.subscribe(ConnId(1), "s", "/queue/q", AckMode::Auto, 10)
        .unwrap();
    let at = super::now_ms() + 60_000;
    let mut answer = h.send_with("/queue/q", "later", 0, |m| m.deliver_at = at);
    assert!(answer.try_recv().is_ok(), "taken at once");
    h.taken("/queue/q", "now");
    assert_eq!(bodies(&h.delivered(ConnId(1))), ["now"]);
    assert_eq!(h.stats().scheduled, 1);
    assert!(h.stats().memory.used > 0, "its bytes count meanwhile");
    h.later(Duration::from_secs(30));
    assert!(h.delivered(ConnId(1)).is_empty(), "not before its time");
    h.later(Duration::from_secs(61));
    assert_eq!(bodies(&h.delivered(ConnId(1))), ["later"]);
    let stats = h.stats();
    assert_eq!((stats.scheduled, stats.memory.used), (0, 0));
}

/// Consumers with selectors on one queue each get what they select, past
/// messages they do not; what nobody selects waits. A topic subscriber
/// with a selector gets only what it selects.
#[test]
fn selectors_pick_what_each_consumer_gets() {
    let mut h = Harness::new(RouterLimits::default());
    h.connect(ConnId(1));
    h.connect(ConnId(2));
    h.subscribe_selecting(
        ConnId(1),
        "r",
        "/queue/q",
        AckMode::Auto,
        100,
        Some("colour = 'red'"),
    )
    .unwrap();
    h.subscribe_selecting(
        ConnId(2),
        "b",
        "/queue/q",
        AckMode::Auto,
        100,
        Some("colour = 'blue'"),
    )
    .unwrap();
    for (body, colour) in [
        ("r1", "red"),
        ("g1", "green"),
        ("b1", "blue"),
        ("r2", "red"),
        ("b2", "blue"),
    ] {
        let headers = vec![("colour".to_owned(), colour.to_owned())];
        let mut answer = h.send_with("/queue/q", body, 0, |m| m.headers = headers);
        assert!(answer.try_recv().is_ok());
    }
    assert_eq!(bodies(&h.delivered(ConnId(1))), ["r1", "r2"]);
    assert_eq!(bodies(&h.delivered(ConnId(2))), ["b1", "b2"]);
    assert_eq!(
        h.stats().queues[0].pending,
        1,
        "green waits for its consumer"
    );
    h.connect(ConnId(3));
    h.subscribe(ConnId(3), "any", "/queue/q", AckMode::Auto, 100)
        .unwrap();
    assert_eq!(bodies(&h.delivered(ConnId(3))), ["g1"]);

    h.subscribe_selecting(
        ConnId(1),
        "t",
        "/topic/t",
        AckMode::Auto,
        100,
        Some("n > 1"),
    )
    .unwrap();
    for n in 0..4 {
        let headers = vec![("n".to_owned(), n.to_string())];
        let mut answer = h.send_with("/topic/t", &format!("t{n}"), 0, |m| m.headers = headers);
        assert!(answer.try_recv().is_ok());
    }
    assert_eq!(bodies(&h.delivered(ConnId(1))), ["t2", "t3"]);
}

/// A subscriber of a wildcard topic name gets what is published to each
/// topic it matches (`*` one level, `>` the rest), and nothing else; once
/// it goes, its wildcard is forgotten.
#[test]
fn wildcard_topic_subscribers_get_matching_topics() {
    let mut h = Harness::new(RouterLimits::default());
    h.connect(ConnId(1));
    h.subscribe(
        ConnId(1),
        "one",
        "/topic/sensors.*.temp",
        AckMode::Auto,
        100,
    )
    .unwrap();
    h.subscribe(ConnId(1), "all", "/topic/sensors.>", AckMode::Auto, 100)
        .unwrap();
    h.connect(ConnId(2));
    h.subscribe(
        ConnId(2),
        "exact",
        "/topic/sensors.hall.temp",
        AckMode::Auto,
        100,
    )
    .unwrap();
    h.taken("/topic/sensors.hall.temp", "t1");
    h.taken("/topic/sensors.hall.humidity", "h1");
    h.taken("/topic/other.hall.temp", "o1");
    let seen = h.delivered(ConnId(1));
    let mut got = bodies(&seen);
    got.sort();
    assert_eq!(
        got,
        ["h1", "t1", "t1"],
        "one copy per matching subscription"
    );
    assert_eq!(bodies(&h.delivered(ConnId(2))), ["t1"]);
    h.state.handle(Op::Unregister { conn: ConnId(1) });
    assert!(h.state.wildcards.is_empty());
}
