//! The small value syntaxes of Compose files: durations (`1m30s`), byte sizes (`512m`) and
//! shell-style command strings.

use std::time::Duration;

/// Parse a Compose duration: one or more `<number><unit>` parts, units `h`, `m`, `s`, `ms`,
/// `us` (or `µs`), `ns`; the number may have a fraction (`1.5s`). `0` alone is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("an empty duration".to_owned());
    }
    let bad = || format!("invalid duration {text:?}: write it like 30s, 1m30s or 500ms");
    let mut total_ns: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return Err(bad()),
        };
        total_ns += number * factor;
        rest = &rest[unit_len..];
    }
    if !total_ns.is_finite() || total_ns > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

/// Parse a byte size: a number with an optional unit `b`, `k`/`kb`, `m`/`mb`, `g`/`gb`
/// (binary multiples, as Docker reads them; case-insensitive).
pub fn parse_bytes(text: &str) -> Result<i64, String> {
    let s = text.trim().to_ascii_lowercase();
    let bad = || format!("invalid size {text:?}: write it like 512m, 1g or 1073741824");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if split == 0 {
        return Err(bad());
    }
    let number: f64 = s[..split].parse().map_err(|_| bad())?;
    let factor: f64 = match &s[split..] {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        "g" | "gb" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as i64)
}

/// Split a command string into words the way a POSIX shell would, without expanding anything:
/// whitespace separates words, `'…'` is literal, `"…"` keeps spaces and honours `\"`, `\\`,
/// `\$` and `` \` ``, and a backslash outside quotes escapes the next character.
pub fn shell_split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed double quote in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed double quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err(format!("{text:?} ends with a lone backslash")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1s", 1_000_000_000),
            ("30s", 30_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1h", 3_600_000_000_000),
            ("500ms", 500_000_000),
            ("1.5s", 1_500_000_000),
            ("10us", 10_000),
            ("7ns", 7),
            (" 2s ", 2_000_000_000),
        ];
        for (text, ns) in ok {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_nanos(*ns),
                "{text}"
            );
        }
        for bad in ["", "10", "s", "1x", "1m30", "-1s", "1..2s"] {
            assert!(
                parse_duration(bad).unwrap_err().contains("duration"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn byte_sizes() {
        let ok: &[(&str, i64)] = &[
            ("1073741824", 1 << 30),
            ("512m", 512 << 20),
            ("512M", 512 << 20),
            ("1g", 1 << 30),
            ("1gb", 1 << 30),
            ("64k", 64 << 10),
            ("100b", 100),
            ("1.5g", 3 << 29),
        ];
        for (text, n) in ok {
            assert_eq!(parse_bytes(text).unwrap(), *n, "{text}");
        }
        for bad in ["", "m", "1t", "lots", "-5m"] {
            assert!(
                parse_bytes(bad).unwrap_err().contains("invalid size"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shell_words() {
        let ok: &[(&str, &[&str])] = &[
            ("", &[]),
            ("sleep 10", &["sleep", "10"]),
            ("  a   b  ", &["a", "b"]),
            (
                "sh -c 'echo $HOME; exit 1'",
                &["sh", "-c", "echo $HOME; exit 1"],
            ),
            (r#"echo "a b" c"#, &["echo", "a b", "c"]),
            (r#"echo "say \"hi\"""#, &["echo", "say \"hi\""]),
            (r"a\ b", &["a b"]),
            (r#"x"y"'z'"#, &["xyz"]),
            ("''", &[""]),
        ];
        for (text, words) in ok {
            assert_eq!(shell_split(text).unwrap(), *words, "{text:?}");
        }
        for bad in ["'open", "\"open", "end\\"] {
            assert!(shell_split(bad).is_err(), "{bad:?}");
        }
    }
}
