//! The HTTP/1.1 codec's per-request work: a client's request head parsed into `http` types, an
//! upstream's response head parsed, and the response head written for the client (with the
//! rate-limit headers written from the numbers counted).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, StatusCode};
use tollbridge_local::http1::head::{parse_request, parse_response, HeadLimits};
use tollbridge_local::http1::response::{write_head, BodyFraming};
use tollbridge_local::policy::{LimitHeaders, LimitStatus};

const LIMITS: HeadLimits = HeadLimits { max_bytes: 64 * 1024, max_headers: 100 };

/// What wrk sends in the bench's key + quota scenario.
const BENCH_REQUEST: &[u8] =
    b"GET /svc500/x HTTP/1.1\r\nHost: 127.0.0.1:18081\r\nx-api-key: bench-key-0123456789\r\n\r\n";

/// A browser's request: a dozen headers, some long.
const BROWSER_REQUEST: &[u8] = b"GET /orders/1?expand=items HTTP/1.1\r\nHost: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json, text/plain, */*\r\nAccept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\nReferer: https://shop.example.com/basket\r\n\
Origin: https://shop.example.com\r\nConnection: keep-alive\r\nCookie: session=0123456789abcdef0123456789abcdef\r\n\
Sec-Fetch-Dest: empty\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Site: same-site\r\nx-api-key: quickstart-demo-key-acme\r\n\r\n";

/// nginx's answer in the proxy bench.
const BACKEND_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 21:37:23 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 23\r\nConnection: keep-alive\r\n\r\nhello from the backend\n";

fn heads(c: &mut Criterion) {
    for (name, bytes) in
        [("parse request head, wrk", BENCH_REQUEST), ("parse request head, browser", BROWSER_REQUEST)]
    {
        c.bench_function(name, |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(black_box(bytes));
                black_box(parse_request(&mut buf, LIMITS).expect("valid").expect("whole"))
            })
        });
    }
    c.bench_function("parse response head, nginx", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(BACKEND_RESPONSE));
            black_box(parse_response(&mut buf, LIMITS, false).expect("valid").expect("whole"))
        })
    });
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("server", "nginx/1.22.1"),
        ("date", "Sun, 06 Dec 2026 21:37:23 GMT"),
        ("content-type", "text/plain"),
        ("content-length", "23"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // The scenario's two limits, far from their ends: the five rate-limit headers are written
    // from these numbers as the head is.
    let limits = LimitHeaders::of(&[
        LimitStatus { name: "rate", limit: 1_000_000, window: 1, remaining: 999_999, reset: 1 },
        LimitStatus {
            name: "quota",
            limit: 1_000_000_000,
            window: 2_678_400,
            remaining: 999_999_999,
            reset: 2_243_412,
        },
    ]);
    c.bench_function("write response head, key + quota", |b| {
        let mut out = BytesMut::with_capacity(1024);
        b.iter(|| {
            out.clear();
            write_head(
                &mut out,
                StatusCode::OK,
                black_box(&headers),
                black_box(&limits),
                BodyFraming::Length(23),
                false,
                false,
            );
            black_box(out.len())
        })
    });
}

criterion_group!(benches, heads);
criterion_main!(benches);
