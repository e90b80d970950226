//! Authentication: client certificates (verified by TLS against the cluster CA;
//! CN is the user, O the groups) and bearer tokens from a static token file
//! (`<data-dir>/tokens.csv`: `token,user,uid,"group1,group2"`). Anonymous requests
//! are refused.

use std::collections::HashMap;
use std::path::Path;

use axum::http::HeaderMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, User>,
}

impl Authenticator {
    /// Load tokens from a CSV token file, if it exists.
    pub fn load(path: &Path) -> std::io::Result<Authenticator> {
        let mut tokens = HashMap::new();
        if path.exists() {
            for line in std::fs::read_to_string(path)?.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let fields = split_csv(line);
                if fields.len() < 2 {
                    continue;
                }
                let groups = fields
                    .get(3)
                    .map(|g| {
                        g.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                tokens.insert(
                    fields[0].clone(),
                    User {
                        name: fields[1].clone(),
                        groups,
                    },
                );
            }
        }
        Ok(Authenticator { tokens })
    }

    pub fn add_token(&mut self, token: String, user: User) {
        self.tokens.insert(token, user);
    }

    /// The user a request's `Authorization: Bearer` header names.
    pub fn authenticate_headers(&self, headers: &HeaderMap) -> Option<User> {
        let v = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let (scheme, token) = v.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.tokens.get(token.trim()).cloned()
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("tokens.csv");
        std::fs::write(&p, "abc,alice,1,\"system:masters,dev\"\n# c\nxyz,bob,2\n").expect("write");
        let a = Authenticator::load(&p).expect("load");
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().expect("hv"));
        let u = a.authenticate_headers(&h).expect("alice");
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, vec!["system:masters", "dev"]);
        h.insert("authorization", "Bearer nope".parse().expect("hv"));
        assert!(a.authenticate_headers(&h).is_none());
    }
}
