//! attach and exec over WebSocket, with the `v4.channel.k8s.io` / `v5.channel.k8s.io`
//! framing: binary messages whose first byte is the channel (0 stdin, 1 stdout, 2 stderr,
//! 3 status, 4 resize; v5 adds 255 = "close this channel", sent as `[255, 0]` for stdin).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::kubelet::{kill_process, ContainerRt, Output};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

/// The subprotocols the fake speaks, preferred first.
pub(crate) const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Picks the subprotocol from the client's `Sec-WebSocket-Protocol` offers.
pub(crate) fn choose_protocol<'a>(offers: impl Iterator<Item = &'a str>) -> Option<&'static str> {
    let offers: Vec<String> = offers
        .flat_map(|h| h.split(','))
        .map(|s| s.trim().to_string())
        .collect();
    PROTOCOLS
        .iter()
        .copied()
        .find(|p| offers.iter().any(|o| o == p))
}

/// What the client asked to stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamOpts {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
}

/// An attach session, or an exec session (which owns its process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionKind {
    Attach,
    Exec,
}

/// The Status object sent on channel 3 when the process exits.
pub(crate) fn exit_status(code: i32) -> Value {
    if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    }
}

fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Runs one session on an upgraded connection until the process exits (status sent) or
/// the client goes away.
pub(crate) async fn session(
    upgraded: Upgraded,
    rt: Arc<ContainerRt>,
    mut rx: mpsc::UnboundedReceiver<Output>,
    opts: StreamOpts,
    kind: SessionKind,
) {
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut tx, mut wsrx) = ws.split();
    let mut exited = rt.exit_code();
    let mut gone = false;
    if exited.is_none() {
        loop {
            tokio::select! {
                msg = wsrx.next() => match msg {
                    Some(Ok(Message::Binary(b))) => match b.first() {
                        Some(&STDIN) if opts.stdin && b.len() > 1 => {
                            let mut stdin = rt.stdin.lock().await;
                            if let Some(w) = stdin.as_mut() {
                                if w.write_all(&b[1..]).await.is_err() || w.flush().await.is_err() {
                                    stdin.take();
                                }
                            }
                        }
                        // v5: the client's stdin reached EOF.
                        Some(&CLOSE)
                            if b.get(1) == Some(&STDIN)
                                && (kind == SessionKind::Exec || rt.stdin_once) =>
                        {
                            rt.close_stdin().await;
                        }
                        _ => {} // resize, empty channel-open frames, unknown channels
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        gone = true;
                        break;
                    }
                    Some(Ok(_)) => {} // ping (answered by tungstenite), pong, text
                },
                out = rx.recv() => match out {
                    Some(Output::Data(ch, data)) => {
                        let wanted = (ch == STDOUT && opts.stdout) || (ch == STDERR && opts.stderr);
                        if wanted && tx.send(frame(ch, &data)).await.is_err() {
                            gone = true;
                            break;
                        }
                    }
                    Some(Output::Exit(code)) => {
                        exited = Some(code);
                        break;
                    }
                    None => {
                        exited = Some(rt.exit_code().unwrap_or(128));
                        break;
                    }
                },
            }
        }
    }
    if let Some(code) = exited {
        let status = serde_json::to_vec(&exit_status(code)).unwrap_or_default();
        let _ = tx.send(frame(STATUS, &status)).await;
        // A close code is required: client-go treats 1005 "no status" as an error.
        let _ = tx.send(Message::Close(Some(normal_close()))).await;
        // Give the client a moment to answer the close handshake.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = wsrx.next().await {}
        })
        .await;
    }
    if gone {
        match kind {
            SessionKind::Exec => kill_process(&rt, 0).await,
            SessionKind::Attach => {
                // stdinOnce: the end of the first attach session with stdin closes stdin.
                if opts.stdin && rt.stdin_once && !rt.first_attach_done.swap(true, Ordering::SeqCst)
                {
                    rt.close_stdin().await;
                }
            }
        }
    }
}

/// Sends a Failure status on channel 3 and closes (a process could not be started).
pub(crate) async fn fail(upgraded: Upgraded, message: &str) {
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let status = json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500});
    let _ = ws
        .send(frame(
            STATUS,
            &serde_json::to_vec(&status).unwrap_or_default(),
        ))
        .await;
    let _ = ws.close(Some(normal_close())).await;
}
