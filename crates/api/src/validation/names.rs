//! Name and key syntax checks (upstream `k8s.io/apimachinery/pkg/util/validation`).
//!
//! The `*_errors` functions return every message upstream would report; the public
//! `is_*` wrappers join them with `"; "`.

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_MAP_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

/// Upstream `RegexError`: the message, examples and the regex.
pub(crate) fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(e);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// Upstream `MaxLenError`.
pub(crate) fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn join(errs: Vec<String>) -> Result<(), String> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f)
                && is_lower_alnum(l)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

pub(crate) fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns_label(s) {
        errs.push(regex_error(
            DNS1123_LABEL_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(matches_dns_label) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

pub(crate) fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !(matches_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

pub(crate) fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !matches_qualified(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

pub(crate) fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !(s.is_empty() || matches_qualified(s)) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Upstream `IsValidPathSegmentName` (with `prefix`: the generateName variant that
/// skips the `.`/`..` check).
pub(crate) fn path_segment_errors(s: &str, prefix: bool) -> Vec<String> {
    if !prefix {
        for bad in [".", ".."] {
            if s == bad {
                return vec![format!("may not be '{bad}'")];
            }
        }
    }
    ["/", "%"]
        .iter()
        .filter(|c| s.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

pub(crate) fn config_map_key_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok {
        errs.push(regex_error(
            CONFIG_MAP_KEY_MSG,
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

pub(crate) fn port_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// Upstream `IsValidPortNum`.
pub(crate) fn port_num_errors(n: i64) -> Vec<String> {
    if (1..=65535).contains(&n) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// Upstream `IsRelaxedEnvVarName` (the 1.33 default).
pub(crate) fn env_var_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.is_empty() {
        errs.push("environment variable name must be non-empty".to_string());
    }
    if s.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        errs.push(
            "a valid environment variable name must consist only of printable ASCII characters other than '='"
                .to_string(),
        );
    }
    errs
}

/// Name check applied to `metadata.name` (or, with `prefix`, `generateName`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    PathSegment,
}

impl NameRule {
    /// Messages for `name`; with `prefix` a trailing `-` is allowed (generateName).
    pub(crate) fn errors(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && name.ends_with('-') && self != NameRule::PathSegment {
            masked = format!("{}a", &name[..name.len() - 1]);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
            NameRule::Dns1123Label => dns1123_label_errors(name),
            NameRule::Dns1035Label => dns1035_label_errors(name),
            NameRule::PathSegment => path_segment_errors(name, prefix),
        }
    }
}

/// Is `s` a DNS-1123 subdomain (`example.com`, at most 253 characters)?
pub fn is_dns1123_subdomain(s: &str) -> Result<(), String> {
    join(dns1123_subdomain_errors(s))
}

/// Is `s` a DNS-1123 label (`my-name`, at most 63 characters)?
pub fn is_dns1123_label(s: &str) -> Result<(), String> {
    join(dns1123_label_errors(s))
}

/// Is `s` a DNS-1035 label (starts with a letter; Service names)?
pub fn is_dns1035_label(s: &str) -> Result<(), String> {
    join(dns1035_label_errors(s))
}

/// Is `s` a qualified name (`[prefix/]name`), as label and annotation keys must be?
pub fn is_qualified_name(s: &str) -> Result<(), String> {
    join(qualified_name_errors(s))
}

/// Is `s` a valid label value (empty, or at most 63 qualified-name characters)?
pub fn is_valid_label_value(s: &str) -> Result<(), String> {
    join(label_value_errors(s))
}

/// Is `s` usable as a single URL path segment (RBAC, PV, HPA names)?
pub fn is_valid_path_segment_name(s: &str) -> Result<(), String> {
    join(path_segment_errors(s, false))
}

/// Is `s` a valid ConfigMap/Secret data key (`[-._a-zA-Z0-9]+`)?
pub fn is_config_map_key(s: &str) -> Result<(), String> {
    join(config_map_key_errors(s))
}

/// Is `s` an IANA_SVC_NAME (container/service port name)?
pub fn is_valid_port_name(s: &str) -> Result<(), String> {
    join(port_name_errors(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert!(is_dns1123_subdomain("example.com").is_ok());
        assert!(is_dns1123_subdomain("a").is_ok());
        assert!(is_dns1123_subdomain("a..b").is_err());
        assert!(is_dns1123_subdomain("-a").is_err());
        assert!(is_dns1123_subdomain("").is_err());
        assert_eq!(
            is_dns1123_subdomain("Foo_1").unwrap_err(),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254)).unwrap_err(),
            "must be no more than 253 characters"
        );
    }

    #[test]
    fn labels() {
        assert!(is_dns1123_label("my-name").is_ok());
        assert!(is_dns1123_label("123-abc").is_ok());
        assert!(is_dns1123_label("a.b").is_err());
        assert!(is_dns1123_label(&"a".repeat(64)).is_err());
        assert_eq!(
            is_dns1123_label("A").unwrap_err(),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
        assert!(is_dns1035_label("abc-1").is_ok());
        assert!(is_dns1035_label("1abc").is_err());
        assert!(is_dns1035_label("").is_err());
    }

    #[test]
    fn qualified_names_and_values() {
        for ok in ["app", "app.kubernetes.io/name", "A_b.c", "example.com/X"] {
            assert!(is_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a/b/c", "/a", "Example.com/a", "a/"] {
            assert!(is_qualified_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            is_qualified_name("/a").unwrap_err(),
            "prefix part must be non-empty"
        );
        assert!(is_valid_label_value("").is_ok());
        assert!(is_valid_label_value("v1.2_3").is_ok());
        assert!(is_valid_label_value("-x").is_err());
        assert_eq!(
            is_valid_label_value(&"a".repeat(64)).unwrap_err(),
            "must be no more than 63 characters"
        );
    }

    #[test]
    fn keys_ports_paths() {
        assert!(is_config_map_key("a.B_c-1").is_ok());
        assert!(is_config_map_key("a/b").is_err());
        assert_eq!(
            is_config_map_key("..x").unwrap_err(),
            "must not start with '..'"
        );
        assert!(is_valid_port_name("http").is_ok());
        assert!(is_valid_port_name("80").is_err());
        assert!(is_valid_port_name("a--b").is_err());
        assert!(is_valid_port_name("abcdefghijklmnop").is_err());
        assert!(is_valid_path_segment_name("system:admin").is_ok());
        assert_eq!(
            is_valid_path_segment_name("..").unwrap_err(),
            "may not be '..'"
        );
        assert_eq!(
            is_valid_path_segment_name("a/b%").unwrap_err(),
            "may not contain '/'; may not contain '%'"
        );
        assert_eq!(
            NameRule::Dns1123Subdomain.errors("web-", true),
            Vec::<String>::new()
        );
        assert!(!NameRule::Dns1123Subdomain.errors("web-", false).is_empty());
    }
}
