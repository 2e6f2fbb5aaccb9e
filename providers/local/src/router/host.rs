//! Hostnames: the request's host made comparable, and an index from hostname patterns to values
//! that yields the patterns matching a host from the most to the least specific.

use crate::fast_hash::FastMap;

/// A listener or route hostname, lower case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum HostPattern {
    /// `foo.example.com`.
    Exact(Box<str>),
    /// `*.example.com`, kept as the suffix `.example.com`: matches one or more labels before it.
    Wildcard(Box<str>),
    /// No hostname: every host.
    Any,
}

impl HostPattern {
    /// Reads a hostname as written in a listener or route; `None`, `""` and `"*"` mean any host.
    pub(super) fn parse(hostname: Option<&str>) -> Self {
        let Some(hostname) = hostname.map(str::trim).filter(|h| !h.is_empty() && *h != "*") else {
            return Self::Any;
        };
        let hostname = hostname.to_ascii_lowercase();
        match hostname.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => Self::Wildcard(suffix.into()),
            _ => Self::Exact(hostname.into()),
        }
    }
}

/// Values keyed by hostname pattern.
#[derive(Debug)]
pub(super) struct HostIndex<T> {
    exact: FastMap<Box<str>, T>,
    /// Keyed by the suffix after `*`, leading dot included.
    wildcard: FastMap<Box<str>, T>,
    any: Option<T>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        Self { exact: FastMap::default(), wildcard: FastMap::default(), any: None }
    }
}

impl<T> HostIndex<T> {
    /// The value stored under `pattern`, created by `make` when absent.
    pub(super) fn get_or_insert_with(&mut self, pattern: &HostPattern, make: impl FnOnce() -> T) -> &mut T {
        match pattern {
            HostPattern::Exact(host) => self.exact.entry(host.clone()).or_insert_with(make),
            HostPattern::Wildcard(suffix) => self.wildcard.entry(suffix.clone()).or_insert_with(make),
            HostPattern::Any => self.any.get_or_insert_with(make),
        }
    }

    /// The value stored under `pattern`, if any.
    pub(super) fn get_mut(&mut self, pattern: &HostPattern) -> Option<&mut T> {
        match pattern {
            HostPattern::Exact(host) => self.exact.get_mut(host),
            HostPattern::Wildcard(suffix) => self.wildcard.get_mut(suffix),
            HostPattern::Any => self.any.as_mut(),
        }
    }

    /// The values whose pattern matches `host` (lower case, no port), most specific first: the
    /// exact hostname, then wildcards from the longest suffix to the shortest, then any host.
    pub(super) fn matching<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a T> + 'a {
        let wildcards = (!self.wildcard.is_empty())
            .then(|| {
                // Each dot after the first character starts a suffix with at least one label
                // before it; scanning left to right visits the longest suffix first.
                host.bytes()
                    .enumerate()
                    .skip(1)
                    .filter(|&(_, b)| b == b'.')
                    .filter_map(move |(i, _)| self.wildcard.get(&host[i..]))
            })
            .into_iter()
            .flatten();
        self.exact.get(host).into_iter().chain(wildcards).chain(self.any.as_ref())
    }
}

/// Hosts up to this length are lower-cased on the stack (DNS names have at most 253 bytes).
const STACK_HOST_LEN: usize = 256;

/// Calls `f` with the host of a Host header or `:authority`: port removed, lower case.
/// Allocates only for hosts longer than any DNS name that contain upper-case letters.
pub(super) fn with_normalized_host<R>(authority: &str, f: impl FnOnce(&str) -> R) -> R {
    let host = strip_port(authority);
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(host);
    }
    if host.len() <= STACK_HOST_LEN {
        let mut buf = [0u8; STACK_HOST_LEN];
        let lower = &mut buf[..host.len()];
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        // ASCII lower-casing keeps UTF-8 valid, so this never fails.
        if let Ok(lower) = std::str::from_utf8(lower) {
            return f(lower);
        }
    }
    f(&host.to_ascii_lowercase())
}

/// The host of an authority: a trailing `:port` removed; IPv6 literals keep their brackets.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(authority: &str) -> String {
        with_normalized_host(authority, str::to_string)
    }

    #[test]
    fn ports_and_case_are_removed() {
        assert_eq!(normalized("Foo.Example.COM:8080"), "foo.example.com");
        assert_eq!(normalized("foo.example.com"), "foo.example.com");
        assert_eq!(normalized("foo.example.com:"), "foo.example.com");
        assert_eq!(normalized("[::1]:80"), "[::1]");
        assert_eq!(normalized("[::1]"), "[::1]");
        assert_eq!(normalized(""), "");
        let long = format!("{}.COM", "A".repeat(300));
        assert_eq!(normalized(&long), long.to_ascii_lowercase());
    }

    #[test]
    fn patterns_parse() {
        assert_eq!(HostPattern::parse(None), HostPattern::Any);
        assert_eq!(HostPattern::parse(Some("")), HostPattern::Any);
        assert_eq!(HostPattern::parse(Some("*")), HostPattern::Any);
        assert_eq!(HostPattern::parse(Some("*.Example.com")), HostPattern::Wildcard(".example.com".into()));
        assert_eq!(HostPattern::parse(Some("Foo.example.com")), HostPattern::Exact("foo.example.com".into()));
    }

    #[test]
    fn matching_goes_from_most_to_least_specific() {
        let mut index = HostIndex::default();
        for (pattern, value) in [
            (None, "any"),
            (Some("*.example.com"), "wild"),
            (Some("*.foo.example.com"), "wild-foo"),
            (Some("a.foo.example.com"), "exact"),
        ] {
            *index.get_or_insert_with(&HostPattern::parse(pattern), || "") = value;
        }
        let hits = |host| index.matching(host).copied().collect::<Vec<_>>();
        assert_eq!(hits("a.foo.example.com"), ["exact", "wild-foo", "wild", "any"]);
        assert_eq!(hits("b.foo.example.com"), ["wild-foo", "wild", "any"]);
        assert_eq!(hits("foo.example.com"), ["wild", "any"]);
        assert_eq!(hits("example.com"), ["any"]);
        assert_eq!(hits(".example.com"), ["any"]);
        assert_eq!(hits("other.org"), ["any"]);
    }
}
