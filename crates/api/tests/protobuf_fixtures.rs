//! Decodes the protobuf bodies kubectl 1.33 sent (captured from a stand-in server)
//! and compares them with what `kubectl create ... --dry-run=client -o json` printed
//! for the same command (`token` and `cani*`, which have no dry-run, were written by
//! hand from the command line that produced them).

use std::path::{Path, PathBuf};

use navarch_api::protobuf::decode;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protobuf")
}

/// Drops what Go's JSON prints for unset values but the protobuf decoder leaves out:
/// `creationTimestamp: null` (anywhere), null fields and a top-level `status: {}`.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            for v in m.values_mut() {
                normalize(v);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn strip_empty_status(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        if m.get("status")
            .is_some_and(|s| s.as_object().is_some_and(|o| o.is_empty()))
        {
            m.remove("status");
        }
    }
}

#[test]
fn captured_bodies_decode_to_the_dry_run_json() {
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pb"))
        .collect();
    entries.sort();
    for pb in entries {
        let expected_path = pb.with_extension("json");
        let body = std::fs::read(&pb).expect("read pb");
        let mut got = decode(&body).unwrap_or_else(|e| panic!("{}: {e}", pb.display()));
        let text = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let mut want: Value = serde_json::from_str(&text).expect("expected json");
        for v in [&mut got, &mut want] {
            normalize(v);
            strip_empty_status(v);
        }
        if got != want {
            failures.push(format!(
                "{}:\n got: {}\nwant: {}",
                pb.display(),
                serde_json::to_string(&got).unwrap_or_default(),
                serde_json::to_string(&want).unwrap_or_default()
            ));
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures checked");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
