//! Create-only "review" resources that answer questions about the caller:
//! `authorization.k8s.io/v1` SelfSubjectAccessReview (`kubectl auth can-i`) and
//! `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`).
//!
//! Authorization is not enforced yet (every authenticated user may do
//! everything), so access reviews answer `allowed: true` with that reason.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::auth::User;
use crate::error::{ApiError, ApiResult};

const ACCESS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
const RULES: &str = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";
const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

pub fn is_review_path(path: &str) -> bool {
    matches!(path.trim_end_matches('/'), ACCESS | RULES | WHOAMI)
}

fn decode(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    crate::body::decode_object(headers, body)
}

pub fn review(path: &str, user: &User, headers: &HeaderMap, body: &[u8]) -> ApiResult<Response> {
    let mut obj = decode(headers, body)?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    match path.trim_end_matches('/') {
        ACCESS => {
            if obj.pointer("/spec/resourceAttributes").is_none()
                && obj.pointer("/spec/nonResourceAttributes").is_none()
            {
                return Err(ApiError::new(422, "Invalid",
                    "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"));
            }
            obj["apiVersion"] = json!("authorization.k8s.io/v1");
            obj["kind"] = json!("SelfSubjectAccessReview");
            obj["status"] = json!({"allowed": true, "reason": "navarch does not enforce authorization yet: every authenticated user may do everything"});
        }
        RULES => {
            obj["apiVersion"] = json!("authorization.k8s.io/v1");
            obj["kind"] = json!("SelfSubjectRulesReview");
            obj["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            });
        }
        _ => {
            let mut groups = user.groups.clone();
            groups.push("system:authenticated".to_string());
            obj = json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                "metadata": {"creationTimestamp": crate::object::now_rfc3339()},
                "status": {"userInfo": {"username": user.name, "groups": groups}},
            });
        }
    }
    Ok(crate::handler::json_response(StatusCode::CREATED, &obj))
}
