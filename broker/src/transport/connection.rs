//! One client connection from start to end: CONNECT, then a bridge
//! hand-off or a session with its pipeline and writer, then goodbye.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::delivery::StompEncoder;
use super::pipeline::{run_pipeline, Pipeline, PIPELINE_BYTES};
use super::session::Session;
use super::transactions::Transactions;
use super::writer::{self, Outgoing};
use crate::auth::Principal;
use crate::router::{ConnectionInfo, Outbox};
use crate::shared::BrokerCore;
use crate::stomp::{FrameBuffer, Limits as FrameLimits, Version};

/// Deliveries a connection may have queued for writing.
const OUTBOX: usize = 256;

/// Serves one connection until it ends or the broker stops.
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
    let (mut reader, writer) = tokio::io::split(stream);
    let (control_tx, mut control_rx) = mpsc::channel::<Vec<u8>>(64);
    let mut session = Session {
        core: core.clone(),
        id,
        buf: FrameBuffer::new(),
        // Until CONNECT succeeds, a frame is small: a login costs little.
        limits: FrameLimits {
            max_frame_size: core.limits.max_login_frame_size,
            max_headers: core.limits.max_headers,
            max_header_length: core.limits.max_header_length,
        },
        control: control_tx,
        principal: None,
        sender: None,
        transactions: Transactions::new(
            core.limits.max_transaction_frames,
            core.limits.max_transaction_bytes,
        ),
        version: Version::V1_2,
        pipeline: None,
        bridge: None,
        known: HashSet::new(),
        client_id: None,
        durable: HashMap::new(),
        counters: Arc::default(),
    };
    let connected = tokio::select! {
        _ = stop.cancelled() => return,
        r = session.connect(&mut reader, remote, &transport, deadline) => r,
    };
    let (send_every, expect_every) = match connected {
        Ok(beats) => beats,
        Err(fatal) => {
            core.metrics_error();
            let mut writer = writer;
            let bytes = fatal.frame().to_bytes_as(session.version);
            let _ = writer.write_all(&bytes).await;
            let _ = writer.shutdown().await;
            debug!(conn = %id, client.addr = %remote, error = %fatal.message, "connection refused");
            return;
        }
    };
    if let Some(connect) = session.bridge.take() {
        // Another broker opening a bridge: answer, then run the bridge.
        let mut writer = writer;
        while let Ok(bytes) = control_rx.try_recv() {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
        let buf = std::mem::take(&mut session.buf);
        let Some(principal) = session.principal.take() else {
            return;
        };
        drop(session);
        let accepted = crate::network::Inbound {
            connect,
            principal,
            send_every,
            expect_every,
            remote_address: remote.to_string(),
        };
        crate::network::inbound(
            core,
            Box::new(reader),
            Box::new(writer),
            buf,
            accepted,
            stop,
        )
        .await;
        return;
    }
    let (outbox, outbox_rx) = Outbox::new(OUTBOX);
    let (stalled, evicted) = (outbox.stalled.clone(), outbox.evicted.clone());
    let principal = session
        .principal
        .clone()
        .unwrap_or_else(|| Principal::anonymous(None));
    let info = ConnectionInfo::new(
        id,
        remote.to_string(),
        principal.user.clone(),
        transport.clone(),
        session.version.as_str().to_owned(),
    );
    let counters = info.counters.clone();
    session.counters = counters.clone();
    core.router.register(id, outbox, info).await;
    let (pipe_tx, pipe_rx) = mpsc::channel(256);
    let pipeline_task = tokio::spawn(run_pipeline(core.clone(), pipe_rx, session.control.clone()));
    session.pipeline = Some(Pipeline {
        tx: pipe_tx,
        budget: Arc::new(Semaphore::new(PIPELINE_BYTES as usize)),
    });
    info!(conn = %id, client.addr = %remote, user = %principal.user, transport = %transport, "client connected");
    let writer_done = CancellationToken::new();
    let writer_task = tokio::spawn(writer::run(
        Outgoing {
            core: core.clone(),
            conn: id,
            control: control_rx,
            outbox: outbox_rx,
            stalled,
            evicted,
            beat: send_every,
            done: writer_done.clone(),
            encoder: StompEncoder {
                version: session.version,
                counters,
            },
        },
        writer,
    ));
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        _ = writer_done.cancelled() => Ok(()),
        // A missed beat is tolerated: drop after twice the interval.
        r = session.run(&mut reader, expect_every.map(|t| t * 2)) => r,
    };
    if let Err(fatal) = outcome {
        core.metrics_error();
        debug!(conn = %id, error = %fatal.message, "closing with ERROR");
        let _ = session
            .control
            .send(fatal.frame().to_bytes_as(session.version))
            .await;
    }
    // What was received is routed before the connection goes.
    let _ = session.flush().await;
    session.pipeline = None;
    let _ = pipeline_task.await;
    core.router.unregister(id).await;
    drop(session);
    let _ = writer_task.await;
    info!(conn = %id, client.addr = %remote, "client disconnected");
}
