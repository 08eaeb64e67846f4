//! `multipart/form-data` bodies (RFC 7578) read the way a backend's form
//! parser reads them: the parts between `--boundary` lines, each with its
//! headers and its content. A field's name and value are handed on; a
//! file's name and filename, not its content (a part is a file only with a
//! filename that is not empty: some parsers read `filename=""` as a field).
//! Line ends other than CRLF, folded header lines, a part without one
//! `Content-Disposition: form-data; name=…`, a transfer encoding other
//! than the identity ones, several boundaries, or a body that never closes
//! are refused: the policy cannot tell what the backend would read.

use memchr::memmem::Finder;

/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

/// The most bytes of one part's headers.
const MAX_PART_HEADERS: usize = 8 * 1024;

/// The boundary of a `multipart/form-data` content type, `None` for any
/// other type. `Some(Err(()))`: the type is multipart but its boundary is
/// missing or not one RFC 2046 allows.
pub fn form_data_boundary(content_type: &str) -> Option<Result<&str, ()>> {
    let mut params = content_type.split(';');
    let mime = params.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let mut boundaries = params.filter_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| unquote(value.trim()))
    });
    let boundary = boundaries.next().filter(|b| is_boundary(b));
    // Parsers differ on which of several they take.
    let several = boundaries.next().is_some();
    Some(boundary.filter(|_| !several).ok_or(()))
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// RFC 2046's `bcharsnospace` and inner spaces, 1 to 70 of them.
fn is_boundary(boundary: &str) -> bool {
    let bytes = boundary.as_bytes();
    (1..=MAX_BOUNDARY).contains(&bytes.len())
        && !bytes.ends_with(b" ")
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(b))
}

/// One part, as a backend's form parser hands it on.
#[derive(Debug, PartialEq, Eq)]
pub enum Part<'a> {
    /// A field: its name and its value as sent (not percent-decoded).
    Field { name: &'a [u8], value: &'a [u8] },
    /// A file: its field name and filename (the content is not read).
    File { name: &'a [u8], filename: &'a [u8] },
}

/// Why a body cannot be read as a backend would.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// No `--boundary` line, or the body ends before the closing one.
    Unclosed,
    /// A part's headers: too long, not `Content-Disposition: form-data`
    /// with a name, or a transfer encoding the policy does not decode.
    PartHeaders,
}

/// Calls `each` with every part in order until it breaks.
pub fn parts<'a, B>(
    body: &'a [u8],
    boundary: &str,
    mut each: impl FnMut(Part<'a>) -> std::ops::ControlFlow<B>,
) -> Result<Option<B>, Malformed> {
    let dash_boundary = [&b"--"[..], boundary.as_bytes()].concat();
    // Every delimiter after the first follows a CRLF.
    let delimiter = [&b"\r\n"[..], &dash_boundary].concat();
    let delimiter = Finder::new(&delimiter);
    let header_end = Finder::new(b"\r\n\r\n");
    // The first delimiter starts the body or a line (after a preamble).
    let mut at = if body.starts_with(&dash_boundary) {
        dash_boundary.len()
    } else {
        delimiter.find(body).ok_or(Malformed::Unclosed)? + delimiter.needle().len()
    };
    loop {
        let rest = &body[at..];
        // `--` closes the body; anything else after the boundary up to the
        // line end is transport padding (spaces and tabs).
        if rest.starts_with(b"--") {
            return Ok(None);
        }
        let line_end = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t'))
            .filter(|&i| rest[i..].starts_with(b"\r\n"))
            .ok_or(Malformed::Unclosed)?;
        let part_start = at + line_end + 2;
        let part = &body[part_start..];
        if part.starts_with(b"\r\n") {
            // No headers: no name.
            return Err(Malformed::PartHeaders);
        }
        let headers_len = header_end
            .find(&part[..part.len().min(MAX_PART_HEADERS + 4)])
            .ok_or(Malformed::PartHeaders)?;
        let content_start = part_start + headers_len + 4;
        let content_len = delimiter
            .find(&body[content_start..])
            .ok_or(Malformed::Unclosed)?;
        let content = &body[content_start..content_start + content_len];
        // The header lines, each with its CRLF.
        let headers = &body[part_start..part_start + headers_len + 2];
        let part = read_part(headers, content)?;
        if let std::ops::ControlFlow::Break(found) = each(part) {
            return Ok(Some(found));
        }
        at = content_start + content_len + delimiter.needle().len();
    }
}

/// A part from its header lines (each ending in CRLF) and its content.
fn read_part<'a>(headers: &'a [u8], content: &'a [u8]) -> Result<Part<'a>, Malformed> {
    let mut disposition = None;
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r\n").ok_or(Malformed::PartHeaders)?;
        // A folded line (obsolete) joins the one before in some parsers.
        let folded = line.first().is_some_and(|b| matches!(b, b' ' | b'\t'));
        let colon = line.iter().position(|&b| b == b':');
        let Some(colon) = colon.filter(|_| !folded) else {
            return Err(Malformed::PartHeaders);
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if disposition.is_some() {
                return Err(Malformed::PartHeaders);
            }
            disposition = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding")
            && ![&b"7bit"[..], b"8bit", b"binary"]
                .iter()
                .any(|identity| value.eq_ignore_ascii_case(identity))
        {
            return Err(Malformed::PartHeaders);
        }
    }
    let disposition = disposition.ok_or(Malformed::PartHeaders)?;
    let mut params = split_params(disposition);
    let kind = params.next().ok_or(Malformed::PartHeaders)?;
    if !kind.trim_ascii().eq_ignore_ascii_case(b"form-data") {
        return Err(Malformed::PartHeaders);
    }
    let (mut name, mut filename) = (None, None);
    for param in params {
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            continue;
        };
        let key = param[..eq].trim_ascii();
        let value = quoted(param[eq + 1..].trim_ascii());
        let slot = if key.eq_ignore_ascii_case(b"name") {
            &mut name
        } else if key.eq_ignore_ascii_case(b"filename") {
            &mut filename
        } else {
            // `filename*` (RFC 5987) and others: RFC 7578 says not to use
            // them; a backend that reads one sees a name checked below.
            continue;
        };
        if slot.replace(value).is_some() {
            return Err(Malformed::PartHeaders);
        }
    }
    let name = name.ok_or(Malformed::PartHeaders)?;
    Ok(match filename {
        Some(filename) if !filename.is_empty() => Part::File { name, filename },
        _ => Part::Field {
            name,
            value: content,
        },
    })
}

