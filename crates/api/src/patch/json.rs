//! JSON patch (RFC 6902) and JSON merge patch (RFC 7386).

use serde_json::{Map, Value};

use super::{json_eq, json_type, PatchError};

/// One parsed RFC 6902 operation.
#[derive(Debug)]
enum Op {
    Add(Vec<String>, Value),
    Remove(Vec<String>),
    Replace(Vec<String>, Value),
    Move {
        from: Vec<String>,
        path: Vec<String>,
    },
    Copy {
        from: Vec<String>,
        path: Vec<String>,
    },
    Test(Vec<String>, Value),
}

/// Apply a JSON patch (RFC 6902; `add`, `remove`, `replace`, `move`, `copy`,
/// `test`, `-` to append, `~0`/`~1` pointer escapes). The patch is a JSON list of
/// operations; it applies atomically (any failing operation fails the whole patch).
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::InvalidJsonPatch(format!(
            "a JSON patch must be a list of operations, got {}",
            json_type(patch)
        )));
    };
    let parsed = ops
        .iter()
        .enumerate()
        .map(|(i, op)| parse_op(i, op))
        .collect::<Result<Vec<_>, _>>()?;
    let mut doc = original.clone();
    for (index, (name, op)) in parsed.into_iter().enumerate() {
        apply_op(&mut doc, op).map_err(|(path, reason)| match reason {
            Failure::Test => PatchError::TestFailed { index, path },
            Failure::Other(reason) => PatchError::JsonPatchFailed {
                index,
                op: name.to_string(),
                path,
                reason,
            },
        })?;
    }
    Ok(doc)
}

fn parse_op(i: usize, op: &Value) -> Result<(&'static str, Op), PatchError> {
    let bad = |m: String| PatchError::InvalidJsonPatch(format!("operation {i}: {m}"));
    let obj = op
        .as_object()
        .ok_or_else(|| bad(format!("must be an object, got {}", json_type(op))))?;
    let name = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing \"op\"".into()))?;
    let pointer = |field: &str| -> Result<Vec<String>, PatchError> {
        let p = obj
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("missing \"{field}\"")))?;
        parse_pointer(p).map_err(bad)
    };
    let value = || -> Result<Value, PatchError> {
        obj.get("value")
            .cloned()
            .ok_or_else(|| bad("missing \"value\"".into()))
    };
    Ok(match name {
        "add" => ("add", Op::Add(pointer("path")?, value()?)),
        "remove" => ("remove", Op::Remove(pointer("path")?)),
        "replace" => ("replace", Op::Replace(pointer("path")?, value()?)),
        "move" => (
            "move",
            Op::Move {
                from: pointer("from")?,
                path: pointer("path")?,
            },
        ),
        "copy" => (
            "copy",
            Op::Copy {
                from: pointer("from")?,
                path: pointer("path")?,
            },
        ),
        "test" => ("test", Op::Test(pointer("path")?, value()?)),
        other => return Err(bad(format!("unknown op \"{other}\""))),
    })
}

