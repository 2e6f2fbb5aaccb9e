//! Gateway API match precedence across all routes of a Gateway.
//!
//! Hostname precedence comes first and is applied by the data plane's host index; this key
//! orders everything after it: Exact path, then regular expressions (longest first; their
//! place is implementation-specific), then the longest PathPrefix, then method, more header
//! matches, more query matches, the oldest route, `namespace/name`, rule and match order. A
//! GRPCRoute's method matches rank exact, then by service (prefix), then method alone.

use std::cmp::Reverse;

use jiff::Timestamp;
use tollbridge_provider::{MatchIr, PathMatch, RouteId, RouteKind};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    path_kind: u8,
    path_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query_params: Reverse<usize>,
    age: (Timestamp, usize),
    route: (String, String),
    rule: usize,
    match_index: usize,
}

impl SortKey {
    pub fn new(matcher: &MatchIr, id: &RouteId, age: (Timestamp, usize)) -> Self {
        let (path_kind, path_len) = match (&matcher.path, id.kind) {
            (PathMatch::Exact(p), _) => (0, p.len()),
            // A GRPCRoute's prefix is a service and its regular expressions a method alone (or
            // patterns): its spec ranks the longer service first, so prefixes come before them.
            (PathMatch::Prefix(p), RouteKind::GRPCRoute) => (1, p.len()),
            (PathMatch::Regex(p), RouteKind::GRPCRoute) => (2, p.len()),
            (PathMatch::Regex(p), RouteKind::HTTPRoute) => (1, p.len()),
            (PathMatch::Prefix(p), RouteKind::HTTPRoute) => (2, p.len()),
        };
        Self {
            path_kind,
            path_len: Reverse(path_len),
            method: Reverse(matcher.method.is_some()),
            headers: Reverse(matcher.headers.len()),
            query_params: Reverse(matcher.query_params.len()),
            age,
            route: (id.namespace.clone(), id.name.clone()),
            rule: id.rule,
            match_index: id.match_index,
        }
    }
}
