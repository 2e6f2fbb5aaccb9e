use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use regex::Regex;
use tollbridge_provider::{
    ActionIr, AttachmentIr, GatewayIr, GatewayKey, KeyValueMatch, ListenerIr, ListenerProtocol,
    LocalSettings, MatchIr, PathMatch, ProviderSettings, RouteId, RouteIr, StringMatch,
};

use super::conditions::first_query_value;
use super::{CompileError, PortRouter, RequestView};

const PORT: u16 = 80;

fn gateway(listeners: Vec<ListenerIr>, routes: Vec<RouteIr>) -> GatewayIr {
    GatewayIr {
        key: GatewayKey::default(),
        provider: ProviderSettings::Local(LocalSettings::default()),
        listeners,
        addresses: Vec::new(),
        infrastructure: Default::default(),
        routes,
        policies: Vec::new(),
    }
}

fn listener(name: &str, port: u16, hostname: Option<&str>) -> ListenerIr {
    ListenerIr {
        name: name.into(),
        port,
        protocol: ListenerProtocol::Http,
        hostname: hostname.map(Into::into),
        certificates: Vec::new(),
    }
}

/// The listener most tests use: port 80, any host.
fn http() -> Vec<ListenerIr> {
    vec![listener("http", PORT, None)]
}

fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.into())
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.into())
}

fn regex(p: &str) -> PathMatch {
    PathMatch::Regex(p.into())
}

fn is(v: &str) -> StringMatch {
    StringMatch::Exact(v.into())
}

fn re(v: &str) -> StringMatch {
    StringMatch::Regex(v.into())
}

/// An entry named `name`, attached to the listener `http` for any host.
fn route(name: &str, path: PathMatch) -> RouteIr {
    RouteIr {
        id: RouteId { namespace: "ns".into(), name: name.into(), ..RouteId::default() },
        attachments: vec![AttachmentIr { listener: "http".into(), hostnames: Vec::new() }],
        matcher: MatchIr { path, method: None, headers: Vec::new(), query_params: Vec::new() },
        filters: Default::default(),
        action: ActionIr::Respond { status: 200 },
        timeouts: Default::default(),
        retry: None,
        policy: None,
    }
}

trait EntryExt {
    /// Replaces the attachments with one to `listener` for `hostnames`.
    fn on(self, listener: &str, hostnames: &[&str]) -> Self;
    fn also_on(self, listener: &str, hostnames: &[&str]) -> Self;
    fn method(self, method: &str) -> Self;
    fn header(self, name: &str, value: StringMatch) -> Self;
    fn query(self, name: &str, value: StringMatch) -> Self;
}

impl EntryExt for RouteIr {
    fn on(mut self, listener: &str, hostnames: &[&str]) -> Self {
        self.attachments.clear();
        self.also_on(listener, hostnames)
    }
    fn also_on(mut self, listener: &str, hostnames: &[&str]) -> Self {
        let hostnames = hostnames.iter().map(|h| h.to_string()).collect();
        self.attachments.push(AttachmentIr { listener: listener.into(), hostnames });
        self
    }
    fn method(mut self, method: &str) -> Self {
        self.matcher.method = Some(method.into());
        self
    }
    fn header(mut self, name: &str, value: StringMatch) -> Self {
        self.matcher.headers.push(KeyValueMatch { name: name.into(), value });
        self
    }
    fn query(mut self, name: &str, value: StringMatch) -> Self {
        self.matcher.query_params.push(KeyValueMatch { name: name.into(), value });
        self
    }
}

/// An owned request, viewed as the proxy would.
#[derive(Clone, Debug)]
struct Req {
    host: String,
    path: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
}

/// A GET to `host` for `target` (path and optional `?query`).
fn get(host: &str, target: &str) -> Req {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    Req { host: host.into(), path: path.into(), query, method: Method::GET, headers: HeaderMap::new() }
}

impl Req {
    fn method(mut self, method: &str) -> Self {
        self.method = Method::from_bytes(method.as_bytes()).unwrap();
        self
    }
    fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        self.headers.append(name, HeaderValue::from_str(value).unwrap());
        self
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            method: &self.method,
            headers: &self.headers,
        }
    }
}

