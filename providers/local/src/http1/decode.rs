//! A message body taken off the front of a buffer by its framing: a length, the chunked
//! coding, or everything until the peer closes.

use bytes::BytesMut;

use super::chunked::{ChunkError, ChunkedDecoder, Decoded};
use super::head::Framing;

/// Largest piece of body handed on at once.
const BODY_PIECE: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) enum BodyDecoder {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Whatever arrives until the peer closes (its close is the body's end).
    UntilClose,
}

impl BodyDecoder {
    /// The next piece of body: data, `NeedMore` once `buf` ran out, or `End`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        match self {
            Self::Length(0) => Ok(Decoded::End),
            Self::Length(_) | Self::UntilClose if buf.is_empty() => Ok(Decoded::NeedMore),
            Self::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len()).min(BODY_PIECE);
                *left -= take as u64;
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Self::UntilClose => Ok(Decoded::Data(buf.split().freeze())),
            Self::Chunked(decoder) => decoder.decode(buf, BODY_PIECE),
        }
    }

    /// Whether a body of known length has been read whole.
    pub(crate) fn length_done(&self) -> bool {
        matches!(self, Self::Length(0))
    }

    /// Bytes still to come, when the length is known.
    pub(crate) fn left(&self) -> Option<u64> {
        match self {
            Self::Length(left) => Some(*left),
            _ => None,
        }
    }
}

impl From<Framing> for BodyDecoder {
    fn from(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Self::Length(0),
            Framing::Length(length) => Self::Length(length),
            Framing::Chunked => Self::Chunked(ChunkedDecoder::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_takes_what_it_declared_and_leaves_the_rest() {
        let mut buf = BytesMut::from(&b"helloGET /"[..]);
        let mut decoder = BodyDecoder::Length(5);
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Data("hello".into())));
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
        assert_eq!(&buf[..], b"GET /");
        let mut until_close = BodyDecoder::UntilClose;
        assert_eq!(until_close.decode(&mut buf), Ok(Decoded::Data("GET /".into())));
        assert_eq!(until_close.decode(&mut buf), Ok(Decoded::NeedMore));
    }
}
