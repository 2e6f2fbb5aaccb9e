//! Request paths: replacing a URI's path, and the path modifiers of URL rewrites and redirects.

use http::Uri;
use tollbridge_provider::PathModifier;

/// `uri` with its path replaced, keeping the query.
pub(super) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The new path (and the original query) after a path modifier.
pub(super) fn rewrite_path(modifier: &PathModifier, path: &str, query: Option<&str>) -> String {
    let new_path = match modifier {
        PathModifier::Full { path } => path.clone(),
        PathModifier::Prefix { matched, replacement } => replace_prefix(path, matched, replacement),
    };
    match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    }
}

/// Replaces the matched prefix (segment-aware) by `replacement`, avoiding doubled or lost `/`.
fn replace_prefix(path: &str, matched: &str, replacement: &str) -> String {
    let rest = if matched == "/" { path } else { path.strip_prefix(matched).unwrap_or(path) };
    let rest = rest.trim_start_matches('/');
    let base = replacement.trim_end_matches('/');
    if rest.is_empty() {
        if base.is_empty() {
            "/".to_string()
        } else {
            base.to_string()
        }
    } else {
        format!("{base}/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_keeps_single_slashes() {
        assert_eq!(replace_prefix("/api/v1/users", "/api", "/"), "/v1/users");
        assert_eq!(replace_prefix("/api", "/api", "/"), "/");
        assert_eq!(replace_prefix("/api/", "/api", "/new"), "/new");
        assert_eq!(replace_prefix("/api/x", "/api", "/new/"), "/new/x");
        assert_eq!(replace_prefix("/x/y", "/", "/pre"), "/pre/x/y");
    }
}