/// A Gateway and its router on port 80.
struct Table {
    gw: GatewayIr,
    router: PortRouter,
}

impl Table {
    fn new(listeners: Vec<ListenerIr>, routes: Vec<RouteIr>) -> Self {
        let gw = gateway(listeners, routes);
        let router = PortRouter::compile(&gw, PORT).expect("routes compile");
        Self { gw, router }
    }

    /// The name of the entry handling `req`.
    fn at(&self, req: Req) -> Option<&str> {
        let hit = self.router.lookup(&req.view());
        assert_eq!(hit, reference(&self.gw, PORT, &req), "router and reference disagree on {req:?}");
        hit.map(|i| self.gw.routes[i].id.name.as_str())
    }
}

// ---- listener selection ----

fn isolated_listeners() -> Vec<ListenerIr> {
    vec![
        listener("foo", PORT, Some("foo.example.com")),
        listener("wild", PORT, Some("*.example.com")),
        listener("any", PORT, None),
        listener("tls", 443, Some("foo.example.com")),
    ]
}

#[test]
fn listener_isolation_picks_the_most_specific_listener_only() {
    let t = Table::new(
        isolated_listeners(),
        vec![
            route("foo-only", prefix("/only")).on("foo", &["foo.example.com"]),
            route("wild", prefix("/")).on("wild", &["*.example.com"]),
            route("any", prefix("/")).on("any", &[]),
        ],
    );
    assert_eq!(t.at(get("foo.example.com", "/only/x")), Some("foo-only"));
    // The exact listener is selected, its routes do not match: no fallback to other listeners.
    assert_eq!(t.at(get("foo.example.com", "/other")), None);
    assert_eq!(t.at(get("bar.example.com", "/other")), Some("wild"));
    assert_eq!(t.at(get("a.b.example.com", "/")), Some("wild"));
    assert_eq!(t.at(get("example.com", "/")), Some("any"));
    assert_eq!(t.at(get("other.org", "/")), Some("any"));
    assert_eq!(t.at(get("", "/")), Some("any"));
    assert_eq!(t.router.listeners(), ["foo", "wild", "any"]);
}

#[test]
fn hosts_name_their_listener_as_routing_chooses_it() {
    let t = Table::new(isolated_listeners(), Vec::new());
    let of = |host| t.router.listener_of(host);
    assert_eq!(of("foo.example.com"), of("FOO.example.com:8443"));
    assert_ne!(of("foo.example.com"), of("bar.example.com"));
    assert_eq!(of("bar.example.com"), of("a.b.example.com"));
    assert_ne!(of("bar.example.com"), of("example.com"));
    assert_eq!(of("example.com"), of("other.org"));
    assert!(of("other.org").is_some());
    let no_catch_all = Table::new(vec![listener("foo", PORT, Some("foo.example.com"))], Vec::new());
    assert_eq!(no_catch_all.router.listener_of("other.org"), None);
}

#[test]
fn no_matching_listener_is_no_match() {
    let t = Table::new(
        vec![listener("foo", PORT, Some("foo.example.com")), listener("wild", PORT, Some("*.example.com"))],
        vec![route("wild", prefix("/")).on("wild", &[]), route("foo", prefix("/")).on("foo", &[])],
    );
    assert_eq!(t.at(get("other.org", "/")), None);
    assert_eq!(t.at(get("example.com", "/")), None);
    assert_eq!(t.at(get("foo.example.com", "/")), Some("foo"));
}

#[test]
fn deeper_wildcard_listener_wins() {
    let t = Table::new(
        vec![
            listener("wild", PORT, Some("*.example.com")),
            listener("deep", PORT, Some("*.foo.example.com")),
        ],
        vec![route("wild", prefix("/")).on("wild", &[]), route("deep", prefix("/")).on("deep", &[])],
    );
    assert_eq!(t.at(get("a.foo.example.com", "/")), Some("deep"));
    assert_eq!(t.at(get("a.b.foo.example.com", "/")), Some("deep"));
    assert_eq!(t.at(get("foo.example.com", "/")), Some("wild"));
    assert_eq!(t.at(get("x.y.example.com", "/")), Some("wild"));
    assert_eq!(t.at(get("example.com", "/")), None);
}

