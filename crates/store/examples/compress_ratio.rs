//! How well the embedded store's in-memory value compression does on
//! realistic API objects (the API server benchmark's filler compresses far
//! better than real objects do).
//!
//! ```text
//! cargo run --release -p navarch-store --example compress_ratio -- [JSON_DIR...] [--pods 2000]
//! ```
//!
//! Measures three sets: every `*.json` file under the given directories
//! (e.g. `crates/api/tests/fixtures/protobuf`; whitespace outside strings is
//! removed, as the API server stores compact JSON), generated Pods shaped like
//! what a real API server stores for a Deployment's pods (metadata with
//! managedFields, a filled-in spec, status with conditions), and the
//! benchmark's ConfigMaps. For each it prints raw and stored bytes at zstd
//! level 1 (values under 128 bytes or saving less than an eighth stay raw),
//! level 3, and level 1 with a raw-content dictionary made of the set's first
//! four values (what the store does per key group), plus compress / decompress
//! time per value.

use std::path::{Path, PathBuf};
use std::time::Instant;

use zstd::bulk::{Compressor, Decompressor};

const MIN_LEN: usize = 128;

/// Removes whitespace outside JSON strings.
fn minify(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_str, mut escaped) = (false, false);
    for &c in json {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

fn json_files(dir: &Path, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("cannot read {}", dir.display());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            if let Ok(raw) = std::fs::read(&path) {
                out.push(minify(&raw));
            }
        }
    }
}

/// A hex string derived from `seed` (stands in for uids and hashes).
fn hex(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdef"[(x % 16) as usize])
        })
        .collect()
}

