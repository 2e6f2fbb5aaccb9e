//! Gateway API durations (GEP-2257): one to four `<number><unit>` parts, units h, m, s, ms.

/// Parses a Gateway API duration into milliseconds, or says what is wrong with it.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid duration {text:?}: expected e.g. \"10s\", \"1h30m\", \"500ms\"");
    if text.is_empty() {
        return Err(invalid());
    }
    let bytes = text.as_bytes();
    let (mut pos, mut parts, mut total) = (0usize, 0usize, 0u64);
    while pos < bytes.len() {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == start || pos - start > 5 {
            return Err(invalid());
        }
        let number: u64 = text[start..pos].parse().map_err(|_| invalid())?;
        let unit_ms = if text[pos..].starts_with("ms") {
            pos += 2;
            1
        } else {
            let unit = bytes.get(pos).copied();
            pos += 1;
            match unit {
                Some(b'h') => 3_600_000,
                Some(b'm') => 60_000,
                Some(b's') => 1_000,
                _ => return Err(invalid()),
            }
        };
        total += number * unit_ms;
        parts += 1;
    }
    if parts > 4 {
        return Err(invalid());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn parses_gep_2257_durations() {
        assert_eq!(parse_millis("10s"), Ok(10_000));
        assert_eq!(parse_millis("1h30m"), Ok(5_400_000));
        assert_eq!(parse_millis("500ms"), Ok(500));
        assert_eq!(parse_millis("0s"), Ok(0));
        assert_eq!(parse_millis("1m1s1ms"), Ok(61_001));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "10", "s", "1.5s", "1d", "123456s", "1h1h1h1h1h", "-1s", "10 s"] {
            assert!(parse_millis(bad).is_err(), "{bad}");
        }
    }
}
