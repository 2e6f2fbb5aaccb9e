//! A small fuzzer-built Gateway IR, compiled for one port and asked about fuzzer-built requests.
//!
//! Invariants: neither compiling nor looking up panics; an IR without regular expressions and
//! with valid header names always compiles; a lookup returns the index of an entry that is
//! attached to a listener on the port; looking up twice gives the same answer.
#![no_main]

use arbitrary::Unstructured;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use tollbridge_local::router::{PortRouter, RequestView};
use tollbridge_provider::{
    ActionIr, AttachmentIr, GatewayIr, GatewayKey, KeyValueMatch, ListenerIr, ListenerProtocol,
    LocalSettings, MatchIr, PathMatch, ProviderSettings, RouteId, RouteIr, StringMatch,
};

const PORTS: [u16; 3] = [80, 443, 8080];
const LISTENER_NAMES: [&str; 4] = ["http", "https", "alt", ""];
const HEADER_NAMES: [&str; 5] = ["x-a", "x-b", "X-A", "bad name", ""];
const QUERY_NAMES: [&str; 5] = ["a", "b", "A", "", "a b"];
const METHODS: [&str; 5] = ["GET", "POST", "get", "PATCH", "X"];

/// Characters for paths, regexes and values, chosen to hit separators, regex syntax and
/// percent-encoding. The last one is not ASCII; request strings never use it (hyper hands the
/// router ASCII only).
const TEXT: &[char] = &[
    '/', '/', '/', '.', '*', '(', ')', '[', ']', 'a', 'b', 'A', '-', '%', '2', 'F', '?', '+', '\\', '^', '$',
    '|', '{', '}', ',', '~', ' ', 'é',
];
/// Characters for hostnames, with port separators, wildcards and case.
const HOST: &[char] = &['a', 'b', 'A', '.', '.', '*', '-', ':', '8', '0', '[', ']', '1', 'é'];

fn text(
    u: &mut Unstructured<'_>,
    alphabet: &[char],
    ascii_only: bool,
    max: usize,
) -> arbitrary::Result<String> {
    let len = u.int_in_range(0..=max)?;
    let usable = if ascii_only { &alphabet[..alphabet.len() - 1] } else { alphabet };
    (0..len).map(|_| u.choose(usable).copied()).collect()
}

/// Path segments, plain and tricky.
const SEGMENTS: [&str; 12] = ["a", "b", "A", "ab", "", ".", "..", "*", "(a)", "[a]", "%2F", "a.b"];

/// A path: usually `/`-separated segments, sometimes free-form text.
fn path(u: &mut Unstructured<'_>, ascii_only: bool) -> arbitrary::Result<String> {
    if u.ratio(1, 4)? {
        return text(u, TEXT, ascii_only, 12);
    }
    let mut path = String::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        path.push('/');
        path.push_str(u.choose(&SEGMENTS)?);
    }
    if path.is_empty() || u.ratio(1, 8)? {
        path.push('/');
    }
    Ok(path)
}

/// A hostname: usually a plain or wildcard name, sometimes free-form text.
fn hostname(u: &mut Unstructured<'_>, ascii_only: bool) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => format!("*.{}", text(u, HOST, ascii_only, 8)?),
        1 => text(u, HOST, ascii_only, 10)?,
        _ => u.choose(&["a.b", "A.b", "b.a.b", "*.b", "*.a.b", "*", "a.b:80", "a.b.", "b"])?.to_string(),
    })
}

/// A header or query value: usually a short plain one.
fn value(u: &mut Unstructured<'_>, ascii_only: bool) -> arbitrary::Result<String> {
    if u.ratio(1, 3)? {
        return text(u, TEXT, ascii_only, 6);
    }
    Ok(u.choose(&["1", "2", "a", "", "a b", "1,2"])?.to_string())
}

fn string_match(u: &mut Unstructured<'_>) -> arbitrary::Result<StringMatch> {
    let value = value(u, false)?;
    Ok(if u.ratio(1, 3)? { StringMatch::Regex(value) } else { StringMatch::Exact(value) })
}

fn path_match(u: &mut Unstructured<'_>) -> arbitrary::Result<PathMatch> {
    let value = path(u, false)?;
    Ok(match u.int_in_range(0..=4u8)? {
        0 | 1 => PathMatch::Exact(value),
        2 | 3 => PathMatch::Prefix(value),
        _ => PathMatch::Regex(value),
    })
}

