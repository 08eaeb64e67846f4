//! `multipart/*` bodies (RFC 7578's `multipart/form-data`, and any
//! subtype, which some servers read as a form too) read the way a backend's
//! form parser reads them: the parts between `--boundary` lines, each with
//! its headers and its content. A field's name and value are handed on; a
//! file's name and filename, not its content (a part is a file only with a
//! filename that is not empty: some parsers read `filename=""` as a field).
//!
//! Parsers differ (Go, PHP, Tomcat, Werkzeug, busboy), so only what they
//! all read alike is read, and anything else refused: a preamble, text
//! after the closing line, `--boundary` anywhere but on the delimiter lines,
//! line ends other than CRLF, control bytes, folded or malformed header
//! lines, a part without one `Content-Disposition: form-data` with a
//! `name`, extended (`name*`) or backslashed parameters, a transfer
//! encoding or a charset other than the plain ones, a body that never
//! closes.

use memchr::memmem::Finder;

/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

/// The most bytes of one part's headers.
const MAX_PART_HEADERS: usize = 8 * 1024;

/// The charsets every parser reads as the bytes the detectors see.
const PLAIN_CHARSETS: [&[u8]; 3] = [b"utf-8", b"us-ascii", b"iso-8859-1"];

/// The boundary of a `multipart/*` content type; `None` for a type that
/// neither is multipart nor mentions a boundary. `Some(Err(()))`: it does,
/// but is not exactly `multipart/<subtype>` with one `boundary` RFC 2046
/// allows (and no charset but a plain one), so parsers may read it apart.
pub fn boundary(content_type: &str) -> Option<Result<&str, ()>> {
    let mentions = |word: &str| {
        content_type
            .as_bytes()
            .windows(word.len())
            .filter(|w| w.eq_ignore_ascii_case(word.as_bytes()))
            .count()
    };
    let boundaries = mentions("boundary");
    if mentions("multipart") == 0 && boundaries == 0 {
        return None;
    }
    Some(
        exact_boundary(content_type)
            .filter(|_| boundaries == 1)
            .ok_or(()),
    )
}

fn exact_boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let mime = params.next()?.trim();
    let subtype = mime
        .get(..10)
        .filter(|head| head.eq_ignore_ascii_case("multipart/"))
        .map(|_| &mime[10..])?;
    if !is_token(subtype.as_bytes()) {
        return None;
    }
    let mut boundary = None;
    for param in params {
        let (name, value) = param.trim().split_once('=')?;
        if !is_token(name.as_bytes()) {
            return None;
        }
        if name.eq_ignore_ascii_case("boundary") {
            boundary = Some(unquote(value));
        } else if name.eq_ignore_ascii_case("charset")
            && !is_plain_charset(unquote(value).as_bytes())
        {
            return None;
        }
    }
    boundary.filter(|b| is_boundary(b))
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

/// An RFC 9110 token.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

fn is_plain_charset(charset: &[u8]) -> bool {
    PLAIN_CHARSETS
        .iter()
        .any(|plain| charset.eq_ignore_ascii_case(plain))
}

/// One part, as a backend's form parser hands it on.
#[derive(Debug, PartialEq, Eq)]
pub enum Part<'a> {
    /// A field: its name and its value as sent (not percent-decoded).
    Field { name: &'a [u8], value: &'a [u8] },
    /// A file: its field name and filename (the content is not read).
    File { name: &'a [u8], filename: &'a [u8] },
}

/// Why a body cannot be read as every backend would.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Not exactly delimiter lines and parts: a preamble, no part, text
    /// after the closing line, `--boundary` elsewhere, no closing line.
    Framing,
    /// A part's headers (see the module's list).
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
    // Every `--boundary` in the body must be a delimiter this reads: one a
    // parser finds elsewhere (after a bare LF, in a preamble) is refused.
    let mentioned = Finder::new(&dash_boundary).find_iter(body).count();
    if !body.starts_with(&dash_boundary) {
        return Err(Malformed::Framing);
    }
    let mut at = dash_boundary.len();
    let mut delimiters = 1;
    loop {
        let rest = &body[at..];
        // `--` closes the body: nothing but line ends and spaces may follow.
        if let Some(epilogue) = rest.strip_prefix(b"--") {
            let empty = epilogue.iter().all(|b| b" \t\r\n".contains(b));
            return if empty && delimiters == mentioned && delimiters > 1 {
                Ok(None)
            } else {
                Err(Malformed::Framing)
            };
        }
        // After the boundary, up to the line end: transport padding.
        let line_end = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t'))
            .filter(|&i| rest[i..].starts_with(b"\r\n"))
            .ok_or(Malformed::Framing)?;
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
            .ok_or(Malformed::Framing)?;
        let content = &body[content_start..content_start + content_len];
        // The header lines, each with its CRLF.
        let headers = &body[part_start..part_start + headers_len + 2];
        let part = read_part(headers, content)?;
        if let std::ops::ControlFlow::Break(found) = each(part) {
            return Ok(Some(found));
        }
        at = content_start + content_len + delimiter.needle().len();
        delimiters += 1;
    }
}

