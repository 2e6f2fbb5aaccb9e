//! Request mirrors: copies of a request sent, best effort, to the mirror backends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Uri};
use http_body_util::BodyExt;
use rand::Rng;
use tokio::sync::mpsc;
use tollbridge_provider::{BackendTarget, MirrorIr};

use crate::body::ChannelBody;
use crate::metrics::UpstreamErrorLabels;
use crate::runtime::{socket_address, CompiledGateway};
use crate::server::Shared;

const MIRROR_CHANNEL_CHUNKS: usize = 16;

/// Starts the mirror requests for this request and returns the taps feeding their bodies.
pub(super) fn start_mirrors(
    shared: &Shared,
    gateway: &Arc<CompiledGateway>,
    mirrors: &[MirrorIr],
    parts: &http::request::Parts,
    path_and_query: &PathAndQuery,
) -> Vec<mpsc::Sender<Bytes>> {
    let mut taps = Vec::new();
    for mirror in mirrors {
        if mirror.numerator < mirror.denominator
            && rand::rng().random_range(0..mirror.denominator) >= mirror.numerator
        {
            continue;
        }
        let BackendTarget::Endpoints { endpoints } = &mirror.backend.target else { continue };
        let Some(endpoint) = endpoints.get(rand::rng().random_range(0..endpoints.len().max(1))) else {
            continue;
        };
        let labels = |kind: &str| UpstreamErrorLabels {
            gateway: gateway.id.clone(),
            backend: mirror.backend.name.clone(),
            kind: kind.to_string(),
        };
        // Mirrors are best effort: past the cap, a request is not mirrored (and that is counted).
        let Ok(slot) = shared.mirror_slots.clone().try_acquire_owned() else {
            shared.metrics.upstream_errors.get_or_create(&labels("mirror_dropped")).inc();
            continue;
        };
        let address: Arc<str> = Arc::from(socket_address(&endpoint.address, endpoint.port));
        let uri = Uri::from(path_and_query.clone());
        let (tx, rx) = mpsc::channel(MIRROR_CHANNEL_CHUNKS);
        let mut request = Request::new(ChannelBody::new(rx).boxed());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = parts.headers.clone();
        let client = shared.client.clone();
        let protocol = mirror.backend.protocol;
        let metrics = shared.metrics.clone();
        let failed = labels("mirror");
        tokio::spawn(async move {
            let _slot = slot;
            // The answer is read to the end (so the connection returns to the pool), all
            // within the mirror's time.
            let exchange = async {
                let response = client.send_in(protocol, &address, request).await.map_err(drop)?;
                response.into_body().collect().await.map(drop).map_err(drop)
            };
            if !matches!(tokio::time::timeout(Duration::from_secs(30), exchange).await, Ok(Ok(()))) {
                metrics.upstream_errors.get_or_create(&failed).inc();
            }
        });
        taps.push(tx);
    }
    taps
}
