//! The path index of one hostname bucket: exact paths in a map, prefixes and regular
//! expressions in a trie of path segments.
//!
//! Candidates are route ranks (indexes into the IR's routes, lower is more specific). A lookup
//! returns the lowest rank among the candidates whose path matches and that the caller accepts,
//! whatever order the IR's precedence puts exact, regex and prefix entries in; the IR's order
//! (exact, regex, longest prefix) only makes the search stop early.

use tollbridge_provider::PathMatch;

use crate::fast_hash::FastMap;

/// No candidate found yet; higher than every rank.
const NONE: u32 = u32::MAX;

#[derive(Debug)]
pub(super) struct PathIndex {
    exact: FastMap<Box<str>, Vec<u32>>,
    /// `nodes[0]` is the root, the prefix `/`.
    nodes: Vec<Node>,
    /// The lowest rank stored in the trie: an exact match below it ends the search.
    trie_min_rank: u32,
}

/// A trie node: the path segments leading to it are fixed.
#[derive(Debug, Default)]
struct Node {
    /// The node one segment up; the root's is itself.
    parent: usize,
    children: FastMap<Box<str>, usize>,
    /// Prefixes ending here, and regular expressions whose literal start ends here; by rank.
    candidates: Vec<u32>,
}

impl Default for PathIndex {
    fn default() -> Self {
        Self { exact: FastMap::default(), nodes: vec![Node::default()], trie_min_rank: NONE }
    }
}

impl PathIndex {
    /// Adds the entry of rank `rank`. Entries must be inserted in ascending rank order.
    pub(super) fn insert(&mut self, rank: u32, path: &PathMatch) {
        let list = match path {
            PathMatch::Exact(exact) => self.exact.entry(exact.as_str().into()).or_default(),
            PathMatch::Prefix(prefix) => {
                // A prefix that is not an absolute path can never match one.
                let Some(segments) = prefix_segments(prefix) else { return };
                let node = self.node_for(segments);
                self.trie_min_rank = self.trie_min_rank.min(rank);
                &mut self.nodes[node].candidates
            }
            PathMatch::Regex(pattern) => {
                let node = self.node_for(regex_segments(pattern));
                self.trie_min_rank = self.trie_min_rank.min(rank);
                &mut self.nodes[node].candidates
            }
        };
        debug_assert!(list.last().is_none_or(|&last| last <= rank), "ranks must be inserted in order");
        // An entry reaches a bucket once per hostname it has there; keep it once.
        if list.last() != Some(&rank) {
            list.push(rank);
        }
    }

    /// The lowest rank whose path matches `path` and which `accept` approves.
    pub(super) fn lookup(&self, path: &str, accept: &impl Fn(u32) -> bool) -> Option<u32> {
        let mut best = NONE;
        if let Some(list) = self.exact.get(path) {
            first_accepted(list, &mut best, accept);
        }
        if best < self.trie_min_rank {
            return Some(best);
        }
        self.walk(path.strip_prefix('/'), &mut best, accept);
        (best != NONE).then_some(best)
    }

    /// Visits the nodes along the path deepest first (their candidates rank lowest), lowering
    /// `best` to the first accepted candidate below it at each node. `rest` is the path after
    /// its leading `/`; `None` (a path that is not absolute) reaches the root only.
    fn walk(&self, mut rest: Option<&str>, best: &mut u32, accept: &impl Fn(u32) -> bool) {
        let mut node = 0;
        while let Some(path) = rest {
            let children = &self.nodes[node].children;
            if children.is_empty() {
                break;
            }
            let (segment, next) = match path.split_once('/') {
                Some((segment, next)) => (segment, Some(next)),
                None => (path, None),
            };
            match children.get(segment) {
                Some(&child) => node = child,
                None => break,
            }
            rest = next;
        }
        // Back up through the parents: no recursion, however deep the trie.
        loop {
            let here = &self.nodes[node];
            first_accepted(&here.candidates, best, accept);
            if node == 0 {
                return;
            }
            node = here.parent;
        }
    }

    /// The node reached by `segments` from the root, created as needed.
    fn node_for<'s>(&mut self, segments: impl Iterator<Item = &'s str>) -> usize {
        let mut node = 0;
        for segment in segments {
            node = match self.nodes[node].children.get(segment) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node { parent: node, ..Node::default() });
                    self.nodes[node].children.insert(segment.into(), child);
                    child
                }
            };
        }
        node
    }
}

/// Lowers `best` to the first rank of `list` below it that `accept` approves.
fn first_accepted(list: &[u32], best: &mut u32, accept: &impl Fn(u32) -> bool) {
    for &rank in list {
        if rank >= *best {
            return;
        }
        if accept(rank) {
            *best = rank;
            return;
        }
    }
}

