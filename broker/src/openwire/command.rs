//! OpenWire commands in the loose encoding (no tight bit-packing, no
//! marshalling cache: the broker's WireFormatInfo turns both off, and a
//! client takes the AND of both sides' options), each in a frame with a
//! four-byte size prefix. Sans-IO: bytes in, commands out, and back.

use super::types::{
    kind, BrokerId, ConnectionId, ConsumerId, Destination, MessageId, ProducerId, SessionId,
    TransactionId,
};
use super::wire::{Reader, Result, WireError, Writer, MAX_DEPTH};

/// The magic at the start of a WireFormatInfo.
pub const MAGIC: &[u8; 8] = b"ActiveMQ";

/// A command with the header every command but WireFormatInfo has.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: i32,
    pub response_required: bool,
    pub body: Body,
}

impl Command {
    pub fn new(body: Body) -> Self {
        Self {
            id: 0,
            response_required: false,
            body,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    WireFormatInfo(WireFormatInfo),
    BrokerInfo(Box<BrokerInfo>),
    ConnectionInfo(Box<ConnectionInfo>),
    SessionInfo(SessionId),
    ConsumerInfo(Box<ConsumerInfo>),
    ProducerInfo(Box<ProducerInfo>),
    TransactionInfo(TransactionInfo),
    DestinationInfo(DestinationInfo),
    RemoveSubscriptionInfo(RemoveSubscriptionInfo),
    KeepAliveInfo,
    ShutdownInfo,
    RemoveInfo(RemoveInfo),
    ControlCommand(Option<String>),
    FlushCommand,
    ConnectionError(ConnectionError),
    ConsumerControl(ConsumerControl),
    ConnectionControl(ConnectionControl),
    ProducerAck(ProducerAck),
    MessagePull(MessagePull),
    MessageDispatch(Box<MessageDispatch>),
    MessageAck(Box<MessageAck>),
    Message(Box<Message>),
    Response {
        correlation: i32,
    },
    ExceptionResponse {
        correlation: i32,
        error: Option<Failure>,
    },
    DataResponse {
        correlation: i32,
        data: Option<Box<Command>>,
    },
    IntegerResponse {
        correlation: i32,
        result: i32,
    },
}

/// What each side prefers; the connection uses the AND of both (the
/// lower version, the smaller frame size).
#[derive(Debug, Clone, PartialEq)]
pub struct WireFormatInfo {
    pub version: i32,
    /// The options map, marshalled (see [`super::types::read_map`]).
    pub properties: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerInfo {
    pub broker_id: Option<BrokerId>,
    pub broker_url: Option<String>,
    pub peers: Option<Vec<Self>>,
    pub broker_name: Option<String>,
    pub slave: bool,
    pub master: bool,
    pub fault_tolerant: bool,
    pub duplex: bool,
    pub network: bool,
    pub connection_id: i64,
    pub upload_url: Option<String>,
    pub network_properties: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnectionInfo {
    pub connection_id: Option<ConnectionId>,
    pub client_id: Option<String>,
    pub password: Option<String>,
    pub user: Option<String>,
    pub broker_path: Option<Vec<BrokerId>>,
    pub broker_master_connector: bool,
    pub manageable: bool,
    pub client_master: bool,
    pub fault_tolerant: bool,
    pub failover_reconnect: bool,
    pub client_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsumerInfo {
    pub consumer_id: Option<ConsumerId>,
    pub browser: bool,
    pub destination: Option<Destination>,
    pub prefetch: i32,
    pub max_pending: i32,
    pub dispatch_async: bool,
    pub selector: Option<String>,
    pub client_id: Option<String>,
    pub subscription_name: Option<String>,
    pub no_local: bool,
    pub exclusive: bool,
    pub retroactive: bool,
    pub priority: u8,
    pub broker_path: Option<Vec<BrokerId>>,
    /// A network consumer's extra filter: present only between brokers.
    pub additional_predicate: Option<Box<Command>>,
    pub network_subscription: bool,
    pub optimized_acknowledge: bool,
    pub no_range_acks: bool,
    pub network_consumer_path: Option<Vec<ConsumerId>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProducerInfo {
    pub producer_id: Option<ProducerId>,
    pub destination: Option<Destination>,
    pub broker_path: Option<Vec<BrokerId>>,
    pub dispatch_async: bool,
    pub window_size: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransactionInfo {
    pub connection_id: Option<ConnectionId>,
    pub transaction_id: Option<TransactionId>,
    /// BEGIN 0, PREPARE 1, COMMIT_ONE_PHASE 2, COMMIT_TWO_PHASE 3,
    /// ROLLBACK 4, RECOVER 5, FORGET 6, END 7.
    pub kind: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DestinationInfo {
    pub connection_id: Option<ConnectionId>,
    pub destination: Option<Destination>,
    /// ADD 0, REMOVE 1.
    pub operation: u8,
    pub timeout: i64,
    pub broker_path: Option<Vec<BrokerId>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoveSubscriptionInfo {
    pub connection_id: Option<ConnectionId>,
    pub subscription_name: Option<String>,
    pub client_id: Option<String>,
}

/// What a RemoveInfo removes.
#[derive(Debug, Clone, PartialEq)]
pub enum Removed {
    Connection(ConnectionId),
    Session(SessionId),
    Consumer(ConsumerId),
    Producer(ProducerId),
    Other(u8),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoveInfo {
    pub object: Option<Removed>,
    pub last_delivered_sequence: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionError {
    pub error: Option<Failure>,
    pub connection_id: Option<ConnectionId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerControl {
    pub destination: Option<Destination>,
    pub close: bool,
    pub consumer_id: Option<ConsumerId>,
    pub prefetch: i32,
    pub flush: bool,
    pub start: bool,
    pub stop: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnectionControl {
    pub close: bool,
    pub exit: bool,
    pub fault_tolerant: bool,
    pub resume: bool,
    pub suspend: bool,
    pub connected_brokers: Option<String>,
    pub reconnect_to: Option<String>,
    pub rebalance: bool,
    pub token: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProducerAck {
    pub producer_id: Option<ProducerId>,
    pub size: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessagePull {
    pub consumer_id: Option<ConsumerId>,
    pub destination: Option<Destination>,
    pub timeout: i64,
    pub correlation_id: Option<String>,
    pub message_id: Option<MessageId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageDispatch {
    pub consumer_id: Option<ConsumerId>,
    pub destination: Option<Destination>,
    pub message: Option<Box<Command>>,
    pub redelivery_counter: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageAck {
    pub destination: Option<Destination>,
    pub transaction_id: Option<TransactionId>,
    pub consumer_id: Option<ConsumerId>,
    /// DELIVERED 0, STANDARD 2, POISON 1, REDELIVERED 3, INDIVIDUAL 4,
    /// UNMATCHED 5, EXPIRED 6.
    pub ack_type: u8,
    pub first_message_id: Option<MessageId>,
    pub last_message_id: Option<MessageId>,
    pub message_count: i32,
    pub poison_cause: Option<Failure>,
}

/// An exception as OpenWire carries it (without its stack trace, which
/// the broker's WireFormatInfo turns off).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: Option<String>,
    pub message: Option<String>,
}

/// A JMS message. `kind` says which (plain, text, bytes, map, object,
/// stream); `content` and `properties` are carried as marshalled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub kind: u8,
    pub producer_id: Option<ProducerId>,
    pub destination: Option<Destination>,
    pub transaction_id: Option<TransactionId>,
    pub original_destination: Option<Destination>,
    pub message_id: Option<MessageId>,
    pub original_transaction_id: Option<TransactionId>,
    pub group_id: Option<String>,
    pub group_sequence: i32,
    pub correlation_id: Option<String>,
    pub persistent: bool,
    pub expiration: i64,
    pub priority: u8,
    pub reply_to: Option<Destination>,
    pub timestamp: i64,
    pub jms_type: Option<String>,
    pub content: Option<Vec<u8>>,
    pub properties: Option<Vec<u8>>,
    pub data_structure: Option<Box<Command>>,
    pub target_consumer_id: Option<ConsumerId>,
    pub compressed: bool,
    pub redelivery_counter: i32,
    pub broker_path: Option<Vec<BrokerId>>,
    pub arrival: i64,
    pub user_id: Option<String>,
    pub received_by_bridge: bool,
    pub droppable: bool,
    pub cluster: Option<Vec<BrokerId>>,
    pub broker_in_time: i64,
    pub broker_out_time: i64,
    pub group_first_for_consumer: bool,
}

fn is_message(kind: u8) -> bool {
    (kind::MESSAGE..=kind::TEXT_MESSAGE).contains(&kind) || kind == 29
}

/// Splits complete frames off the front of `buf`: `Ok(Some((command,
/// used)))` for one, `Ok(None)` until one has fully arrived. A size prefix
/// above `max` is an error before any of it is read.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(Command, usize)>> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let size_ok = usize::try_from(size).ok().filter(|s| *s <= max && *s > 0);
    let Some(size) = size_ok else {
        return Err(WireError::TooLarge {
            size: i64::from(size),
            max,
        });
    };
    let Some(frame) = buf.get(4..4 + size) else {
        return Ok(None);
    };
    let command = decode(frame)?;
    Ok(Some((command, 4 + size)))
}

/// One command from the bytes of one frame (after its size prefix).
pub fn decode(frame: &[u8]) -> Result<Command> {
    let mut r = Reader::new(frame);
    let kind = r.u8()?;
    let command = read_command(&mut r, kind)?;
    r.finish()?;
    Ok(command)
}

/// Appends `command` as a frame (size prefix, type, fields).
pub fn encode(command: &Command, out: &mut Vec<u8>) {
    let mut w = Writer {
        out: std::mem::take(out),
    };
    let start = w.out.len();
    w.i32(0);
    write_command(&mut w, command);
    let size = i32::try_from(w.out.len() - start - 4).unwrap_or(i32::MAX);
    w.out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    *out = w.out;
}

fn failure(r: &mut Reader<'_>) -> Result<Option<Failure>> {
    if !r.bool()? {
        return Ok(None);
    }
    Ok(Some(Failure {
        class: r.string()?,
        message: r.string()?,
    }))
}

fn write_failure(w: &mut Writer, f: Option<&Failure>) {
    w.bool(f.is_some());
    if let Some(f) = f {
        w.string(f.class.as_deref());
        w.string(f.message.as_deref());
    }
}

/// A nested command (a message in a dispatch, a response's data).
fn nested_command(r: &mut Reader<'_>) -> Result<Option<Box<Command>>> {
    if !r.bool()? {
        return Ok(None);
    }
    if r.depth >= MAX_DEPTH {
        return Err(WireError::TooDeep);
    }
    let kind = r.u8()?;
    r.depth += 1;
    let command = read_command(r, kind);
    r.depth -= 1;
    command.map(|c| Some(Box::new(c)))
}

fn write_nested_command(w: &mut Writer, c: Option<&Command>) {
    w.bool(c.is_some());
    if let Some(c) = c {
        write_command(w, c);
    }
}

fn read_command(r: &mut Reader<'_>, kind: u8) -> Result<Command> {
    if kind == kind::WIREFORMAT_INFO {
        let magic = r.raw(8)?;
        if magic != MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = r.i32()?;
        let properties = r.bytes("the wire format's options")?;
        return Ok(Command::new(Body::WireFormatInfo(WireFormatInfo {
            version,
            properties,
        })));
    }
    // Ids, destinations and transaction ids are not commands.
    if !matches!(kind, 2..=12 | 14..=34) {
        return Err(WireError::UnknownType(kind));
    }
    let id = r.i32()?;
    let response_required = r.bool()?;
    let body = match kind {
        kind::BROKER_INFO => Body::BrokerInfo(Box::new(broker_info(r)?)),
        kind::CONNECTION_INFO => Body::ConnectionInfo(Box::new(ConnectionInfo {
            connection_id: ConnectionId::read(r)?,
            client_id: r.string()?,
            password: r.string()?,
            user: r.string()?,
            broker_path: BrokerId::read_array(r)?,
            broker_master_connector: r.bool()?,
            manageable: r.bool()?,
            client_master: r.bool()?,
            fault_tolerant: r.bool()?,
            failover_reconnect: r.bool()?,
            client_ip: r.string()?,
        })),
        kind::SESSION_INFO => Body::SessionInfo(SessionId::read(r)?.unwrap_or(SessionId {
            connection: String::new(),
            value: 0,
        })),
        kind::CONSUMER_INFO => Body::ConsumerInfo(Box::new(ConsumerInfo {
            consumer_id: ConsumerId::read(r)?,
            browser: r.bool()?,
            destination: Destination::read(r)?,
            prefetch: r.i32()?,
            max_pending: r.i32()?,
            dispatch_async: r.bool()?,
            selector: r.string()?,
            client_id: r.string()?,
            subscription_name: r.string()?,
            no_local: r.bool()?,
            exclusive: r.bool()?,
            retroactive: r.bool()?,
            priority: r.u8()?,
            broker_path: BrokerId::read_array(r)?,
            additional_predicate: nested_command_or_filter(r)?,
            network_subscription: r.bool()?,
            optimized_acknowledge: r.bool()?,
            no_range_acks: r.bool()?,
            network_consumer_path: consumer_id_array(r)?,
        })),
        kind::PRODUCER_INFO => Body::ProducerInfo(Box::new(ProducerInfo {
            producer_id: ProducerId::read(r)?,
            destination: Destination::read(r)?,
            broker_path: BrokerId::read_array(r)?,
            dispatch_async: r.bool()?,
            window_size: r.i32()?,
        })),
        kind::TRANSACTION_INFO => Body::TransactionInfo(TransactionInfo {
            connection_id: ConnectionId::read(r)?,
            transaction_id: TransactionId::read(r)?,
            kind: r.u8()?,
        }),
        kind::DESTINATION_INFO => Body::DestinationInfo(DestinationInfo {
            connection_id: ConnectionId::read(r)?,
            destination: Destination::read(r)?,
            operation: r.u8()?,
            timeout: r.i64()?,
            broker_path: BrokerId::read_array(r)?,
        }),
        kind::REMOVE_SUBSCRIPTION_INFO => Body::RemoveSubscriptionInfo(RemoveSubscriptionInfo {
            connection_id: ConnectionId::read(r)?,
            subscription_name: r.string()?,
            client_id: r.string()?,
        }),
        kind::KEEP_ALIVE_INFO => Body::KeepAliveInfo,
        kind::SHUTDOWN_INFO => Body::ShutdownInfo,
        kind::REMOVE_INFO => Body::RemoveInfo(RemoveInfo {
            object: removed(r)?,
            last_delivered_sequence: r.i64()?,
        }),
        kind::CONTROL_COMMAND => Body::ControlCommand(r.string()?),
        kind::FLUSH_COMMAND => Body::FlushCommand,
        kind::CONNECTION_ERROR => Body::ConnectionError(ConnectionError {
            error: failure(r)?,
            connection_id: ConnectionId::read(r)?,
        }),
        kind::CONSUMER_CONTROL => Body::ConsumerControl(ConsumerControl {
            destination: Destination::read(r)?,
            close: r.bool()?,
            consumer_id: ConsumerId::read(r)?,
            prefetch: r.i32()?,
            flush: r.bool()?,
            start: r.bool()?,
            stop: r.bool()?,
        }),
        kind::CONNECTION_CONTROL => Body::ConnectionControl(ConnectionControl {
            close: r.bool()?,
            exit: r.bool()?,
            fault_tolerant: r.bool()?,
            resume: r.bool()?,
            suspend: r.bool()?,
            connected_brokers: r.string()?,
            reconnect_to: r.string()?,
            rebalance: r.bool()?,
            token: r.bytes("a connection control token")?,
        }),
        kind::PRODUCER_ACK => Body::ProducerAck(ProducerAck {
            producer_id: ProducerId::read(r)?,
            size: r.i32()?,
        }),
        kind::MESSAGE_PULL => Body::MessagePull(MessagePull {
            consumer_id: ConsumerId::read(r)?,
            destination: Destination::read(r)?,
            timeout: r.i64()?,
            correlation_id: r.string()?,
            message_id: MessageId::read(r)?,
        }),
        kind::MESSAGE_DISPATCH => Body::MessageDispatch(Box::new(MessageDispatch {
            consumer_id: ConsumerId::read(r)?,
            destination: Destination::read(r)?,
            message: nested_command(r)?,
            redelivery_counter: r.i32()?,
        })),
        kind::MESSAGE_ACK => Body::MessageAck(Box::new(MessageAck {
            destination: Destination::read(r)?,
            transaction_id: TransactionId::read(r)?,
            consumer_id: ConsumerId::read(r)?,
            ack_type: r.u8()?,
            first_message_id: MessageId::read(r)?,
            last_message_id: MessageId::read(r)?,
            message_count: r.i32()?,
            poison_cause: failure(r)?,
        })),
        k if is_message(k) => Body::Message(Box::new(message(r, k)?)),
        kind::RESPONSE => Body::Response {
            correlation: r.i32()?,
        },
        kind::EXCEPTION_RESPONSE => Body::ExceptionResponse {
            correlation: r.i32()?,
            error: failure(r)?,
        },
        kind::DATA_RESPONSE => Body::DataResponse {
            correlation: r.i32()?,
            data: nested_command(r)?,
        },
        kind::INTEGER_RESPONSE => Body::IntegerResponse {
            correlation: r.i32()?,
            result: r.i32()?,
        },
        other => return Err(WireError::UnknownType(other)),
    };
    Ok(Command {
        id,
        response_required,
        body,
    })
}

/// A ConsumerInfo's additional predicate: only network bridges send one
/// (a NetworkBridgeFilter, type 91), which this broker does not follow.
fn nested_command_or_filter(r: &mut Reader<'_>) -> Result<Option<Box<Command>>> {
    if !r.bool()? {
        return Ok(None);
    }
    let kind = r.u8()?;
    if kind == 91 {
        // NetworkBridgeFilter: networkBrokerId (cached BrokerId), networkTTL
        // (int), consumerTTL (int).
        let _ = BrokerId::read(r)?;
        let _ = r.i32()?;
        let _ = r.i32()?;
        return Ok(None);
    }
    Err(WireError::Unexpected {
        expected: "a network bridge filter",
        found: kind,
    })
}

fn consumer_id_array(r: &mut Reader<'_>) -> Result<Option<Vec<ConsumerId>>> {
    if !r.bool()? {
        return Ok(None);
    }
    let count = r.i16()?;
    let n = r.length("a consumer path", i64::from(count), 1)?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(id) = ConsumerId::read(r)? {
            ids.push(id);
        }
    }
    Ok(Some(ids))
}

fn write_consumer_id_array(w: &mut Writer, ids: Option<&[ConsumerId]>) {
    w.bool(ids.is_some());
    if let Some(ids) = ids {
        w.i16(i16::try_from(ids.len()).unwrap_or(i16::MAX));
        for id in ids.iter().take(i16::MAX as usize) {
            ConsumerId::write(w, Some(id));
        }
    }
}

fn removed(r: &mut Reader<'_>) -> Result<Option<Removed>> {
    if !r.bool()? {
        return Ok(None);
    }
    Ok(Some(match r.u8()? {
        kind::CONNECTION_ID => Removed::Connection(ConnectionId(r.string()?.unwrap_or_default())),
        kind::SESSION_ID => Removed::Session(SessionId {
            connection: r.string()?.unwrap_or_default(),
            value: r.i64()?,
        }),
        kind::CONSUMER_ID => Removed::Consumer(ConsumerId::read_fields(r)?),
        kind::PRODUCER_ID => Removed::Producer(ProducerId::read_fields(r)?),
        other => {
            return Err(WireError::Unexpected {
                expected: "the id of what to remove",
                found: other,
            })
        }
    }))
}

fn broker_info(r: &mut Reader<'_>) -> Result<BrokerInfo> {
    let broker_id = BrokerId::read(r)?;
    let broker_url = r.string()?;
    let peers = if r.bool()? {
        let count = r.i16()?;
        let n = r.length("peer brokers", i64::from(count), 1)?;
        if r.depth >= MAX_DEPTH {
            return Err(WireError::TooDeep);
        }
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            if r.bool()? {
                let kind = r.u8()?;
                if kind != kind::BROKER_INFO {
                    return Err(WireError::Unexpected {
                        expected: "a BrokerInfo",
                        found: kind,
                    });
                }
                r.depth += 1;
                let _id = r.i32()?;
                let _response = r.bool()?;
                let peer = broker_info(r);
                r.depth -= 1;
                peers.push(peer?);
            }
        }
        Some(peers)
    } else {
        None
    };
    Ok(BrokerInfo {
        broker_id,
        broker_url,
        peers,
        broker_name: r.string()?,
        slave: r.bool()?,
        master: r.bool()?,
        fault_tolerant: r.bool()?,
        duplex: r.bool()?,
        network: r.bool()?,
        connection_id: r.i64()?,
        upload_url: r.string()?,
        network_properties: r.string()?,
    })
}

fn message(r: &mut Reader<'_>, kind: u8) -> Result<Message> {
    let mut m = Message {
        kind,
        producer_id: ProducerId::read(r)?,
        destination: Destination::read(r)?,
        transaction_id: TransactionId::read(r)?,
        original_destination: Destination::read(r)?,
        message_id: MessageId::read(r)?,
        original_transaction_id: TransactionId::read(r)?,
        group_id: r.string()?,
        group_sequence: r.i32()?,
        correlation_id: r.string()?,
        persistent: r.bool()?,
        expiration: r.i64()?,
        priority: r.u8()?,
        reply_to: Destination::read(r)?,
        timestamp: r.i64()?,
        jms_type: r.string()?,
        content: r.bytes("a message body")?,
        properties: r.bytes("message properties")?,
        data_structure: nested_command(r)?,
        target_consumer_id: ConsumerId::read(r)?,
        compressed: r.bool()?,
        redelivery_counter: r.i32()?,
        broker_path: BrokerId::read_array(r)?,
        arrival: r.i64()?,
        user_id: r.string()?,
        received_by_bridge: r.bool()?,
        droppable: r.bool()?,
        cluster: BrokerId::read_array(r)?,
        broker_in_time: r.i64()?,
        broker_out_time: r.i64()?,
        group_first_for_consumer: false,
    };
    m.group_first_for_consumer = r.bool()?;
    if kind == 29 {
        // A BlobMessage's URL, MIME type and deletion flag.
        let _ = r.string()?;
        let _ = r.string()?;
        let _ = r.bool()?;
    }
    Ok(m)
}

fn write_command(w: &mut Writer, c: &Command) {
    if let Body::WireFormatInfo(info) = &c.body {
        w.u8(kind::WIREFORMAT_INFO);
        w.raw(MAGIC);
        w.i32(info.version);
        w.bytes(info.properties.as_deref());
        return;
    }
    w.u8(body_kind(&c.body));
    w.i32(c.id);
    w.bool(c.response_required);
    match &c.body {
        Body::WireFormatInfo(_) => {}
        Body::BrokerInfo(b) => write_broker_info(w, b),
        Body::ConnectionInfo(i) => {
            ConnectionId::write(w, i.connection_id.as_ref());
            w.string(i.client_id.as_deref());
            w.string(i.password.as_deref());
            w.string(i.user.as_deref());
            BrokerId::write_array(w, i.broker_path.as_deref());
            w.bool(i.broker_master_connector);
            w.bool(i.manageable);
            w.bool(i.client_master);
            w.bool(i.fault_tolerant);
            w.bool(i.failover_reconnect);
            w.string(i.client_ip.as_deref());
        }
        Body::SessionInfo(s) => SessionId::write(w, Some(s)),
        Body::ConsumerInfo(i) => {
            ConsumerId::write(w, i.consumer_id.as_ref());
            w.bool(i.browser);
            Destination::write(w, i.destination.as_ref());
            w.i32(i.prefetch);
            w.i32(i.max_pending);
            w.bool(i.dispatch_async);
            w.string(i.selector.as_deref());
            w.string(i.client_id.as_deref());
            w.string(i.subscription_name.as_deref());
            w.bool(i.no_local);
            w.bool(i.exclusive);
            w.bool(i.retroactive);
            w.u8(i.priority);
            BrokerId::write_array(w, i.broker_path.as_deref());
            // The additional predicate is never sent.
            w.bool(false);
            w.bool(i.network_subscription);
            w.bool(i.optimized_acknowledge);
            w.bool(i.no_range_acks);
            write_consumer_id_array(w, i.network_consumer_path.as_deref());
        }
        Body::ProducerInfo(i) => {
            ProducerId::write(w, i.producer_id.as_ref());
            Destination::write(w, i.destination.as_ref());
            BrokerId::write_array(w, i.broker_path.as_deref());
            w.bool(i.dispatch_async);
            w.i32(i.window_size);
        }
        Body::TransactionInfo(t) => {
            ConnectionId::write(w, t.connection_id.as_ref());
            TransactionId::write(w, t.transaction_id.as_ref());
            w.u8(t.kind);
        }
        Body::DestinationInfo(d) => {
            ConnectionId::write(w, d.connection_id.as_ref());
            Destination::write(w, d.destination.as_ref());
            w.u8(d.operation);
            w.i64(d.timeout);
            BrokerId::write_array(w, d.broker_path.as_deref());
        }
        Body::RemoveSubscriptionInfo(s) => {
            ConnectionId::write(w, s.connection_id.as_ref());
            w.string(s.subscription_name.as_deref());
            w.string(s.client_id.as_deref());
        }
        Body::KeepAliveInfo | Body::ShutdownInfo | Body::FlushCommand => {}
        Body::RemoveInfo(i) => {
            w.bool(i.object.is_some());
            match &i.object {
                None => {}
                Some(Removed::Connection(c)) => {
                    w.u8(kind::CONNECTION_ID);
                    w.string(Some(&c.0));
                }
                Some(Removed::Session(s)) => {
                    w.u8(kind::SESSION_ID);
                    w.string(Some(&s.connection));
                    w.i64(s.value);
                }
                Some(Removed::Consumer(c)) => {
                    w.u8(kind::CONSUMER_ID);
                    ConsumerId::write_fields(w, c);
                }
                Some(Removed::Producer(p)) => {
                    w.u8(kind::PRODUCER_ID);
                    ProducerId::write_fields(w, p);
                }
                Some(Removed::Other(k)) => w.u8(*k),
            }
            w.i64(i.last_delivered_sequence);
        }
        Body::ControlCommand(text) => w.string(text.as_deref()),
        Body::ConnectionError(e) => {
            write_failure(w, e.error.as_ref());
            ConnectionId::write(w, e.connection_id.as_ref());
        }
        Body::ConsumerControl(c) => {
            Destination::write(w, c.destination.as_ref());
            w.bool(c.close);
            ConsumerId::write(w, c.consumer_id.as_ref());
            w.i32(c.prefetch);
            w.bool(c.flush);
            w.bool(c.start);
            w.bool(c.stop);
        }
        Body::ConnectionControl(c) => {
            w.bool(c.close);
            w.bool(c.exit);
            w.bool(c.fault_tolerant);
            w.bool(c.resume);
            w.bool(c.suspend);
            w.string(c.connected_brokers.as_deref());
            w.string(c.reconnect_to.as_deref());
            w.bool(c.rebalance);
            w.bytes(c.token.as_deref());
        }
        Body::ProducerAck(a) => {
            ProducerId::write(w, a.producer_id.as_ref());
            w.i32(a.size);
        }
        Body::MessagePull(p) => {
            ConsumerId::write(w, p.consumer_id.as_ref());
            Destination::write(w, p.destination.as_ref());
            w.i64(p.timeout);
            w.string(p.correlation_id.as_deref());
            MessageId::write(w, p.message_id.as_ref());
        }
        Body::MessageDispatch(d) => {
            ConsumerId::write(w, d.consumer_id.as_ref());
            Destination::write(w, d.destination.as_ref());
            write_nested_command(w, d.message.as_deref());
            w.i32(d.redelivery_counter);
        }
        Body::MessageAck(a) => {
            Destination::write(w, a.destination.as_ref());
            TransactionId::write(w, a.transaction_id.as_ref());
            ConsumerId::write(w, a.consumer_id.as_ref());
            w.u8(a.ack_type);
            MessageId::write(w, a.first_message_id.as_ref());
            MessageId::write(w, a.last_message_id.as_ref());
            w.i32(a.message_count);
            write_failure(w, a.poison_cause.as_ref());
        }
        Body::Message(m) => write_message(w, m),
        Body::Response { correlation } => w.i32(*correlation),
        Body::ExceptionResponse { correlation, error } => {
            w.i32(*correlation);
            write_failure(w, error.as_ref());
        }
        Body::DataResponse { correlation, data } => {
            w.i32(*correlation);
            write_nested_command(w, data.as_deref());
        }
        Body::IntegerResponse {
            correlation,
            result,
        } => {
            w.i32(*correlation);
            w.i32(*result);
        }
    }
}

impl Body {
    /// Its data structure type (ActiveMQ's `CommandTypes`).
    pub fn kind(&self) -> u8 {
        body_kind(self)
    }
}

fn body_kind(body: &Body) -> u8 {
    match body {
        Body::WireFormatInfo(_) => kind::WIREFORMAT_INFO,
        Body::BrokerInfo(_) => kind::BROKER_INFO,
        Body::ConnectionInfo(_) => kind::CONNECTION_INFO,
        Body::SessionInfo(_) => kind::SESSION_INFO,
        Body::ConsumerInfo(_) => kind::CONSUMER_INFO,
        Body::ProducerInfo(_) => kind::PRODUCER_INFO,
        Body::TransactionInfo(_) => kind::TRANSACTION_INFO,
        Body::DestinationInfo(_) => kind::DESTINATION_INFO,
        Body::RemoveSubscriptionInfo(_) => kind::REMOVE_SUBSCRIPTION_INFO,
        Body::KeepAliveInfo => kind::KEEP_ALIVE_INFO,
        Body::ShutdownInfo => kind::SHUTDOWN_INFO,
        Body::RemoveInfo(_) => kind::REMOVE_INFO,
        Body::ControlCommand(_) => kind::CONTROL_COMMAND,
        Body::FlushCommand => kind::FLUSH_COMMAND,
        Body::ConnectionError(_) => kind::CONNECTION_ERROR,
        Body::ConsumerControl(_) => kind::CONSUMER_CONTROL,
        Body::ConnectionControl(_) => kind::CONNECTION_CONTROL,
        Body::ProducerAck(_) => kind::PRODUCER_ACK,
        Body::MessagePull(_) => kind::MESSAGE_PULL,
        Body::MessageDispatch(_) => kind::MESSAGE_DISPATCH,
        Body::MessageAck(_) => kind::MESSAGE_ACK,
        Body::Message(m) => m.kind,
        Body::Response { .. } => kind::RESPONSE,
        Body::ExceptionResponse { .. } => kind::EXCEPTION_RESPONSE,
        Body::DataResponse { .. } => kind::DATA_RESPONSE,
        Body::IntegerResponse { .. } => kind::INTEGER_RESPONSE,
    }
}

fn write_broker_info(w: &mut Writer, b: &BrokerInfo) {
    BrokerId::write(w, b.broker_id.as_ref());
    w.string(b.broker_url.as_deref());
    w.bool(b.peers.is_some());
    if let Some(peers) = &b.peers {
        w.i16(i16::try_from(peers.len()).unwrap_or(i16::MAX));
        for peer in peers.iter().take(i16::MAX as usize) {
            w.bool(true);
            w.u8(kind::BROKER_INFO);
            w.i32(0);
            w.bool(false);
            write_broker_info(w, peer);
        }
    }
    w.string(b.broker_name.as_deref());
    w.bool(b.slave);
    w.bool(b.master);
    w.bool(b.fault_tolerant);
    w.bool(b.duplex);
    w.bool(b.network);
    w.i64(b.connection_id);
    w.string(b.upload_url.as_deref());
    w.string(b.network_properties.as_deref());
}

fn write_message(w: &mut Writer, m: &Message) {
    ProducerId::write(w, m.producer_id.as_ref());
    Destination::write(w, m.destination.as_ref());
    TransactionId::write(w, m.transaction_id.as_ref());
    Destination::write(w, m.original_destination.as_ref());
    MessageId::write(w, m.message_id.as_ref());
    TransactionId::write(w, m.original_transaction_id.as_ref());
    w.string(m.group_id.as_deref());
    w.i32(m.group_sequence);
    w.string(m.correlation_id.as_deref());
    w.bool(m.persistent);
    w.i64(m.expiration);
    w.u8(m.priority);
    Destination::write(w, m.reply_to.as_ref());
    w.i64(m.timestamp);
    w.string(m.jms_type.as_deref());
    w.bytes(m.content.as_deref());
    w.bytes(m.properties.as_deref());
    write_nested_command(w, m.data_structure.as_deref());
    ConsumerId::write(w, m.target_consumer_id.as_ref());
    w.bool(m.compressed);
    w.i32(m.redelivery_counter);
    BrokerId::write_array(w, m.broker_path.as_deref());
    w.i64(m.arrival);
    w.string(m.user_id.as_deref());
    w.bool(m.received_by_bridge);
    w.bool(m.droppable);
    BrokerId::write_array(w, m.cluster.as_deref());
    w.i64(m.broker_in_time);
    w.i64(m.broker_out_time);
    w.bool(m.group_first_for_consumer);
    if m.kind == 29 {
        w.string(None);
        w.string(None);
        w.bool(false);
    }
}
