//! Fault rules: which requests a test server injects its faults into, and when.

use hyper::Method;

/// When a rule fires, among the requests it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum When {
    /// The next N matching requests.
    Next(usize),
    /// Every K-th matching request (the K-th, 2K-th, …).
    Every(usize),
    /// Every matching request.
    Always,
}

/// A fault `F` (what the server does instead of, or besides, answering: each server has its
/// own), when to inject it, and which requests it applies to (all by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule<F> {
    fault: F,
    when: When,
    writes_only: bool,
    method: Option<Method>,
    path_contains: Option<String>,
    query_contains: Option<String>,
}

impl<F> Rule<F> {
    /// `fault` for the next `n` matching requests, then never again.
    pub fn next(n: usize, fault: F) -> Rule<F> {
        Rule::new(When::Next(n), fault)
    }

    /// `fault` for every `k`-th matching request (the `k`-th, `2k`-th, …); `k` ≥ 1.
    pub fn every(k: usize, fault: F) -> Rule<F> {
        assert!(k >= 1, "Rule::every needs k >= 1");
        Rule::new(When::Every(k), fault)
    }

    /// `fault` for every matching request.
    pub fn always(fault: F) -> Rule<F> {
        Rule::new(When::Always, fault)
    }

    /// Only write requests: POST, PUT, PATCH, DELETE.
    pub fn writes(mut self) -> Rule<F> {
        self.writes_only = true;
        self
    }

    /// Only requests with this method (`"GET"`, `"PUT"`, …).
    pub fn method(mut self, method: &str) -> Rule<F> {
        self.method = Some(method.parse().expect("an HTTP method"));
        self
    }

    /// Only requests whose path (as the server passes it to [`Rules::fire`]) contains `s`.
    pub fn path_contains(mut self, s: &str) -> Rule<F> {
        self.path_contains = Some(s.to_owned());
        self
    }

    /// Only requests whose query (as the server passes it to [`Rules::fire`]) contains `s`.
    pub fn query_contains(mut self, s: &str) -> Rule<F> {
        self.query_contains = Some(s.to_owned());
        self
    }

    /// The fault it injects.
    pub fn fault(&self) -> &F {
        &self.fault
    }

    fn new(when: When, fault: F) -> Rule<F> {
        Rule { fault, when, writes_only: false, method: None, path_contains: None, query_contains: None }
    }

    fn matches(&self, method: &Method, path: &str, query: &str, ignore_case: bool) -> bool {
        let contains = |haystack: &str, needle: &str| {
            if ignore_case {
                haystack.to_lowercase().contains(&needle.to_lowercase())
            } else {
                haystack.contains(needle)
            }
        };
        (!self.writes_only || is_write(method))
            && self.method.as_ref().is_none_or(|m| m == method)
            && self.path_contains.as_deref().is_none_or(|s| contains(path, s))
            && self.query_contains.as_deref().is_none_or(|s| contains(query, s))
    }
}

/// A rule and what it has seen.
#[derive(Debug)]
struct Active<F> {
    rule: Rule<F>,
    /// Matching requests this rule has seen.
    matched: usize,
    /// Times it fired.
    fired: usize,
}

/// The rules of one server, tried in the order they were added: the first that fires decides
/// a request, and the rules after it do not see (or count) that request.
#[derive(Debug)]
pub struct Rules<F> {
    active: Vec<Active<F>>,
    ignore_case: bool,
}

impl<F> Default for Rules<F> {
    fn default() -> Self {
        Rules::new()
    }
}

impl<F> Rules<F> {
    /// No rules; paths and queries are compared as they are.
    pub fn new() -> Rules<F> {
        Rules { active: Vec::new(), ignore_case: false }
    }

    /// No rules; paths and queries are compared case-insensitively (as ARM treats its paths).
    pub fn ignoring_case() -> Rules<F> {
        Rules { active: Vec::new(), ignore_case: true }
    }

    /// Adds a rule after the existing ones.
    pub fn add(&mut self, rule: Rule<F>) {
        self.active.push(Active { rule, matched: 0, fired: 0 });
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.active.clear();
    }
}

impl<F: Clone> Rules<F> {
    /// Offers a request to the rules in order; the fault of the first that fires, if any.
    /// Every rule up to that one counts the request when it matches.
    pub fn fire(&mut self, method: &Method, path: &str, query: &str) -> Option<F> {
        let ignore_case = self.ignore_case;
        self.active.iter_mut().find_map(|active| {
            if !active.rule.matches(method, path, query, ignore_case) {
                return None;
            }
            active.matched += 1;
            let fire = match active.rule.when {
                When::Next(n) => active.fired < n,
                When::Every(k) => active.matched.is_multiple_of(k),
                When::Always => true,
            };
            fire.then(|| {
                active.fired += 1;
                active.rule.fault.clone()
            })
        })
    }
}

/// POST, PUT, PATCH or DELETE.
pub fn is_write(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(rules: &mut Rules<&'static str>, method: Method, path: &str) -> Option<&'static str> {
        rules.fire(&method, path, "")
    }

    #[test]
    fn next_every_and_always_fire_as_named() {
        let mut rules = Rules::new();
        rules.add(Rule::next(2, "next").writes());
        rules.add(Rule::every(2, "every").path_contains("/b"));
        rules.add(Rule::always("always").method("DELETE"));
        let writes: Vec<_> = (0..3).map(|_| fire(&mut rules, Method::POST, "/a")).collect();
        assert_eq!(writes, [Some("next"), Some("next"), None]);
        let reads: Vec<_> = (0..4).map(|_| fire(&mut rules, Method::GET, "/b")).collect();
        assert_eq!(reads, [None, Some("every"), None, Some("every")]);
        assert_eq!(fire(&mut rules, Method::DELETE, "/c"), Some("always"));
    }

    #[test]
    fn the_first_rule_that_fires_hides_the_request_from_the_later_ones() {
        let mut rules = Rules::new();
        rules.add(Rule::next(1, "first"));
        rules.add(Rule::every(2, "second"));
        assert_eq!(fire(&mut rules, Method::GET, "/"), Some("first"));
        // The second rule has not counted the first request.
        assert_eq!(fire(&mut rules, Method::GET, "/"), None);
        assert_eq!(fire(&mut rules, Method::GET, "/"), Some("second"));
        rules.clear();
        assert_eq!(fire(&mut rules, Method::GET, "/"), None);
    }

    #[test]
    fn case_is_ignored_only_when_asked() {
        let rule = Rule::always("x").path_contains("/Apis").query_contains("$SKIP");
        let mut exact = Rules::new();
        exact.add(rule.clone());
        assert_eq!(exact.fire(&Method::GET, "/apis", "$skip=1"), None);
        assert_eq!(exact.fire(&Method::GET, "/Apis", "$SKIP=1"), Some("x"));
        let mut folded = Rules::ignoring_case();
        folded.add(rule);
        assert_eq!(folded.fire(&Method::GET, "/apis", "$skip=1"), Some("x"));
    }
}
