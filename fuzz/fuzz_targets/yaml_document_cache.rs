//! Two YAML texts loaded in turn through one document cache: the second load's objects,
//! warnings and errors are those of a load without a cache, and so are those of the second
//! text parsed in three parts.
//!
//! The input is the two texts separated by the first NUL byte (the second defaults to the
//! first), so the fuzzer explores edits of a file as well as unrelated files.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tollbridge::source::files::{
    load_str, load_str_cached, load_str_in_parts, DocumentCache, LoadErrors, Loaded,
};

fuzz_target!(|data: &[u8]| {
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let first = String::from_utf8_lossy(first);
    let second = String::from_utf8_lossy(second);
    let origin = Path::new("fuzz.yaml");
    let mut cache = DocumentCache::default();
    if let Ok(loaded) = load_str_cached(origin, &first, &mut cache) {
        cache.remember(loaded);
    }
    let cached = load_str_cached(origin, &second, &mut cache);
    let fresh = load_str(origin, &second);
    assert_same(cached, &fresh);
    assert_same(load_str_in_parts(origin, &second, 3), &fresh);
});

fn assert_same(loaded: Result<Loaded, LoadErrors>, fresh: &Result<Loaded, LoadErrors>) {
    match (loaded, fresh) {
        (Ok(loaded), Ok(fresh)) => {
            assert_eq!(format!("{:?}", loaded.snapshot), format!("{:?}", fresh.snapshot));
            assert_eq!(loaded.warnings, fresh.warnings);
        }
        (loaded, fresh) => assert_eq!(loaded.err().as_ref(), fresh.as_ref().err()),
    }
}
