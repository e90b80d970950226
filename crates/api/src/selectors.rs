//! Label and field selectors.
//!
//! [`LabelSelector`] parses the string form clients send in `?labelSelector=`
//! (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`)
//! and builds from a `metav1.LabelSelector` object (`matchLabels`,
//! `matchExpressions`). Its [`Display`](std::fmt::Display) form is the canonical
//! string upstream prints (requirements sorted by key, set values sorted), e.g.
//! `app=web` for `scale.status.selector`.
//!
//! [`FieldSelector`] parses `?fieldSelector=` (`a=b`, `a==b`, `a!=b`, comma
//! separated, `\` escapes) and matches against a getter supplied by the caller;
//! [`field_value`] is a generic getter for dotted paths such as `metadata.name`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// Why a label selector could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelSelectorError {
    /// The string form is malformed.
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    Syntax {
        /// The offending token as written (or `end of string`).
        found: String,
        /// What the parser wanted there.
        expected: String,
    },
    /// A key is not a valid qualified name.
    #[error("unable to parse requirement: invalid label key \"{key}\": {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A value is not a valid label value.
    #[error("unable to parse requirement: invalid label value: \"{value}\": {reason}")]
    InvalidValue {
        /// The value as given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// `in`/`notin` with no values, `=`/`!=` with not exactly one, exists with values.
    #[error("unable to parse requirement: {0}")]
    BadValueCount(String),
    /// A `matchExpressions` operator that is not In, NotIn, Exists or DoesNotExist.
    #[error("\"{0}\" is not a valid label selector operator")]
    InvalidOperator(String),
    /// A metav1 LabelSelector object of the wrong shape.
    #[error("invalid label selector: {0}")]
    InvalidObject(String),
}

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value`
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>N` (integer comparison)
    GreaterThan,
    /// `key<N` (integer comparison)
    LessThan,
}

/// One requirement of a label selector: `key op values`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelRequirement {
    key: String,
    operator: LabelOperator,
    /// Sorted and deduplicated.
    values: Vec<String>,
}

