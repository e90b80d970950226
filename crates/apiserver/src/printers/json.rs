//! Lenient accessors over object JSON and the formatting helpers upstream's
//! printers share (labels, selectors, container lists, timestamps).
//!
//! Every accessor treats a missing, null or wrongly typed field as the Go
//! zero value, so printing never fails.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::human_duration;

/// The value at a JSON pointer, `None` when missing or null.
pub(crate) fn at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    v.pointer(ptr).filter(|x| !x.is_null())
}

/// A string field; `""` when missing or not a string.
pub(crate) fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    opt_str(v, ptr).unwrap_or("")
}

/// A string field, `None` when missing or not a string.
pub(crate) fn opt_str<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    at(v, ptr).and_then(Value::as_str)
}

/// An integer field, `None` when missing or not a number.
pub(crate) fn opt_int(v: &Value, ptr: &str) -> Option<i64> {
    at(v, ptr).and_then(as_int)
}

/// An integer field; 0 when missing.
pub(crate) fn int_at(v: &Value, ptr: &str) -> i64 {
    opt_int(v, ptr).unwrap_or(0)
}

/// A JSON number as an integer (floats are truncated, as a typed decode would reject them anyway).
pub(crate) fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        .or_else(|| v.as_f64().map(|f| f as i64))
}

/// A boolean field, `None` when missing.
pub(crate) fn opt_bool(v: &Value, ptr: &str) -> Option<bool> {
    at(v, ptr).and_then(Value::as_bool)
}

/// A boolean field; false when missing.
pub(crate) fn bool_at(v: &Value, ptr: &str) -> bool {
    opt_bool(v, ptr).unwrap_or(false)
}

/// An array field; empty when missing.
pub(crate) fn arr_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    at(v, ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The number of keys of an object field; 0 when missing.
pub(crate) fn obj_len(v: &Value, ptr: &str) -> usize {
    at(v, ptr).and_then(Value::as_object).map_or(0, |m| m.len())
}

/// A timestamp field (RFC 3339, with or without fraction). `None` when
/// missing, unparseable or Go's zero time, which upstream treats alike.
pub(crate) fn timestamp(v: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    let s = opt_str(v, ptr)?;
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    // Go's zero time.Time serialises as 0001-01-01T00:00:00Z.
    if t.timestamp() == -62_135_596_800 && t.timestamp_subsec_nanos() == 0 {
        return None;
    }
    Some(t)
}

/// Upstream's `translateTimestampSince`: `<unknown>` for a zero time, else
/// the human duration from `t` to `now`.
pub(crate) fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

/// The `Age` cell of an object.
pub(crate) fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    Value::from(since(timestamp(obj, "/metadata/creationTimestamp"), now))
}

/// The `Name` cell of an object.
pub(crate) fn name(obj: &Value) -> Value {
    Value::from(str_at(obj, "/metadata/name"))
}

/// A JSON integer cell.
pub(crate) fn int_cell(n: i64) -> Value {
    Value::from(n)
}

/// A count as a JSON integer cell.
pub(crate) fn count_cell(n: usize) -> Value {
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A string cell, with `<none>` for the empty string.
pub(crate) fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// Upstream's `labels.FormatLabels`: `k=v` pairs sorted by key, comma
/// joined; `<none>` when empty.
pub(crate) fn format_labels(map: Option<&Value>) -> String {
    let pairs: BTreeMap<&str, &str> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Upstream's `LabelSelectorAsSelector(sel).String()`: requirements sorted
/// by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`. An absent or
/// empty selector gives "". `None` when the selector is invalid (unknown
/// operator, or values that do not fit the operator).
pub(crate) fn selector_string(sel: Option<&Value>) -> Option<String> {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return Some(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = str_at(expr, "/key");
        let mut values: Vec<&str> = arr_at(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match str_at(expr, "/operator") {
            "In" | "NotIn" if values.is_empty() => return None,
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return None,
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(
        reqs.into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Upstream's `metav1.FormatLabelSelector`: the selector string, `<none>`
/// when it selects by nothing, `<error>` when invalid.
pub(crate) fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        None => "<error>".to_string(),
        Some(s) if s.is_empty() => "<none>".to_string(),
        Some(s) => s,
    }
}

/// Upstream's `layoutContainerCells`: container names and images, each comma joined.
pub(crate) fn layout_containers(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// An IntOrString rendered as upstream's `IntOrString.String()`.
pub(crate) fn int_or_string(v: Option<&Value>) -> Option<String> {
    let v = v.filter(|x| !x.is_null())?;
    match v {
        Value::String(s) => Some(s.clone()),
        other => as_int(other).map(|n| n.to_string()),
    }
}

/// A resource quantity as printed (the stored string; numbers as written).
pub(crate) fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// Upstream's "list with more" rendering: up to `max` items comma joined,
/// then ` + N more...` for the rest; `<unset>` when empty.
pub(crate) fn list_with_more(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "<unset>".to_string();
    }
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accessors_default_to_zero_values() {
        let v = json!({"a": {"s": "x", "n": 3, "b": true, "null": null, "arr": [1]}});
        assert_eq!(str_at(&v, "/a/s"), "x");
        assert_eq!(str_at(&v, "/a/n"), "");
        assert_eq!(str_at(&v, "/missing"), "");
        assert_eq!(int_at(&v, "/a/n"), 3);
        assert_eq!(int_at(&v, "/a/s"), 0);
        assert_eq!(opt_int(&v, "/a/null"), None);
        assert!(bool_at(&v, "/a/b"));
        assert_eq!(arr_at(&v, "/a/arr").len(), 1);
        assert!(arr_at(&v, "/a/s").is_empty());
    }

    #[test]
    fn timestamps_parse_and_zero_time_is_unknown() {
        let v = json!({"t": "2024-05-01T10:00:00Z", "micro": "2024-05-01T10:00:00.123456Z",
                       "zero": "0001-01-01T00:00:00Z", "bad": "yesterday"});
        assert!(timestamp(&v, "/t").is_some());
        assert!(timestamp(&v, "/micro").is_some());
        assert_eq!(timestamp(&v, "/zero"), None);
        assert_eq!(timestamp(&v, "/bad"), None);
        let now = timestamp(&v, "/t").unwrap() + chrono::Duration::seconds(330);
        assert_eq!(since(timestamp(&v, "/t"), now), "5m30s");
        assert_eq!(since(None, now), "<unknown>");
    }

    #[test]
    fn labels_and_selectors_format_like_upstream() {
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(None), "<none>");

        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"}
            ]
        });
        assert_eq!(
            format_label_selector(Some(&sel)),
            "app=web,!canary,env notin (dev),tier in (be,fe),zone"
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Near"}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
        assert_eq!(selector_string(Some(&bad)), None);
    }

    #[test]
    fn containers_and_lists() {
        let cs = [
            json!({"name": "a", "image": "nginx"}),
            json!({"name": "b", "image": "busybox"}),
        ];
        assert_eq!(
            layout_containers(&cs),
            ("a,b".to_string(), "nginx,busybox".to_string())
        );
        let items: Vec<String> = (1..=5).map(|i| i.to_string()).collect();
        assert_eq!(list_with_more(&items, 3), "1,2,3 + 2 more...");
        assert_eq!(list_with_more(&items[..2], 3), "1,2");
        assert_eq!(list_with_more(&[], 3), "<unset>");
        assert_eq!(int_or_string(Some(&json!(2))), Some("2".to_string()));
        assert_eq!(int_or_string(Some(&json!("50%"))), Some("50%".to_string()));
        assert_eq!(int_or_string(None), None);
    }
}
