//! Mutation fuzzing of everything that reads client input, on stable Rust
//! (cargo-fuzz needs a nightly toolchain, which this project's machines do not
//! have). A deterministic generator mutates real inputs (the protobuf bodies
//! kubectl sent, their JSON forms, valid objects of every kind) and feeds them
//! to the decoders, defaulting, validation, the three patch types, server-side
//! apply, selectors and quantities. Every call must return (Ok or a typed
//! error); a panic is a failure and the test prints the input that caused it.
//!
//! `FUZZ_ITERS` sets the iterations per target (default 2,000: a few seconds in
//! a debug build); `FUZZ_SEED` replays another sequence. For a long run:
//! `FUZZ_ITERS=200000 cargo test --release -p navarch-api --test fuzz`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use navarch_api::catalog;
use navarch_api::patch::{apply_patch, parse_apply_body, server_side_apply, PatchType};
use navarch_api::selectors::{FieldSelector, LabelSelector};
use navarch_api::validation::{parse_quantity, validate_create, validate_update};
use serde_json::{json, Map, Value};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn iters() -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

fn rng(salt: u64) -> Rng {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    Rng((seed ^ salt.wrapping_mul(0x100_0000_01b3)) | 1)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protobuf")
}

fn fixture_files(ext: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(fixtures()) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.extension().and_then(|e| e.to_str()) == Some(ext) {
            if let Ok(b) = std::fs::read(&p) {
                out.push(b);
            }
        }
    }
    out
}

/// Tokens that make a mutation reach deeper into parsers than random bytes do.
const INTERESTING: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"-1",
    b"1e999",
    b"\"\\u0000\"",
    b"\xff\xff\xff\xff\x0f",
    b"\x0a\x80\x80\x80\x80\x10",
    b"$patch",
    b"$retainKeys",
    b"$setElementOrder/containers",
    b"$deleteFromPrimitiveList/finalizers",
    b"\"replace\"",
    b"\"delete\"",
    b"\"op\"",
    b"\"path\"",
    b"/metadata/labels/~1",
    b"~2",
    b"9223372036854775808",
];

/// One random edit of `data`: bit flip, byte set, cut, duplicate, insert a
/// token, or splice with another input.
fn mutate(r: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    let edits = 1 + r.below(4);
    for _ in 0..edits {
        let len = data.len();
        match r.below(7) {
            0 if len > 0 => {
                let i = r.below(len);
                data[i] ^= 1 << r.below(8);
            }
            1 if len > 0 => {
                let i = r.below(len);
                data[i] = r.next() as u8;
            }
            2 if len > 0 => {
                let i = r.below(len);
                let n = 1 + r.below((len - i).min(64));
                data.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = r.below(len);
                let n = 1 + r.below((len - i).min(64));
                let chunk: Vec<u8> = data[i..i + n].to_vec();
                let at = r.below(len + 1);
                data.splice(at..at, chunk);
            }
            4 => {
                let tok = INTERESTING[r.below(INTERESTING.len())];
                let at = r.below(len + 1);
                data.splice(at..at, tok.iter().copied());
            }
            5 if !others.is_empty() => {
                let o = &others[r.below(others.len())];
                if !o.is_empty() {
                    let from = r.below(o.len());
                    let n = 1 + r.below((o.len() - from).min(256));
                    let at = r.below(len + 1);
                    data.splice(at..at, o[from..from + n].iter().copied());
                }
            }
            _ => data.truncate(r.below(len + 1)),
        }
    }
}

/// A random JSON value, nested up to `depth`.
fn random_value(r: &mut Rng, depth: usize) -> Value {
    let leaf = depth == 0 || r.chance(2);
    match (leaf, r.below(8)) {
        (true, 0) => Value::Null,
        (true, 1) => json!(r.chance(2)),
        (true, 2) => json!(r.next() as i64),
        (true, 3) => json!(-1),
        (true, 4) => json!(1.5e300),
        (true, 5) => json!(""),
        (true, _) => {
            let words = ["a", "Always", "TCP", "100m", "1Gi", "x/y", "-", "ÿ", "a=b"];
            json!(words[r.below(words.len())])
        }
        (false, k) if k % 2 == 0 => Value::Array(
            (0..r.below(4))
                .map(|_| random_value(r, depth - 1))
                .collect(),
        ),
        (false, _) => {
            let keys = [
                "name",
                "image",
                "containers",
                "ports",
                "containerPort",
                "protocol",
                "metadata",
                "labels",
                "spec",
                "status",
                "selector",
                "template",
                "key",
                "value",
                "$patch",
                "replicas",
                "resources",
                "limits",
                "env",
                "volumes",
                "items",
            ];
            let mut m = Map::new();
            for _ in 0..r.below(4) {
                m.insert(
                    keys[r.below(keys.len())].to_string(),
                    random_value(r, depth - 1),
                );
            }
            Value::Object(m)
        }
    }
}