impl LabelRequirement {
    /// Build and validate a requirement (key syntax, value syntax, value count).
    pub fn new(
        key: &str,
        operator: LabelOperator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<LabelRequirement, LabelSelectorError> {
        validate_label_key(key)?;
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        match operator {
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::NotEquals => {
                if values.len() != 1 {
                    return Err(LabelSelectorError::BadValueCount(
                        "exact-match compatibility requires one single value".into(),
                    ));
                }
            }
            LabelOperator::In | LabelOperator::NotIn => {
                if values.is_empty() {
                    return Err(LabelSelectorError::BadValueCount(
                        "for 'in', 'notin' operators, values set can't be empty".into(),
                    ));
                }
            }
            LabelOperator::Exists | LabelOperator::DoesNotExist => {
                if !values.is_empty() {
                    return Err(LabelSelectorError::BadValueCount(
                        "values set must be empty for exists and does not exist".into(),
                    ));
                }
            }
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                if values.len() != 1 {
                    return Err(LabelSelectorError::BadValueCount(
                        "for 'Gt', 'Lt' operators, exactly one value is required".into(),
                    ));
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(LabelSelectorError::BadValueCount(format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer, not \"{}\"",
                        values[0]
                    )));
                }
            }
        }
        if !matches!(
            operator,
            LabelOperator::GreaterThan | LabelOperator::LessThan
        ) {
            for v in &values {
                validate_label_value(v)?;
            }
        }
        Ok(LabelRequirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> LabelOperator {
        self.operator
    }

    /// The values (sorted, deduplicated; empty for exists / does-not-exist).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set (given as a lookup) satisfies this requirement.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::In => {
                get(&self.key).is_some_and(has)
            }
            LabelOperator::NotEquals | LabelOperator::NotIn => !get(&self.key).is_some_and(has),
            LabelOperator::Exists => get(&self.key).is_some(),
            LabelOperator::DoesNotExist => get(&self.key).is_none(),
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                let Some(actual) = get(&self.key).and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(bound) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.operator == LabelOperator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            LabelOperator::Exists => write!(f, "{}", self.key),
            LabelOperator::DoesNotExist => write!(f, "!{}", self.key),
            LabelOperator::Equals => write!(f, "{}={}", self.key, first),
            LabelOperator::DoubleEquals => write!(f, "{}=={}", self.key, first),
            LabelOperator::NotEquals => write!(f, "{}!={}", self.key, first),
            LabelOperator::GreaterThan => write!(f, "{}>{}", self.key, first),
            LabelOperator::LessThan => write!(f, "{}<{}", self.key, first),
            LabelOperator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            LabelOperator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

/// A parsed label selector: the conjunction of its requirements.
///
/// The empty selector matches everything; [`LabelSelector::nothing`] (what a
/// missing `selector` means upstream) matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// The selector that matches no object (upstream's result for a nil selector).
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parse the string form (`?labelSelector=`). Empty or blank input gives
    /// [`LabelSelector::everything`].
    pub fn parse(input: &str) -> Result<LabelSelector, LabelSelectorError> {
        let tokens = lex(input)?;
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = p.parse_all()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// `k1=v1,k2=v2` from a label map (upstream's `SelectorFromSet`), validating
    /// keys and values.
    pub fn from_map(
        labels: &BTreeMap<String, String>,
    ) -> Result<LabelSelector, LabelSelectorError> {
        let mut requirements = Vec::with_capacity(labels.len());
        for (k, v) in labels {
            requirements.push(LabelRequirement::new(
                k,
                LabelOperator::Equals,
                [v.clone()],
            )?);
        }
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Build from a metav1 `LabelSelector` JSON object (`matchLabels`,
    /// `matchExpressions`). `null` gives [`LabelSelector::nothing`]; `{}` gives
    /// [`LabelSelector::everything`].
    pub fn from_json(selector: &Value) -> Result<LabelSelector, LabelSelectorError> {
        let obj = match selector {
            Value::Null => return Ok(LabelSelector::nothing()),
            Value::Object(o) => o,
            other => {
                return Err(LabelSelectorError::InvalidObject(format!(
                    "expected an object, got {}",
                    json_type(other)
                )))
            }
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (k, v) in labels {
                    let Some(v) = v.as_str() else {
                        return Err(LabelSelectorError::InvalidObject(format!(
                            "matchLabels[{k}] must be a string"
                        )));
                    };
                    requirements.push(LabelRequirement::new(
                        k,
                        LabelOperator::Equals,
                        [v.to_string()],
                    )?);
                }
            }
            Some(_) => {
                return Err(LabelSelectorError::InvalidObject(
                    "matchLabels must be an object".into(),
                ))
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, e) in exprs.iter().enumerate() {
                    requirements.push(expression_requirement(i, e)?);
                }
            }
            Some(_) => {
                return Err(LabelSelectorError::InvalidObject(
                    "matchExpressions must be a list".into(),
                ))
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Build from the typed metav1 `LabelSelector`.
    pub fn from_k8s(
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<LabelSelector, LabelSelectorError> {
        let v = serde_json::to_value(selector)
            .map_err(|e| LabelSelectorError::InvalidObject(e.to_string()))?;
        LabelSelector::from_json(&v)
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    /// True for the match-everything selector.
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for the match-nothing selector.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// Whether an object with these labels (`metadata.labels`, possibly absent)
    /// is selected. Non-string label values are treated as absent.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.matches_with(|k| labels.and_then(|m| m.get(k)).and_then(Value::as_str))
    }

    /// [`LabelSelector::matches`] for a typed label map.
    pub fn matches_map(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Whether the labels of a whole object (`metadata.labels`) are selected.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }

    /// Match against any label lookup.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches_with(&get))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = LabelSelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

fn expression_requirement(i: usize, e: &Value) -> Result<LabelRequirement, LabelSelectorError> {
    let bad = |m: &str| LabelSelectorError::InvalidObject(format!("matchExpressions[{i}]: {m}"));
    let obj = e.as_object().ok_or_else(|| bad("must be an object"))?;
    let key = obj
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("key must be a string"))?;
    let op = obj
        .get("operator")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("operator must be a string"))?;
    let values: Vec<String> = match obj.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(vs)) => vs
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("values must be strings"))?,
        Some(_) => return Err(bad("values must be a list")),
    };
    let operator = match op {
        "In" => LabelOperator::In,
        "NotIn" => LabelOperator::NotIn,
        "Exists" => LabelOperator::Exists,
        "DoesNotExist" => LabelOperator::DoesNotExist,
        other => return Err(LabelSelectorError::InvalidOperator(other.to_string())),
    };
    LabelRequirement::new(key, operator, values)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

// --- lexer / parser --------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::Not => "!".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Comma => ",".into(),
            Token::End => "end of string".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Result<Vec<Token>, LabelSelectorError> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next = chars.peek().map(|&(_, n)| n);
            let tok = match (c, next) {
                ('=', Some('=')) => {
                    chars.next();
                    Token::DoubleEq
                }
                ('=', _) => Token::Eq,
                ('!', Some('=')) => {
                    chars.next();
                    Token::NotEq
                }
                ('!', _) => Token::Not,
                ('(', _) => Token::Open,
                (')', _) => Token::Close,
                (',', _) => Token::Comma,
                ('>', _) => Token::Gt,
                _ => Token::Lt,
            };
            out.push(tok);
            continue;
        }
        let mut end = start;
        while let Some(&(i, ch)) = chars.peek() {
            if ch.is_whitespace() || is_special(ch) {
                break;
            }
            end = i + ch.len_utf8();
            chars.next();
        }
        let word = &input[start..end];
        out.push(match word {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word.to_string()),
        });
    }
    out.push(Token::End);
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn syntax(found: &Token, expected: &str) -> LabelSelectorError {
        LabelSelectorError::Syntax {
            found: found.describe(),
            expected: expected.to_string(),
        }
    }

    fn parse_all(&mut self) -> Result<Vec<LabelRequirement>, LabelSelectorError> {
        let mut reqs = Vec::new();
        if *self.peek() == Token::End {
            return Ok(reqs);
        }
        loop {
            reqs.push(self.parse_requirement()?);
            match self.next() {
                Token::End => return Ok(reqs),
                Token::Comma => {
                    if matches!(self.peek(), Token::End | Token::Comma) {
                        return Err(Self::syntax(self.peek(), "identifier after ','"));
                    }
                }
                other => return Err(Self::syntax(&other, "',' or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<LabelRequirement, LabelSelectorError> {
        let negated = *self.peek() == Token::Not;
        if negated {
            self.next();
        }
        let key = match self.next() {
            Token::Ident(k) => k,
            other => return Err(Self::syntax(&other, "identifier")),
        };
        if negated {
            return LabelRequirement::new(&key, LabelOperator::DoesNotExist, Vec::new());
        }
        let op = match self.peek() {
            Token::End | Token::Comma => {
                return LabelRequirement::new(&key, LabelOperator::Exists, Vec::new())
            }
            Token::Eq => LabelOperator::Equals,
            Token::DoubleEq => LabelOperator::DoubleEquals,
            Token::NotEq => LabelOperator::NotEquals,
            Token::Gt => LabelOperator::GreaterThan,
            Token::Lt => LabelOperator::LessThan,
            Token::In => LabelOperator::In,
            Token::NotIn => LabelOperator::NotIn,
            other => {
                return Err(Self::syntax(
                    other,
                    "'=', '!=', '==', 'in', 'notin', '>' or '<'",
                ))
            }
        };
        self.next();
        let values = if matches!(op, LabelOperator::In | LabelOperator::NotIn) {
            self.parse_set()?
        } else {
            vec![self.parse_exact_value()?]
        };
        LabelRequirement::new(&key, op, values)
    }

    fn parse_exact_value(&mut self) -> Result<String, LabelSelectorError> {
        match self.peek().clone() {
            Token::End | Token::Comma => Ok(String::new()),
            Token::Ident(v) => {
                self.next();
                Ok(v)
            }
            // `a=in` selects the value "in".
            Token::In => {
                self.next();
                Ok("in".into())
            }
            Token::NotIn => {
                self.next();
                Ok("notin".into())
            }
            other => Err(Self::syntax(&other, "identifier")),
        }
    }

    fn parse_set(&mut self) -> Result<Vec<String>, LabelSelectorError> {
        let open = self.next();
        if open != Token::Open {
            return Err(Self::syntax(&open, "'('"));
        }
        let mut values = Vec::new();
        if *self.peek() == Token::Close {
            self.next();
            return Ok(values);
        }
        loop {
            match self.next() {
                Token::Ident(v) => values.push(v),
                Token::In => values.push("in".into()),
                Token::NotIn => values.push("notin".into()),
                // `(a,)` and `(,a)` contribute an empty value, as upstream.
                Token::Comma => {
                    values.push(String::new());
                    self.pos -= 1;
                }
                Token::Close => {
                    values.push(String::new());
                    return Ok(values);
                }
                other => return Err(Self::syntax(&other, "identifier")),
            }
            match self.next() {
                Token::Comma => {}
                Token::Close => return Ok(values),
                other => return Err(Self::syntax(&other, "',' or ')'")),
            }
        }
    }
}

// --- key / value validation --------------------------------------------------

const QUALIFIED_NAME_FMT: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.first()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.last()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Validate a label key (an optional DNS subdomain prefix and `/`, then a name
/// of at most 63 characters), as upstream's `IsQualifiedName`.
pub fn validate_label_key(key: &str) -> Result<(), LabelSelectorError> {
    let err = |reason: String| LabelSelectorError::InvalidKey {
        key: key.to_string(),
        reason,
    };
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Err(err("prefix part must be non-empty".into()));
            }
            if !is_dns1123_subdomain(prefix) {
                return Err(err(
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into(),
                ));
            }
            name
        }
        _ => {
            return Err(err(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into(),
            ))
        }
    };
    if name.is_empty() {
        return Err(err("name part must be non-empty".into()));
    }
    if name.len() > 63 {
        return Err(err("name part must be no more than 63 characters".into()));
    }
    if !is_name_part(name) {
        return Err(err(QUALIFIED_NAME_FMT.into()));
    }
    Ok(())
}

/// Validate a label value (empty, or at most 63 characters of
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`).
pub fn validate_label_value(value: &str) -> Result<(), LabelSelectorError> {
    let err = |reason: &str| LabelSelectorError::InvalidValue {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(err("must be no more than 63 characters"));
    }
    if !is_name_part(value) {
        return Err(err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// Why a field selector could not be parsed or is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    NoOperator {
        /// The whole selector.
        selector: String,
        /// The term that has no operator.
        term: String,
    },
    /// A term has an empty field name.
    #[error("invalid selector: '{0}'; field name must not be empty")]
    EmptyField(String),
    /// A field name with characters a field label cannot have (`!`, whitespace).
    #[error("invalid selector: '{selector}'; invalid field name '{field}'")]
    BadField {
        /// The whole selector.
        selector: String,
        /// The field name.
        field: String,
    },
    /// A `\` escape that is not `\\`, `\,` or `\=`.
    #[error("invalid field selector: invalid escape sequence in '{0}'")]
    BadEscape(String),
    /// A field label the resource does not support (upstream answers 400).
    #[error("field label not supported: {0}")]
    Unsupported(String),
}

/// The operator of one field requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value`
    Equals,
    /// `field==value`
    DoubleEquals,
    /// `field!=value`
    NotEquals,
}

