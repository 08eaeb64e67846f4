//! Redis's protocol (RESP 2) as far as the fleet store speaks it: commands
//! written as arrays of bulk strings, and replies read back. No I/O: the
//! native module's client frames replies with [`parse`], the fleet client
//! reads a reply with it.

/// A reply, as Redis sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`, `-NOSCRIPT …`.
    Error(String),
    Integer(i64),
    /// `None`: the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array.
    Array(Option<Vec<Reply>>),
}

/// How deep arrays may nest in a reply (the script's are flat).
const MAX_DEPTH: usize = 8;
/// The longest bulk string or array read (a script answer is a few hundred
/// bytes; this bounds what a broken peer can make the reader hold).
const MAX_LENGTH: i64 = 1 << 20;

/// A command: `*N\r\n` then each part as `$len\r\npart\r\n`.
pub fn command<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let parts: Vec<&[u8]> = parts.into_iter().collect();
    let size: usize = parts.iter().map(|p| p.len() + 16).sum();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The first reply in `buffer` and its length in bytes; `Ok(None)` when
/// the reply is not complete yet; an error when the bytes are no reply.
pub fn parse(buffer: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let mut at = 0;
    match read(buffer, &mut at, 0)? {
        Some(reply) => Ok(Some((reply, at))),
        None => Ok(None),
    }
}

/// One line's text (without its `\r\n`), or `None` when it is not all in.
fn line<'a>(buffer: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, String> {
    let rest = &buffer[*at..];
    let Some(end) = rest.windows(2).position(|pair| pair == b"\r\n") else {
        if rest.len() > 64 * 1024 {
            return Err("a line longer than 64 KiB".into());
        }
        return Ok(None);
    };
    *at += end + 2;
    Ok(Some(&rest[..end]))
}

fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("`{}` is not a number", String::from_utf8_lossy(text)))
}

fn read(buffer: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, String> {
    if depth > MAX_DEPTH {
        return Err("arrays nested too deep".into());
    }
    let Some(&kind) = buffer.get(*at) else {
        return Ok(None);
    };
    *at += 1;
    let Some(text) = line(buffer, at)? else {
        return Ok(None);
    };
    let text_of = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok(Some(match kind {
        b'+' => Reply::Simple(text_of(text)),
        b'-' => Reply::Error(text_of(text)),
        b':' => Reply::Integer(number(text)?),
        b'$' => {
            let length = number(text)?;
            if length == -1 {
                return Ok(Some(Reply::Bulk(None)));
            }
            if !(0..=MAX_LENGTH).contains(&length) {
                return Err(format!("a bulk string of {length} bytes"));
            }
            let length = usize::try_from(length).map_err(|_| "a negative length")?;
            if buffer.len() < *at + length + 2 {
                return Ok(None);
            }
            let bulk = buffer[*at..*at + length].to_vec();
            if &buffer[*at + length..*at + length + 2] != b"\r\n" {
                return Err("a bulk string not ended by CRLF".into());
            }
            *at += length + 2;
            Reply::Bulk(Some(bulk))
        }
        b'*' => {
            let count = number(text)?;
            if count == -1 {
                return Ok(Some(Reply::Array(None)));
            }
            if !(0..=MAX_LENGTH).contains(&count) {
                return Err(format!("an array of {count} items"));
            }
            let mut items = Vec::new();
            for _ in 0..count {
                match read(buffer, at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            Reply::Array(Some(items))
        }
        other => return Err(format!("a reply starting with byte {other}")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        assert_eq!(
            command([&b"EVALSHA"[..], b"ab", b""]),
            b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn replies_are_read_whole_or_not_yet() {
        let reply = b"*4\r\n:1\r\n$3\r\na\r\n\r\n$-1\r\n-NOSCRIPT No matching script\r\n+OK\r\n";
        let (read, length) = parse(reply).unwrap().unwrap();
        assert_eq!(
            read,
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Bulk(None),
                Reply::Error("NOSCRIPT No matching script".into()),
            ]))
        );
        assert_eq!(&reply[length..], b"+OK\r\n");
        // Every cut before the end is "not yet", never an error.
        for cut in 0..length {
            assert_eq!(parse(&reply[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn what_is_no_reply_is_an_error() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":ten\r\n").is_err());
        assert!(parse(b"$3\r\nabcd\r\n").is_err());
        assert!(parse(b"$9999999999\r\n").is_err());
        let deep = "*1\r\n".repeat(20);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
