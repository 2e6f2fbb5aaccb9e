//! Route lookup: which entry of a Gateway's routes handles a request arriving on a port.
//!
//! Three levels, each most specific first:
//! 1. the listener, by the request host against the listeners' hostnames (exact, then wildcards
//!    with the longest suffix, then listeners without hostname); only the routes attached to
//!    that listener are candidates (listener isolation);
//! 2. the hostname bucket within that listener (the routes' hostnames on it, same order, then
//!    routes for any host); a less specific bucket is tried when no entry of a more specific
//!    one matches the request;
//! 3. within a bucket, the entry of lowest rank (its index in the IR's routes, which the
//!    translator sorts by Gateway API precedence) whose path, method, headers and query
//!    parameters all match.
//!
//! Matching details: paths are compared as received (no decoding, `%2F` is not `/`), an empty
//! path is `/`; a PathPrefix matches whole segments and ignores its trailing `/`; regular
//! expressions must match the whole path or value; header names are case-insensitive and a
//! repeated header is matched on its values joined with `,`; query parameter names are
//! case-sensitive, compared percent-decoded, on the first value of the name.
//!
//! Compiled once per configuration; a lookup does not allocate for ordinary requests (an
//! upper-case host longer than a DNS name, a repeated matched header or a percent-encoded query
//! parameter costs one small allocation).

mod conditions;
mod host;
mod path;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use tollbridge_provider::GatewayIr;

use conditions::{Conditions, RegexCache};
use host::{HostIndex, HostPattern};
use path::PathIndex;

/// The routes of one Gateway served on one port, compiled for lookup.
#[derive(Debug)]
pub struct PortRouter {
    listeners: Vec<String>,
    /// Per listener hostname, a number naming that listener (listeners sharing a hostname on
    /// a port share one), to tell whether two hosts reach the same listener.
    listener_ids: HostIndex<u32>,
    /// Per listener hostname, that listener's routes per route hostname.
    by_listener: HostIndex<HostIndex<PathIndex>>,
    /// Indexed by rank; `None` for entries not attached to a listener on this port.
    conditions: Vec<Option<Conditions>>,
}

/// The parts of a request that route matching reads.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// Host header or `:authority`; may carry a port and upper case.
    pub host: &'a str,
    /// URI path as received (not decoded), without query.
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: Option<&'a str>,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
}

/// Why routes could not be compiled. The translator validates first, so these mean an IR that
/// did not come from it.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("route {route}: invalid regular expression {pattern:?}: {source}")]
    InvalidRegex { route: String, pattern: String, source: regex::Error },
    #[error("route {route}: invalid header name {name:?}")]
    InvalidHeaderName { route: String, name: String },
    #[error("{count} route entries are more than the {max} supported", max = u32::MAX - 1)]
    TooManyRoutes { count: usize },
}

impl PortRouter {
    /// Compiles every route entry of `gw` attached to a listener of `gw` on `port`.
    pub fn compile(gw: &GatewayIr, port: u16) -> Result<PortRouter, CompileError> {
        // Ranks are stored as u32, with u32::MAX meaning none.
        if gw.routes.len() >= u32::MAX as usize {
            return Err(CompileError::TooManyRoutes { count: gw.routes.len() });
        }
        let mut listeners = Vec::new();
        let mut by_listener: HostIndex<HostIndex<PathIndex>> = HostIndex::default();
        // Listeners on one port with the same hostname (only possible across protocols) share
        // one set of routes.
        let mut pattern_of: HashMap<&str, HostPattern> = HashMap::new();
        let mut listener_ids = HostIndex::default();
        for (id, listener) in (0u32..).zip(gw.listeners.iter().filter(|l| l.port == port)) {
            let pattern = HostPattern::parse(listener.hostname.as_deref());
            by_listener.get_or_insert_with(&pattern, HostIndex::default);
            listener_ids.get_or_insert_with(&pattern, || id);
            pattern_of.insert(&listener.name, pattern);
            listeners.push(listener.name.clone());
        }

        let mut conditions = Vec::with_capacity(gw.routes.len());
        let mut regexes = RegexCache::default();
        for (rank, route) in (0u32..).zip(&gw.routes) {
            let mut attached = false;
            for attachment in &route.attachments {
                let Some(routes) =
                    pattern_of.get(attachment.listener.as_str()).and_then(|p| by_listener.get_mut(p))
                else {
                    continue;
                };
                attached = true;
                let mut insert = |host: HostPattern| {
                    routes.get_or_insert_with(&host, PathIndex::default).insert(rank, &route.matcher.path);
                };
                if attachment.hostnames.is_empty() {
                    insert(HostPattern::Any);
                }
                for hostname in &attachment.hostnames {
                    insert(HostPattern::parse(Some(hostname)));
                }
            }
            conditions.push(if attached { Some(Conditions::compile(route, &mut regexes)?) } else { None });
        }
        Ok(PortRouter { listeners, listener_ids, by_listener, conditions })
    }

    /// The index into `gw.routes` of the entry that handles the request, or None (→ 404).
    pub fn lookup(&self, req: &RequestView<'_>) -> Option<usize> {
        let path = if req.path.is_empty() { "/" } else { req.path };
        let accept = |rank: u32| {
            self.conditions.get(rank as usize).and_then(Option::as_ref).is_some_and(|c| c.matches(path, req))
        };
        let rank = host::with_normalized_host(req.host, |host| {
            let routes = self.by_listener.matching(host).next()?;
            routes.matching(host).find_map(|bucket| bucket.lookup(path, &accept))
        })?;
        Some(rank as usize)
    }

    /// The listener a host (a Host header, `:authority` or TLS server name) selects on this
    /// port, as a number equal for equal listeners; None when no listener takes it.
    pub fn listener_of(&self, host: &str) -> Option<u32> {
        host::with_normalized_host(host, |host| self.listener_ids.matching(host).next().copied())
    }

    /// Listener names served on this port (for metrics/debug).
    pub fn listeners(&self) -> &[String] {
        &self.listeners
    }
}