/// A part from its header lines (each ending in CRLF) and its content.
fn read_part<'a>(headers: &'a [u8], content: &'a [u8]) -> Result<Part<'a>, Malformed> {
    let mut disposition = None;
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r\n").ok_or(Malformed::PartHeaders)?;
        // A bare CR ends a line for some parsers, a NUL a string for others.
        if line.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
            return Err(Malformed::PartHeaders);
        }
        // `Name: value`, the name a token (so no folded line, no space
        // before the colon).
        let colon = line.iter().position(|&b| b == b':');
        let Some(colon) = colon.filter(|&colon| is_token(&line[..colon])) else {
            return Err(Malformed::PartHeaders);
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if disposition.replace(value).is_some() {
                return Err(Malformed::PartHeaders);
            }
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            if ![&b"7bit"[..], b"8bit", b"binary"]
                .iter()
                .any(|identity| value.eq_ignore_ascii_case(identity))
            {
                return Err(Malformed::PartHeaders);
            }
        } else if name.eq_ignore_ascii_case(b"content-type")
            && !plain_charset(&String::from_utf8_lossy(value))
        {
            return Err(Malformed::PartHeaders);
        }
    }
    let (mut name, mut filename) = (None, None);
    let mut params = Params {
        rest: disposition.ok_or(Malformed::PartHeaders)?,
    };
    if !params.kind()?.eq_ignore_ascii_case(b"form-data") {
        return Err(Malformed::PartHeaders);
    }
    while let Some((key, value)) = params.next_param()? {
        let slot = if key.eq_ignore_ascii_case(b"name") {
            &mut name
        } else if key.eq_ignore_ascii_case(b"filename") {
            &mut filename
        } else {
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

/// A content type (of a body, or of a part) without a `charset`
/// parameter, or with a plain one (UTF-8, US-ASCII, ISO-8859-1).
pub(crate) fn plain_charset(content_type: &str) -> bool {
    content_type
        .split(';')
        .skip(1)
        .all(|param| match param.split_once('=') {
            Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
                is_plain_charset(unquote(charset.trim()).as_bytes())
            }
            _ => true,
        })
}

/// `Content-Disposition`'s value read strictly: a token, then
/// `; token=value` parameters, each value a token or a quoted string
/// without backslashes, the token without `*` (RFC 7578 forbids RFC 5987's
/// extended parameters, which parsers read differently).
struct Params<'a> {
    rest: &'a [u8],
}

/// A parameter's name and value (without its quotes).
type Param<'a> = (&'a [u8], &'a [u8]);