fn listener(u: &mut Unstructured<'_>) -> arbitrary::Result<ListenerIr> {
    Ok(ListenerIr {
        name: u.choose(&LISTENER_NAMES)?.to_string(),
        port: *u.choose(&PORTS)?,
        protocol: if u.arbitrary()? { ListenerProtocol::Http } else { ListenerProtocol::Https },
        hostname: if u.arbitrary()? { Some(hostname(u, false)?) } else { None },
        address: None,
        certificates: Vec::new(),
    })
}

fn route(u: &mut Unstructured<'_>, n: usize) -> arbitrary::Result<RouteIr> {
    let mut attachments = Vec::new();
    for _ in 0..u.int_in_range(0..=2u8)?.max(u8::from(u.ratio(7, 8)?)) {
        let mut hostnames = Vec::new();
        for _ in 0..u.int_in_range(0..=2u8)? {
            hostnames.push(hostname(u, false)?);
        }
        attachments.push(AttachmentIr { listener: u.choose(&LISTENER_NAMES)?.to_string(), hostnames });
    }
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=2u8)? {
        headers.push(KeyValueMatch { name: u.choose(&HEADER_NAMES)?.to_string(), value: string_match(u)? });
    }
    let mut query_params = Vec::new();
    for _ in 0..u.int_in_range(0..=2u8)? {
        query_params
            .push(KeyValueMatch { name: u.choose(&QUERY_NAMES)?.to_string(), value: string_match(u)? });
    }
    let method = if u.arbitrary()? { Some(u.choose(&METHODS)?.to_string()) } else { None };
    Ok(RouteIr {
        id: RouteId { namespace: "ns".into(), name: format!("r{n}"), ..RouteId::default() },
        attachments,
        matcher: MatchIr { path: path_match(u)?, method, headers, query_params },
        filters: Default::default(),
        action: ActionIr::Respond { status: 200 },
        timeouts: Default::default(),
        policy: None,
    })
}

struct Request {
    host: String,
    path: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
}

/// A hostname a pattern matches: `*` becomes a label, case and a port may be added.
fn host_for(u: &mut Unstructured<'_>, pattern: &str) -> arbitrary::Result<String> {
    let mut host = match pattern.strip_prefix('*') {
        Some(rest) => format!("{}{rest}", text(u, HOST, true, 3)?),
        None => pattern.to_string(),
    };
    if u.ratio(1, 4)? {
        host = host.to_ascii_uppercase();
    }
    if u.ratio(1, 4)? {
        host.push_str(":80");
    }
    Ok(host)
}