#[test]
fn host_port_and_case_are_ignored() {
    let t = Table::new(
        isolated_listeners(),
        vec![
            route("foo", prefix("/")).on("foo", &["foo.example.com"]),
            route("wild", prefix("/")).on("wild", &["*.example.com"]),
        ],
    );
    assert_eq!(t.at(get("FOO.Example.COM:8080", "/")), Some("foo"));
    assert_eq!(t.at(get("foo.example.com:80", "/")), Some("foo"));
    assert_eq!(t.at(get("Bar.EXAMPLE.com:443", "/")), Some("wild"));
}

#[test]
fn entries_on_other_ports_are_not_served() {
    let t = Table::new(
        isolated_listeners(),
        vec![
            route("tls", prefix("/")).on("tls", &["foo.example.com"]),
            route("ghost", prefix("/")).on("no-such-listener", &[]),
            route("foo", prefix("/foo")).on("foo", &["foo.example.com"]),
        ],
    );
    assert_eq!(t.at(get("foo.example.com", "/")), None);
    assert_eq!(t.at(get("foo.example.com", "/foo")), Some("foo"));
    assert_eq!(t.at(get("other.org", "/")), None);
    let on_443 = PortRouter::compile(&t.gw, 443).unwrap();
    assert_eq!(on_443.listeners(), ["tls"]);
    assert_eq!(on_443.lookup(&get("foo.example.com", "/").view()), Some(0));
}

#[test]
fn listeners_sharing_a_hostname_share_routes() {
    let t = Table::new(
        vec![
            listener("one", PORT, Some("a.com")),
            listener("two", PORT, Some("A.com")),
            listener("rest", PORT, None),
        ],
        vec![
            route("one", exact("/one")).on("one", &["a.com"]),
            route("two", exact("/two")).on("two", &["a.com"]),
            route("rest", prefix("/")).on("rest", &[]),
        ],
    );
    assert_eq!(t.router.listeners(), ["one", "two", "rest"]);
    assert_eq!(t.at(get("a.com", "/one")), Some("one"));
    assert_eq!(t.at(get("a.com", "/two")), Some("two"));
    assert_eq!(t.at(get("a.com", "/three")), None);
    assert_eq!(t.at(get("b.com", "/one")), Some("rest"));
}

#[test]
fn a_port_without_listeners_matches_nothing() {
    let gw = gateway(http(), vec![route("all", prefix("/"))]);
    let router = PortRouter::compile(&gw, 8080).unwrap();
    assert!(router.listeners().is_empty());
    assert_eq!(router.lookup(&get("a.com", "/").view()), None);
}

// ---- route hostnames ----

#[test]
fn more_specific_route_hostname_wins_then_falls_through() {
    let t = Table::new(
        http(),
        vec![
            // Ranks first, but only for the wildcard hostname.
            route("wild-exact-a", exact("/a")).on("http", &["*.example.com"]),
            route("foo-a", prefix("/a")).on("http", &["foo.example.com"]),
            route("wild", prefix("/")).on("http", &["*.example.com"]),
            route("any", prefix("/")),
        ],
    );
    assert_eq!(t.at(get("foo.example.com", "/a")), Some("foo-a"));
    assert_eq!(t.at(get("foo.example.com", "/a/b")), Some("foo-a"));
    // Nothing in foo.example.com's bucket matches /b: the wildcard bucket is tried.
    assert_eq!(t.at(get("foo.example.com", "/b")), Some("wild"));
    assert_eq!(t.at(get("bar.example.com", "/a")), Some("wild-exact-a"));
    assert_eq!(t.at(get("bar.example.com", "/a/b")), Some("wild"));
    assert_eq!(t.at(get("other.org", "/a")), Some("any"));
}