fn uid(seed: u64) -> String {
    let h = hex(seed, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A Pod of a Deployment as an API server stores it after scheduling and
/// start-up (compact JSON, about 3.5 KiB).
fn pod(i: u64) -> Vec<u8> {
    let app = ["web", "api", "worker", "cache"][(i % 4) as usize];
    let rs_hash = hex(i / 50, 10);
    let name = format!("{app}-{rs_hash}-{}", &hex(i, 5));
    let ns = format!("team-{}", i % 7);
    let node = format!("node-{}", i % 40);
    let pod_ip = format!("10.244.{}.{}", (i / 250) % 250, i % 250 + 2);
    let ts = format!(
        "2024-11-{:02}T{:02}:{:02}:{:02}Z",
        1 + i % 28,
        i % 24,
        i % 60,
        (i * 7) % 60
    );
    let ts2 = format!(
        "2024-11-{:02}T{:02}:{:02}:{:02}Z",
        1 + i % 28,
        i % 24,
        (i + 1) % 60,
        (i * 7 + 3) % 60
    );
    let image = format!("registry.example.com/{app}:1.{}.{}", i % 5, i % 3);
    let cid = hex(i + 1000, 64);
    format!(concat!(
        r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","generateName":"{app}-{rs}-","namespace":"{ns}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"{ts}","#,
        r#""labels":{{"app":"{app}","pod-template-hash":"{rs}","tier":"backend"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{app}-{rs}","uid":"{ouid}","controller":true,"blockOwnerDeletion":true}}],"#,
        r#""managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"{ts}","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:generateName":{{}},"f:labels":{{".":{{}},"f:app":{{}},"f:pod-template-hash":{{}},"f:tier":{{}}}},"f:ownerReferences":{{".":{{}},"k:{{\"uid\":\"{ouid}\"}}":{{}}}}}},"f:spec":{{"f:containers":{{"k:{{\"name\":\"{app}\"}}":{{".":{{}},"f:env":{{".":{{}},"k:{{\"name\":\"LOG_LEVEL\"}}":{{".":{{}},"f:name":{{}},"f:value":{{}}}},"k:{{\"name\":\"POD_NAME\"}}":{{".":{{}},"f:name":{{}},"f:valueFrom":{{".":{{}},"f:fieldRef":{{}}}}}}}},"f:image":{{}},"f:imagePullPolicy":{{}},"f:name":{{}},"f:ports":{{".":{{}},"k:{{\"containerPort\":8080,\"protocol\":\"TCP\"}}":{{".":{{}},"f:containerPort":{{}},"f:name":{{}},"f:protocol":{{}}}}}},"f:readinessProbe":{{}},"f:resources":{{".":{{}},"f:limits":{{}},"f:requests":{{}}}},"f:terminationMessagePath":{{}},"f:terminationMessagePolicy":{{}}}}}},"f:dnsPolicy":{{}},"f:enableServiceLinks":{{}},"f:restartPolicy":{{}},"f:schedulerName":{{}},"f:securityContext":{{}},"f:terminationGracePeriodSeconds":{{}}}}}}}},"#,
        r#"{{"manager":"kubelet","operation":"Update","apiVersion":"v1","time":"{ts2}","fieldsType":"FieldsV1","fieldsV1":{{"f:status":{{"f:conditions":{{"k:{{\"type\":\"ContainersReady\"}}":{{".":{{}},"f:lastProbeTime":{{}},"f:lastTransitionTime":{{}},"f:status":{{}},"f:type":{{}}}},"k:{{\"type\":\"Initialized\"}}":{{".":{{}},"f:lastProbeTime":{{}},"f:lastTransitionTime":{{}},"f:status":{{}},"f:type":{{}}}},"k:{{\"type\":\"Ready\"}}":{{".":{{}},"f:lastProbeTime":{{}},"f:lastTransitionTime":{{}},"f:status":{{}},"f:type":{{}}}}}},"f:containerStatuses":{{}},"f:hostIP":{{}},"f:phase":{{}},"f:podIP":{{}},"f:podIPs":{{".":{{}},"k:{{\"ip\":\"{ip}\"}}":{{".":{{}},"f:ip":{{}}}}}},"f:startTime":{{}}}}}},"subresource":"status"}}]}},"#,
        r#""spec":{{"volumes":[{{"name":"kube-api-access-{vol}","projected":{{"sources":[{{"serviceAccountToken":{{"expirationSeconds":3607,"path":"token"}}}},{{"configMap":{{"name":"kube-root-ca.crt","items":[{{"key":"ca.crt","path":"ca.crt"}}]}}}},{{"downwardAPI":{{"items":[{{"path":"namespace","fieldRef":{{"apiVersion":"v1","fieldPath":"metadata.namespace"}}}}]}}}}],"defaultMode":420}}}}],"#,
        r#""containers":[{{"name":"{app}","image":"{image}","ports":[{{"name":"http","containerPort":8080,"protocol":"TCP"}}],"env":[{{"name":"LOG_LEVEL","value":"info"}},{{"name":"POD_NAME","valueFrom":{{"fieldRef":{{"apiVersion":"v1","fieldPath":"metadata.name"}}}}}}],"resources":{{"limits":{{"cpu":"500m","memory":"256Mi"}},"requests":{{"cpu":"100m","memory":"128Mi"}}}},"volumeMounts":[{{"name":"kube-api-access-{vol}","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}}],"readinessProbe":{{"httpGet":{{"path":"/healthz","port":8080,"scheme":"HTTP"}},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3}},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}}],"#,
        r#""restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","serviceAccount":"default","nodeName":"{node}","securityContext":{{}},"schedulerName":"default-scheduler","tolerations":[{{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}},{{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"}},"#,
        r#""status":{{"phase":"Running","conditions":[{{"type":"Initialized","status":"True","lastProbeTime":null,"lastTransitionTime":"{ts}"}},{{"type":"Ready","status":"True","lastProbeTime":null,"lastTransitionTime":"{ts2}"}},{{"type":"ContainersReady","status":"True","lastProbeTime":null,"lastTransitionTime":"{ts2}"}},{{"type":"PodScheduled","status":"True","lastProbeTime":null,"lastTransitionTime":"{ts}"}}],"#,
        r#""hostIP":"192.168.0.{host}","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"startTime":"{ts}","containerStatuses":[{{"name":"{app}","state":{{"running":{{"startedAt":"{ts2}"}}}},"lastState":{{}},"ready":true,"restartCount":0,"image":"{image}","imageID":"{image}@sha256:{digest}","containerID":"containerd://{cid}","started":true}}],"qosClass":"Burstable"}}}}"#),
        name = name, app = app, rs = rs_hash, ns = ns, uid = uid(i), rv = 100_000 + i * 3, ts = ts, ts2 = ts2,
        ouid = uid(i / 50 + 7), ip = pod_ip, vol = hex(i + 77, 5), image = image, node = node,
        host = 10 + i % 40, digest = hex(i % 5 + 500, 64), cid = cid,
    ).into_bytes()
}

/// The API server benchmark's ConfigMap (loadgen's filler), as stored.
fn bench_configmap(i: u64) -> Vec<u8> {
    let pad = 560;
    let filler: String = (0..pad)
        .map(|k| char::from(b'a' + ((k * 7 + k / 26) % 26) as u8))
        .collect();
    format!(
        concat!(
            r#"{{"apiVersion":"v1","data":{{"payload":"{f}"}},"kind":"ConfigMap","metadata":{{"creationTimestamp":"2024-11-23T07:49:{s:02}Z","labels":{{"app":"navarch-bench"}},"#,
            r#""managedFields":[{{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{{"f:data":{{".":{{}},"f:payload":{{}}}},"f:metadata":{{"f:labels":{{".":{{}},"f:app":{{}}}}}}}},"manager":"loadgen","operation":"Update","time":"2024-11-23T07:49:{s:02}Z"}}],"#,
            r#""name":"cm-{i}","namespace":"bench","resourceVersion":"{rv}","uid":"{uid}"}}}}"#
        ),
        f = filler,
        s = i % 60,
        i = i,
        rv = 1000 + i,
        uid = uid(i),
    )
    .into_bytes()
}

struct Row {
    raw: usize,
    stored: usize,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.raw as f64 / self.stored.max(1) as f64
    }
}

/// Bytes held for `values` with per-value compression at `level` (optionally
/// with a raw-content dictionary), applying the store's keep-raw rules.
fn measure(values: &[Vec<u8>], level: i32, dict: Option<&[u8]>) -> (Row, f64, f64) {
    let mut c = match dict {
        Some(d) => Compressor::with_dictionary(level, d),
        None => Compressor::new(level),
    }
    .expect("compressor");
    let mut d = match dict {
        Some(dict) => Decompressor::with_dictionary(dict),
        None => Decompressor::new(),
    }
    .expect("decompressor");
    let mut row = Row { raw: 0, stored: 0 };
    let mut frames = Vec::with_capacity(values.len());
    let t = Instant::now();
    for v in values {
        row.raw += v.len();
        let stored = if v.len() < MIN_LEN {
            None
        } else {
            c.compress(v)
                .ok()
                .filter(|f| f.len() + v.len() / 8 <= v.len())
        };
        row.stored += stored.as_ref().map_or(v.len(), Vec::len);
        frames.push((stored, v.len()));
    }
    let c_us = t.elapsed().as_secs_f64() * 1e6 / values.len().max(1) as f64;
    let t = Instant::now();
    for (frame, len) in &frames {
        if let Some(frame) = frame {
            let out = d.decompress(frame, *len).expect("decompress");
            assert_eq!(out.len(), *len);
        }
    }
    let d_us = t.elapsed().as_secs_f64() * 1e6 / values.len().max(1) as f64;
    (row, c_us, d_us)
}

fn report(set: &str, values: &[Vec<u8>]) {
    if values.is_empty() {
        return;
    }
    let n = values.len();
    let (l1, c1, d1) = measure(values, 1, None);
    let (l3, c3, _) = measure(values, 3, None);
    // Dictionary as the store builds it: the first 4 values of the set,
    // concatenated (at most 16 KiB), excluded from the measurement.
    let samples = values.len().min(4);
    let mut dict: Vec<u8> = values[..samples].concat();
    dict.truncate(16 << 10);
    let (ld, cd, dd) = measure(&values[samples..], 1, Some(&dict));
    println!(
        "compress_{set}_values {n}\ncompress_{set}_avg_raw_bytes {:.0}\ncompress_{set}_avg_stored_bytes_l1 {:.0}\ncompress_{set}_ratio_l1 {:.2}\ncompress_{set}_ratio_l3 {:.2}\ncompress_{set}_ratio_dict_l1 {:.2}\ncompress_{set}_compress_us_l1 {c1:.1}\ncompress_{set}_compress_us_l3 {c3:.1}\ncompress_{set}_decompress_us_l1 {d1:.1}\ncompress_{set}_compress_us_dict_l1 {cd:.1}\ncompress_{set}_decompress_us_dict_l1 {dd:.1}",
        l1.raw as f64 / n as f64,
        l1.stored as f64 / n as f64,
        l1.ratio(),
        l3.ratio(),
        ld.ratio(),
    );
}

fn main() {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut pods = 2000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--pods" {
            pods = args.next().and_then(|v| v.parse().ok()).unwrap_or(pods);
        } else {
            dirs.push(PathBuf::from(a));
        }
    }
    let mut fixtures = Vec::new();
    for d in &dirs {
        json_files(d, &mut fixtures);
    }
    report("fixtures", &fixtures);
    let pods: Vec<Vec<u8>> = (0..pods).map(pod).collect();
    report("pods", &pods);
    let cms: Vec<Vec<u8>> = (0..2000).map(bench_configmap).collect();
    report("bench_configmaps", &cms);
}
