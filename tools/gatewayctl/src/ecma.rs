//! OpenAPI's `pattern` is an ECMA-262 regular expression; the gateway's
//! engines (param-validation's `regex-lite`, the body schemas' `regex`)
//! read another dialect. [`translate`] rewrites what means the same in both
//! once spelled differently, and refuses what the engines cannot do.

/// Why a pattern cannot be carried.
pub type Untranslatable = String;

/// `pattern` in the engines' syntax, matching what it matches in
/// ECMA-262 (searched, as OpenAPI's patterns are: the caller anchors it if
/// its engine matches whole values). A `{` or `}` that is no quantifier,
/// and a `[` inside a class, are literals in ECMA-262 and are escaped;
/// `\d` and `\w` are ASCII as in ECMA-262 (the `regex` crate's are
/// Unicode); an escaped punctuation mark or letter without a meaning is the
/// character itself (`\<` is a word boundary in the engines); `\uXXXX` is
/// `\x{XXXX}`; `[^]` is any character. Lookaround, backreferences, octal
/// and control escapes, Unicode property classes and `--` inside a class
/// have no safe equivalent and are refused.
pub fn translate(pattern: &str) -> Result<String, Untranslatable> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err("it ends with a lone `\\`".into());
                };
                i += 2;
                match next {
                    'd' => out.push_str(if in_class { "0-9" } else { "[0-9]" }),
                    'w' => out.push_str(if in_class {
                        "0-9A-Za-z_"
                    } else {
                        "[0-9A-Za-z_]"
                    }),
                    'D' | 'W' if in_class => {
                        return Err(format!("`\\{next}` inside a class is not supported"))
                    }
                    'D' => out.push_str("[^0-9]"),
                    'W' => out.push_str("[^0-9A-Za-z_]"),
                    's' | 'S' | 'n' | 'r' | 't' | 'f' | 'v' => {
                        out.push('\\');
                        out.push(next);
                    }
                    'b' | 'B' if !in_class => {
                        out.push('\\');
                        out.push(next);
                    }
                    // Inside a class, ECMA-262's `\b` is a backspace.
                    'b' => out.push_str("\\x08"),
                    'x' => {
                        let hex: String = chars.iter().skip(i).take(2).collect();
                        if hex.len() == 2 && hex.chars().all(|h| h.is_ascii_hexdigit()) {
                            out.push_str(&format!("\\x{hex}"));
                            i += 2;
                        } else {
                            out.push('x');
                        }
                    }
                    '1'..='9' => return Err("backreferences (`\\1`) are not supported".into()),
                    'c' => return Err("control escapes (`\\cX`) are not supported".into()),
                    'k' if chars.get(i) == Some(&'<') => {
                        return Err("named backreferences (`\\k<name>`) are not supported".into())
                    }
                    'p' | 'P' => {
                        return Err("Unicode property classes (`\\p{…}`) are not supported".into())
                    }
                    'u' => {
                        let hex: String = chars.iter().skip(i).take(4).collect();
                        if hex.len() == 4 && hex.chars().all(|h| h.is_ascii_hexdigit()) {
                            out.push_str(&format!("\\x{{{hex}}}"));
                            i += 4;
                        } else {
                            out.push('u');
                        }
                    }
                    '0' if chars.get(i).is_some_and(char::is_ascii_digit) => {
                        return Err("octal escapes (`\\012`) are not supported".into())
                    }
                    // `\0` is NUL in ECMA-262.
                    '0' => out.push_str("\\x00"),
                    other => literal(&mut out, other, in_class),
                }
                continue;
            }
            '[' if in_class => out.push_str("\\["),
            '[' => {
                if chars.get(i + 1) == Some(&']') {
                    return Err("`[]` matches nothing".into());
                }
                if chars.get(i + 1) == Some(&'^') && chars.get(i + 2) == Some(&']') {
                    out.push_str("(?s:.)");
                    i += 3;
                    continue;
                }
                in_class = true;
                out.push('[');
                // A `]` first in a class is a literal in the engines but
                // closes an empty class in ECMA-262: handled above.
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            // Set operators of the `regex` crate are literals in ECMA-262.
            '&' | '~' if in_class && chars.get(i + 1) == Some(&c) => {
                out.push('\\');
                out.push(c);
            }
            '-' if in_class && chars.get(i + 1) == Some(&'-') => {
                return Err("`--` inside a class is not supported".into())
            }
            '{' if !in_class => match quantifier_end(&chars, i) {
                Some(end) => {
                    out.extend(&chars[i..=end]);
                    i = end + 1;
                    continue;
                }
                None => out.push_str("\\{"),
            },
            '}' if !in_class => out.push_str("\\}"),
            '(' if !in_class && chars.get(i + 1) == Some(&'?') => {
                let rest: String = chars.iter().skip(i + 2).take(2).collect();
                if rest.starts_with('=') || rest.starts_with('!') || rest == "<=" || rest == "<!" {
                    return Err("lookaround (`(?=`, `(?!`, `(?<=`, `(?<!`) is not supported".into());
                }
                out.push('(');
            }
            other => out.push(other),
        }
        i += 1;
    }
    if in_class {
        return Err("a class (`[`) is not closed".into());
    }
    // Both engines must take it as written now.
    regex_lite::Regex::new(&out).map_err(|e| format!("the gateway's engine refuses it: {e}"))?;
    regex::Regex::new(&out).map_err(|e| format!("the gateway's engine refuses it: {e}"))?;
    Ok(out)
}