/// A request that is random, or built to (nearly) match an entry of `gw`.
fn request(u: &mut Unstructured<'_>, gw: &GatewayIr, port: u16) -> arbitrary::Result<Request> {
    let on_port = |name: &str| gw.listeners.iter().find(|l| l.port == port && l.name == name);
    let attached: Vec<&RouteIr> =
        gw.routes.iter().filter(|r| r.attachments.iter().any(|a| on_port(&a.listener).is_some())).collect();
    let template = if attached.is_empty() || u.ratio(1, 5)? { None } else { Some(*u.choose(&attached)?) };
    let ascii = |s: &str| s.chars().filter(char::is_ascii).collect::<String>();

    let attachment = match template {
        Some(r) => r.attachments.iter().find(|a| on_port(&a.listener).is_some()),
        None => None,
    };
    let listener_host = attachment.and_then(|a| on_port(&a.listener)).and_then(|l| l.hostname.clone());
    let host = match (attachment.filter(|a| !a.hostnames.is_empty()), listener_host) {
        (Some(a), _) if u.ratio(7, 8)? => {
            let pattern = u.choose(&a.hostnames)?;
            host_for(u, &ascii(pattern))?
        }
        (_, Some(pattern)) if u.ratio(7, 8)? => host_for(u, &ascii(&pattern))?,
        _ => hostname(u, true)?,
    };
    let path = match template.map(|r| &r.matcher.path) {
        Some(PathMatch::Exact(p)) if u.ratio(7, 8)? => ascii(p),
        Some(PathMatch::Prefix(p)) if u.ratio(7, 8)? => {
            let mut path = ascii(p);
            if u.arbitrary()? {
                path.push_str(u.choose(&["/", "/a", "a", "//", "/."])?);
            }
            path
        }
        _ => match u.int_in_range(0..=5u8)? {
            0 => String::new(),
            _ => path(u, true)?,
        },
    };
    let mut query = match u.int_in_range(0..=2u8)? {
        0 => None,
        1 => Some(text(u, &['a', 'b', 'A', '=', '&', '%', '2', 'F', '+', '/', ' '], false, 12)?),
        _ => {
            let name = u.choose(&QUERY_NAMES)?;
            Some(format!("{name}={}", value(u, true)?))
        }
    };
    let mut method = Method::from_bytes(u.choose(&METHODS)?.as_bytes()).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    if let Some(route) = template {
        if let Some(m) = route.matcher.method.as_deref().filter(|_| u.ratio(7, 8).unwrap_or(false)) {
            method = Method::from_bytes(m.as_bytes()).unwrap_or(method);
        }
        for kv in &route.matcher.headers {
            if let (StringMatch::Exact(value), true) = (&kv.value, u.ratio(7, 8)?) {
                if let (Ok(name), Ok(value)) =
                    (HeaderName::from_bytes(kv.name.as_bytes()), HeaderValue::from_str(&ascii(value)))
                {
                    headers.append(name, value);
                }
            }
        }
        for kv in &route.matcher.query_params {
            if let (StringMatch::Exact(value), true) = (&kv.value, u.ratio(7, 8)?) {
                let pair = format!("{}={}", ascii(&kv.name), ascii(value));
                query = Some(match query {
                    Some(q) if !q.is_empty() => format!("{q}&{pair}"),
                    _ => pair,
                });
            }
        }
    }
    for _ in 0..u.int_in_range(0..=2u8)? {
        let name = u.choose(&HEADER_NAMES)?;
        let value = text(u, TEXT, true, 6)?;
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            headers.append(name, value);
        }
    }
    Ok(Request { host, path, query, method, headers })
}

/// The IR with every regular expression turned into an exact match and every header name made
/// valid: what is left of `compile`'s documented errors cannot happen.
fn without_regexes(gw: &GatewayIr) -> GatewayIr {
    let mut gw = gw.clone();
    for route in &mut gw.routes {
        if let PathMatch::Regex(p) = &route.matcher.path {
            route.matcher.path = PathMatch::Exact(p.clone());
        }
        for kv in route.matcher.headers.iter_mut().chain(route.matcher.query_params.iter_mut()) {
            if let StringMatch::Regex(v) = &kv.value {
                kv.value = StringMatch::Exact(v.clone());
            }
        }
        for kv in &mut route.matcher.headers {
            if HeaderName::from_bytes(kv.name.as_bytes()).is_err() {
                kv.name = "x-fixed".into();
            }
        }
    }
    gw
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let mut listeners = Vec::new();
    for _ in 0..u.int_in_range(1..=4u8)? {
        listeners.push(listener(u)?);
    }
    let mut routes = Vec::new();
    for n in 0..u.int_in_range(0..=8usize)? {
        routes.push(route(u, n)?);
    }
    let gw = GatewayIr {
        key: GatewayKey::default(),
        provider: ProviderSettings::Local(LocalSettings::default()),
        listeners,
        routes,
        policies: Vec::new(),
    };
    let port = *u.choose(&PORTS)?;
    let (gw, router) = match PortRouter::compile(&gw, port) {
        Ok(router) => (gw, router),
        Err(_) => {
            let gw = without_regexes(&gw);
            match PortRouter::compile(&gw, port) {
                Ok(router) => (gw, router),
                Err(e) => panic!("an IR without regexes and with valid header names failed: {e}"),
            }
        }
    };
    for _ in 0..u.int_in_range(1..=4u8)? {
        let req = request(u, &gw, port)?;
        let view = RequestView {
            host: &req.host,
            path: &req.path,
            query: req.query.as_deref(),
            method: &req.method,
            headers: &req.headers,
        };
        let found = router.lookup(&view);
        assert_eq!(found, router.lookup(&view), "lookup is not deterministic");
        if let Some(i) = found {
            assert!(i < gw.routes.len(), "lookup returned {i} for {} routes", gw.routes.len());
            let on_port = gw.routes[i]
                .attachments
                .iter()
                .any(|a| gw.listeners.iter().any(|l| l.port == port && l.name == a.listener));
            assert!(on_port, "entry {i} is not attached to a listener on port {port}");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
