//! The R4 Subscription websocket (`GET /fhir/$subscription-ws`, advertised in the
//! CapabilityStatement): a client sends `bind <subscription id>`, the server answers
//! `bound <id>` and then sends `ping <id>` for every notification of that Subscription; the
//! server sends a WebSocket ping frame every 30 s as a heartbeat. Authentication is the
//! `/fhir` security layer's; binding needs read access to the Subscription.
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Message;

use super::{auth, blocking, State};
use crate::service::subscriptions::check_bind;

const HEARTBEAT: Duration = Duration::from_secs(30);

pub async fn subscription_ws(
    req: HttpRequest,
    body: web::Payload,
    st: State,
) -> Result<HttpResponse, actix_web::Error> {
    let ctx = auth::ctx(&req)?;
    // Anything but a WebSocket handshake is a client mistake, answered as an OperationOutcome.
    let (resp, session, mut stream) = actix_ws::handle(&req, body).map_err(|e| {
        crate::error::ApiError::bad_request(format!(
            "$subscription-ws is a WebSocket endpoint: send a WebSocket upgrade request \
             (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Key, Sec-WebSocket-Version: 13) ({e})"
        ))
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Notifications and heartbeats out.
    let mut out = session.clone();
    actix_web::rt::spawn(async move {
        loop {
            match actix_web::rt::time::timeout(HEARTBEAT, rx.recv()).await {
                Ok(Some(text)) => {
                    if out.text(text).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    if out.ping(b"").await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Commands in.
    let mut session = session;
    actix_web::rt::spawn(async move {
        let bindings = st.subscription_bindings.clone();
        let mut keys = vec![];
        while let Some(Ok(msg)) = stream.recv().await {
            match msg {
                Message::Text(t) => {
                    let text = t.trim().to_string();
                    let Some(id) = text
                        .strip_prefix("bind ")
                        .map(str::trim)
                        .map(str::to_string)
                    else {
                        let _ = session
                            .text(format!("error unknown command '{text}'"))
                            .await;
                        continue;
                    };
                    let (st2, ctx2, id2) = (st.clone(), ctx.clone(), id.clone());
                    match blocking(move || check_bind(&st2.store, &ctx2, &id2)).await {
                        Ok(()) => {
                            keys.push(bindings.bind(&id, tx.clone()));
                            if session.text(format!("bound {id}")).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = session.text(format!("error {id}: {e}")).await;
                        }
                    }
                }
                Message::Ping(b) if session.pong(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        for k in keys {
            bindings.unbind(k);
        }
        let _ = session.close(None).await;
    });
    Ok(resp)
}