/// The segments of a path prefix, trailing slashes ignored: `/a/b/` gives `a`, `b`; `/` none.
/// `None` when the prefix is not an absolute path.
fn prefix_segments(prefix: &str) -> Option<impl Iterator<Item = &str>> {
    let inner = prefix.strip_prefix('/')?.trim_end_matches('/');
    Some((!inner.is_empty()).then(|| inner.split('/')).into_iter().flatten())
}

/// The path segments every match of `pattern` must start with: the whole segments of its
/// literal start. `/svc/v1/.*` gives `svc`, `v1`; a pattern without one gives none (the root).
fn regex_segments(pattern: &str) -> impl Iterator<Item = &str> {
    let literal = literal_start(pattern);
    let fixed = match (literal.strip_prefix('/'), literal.rfind('/')) {
        (Some(_), Some(last)) if last > 0 => &literal[1..last],
        _ => "",
    };
    (!fixed.is_empty()).then(|| fixed.split('/')).into_iter().flatten()
}

/// A conservative literal text that every full match of `pattern` starts with.
fn literal_start(pattern: &str) -> &str {
    // An alternation anywhere could bypass the start; give up rather than parse groups.
    if pattern.contains('|') {
        return "";
    }
    let pattern = pattern.strip_prefix('^').unwrap_or(pattern);
    let end = pattern.bytes().position(|b| !is_plain_literal(b)).unwrap_or(pattern.len());
    let literal = &pattern[..end];
    // A quantifier after the run makes its last character optional or repeated.
    match pattern.as_bytes().get(end) {
        Some(b'?' | b'*' | b'+' | b'{') => &literal[..literal.len().saturating_sub(1)],
        _ => literal,
    }
}

/// Bytes that stand for themselves in a regular expression outside a class, whatever the flags
/// (flags are set with `(?…)`, which ends the literal run).
fn is_plain_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/-_~%=,;:@!&'".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(pattern: &str) -> Vec<&str> {
        regex_segments(pattern).collect()
    }

    #[test]
    fn regexes_sit_under_their_literal_start() {
        assert_eq!(segments("/svc12/v1/.*"), ["svc12", "v1"]);
        assert_eq!(segments("^/svc12/v[0-9]+"), ["svc12"]);
        assert_eq!(segments("/svc12/v1"), ["svc12"]);
        assert_eq!(segments("/a/b?/c"), ["a"]);
        assert_eq!(segments("/a/*"), Vec::<&str>::new());
        assert_eq!(segments("/a/b/|/c/d/"), Vec::<&str>::new());
        assert_eq!(segments("(?i)/a/b/"), Vec::<&str>::new());
        assert_eq!(segments("/a\\/b/"), Vec::<&str>::new());
        assert_eq!(segments(".*"), Vec::<&str>::new());
        assert_eq!(segments("a/b/"), Vec::<&str>::new());
    }

    #[test]
    fn prefixes_ignore_trailing_slashes() {
        let segs = |p| prefix_segments(p).map(|s| s.collect::<Vec<_>>());
        assert_eq!(segs("/"), Some(vec![]));
        assert_eq!(segs("/a/b/"), Some(vec!["a", "b"]));
        assert_eq!(segs("//"), Some(vec![]));
        assert_eq!(segs("a"), None);
    }

    #[test]
    fn lowest_accepted_rank_wins_across_kinds() {
        let mut index = PathIndex::default();
        // Deliberately not in the IR's order: a prefix ranks before the exact path.
        index.insert(0, &PathMatch::Prefix("/a".into()));
        index.insert(1, &PathMatch::Exact("/a/b".into()));
        index.insert(2, &PathMatch::Prefix("/a/b".into()));
        index.insert(3, &PathMatch::Regex("/a/.*".into()));
        let all = |_| true;
        assert_eq!(index.lookup("/a/b", &all), Some(0));
        assert_eq!(index.lookup("/a/b", &|r| r != 0), Some(1));
        assert_eq!(index.lookup("/a/b", &|r| r > 1), Some(2));
        assert_eq!(index.lookup("/a/b", &|r| r > 2), Some(3));
        assert_eq!(index.lookup("/a/b", &|r| r > 3), None);
        assert_eq!(index.lookup("/ab", &all), None);
    }

    #[test]
    fn deep_tries_do_not_recurse() {
        let deep = "/a".repeat(200_000);
        let mut index = PathIndex::default();
        index.insert(0, &PathMatch::Prefix(deep.clone()));
        index.insert(1, &PathMatch::Prefix("/".into()));
        assert_eq!(index.lookup(&format!("{deep}/b"), &|_| true), Some(0));
        assert_eq!(index.lookup(&format!("{deep}/b"), &|r| r == 1), Some(1));
        assert_eq!(index.lookup(&deep[..deep.len() - 2], &|_| true), Some(1));
    }
}