#[test]
fn longer_wildcard_route_hostname_wins() {
    let t = Table::new(
        http(),
        vec![
            route("short", prefix("/")).on("http", &["*.example.com"]),
            route("long", prefix("/")).on("http", &["*.foo.example.com"]),
            route("only-get", prefix("/")).on("http", &["*.a.foo.example.com"]).method("GET"),
        ],
    );
    assert_eq!(t.at(get("x.foo.example.com", "/")), Some("long"));
    assert_eq!(t.at(get("x.example.com", "/")), Some("short"));
    assert_eq!(t.at(get("x.a.foo.example.com", "/")), Some("only-get"));
    assert_eq!(t.at(get("x.a.foo.example.com", "/").method("POST")), Some("long"));
    assert_eq!(t.at(get("foo.example.com", "/")), Some("short"));
}

#[test]
fn an_entry_with_several_hostnames_serves_each() {
    let t = Table::new(
        http(),
        vec![route("multi", prefix("/")).on("http", &["a.com", "*.b.com"]).also_on("http", &["c.com"])],
    );
    assert_eq!(t.at(get("a.com", "/")), Some("multi"));
    assert_eq!(t.at(get("x.b.com", "/")), Some("multi"));
    assert_eq!(t.at(get("c.com", "/")), Some("multi"));
    assert_eq!(t.at(get("b.com", "/")), None);
}

// ---- paths ----

#[test]
fn prefixes_match_whole_segments() {
    let t = Table::new(http(), vec![route("abc", prefix("/abc")), route("slash", prefix("/xyz/"))]);
    for path in ["/abc", "/abc/", "/abc/def", "/abc/def/"] {
        assert_eq!(t.at(get("h", path)), Some("abc"), "{path}");
    }
    for path in ["/abcd", "/ab", "/", "", "/ABC", "/x/abc"] {
        assert_eq!(t.at(get("h", path)), None, "{path}");
    }
    // A trailing slash in the prefix is ignored.
    for path in ["/xyz", "/xyz/", "/xyz/1"] {
        assert_eq!(t.at(get("h", path)), Some("slash"), "{path}");
    }
    assert_eq!(t.at(get("h", "/xyzz")), None);
}

#[test]
fn root_prefix_matches_everything() {
    let t = Table::new(http(), vec![route("root", prefix("/"))]);
    for path in ["/", "", "/a", "/a/b/", "*", "//"] {
        assert_eq!(t.at(get("h", path)), Some("root"), "{path}");
    }
}

#[test]
fn exact_paths_respect_trailing_slashes() {
    let t = Table::new(http(), vec![route("abc", exact("/abc")), route("abc-slash", exact("/abc/"))]);
    assert_eq!(t.at(get("h", "/abc")), Some("abc"));
    assert_eq!(t.at(get("h", "/abc/")), Some("abc-slash"));
    assert_eq!(t.at(get("h", "/abc/d")), None);
    assert_eq!(t.at(get("h", "/ABC")), None);
}

#[test]
fn empty_path_is_root() {
    let t = Table::new(http(), vec![route("root", exact("/"))]);
    assert_eq!(t.at(get("h", "")), Some("root"));
    assert_eq!(t.at(get("h", "/")), Some("root"));
}

#[test]
fn paths_are_matched_as_received() {
    let t = Table::new(http(), vec![route("a-b", exact("/a/b")), route("a", prefix("/a"))]);
    assert_eq!(t.at(get("h", "/a%2Fb")), None);
    assert_eq!(t.at(get("h", "/a/%62")), Some("a"));
    assert_eq!(t.at(get("h", "/a/b")), Some("a-b"));
}

#[test]
fn exact_then_regex_then_longest_prefix() {
    let t = Table::new(
        http(),
        vec![
            route("exact", exact("/a/b")),
            route("regex", regex("/r/[0-9]+")),
            route("prefix-ab", prefix("/a/b")),
            route("prefix-a", prefix("/a")),
            route("root", prefix("/")),
        ],
    );
    assert_eq!(t.at(get("h", "/a/b")), Some("exact"));
    assert_eq!(t.at(get("h", "/a/b/")), Some("prefix-ab"));
    assert_eq!(t.at(get("h", "/a/b/c")), Some("prefix-ab"));
    assert_eq!(t.at(get("h", "/a/bc")), Some("prefix-a"));
    assert_eq!(t.at(get("h", "/r/12")), Some("regex"));
    assert_eq!(t.at(get("h", "/r/x")), Some("root"));
    assert_eq!(t.at(get("h", "/zzz")), Some("root"));
}

