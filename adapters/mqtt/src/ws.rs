//! MQTT over WebSocket (MQTT 5 §6): the HTTP upgrade on path `/mqtt` with subprotocol `mqtt`,
//! then binary frames carry the MQTT byte stream (a packet may span frames and a frame may
//! hold several packets). A small task per connection pumps frames to and from an in-memory
//! pipe, so the MQTT driver sees a plain byte stream as it does on TCP and TLS.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{ErrorResponse, Request, Response},
    http::{HeaderValue, StatusCode},
};

/// The path MQTT clients connect to.
pub const PATH: &str = "/mqtt";

/// Bytes buffered between the WebSocket pump and the MQTT driver, each way.
const PIPE: usize = 64 * 1024;

/// Complete the WebSocket handshake on `stream`; the result carries the MQTT byte stream.
pub async fn accept<S>(stream: S) -> Result<DuplexStream, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
    let check = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != PATH {
            let mut e = ErrorResponse::new(Some(format!("MQTT is served on {PATH}")));
            *e.status_mut() = StatusCode::NOT_FOUND;
            return Err(e);
        }
        let offered = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| matches!(*p, "mqtt" | "mqttv3.1"))
            .map(str::to_string);
        if let Some(p) = offered
            && let Ok(v) = HeaderValue::from_str(&p)
        {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, check)
        .await
        .map_err(|e| e.to_string())?;
    let (ours, theirs) = tokio::io::duplex(PIPE);
    tokio::spawn(pump(ws, theirs));
    Ok(ours)
}

async fn pump<S>(ws: tokio_tungstenite::WebSocketStream<S>, pipe: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut frames) = ws.split();
    let (mut from_driver, mut to_driver) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(frame) = frames.next().await {
            match frame {
                Ok(Message::Binary(b)) => {
                    if to_driver.write_all(&b).await.is_err() {
                        break;
                    }
                }
                // Text frames are not MQTT [MQTT-6.0.0-1]: close.
                Ok(Message::Text(_)) | Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {} // ping/pong are answered by tungstenite
            }
        }
        let _ = to_driver.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_driver.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    // Either side ending ends the connection.
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}
