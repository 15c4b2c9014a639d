//! Prometheus exposition over plain HTTP/1 (`GET /metrics`), for a
//! registry that belongs to one server (so in-process test networks keep
//! their nodes apart). Off unless a listener is given (`--metrics-listen`).
//!
//! Bounded like everything else: at most [`MAX_SCRAPES`] connections at
//! once (others are closed at once), and each connection gets
//! [`CONN_DEADLINE`] in all.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections served at once.
pub const MAX_SCRAPES: usize = 16;
/// Time one connection may take, request and answer.
pub const CONN_DEADLINE: Duration = Duration::from_secs(10);
/// The content type of the OpenMetrics text format `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry as OpenMetrics text (encoded on the blocking pool: collectors may read storage).
pub async fn render(registry: &Arc<Registry>) -> Result<String, std::fmt::Error> {
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).map(|()| out)
    })
    .await
    .unwrap_or(Err(std::fmt::Error))
}

/// The listener for `--metrics-listen ADDR`, if given; the error names the flag.
pub async fn bind(addr: Option<&str>) -> std::io::Result<Option<TcpListener>> {
    match addr {
        Some(a) => TcpListener::bind(a).await.map(Some).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {a} for metrics (--metrics-listen): {e}"))
        }),
        None => Ok(None),
    }
}

/// Serves `registry` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let (registry, shutdown) = (registry.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(answer(&req, &registry).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::timeout(CONN_DEADLINE, conn) => {}
            }
        });
    }
}

async fn answer(req: &Request<hyper::body::Incoming>, registry: &Arc<Registry>) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != hyper::Method::GET || req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "only GET /metrics is served here\n".into());
    }
    match render(registry).await {
        Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "metrics could not be encoded\n".into()),
    }
}
