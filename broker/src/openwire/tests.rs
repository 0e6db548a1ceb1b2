use super::command::*;
use super::types::*;
use super::wire::WireError;

const MAX: usize = 1024 * 1024;

fn producer() -> ProducerId {
    ProducerId {
        connection: "ID:client-1".into(),
        value: 1,
        session: 1,
    }
}

fn consumer() -> ConsumerId {
    ConsumerId {
        connection: "ID:client-1".into(),
        session: 1,
        value: 2,
    }
}

fn queue() -> Destination {
    Destination {
        kind: DestinationKind::Queue,
        name: "ORDERS".into(),
    }
}

fn message() -> Message {
    Message {
        kind: kind::TEXT_MESSAGE,
        producer_id: Some(producer()),
        destination: Some(queue()),
        transaction_id: Some(TransactionId::Local {
            value: 3,
            connection: Some(ConnectionId("ID:client-1".into())),
        }),
        message_id: Some(MessageId {
            text_view: None,
            producer: Some(producer()),
            producer_sequence: 7,
            broker_sequence: 0,
        }),
        group_id: Some("g".into()),
        correlation_id: Some("c-1".into()),
        persistent: true,
        expiration: 1_900_000_000_000,
        priority: 7,
        reply_to: Some(Destination {
            kind: DestinationKind::TempQueue,
            name: "ID:client-1:1:1".into(),
        }),
        timestamp: 1_800_000_000_000,
        jms_type: Some("order".into()),
        content: Some(b"\0\0\0\x05hello".to_vec()),
        properties: Some(map_bytes(&[("n".into(), Value::Int(5))])),
        broker_path: Some(vec![BrokerId("b1".into())]),
        user_id: Some("app".into()),
        ..Message::default()
    }
}

/// One of every command the broker reads or writes.
fn samples() -> Vec<Command> {
    let with = |id, response_required, body| Command {
        id,
        response_required,
        body,
    };
    vec![
        Command::new(Body::WireFormatInfo(WireFormatInfo {
            version: 12,
            properties: Some(map_bytes(&[(
                "TightEncodingEnabled".into(),
                Value::Bool(false),
            )])),
        })),
        with(
            1,
            true,
            Body::ConnectionInfo(Box::new(ConnectionInfo {
                connection_id: Some(ConnectionId("ID:client-1".into())),
                client_id: Some("app".into()),
                password: Some("secret".into()),
                user: Some("app".into()),
                manageable: true,
                fault_tolerant: true,
                ..ConnectionInfo::default()
            })),
        ),
        with(
            2,
            false,
            Body::SessionInfo(SessionId {
                connection: "ID:client-1".into(),
                value: 1,
            }),
        ),
        with(
            3,
            true,
            Body::ConsumerInfo(Box::new(ConsumerInfo {
                consumer_id: Some(consumer()),
                destination: Some(queue()),
                prefetch: 1000,
                selector: Some("n > 3".into()),
                subscription_name: Some("durable".into()),
                priority: 0,
                network_consumer_path: Some(vec![consumer()]),
                ..ConsumerInfo::default()
            })),
        ),
        with(
            4,
            true,
            Body::ProducerInfo(Box::new(ProducerInfo {
                producer_id: Some(producer()),
                destination: Some(queue()),
                window_size: 1024 * 1024,
                ..ProducerInfo::default()
            })),
        ),
        with(5, true, Body::Message(Box::new(message()))),
        with(
            6,
            false,
            Body::MessageDispatch(Box::new(MessageDispatch {
                consumer_id: Some(consumer()),
                destination: Some(queue()),
                message: Some(Box::new(with(0, false, Body::Message(Box::new(message()))))),
                redelivery_counter: 1,
            })),
        ),
        with(
            7,
            false,
            Body::MessageAck(Box::new(MessageAck {
                destination: Some(queue()),
                transaction_id: None,
                consumer_id: Some(consumer()),
                ack_type: 2,
                first_message_id: message().message_id,
                last_message_id: message().message_id,
                message_count: 1,
                poison_cause: Some(Failure {
                    class: Some("java.lang.Throwable".into()),
                    message: Some("poison".into()),
                }),
            })),
        ),
        with(
            8,
            true,
            Body::TransactionInfo(TransactionInfo {
                connection_id: Some(ConnectionId("ID:client-1".into())),
                transaction_id: Some(TransactionId::Xa {
                    format: 1,
                    global: Some(vec![1, 2]),
                    branch: None,
                }),
                kind: 2,
            }),
        ),
        with(
            9,
            true,
            Body::DestinationInfo(DestinationInfo {
                connection_id: None,
                destination: Some(queue()),
                operation: 0,
                timeout: 0,
                broker_path: None,
            }),
        ),
        with(
            10,
            true,
            Body::RemoveInfo(RemoveInfo {
                object: Some(Removed::Consumer(consumer())),
                last_delivered_sequence: -1,
            }),
        ),
        with(
            11,
            true,
            Body::RemoveSubscriptionInfo(RemoveSubscriptionInfo {
                connection_id: None,
                subscription_name: Some("durable".into()),
                client_id: Some("app".into()),
            }),
        ),
        with(0, false, Body::KeepAliveInfo),
        with(12, true, Body::ShutdownInfo),
        with(0, false, Body::ControlCommand(Some("shutdown".into()))),
        with(
            0,
            false,
            Body::ConnectionControl(ConnectionControl {
                fault_tolerant: true,
                ..ConnectionControl::default()
            }),
        ),
        with(
            0,
            false,
            Body::ConsumerControl(ConsumerControl {
                destination: None,
                close: false,
                consumer_id: Some(consumer()),
                prefetch: 10,
                flush: false,
                start: true,
                stop: false,
            }),
        ),
        with(
            0,
            false,
            Body::ProducerAck(ProducerAck {
                producer_id: Some(producer()),
                size: 2048,
            }),
        ),
        with(
            13,
            false,
            Body::MessagePull(MessagePull {
                consumer_id: Some(consumer()),
                destination: Some(queue()),
                timeout: 0,
                correlation_id: None,
                message_id: None,
            }),
        ),
        with(0, false, Body::Response { correlation: 5 }),
        with(
            0,
            false,
            Body::ExceptionResponse {
                correlation: 4,
                error: Some(Failure {
                    class: Some("javax.jms.JMSSecurityException".into()),
                    message: Some("User name [x] or password is invalid.".into()),
                }),
            },
        ),
        with(
            0,
            false,
            Body::IntegerResponse {
                correlation: 1,
                result: 0,
            },
        ),
        with(
            0,
            false,
            Body::BrokerInfo(Box::new(BrokerInfo {
                broker_id: Some(BrokerId("ID:broker-1".into())),
                broker_url: Some("ssl://mq.localhost:61617".into()),
                peers: Some(Vec::new()),
                broker_name: Some("broker1".into()),
                slave: false,
                master: false,
                fault_tolerant: false,
                duplex: false,
                network: false,
                connection_id: 1,
                upload_url: None,
                network_properties: None,
            })),
        ),
    ]
}

