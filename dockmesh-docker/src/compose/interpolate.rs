//! `.env` files and `${VAR}` interpolation, the way Compose does them.
//!
//! Supported forms: `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty → default),
//! `${VAR-default}` (unset → default), `${VAR:?message}` / `${VAR?message}` (an error naming the
//! variable), `${VAR:+replacement}` / `${VAR+replacement}`, and `$$` for a literal `$`. Defaults,
//! messages and replacements may themselves contain interpolations (`${A:-${B}}`). An unset
//! variable without a default becomes the empty string, as in Compose (a warning is logged).
//!
//! Variables come from the stack's `.env` only, never from the environment of the process that
//! deploys: a stack then means the same thing on every host it is moved to.

use std::collections::BTreeMap;

/// Variables available to interpolation.
pub type Vars = BTreeMap<String, String>;

/// How deep `${…}` may nest inside defaults, messages and replacements (`${A:-${B:-…}}`).
/// Real files nest two or three levels; the bound keeps a hostile file from exhausting the
/// stack (and from quadratic scanning).
pub const MAX_NESTING: usize = 32;

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InterpolationError {
    /// `${VAR:?message}` or `${VAR?message}` and the variable is not set (or empty, with `:?`).
    #[error("required variable {var} is not set: {message}")]
    Required {
        /// The variable.
        var: String,
        /// The message written in the compose file (or a default one).
        message: String,
    },
    /// `${…}` nests deeper than [`MAX_NESTING`].
    #[error("interpolation nests `${{…}}` deeper than the limit of {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The text is not a valid template.
    #[error("invalid interpolation in {text:?}: {reason}")]
    Invalid {
        /// The text.
        text: String,
        /// What is wrong.
        reason: String,
    },
}

/// Interpolate `text` with `vars`.
pub fn interpolate(text: &str, vars: &Vars) -> Result<String, InterpolationError> {
    interpolate_at(text, vars, 0)
}

/// Interpolate `text`, found `depth` levels of `${…}` deep.
fn interpolate_at(text: &str, vars: &Vars, depth: usize) -> Result<String, InterpolationError> {
    if depth > MAX_NESTING {
        return Err(InterpolationError::TooDeep { limit: MAX_NESTING });
    }
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(off) = text[i..].find('$') else {
            out.push_str(&text[i..]);
            break;
        };
        out.push_str(&text[i..i + off]);
        i += off;
        // bytes[i] == b'$'
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let close = matching_brace(text, i + 2)
                    .ok_or_else(|| invalid(text, "a `${` is never closed by `}`"))?;
                let inner = &text[i + 2..close];
                out.push_str(&braced(inner, text, vars, depth)?);
                i = close + 1;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                out.push_str(&lookup(&text[start..end], vars));
                i = end;
            }
            _ => {
                return Err(invalid(
                    text,
                    "`$` must be followed by a variable name, `{` or `$` (write `$$` for a literal `$`)",
                ));
            }
        }
    }
    Ok(out)
}