/// `;`-separated parameters, a `;` inside quotes kept.
fn split_params(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    let mut escaped = false;
    value.split(move |&b| {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b';' if !quoted => return true,
            _ => {}
        }
        false
    })
}

/// A parameter's value without its quotes. Escapes are left as sent: the
/// value is checked with them, which only adds a backslash.
fn quoted(value: &[u8]) -> &[u8] {
    value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::ControlFlow;

    fn all(body: &[u8], boundary: &str) -> Result<Vec<Part<'static>>, Malformed> {
        let body: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
        let mut seen = Vec::new();
        parts::<()>(body, boundary, |part| {
            seen.push(part);
            ControlFlow::Continue(())
        })?;
        Ok(seen)
    }

    #[test]
    fn the_boundary_is_read_from_the_content_type() {
        let read = form_data_boundary;
        assert_eq!(read("multipart/form-data; boundary=abc"), Some(Ok("abc")));
        assert_eq!(
            read("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b:c\""),
            Some(Ok("a b:c"))
        );
        assert_eq!(read("multipart/form-data"), Some(Err(())));
        assert_eq!(read("multipart/form-data; boundary="), Some(Err(())));
        assert_eq!(
            read(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            Some(Err(()))
        );
        assert_eq!(read("multipart/form-data; boundary=a\"b"), Some(Err(())));
        assert_eq!(
            read("multipart/form-data; boundary=a; boundary=b"),
            Some(Err(()))
        );
        assert_eq!(read("multipart/mixed; boundary=abc"), None);
        assert_eq!(read("application/json"), None);
    }

    #[test]
    fn fields_and_files_are_read_in_order() {
        let body = b"preamble\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"q\"\r\n\r\n\
            1' OR '1'='1\r\n--XyZ  \r\n\
            content-disposition: form-data; name=\"note\"; filename=\"a;b.txt\"\r\n\
            Content-Type: text/html\r\n\r\n\
            <script>\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=empty\r\n\r\n\
            \r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"v\"; filename=\"\"\r\n\r\n\
            read as a field\r\n--XyZ--\r\nepilogue";
        assert_eq!(
            all(body, "XyZ").unwrap(),
            [
                Part::Field {
                    name: b"q",
                    value: b"1' OR '1'='1"
                },
                Part::File {
                    name: b"note",
                    filename: b"a;b.txt"
                },
                Part::Field {
                    name: b"empty",
                    value: b""
                },
                Part::Field {
                    name: b"v",
                    value: b"read as a field"
                },
            ]
        );
    }

    #[test]
    fn what_a_backend_might_read_otherwise_is_refused() {
        let part =
            |headers: &str| format!("--b\r\n{headers}\r\n\r\nvalue\r\n--b--\r\n").into_bytes();
        for headers in [
            "Content-Type: text/plain",
            "Content-Disposition: attachment; name=\"a\"",
            "Content-Disposition: form-data",
            "Content-Disposition: form-data; name=a; name=b",
            "Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b",
            "Content-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: base64",
            "Content-Disposition: form-data; name=a\nX: y",
            "Content-Disposition: form-data; name=a\r\n ; filename=x",
            "no colon",
        ] {
            assert_eq!(
                all(&part(headers), "b"),
                Err(Malformed::PartHeaders),
                "{headers}"
            );
        }
        assert!(all(
            &part("Content-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: 8BIT"),
            "b"
        )
        .is_ok());
        for unclosed in [
            &b"no delimiter at all"[..],
            b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue",
            b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue\r\n--b",
            b"--bx\r\n",
            b"--b\n",
        ] {
            assert!(all(unclosed, "b").is_err(), "{unclosed:?}");
        }
        let long_headers = format!("X-Pad: {}", "a".repeat(MAX_PART_HEADERS));
        assert_eq!(all(&part(&long_headers), "b"), Err(Malformed::PartHeaders));
    }

    #[test]
    fn many_parts_are_read_in_one_pass_and_a_break_stops() {
        let mut body = Vec::new();
        for i in 0..100_000 {
            body.extend_from_slice(
                format!("--b\r\nContent-Disposition: form-data; name=f{i}\r\n\r\nv\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(b"--b--");
        let mut count = 0;
        let stopped = parts(&body, "b", |_| {
            count += 1;
            if count == 1000 {
                ControlFlow::Break("enough")
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(stopped, Ok(Some("enough")));
        assert_eq!(all(&body, "b").map(|parts| parts.len()), Ok(100_000));
    }
}
