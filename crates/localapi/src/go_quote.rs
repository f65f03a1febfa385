//! Go's `%q` rendering of strings and string slices, as tailscaled's error texts carry
//! them (`invalid domain "x"; must be one of ["a" "b"]`), read back.

/// Returns the first Go-`%q`-quoted string in `s`, unescaped.
pub(crate) fn first_go_quoted(s: &str) -> Option<String> {
    let start = s.find('"')?;
    parse_go_quoted(&s[start..]).map(|(v, _)| v)
}

/// Parses a Go `%q` rendering of a `[]string` — `["a" "b"]` (commas tolerated) — returning the
/// unescaped strings. Returns `None` on malformed input.
pub fn parse_go_string_list(s: &str) -> Option<Vec<String>> {
    let s = s.trim_start();
    let mut rest = s.strip_prefix('[')?;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if let Some(r) = rest.strip_prefix(']') {
            let _ = r;
            return Some(out);
        }
        if rest.starts_with('"') {
            let (v, used) = parse_go_quoted(rest)?;
            out.push(v);
            rest = &rest[used..];
        } else {
            // Unquoted element (defensive: `[a b]`, the `%v` rendering).
            let end = rest.find(|c: char| c.is_whitespace() || c == ',' || c == ']')?;
            if end == 0 {
                return None;
            }
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
}

/// Parses one Go double-quoted string literal at the start of `s` (which must start with `"`).
/// Returns the unescaped value and the number of bytes consumed.
fn parse_go_quoted(s: &str) -> Option<(String, usize)> {
    let mut chars = s.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    let mut out = String::new();
    let mut bytes: Vec<u8> = Vec::new(); // pending \x / octal bytes (may form UTF-8)
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        if !bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(bytes));
            bytes.clear();
        }
    };
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                flush(&mut bytes, &mut out);
                return Some((out, i + 1));
            }
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\u{b}'),
                    '\\' | '"' | '\'' => {
                        flush(&mut bytes, &mut out);
                        out.push(e);
                    }
                    'x' => {
                        let h: String = [chars.next()?.1, chars.next()?.1].iter().collect();
                        bytes.push(u8::from_str_radix(&h, 16).ok()?);
                        continue;
                    }
                    '0'..='7' => {
                        let o: String = [e, chars.next()?.1, chars.next()?.1].iter().collect();
                        bytes.push(u8::from_str_radix(&o, 8).ok()?);
                        continue;
                    }
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let mut h = String::with_capacity(n);
                        for _ in 0..n {
                            h.push(chars.next()?.1);
                        }
                        flush(&mut bytes, &mut out);
                        out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                    }
                    _ => return None,
                }
                flush(&mut bytes, &mut out);
            }
            c => {
                flush(&mut bytes, &mut out);
                out.push(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quoted_list() {
        assert_eq!(parse_go_string_list(r#"["a.x.ts.net" "b.x.ts.net"]"#).unwrap(), vec!["a.x.ts.net", "b.x.ts.net"]);
        assert_eq!(parse_go_string_list(r#"["a", "b"]"#).unwrap(), vec!["a", "b"]);
        assert_eq!(parse_go_string_list("[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_go_string_list(r#"["we\"ird" "back\\slash" "tab\there"]"#).unwrap(),
            vec!["we\"ird", "back\\slash", "tab\there"]
        );
        assert_eq!(parse_go_string_list(r#"["caf\u00e9" "\xc3\xa9"]"#).unwrap(), vec!["café", "é"]);
        assert_eq!(parse_go_string_list("[a.x b.x]").unwrap(), vec!["a.x", "b.x"]);
        assert!(parse_go_string_list(r#"["unterminated]"#).is_none());
        assert!(parse_go_string_list("nope").is_none());
    }
}
