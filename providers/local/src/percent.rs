//! Percent-decoding shared by query matching, API-key extraction and path normalization.

use std::borrow::Cow;

/// The value of one hex digit.
pub fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The byte a `%XY` escape at `bytes[i]` stands for, if there is a well-formed one.
pub fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes.get(i) != Some(&b'%') {
        return None;
    }
    Some((hex_digit(*bytes.get(i + 1)?)? << 4) | hex_digit(*bytes.get(i + 2)?)?)
}

/// Decodes every `%XY` escape; malformed escapes are kept literally. Borrowed when there is none.
pub fn decode(text: &str) -> Cow<'_, [u8]> {
    let bytes = text.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match escape_at(bytes, i) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// [`decode`] as text; invalid UTF-8 becomes U+FFFD.
pub fn decode_str(text: &str) -> Cow<'_, str> {
    match decode(text) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_malformed_ones() {
        assert_eq!(&*decode("a%20b"), b"a b");
        assert_eq!(&*decode("%zz%4"), b"%zz%4");
        assert!(matches!(decode("plain"), Cow::Borrowed(_)));
        assert_eq!(decode_str("caf%C3%A9"), "café");
        assert_eq!(escape_at(b"%2F", 0), Some(b'/'));
        assert_eq!(escape_at(b"%2", 0), None);
    }
}