impl FieldOperator {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldOperator::Equals => "=",
            FieldOperator::DoubleEquals => "==",
            FieldOperator::NotEquals => "!=",
        }
    }

    /// True for `=` and `==`.
    pub fn is_equality(self) -> bool {
        !matches!(self, FieldOperator::NotEquals)
    }
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    /// The field label, e.g. `metadata.name`.
    pub field: String,
    /// The operator.
    pub op: FieldOperator,
    /// The value (unescaped; may be empty).
    pub value: String,
}

impl FieldRequirement {
    /// Whether a field value satisfies this requirement.
    pub fn matches_value(&self, actual: &str) -> bool {
        (actual == self.value) == self.op.is_equality()
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            escape_field_value(&self.field),
            self.op.as_str(),
            escape_field_value(&self.value)
        )
    }
}

/// A parsed field selector: the conjunction of its terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// Parse `a=b,c!=d` (values may be empty; `\,`, `\=` and `\\` escape).
    pub fn parse(input: &str) -> Result<FieldSelector, FieldSelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for term in split_unescaped(input, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let Some((field, op, value)) = split_term(term) else {
                return Err(FieldSelectorError::NoOperator {
                    selector: input.to_string(),
                    term: term.to_string(),
                });
            };
            let field = unescape(field.trim())
                .ok_or_else(|| FieldSelectorError::BadEscape(input.to_string()))?;
            if field.is_empty() {
                return Err(FieldSelectorError::EmptyField(input.to_string()));
            }
            if field.contains(|c: char| c == '!' || c.is_whitespace()) {
                return Err(FieldSelectorError::BadField {
                    selector: input.to_string(),
                    field,
                });
            }
            let value =
                unescape(value).ok_or_else(|| FieldSelectorError::BadEscape(input.to_string()))?;
            requirements.push(FieldRequirement { field, op, value });
        }
        Ok(FieldSelector { requirements })
    }

    /// The terms in the order given.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when there are no terms.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal, if a `=`/`==` term requires one
    /// (e.g. `metadata.name=web` lets a handler get one object).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op.is_equality())
            .map(|r| r.value.as_str())
    }

    /// The field labels used that are not in `allowed`, in order, without repeats.
    pub fn unsupported_fields<'a>(&'a self, allowed: &[&str]) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.requirements {
            if !allowed.contains(&r.field.as_str()) && !out.contains(&r.field.as_str()) {
                out.push(&r.field);
            }
        }
        out
    }

    /// `Err(Unsupported(first unknown field))` when a field is not in `allowed`.
    pub fn check_supported(&self, allowed: &[&str]) -> Result<(), FieldSelectorError> {
        match self.unsupported_fields(allowed).first() {
            Some(f) => Err(FieldSelectorError::Unsupported((*f).to_string())),
            None => Ok(()),
        }
    }

    /// Whether an object matches, reading field values through `get`. A field
    /// for which `get` returns `None` (unknown) makes the selector not match;
    /// use [`FieldSelector::check_supported`] first to answer 400 instead.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| match get(&r.field) {
            Some(actual) => r.matches_value(&actual),
            None => false,
        })
    }

    /// Match a whole object using [`field_value`] for every field.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(|f| field_value(obj, f))
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = FieldSelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldSelector::parse(s)
    }
}