/// `c` as a literal: escaped when it means something to the engines
/// where it stands.
fn literal(out: &mut String, c: char, in_class: bool) {
    let special = if in_class {
        "\\[]^-&~"
    } else {
        "\\.+*?()|[]{}^$"
    };
    if special.contains(c) {
        out.push('\\');
    }
    out.push(c);
}

/// The index of the `}` closing a quantifier `{n}`, `{n,}` or `{n,m}`
/// opened at `start`.
fn quantifier_end(chars: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    let digits = |i: &mut usize| {
        let from = *i;
        while chars.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if !digits(&mut i) {
        return None;
    }
    if chars.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (chars.get(i) == Some(&'}')).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn what_both_dialects_read_alike_is_kept() {
        for pattern in [
            "^[a-z]+$",
            "^[A-Z]{2,}$",
            "^a{1,3}b{2}$",
            "^\\S+$",
            "^\\bword\\b",
            "^\\x41\\t$",
        ] {
            assert_eq!(translate(pattern).as_deref(), Ok(pattern), "{pattern}");
        }
    }

    #[test]
    fn literals_spelled_differently_are_rewritten() {
        for (ecma, engines) in [
            // The pattern seen in a real document: `{` opens no quantifier.
            (
                "^(?:{[0-9a-fA-F]{4}}|[0-9]+)$",
                "^(?:\\{[0-9a-fA-F]{4}\\}|[0-9]+)$",
            ),
            ("^{}$", "^\\{\\}$"),
            ("^a{,3}$", "^a\\{,3\\}$"),
            ("^https?:\\/\\/", "^https?://"),
            ("^[[a]]$", "^[\\[a]]$"),
            ("^[a&&b]$", "^[a\\&&b]$"),
            ("^\\u00e9+$", "^\\x{00e9}+$"),
            ("^[^]$", "^(?s:.)$"),
            ("^a\\-b$", "^a-b$"),
            ("^\\d{4}$", "^[0-9]{4}$"),
            ("^[\\w.+-]+@[\\w-]+$", "^[0-9A-Za-z_.+-]+@[0-9A-Za-z_-]+$"),
            ("^(?<year>\\d{4})\\D$", "^(?<year>[0-9]{4})[^0-9]$"),
            // Escapes without a meaning in ECMA-262 are the character.
            ("^\\<a\\>\\a\\z$", "^<a>az$"),
            ("^\\.\\$$", "^\\.\\$$"),
            ("^[\\b]$", "^[\\x08]$"),
        ] {
            assert_eq!(translate(ecma).as_deref(), Ok(engines), "{ecma}");
        }
    }

    #[test]
    fn what_the_engines_cannot_do_is_refused_with_why() {
        for (pattern, why) in [
            ("^(?=.*\\d).+$", "lookaround"),
            ("^(?!x).+$", "lookaround"),
            ("(?<=a)b", "lookaround"),
            ("^(a)\\1$", "backreferences"),
            ("^\\p{L}+$", "Unicode property"),
            ("^[]$", "matches nothing"),
            ("^[a-z$", "not closed"),
            ("\\", "lone"),
            ("^(a$", "refuses it"),
            ("^\\012$", "octal"),
            ("^[+--]$", "`--`"),
            ("^[\\W]$", "inside a class"),
        ] {
            let refused = translate(pattern).expect_err(pattern);
            assert!(refused.contains(why), "{pattern}: {refused}");
        }
    }
}