/// Split a JSON pointer into unescaped reference tokens.
fn parse_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!("JSON pointer \"{p}\" must start with '/'"));
    };
    rest.split('/')
        .map(|tok| {
            let mut out = String::with_capacity(tok.len());
            let mut chars = tok.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(format!("JSON pointer \"{p}\" has an invalid '~' escape")),
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

fn render_pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

enum Failure {
    Test,
    Other(String),
}

type OpResult = Result<(), (String, Failure)>;

fn fail(path: &[String], reason: impl Into<String>) -> (String, Failure) {
    (render_pointer(path), Failure::Other(reason.into()))
}

/// Parse an array index token: digits without leading zeros, below `limit`
/// (inclusive when `allow_end`).
fn array_index(tok: &str, len: usize, allow_end: bool) -> Option<usize> {
    if tok == "-" {
        return allow_end.then_some(len);
    }
    if tok.is_empty()
        || !tok.bytes().all(|b| b.is_ascii_digit())
        || (tok.len() > 1 && tok.starts_with('0'))
    {
        return None;
    }
    let i: usize = tok.parse().ok()?;
    if i < len || (allow_end && i == len) {
        Some(i)
    } else {
        None
    }
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m.get(tok)?,
            Value::Array(a) => a.get(array_index(tok, a.len(), false)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(tok)?,
            Value::Array(a) => {
                let i = array_index(tok, a.len(), false)?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> OpResult {
    let Some((last, parent_path)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    let parent = get_mut(doc, parent_path)
        .ok_or_else(|| fail(path, "the parent of the target location does not exist"))?;
    match parent {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true).ok_or_else(|| {
                fail(
                    path,
                    format!("invalid or out-of-range list index \"{last}\""),
                )
            })?;
            a.insert(i, value);
            Ok(())
        }
        other => Err(fail(
            path,
            format!("cannot add a member to a {}", json_type(other)),
        )),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, (String, Failure)> {
    let Some((last, parent_path)) = path.split_last() else {
        return Err(fail(path, "cannot remove the whole document"));
    };
    let parent = get_mut(doc, parent_path)
        .ok_or_else(|| fail(path, "the target location does not exist"))?;
    match parent {
        Value::Object(m) => m
            .shift_remove(last)
            .ok_or_else(|| fail(path, "the target location does not exist")),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false).ok_or_else(|| {
                fail(
                    path,
                    format!("invalid or out-of-range list index \"{last}\""),
                )
            })?;
            Ok(a.remove(i))
        }
        _ => Err(fail(path, "the target location does not exist")),
    }
}

fn apply_op(doc: &mut Value, op: Op) -> OpResult {
    match op {
        Op::Add(path, value) => add(doc, &path, value),
        Op::Remove(path) => remove(doc, &path).map(|_| ()),
        Op::Replace(path, value) => {
            let target = get_mut(doc, &path)
                .ok_or_else(|| fail(&path, "the target location does not exist"))?;
            *target = value;
            Ok(())
        }
        Op::Move { from, path } => {
            if from == path {
                return get(doc, &from)
                    .map(|_| ())
                    .ok_or_else(|| fail(&from, "the \"from\" location does not exist"));
            }
            if path.len() > from.len() && path.starts_with(&from) {
                return Err(fail(
                    &path,
                    "cannot move a value into one of its own children",
                ));
            }
            let value = remove(doc, &from)
                .map_err(|_| fail(&from, "the \"from\" location does not exist"))?;
            add(doc, &path, value)
        }
        Op::Copy { from, path } => {
            let value = get(doc, &from)
                .cloned()
                .ok_or_else(|| fail(&from, "the \"from\" location does not exist"))?;
            add(doc, &path, value)
        }
        Op::Test(path, expected) => {
            let ok = match get(doc, &path) {
                Some(actual) => json_eq(actual, &expected),
                None => expected.is_null(),
            };
            if ok {
                Ok(())
            } else {
                Err((render_pointer(&path), Failure::Test))
            }
        }
    }
}

/// Apply a JSON merge patch (RFC 7386): objects merge recursively, `null`
/// deletes a key, anything else replaces. Upstream requires both the object and
/// the patch to be JSON objects; so does this.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !original.is_object() {
        return Err(PatchError::invalid(
            "",
            format!(
                "the object to patch must be a JSON object, got {}",
                json_type(original)
            ),
        ));
    }
    if !patch.is_object() {
        return Err(PatchError::invalid(
            "",
            format!(
                "a merge patch must be a JSON object, got {}",
                json_type(patch)
            ),
        ));
    }
    let mut doc = original.clone();
    merge_into(&mut doc, patch);
    Ok(doc)
}

fn merge_into(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Value::Object(d) = doc {
        for (k, v) in p {
            if v.is_null() {
                d.shift_remove(k);
            } else {
                merge_into(d.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jp(doc: Value, patch: Value) -> Result<Value, PatchError> {
        json_patch(&doc, &patch)
    }

    #[test]
    fn rfc6902_operations() {
        let doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        let out = jp(
            doc,
            json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "add", "path": "/a/b/0", "value": 0},
                {"op": "replace", "path": "/c", "value": "y"},
                {"op": "copy", "from": "/c", "path": "/d"},
                {"op": "move", "from": "/a/b/1", "path": "/e"},
                {"op": "remove", "path": "/a/b/0"},
                {"op": "test", "path": "/d", "value": "y"},
                {"op": "test", "path": "/a/b", "value": [2.0, 3]}
            ]),
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"b": [2, 3]}, "c": "y", "d": "y", "e": 1}));
    }

    #[test]
    fn pointer_escapes() {
        let doc = json!({"metadata": {"annotations": {"a/b": "1", "c~d": "2"}}});
        let out = jp(
            doc,
            json!([
                {"op": "remove", "path": "/metadata/annotations/a~1b"},
                {"op": "replace", "path": "/metadata/annotations/c~0d", "value": "3"},
                {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"annotations": {"c~d": "3"}, "labels": {"x": "y"}}})
        );
    }

    #[test]
    fn failures_are_typed_and_atomic() {
        let doc = json!({"a": 1, "l": [1]});
        let e = jp(doc.clone(), json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 2}])).unwrap_err();
        assert_eq!(
            e,
            PatchError::TestFailed {
                index: 1,
                path: "/a".into()
            }
        );
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "remove", "path": "/zz"}])),
            Err(PatchError::JsonPatchFailed { index: 0, .. })
        ));
        assert!(jp(
            doc.clone(),
            json!([{"op": "replace", "path": "/zz", "value": 1}])
        )
        .is_err());
        assert!(jp(
            doc.clone(),
            json!([{"op": "add", "path": "/x/y", "value": 1}])
        )
        .is_err());
        assert!(jp(
            doc.clone(),
            json!([{"op": "add", "path": "/l/2", "value": 1}])
        )
        .is_err());
        assert!(jp(
            doc.clone(),
            json!([{"op": "add", "path": "/l/01", "value": 1}])
        )
        .is_err());
        assert!(jp(doc.clone(), json!([{"op": "remove", "path": "/l/-"}])).is_err());
        assert!(jp(
            doc.clone(),
            json!([{"op": "add", "path": "/a/x", "value": 1}])
        )
        .is_err());
        assert!(jp(
            doc.clone(),
            json!([{"op": "move", "from": "/l", "path": "/l/0"}])
        )
        .is_err());
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "frob", "path": "/a"}])),
            Err(PatchError::InvalidJsonPatch(_))
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "add", "path": "a", "value": 1}])),
            Err(PatchError::InvalidJsonPatch(_))
        ));
        assert!(matches!(
            jp(doc.clone(), json!([{"op": "add", "path": "/a"}])),
            Err(PatchError::InvalidJsonPatch(_))
        ));
        assert!(matches!(
            jp(doc.clone(), json!({"op": "add"})),
            Err(PatchError::InvalidJsonPatch(_))
        ));
        assert!(jp(doc.clone(), json!([{"op": "remove", "path": "/a/~2"}])).is_err());
    }

    #[test]
    fn whole_document_and_missing_test() {
        assert_eq!(
            jp(
                json!({"a": 1}),
                json!([{"op": "add", "path": "", "value": {"b": 2}}])
            )
            .unwrap(),
            json!({"b": 2})
        );
        assert!(jp(
            json!({}),
            json!([{"op": "test", "path": "/x", "value": null}])
        )
        .is_ok());
        assert!(jp(json!({}), json!([{"op": "remove", "path": ""}])).is_err());
        assert_eq!(
            jp(
                json!({"a": 1}),
                json!([{"op": "move", "from": "/a", "path": "/a"}])
            )
            .unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn rollout_undo_patch() {
        let doc = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "v2"}]}}}});
        let out = jp(
            doc,
            json!([
                {"op": "replace", "path": "/spec/template", "value": {"metadata": {"creationTimestamp": null}, "spec": {"containers": [{"name": "app", "image": "v1"}]}}},
                {"op": "replace", "path": "/metadata/annotations", "value": {"deployment.kubernetes.io/revision": "1"}}
            ]),
        )
        .unwrap();
        assert_eq!(
            out.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("v1"))
        );
        assert_eq!(
            out.pointer("/metadata/annotations"),
            Some(&json!({"deployment.kubernetes.io/revision": "1"}))
        );
    }

    #[test]
    fn merge_patch_semantics() {
        let doc =
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"l": [1, 2], "x": 1}});
        let out = merge_patch(
            &doc,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"l": [3], "x": {"y": null, "z": 1}}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"l": [3], "x": {"z": 1}}})
        );
        // Key order is kept when a key is deleted.
        let keys: Vec<&String> = out["metadata"]["labels"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["b", "c"]);
        assert!(merge_patch(&doc, &json!([1])).is_err());
        assert!(merge_patch(&json!(3), &json!({})).is_err());
    }
}