impl<'a> Params<'a> {
    fn kind(&mut self) -> Result<&'a [u8], Malformed> {
        self.token()
    }

    fn next_param(&mut self) -> Result<Option<Param<'a>>, Malformed> {
        self.skip_spaces();
        if self.rest.is_empty() {
            return Ok(None);
        }
        let Some(rest) = self.rest.strip_prefix(b";") else {
            return Err(Malformed::PartHeaders);
        };
        self.rest = rest;
        self.skip_spaces();
        let key = self.token()?;
        if key.ends_with(b"*") {
            return Err(Malformed::PartHeaders);
        }
        let Some(rest) = self.rest.strip_prefix(b"=") else {
            return Err(Malformed::PartHeaders);
        };
        self.rest = rest;
        let value = match self.rest.strip_prefix(b"\"") {
            Some(quoted) => {
                let end = quoted
                    .iter()
                    .position(|&b| b == b'"')
                    .ok_or(Malformed::PartHeaders)?;
                if quoted[..end].contains(&b'\\') {
                    return Err(Malformed::PartHeaders);
                }
                self.rest = &quoted[end + 1..];
                &quoted[..end]
            }
            None => self.token()?,
        };
        Ok(Some((key, value)))
    }

    fn token(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self
            .rest
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)))
            .unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(len);
        if token.is_empty() || token.contains(&b'\'') {
            return Err(Malformed::PartHeaders);
        }
        self.rest = rest;
        Ok(token)
    }

    fn skip_spaces(&mut self) {
        let spaces = self
            .rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        self.rest = &self.rest[spaces..];
    }
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
    fn the_boundary_is_read_from_the_content_type_exactly() {
        let read = boundary;
        assert_eq!(read("multipart/form-data; boundary=abc"), Some(Ok("abc")));
        assert_eq!(
            read("Multipart/Form-Data;charset=UTF-8; BOUNDARY=\"a b:c\""),
            Some(Ok("a b:c"))
        );
        assert_eq!(read("multipart/mixed; boundary=abc"), Some(Ok("abc")));
        for odd in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=a\"b",
            "multipart/form-data; boundary=a; boundary=b",
            // PHP cuts the type at a space, and takes the first "boundary".
            "multipart/form-data boundary=a",
            "multipart/form-data; xboundary=evil; boundary=a",
            "multipart/form-data; charset=ibm037; boundary=a",
            "multipart/form-data; charset=utf-16le; boundary=a",
            "text/plain; boundary=a",
        ] {
            assert_eq!(read(odd), Some(Err(())), "{odd}");
        }
        assert_eq!(
            read(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            Some(Err(()))
        );
        assert_eq!(read("application/x-www-form-urlencoded"), None);
        assert_eq!(read("application/json"), None);
    }

    #[test]
    fn fields_and_files_are_read_in_order() {
        let body = b"--XyZ\r\n\
            Content-Disposition: form-data; name=\"q\"\r\n\r\n\
            1' OR '1'='1\r\n--XyZ  \r\n\
            content-disposition: form-data; name=\"note\"; filename=\"a;b.txt\"\r\n\
            Content-Type: text/html; charset=UTF-8\r\n\r\n\
            <script>\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=empty\r\n\r\n\
            \r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"v\"; filename=\"\"\r\n\r\n\
            read as a field\r\n--XyZ--\r\n";
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
    fn part_headers_a_backend_might_read_otherwise_are_refused() {
        let part =
            |headers: &str| format!("--b\r\n{headers}\r\n\r\nvalue\r\n--b--\r\n").into_bytes();
        for headers in [
            "Content-Type: text/plain",
            "Content-Disposition: attachment; name=\"a\"",
            "Content-Disposition: form-data",
            "Content-Disposition: form-data; name=a; name=b",
            "Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b",
            "Content-Disposition : form-data; name=\"q\"\r\nContent-Disposition: form-data; name=a; filename=\"x\"",
            "Content-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: base64",
            "Content-Disposition: form-data; name=a\r\nContent-Type: text/plain; charset=ibm037",
            "Content-Disposition: form-data; name=a\nX: y",
            "X: y\rContent-Disposition: form-data; name=\"q\"",
            "Content-Disposition: form-data; name=a\r\n ; filename=x",
            "Content-Disposition: form-data; name=\"q\"\0; filename=\"x.txt\"",
            "Content-Disposition: form-data; name=\"q\"; x='; filename=\"x.txt\"; y='",
            "Content-Disposition: form-data; name=\"q\"; filename =\"x.txt\"",
            "Content-Disposition: form-data; name=\"q\"; filename=\"x.txt\"; filename*=utf-8''",
            "Content-Disposition: form-data; name*=utf-8''q",
            "Content-Disposition: form-data; name=\"q\"; filename=\"a\\\".txt\"",
            "Content-Disposition: form-data; name=\"q",
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
    }

    #[test]
    fn framing_a_backend_might_read_otherwise_is_refused() {
        let field = "Content-Disposition: form-data; name=\"q\"\r\n\r\n1' OR '1'='1";
        let ok = "--a\r\nContent-Disposition: form-data; name=\"z\"\r\n\r\nok\r\n--a--\r\n";
        for odd in [
            "no delimiter at all".to_string(),
            // A preamble (Tomcat finds `--a` anywhere in it).
            format!("x--a\r\n{field}\r\n--a--\r\n"),
            format!("x\r\n{ok}"),
            // A part behind LF line ends (Go, PHP, Werkzeug read them).
            format!("x\n--a\n{}\n--a--\n\r\n{ok}", field.replace("\r\n", "\n")),
            format!("{}\n--a\n{field}\r\n--a--\r\n", &ok[..ok.len() - 9]),
            // Parts after the closing line (PHP reads them).
            format!("{ok}--a\r\n{field}\r\n--a--\r\n"),
            "--a--\r\n".to_string(),
            "--a\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue".to_string(),
            "--a\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue\r\n--a".to_string(),
            "--ax\r\n".to_string(),
            "--a\n".to_string(),
        ] {
            assert_eq!(all(odd.as_bytes(), "a"), Err(Malformed::Framing), "{odd:?}");
        }
        assert!(all(ok.as_bytes(), "a").is_ok());
        assert!(all(
            format!("{}--\r\n\r\n \t", &ok[..ok.len() - 4]).as_bytes(),
            "a"
        )
        .is_ok());
        let long_headers = format!(
            "--b\r\nX-Pad: {}\r\n\r\nv\r\n--b--",
            "a".repeat(MAX_PART_HEADERS)
        );
        assert_eq!(
            all(long_headers.as_bytes(), "b"),
            Err(Malformed::PartHeaders)
        );
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
