//! The conditions of one route entry besides its path's place in the index: a path regular
//! expression, the method, header matches and query parameter matches.

use std::borrow::Cow;
use std::collections::HashMap;

use http::header::HeaderName;
use http::HeaderMap;
use regex::Regex;
use tollbridge_provider::{KeyValueMatch, PathMatch, RouteIr, StringMatch};

use super::{CompileError, RequestView};

use crate::percent;

/// Everything an entry requires of a request, compiled.
#[derive(Debug)]
pub(super) struct Conditions {
    path_regex: Option<Regex>,
    method: Option<Box<str>>,
    headers: Box<[(HeaderName, ValueMatch)]>,
    query_params: Box<[(Box<str>, ValueMatch)]>,
}

#[derive(Debug)]
enum ValueMatch {
    Exact(Box<str>),
    /// Anchored: must match the whole value.
    Regex(Regex),
}

/// Compiled regular expressions by pattern, so entries sharing a pattern share the automaton.
#[derive(Debug, Default)]
pub(super) struct RegexCache(HashMap<String, Regex>);

impl RegexCache {
    /// A regular expression matching exactly the strings `pattern` matches as a whole.
    fn full_match(&mut self, pattern: &str, route: &RouteIr) -> Result<Regex, CompileError> {
        if let Some(regex) = self.0.get(pattern) {
            return Ok(regex.clone());
        }
        let invalid =
            |source| CompileError::InvalidRegex { route: route_name(route), pattern: pattern.into(), source };
        // Checked alone first: an unbalanced pattern such as `a)|(b` would otherwise escape the
        // anchoring group below.
        Regex::new(pattern).map_err(invalid)?;
        let regex = Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(invalid)?;
        self.0.insert(pattern.to_string(), regex.clone());
        Ok(regex)
    }
}

/// How errors name an entry: `namespace/name` rule and match index.
fn route_name(route: &RouteIr) -> String {
    format!("{} rule {} match {}", route.id.route(), route.id.rule, route.id.match_index)
}

impl Conditions {
    pub(super) fn compile(route: &RouteIr, regexes: &mut RegexCache) -> Result<Self, CompileError> {
        let matcher = &route.matcher;
        let path_regex = match &matcher.path {
            PathMatch::Regex(pattern) => Some(regexes.full_match(pattern, route)?),
            PathMatch::Exact(_) | PathMatch::Prefix(_) => None,
        };
        let mut value = |m: &StringMatch| -> Result<ValueMatch, CompileError> {
            Ok(match m {
                StringMatch::Exact(v) => ValueMatch::Exact(v.as_str().into()),
                StringMatch::Regex(pattern) => ValueMatch::Regex(regexes.full_match(pattern, route)?),
            })
        };
        let mut headers: Vec<(HeaderName, ValueMatch)> = Vec::with_capacity(matcher.headers.len());
        for KeyValueMatch { name, value: want } in &matcher.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                CompileError::InvalidHeaderName { route: route_name(route), name: name.clone() }
            })?;
            // The spec: among matches of one (case-insensitive) name, only the first counts.
            if headers.iter().all(|(seen, _)| *seen != name) {
                headers.push((name, value(want)?));
            }
        }
        let mut query_params: Vec<(Box<str>, ValueMatch)> = Vec::with_capacity(matcher.query_params.len());
        for KeyValueMatch { name, value: want } in &matcher.query_params {
            if query_params.iter().all(|(seen, _)| **seen != **name) {
                query_params.push((name.as_str().into(), value(want)?));
            }
        }
        Ok(Self {
            path_regex,
            method: matcher.method.as_deref().map(Into::into),
            headers: headers.into(),
            query_params: query_params.into(),
        })
    }

    /// Whether the request meets every condition; `path` is the request path (`/` when empty).
    pub(super) fn matches(&self, path: &str, req: &RequestView<'_>) -> bool {
        // Cheapest first; the path expression usually costs the most.
        self.method.as_deref().is_none_or(|m| m == req.method.as_str())
            && self.headers.iter().all(|(name, want)| header_matches(req.headers, name, want))
            && self.query_params.iter().all(|(name, want)| {
                req.query.and_then(|q| first_query_value(q, name)).is_some_and(|v| want.matches(v.as_bytes()))
            })
            && self.path_regex.as_ref().is_none_or(|r| r.is_match(path))
    }
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(want) => want.as_bytes() == value,
            Self::Regex(regex) => std::str::from_utf8(value).is_ok_and(|v| regex.is_match(v)),
        }
    }
}

/// A header repeated in the request is matched on its values joined with `,` (RFC 9110 §5.3).
fn header_matches(headers: &HeaderMap, name: &HeaderName, want: &ValueMatch) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return false };
    let Some(second) = values.next() else { return want.matches(first.as_bytes()) };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    want.matches(&joined)
}

/// The first value of the query parameter `name` in a raw query string, percent-decoded.
/// Names and values are compared after decoding; only encoded ones allocate.
pub(super) fn first_query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent::decode_str(key) == name).then(|| percent::decode_str(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_the_first_of_their_name_and_decoded() {
        let q = "a=1&b=two&a=3&empty&c=x%20y&d%5B%5D=z&bad=%zz%4";
        assert_eq!(first_query_value(q, "a").as_deref(), Some("1"));
        assert_eq!(first_query_value(q, "b").as_deref(), Some("two"));
        assert_eq!(first_query_value(q, "A"), None);
        assert_eq!(first_query_value(q, "empty").as_deref(), Some(""));
        assert_eq!(first_query_value(q, "c").as_deref(), Some("x y"));
        assert_eq!(first_query_value(q, "d[]").as_deref(), Some("z"));
        assert_eq!(first_query_value(q, "bad").as_deref(), Some("%zz%4"));
        assert_eq!(first_query_value(q, "missing"), None);
        assert!(matches!(first_query_value(q, "a"), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        headers.insert("x-b", "one".parse().unwrap());
        let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).unwrap();
        let exact = |v: &str| ValueMatch::Exact(v.into());
        assert!(header_matches(&headers, &name("x-a"), &exact("1,2")));
        assert!(!header_matches(&headers, &name("x-a"), &exact("1")));
        assert!(header_matches(&headers, &name("X-B"), &exact("one")));
        assert!(!header_matches(&headers, &name("x-c"), &exact("")));
    }
}
