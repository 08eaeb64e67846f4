//! bench-requests: signs many requests ahead of a load run, so the client
//! (wrk) spends no time signing and the benchmark measures the gateway.
//!
//! ```text
//! bench-requests --key KEY --secret SECRET --count N --lua FILE.lua --data FILE.txt
//!                [--timestamp-ms MS] [--nonce-prefix P] [--host HOST]
//!                --request 'GET /path?query[|Header: value]...'...
//! ```
//!
//! Request `i` (from 0) is request kind `i % kinds` (the `--request`s in
//! order), with nonce `P<i>`, signed with HmacSHA256 at one timestamp (now,
//! by default: keep the run within sign-auth's timestamp window). The data
//! file holds the signatures, one per line; the Lua file is a wrk script that
//! sends them. Its arguments `FIRST LAST THREADS` give the index range a run
//! uses, so that successive runs against the same Envoy never send a nonce
//! twice (sign-auth would refuse the replay). When a thread runs
//! out of its share it starts over and says so at the end (`bench-requests:
//! wrapped`), and the replays show as non-2xx responses.

use sign_auth::client::{sign_request, ClientRequest, Credentials};
use sign_auth::signature::SignatureMethod;
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str =
    "usage: bench-requests --key KEY --secret SECRET --count N --lua FILE.lua --data FILE.txt
                      [--timestamp-ms MS] [--nonce-prefix P] [--host HOST]
                      --request 'GET /path?query[|Header: value]...'...";

/// Base64 of an HMAC-SHA256: every line of the data file has this length
/// (plus `\n`), so a run seeks straight to its range.
const SIGNATURE_CHARS: usize = 44;

struct Kind {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

struct Args {
    key: String,
    secret: String,
    count: usize,
    lua: String,
    data: String,
    timestamp_ms: u64,
    nonce_prefix: String,
    host: String,
    kinds: Vec<Kind>,
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    let mut parts = text.split('|');
    let line = parts.next().unwrap_or_default();
    let (method, path) = line
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("--request `{text}`: expected `METHOD /path`"))?;
    if !path.starts_with('/') {
        return Err(format!("--request `{text}`: the path must start with /"));
    }
    let headers = parts
        .map(|header| {
            header
                .split_once(':')
                .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
                .ok_or_else(|| {
                    format!("--request `{text}`: header `{header}` is not `Name: value`")
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Kind {
        method: method.to_ascii_uppercase(),
        path: path.trim().to_string(),
        headers,
    })
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        key: String::new(),
        secret: String::new(),
        count: 0,
        lua: String::new(),
        data: String::new(),
        timestamp_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        nonce_prefix: "bench-".into(),
        host: "api.example.com".into(),
        kinds: Vec::new(),
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--key" => args.key = value()?,
            "--secret" => args.secret = value()?,
            "--count" => {
                args.count = value()?
                    .parse()
                    .map_err(|_| "--count: a number".to_string())?
            }
            "--lua" => args.lua = value()?,
            "--data" => args.data = value()?,
            "--timestamp-ms" => {
                args.timestamp_ms = value()?
                    .parse()
                    .map_err(|_| "--timestamp-ms: a number".to_string())?
            }
            "--nonce-prefix" => args.nonce_prefix = value()?,
            "--host" => args.host = value()?,
            "--request" => args.kinds.push(parse_kind(&value()?)?),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if args.key.is_empty()
        || args.secret.is_empty()
        || args.count == 0
        || args.lua.is_empty()
        || args.data.is_empty()
        || args.kinds.is_empty()
    {
        return Err("--key, --secret, --count, --lua, --data and a --request are required".into());
    }
    Ok(args)
}

/// A Lua string literal.
fn lua_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{byte:03}");
                }
            }
        }
    }
    out.push('"');
    out
}

fn credentials(args: &Args) -> Credentials {
    Credentials {
        key: args.key.clone(),
        secret: args.secret.clone(),
        method: SignatureMethod::HmacSha256,
    }
}

/// The headers a request of `kind` carries besides the X-Ca-* ones.
fn plain_headers(kind: &Kind) -> Vec<(String, String)> {
    let mut headers = vec![
        ("Accept".to_string(), "application/json".to_string()),
        ("User-Agent".to_string(), "wrk".to_string()),
        ("X-Tenant".to_string(), "acme".to_string()),
    ];
    headers.extend(kind.headers.iter().cloned());
    headers
}

fn sign(args: &Args, kind: &Kind, nonce: &str) -> Result<Vec<(String, String)>, String> {
    let request = ClientRequest {
        method: kind.method.clone(),
        path_and_query: kind.path.clone(),
        headers: plain_headers(kind),
        signed_extra: Vec::new(),
        form_body: None,
    };
    sign_request(&credentials(args), &request, args.timestamp_ms, nonce)
        .map(|signed| signed.headers)
        .map_err(|e| format!("cannot sign {}: {e:?}", kind.path))
}