#[test]
fn regex_ranks_before_a_deeper_prefix() {
    let t = Table::new(http(), vec![route("regex", regex("/.*/deep")), route("deep", prefix("/a/b/c/deep"))]);
    assert_eq!(t.at(get("h", "/a/b/c/deep")), Some("regex"));
    assert_eq!(t.at(get("h", "/a/b/c/deep/x")), Some("deep"));
}

#[test]
fn regex_must_match_the_whole_path() {
    let t = Table::new(
        http(),
        vec![route("v", regex("/v[0-9]")), route("alt", regex("a|/b")), route("svc", regex("/svc/v1/.*"))],
    );
    assert_eq!(t.at(get("h", "/v1")), Some("v"));
    assert_eq!(t.at(get("h", "/v1/x")), None);
    assert_eq!(t.at(get("h", "/xv1")), None);
    assert_eq!(t.at(get("h", "/b")), Some("alt"));
    assert_eq!(t.at(get("h", "a")), Some("alt"));
    assert_eq!(t.at(get("h", "/bb")), None);
    assert_eq!(t.at(get("h", "/svc/v1/")), Some("svc"));
    assert_eq!(t.at(get("h", "/svc/v1/x/y")), Some("svc"));
    assert_eq!(t.at(get("h", "/svc/v1")), None);
}

// ---- method, headers, query ----

#[test]
fn method_headers_and_query_break_ties() {
    let t = Table::new(
        http(),
        vec![
            route("post-header", prefix("/api")).method("POST").header("x-a", is("1")),
            route("post", prefix("/api")).method("POST"),
            route("header-query", prefix("/api")).header("x-a", is("1")).query("q", is("1")),
            route("header", prefix("/api")).header("x-a", is("1")),
            route("query", prefix("/api")).query("q", is("1")),
            route("plain", prefix("/api")),
        ],
    );
    let req = || get("h", "/api/x");
    assert_eq!(t.at(req().method("POST").header("x-a", "1")), Some("post-header"));
    assert_eq!(t.at(req().method("POST")), Some("post"));
    assert_eq!(t.at(req().header("x-a", "1").query_str("q=1")), Some("header-query"));
    assert_eq!(t.at(req().header("x-a", "1")), Some("header"));
    assert_eq!(t.at(req().query_str("q=1")), Some("query"));
    assert_eq!(t.at(req().header("x-a", "2").query_str("q=2")), Some("plain"));
    assert_eq!(t.at(req().method("post")), Some("plain"));
}

#[test]
fn headers_match_names_case_insensitively_and_values_exactly() {
    let t = Table::new(
        http(),
        vec![
            route("exact", prefix("/")).header("x-env", is("Prod")),
            route("regex", prefix("/")).header("x-version", re("v[0-9]+")),
            route("both", prefix("/")).header("x-a", is("1")).header("x-b", is("2")),
        ],
    );
    assert_eq!(t.at(get("h", "/").header("X-Env", "Prod")), Some("exact"));
    assert_eq!(t.at(get("h", "/").header("x-env", "prod")), None);
    assert_eq!(t.at(get("h", "/").header("X-VERSION", "v12")), Some("regex"));
    assert_eq!(t.at(get("h", "/").header("x-version", "v12x")), None);
    assert_eq!(t.at(get("h", "/").header("x-version", "xv1")), None);
    assert_eq!(t.at(get("h", "/").header("x-a", "1")), None);
    assert_eq!(t.at(get("h", "/").header("x-a", "1").header("x-b", "2")), Some("both"));
}

#[test]
fn header_names_in_the_ir_are_compared_case_insensitively() {
    let t = Table::new(http(), vec![route("upper", prefix("/")).header("X-Env", is("1"))]);
    assert_eq!(t.router.lookup(&get("h", "/").header("x-env", "1").view()), Some(0));
}

