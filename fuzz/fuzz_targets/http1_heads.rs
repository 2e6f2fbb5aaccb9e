//! Bytes a client or an upstream could send, read as an HTTP/1.1 request head and as a response
//! head, whole and in two reads.
//!
//! Invariants: nothing panics; a head reads the same whether its bytes arrive at once or in two
//! reads cut anywhere; an accepted head never has both a length and chunked framing, and never
//! takes more bytes than it was given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tollbridge_local::http1::head::{
    parse_request, parse_response, Framing, HeadError, HeadLimits, RequestHead, ResponseHead,
};

const LIMITS: HeadLimits = HeadLimits { max_bytes: 2048, max_headers: 16 };

/// What a request head read to: the parts that matter, comparable.
#[derive(Debug, PartialEq)]
enum Request {
    Partial,
    Refused(HeadError),
    Head {
        method: String,
        target: String,
        headers: Vec<(String, Vec<u8>)>,
        framing: Framing,
        keep_alive: bool,
        rest: Vec<u8>,
    },
}

fn request(head: Result<Option<RequestHead>, HeadError>, rest: &BytesMut) -> Request {
    match head {
        Ok(None) => Request::Partial,
        Err(refusal) => Request::Refused(refusal),
        Ok(Some(head)) => {
            let headers = head.request.headers();
            if let Framing::Length(_) = head.framing {
                assert!(!headers.contains_key("transfer-encoding"), "a length beside a coding");
            }
            Request::Head {
                method: head.request.method().to_string(),
                target: head.request.uri().to_string(),
                headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
                framing: head.framing,
                keep_alive: head.keep_alive,
                rest: rest.to_vec(),
            }
        }
    }
}

/// A response head's outcome, comparable.
fn response(head: Result<Option<ResponseHead>, impl std::fmt::Debug>, rest: &BytesMut) -> String {
    match head {
        Ok(Some(head)) => {
            format!("{} {:?} {:?} {} {:?}", head.status, head.headers, head.framing, head.keep_alive, rest)
        }
        Ok(None) => "partial".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// Reads `bytes` with `parse`, in one piece and in two cut at `cut`; both outcomes.
fn both_ways<T>(
    bytes: &[u8],
    cut: usize,
    parse: impl Fn(&mut BytesMut) -> T,
    partial: impl Fn(&T) -> bool,
) -> ((T, BytesMut), (T, BytesMut)) {
    let mut whole = BytesMut::from(bytes);
    let at_once = parse(&mut whole);
    let mut buf = BytesMut::from(&bytes[..cut]);
    let mut first = parse(&mut buf);
    // The second read arrives whatever the first gave; a head read whole leaves it behind.
    buf.extend_from_slice(&bytes[cut..]);
    if partial(&first) {
        first = parse(&mut buf);
    }
    assert!(whole.len() <= bytes.len() && buf.len() <= bytes.len());
    ((at_once, whole), (first, buf))
}

fuzz_target!(|input: (u16, &[u8])| {
    let (cut, bytes) = input;
    let cut = usize::from(cut) % (bytes.len() + 1);

    let ((a, a_rest), (b, b_rest)) =
        both_ways(bytes, cut, |buf| parse_request(buf, LIMITS), |r| matches!(r, Ok(None)));
    assert_eq!(request(a, &a_rest), request(b, &b_rest), "a request head read differently in two reads");

    for head_request in [false, true] {
        let ((a, a_rest), (b, b_rest)) =
            both_ways(bytes, cut, |buf| parse_response(buf, LIMITS, head_request), |r| matches!(r, Ok(None)));
        assert_eq!(
            response(a, &a_rest),
            response(b, &b_rest),
            "a response head read differently in two reads"
        );
    }
});
