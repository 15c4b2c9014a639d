//! Bytes each gRPC method moves through a server, counted on the wire
//! (framed message bytes of request and response bodies, streams included)
//! by a tower layer, into a Prometheus family labelled by direction and
//! method.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hyper::body::{Bytes, Frame};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// `direction` (`received`: request bodies; `sent`: response bodies) and
/// `method` (the gRPC method's name, e.g. `SendBlock`).
pub type Labels = Vec<(&'static str, String)>;

/// The tower layer; clones share the family.
#[derive(Debug, Clone)]
pub struct RpcBytesLayer {
    family: Family<Labels, Counter>,
}

impl RpcBytesLayer {
    pub fn new(family: Family<Labels, Counter>) -> Self {
        RpcBytesLayer { family }
    }
}

impl<S> tower::Layer<S> for RpcBytesLayer {
    type Service = RpcBytes<S>;
    fn layer(&self, inner: S) -> RpcBytes<S> {
        RpcBytes { inner, family: self.family.clone(), known: served_methods() }
    }
}

#[derive(Debug, Clone)]
pub struct RpcBytes<S> {
    inner: S,
    family: Family<Labels, Counter>,
    known: Arc<HashSet<String>>,
}

/// The method of a gRPC path (`/p2p.node.v1.Node/SendBlock` -> `SendBlock`)
/// when `known` holds the path; anything else is `other`, so a caller
/// cannot grow the label set.
fn method(path: &str, known: &HashSet<String>) -> String {
    match path.rsplit_once('/') {
        Some((_, m)) if known.contains(path) => m.to_string(),
        _ => "other".to_string(),
    }
}

/// Every method path this project's services (and health, reflection) serve.
fn served_methods() -> Arc<HashSet<String>> {
    static PATHS: OnceLock<Arc<HashSet<String>>> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            use prost::Message;
            let mut paths: HashSet<String> = [
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ]
            .into_iter()
            .map(String::from)
            .collect();
            for set in [crate::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
                let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
                for file in set.file {
                    let package = file.package.unwrap_or_default();
                    for service in file.service {
                        let name = service.name.unwrap_or_default();
                        for m in service.method {
                            paths.insert(format!("/{package}.{name}/{}", m.name.unwrap_or_default()));
                        }
                    }
                }
            }
            Arc::new(paths)
        })
        .clone()
}

impl<S, B> tower::Service<http::Request<B>> for RpcBytes<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let m = method(req.uri().path(), &self.known);
        let received =
            self.family.get_or_create(&vec![("direction", "received".to_string()), ("method", m.clone())]).clone();
        let sent = self.family.get_or_create(&vec![("direction", "sent".to_string()), ("method", m)]).clone();
        let req = req.map(|b| tonic::body::Body::new(Counted { inner: b, counter: received }));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|b| tonic::body::Body::new(Counted { inner: b, counter: sent })))
        })
    }
}

/// A body that counts the data bytes passing through it.
struct Counted<B> {
    inner: B,
    counter: Counter,
}

impl<B> hyper::body::Body for Counted<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_by_path_and_strangers_are_other() {
        let known = served_methods();
        assert_eq!(method("/p2p.node.v1.Node/SendBlock", &known), "SendBlock");
        assert_eq!(method("/p2p.node.v1.Node/AnnounceBlocks", &known), "AnnounceBlocks");
        assert_eq!(method("/p2p.bootstrap.v1.Bootstrap/Register", &known), "Register");
        assert_eq!(method("/grpc.health.v1.Health/Check", &known), "Check");
        assert_eq!(
            method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &known),
            "ServerReflectionInfo"
        );
        // Made-up methods cannot add labels.
        assert_eq!(method("/p2p.node.v1.Node/Invented", &known), "other");
        assert_eq!(method("/evil/x", &known), "other");
    }
}