#[test]
fn query_params_match_names_exactly_on_their_first_value() {
    let t = Table::new(
        http(),
        vec![
            route("exact", prefix("/")).query("q", is("1")),
            route("regex", prefix("/")).query("n", re("[0-9]+")),
            route("spaced", prefix("/")).query("s", is("a b")),
        ],
    );
    assert_eq!(t.at(get("h", "/?q=1")), Some("exact"));
    assert_eq!(t.at(get("h", "/?x=0&q=1")), Some("exact"));
    assert_eq!(t.at(get("h", "/?Q=1")), None);
    assert_eq!(t.at(get("h", "/?q=2&q=1")), None);
    assert_eq!(t.at(get("h", "/?q=1&q=2")), Some("exact"));
    assert_eq!(t.at(get("h", "/?n=42")), Some("regex"));
    assert_eq!(t.at(get("h", "/?n=42a")), None);
    assert_eq!(t.at(get("h", "/?s=a%20b")), Some("spaced"));
    assert_eq!(t.at(get("h", "/")), None);
}

#[test]
fn no_match_is_none() {
    let t = Table::new(http(), vec![route("a", prefix("/a")).method("GET"), route("b", exact("/b"))]);
    assert_eq!(t.at(get("h", "/c")), None);
    assert_eq!(t.at(get("h", "/a").method("DELETE")), None);
    assert_eq!(t.at(get("h", "/b/")), None);
}

// ---- compile errors ----

#[test]
fn invalid_patterns_are_errors_not_panics() {
    let compile = |r: RouteIr| PortRouter::compile(&gateway(http(), vec![r]), PORT);
    assert!(matches!(compile(route("r", regex("/a("))), Err(CompileError::InvalidRegex { .. })));
    // Balanced only once wrapped in an anchoring group: must still be refused.
    assert!(matches!(compile(route("r", regex("/a)|(/b"))), Err(CompileError::InvalidRegex { .. })));
    let header = route("r", prefix("/")).header("x-a", re("[z-a]"));
    assert!(matches!(compile(header), Err(CompileError::InvalidRegex { .. })));
    let name = route("r", prefix("/")).header("bad name", is("1"));
    let err = compile(name).unwrap_err();
    assert!(matches!(err, CompileError::InvalidHeaderName { .. }));
    assert_eq!(err.to_string(), r#"route ns/r rule 0 match 0: invalid header name "bad name""#);
    // Entries not served on this port are not compiled.
    let elsewhere = route("r", regex("/a(")).on("other", &[]);
    assert!(compile(elsewhere).is_ok());
}

// ---- the reference: every entry scanned in rank order ----

/// How specifically `pattern` (a listener or route hostname) matches `host`; lower is more
/// specific, `None` when it does not match.
fn host_specificity(pattern: Option<&str>, host: &str) -> Option<(u8, Reverse<usize>)> {
    let pattern = pattern.unwrap_or("").to_ascii_lowercase();
    if pattern.is_empty() || pattern == "*" {
        return Some((2, Reverse(0)));
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let matches = host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"));
            matches.then_some((1, Reverse(suffix.len())))
        }
        None => (pattern == host).then_some((0, Reverse(0))),
    }
}

fn reference_host(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |end| &authority[..=end])
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => authority,
        }
    };
    host.to_lowercase()
}

