//! Wrappers for secret material: Debug, Display and Serialize print `<redacted>`.

use std::fmt;

use serde::{Serialize, Serializer};

const REDACTED: &str = "<redacted>";

/// A secret text value (an API key). Its value is reachable only through [`SecretString::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value; call it only where the value must leave the process (a cloud API call).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Secret bytes (a TLS private key). Its value is reachable only through [`SecretBytes::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let key = SecretString::new("s3cr3t-value");
        let pem = SecretBytes::new(b"-----BEGIN PRIVATE KEY-----".to_vec());
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{pem:?}"),
            serde_json::to_string(&key).unwrap(),
            serde_json::to_string(&pem).unwrap(),
        ] {
            assert!(!shown.contains("s3cr3t") && !shown.contains("PRIVATE"), "{shown}");
            assert!(shown.contains(REDACTED));
        }
        assert_eq!(key.expose(), "s3cr3t-value");
    }
}