#[test]
fn every_command_round_trips_through_a_frame() {
    let mut stream = Vec::new();
    for command in samples() {
        let mut one = Vec::new();
        encode(&command, &mut one);
        let (decoded, used) = decode_frame(&one, MAX).unwrap().unwrap();
        assert_eq!(used, one.len());
        assert_eq!(decoded, command);
        stream.extend_from_slice(&one);
    }
    // Back to back, read as they arrive.
    let mut at = 0;
    let mut count = 0;
    while let Some((_, used)) = decode_frame(&stream[at..], MAX).unwrap() {
        at += used;
        count += 1;
    }
    assert_eq!((at, count), (stream.len(), samples().len()));
}

#[test]
fn a_frame_cut_anywhere_waits_or_fails_cleanly() {
    for command in samples() {
        let mut bytes = Vec::new();
        encode(&command, &mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..cut], MAX), Ok(None));
            // The same bytes, claimed complete, are an error, not a panic.
            assert!(decode(&bytes[4..cut.max(4)]).is_err() || cut == bytes.len());
        }
    }
}

#[test]
fn bad_frames_are_refused_with_a_reason() {
    // Larger than allowed: refused from the prefix alone.
    assert!(matches!(
        decode_frame(&[0x7F, 0xFF, 0xFF, 0xFF], MAX),
        Err(WireError::TooLarge { .. })
    ));
    assert!(matches!(
        decode_frame(&[0xFF, 0xFF, 0xFF, 0xFF], MAX),
        Err(WireError::TooLarge { .. })
    ));
    // A WireFormatInfo from something that is not an OpenWire client.
    let mut bytes = vec![kind::WIREFORMAT_INFO];
    bytes.extend_from_slice(b"HTTP/1.1");
    bytes.extend_from_slice(&[0, 0, 0, 12, 0]);
    assert_eq!(decode(&bytes), Err(WireError::BadMagic));
    // Unknown types, and ids where a command belongs.
    assert_eq!(decode(&[99]), Err(WireError::UnknownType(99)));
    assert_eq!(
        decode(&[kind::CONNECTION_ID]),
        Err(WireError::UnknownType(120))
    );
    // Trailing bytes.
    let mut keep_alive = Vec::new();
    encode(&Command::new(Body::KeepAliveInfo), &mut keep_alive);
    let mut longer = keep_alive[4..].to_vec();
    longer.push(0);
    assert_eq!(decode(&longer), Err(WireError::Trailing(1)));
    // Nesting without end: dispatches in dispatches.
    let mut deep = Vec::new();
    for _ in 0..100 {
        deep.extend_from_slice(&[kind::MESSAGE_DISPATCH, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
    assert!(decode(&deep[..]).is_err());
}

#[test]
fn the_fuzz_seeds_are_valid_frames() {
    let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/openwire_decode");
    for entry in std::fs::read_dir(seeds).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (_, used) = decode_frame(&bytes, MAX)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .unwrap_or_else(|| panic!("{}: not a whole frame", path.display()));
        assert_eq!(used, bytes.len(), "{}", path.display());
    }
}
