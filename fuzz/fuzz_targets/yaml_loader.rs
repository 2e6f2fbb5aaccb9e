//! YAML text → loader → translator → JSON, and the local proxy's compilers on the result.
//!
//! Invariants: nothing panics, and every Gateway IR the translator produces compiles into a
//! router for each of its ports (the router documents that compile errors only come from IRs
//! the translator did not make).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tollbridge::source::files::load_str;
use tollbridge::translate::translate;
use tollbridge_local::policy::Policies;
use tollbridge_local::router::PortRouter;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(loaded) = load_str(Path::new("fuzz.yaml"), &text) else {
        return;
    };
    let translation = translate(&loaded.snapshot, &tollbridge::providers::capabilities);
    serde_json::to_string(&translation.gateways).expect("gateway IRs serialize");
    serde_json::to_string(&translation.statuses).expect("statuses serialize");
    let _ = translation.statuses.problems();

    for gw in &translation.gateways {
        for listener in &gw.listeners {
            if let Err(e) = PortRouter::compile(gw, listener.port) {
                panic!("translator output does not compile on port {}: {e}", listener.port);
            }
        }
        let _ = Policies::compile(&gw.policies);
    }
});
