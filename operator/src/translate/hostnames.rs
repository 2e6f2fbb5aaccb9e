//! Hostname matching and intersection between listeners and routes.

/// Whether `host` (exact or wildcard) is matched by `pattern` (exact or `*.suffix`).
/// A wildcard matches one or more labels: `*.example.com` matches `a.b.example.com`, not
/// `example.com`.
fn covered_by(host: &str, pattern: &str) -> bool {
    if host.eq_ignore_ascii_case(pattern) {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // `suffix` starts with '.'; the host must have at least one label before it.
    let host_core = host.strip_prefix('*').unwrap_or(host);
    host_core.len() > suffix.len()
        && host_core.to_ascii_lowercase().ends_with(&suffix.to_ascii_lowercase())
        && !(host.starts_with('*') && host_core.len() == suffix.len())
}

/// The hostnames a route serves on a listener: the intersection of both sets.
///
/// `None` means the two do not intersect (the route does not attach to that listener);
/// `Some(vec![])` means any host.
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    match (listener, route.is_empty()) {
        (None, true) => Some(Vec::new()),
        (None, false) => Some(dedup_lower(route.iter().map(String::as_str))),
        (Some(listener), true) => Some(vec![listener.to_ascii_lowercase()]),
        (Some(listener), false) => {
            let hits: Vec<&str> = route
                .iter()
                .filter_map(|host| {
                    if covered_by(host, listener) {
                        Some(host.as_str())
                    } else if covered_by(listener, host) {
                        Some(listener)
                    } else {
                        None
                    }
                })
                .collect();
            (!hits.is_empty()).then(|| dedup_lower(hits.into_iter()))
        }
    }
}

fn dedup_lower<'a>(hosts: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for host in hosts {
        let host = host.to_ascii_lowercase();
        if !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn listener_without_hostname_takes_route_hostnames() {
        assert_eq!(intersect(None, &[]), Some(vec![]));
        assert_eq!(intersect(None, &hosts(&["A.com", "a.com"])), Some(hosts(&["a.com"])));
    }

    #[test]
    fn route_without_hostnames_takes_the_listener_hostname() {
        assert_eq!(intersect(Some("*.example.com"), &[]), Some(hosts(&["*.example.com"])));
    }

    #[test]
    fn wildcards_intersect_both_ways() {
        let l = Some("*.example.com");
        assert_eq!(intersect(l, &hosts(&["foo.example.com"])), Some(hosts(&["foo.example.com"])));
        assert_eq!(intersect(l, &hosts(&["a.b.example.com"])), Some(hosts(&["a.b.example.com"])));
        assert_eq!(intersect(l, &hosts(&["example.com"])), None);
        assert_eq!(intersect(l, &hosts(&["*.foo.example.com"])), Some(hosts(&["*.foo.example.com"])));
        assert_eq!(intersect(l, &hosts(&["*.com"])), Some(hosts(&["*.example.com"])));
        assert_eq!(
            intersect(Some("foo.example.com"), &hosts(&["*.example.com"])),
            Some(hosts(&["foo.example.com"]))
        );
        assert_eq!(intersect(Some("example.com"), &hosts(&["*.example.com"])), None);
        assert_eq!(intersect(l, &hosts(&["*.example.com"])), Some(hosts(&["*.example.com"])));
    }

    #[test]
    fn unrelated_hostnames_do_not_intersect() {
        assert_eq!(intersect(Some("a.com"), &hosts(&["b.com", "*.b.com"])), None);
        assert_eq!(intersect(Some("*.a.com"), &hosts(&["*.b.com"])), None);
    }
}
