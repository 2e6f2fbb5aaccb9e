//! The little of RESP (the Redis serialization protocol, version 2) the counter store speaks:
//! commands as arrays of bulk strings, and the replies they get. Pure: bytes in, bytes out.

use std::fmt;

/// Longest bulk string and array accepted from the server, and the deepest nesting: a reply
/// past them is a broken or hostile server, not one to buffer without end.
const MAX_BULK: usize = 1 << 20;
const MAX_ARRAY: usize = 1 << 16;
const MAX_DEPTH: usize = 4;

/// One argument of a command.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    Bytes(&'a [u8]),
    Int(i64),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(text: &'a str) -> Self {
        Arg::Bytes(text.as_bytes())
    }
}

/// Appends the command `args` to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[Arg<'_>]) {
    let mut number = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(number.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        let mut digits = itoa::Buffer::new();
        let bytes = match *arg {
            Arg::Bytes(bytes) => bytes,
            Arg::Int(n) => digits.format(n).as_bytes(),
        };
        out.push(b'$');
        out.extend_from_slice(number.format(bytes.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Simple(String),
    /// `-CODE message`: the server refused the command.
    Error(String),
    Integer(i64),
    /// `None`: the null bulk string (a missing field).
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Frame>>),
}

impl Frame {
    /// The integer a reply holds (an integer, or a bulk string of digits).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Frame::Integer(n) => Some(*n),
            Frame::Bulk(Some(bytes)) => std::str::from_utf8(bytes).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The reply for an error message: at most 200 characters of it (a reply may be large,
    /// and it comes from the store, not from us).
    pub fn shown(&self) -> String {
        let text = format!("{self:?}");
        match text.char_indices().nth(200) {
            Some((end, _)) => format!("{}…", &text[..end]),
            None => text,
        }
    }

    /// The text a reply holds (a simple or bulk string).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Simple(text) => Some(text),
            Frame::Bulk(Some(bytes)) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

/// What the server sent is not RESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a Redis reply: {}", self.0)
    }
}

/// The first reply in `buf` and the bytes it took, or `None` when `buf` holds only part of it.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let Some((line, next)) = line(buf, at)? else { return Ok(None) };
    let (&kind, rest) = line.split_first().ok_or_else(|| ProtocolError("an empty line".into()))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    let frame = match kind {
        b'+' => (Frame::Simple(text()), next),
        b'-' => (Frame::Error(text()), next),
        b':' => (Frame::Integer(number(rest)?), next),
        b'$' => match length(rest, MAX_BULK)? {
            None => (Frame::Bulk(None), next),
            Some(len) => {
                let end = next + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError("a bulk string longer than it said".into()));
                }
                (Frame::Bulk(Some(buf[next..end].to_vec())), end + 2)
            }
        },
        b'*' => match length(rest, MAX_ARRAY)? {
            None => (Frame::Array(None), next),
            Some(_) if depth >= MAX_DEPTH => return Err(ProtocolError("arrays nested too deep".into())),
            Some(len) => {
                let mut items = Vec::with_capacity(len.min(64));
                let mut at = next;
                for _ in 0..len {
                    let Some((item, after)) = parse_at(buf, at, depth + 1)? else { return Ok(None) };
                    items.push(item);
                    at = after;
                }
                (Frame::Array(Some(items)), at)
            }
        },
        other => return Err(ProtocolError(format!("unknown type byte {other:#04x}"))),
    };
    Ok(Some(frame))
}

/// The line starting at `at` (without its CRLF) and where the next begins.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let Some(rest) = buf.get(at..) else { return Ok(None) };
    match rest.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        None if rest.len() > MAX_BULK => Err(ProtocolError("a line without an end".into())),
        None => Ok(None),
    }
}

fn number(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError(format!("{:?} is not an integer", String::from_utf8_lossy(digits))))
}

/// A length: `None` for -1 (null), refused past `max`.
fn length(digits: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    match number(digits)? {
        -1 => Ok(None),
        n if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        n => Err(ProtocolError(format!("a length of {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[Arg::from("EVALSHA"), Arg::Bytes(b"ab"), Arg::Int(-12)]);
        assert_eq!(out, b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$3\r\n-12\r\n");
    }

    #[test]
    fn replies_of_every_kind_parse_and_partial_ones_wait() {
        let reply = b"*5\r\n:1714000000000000\r\n:-3\r\n$-1\r\n$3\r\nday\r\n+OK\r\n";
        let (frame, used) = parse(reply).unwrap().unwrap();
        assert_eq!(used, reply.len());
        assert_eq!(
            frame,
            Frame::Array(Some(vec![
                Frame::Integer(1_714_000_000_000_000),
                Frame::Integer(-3),
                Frame::Bulk(None),
                Frame::Bulk(Some(b"day".to_vec())),
                Frame::Simple("OK".into()),
            ]))
        );
        for cut in 0..reply.len() {
            assert_eq!(parse(&reply[..cut]), Ok(None), "{cut} bytes");
        }
        let (error, _) = parse(b"-NOSCRIPT No matching script\r\n").unwrap().unwrap();
        assert_eq!(error, Frame::Error("NOSCRIPT No matching script".into()));
        assert_eq!(Frame::Bulk(Some(b"42".to_vec())).as_i64(), Some(42));
    }

    #[test]
    fn what_is_not_resp_is_refused_not_buffered() {
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":12x\r\n").is_err());
        assert!(parse(b"$5\r\nabcdefg\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
        assert!(parse(b"*-2\r\n").is_err());
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").is_err());
        assert!(parse(&vec![b'+'; MAX_BULK + 10]).is_err());
    }
}
