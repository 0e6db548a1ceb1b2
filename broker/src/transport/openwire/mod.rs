//! An OpenWire client connection (ActiveMQ's JMS client, its `producer`
//! and `consumer` commands): the wire format exchange, the login in
//! ConnectionInfo, then sessions, producers and consumers on the same core
//! as STOMP — a message goes through the intake and the pipeline, a
//! consumer is a router subscription whose deliveries go out as
//! MessageDispatch, and acknowledgements name the broker's sequence.
//!
//! The broker sends its WireFormatInfo first: loose encoding, no cache,
//! no stack traces, its maximum frame size and a 30 s inactivity
//! duration; the client uses the AND of both. A KeepAliveInfo goes out
//! when nothing else did for a third of the inactivity duration, and a
//! client silent for twice that is dropped.

mod advisory;
pub(crate) mod convert;

pub(crate) use advisory::announce as announce_temporary;
pub(crate) use convert::MESSAGE_ID_HEADER as JMS_MESSAGE_ID_HEADER;
mod delivery;
pub(crate) mod handshake;
mod session;
mod transactions;

use delivery::OpenWireEncoder;
use handshake::{handshake, wire_format, Frames};
use session::Session;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::pipeline::{run_pipeline, Pipeline, PIPELINE_BYTES};
use super::writer::{self, Outgoing};
use crate::openwire::command::{ConnectionError, Failure};
use crate::openwire::{encode, Body, Command};
use crate::router::{ConnectionInfo, Outbox};
use crate::shared::BrokerCore;

/// The OpenWire version offered (ActiveMQ 5.x clients speak 12).
const VERSION: i32 = 12;
/// How long a side may be silent, as offered (ActiveMQ's default).
const INACTIVITY: Duration = Duration::from_secs(30);
/// Deliveries a connection may have queued for writing.
const OUTBOX: usize = 256;

fn frame(command: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode(command, &mut out);
    out
}

fn response(correlation: i32) -> Vec<u8> {
    frame(&Command::new(Body::Response { correlation }))
}

fn exception(correlation: i32, class: &str, message: impl Into<String>) -> Vec<u8> {
    frame(&Command::new(Body::ExceptionResponse {
        correlation,
        error: Some(Failure {
            class: Some(class.to_owned()),
            message: Some(message.into()),
        }),
    }))
}

/// Hands a network connection from another broker (ActiveMQ's network
/// connector) to the network, once its user may open bridges.
#[allow(clippy::too_many_arguments)]
async fn bridge<R, W>(
    core: Arc<BrokerCore>,
    reader: R,
    mut writer: W,
    mut frames: Frames,
    id: crate::router::ConnId,
    broker: crate::openwire::command::BrokerInfo,
    login: handshake::Login,
    remote: SocketAddr,
    stop: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    if !login.principal.bridge {
        core.metrics_error();
        let message = format!(
            "User {} may not open network bridges to this broker",
            login.principal.user
        );
        info!(client.addr = %remote, user = %login.principal.user, "OpenWire bridge refused: the user may not open bridges");
        let _ = writer
            .write_all(&exception(
                login.correlation,
                "java.lang.SecurityException",
                message,
            ))
            .await;
        let _ = writer.shutdown().await;
        return;
    }
    frames.max = crate::network::bridge_frame_size(&core.limits);
    let opened = crate::network::Opened {
        conn: id,
        reader: Box::new(reader),
        writer: Box::new(writer),
        frames,
        early: Vec::new(),
        login: None,
    };
    let accepted = crate::network::OpenWireInbound {
        broker,
        principal: login.principal,
        remote_address: remote.to_string(),
        inactivity: login.inactivity,
    };
    crate::network::openwire_inbound(core, opened, accepted, stop).await;
}