fn invalid(text: &str, reason: &str) -> InterpolationError {
    InterpolationError::Invalid {
        text: text.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Index of the `}` closing a `${` whose content starts at `from`, counting nested `${…}`.
fn matching_brace(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn lookup(name: &str, vars: &Vars) -> String {
    match vars.get(name) {
        Some(v) => v.clone(),
        None => {
            tracing::warn!(
                variable = name,
                "variable is not set; substituting an empty string"
            );
            String::new()
        }
    }
}

fn braced(
    inner: &str,
    whole: &str,
    vars: &Vars,
    depth: usize,
) -> Result<String, InterpolationError> {
    let interpolate = |arg: &str, vars: &Vars| interpolate_at(arg, vars, depth + 1);
    let name_len = inner
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or(inner.len());
    let name = &inner[..name_len];
    let valid_name = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !valid_name {
        return Err(invalid(whole, "`${…}` must start with a variable name"));
    }
    let rest = &inner[name_len..];
    if rest.is_empty() {
        return Ok(lookup(name, vars));
    }
    let value = vars.get(name);
    let set = value.is_some();
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (op, arg) = if let Some(arg) = rest.strip_prefix(":-") {
        (":-", arg)
    } else if let Some(arg) = rest.strip_prefix(":?") {
        (":?", arg)
    } else if let Some(arg) = rest.strip_prefix(":+") {
        (":+", arg)
    } else if let Some(arg) = rest.strip_prefix('-') {
        ("-", arg)
    } else if let Some(arg) = rest.strip_prefix('?') {
        ("?", arg)
    } else if let Some(arg) = rest.strip_prefix('+') {
        ("+", arg)
    } else {
        return Err(invalid(
            whole,
            &format!(
                "unknown operator after `{name}` (expected `:-`, `-`, `:?`, `?`, `:+` or `+`)"
            ),
        ));
    };
    let current = value.cloned().unwrap_or_default();
    Ok(match op {
        ":-" if set_nonempty => current,
        "-" if set => current,
        ":-" | "-" => interpolate(arg, vars)?,
        ":?" | "?" => {
            let ok = if op == ":?" { set_nonempty } else { set };
            if ok {
                current
            } else {
                let message = interpolate(arg, vars)?;
                let message = if message.is_empty() {
                    "it has no value".to_owned()
                } else {
                    message
                };
                return Err(InterpolationError::Required {
                    var: name.to_owned(),
                    message,
                });
            }
        }
        ":+" if set_nonempty => interpolate(arg, vars)?,
        "+" if set => interpolate(arg, vars)?,
        _ => String::new(),
    })
}

/// Why an env file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("{file} line {line}: {reason}")]
pub struct EnvFileError {
    /// Which file (`.env`, or the `env_file` path).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parse an env file (`KEY=VALUE` lines) on top of `base`.
///
/// Blank lines and lines starting with `#` are skipped; an `export ` prefix is allowed. Values
/// may be unquoted (trimmed, a ` #` starts a comment), in double quotes (escapes `\n`, `\t`,
/// `\\`, `\"`, `\$`; interpolated) or in single quotes (literal). Unquoted and double-quoted
/// values are interpolated with the variables defined so far (`base` first, then earlier lines).
/// Returns only the variables this file defines.
pub fn parse_env_file(text: &str, file: &str, base: &Vars) -> Result<Vars, EnvFileError> {
    let mut scope = base.clone();
    let mut out = Vars::new();
    for (n, raw) in text.lines().enumerate() {
        let err = |reason: String| EnvFileError {
            file: file.to_owned(),
            line: n + 1,
            reason,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(err("expected KEY=VALUE (the line has no `=`)".to_owned()));
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c == '$') {
            return Err(err(
                "invalid variable name (empty, or holding whitespace or `$`)".to_owned(),
            ));
        }
        let value = parse_value(value.trim_start(), &scope).map_err(err)?;
        scope.insert(key.to_owned(), value.clone());
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

fn parse_value(v: &str, scope: &Vars) -> Result<String, String> {
    let rest_ok = |rest: &str| {
        let rest = rest.trim();
        if rest.is_empty() || rest.starts_with('#') {
            Ok(())
        } else {
            Err("unexpected text after the closing quote".to_owned())
        }
    };
    if let Some(body) = v.strip_prefix('\'') {
        let end = body
            .find('\'')
            .ok_or_else(|| "a single-quoted value is never closed".to_owned())?;
        rest_ok(&body[end + 1..])?;
        return Ok(body[..end].to_owned());
    }
    if let Some(body) = v.strip_prefix('"') {
        let mut raw = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => raw.push('\n'),
                    Some((_, 't')) => raw.push('\t'),
                    Some((_, 'r')) => raw.push('\r'),
                    Some((_, '\\')) => raw.push('\\'),
                    Some((_, '"')) => raw.push('"'),
                    // An escaped `$` stays literal through interpolation.
                    Some((_, '$')) => raw.push_str("$$"),
                    Some((_, other)) => {
                        raw.push('\\');
                        raw.push(other);
                    }
                    None => return Err("a double-quoted value ends with a lone `\\`".to_owned()),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => raw.push(c),
            }
        }
        let end = end.ok_or_else(|| "a double-quoted value is never closed".to_owned())?;
        rest_ok(&body[end + 1..])?;
        return interpolate(&raw, scope).map_err(value_error);
    }
    let unquoted = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    interpolate(unquoted.trim_end(), scope).map_err(value_error)
}

/// Why a value of an env file does not interpolate, without quoting the file: an env file may
/// be one the person who wrote the compose file cannot read.
fn value_error(e: InterpolationError) -> String {
    match e {
        InterpolationError::Required { .. } => {
            "the value needs a variable that is not set (`${NAME:?…}` or `${NAME?…}`)".to_owned()
        }
        InterpolationError::Invalid { reason, .. } => format!("invalid interpolation: {reason}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from([
            ("PORT".to_owned(), "8080".to_owned()),
            ("EMPTY".to_owned(), String::new()),
            ("NAME".to_owned(), "web".to_owned()),
        ])
    }

    /// One data-driven check per form: input, expected output (or `Err` with a fragment of the message).
    fn check(input: &str, expected: Result<&str, &str>) {
        let got = interpolate(input, &vars());
        match (expected, got) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "input {input:?}"),
            (Err(fragment), Err(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(fragment),
                    "input {input:?}: error {msg:?} lacks {fragment:?}"
                );
            }
            (want, got) => panic!("input {input:?}: wanted {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |n: usize| format!("{}x{}", "${a:-".repeat(n), "}".repeat(n));
        assert_eq!(
            interpolate(&nested(MAX_NESTING), &Vars::new()).unwrap(),
            "x"
        );
        // 10 000 levels used to exhaust the stack and abort the process.
        let err = interpolate(&nested(10_000), &Vars::new()).unwrap_err();
        assert_eq!(err, InterpolationError::TooDeep { limit: MAX_NESTING });
        assert!(err.to_string().contains("limit of 32 levels"), "{err}");
    }

    #[test]
    fn interpolation_forms() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain text", Ok("plain text")),
            ("$PORT", Ok("8080")),
            ("${PORT}", Ok("8080")),
            ("${PORT}:80", Ok("8080:80")),
            ("a$NAME-b", Ok("aweb-b")),
            ("$NAME_x", Ok("")),
            ("${MISSING}", Ok("")),
            ("${MISSING:-9090}", Ok("9090")),
            ("${EMPTY:-dflt}", Ok("dflt")),
            ("${EMPTY-dflt}", Ok("")),
            ("${MISSING-dflt}", Ok("dflt")),
            ("${PORT:-1}", Ok("8080")),
            ("${PORT-1}", Ok("8080")),
            ("${MISSING:-${NAME}}", Ok("web")),
            ("${MISSING:-${ALSO:-deep}}", Ok("deep")),
            ("${MISSING:-a:b}", Ok("a:b")),
            ("${MISSING:-}", Ok("")),
            ("${PORT:?need a port}", Ok("8080")),
            (
                "${MISSING:?need a port}",
                Err("MISSING is not set: need a port"),
            ),
            (
                "${EMPTY:?must not be empty}",
                Err("EMPTY is not set: must not be empty"),
            ),
            ("${EMPTY?x}", Ok("")),
            ("${MISSING?}", Err("MISSING is not set: it has no value")),
            ("${NAME:+set}", Ok("set")),
            ("${EMPTY:+set}", Ok("")),
            ("${EMPTY+set}", Ok("set")),
            ("${MISSING+set}", Ok("")),
            ("$$", Ok("$")),
            ("$${PORT}", Ok("${PORT}")),
            ("cost: $$5", Ok("cost: $5")),
            ("${MISSING:-$$}", Ok("$")),
            ("$", Err("must be followed by a variable name")),
            ("a $ b", Err("must be followed by a variable name")),
            ("$1", Err("must be followed by a variable name")),
            ("${PORT", Err("never closed")),
            ("${}", Err("must start with a variable name")),
            ("${1X}", Err("must start with a variable name")),
            ("${PORT!x}", Err("unknown operator")),
            ("ünïcødé ${NAME}", Ok("ünïcødé web")),
        ];
        for (input, expected) in cases {
            check(input, *expected);
        }
    }

    fn check_env(text: &str, expected: Result<&[(&str, &str)], &str>) {
        let got = parse_env_file(text, ".env", &Vars::new());
        match (expected, got) {
            (Ok(want), Ok(got)) => {
                let want: Vars = want
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                assert_eq!(got, want, "env {text:?}");
            }
            (Err(fragment), Err(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(fragment),
                    "env {text:?}: error {msg:?} lacks {fragment:?}"
                );
            }
            (want, got) => panic!("env {text:?}: wanted {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn env_files() {
        type Case<'a> = (&'a str, Result<&'a [(&'a str, &'a str)], &'a str>);
        let cases: &[Case] = &[
            ("", Ok(&[])),
            ("# comment\n\nA=1\n", Ok(&[("A", "1")])),
            ("A = spaced  \n", Ok(&[("A", "spaced")])),
            ("export A=1", Ok(&[("A", "1")])),
            ("A=1 # trailing comment", Ok(&[("A", "1")])),
            ("A=pa#ss", Ok(&[("A", "pa#ss")])),
            (
                "A=\"quoted # not comment\"",
                Ok(&[("A", "quoted # not comment")]),
            ),
            ("A=\"a\\nb\"", Ok(&[("A", "a\nb")])),
            ("A='lit ${X} $'", Ok(&[("A", "lit ${X} $")])),
            ("A=1\nB=${A}2", Ok(&[("A", "1"), ("B", "12")])),
            ("A=1\nB=\"${A}\\$x\"", Ok(&[("A", "1"), ("B", "1$x")])),
            ("A=", Ok(&[("A", "")])),
            ("A=x=y", Ok(&[("A", "x=y")])),
            ("A=1\nA=2", Ok(&[("A", "2")])),
            ("NOEQUALS", Err(".env line 1: expected KEY=VALUE")),
            ("A=1\n=2", Err("line 2: invalid variable name")),
            ("A=\"open", Err("never closed")),
            ("A='open", Err("never closed")),
            ("A=\"x\" y", Err("unexpected text")),
            (
                "A=${B:?B is needed}",
                Err("line 1: the value needs a variable that is not set"),
            ),
        ];
        for (text, expected) in cases {
            check_env(text, *expected);
        }
    }

    #[test]
    fn env_file_values_see_the_base() {
        let base = Vars::from([("HOST".to_owned(), "db".to_owned())]);
        let got = parse_env_file("URL=postgres://${HOST}/x", "app.env", &base).unwrap();
        assert_eq!(got["URL"], "postgres://db/x");
        assert!(
            !got.contains_key("HOST"),
            "only the file's own variables are returned"
        );
    }

    proptest::proptest! {
        /// Any text with its `$` doubled comes back exactly: escaping is lossless.
        #[test]
        fn escaped_text_round_trips(text in "\\PC*") {
            let escaped = text.replace('$', "$$");
            proptest::prop_assert_eq!(interpolate(&escaped, &vars()).unwrap(), text);
        }

        /// A default is used exactly when the variable is unset (or empty, with `:-`).
        #[test]
        fn defaults_apply_only_when_unset(value in "[a-z0-9]{0,8}", default in "[a-z0-9]{1,8}", set in proptest::bool::ANY) {
            let mut v = Vars::new();
            if set {
                v.insert("X".into(), value.clone());
            }
            let colon = interpolate(&format!("${{X:-{default}}}"), &v).unwrap();
            let plain = interpolate(&format!("${{X-{default}}}"), &v).unwrap();
            proptest::prop_assert_eq!(colon, if set && !value.is_empty() { value.clone() } else { default.clone() });
            proptest::prop_assert_eq!(plain, if set { value } else { default });
        }
    }
}
