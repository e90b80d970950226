#!/usr/bin/env python3
"""Generates convert.rs: `ToJson` impls for the k8s-pb (prost) messages that kubectl's
typed generators send, with the Go JSON field names taken from k8s-openapi.

Usage:
    python3 generate.py ~/.cargo/registry/src/*/k8s-pb-0.9.0/src \
        ~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_33 > convert.rs
    rustfmt --edition 2021 convert.rs
Re-run when bumping k8s-pb or k8s-openapi; the output is checked in.
"""
import os
import re
import sys

PB, OA = sys.argv[1], sys.argv[2]

# (k8s-pb path, apiVersion, kind) of the top-level objects `decode` accepts.
ROOTS = [
    ("api::core::v1::ConfigMap", "v1", "ConfigMap"),
    ("api::core::v1::Secret", "v1", "Secret"),
    ("api::core::v1::Namespace", "v1", "Namespace"),
    ("api::core::v1::ServiceAccount", "v1", "ServiceAccount"),
    ("api::core::v1::Service", "v1", "Service"),
    ("api::core::v1::Pod", "v1", "Pod"),
    ("api::core::v1::ResourceQuota", "v1", "ResourceQuota"),
    ("api::apps::v1::Deployment", "apps/v1", "Deployment"),
    ("api::batch::v1::Job", "batch/v1", "Job"),
    ("api::batch::v1::CronJob", "batch/v1", "CronJob"),
    ("api::authentication::v1::TokenRequest", "authentication.k8s.io/v1", "TokenRequest"),
    ("api::authorization::v1::SelfSubjectAccessReview", "authorization.k8s.io/v1", "SelfSubjectAccessReview"),
    ("api::authorization::v1::SelfSubjectRulesReview", "authorization.k8s.io/v1", "SelfSubjectRulesReview"),
    ("api::rbac::v1::Role", "rbac.authorization.k8s.io/v1", "Role"),
    ("api::rbac::v1::RoleBinding", "rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("api::rbac::v1::ClusterRole", "rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("api::rbac::v1::ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("api::scheduling::v1::PriorityClass", "scheduling.k8s.io/v1", "PriorityClass"),
    ("api::policy::v1::PodDisruptionBudget", "policy/v1", "PodDisruptionBudget"),
    ("api::networking::v1::Ingress", "networking.k8s.io/v1", "Ingress"),
    ("api::core::v1::Binding", "v1", "Binding"),
    ("api::policy::v1::Eviction", "policy/v1", "Eviction"),
    ("api::autoscaling::v1::Scale", "autoscaling/v1", "Scale"),
]

# Converted by hand in protobuf.rs.
SPECIAL = {
    "apimachinery::pkg::apis::meta::v1::Time",
    "apimachinery::pkg::apis::meta::v1::MicroTime",
    "apimachinery::pkg::apis::meta::v1::Duration",
    "apimachinery::pkg::apis::meta::v1::FieldsV1",
    "apimachinery::pkg::api::resource::Quantity",
    "apimachinery::pkg::util::intstr::IntOrString",
    "apimachinery::pkg::runtime::RawExtension",
}

# Go fields that are plain (non-pointer) numbers or booleans tagged `omitempty`: Go
# writes them on the wire even when zero, but its JSON leaves zero out.
OMIT_ZERO = {
    ("ObjectMeta", "generation"),
    ("ContainerPort", "hostPort"),
    ("ServicePort", "nodePort"),
    ("Probe", "initialDelaySeconds"),
    ("Probe", "timeoutSeconds"),
    ("Probe", "periodSeconds"),
    ("Probe", "successThreshold"),
    ("Probe", "failureThreshold"),
    ("Container", "stdin"),
    ("Container", "stdinOnce"),
    ("Container", "tty"),
    ("EphemeralContainerCommon", "stdin"),
    ("EphemeralContainerCommon", "stdinOnce"),
    ("EphemeralContainerCommon", "tty"),
    ("PodSpec", "hostNetwork"),
    ("PodSpec", "hostPID"),
    ("PodSpec", "hostIPC"),
    ("DeploymentSpec", "minReadySeconds"),
    ("DeploymentSpec", "paused"),
    ("VolumeMount", "readOnly"),
    ("SecretVolumeSource", "optional"),
    ("PriorityClass", "globalDefault"),
    ("ServiceSpec", "healthCheckNodePort"),
    ("ServiceSpec", "publishNotReadyAddresses"),
}


def norm(s):
    return s.replace("r#", "").replace("_", "").lower()


# --- k8s-openapi: schema name -> (json names, required) ---------------------------
openapi = {}
for dirpath, _, files in os.walk(OA):
    for f in files:
        if not f.endswith(".rs"):
            continue
        text = open(os.path.join(dirpath, f)).read()
        m = re.search(r'fn schema_name\(\)[^{]*\{\s*"([^"]+)"', text)
        if not m:
            continue
        names = re.findall(r'serialize_field\(&mut state, "([^"]+)"', text)
        req = re.search(r'"required": \[(.*?)\]', text, re.S)
        required = set(re.findall(r'"([^"]+)"', req.group(1))) if req else set()
        openapi[m.group(1)] = (names, required)

# --- k8s-pb: struct path -> fields -------------------------------------------------
structs = {}
attr_re = re.compile(r'#\[prost\(([^\]]*)\)\]\s*pub (r#\w+|\w+):\s*(.*?),\n(?=\s*(?:///|#\[|$))', re.S)
for dirpath, _, files in os.walk(PB):
    for f in files:
        if f != "mod.rs":
            continue
        mod = os.path.relpath(dirpath, PB).replace(os.sep, "::")
        text = open(os.path.join(dirpath, f)).read()
        for sm in re.finditer(r'pub struct (\w+) \{(.*?)\n\}', text, re.S):
            name, body = sm.group(1), sm.group(2)
            fields = []
            for fm in attr_re.finditer(body + "\n"):
                fields.append((fm.group(1), fm.group(2), fm.group(3)))
            if len(fields) != len(re.findall(r"^    pub ", body, re.M)):
                raise SystemExit(f"{mod}::{name}: could not parse every field")
            structs[mod + "::" + name] = (mod, name, fields)


def resolve(mod, ty):
    """Resolves the message type inside an Option<...>/Vec<...>/map to a struct path."""
    m = re.search(r"((?:super::)*(?:\w+::)*)(\w+)>*$", re.sub(r"\s+", "", ty).replace(",>", ">"))
    prefix, name = m.group(1), m.group(2)
    parts = mod.split("::")
    ups = prefix.count("super::")
    rest = [p for p in prefix.replace("super::", "").split("::") if p]
    if ups:
        parts = parts[:-ups]
    if rest or ups:
        return "::".join(parts + rest + [name])
    return mod + "::" + name


def camel(snake):
    parts = snake.replace("r#", "").split("_")
    return parts[0] + "".join(x[:1].upper() + x[1:] for x in parts[1:])


def module_names(mod):
    """All JSON names used by the schemas of a module (for inlined Go structs)."""
    base = "io.k8s." + mod.replace("::", ".").replace("apiextensions_apiserver", "apiextensions-apiserver")
    out = {}
    for cand, (names, _) in openapi.items():
        if cand.rsplit(".", 1)[0] == base:
            for n in names:
                out.setdefault(norm(n), n)
    return out


def schema_name(mod, name):
    base = "io.k8s." + mod.replace("::", ".").replace("apiextensions_apiserver", "apiextensions-apiserver")
    for cand, v in openapi.items():
        if cand.rsplit(".", 1)[0] == base and cand.rsplit(".", 1)[1].lower() == name.lower():
            return cand, v
    return None, ([], set())


todo = [r[0] for r in ROOTS]
seen = []
while todo:
    p = todo.pop(0)
    if p in seen or p in SPECIAL:
        continue
    seen.append(p)
    mod, name, fields = structs[p]
    for attr, _, ty in fields:
        if attr.startswith("message") or "message" in attr:
            todo.append(resolve(mod, ty))

out = []
w = out.append
w("// @generated by generate.py from k8s-pb 0.9 and k8s-openapi 0.29 (v1_33). Do not edit.")
w("//! `ToJson` for the k8s-pb messages reachable from the kinds `decode` accepts.")
w("")
w("use serde_json::{Map, Value};")
w("")
w("use super::json::*;")
w("")
for p in sorted(seen):
    mod, name, fields = structs[p]
    sname, (jnames, required) = schema_name(mod, name)
    by_norm = {norm(j): j for j in jnames}
    fallback = module_names(mod)
    w(f"impl ToJson for k8s_pb::{p} {{")
    w("    fn to_json(&self) -> Value {")
    w("        #[allow(unused_mut)]")
    w("        let mut m = Map::new();")
    for attr, fname, ty in fields:
        kind = attr.split(",")[0].strip()
        rep = "repeated" in attr
        j = by_norm.get(norm(fname)) or fallback.get(norm(fname))
        inline = kind == "message" and not rep and (
            norm(fname) == norm(resolve(mod, ty).rsplit("::", 1)[1]) or (name, fname) == ("Probe", "handler")
        )
        if j is None and inline:
            # A Go struct embedded with `json:",inline"`: its fields belong to this object.
            w(f"        flatten(&mut m, msg(&self.{fname}));")
            continue
        if j is None:
            j = camel(fname)
        req = "true" if j in required else "false"
        omit = "true" if ((name, j) in OMIT_ZERO or (name.endswith("Status") and j not in required)) else "false"
        f = f"&self.{fname}"
        if kind.startswith("btree_map"):
            val = attr.split('"')[1].split(",")[1].strip()
            call = {"string": f"str_map({f})", "bytes": f"bytes_map({f})", "message": f"msg_map({f})"}[val]
        elif kind == "message":
            call = f"msgs({f})" if rep else f"msg({f})"
        elif kind == "string":
            call = f"strings({f})" if rep else f"string({f}, {req})"
        elif kind in ("int32", "int64"):
            call = f"ints({f})" if rep else f"int({f}, {omit})"
        elif kind == "bool":
            call = f"boolean({f}, {omit})"
        else:
            raise SystemExit(f"{p}.{fname}: unsupported prost type {attr}")
        w(f'        put(&mut m, "{j}", {call});')
    w("        Value::Object(m)")
    w("    }")
    w("}")
    w("")

w("/// Decodes the protobuf encoding of one top-level object; `None` for a kind this")
w("/// module does not know.")
w("pub(super) fn decode_kind(")
w("    api_version: &str,")
w("    kind: &str,")
w("    raw: &[u8],")
w(") -> Option<Result<Value, prost::DecodeError>> {")
w("    Some(match (api_version, kind) {")
for p, av, k in ROOTS:
    w(f'        ("{av}", "{k}") => decode_as::<k8s_pb::{p}>(raw),')
w("        _ => return None,")
w("    })")
w("}")
w("")
w("/// The (apiVersion, kind) pairs `decode_kind` accepts.")
w("pub(super) const KINDS: &[(&str, &str)] = &[")
for p, av, k in ROOTS:
    w(f'    ("{av}", "{k}"),')
w("];")
print("\n".join(out))
