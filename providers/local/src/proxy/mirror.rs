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
use crate::runtime::CompiledGateway;
use crate::server::Shared;

const MIRROR_CHANNEL_CHUNKS: usize = 16;

/// Starts the mirror requests for this request and returns the taps feeding their bodies.
pub(super) fn start_mirrors(
    shared: &Shared,
    gateway: &Arc<CompiledGateway>,
    route: usize,
    mirrors: &[MirrorIr],
    parts: &http::request::Parts,
    path_and_query: &PathAndQuery,
) -> Vec<mpsc::Sender<Bytes>> {
    let mut taps = Vec::new();
    for (mirror_index, mirror) in mirrors.iter().enumerate() {
        if mirror.numerator < mirror.denominator
            && rand::rng().random_range(0..mirror.denominator) >= mirror.numerator
        {
            continue;
        }
        let BackendTarget::Endpoints { .. } = &mirror.backend.target else { continue };
        let plan = gateway.mirror_plan(route, mirror_index);
        let (Some(address), Ok(tls)) =
            (plan.keys.get(rand::rng().random_range(0..plan.keys.len().max(1))), &plan.tls)
        else {
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
        let (address, tls) = (address.clone(), tls.clone());
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
                let response =
                    client.send_in(protocol, &address, tls.as_ref(), request, &()).await.map_err(drop)?;
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