/// The value of a dotted field label (`metadata.name`, `spec.nodeName`,
/// `status.phase`, `involvedObject.kind`) in an object, as a selector compares it.
///
/// A missing field or `null` gives `Some("")` (so `involvedObject.namespace=`
/// matches cluster-scoped objects); strings, numbers and booleans give their text;
/// an object or a list gives `None` (not something a field selector can compare).
pub fn field_value(obj: &Value, field: &str) -> Option<String> {
    let mut cur = obj;
    for part in field.split('.') {
        match cur {
            Value::Object(m) => match m.get(part) {
                Some(v) => cur = v,
                None => return Some(String::new()),
            },
            Value::Null => return Some(String::new()),
            _ => return Some(String::new()),
        }
    }
    match cur {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// Split a term at its first unescaped operator (`!=`, `==` or `=`).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    let bytes = term.as_bytes();
    let mut escaped = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if c == b'!' && bytes.get(i + 1) == Some(&b'=') {
            return Some((&term[..i], FieldOperator::NotEquals, &term[i + 2..]));
        } else if c == b'=' {
            if bytes.get(i + 1) == Some(&b'=') {
                return Some((&term[..i], FieldOperator::DoubleEquals, &term[i + 2..]));
            }
            return Some((&term[..i], FieldOperator::Equals, &term[i + 1..]));
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn parses_every_operator_and_renders_canonically() {
        let s = LabelSelector::parse(
            " tier in (fe, be) ,env!=prod,app=web, x==y ,!legacy, has , z notin (b,a), n>3, m<10",
        )
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env!=prod,has,!legacy,m<10,n>3,tier in (be,fe),x==y,z notin (a,b)"
        );
        let ops: Vec<LabelOperator> = s.requirements().iter().map(|r| r.operator()).collect();
        assert!(ops.contains(&LabelOperator::DoesNotExist));
        assert!(ops.contains(&LabelOperator::DoubleEquals));
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = LabelSelector::parse("   ").unwrap();
        assert!(s.is_everything());
        assert!(s.matches(None));
        assert_eq!(s.to_string(), "");
    }

    #[test]
    fn matching_semantics() {
        let l = labels(json!({"app": "web", "tier": "fe", "n": "5"}));
        let yes = [
            "app=web",
            "app==web",
            "app",
            "!missing",
            "tier in (fe,be)",
            "tier notin (be)",
            "missing notin (x)",
            "missing!=x",
            "app!=db",
            "n>4",
            "n<6",
            "app=web,tier=fe",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        let no = [
            "app=db",
            "missing",
            "!app",
            "tier in (be)",
            "tier notin (fe)",
            "app!=web",
            "n>5",
            "n<5",
            "app>1",
            "missing=x",
            "app=web,tier=be",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        assert!(!LabelSelector::parse("app=web").unwrap().matches(None));
        assert!(LabelSelector::parse("!app").unwrap().matches(None));
        let m: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        assert!(LabelSelector::parse("app in (web)")
            .unwrap()
            .matches_map(&m));
    }

    #[test]
    fn empty_values_are_allowed() {
        let s = LabelSelector::parse("a=,b in (x,)").unwrap();
        assert_eq!(s.to_string(), "a=,b in (,x)");
        let l = labels(json!({"a": "", "b": ""}));
        assert!(s.matches(Some(&l)));
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        for bad in [
            "a in b", "a in (b", "a=b=c", "=b", "a,,b", "a,", "!", "a b", "a in ()", "(", "a!b",
            "n>x",
        ] {
            let e = LabelSelector::parse(bad);
            assert!(e.is_err(), "{bad} should fail");
            assert!(e
                .unwrap_err()
                .to_string()
                .starts_with("unable to parse requirement"));
        }
        assert!(matches!(
            LabelSelector::parse("-a=b"),
            Err(LabelSelectorError::InvalidKey { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("a=b c"),
            Err(LabelSelectorError::Syntax { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("a=-b"),
            Err(LabelSelectorError::InvalidValue { .. })
        ));
        let long = "x".repeat(64);
        assert!(LabelSelector::parse(&format!("{long}=a")).is_err());
        assert!(LabelSelector::parse(&format!("a={long}")).is_err());
        assert!(LabelSelector::parse("Example.com/a=b").is_err());
        assert!(LabelSelector::parse("example.com/a=b").is_ok());
        assert!(LabelSelector::parse("a/b/c=d").is_err());
        assert!(LabelSelector::parse("/a=d").is_err());
    }

    #[test]
    fn from_json_label_selector() {
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe"]},
                {"key": "env", "operator": "NotIn", "values": ["prod", "dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "team", "operator": "Exists", "values": []}
            ]
        }))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,!canary,env notin (dev,prod),team,tier in (fe)"
        );
        let l = labels(json!({"app": "web", "tier": "fe", "team": "x"}));
        assert!(s.matches(Some(&l)));
        assert!(LabelSelector::from_json(&json!({})).unwrap().matches(None));
        assert!(LabelSelector::from_json(&json!({"matchLabels": null}))
            .unwrap()
            .is_everything());
        assert!(!LabelSelector::from_json(&Value::Null)
            .unwrap()
            .matches(Some(&l)));
        assert_eq!(
            LabelSelector::from_json(
                &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})
            )
            .unwrap_err(),
            LabelSelectorError::InvalidOperator("Gt".into())
        );
        assert!(LabelSelector::from_json(
            &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
        )
        .is_err());
        assert!(LabelSelector::from_json(
            &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
        )
        .is_err());
        assert!(LabelSelector::from_json(&json!({"matchLabels": {"a": 1}})).is_err());
        assert!(LabelSelector::from_json(&json!([])).is_err());
    }

    #[test]
    fn from_typed_and_from_map() {
        let typed = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: None,
        };
        assert_eq!(
            LabelSelector::from_k8s(&typed).unwrap().to_string(),
            "app=web"
        );
        let m: BTreeMap<String, String> = [
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ]
        .into();
        assert_eq!(LabelSelector::from_map(&m).unwrap().to_string(), "a=1,b=2");
    }

    #[test]
    fn display_roundtrips() {
        for s in ["a=b,c in (d,e)", "!x,y", "k notin (v)", "a==b,c!=d"] {
            let parsed = LabelSelector::parse(s).unwrap();
            let again = LabelSelector::parse(&parsed.to_string()).unwrap();
            assert_eq!(parsed, again);
        }
    }

    #[test]
    fn field_selector_parse_and_match() {
        let s = FieldSelector::parse(
            "spec.nodeName=node1,status.phase!=Succeeded,status.phase!=Failed",
        )
        .unwrap();
        assert_eq!(s.requirements().len(), 3);
        assert_eq!(s.requirements()[1].op, FieldOperator::NotEquals);
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node1"}, "status": {"phase": "Running"}});
        assert!(s.matches_object(&pod));
        let done = json!({"spec": {"nodeName": "node1"}, "status": {"phase": "Failed"}});
        assert!(!s.matches_object(&done));
        assert_eq!(s.requires_exact_match("spec.nodeName"), Some("node1"));
        assert_eq!(s.requires_exact_match("status.phase"), None);
        assert_eq!(
            s.to_string(),
            "spec.nodeName=node1,status.phase!=Succeeded,status.phase!=Failed"
        );
    }

    #[test]
    fn field_selector_empty_values_and_events() {
        let s = FieldSelector::parse(
            "involvedObject.name=web-1,involvedObject.namespace=,involvedObject.kind==Node",
        )
        .unwrap();
        assert_eq!(s.requirements()[1].value, "");
        assert_eq!(s.requirements()[2].op, FieldOperator::DoubleEquals);
        let ev = json!({"involvedObject": {"name": "web-1", "kind": "Node"}});
        assert!(s.matches_object(&ev));
        let ev2 =
            json!({"involvedObject": {"name": "web-1", "kind": "Node", "namespace": "default"}});
        assert!(!s.matches_object(&ev2));
    }

    #[test]
    fn field_selector_errors_and_support_checks() {
        assert!(matches!(
            FieldSelector::parse("metadata.name"),
            Err(FieldSelectorError::NoOperator { .. })
        ));
        assert!(matches!(
            FieldSelector::parse("=x"),
            Err(FieldSelectorError::EmptyField(_))
        ));
        assert!(matches!(
            FieldSelector::parse("a=b\\x"),
            Err(FieldSelectorError::BadEscape(_))
        ));
        assert!(FieldSelector::parse("").unwrap().is_everything());
        let s = FieldSelector::parse("metadata.name=a,spec.foo=b,spec.foo!=c").unwrap();
        assert_eq!(s.unsupported_fields(&["metadata.name"]), vec!["spec.foo"]);
        assert_eq!(
            s.check_supported(&["metadata.name"])
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.foo"
        );
        assert!(s.check_supported(&["metadata.name", "spec.foo"]).is_ok());
        // Unknown fields (getter says None) never match.
        assert!(!s.matches(|_| None));
    }

    #[test]
    fn field_selector_escapes() {
        let s = FieldSelector::parse("metadata.name=a\\,b\\=c,x!=\\\\").unwrap();
        assert_eq!(s.requirements()[0].value, "a,b=c");
        assert_eq!(s.requirements()[1].value, "\\");
        assert_eq!(FieldSelector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn field_value_paths() {
        let obj = json!({"metadata": {"name": "n", "generation": 3}, "spec": {"unschedulable": true, "x": {"y": 1}}, "status": null});
        assert_eq!(field_value(&obj, "metadata.name").as_deref(), Some("n"));
        assert_eq!(field_value(&obj, "metadata.namespace").as_deref(), Some(""));
        assert_eq!(
            field_value(&obj, "metadata.generation").as_deref(),
            Some("3")
        );
        assert_eq!(
            field_value(&obj, "spec.unschedulable").as_deref(),
            Some("true")
        );
        assert_eq!(field_value(&obj, "status.phase").as_deref(), Some(""));
        assert_eq!(field_value(&obj, "spec.x"), None);
        assert_eq!(
            field_value(&obj, "metadata.name.deeper").as_deref(),
            Some("")
        );
    }

    #[test]
    fn arbitrary_strings_never_panic_and_roundtrip() {
        const PIECES: &[&str] = &[
            "a", "b", "x.io/k", "=", "==", "!=", "!", "(", ")", ",", " ", "in", "notin", ">", "<",
            "1", "-", "\\", "é", "",
        ];
        let mut state: u64 = 0xDEAD_BEEF_CAFE_F00D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let n = next() % 8;
            let s: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            if let Ok(sel) = LabelSelector::parse(&s) {
                parsed += 1;
                let again = LabelSelector::parse(&sel.to_string())
                    .unwrap_or_else(|e| panic!("{s:?} -> {sel} does not reparse: {e}"));
                assert_eq!(again, sel, "{s:?}");
            }
            if let Ok(fs) = FieldSelector::parse(&s) {
                let again = FieldSelector::parse(&fs.to_string())
                    .unwrap_or_else(|e| panic!("{s:?} -> {fs} does not reparse: {e}"));
                assert_eq!(again.requirements().len(), fs.requirements().len(), "{s:?}");
            }
        }
        assert!(parsed > 1_000, "only {parsed} selectors parsed");
    }
}
