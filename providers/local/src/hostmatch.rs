//! Hostname matching shared by listener selection and SNI.

/// Whether `host` (lower case, no port) matches the listener or route hostname `pattern`
/// (`*.example.com` matches one or more labels before `.example.com`).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Sort key putting exact hostnames first, then wildcards with more labels, then no hostname.
pub fn listener_rank(hostname: Option<&str>) -> (u8, std::cmp::Reverse<usize>) {
    match hostname {
        Some(h) if !h.starts_with('*') => (0, std::cmp::Reverse(0)),
        Some(h) => (1, std::cmp::Reverse(h.matches('.').count())),
        None => (2, std::cmp::Reverse(0)),
    }
}

/// The host of a Host header or `:authority`: lower case handled by callers, port removed
/// (IPv6 literals keep their brackets).
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_once(']').map(|(h, _)| &authority[..h.len() + 1]).unwrap_or(authority);
    }
    authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_need_a_label() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("Foo.com", "foo.COM"));
    }

    #[test]
    fn ports_are_removed() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