/// The request text of `kind` around its nonce and its signature: (head, mid, tail).
fn template(args: &Args, kind: &Kind) -> Result<(String, String, String), String> {
    let signed = sign(args, kind, "x")?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        kind.method, kind.path, args.host
    );
    for (name, value) in plain_headers(kind) {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    for (name, value) in &signed {
        if name != "x-ca-nonce" && name != "x-ca-signature" {
            let _ = write!(head, "{name}: {value}\r\n");
        }
    }
    head.push_str("x-ca-nonce: ");
    head.push_str(&args.nonce_prefix);
    Ok((head, "\r\nx-ca-signature: ".into(), "\r\n\r\n".into()))
}

const LUA_BODY: &str = r#"
-- wrk arguments: FIRST LAST THREADS (request indices FIRST..LAST-1).
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local first = tonumber(args[1]) or 0
  local last = math.min(tonumber(args[2]) or COUNT, COUNT)
  stride = tonumber(args[3]) or 1
  base = first + id
  sigs = {}
  -- Every line is LINE bytes long: read only this run's range.
  local file = assert(io.open(DATA, "rb"))
  file:seek("set", first * LINE)
  local index = first
  while index < last do
    local line = file:read("*l")
    if not line then break end
    if (index - base) % stride == 0 and index >= base then
      sigs[#sigs + 1] = line
    end
    index = index + 1
  end
  file:close()
  pos = 1
  wraps = 0
  if #sigs == 0 then error("bench-requests: no signed request in range") end
end

function request()
  local i = pos
  pos = pos + 1
  if pos > #sigs then
    pos = 1
    wraps = wraps + 1
  end
  local index = base + (i - 1) * stride
  local kind = KINDS[index % #KINDS + 1]
  return kind[1] .. index .. kind[2] .. sigs[i] .. kind[3]
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    wrapped = wrapped + (tonumber(thread:get("wraps")) or 0)
  end
  if wrapped > 0 then
    io.write(string.format("bench-requests: wrapped %d times (nonces were replayed)\n", wrapped))
  end
end
"#;

fn run(args: &Args) -> Result<(), String> {
    let mut data = BufWriter::new(
        std::fs::File::create(&args.data).map_err(|e| format!("{}: {e}", args.data))?,
    );
    for i in 0..args.count {
        let kind = &args.kinds[i % args.kinds.len()];
        let nonce = format!("{}{i}", args.nonce_prefix);
        let headers = sign(args, kind, &nonce)?;
        let signature = headers
            .iter()
            .find(|(name, _)| name == "x-ca-signature")
            .map(|(_, value)| value.as_str())
            .ok_or("no signature header")?;
        if signature.len() != SIGNATURE_CHARS {
            return Err(format!("unexpected signature length {}", signature.len()));
        }
        writeln!(data, "{signature}").map_err(|e| format!("{}: {e}", args.data))?;
    }
    data.flush().map_err(|e| format!("{}: {e}", args.data))?;

    let mut lua = String::from(
        "-- Generated by bench-requests (bench/policy-bench): pre-signed requests\n\
         -- for sign-auth, so that wrk spends no time signing.\n",
    );
    let data_path = std::fs::canonicalize(&args.data)
        .map_err(|e| format!("{}: {e}", args.data))?
        .display()
        .to_string();
    let _ = writeln!(lua, "DATA = {}", lua_string(&data_path));
    let _ = writeln!(lua, "COUNT = {}", args.count);
    let _ = writeln!(lua, "LINE = {}", SIGNATURE_CHARS + 1);
    lua.push_str("KINDS = {\n");
    for kind in &args.kinds {
        let (head, mid, tail) = template(args, kind)?;
        let _ = writeln!(
            lua,
            "  {{ {}, {}, {} }},",
            lua_string(&head),
            lua_string(&mid),
            lua_string(&tail)
        );
    }
    lua.push_str("}\n");
    lua.push_str(LUA_BODY);
    std::fs::write(&args.lua, lua).map_err(|e| format!("{}: {e}", args.lua))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("bench-requests: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-requests: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_kind_reads_its_line_and_headers() {
        let kind = parse_kind("get /admin/stats|X-Forwarded-For: 10.1.2.3").unwrap();
        assert_eq!(kind.method, "GET");
        assert_eq!(kind.path, "/admin/stats");
        assert_eq!(
            kind.headers,
            vec![("X-Forwarded-For".to_string(), "10.1.2.3".to_string())]
        );
        assert!(parse_kind("GET admin").is_err());
    }

    #[test]
    fn lua_strings_escape_line_ends_and_quotes() {
        assert_eq!(lua_string("a\r\n\"b\\"), r#""a\r\n\"b\\""#);
    }
}