fn reference_prefix(prefix: &str, path: &str) -> bool {
    if !prefix.starts_with('/') {
        return false;
    }
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || (path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

fn reference_value(want: &StringMatch, value: &str) -> bool {
    match want {
        StringMatch::Exact(v) => v == value,
        StringMatch::Regex(r) => REFERENCE_REGEXES.with_borrow_mut(|cache| {
            cache
                .entry(r.clone())
                .or_insert_with(|| Regex::new(&format!("^(?:{r})$")).unwrap())
                .is_match(value)
        }),
    }
}

thread_local! {
    static REFERENCE_REGEXES: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
}

fn reference_entry(entry: &RouteIr, path: &str, req: &Req) -> bool {
    let m = &entry.matcher;
    let path_ok = match &m.path {
        PathMatch::Exact(p) => p == path,
        PathMatch::Prefix(p) => reference_prefix(p, path),
        PathMatch::Regex(r) => reference_value(&StringMatch::Regex(r.clone()), path),
    };
    let mut seen_headers = Vec::new();
    let headers_ok = m.headers.iter().all(|h| {
        let name = h.name.to_ascii_lowercase();
        if seen_headers.contains(&name) {
            return true;
        }
        seen_headers.push(name.clone());
        let values: Vec<&str> =
            req.headers.get_all(name.as_str()).iter().map(|v| v.to_str().unwrap()).collect();
        !values.is_empty() && reference_value(&h.value, &values.join(","))
    });
    let mut seen_params = Vec::new();
    let query_ok = m.query_params.iter().all(|q| {
        if seen_params.contains(&&q.name) {
            return true;
        }
        seen_params.push(&q.name);
        let value = req.query.as_deref().and_then(|query| first_query_value(query, &q.name));
        value.is_some_and(|v| reference_value(&q.value, &v))
    });
    path_ok && m.method.as_deref().is_none_or(|x| x == req.method.as_str()) && headers_ok && query_ok
}

/// The lowest rank among the full matches of the most specific route hostname, on the most
/// specific listener: the spec stated directly, scanning every entry.
fn reference(gw: &GatewayIr, port: u16, req: &Req) -> Option<usize> {
    let host = reference_host(&req.host);
    let path = if req.path.is_empty() { "/" } else { req.path.as_str() };
    let on_port = || gw.listeners.iter().filter(|l| l.port == port);
    let best_listener = on_port().filter_map(|l| host_specificity(l.hostname.as_deref(), &host)).min()?;
    let selected: Vec<&str> = on_port()
        .filter(|l| host_specificity(l.hostname.as_deref(), &host) == Some(best_listener))
        .map(|l| l.name.as_str())
        .collect();
    gw.routes
        .iter()
        .enumerate()
        .filter_map(|(rank, entry)| {
            let specificity = entry
                .attachments
                .iter()
                .filter(|a| selected.contains(&a.listener.as_str()))
                .flat_map(|a| {
                    let any = a.hostnames.is_empty().then(|| host_specificity(None, &host));
                    a.hostnames.iter().map(|h| host_specificity(Some(h), &host)).chain(any)
                })
                .flatten()
                .min()?;
            reference_entry(entry, path, req).then_some((specificity, rank))
        })
        .min()
        .map(|(_, rank)| rank)
}

// ---- randomized comparison with the reference ----

impl Req {
    fn query_str(mut self, query: &str) -> Self {
        self.query = Some(query.into());
        self
    }
}

const LISTENER_HOSTS: [Option<&str>; 5] =
    [None, Some("foo.example.com"), Some("*.example.com"), Some("*.foo.example.com"), Some("other.org")];
const ROUTE_HOSTS: [&str; 7] = [
    "foo.example.com",
    "a.foo.example.com",
    "*.example.com",
    "*.foo.example.com",
    "*.a.foo.example.com",
    "bar.example.com",
    "other.org",
];
const REQUEST_HOSTS: [&str; 9] = [
    "foo.example.com",
    "a.foo.example.com",
    "b.a.foo.example.com",
    "bar.example.com",
    "example.com",
    "other.org",
    "FOO.Example.com:8080",
    "x.y.example.com",
    "",
];
const SEGMENTS: [&str; 5] = ["a", "b", "ab", "c", ""];
const REGEXES: [&str; 10] =
    ["/a/.*", "/a/b?", "/[ab]+/c", "/ab|/c", "(?i)/A/b", ".*", "/a/b/c", "/a/", "^/b.*", "/a/b+/c?"];
const HEADER_VALUES: [&str; 3] = ["1", "2", "x"];

fn random_path(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..4);
    let mut path: String = (0..n).map(|_| format!("/{}", SEGMENTS.choose(rng).unwrap())).collect();
    if path.is_empty() || rng.random_bool(0.2) {
        path.push('/');
    }
    path
}

fn random_value(rng: &mut StdRng) -> StringMatch {
    match rng.random_range(0..4) {
        0 => is(HEADER_VALUES.choose(rng).unwrap()),
        1 => is("1,2"),
        2 => re("[12]"),
        _ => re("[0-9,]+"),
    }
}

fn random_entry(rng: &mut StdRng, i: usize, listeners: &[ListenerIr]) -> RouteIr {
    let path = match rng.random_range(0..3) {
        0 => exact(&random_path(rng)),
        1 => prefix(&random_path(rng)),
        _ => regex(REGEXES.choose(rng).unwrap()),
    };
    let mut entry = route(&format!("r{i}"), path);
    entry.attachments.clear();
    for _ in 0..rng.random_range(1..3) {
        let name = match listeners.choose(rng) {
            Some(l) if rng.random_bool(0.9) => l.name.clone(),
            _ => "ghost".to_string(),
        };
        let count = rng.random_range(0..3);
        let hostnames = ROUTE_HOSTS.choose_multiple(rng, count).map(|h| h.to_string()).collect();
        entry.attachments.push(AttachmentIr { listener: name, hostnames });
    }
    if rng.random_bool(0.2) {
        entry = entry.method(["GET", "POST"].choose(rng).unwrap());
    }
    while rng.random_bool(0.25) {
        entry = entry.header(["x-a", "x-b"].choose(rng).unwrap(), random_value(rng));
    }
    while rng.random_bool(0.25) {
        entry = entry.query(["q", "r"].choose(rng).unwrap(), random_value(rng));
    }
    entry
}

fn random_request(rng: &mut StdRng) -> Req {
    let path = match rng.random_range(0..10) {
        0 => String::new(),
        1 => "*".to_string(),
        _ => random_path(rng),
    };
    let mut req = get(REQUEST_HOSTS.choose(rng).unwrap(), &path);
    req = req.method(["GET", "POST", "PUT"].choose(rng).unwrap());
    for _ in 0..rng.random_range(0..3) {
        req = req.header(["x-a", "x-b", "X-A"].choose(rng).unwrap(), HEADER_VALUES.choose(rng).unwrap());
    }
    let query: Vec<String> = (0..rng.random_range(0..3))
        .map(|_| format!("{}={}", ["q", "r", "s"].choose(rng).unwrap(), HEADER_VALUES.choose(rng).unwrap()))
        .collect();
    if !query.is_empty() {
        req = req.query_str(&query.join("&"));
    }
    req
}

/// The translator's order: exact, regex, longest prefix, method, more headers, more queries.
fn precedence(entry: &RouteIr) -> impl Ord {
    let m = &entry.matcher;
    let (kind, len) = match &m.path {
        PathMatch::Exact(p) => (0, p.len()),
        PathMatch::Regex(p) => (1, p.len()),
        PathMatch::Prefix(p) => (2, p.len()),
    };
    (kind, Reverse(len), Reverse(m.method.is_some()), Reverse(m.headers.len()), Reverse(m.query_params.len()))
}

#[test]
fn lookup_equals_the_reference_on_random_tables() {
    let mut rng = StdRng::seed_from_u64(0x70_11_b7_1d);
    let mut hits = 0;
    for round in 0..600 {
        let mut listeners: Vec<ListenerIr> = LISTENER_HOSTS
            .iter()
            .enumerate()
            .filter(|_| rng.random_bool(0.6))
            .map(|(i, h)| listener(&format!("l{i}"), PORT, *h))
            .collect();
        listeners.push(listener("elsewhere", 443, None));
        let count = rng.random_range(0..30);
        let mut routes: Vec<RouteIr> = (0..count).map(|i| random_entry(&mut rng, i, &listeners)).collect();
        // Half the tables in the translator's order, half shuffled: the lowest rank must win
        // either way.
        if round % 2 == 0 {
            routes.sort_by_key(precedence);
        } else {
            routes.shuffle(&mut rng);
        }
        let gw = gateway(listeners, routes);
        let router = PortRouter::compile(&gw, PORT).unwrap();
        for _ in 0..60 {
            let req = random_request(&mut rng);
            let expected = reference(&gw, PORT, &req);
            assert_eq!(router.lookup(&req.view()), expected, "request {req:?}\nroutes {:#?}", gw.routes);
            hits += usize::from(expected.is_some());
        }
    }
    // The generator must exercise matches, not only misses.
    assert!(hits > 4_000, "only {hits} requests matched");
}