/// Serves one OpenWire connection until it ends or the broker stops.
pub(crate) async fn serve<S>(
    core: Arc<BrokerCore>,
    stream: S,
    remote: SocketAddr,
    transport: String,
    deadline: Instant,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = core.next_connection();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut frames = Frames {
        buf: Vec::with_capacity(16 * 1024),
        // Until the login succeeds, a frame is small.
        max: core.limits.max_login_frame_size,
    };
    let mut hello = wire_format(core.limits.max_frame_size);
    let broker_info = Command::new(Body::BrokerInfo(Box::new(crate::network::broker_info(
        &core, id, false, false, None,
    ))));
    encode(&broker_info, &mut hello);
    let login = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout_at(deadline, handshake(&core, &mut reader, &mut writer, &mut frames, &hello, remote, &transport)) => r,
    };
    let mut login = match login {
        Ok(Ok(login)) => login,
        Ok(Err(refusal)) => {
            core.metrics_error();
            if let Some(bytes) = refusal.answer {
                let _ = writer.write_all(&bytes).await;
            }
            let _ = writer.shutdown().await;
            debug!(conn = %id, client.addr = %remote, error = %refusal.reason, "OpenWire connection refused");
            return;
        }
        Err(_) => {
            core.metrics_error();
            debug!(conn = %id, client.addr = %remote, "OpenWire: no login in time");
            return;
        }
    };
    if let Some(broker) = login.network.take() {
        bridge(
            core, reader, writer, frames, id, *broker, login, remote, stop,
        )
        .await;
        return;
    }
    frames.max = core.limits.max_frame_size;
    let (control_tx, control_rx) = mpsc::channel::<Vec<u8>>(64);
    let (outbox, outbox_rx) = Outbox::new(OUTBOX);
    let (stalled, evicted) = (outbox.stalled.clone(), outbox.evicted.clone());
    let info = ConnectionInfo::new(
        id,
        remote.to_string(),
        login.principal.user.clone(),
        transport.clone(),
        format!("openwire/{}", login.version),
    );
    let counters = info.counters.clone();
    core.router.register(id, outbox, info).await;
    let (pipe_tx, pipe_rx) = mpsc::channel(256);
    let pipeline_task = tokio::spawn(run_pipeline(core.clone(), pipe_rx, control_tx.clone()));
    info!(conn = %id, client.addr = %remote, user = %login.principal.user, transport = %transport, "OpenWire client connected");
    let writer_done = CancellationToken::new();
    let writer_task = tokio::spawn(writer::run(
        Outgoing {
            core: core.clone(),
            conn: id,
            control: control_rx,
            outbox: outbox_rx,
            stalled,
            evicted,
            beat: Some(login.inactivity / 3),
            done: writer_done.clone(),
            encoder: OpenWireEncoder {
                broker: core.name.clone(),
                connection: login.connection.clone(),
                counters: counters.clone(),
            },
        },
        writer,
    ));
    let _ = control_tx.send(response(login.correlation)).await;
    let mut session = Session {
        core: core.clone(),
        id,
        control: control_tx,
        sender: Arc::from(login.principal.user.as_str()),
        principal: login.principal,
        client_id: login.client_id,
        pipeline: Pipeline {
            tx: pipe_tx,
            budget: Arc::new(Semaphore::new(PIPELINE_BYTES as usize)),
        },
        producers: HashMap::new(),
        consumers: HashMap::new(),
        known: HashSet::new(),
        counters,
        temporaries: HashSet::new(),
        transactions: transactions::Transactions::new(
            core.limits.max_transaction_frames,
            core.limits.max_transaction_bytes,
        ),
    };
    let expect = (!login.inactivity.is_zero()).then_some(login.inactivity * 2);
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        _ = writer_done.cancelled() => Ok(()),
        r = session.run(&mut reader, &mut frames, expect) => r,
    };
    if let Err(why) = outcome {
        core.metrics_error();
        debug!(conn = %id, error = %why, "OpenWire connection closed with an error");
        let error = Command::new(Body::ConnectionError(ConnectionError {
            error: Some(Failure {
                class: Some("java.io.IOException".into()),
                message: Some(why),
            }),
            connection_id: None,
        }));
        let _ = session.control.send(frame(&error)).await;
    }
    // What was received is routed before the connection goes.
    let Session {
        pipeline,
        control,
        temporaries,
        ..
    } = session;
    drop(pipeline);
    let _ = pipeline_task.await;
    core.router.unregister(id).await;
    // Its temporary destinations go with it.
    for temporary in temporaries {
        core.delete_temporary(&temporary).await;
    }
    drop(control);
    let _ = writer_task.await;
    info!(conn = %id, client.addr = %remote, "OpenWire client disconnected");
}
