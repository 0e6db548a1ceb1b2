//! STOMP over WebSocket (`stomp+ws`, `stomp+wss`): the WebSocket handshake
//! (subprotocols `v12.stomp`, `v11.stomp`, `v10.stomp`, the highest the
//! client offers), then the same STOMP session as over TCP. A pump between
//! the WebSocket and the session turns each message the client sends (text
//! or binary) into bytes of the stream, and each frame the session writes
//! into one WebSocket message of its own (text when it is UTF-8, binary
//! otherwise; a heart-beat is a message holding one newline).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::shared::BrokerCore;

/// The subprotocols taken, best first.
const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];
/// Bytes between the pump and the session, each way.
const PIPE: usize = 64 * 1024;

/// The subprotocol to answer for the client's `Sec-WebSocket-Protocol`.
fn choose(offered: Option<&str>) -> Option<&'static str> {
    let offered: Vec<&str> = offered?.split(',').map(str::trim).collect();
    SUBPROTOCOLS.into_iter().find(|p| offered.contains(p))
}

/// Serves one WebSocket connection: the handshake before `deadline`, then
/// a STOMP session over it.
// The handshake callback's error type is tungstenite's HTTP response.
#[allow(clippy::result_large_err)]
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
    // A message holds a frame, or part of one: the frame limit, with room.
    let max = core.limits.max_frame_size.saturating_add(64 * 1024);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let answer = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let offered = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if let Some(chosen) = choose(offered) {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        }
        Ok(response)
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, answer, Some(config));
    let ws = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            core.metrics_error();
            debug!(client.addr = %remote, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            core.metrics_error();
            debug!(client.addr = %remote, "no WebSocket handshake in time");
            return;
        }
    };
    let (session_side, pump_side) = tokio::io::duplex(PIPE);
    let pump = tokio::spawn(pump(ws, pump_side));
    super::connection::serve(core, session_side, remote, transport, deadline, stop).await;
    // The session's end closes the pipe, and the pump closes the WebSocket.
    let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
}

/// Where the next whole frame in `buf` ends (its NUL included), or one
/// heart-beat's end-of-line; `None` until it is whole.
fn frame_end(buf: &[u8]) -> Option<usize> {
    match buf.first()? {
        b'\n' => return Some(1),
        b'\r' => return (buf.get(1) == Some(&b'\n')).then_some(2),
        _ => {}
    }
    let head_end = buf.windows(2).position(|w| w == b"\n\n").map(|at| at + 2)?;
    let length = buf[..head_end]
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"content-length:"))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim_end_matches('\r').trim().parse::<usize>().ok());
    match length {
        Some(len) => {
            let end = head_end.checked_add(len)?.checked_add(1)?;
            (buf.len() >= end).then_some(end)
        }
        None => buf[head_end..]
            .iter()
            .position(|&b| b == 0)
            .map(|at| head_end + at + 1),
    }
}

/// Moves bytes between the WebSocket and the session until either ends.
async fn pump<S>(ws: WebSocketStream<S>, side: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(side);
    let inbound = async {
        while let Some(message) = source.next().await {
            let written = match message {
                Ok(Message::Text(text)) => to_session.write_all(text.as_bytes()).await,
                Ok(Message::Binary(bytes)) => to_session.write_all(&bytes).await,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Ok(()),
                Ok(Message::Close(_)) | Err(_) => break,
            };
            if written.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async {
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            while let Some(end) = frame_end(&buf) {
                let frame: Vec<u8> = buf.drain(..end).collect();
                let message = match String::from_utf8(frame) {
                    Ok(text) => Message::text(text),
                    Err(e) => Message::binary(e.into_bytes()),
                };
                if sink.send(message).await.is_err() {
                    return sink;
                }
            }
            match from_session.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        sink
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut inbound => {}
        mut sink = &mut outbound => {
            // The session ended (after a DISCONNECT's RECEIPT, say): the
            // client closes first, as STOMP has it, or is told to after a
            // while; either way the closing handshake completes, so nothing
            // it sends meanwhile meets a reset connection.
            let _ = tokio::time::timeout(CLOSING, &mut inbound).await;
            let _ = sink.close().await;
        }
    }
}

/// How long a closing WebSocket waits for the client's Close.
const CLOSING: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_stomp_subprotocol_offered_is_chosen() {
        assert_eq!(choose(Some("v10.stomp, v12.stomp")), Some("v12.stomp"));
        assert_eq!(choose(Some("v11.stomp")), Some("v11.stomp"));
        assert_eq!(choose(Some("mqtt")), None);
        assert_eq!(choose(None), None);
    }

    #[test]
    fn frames_are_found_one_by_one() {
        let mut stream =
            b"\nMESSAGE\ncontent-length:3\n\na\0b\0CONNECTED\nversion:1.2\n\n\0".to_vec();
        let mut frames = Vec::new();
        while let Some(end) = frame_end(&stream) {
            frames.push(stream.drain(..end).collect::<Vec<u8>>());
        }
        assert_eq!(frames[0], b"\n");
        assert_eq!(frames[1], b"MESSAGE\ncontent-length:3\n\na\0b\0");
        assert_eq!(frames[2], b"CONNECTED\nversion:1.2\n\n\0");
        assert!(stream.is_empty());
        assert_eq!(frame_end(b"SEND\ncontent-length:9\n\nabc"), None);
    }
}
