//! Label selectors (pod affinity, topology spread) and node selector terms (node
//! affinity), parsed once into a form that is cheap to match, hash and compare.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label's value, an integer, is greater than the single value.
    Gt,
    /// The label's value, an integer, is less than the single value.
    Lt,
}

impl Op {
    fn parse(s: &str, allow_numeric: bool) -> Option<Op> {
        Some(match s {
            "In" => Op::In,
            "NotIn" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            "Gt" if allow_numeric => Op::Gt,
            "Lt" if allow_numeric => Op::Lt,
            _ => return None,
        })
    }
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub op: Op,
    /// Values (sorted).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Op::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (v, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.op == Op::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }

    fn new(key: &str, op: Op, values: Option<&Vec<String>>) -> Option<Requirement> {
        let mut values: Vec<String> = values.cloned().unwrap_or_default();
        values.sort();
        values.dedup();
        let ok = match op {
            Op::In | Op::NotIn => !values.is_empty(),
            Op::Exists | Op::DoesNotExist => values.is_empty(),
            Op::Gt | Op::Lt => values.len() == 1 && values[0].parse::<i64>().is_ok(),
        };
        ok.then(|| Requirement {
            key: key.to_string(),
            op,
            values,
        })
    }
}

/// A label selector. `Nothing` matches no object (a missing or invalid selector in
/// an affinity term); an empty `All` matches every object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// Matches no object.
    Nothing,
    /// Matches objects satisfying every requirement (sorted).
    All(Vec<Requirement>),
}

impl Selector {
    /// A selector matching everything.
    pub fn everything() -> Selector {
        Selector::All(Vec::new())
    }

    /// Convert an API label selector; `None` or an invalid one yields [`Selector::Nothing`].
    pub fn from_label_selector(s: Option<&LabelSelector>) -> Selector {
        let Some(s) = s else {
            return Selector::Nothing;
        };
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In,
                values: vec![v.clone()],
            });
        }
        for e in s.match_expressions.iter().flatten() {
            let Some(op) = Op::parse(&e.operator, false) else {
                return Selector::Nothing;
            };
            let Some(r) = Requirement::new(&e.key, op, e.values.as_ref()) else {
                return Selector::Nothing;
            };
            reqs.push(r);
        }
        reqs.sort();
        reqs.dedup();
        Selector::All(reqs)
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::All(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    /// A `key=value` pair every matching object must carry, if any (used to index
    /// selectors by label).
    pub fn index_label(&self) -> Option<(&str, &str)> {
        match self {
            Selector::All(reqs) => reqs
                .iter()
                .find(|r| r.op == Op::In && r.values.len() == 1)
                .map(|r| (r.key.as_str(), r.values[0].as_str())),
            Selector::Nothing => None,
        }
    }

    /// Whether this selector can match nothing at all.
    pub fn is_nothing(&self) -> bool {
        matches!(self, Selector::Nothing)
    }
}

/// One node selector term: label requirements and `metadata.name` field requirements,
/// all of which must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerm {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
    valid: bool,
}

fn node_reqs(
    reqs: Option<&Vec<NodeSelectorRequirement>>,
    numeric: bool,
) -> Option<Vec<Requirement>> {
    let mut out = Vec::new();
    for r in reqs.into_iter().flatten() {
        let op = Op::parse(&r.operator, numeric)?;
        out.push(Requirement::new(&r.key, op, r.values.as_ref())?);
    }
    Some(out)
}

impl NodeTerm {
    /// Convert an API term. An invalid term (bad operator, bad field key) matches no node.
    pub fn from_api(t: &NodeSelectorTerm) -> NodeTerm {
        let labels = node_reqs(t.match_expressions.as_ref(), true);
        let fields = node_reqs(t.match_fields.as_ref(), false).filter(|f| {
            f.iter()
                .all(|r| r.key == "metadata.name" && matches!(r.op, Op::In | Op::NotIn))
        });
        match (labels, fields) {
            (Some(labels), Some(fields)) => NodeTerm {
                valid: !(labels.is_empty() && fields.is_empty()),
                labels,
                fields,
            },
            _ => NodeTerm {
                labels: Vec::new(),
                fields: Vec::new(),
                valid: false,
            },
        }
    }

    /// Whether a node with this name and these labels satisfies the term. An empty
    /// term matches nothing, as upstream.
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        if !self.valid {
            return false;
        }
        if !self.labels.iter().all(|r| r.matches(labels)) {
            return false;
        }
        self.fields.iter().all(|r| {
            let present = r.values.iter().any(|v| v == name);
            if r.op == Op::In {
                present
            } else {
                !present
            }
        })
    }
}

/// Required node affinity: the terms are ORed.
pub fn any_term_matches(terms: &[NodeTerm], name: &str, labels: &Labels) -> bool {
    terms.iter().any(|t| t.matches(name, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(v: serde_json::Value) -> Selector {
        let ls: LabelSelector = serde_json::from_value(v).unwrap();
        Selector::from_label_selector(Some(&ls))
    }

    fn term(v: serde_json::Value) -> NodeTerm {
        NodeTerm::from_api(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn label_selector_ops() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        assert!(sel(json!({"matchLabels": {"app": "web"}})).matches(&l));
        assert!(!sel(json!({"matchLabels": {"app": "db"}})).matches(&l));
        assert!(sel(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]})
        )
        .matches(&l));
        assert!(sel(
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]})
        )
        .matches(&l));
        assert!(
            sel(json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}))
                .matches(&l)
        );
        assert!(
            !sel(json!({"matchExpressions": [{"key": "x", "operator": "Exists"}]})).matches(&l)
        );
        assert!(sel(json!({})).matches(&l));
        assert!(!Selector::from_label_selector(None).matches(&l));
        // Bad operator matches nothing.
        assert!(!sel(
            json!({"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]})
        )
        .matches(&l));
    }

    #[test]
    fn selector_identity_is_canonical() {
        let a = sel(json!({"matchLabels": {"a": "1", "b": "2"}}));
        let b = sel(
            json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["2"]}], "matchLabels": {"a": "1"}}),
        );
        assert_eq!(a, b);
        assert_eq!(a.index_label(), Some(("a", "1")));
    }

    #[test]
    fn node_terms() {
        let l = labels(&[("zone", "a"), ("cores", "16")]);
        assert!(term(
            json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]})
        )
        .matches("n1", &l));
        assert!(!term(
            json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]})
        )
        .matches("n1", &l));
        assert!(term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
        )
        .matches("n1", &l));
        assert!(!term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
        )
        .matches("n2", &l));
        assert!(term(json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n2"]}]})).matches("n1", &l));
        assert!(!term(
            json!({"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["n1"]}]})
        )
        .matches("n1", &l));
        assert!(!term(json!({})).matches("n1", &l));
        let terms = vec![
            term(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]})),
            term(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]})),
        ];
        assert!(any_term_matches(&terms, "n1", &l));
    }
}
