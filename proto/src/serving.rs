//! What both servers have in common: gRPC reflection (v1 for current grpcurl,
//! v1alpha for grpcurl 1.8.6 and older tools), the standard health service,
//! tracing set-up and the shutdown signal their binaries wait for.

use tonic_health::server::HealthReporter;

/// Reflection services (v1, v1alpha) describing the p2p services and health.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// The standard `grpc.health.v1.Health` service and its reporter.
pub fn health()
-> (HealthReporter, tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) {
    tonic_health::server::health_reporter()
}

/// Keeps grpc.health in step with `serving` (the state of the storage
/// under `service`): NOT_SERVING, for the service and the server as a whole
/// (""), while it is false. Ends with `shutdown`.
pub async fn follow_health(
    reporter: HealthReporter,
    service: &'static str,
    mut serving: tokio::sync::watch::Receiver<bool>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tonic_health::ServingStatus;
    loop {
        let status = if *serving.borrow_and_update() { ServingStatus::Serving } else { ServingStatus::NotServing };
        reporter.set_service_status(service, status).await;
        reporter.set_service_status("", status).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = serving.changed() => if changed.is_err() { return },
        }
    }
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`);
/// `json` selects one JSON object per line for log shippers.
pub fn init_tracing(json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A token cancelled on the first SIGINT or SIGTERM: what a binary hands
/// to its server's `run(listener, config, shutdown)`.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    token
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (what `docker stop` and
/// compose send).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop this server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Writes the address a server actually bound (useful with port 0) to
/// `path`, atomically (a temporary file, then a rename), so a reader polling
/// for it never sees half an address.
pub fn write_addr_file(path: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, path)
}

/// How long a stopping server lets in-flight requests finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `serve` (a server future that stops gracefully when `shutdown`
/// fires); once `shutdown` has fired it gets `grace` to finish, then
/// `close_all` is cancelled, which fails every connection accepted by
/// [`crate::conn::incoming`] with that token. A client that never reads its
/// stream cannot hold a server's shutdown forever.
pub async fn serve_with_grace<F, E>(
    serve: F,
    shutdown: tokio_util::sync::CancellationToken,
    close_all: tokio_util::sync::CancellationToken,
    grace: std::time::Duration,
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => return r,
        _ = shutdown.cancelled() => {}
    }
    if let Ok(r) = tokio::time::timeout(grace, &mut serve).await {
        return r;
    }
    tracing::warn!(
        grace_secs = grace.as_secs_f64(),
        "requests still open after the shutdown grace period; closing their connections"
    );
    close_all.cancel();
    serve.await
}