/// Replace one random node of `v` by a random value.
fn graft(r: &mut Rng, v: &mut Value, depth: usize) {
    let stop = depth == 0 || r.chance(4);
    match v {
        Value::Object(m) if !m.is_empty() && !stop => {
            let i = r.below(m.len());
            if let Some(child) = m.values_mut().nth(i) {
                graft(r, child, depth - 1);
            }
        }
        Value::Array(a) if !a.is_empty() && !stop => {
            let i = r.below(a.len());
            graft(r, &mut a[i], depth - 1);
        }
        _ => *v = random_value(r, 3),
    }
}

/// Run `f` over `iters` inputs; collect the ones that panic.
fn campaign<T: std::fmt::Debug>(
    name: &str,
    iters: usize,
    mut make: impl FnMut(&mut Rng) -> T,
    f: impl Fn(&T),
    salt: u64,
) {
    // The panic hook is process-wide: campaigns take turns silencing it.
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = rng(salt);
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for _ in 0..iters {
        let input = make(&mut r);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(&input))) {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("panic {msg:?} on {input:?}"));
        }
    }
    std::panic::set_hook(prev);
    drop(guard);
    assert!(
        failures.is_empty(),
        "{name}: {} of {iters} inputs panicked; first: {}",
        failures.len(),
        failures[0].chars().take(3000).collect::<String>()
    );
}

fn valid_objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}, "finalizers": ["a/b"]},
               "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": "100m", "memory": "1Gi"}},
                        "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                        "volumes": [{"name": "v", "emptyDir": {}}], "tolerations": [{"key": "k", "operator": "Exists"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}, "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]},
                        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"},
               "spec": {"type": "NodePort", "selector": {"app": "d"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "b"}, "binaryData": {"x": "AAAA"}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj", "namespace": "default"},
               "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"podCIDR": "10.42.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
               "status": {"capacity": {"cpu": "2", "pods": "110"}}}),
    ]
}

/// What the API server does with a decoded body: type check, defaults,
/// validation (create and update against the original).
fn admit(obj: &Value, original: &Value) {
    let api_version = original["apiVersion"].as_str().unwrap_or("v1");
    let kind = original["kind"].as_str().unwrap_or("Pod");
    let Some(rt) = catalog::by_kind(api_version, kind) else {
        return;
    };
    let mut v = obj.clone();
    let _ = (rt.roundtrip)(v.clone());
    navarch_api::defaults::apply(rt, &mut v);
    let _ = validate_create(rt, &v);
    let _ = validate_update(rt, &v, original);
}

#[test]
fn protobuf_decoder_survives_mutated_kubectl_bodies() {
    let seeds = fixture_files("pb");
    assert!(!seeds.is_empty(), "protobuf fixtures missing");
    campaign(
        "protobuf::decode",
        iters() * 5,
        |r| {
            let mut b = seeds[r.below(seeds.len())].clone();
            mutate(r, &mut b, &seeds);
            b
        },
        |b| {
            if let Ok(v) = navarch_api::protobuf::decode(b) {
                // whatever decodes must also go through admission unharmed
                admit(&v, &v);
            }
        },
        1,
    );
}

#[test]
fn json_and_yaml_bodies_survive_admission() {
    let mut seeds: Vec<Vec<u8>> = fixture_files("json");
    seeds.extend(valid_objects().iter().map(|v| v.to_string().into_bytes()));
    let originals = valid_objects();
    campaign(
        "json body -> admission",
        iters() * 2,
        |r| {
            let mut b = seeds[r.below(seeds.len())].clone();
            mutate(r, &mut b, &seeds);
            (b, r.below(originals.len()))
        },
        |(b, o)| {
            if let Ok(v) = serde_json::from_slice::<Value>(b) {
                admit(&v, &originals[*o]);
            }
            if let Ok(v) = yaml_serde::from_slice::<Value>(b) {
                admit(&v, &originals[*o]);
            }
            let _ = parse_apply_body(b);
        },
        2,
    );
}

