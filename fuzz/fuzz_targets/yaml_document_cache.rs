//! Two YAML texts loaded in turn through one document cache: the second load's objects,
//! warnings and errors are those of a load without a cache.
//!
//! The input is the two texts separated by the first NUL byte (the second defaults to the
//! first), so the fuzzer explores edits of a file as well as unrelated files.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tollbridge::source::files::{load_str, load_str_cached, DocumentCache};

fuzz_target!(|data: &[u8]| {
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let first = String::from_utf8_lossy(first);
    let second = String::from_utf8_lossy(second);
    let origin = Path::new("fuzz.yaml");
    let mut cache = DocumentCache::default();
    let _ = load_str_cached(origin, &first, &mut cache);
    let cached = load_str_cached(origin, &second, &mut cache);
    match (cached, load_str(origin, &second)) {
        (Ok(cached), Ok(fresh)) => {
            assert_eq!(format!("{:?}", cached.snapshot), format!("{:?}", fresh.snapshot));
            assert_eq!(cached.warnings, fresh.warnings);
        }
        (cached, fresh) => assert_eq!(cached.err(), fresh.err()),
    }
});
