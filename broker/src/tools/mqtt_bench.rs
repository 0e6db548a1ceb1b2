//! `portico-broker mqtt-bench`: one publisher and one subscriber on one
//! topic of any MQTT 3.1.1 broker, at QoS 0 or 1 — the same client for
//! every broker the benchmark compares. Reports messages per second (the
//! first PUBLISH sent to the last one received), delivery latency (p50,
//! p99) and how many never arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::BenchReport;
use crate::mqtt::{connack, decode, encode, Connect, Packet, Publish, QoS};

/// What to run.
#[derive(Debug, Clone)]
pub struct MqttBenchArgs {
    pub host: String,
    pub port: u16,
    pub qos: u8,
    pub count: u64,
    pub size: usize,
    /// QoS 1 PUBLISHes the publisher has unacknowledged, at most.
    pub window: u64,
    pub topic: String,
}

/// Nothing arriving for this long ends the run (what is missing, is).
const STALL: Duration = Duration::from_secs(5);
const MAX_PACKET: usize = 16 * 1024 * 1024;

struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    async fn next(&mut self) -> Result<Packet, String> {
        loop {
            if let Some((packet, used)) =
                decode(&self.buf, MAX_PACKET).map_err(|e| e.to_string())?
            {
                self.buf.drain(..used);
                return Ok(packet);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self
                .half
                .read(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the broker closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn connect(
    args: &MqttBenchArgs,
    client_id: &str,
) -> Result<(Reader, OwnedWriteHalf), String> {
    let tcp = TcpStream::connect((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (half, mut writer) = tcp.into_split();
    let mut hello = Vec::new();
    encode(
        &Packet::Connect(Box::new(Connect {
            level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
        })),
        &mut hello,
    );
    writer.write_all(&hello).await.map_err(|e| e.to_string())?;
    let mut reader = Reader {
        half,
        buf: Vec::new(),
    };
    match reader.next().await? {
        Packet::ConnAck {
            code: connack::ACCEPTED,
            ..
        } => Ok((reader, writer)),
        other => Err(format!("CONNECT answered with {other:?}")),
    }
}

fn bytes(packet: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, &mut out);
    out
}

/// How long connecting and subscribing may take.
const SETUP: Duration = Duration::from_secs(30);

/// Runs one measurement.
pub async fn mqtt_bench(args: &MqttBenchArgs) -> Result<BenchReport, String> {
    tokio::time::timeout(
        SETUP * 4 + Duration::from_secs(args.count / 1000 + 60),
        measure(args),
    )
    .await
    .map_err(|_| "the run did not finish in time".to_owned())?
}

async fn measure(args: &MqttBenchArgs) -> Result<BenchReport, String> {
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let tag = std::process::id();
    let (mut sub_reader, mut sub_writer) =
        tokio::time::timeout(SETUP, connect(args, &format!("bench-sub-{tag}")))
            .await
            .map_err(|_| "no CONNACK in time".to_owned())??;
    sub_writer
        .write_all(&bytes(&Packet::Subscribe {
            id: 1,
            filters: vec![(args.topic.clone(), qos)],
        }))
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(SETUP, async {
        loop {
            if let Packet::SubAck { .. } = sub_reader.next().await? {
                return Ok::<_, String>(());
            }
        }
    })
    .await
    .map_err(|_| "no SUBACK in time".to_owned())??;
    let (mut pub_reader, pub_writer) =
        tokio::time::timeout(SETUP, connect(args, &format!("bench-pub-{tag}")))
            .await
            .map_err(|_| "no CONNACK in time".to_owned())??;
    let start = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(Notify::new());
    // The publisher's PUBACKs open its window.
    let ack_task = {
        let (acked, acks) = (acked.clone(), acks.clone());
        tokio::spawn(async move {
            while let Ok(packet) = pub_reader.next().await {
                if let Packet::PubAck(_) = packet {
                    acked.fetch_add(1, Ordering::Relaxed);
                    acks.notify_one();
                }
            }
        })
    };
    let publisher = {
        let args = args.clone();
        let (acked, acks) = (acked.clone(), acks.clone());
        tokio::spawn(async move {
            let mut writer = BufWriter::with_capacity(64 * 1024, pub_writer);
            let filler = vec![b'x'; args.size.saturating_sub(8)];
            for i in 0..args.count {
                if qos == QoS::AtLeastOnce {
                    while i >= acked.load(Ordering::Relaxed) + args.window {
                        writer.flush().await.map_err(|e| e.to_string())?;
                        acks.notified().await;
                    }
                }
                let sent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let mut payload = sent.to_be_bytes().to_vec();
                payload.extend_from_slice(&filler);
                let id = (qos == QoS::AtLeastOnce).then(|| (i % 65_535) as u16 + 1);
                let packet = bytes(&Packet::Publish(Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: args.topic.clone(),
                    id,
                    payload,
                }));
                writer.write_all(&packet).await.map_err(|e| e.to_string())?;
            }
            writer.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(writer)
        })
    };
    let mut latencies: Vec<u64> = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    let mut last = start;
    let mut acks_out = Vec::new();
    while (latencies.len() as u64) < args.count {
        let packet = match tokio::time::timeout(STALL, sub_reader.next()).await {
            Ok(p) => p?,
            Err(_) => break,
        };
        if let Packet::Publish(p) = packet {
            let now = start.elapsed();
            last = Instant::now();
            if let Some(sent) = p.payload.get(..8) {
                let sent = u64::from_be_bytes(sent.try_into().unwrap_or([0; 8]));
                latencies.push(
                    u64::try_from(now.as_nanos())
                        .unwrap_or(u64::MAX)
                        .saturating_sub(sent),
                );
            }
            if let Some(id) = p.id {
                encode(&Packet::PubAck(id), &mut acks_out);
                // Acknowledge in small batches: whatever came in one read.
                if sub_reader.buf.is_empty() || acks_out.len() > 16 * 1024 {
                    sub_writer
                        .write_all(&acks_out)
                        .await
                        .map_err(|e| e.to_string())?;
                    acks_out.clear();
                }
            }
        }
    }
    let _ = sub_writer.write_all(&acks_out).await;
    let writer = publisher.await.map_err(|e| e.to_string())??;
    let mut writer = writer.into_inner();
    let _ = writer.write_all(&bytes(&Packet::Disconnect)).await;
    let _ = sub_writer.write_all(&bytes(&Packet::Disconnect)).await;
    ack_task.abort();
    let latencies = latencies.into_iter().map(Duration::from_nanos).collect();
    Ok(BenchReport::of(latencies, start, last, false))
}
