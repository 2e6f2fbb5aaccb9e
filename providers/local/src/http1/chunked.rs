//! The chunked transfer coding (RFC 9112 §7.1): a decoder fed whatever bytes arrived, and the
//! framing the encoder writes around each piece of a response body.

use bytes::{Bytes, BytesMut};

/// Longest chunk-size line (size, extensions) and longest trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// Past the size: extensions up to the line's end (ignored), `seen` bytes so far.
    Extension {
        size: u64,
        seen: usize,
    },
    /// The LF after a size line's CR.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines (dropped), `seen` bytes so far; `line` bytes on the
    /// current line.
    Trailers {
        seen: usize,
        line: usize,
    },
    TrailersLf {
        seen: usize,
        line: usize,
    },
    Done,
}

/// What one step of decoding gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body ended (its trailers, if any, were read and dropped).
    End,
}

/// The body is not well-formed chunked coding.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub(crate) struct ChunkError(&'static str);

/// Decodes a chunked body from the front of a buffer, leaving whatever follows it there.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self { state: State::Size { size: 0, digits: 0 } }
    }
}

impl ChunkedDecoder {
    /// Consumes framing from `buf` and returns the next piece of body data (at most `max`
    /// bytes), `NeedMore` when `buf` ran out, or `End`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Decoded, ChunkError> {
        loop {
            if let State::Data { left } = self.state {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()).min(max.max(1));
                let left = left - take as u64;
                self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                return Ok(Decoded::Data(buf.split_to(take).freeze()));
            }
            if self.state == State::Done {
                return Ok(Decoded::End);
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            let _ = buf.split_to(1);
            self.state = self.step(byte)?;
        }
    }

    /// One framing byte.
    fn step(&self, byte: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { size, digits } => match (byte as char).to_digit(16) {
                Some(_) if digits == 16 => return Err(ChunkError("chunk size too large")),
                Some(d) => State::Size { size: size << 4 | u64::from(d), digits: digits + 1 },
                None if digits == 0 => return Err(ChunkError("missing chunk size")),
                None => match byte {
                    b'\r' => State::SizeLf { size },
                    b';' | b' ' | b'\t' => State::Extension { size, seen: 1 },
                    _ => return Err(ChunkError("invalid chunk size")),
                },
            },
            State::Extension { size, seen } => match byte {
                _ if seen >= MAX_LINE => return Err(ChunkError("chunk extension too long")),
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(ChunkError("bare LF in a chunk size line")),
                _ => State::Extension { size, seen: seen + 1 },
            },
            State::SizeLf { size } => match byte {
                b'\n' if size == 0 => State::Trailers { seen: 0, line: 0 },
                b'\n' => State::Data { left: size },
                _ => return Err(ChunkError("expected LF after the chunk size")),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError("expected CRLF after chunk data")),
            },
            State::DataLf => match byte {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err(ChunkError("expected CRLF after chunk data")),
            },
            State::Trailers { seen, line } => match byte {
                _ if seen >= MAX_TRAILERS => return Err(ChunkError("trailers too large")),
                b'\r' => State::TrailersLf { seen: seen + 1, line },
                b'\n' => return Err(ChunkError("bare LF in the trailers")),
                _ => State::Trailers { seen: seen + 1, line: line + 1 },
            },
            State::TrailersLf { seen, line } => match byte {
                b'\n' if line == 0 => State::Done,
                b'\n' => State::Trailers { seen: seen + 1, line: 0 },
                _ => return Err(ChunkError("expected LF in the trailers")),
            },
            State::Data { .. } | State::Done => self.state,
        })
    }
}

/// Writes the size line of a chunk of `len` bytes into `out`.
pub(crate) fn chunk_start(out: &mut BytesMut, len: usize) {
    let mut hex = [0u8; 16];
    let mut at = hex.len();
    let mut n = len;
    loop {
        at -= 1;
        hex[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunk's data.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk, with no trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; the body and what was left after it.
    fn decode_in_pieces(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut pieces = input.chunks(step);
        loop {
            match decoder.decode(&mut buf, 3)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => {
                    // What the client sent after the body stays for the next request.
                    let mut rest = buf.to_vec();
                    pieces.for_each(|piece| rest.extend_from_slice(piece));
                    return Ok((body, rest));
                }
                Decoded::NeedMore => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Err(ChunkError("input ended")),
                },
            }
        }
    }

    #[test]
    fn chunks_decode_whatever_the_pieces_and_leave_the_next_request() {
        let input = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nGET /";
        for step in 1..input.len() {
            let (body, rest) = decode_in_pieces(input, step).expect("valid");
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(rest, b"GET /", "step {step}");
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for input in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert!(decode_in_pieces(input, 1).is_err(), "{input:?}");
        }
    }

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        for (len, line) in [(0, "0\r\n"), (10, "a\r\n"), (4096, "1000\r\n"), (255, "ff\r\n")] {
            let mut out = BytesMut::new();
            chunk_start(&mut out, len);
            assert_eq!(&out[..], line.as_bytes());
        }
    }
}
