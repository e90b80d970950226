//! The HTTPS listener: TLS (client certificates optional), HTTP/1.1 and HTTP/2,
//! and the identity of each connection handed to the handler.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::User;
use crate::handler::{self, App};
use crate::pki;
use crate::watch::direct::{DirectWatches, Flight, Guarded, Sniffer};
use tokio::sync::oneshot;

/// Accept connections forever.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
    direct: Option<DirectWatches>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let direct = direct.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let user: Option<User> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| pki::identity_from_cert(c))
                .map(|(name, groups)| User { name, groups });
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            // Responses in flight matter only to a followed HTTP/1.1 connection.
            let flight = (direct.is_some() && !h2).then(|| Arc::new(Flight::default()));
            let (app2, user2) = (app.clone(), user.clone());
            let svc = {
                let flight = flight.clone();
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    let user = user.clone();
                    let guard = flight.as_ref().map(|f| f.start());
                    async move {
                        let req = req.map(axum::body::Body::new);
                        let resp = handler::handle(app, user, req).await;
                        Ok::<_, Infallible>(resp.map(|b| Guarded::new(b, guard)))
                    }
                })
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            let result = match (&direct, flight) {
                // HTTP/1.1: watches may leave for the watch hub.
                (Some(direct), Some(flight)) => {
                    let (tx, mut rx) = oneshot::channel();
                    let io = TokioIo::new(Sniffer::new(tls, flight, tx));
                    let r = builder.serve_connection_with_upgrades(io, svc).await;
                    if let Ok(h) = rx.try_recv() {
                        direct.serve(app2, user2, h.request, h.stream).await;
                    }
                    r
                }
                _ => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