#[test]
fn structurally_wrong_objects_survive_defaults_and_validation() {
    let objects = valid_objects();
    campaign(
        "grafted objects -> admission",
        iters() * 5,
        |r| {
            let o = r.below(objects.len());
            let mut v = objects[o].clone();
            for _ in 0..1 + r.below(3) {
                graft(r, &mut v, 8);
            }
            // keep the kind so the typed paths are reached
            if let Value::Object(m) = &mut v {
                m.insert("apiVersion".into(), objects[o]["apiVersion"].clone());
                m.insert("kind".into(), objects[o]["kind"].clone());
            }
            (v, o)
        },
        |(v, o)| admit(v, &objects[*o]),
        3,
    );
}

#[test]
fn patches_survive_random_bodies() {
    let objects = valid_objects();
    campaign(
        "patches",
        iters() * 3,
        |r| {
            let o = r.below(objects.len());
            let body = match r.below(3) {
                0 => {
                    // a JSON patch with random operations
                    let ops = ["add", "remove", "replace", "move", "copy", "test", "bogus"];
                    let paths = [
                        "/metadata/labels/x",
                        "/spec/containers/0",
                        "/spec/containers/-",
                        "/spec/containers/99",
                        "/metadata/finalizers/0",
                        "",
                        "/",
                        "/a~1b",
                        "/spec/replicas",
                        "/spec/ports/0/port",
                    ];
                    let list: Vec<Value> = (0..1 + r.below(3))
                        .map(|_| {
                            json!({"op": ops[r.below(ops.len())], "path": paths[r.below(paths.len())],
                                   "from": paths[r.below(paths.len())], "value": random_value(r, 3)})
                        })
                        .collect();
                    Value::Array(list)
                }
                _ => {
                    let mut p = objects[o].clone();
                    graft(r, &mut p, 6);
                    if let Some(Value::Object(spec)) = p.get_mut("spec") {
                        if r.chance(2) {
                            spec.insert("$setElementOrder/containers".into(), random_value(r, 2));
                        }
                    }
                    p
                }
            };
            (o, body.to_string().into_bytes(), r.below(3))
        },
        |(o, body, t)| {
            let original = &objects[*o];
            let api_version = original["apiVersion"].as_str().unwrap_or("v1");
            let kind = original["kind"].as_str().unwrap_or("Pod");
            let Some(rt) = catalog::by_kind(api_version, kind) else {
                return;
            };
            let pt = [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge][*t];
            if let Ok(patched) = apply_patch(pt, original, body, rt) {
                admit(&patched, original);
            }
            if let Ok(applied) = parse_apply_body(body) {
                let _ = server_side_apply(Some(original), &applied, "fuzz", false, rt);
            }
        },
        4,
    );
}

#[test]
fn selectors_and_quantities_survive_random_strings() {
    let seeds: Vec<Vec<u8>> = [
        "app=web,tier!=db",
        "env in (a,b),!legacy",
        "x notin (y)",
        "a.b/c==d",
        "k",
        "a>5",
        "metadata.name=x,status.phase!=Running",
        "100m",
        "1.5Gi",
        "1e3",
        "-0.1Ki",
        "12345678901234567890E",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    campaign(
        "selectors/quantities",
        iters() * 5,
        |r| {
            let mut b = seeds[r.below(seeds.len())].clone();
            mutate(r, &mut b, &seeds);
            String::from_utf8_lossy(&b).into_owned()
        },
        |s| {
            if let Ok(sel) = LabelSelector::parse(s) {
                let _ = sel.matches(Some(&Map::new()));
            }
            let _ = FieldSelector::parse(s);
            let _ = parse_quantity(s);
        },
        5,
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // serde_json stops at 128 levels; the decoders below it must not recurse
    // without bound either.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(serde_json::from_str::<Value>(&deep).is_err());
    let mut pb = b"k8s\0".to_vec();
    for _ in 0..10_000 {
        // field 1 (TypeMeta/raw), length-delimited, nested over and over
        pb.extend_from_slice(&[0x0a, 0x80, 0x01]);
    }
    assert!(navarch_api::protobuf::decode(&pb).is_err());
}
