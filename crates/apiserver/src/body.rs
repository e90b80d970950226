//! Request bodies: JSON, YAML or Kubernetes protobuf in; a type-checked object out,
//! with unknown fields handled per `fieldValidation`.

use axum::http::HeaderMap;
use navarch_api::catalog::ResourceType;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// Largest request body accepted (upstream: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// An oversized body is still read (and thrown away) up to this size, so that the
/// client, still sending, gets the 413 instead of a broken connection.
pub const DRAIN_LIMIT: usize = 32 * 1024 * 1024;

/// Read a request body of at most [`MAX_BODY`] bytes.
pub async fn read_limited(body: axum::body::Body) -> ApiResult<bytes::Bytes> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("error reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_LIMIT {
                break;
            }
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(
            "the request body is too large (limit 3 MiB)",
        ));
    }
    Ok(buf.freeze())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> ApiResult<FieldValidation> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(o) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {o:?}"
            ))),
        }
    }
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Decode a JSON or YAML document into a JSON value.
pub fn parse_document(ct: &str, body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if ct.contains("yaml") {
        let v: Value = yaml_serde::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        Ok(v)
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }
}

/// Decode an object body (create/update).
pub fn decode_object(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type(headers);
    match ct.as_str() {
        "application/vnd.kubernetes.protobuf" => navarch_api::protobuf::decode(body).map_err(|e| match e {
            navarch_api::protobuf::ProtobufError::UnsupportedKind { .. } => ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"
            )),
            e => ApiError::bad_request(format!("the body of the request was in an unknown format: {e}")),
        }),
        "" | "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml"
        | "application/apply-patch+yaml" | "*/*" => parse_document(&ct, body),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
        ))),
    }
}

/// Check the object's apiVersion/kind against the URL, type-check it through the
/// kind's typed struct, and apply field validation. Returns the normalised object
/// and any warnings.
pub fn normalize(
    rt: &ResourceType,
    mut obj: Value,
    fv: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != rt.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind of the provided object ({k}) does not match the resource ({}, kind {})",
                rt.qualified_plural(),
                rt.kind
            )))
        }
        _ => {}
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != rt.api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                rt.api_version
            )))
        }
        _ => {}
    }
    map.insert("kind".into(), Value::String(rt.kind.into()));
    map.insert("apiVersion".into(), Value::String(rt.api_version.into()));
    let typed = (rt.roundtrip)(obj.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            rt.kind, rt.version, rt.kind
        ))
    })?;
    let mut unknown = Vec::new();
    if fv != FieldValidation::Ignore {
        unknown_fields(&obj, &typed, "", &mut unknown);
    }
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match fv {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
            }
            FieldValidation::Ignore => {}
        }
    }
    Ok((typed, warnings))
}

/// Fields present (and non-null) in `orig` but absent from the typed round trip,
/// as dotted paths (`spec.containers[0].bogus`).
fn unknown_fields(orig: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    let mut stack = Vec::new();
    if !path.is_empty() {
        stack.push(Segment::Key(path));
    }
    collect_unknown(orig, typed, &mut stack, out);
}

/// One step of a field path; the path is only rendered for an unknown field.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn render_path(stack: &[Segment<'_>]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for seg in stack {
        match seg {
            Segment::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Segment::Index(i) => {
                let _ = write!(s, "[{i}]");
            }
        }
    }
    s
}

fn collect_unknown<'a>(
    orig: &'a Value,
    typed: &Value,
    stack: &mut Vec<Segment<'a>>,
    out: &mut Vec<String>,
) {
    match (orig, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                match t.get(k) {
                    Some(tv) => {
                        if v.is_object() || v.is_array() {
                            stack.push(Segment::Key(k));
                            collect_unknown(v, tv, stack, out);
                            stack.pop();
                        }
                    }
                    None if v.is_null() => {}
                    None if is_empty_container(v) => {}
                    None => {
                        stack.push(Segment::Key(k));
                        out.push(render_path(stack));
                        stack.pop();
                    }
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            for (i, (ov, tv)) in o.iter().zip(t.iter()).enumerate() {
                if ov.is_object() || ov.is_array() {
                    stack.push(Segment::Index(i));
                    collect_unknown(ov, tv, stack, out);
                    stack.pop();
                }
            }
        }
        _ => {}
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// DeleteOptions from a DELETE body (may be empty).
pub fn delete_options(body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Object(Map::new()));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid DeleteOptions: not an object",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unknown(orig: Value, typed: Value) -> Vec<String> {
        let mut out = Vec::new();
        unknown_fields(&orig, &typed, "", &mut out);
        out
    }

    #[test]
    fn unknown_fields_are_reported_with_their_paths() {
        let orig = json!({
            "bogus": 1, "gone": null, "emptyMap": {}, "emptyList": [],
            "spec": {"containers": [{"name": "a"}, {"name": "b", "extra": "x",
                "nested": {"deep": true}}], "other": {"k": 1}},
        });
        let typed = json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b", "nested": {}}], "other": {"k": 1}},
        });
        assert_eq!(
            unknown(orig, typed),
            vec![
                "bogus".to_string(),
                "spec.containers[1].extra".to_string(),
                "spec.containers[1].nested.deep".to_string(),
            ]
        );
    }

    #[test]
    fn no_unknown_fields_when_the_round_trip_keeps_everything() {
        let v = json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v"}});
        assert!(unknown(v.clone(), v).is_empty());
    }

    #[test]
    fn normalize_warns_or_rejects_unknown_fields() {
        let rt = navarch_api::catalog::by_plural("", "v1", "configmaps").unwrap();
        let body = json!({"metadata": {"name": "a", "bogus": 1}, "data": {"k": "v"}});
        let (obj, warnings) = normalize(rt, body.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(obj["kind"], "ConfigMap");
        assert_eq!(
            warnings,
            vec!["unknown field \"metadata.bogus\"".to_string()]
        );
        let err = normalize(rt, body.clone(), FieldValidation::Strict).unwrap_err();
        assert!(
            err.message.contains("unknown field \"metadata.bogus\""),
            "{}",
            err.message
        );
        let (_, warnings) = normalize(rt, body, FieldValidation::Ignore).unwrap();
        assert!(warnings.is_empty());
    }
}
