//! `$(VAR)` expansion in command, args and env values, as upstream does it:
//! `$(NAME)` becomes the value when `NAME` is defined and stays as written
//! otherwise; `$$` is an escaped `$`; any other `$` is kept.

/// Expand `$(VAR)` references in `input` with `lookup`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut plain_start = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 >= bytes.len() {
            i += 1;
            continue;
        }
        out.push_str(&input[plain_start..i]);
        match bytes[i + 1] {
            b'$' => {
                out.push('$');
                i += 2;
            }
            b'(' => match input[i + 2..].find(')') {
                Some(rel) => {
                    let name = &input[i + 2..i + 2 + rel];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&input[i..i + 3 + rel]),
                    }
                    i += 3 + rel;
                }
                None => {
                    // unterminated reference: kept as written
                    out.push_str(&input[i..]);
                    i = bytes.len();
                }
            },
            _ => {
                // `$x`: both kept (the next char is copied on the next round)
                out.push('$');
                i += 1;
            }
        }
        plain_start = i;
    }
    if plain_start < input.len() {
        out.push_str(&input[plain_start..]);
    }
    out
}

/// The container's argv from its `command`/`args` and the image's
/// ENTRYPOINT/CMD: no command → entrypoint + (args, or cmd when no args);
/// a command → command + args (the image's cmd is ignored).
pub fn argv(
    command: &[String],
    args: &[String],
    image_entrypoint: &[String],
    image_cmd: &[String],
) -> Vec<String> {
    if !command.is_empty() {
        return command.iter().chain(args.iter()).cloned().collect();
    }
    let rest = if args.is_empty() { image_cmd } else { args };
    image_entrypoint
        .iter()
        .chain(rest.iter())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lk(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_defined_and_keeps_undefined() {
        assert_eq!(expand("x$(A)y", &lk), "xalphay");
        assert_eq!(expand("$(B)", &lk), "$(B)");
        assert_eq!(expand("$(EMPTY)-", &lk), "-");
    }

    #[test]
    fn escapes_and_odd_dollars() {
        assert_eq!(expand("$$(A)", &lk), "$(A)");
        assert_eq!(expand("$$$(A)", &lk), "$alpha");
        assert_eq!(expand("a$b", &lk), "a$b");
        assert_eq!(expand("end$", &lk), "end$");
        assert_eq!(expand("$(A", &lk), "$(A");
        assert_eq!(expand("héllo $(A) wörld", &lk), "héllo alpha wörld");
    }

    #[test]
    fn argv_rules() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let ep = s(&["/ep"]);
        let cmd = s(&["default"]);
        assert_eq!(argv(&[], &[], &ep, &cmd), s(&["/ep", "default"]));
        assert_eq!(argv(&[], &s(&["x"]), &ep, &cmd), s(&["/ep", "x"]));
        assert_eq!(argv(&s(&["sh"]), &[], &ep, &cmd), s(&["sh"]));
        assert_eq!(
            argv(&s(&["sh", "-c"]), &s(&["echo"]), &ep, &cmd),
            s(&["sh", "-c", "echo"])
        );
    }
}
