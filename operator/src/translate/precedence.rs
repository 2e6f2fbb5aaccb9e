//! Gateway API match precedence across all routes of a Gateway.
//!
//! Hostname precedence comes first and is applied by the data plane's host index; this key
//! orders everything after it: Exact path, then regular expressions (longest first; their
//! place is implementation-specific), then the longest PathPrefix, then method, more header
//! matches, more query matches, the oldest route, `namespace/name`, rule and match order.

use std::cmp::Reverse;

use jiff::Timestamp;
use tollbridge_provider::{MatchIr, PathMatch, RouteId};

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
        let (path_kind, path_len) = match &matcher.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Regex(p) => (1, p.len()),
            PathMatch::Prefix(p) => (2, p.len()),
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
