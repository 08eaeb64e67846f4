//! Runs the echo upstream until the process is killed:
//! `echo-upstream [--id NAME] [--listen HOST:PORT] [--authorize TOKEN=USER,… | --issuer ISS]`.
//! With `--authorize` it is the demo's third-party authorizer instead
//! ([`bearer_authorizer`]); with `--issuer` the demo's token issuer
//! ([`token_issuer`]: its JWKS and fresh tokens whose `iss` is ISS).
//!
//! Prints `echo-upstream NAME listening on ADDR` once it accepts connections,
//! so scripts can wait for that line.

use std::ffi::OsString;
use std::io::Write;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use integration_tests::echo::{bearer_authorizer, EchoServer};
use integration_tests::tokens::token_issuer;

const USAGE: &str =
    "usage: echo-upstream [--id NAME] [--listen HOST:PORT] [--authorize TOKEN=USER,... | --issuer ISS]\n\
                     defaults: --id echo --listen 127.0.0.1:8081";

struct Options {
    id: String,
    listen: String,
    /// Token → user: an authorizer instead of an echo.
    authorize: Option<Vec<(String, String)>>,
    /// A token issuer of this `iss` instead of an echo.
    issuer: Option<String>,
}

/// `Ok(None)` means help was asked for.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<Options>, String> {
    let mut options = Options {
        id: "echo".to_string(),
        listen: "127.0.0.1:8081".to_string(),
        authorize: None,
        issuer: None,
    };
    let mut authorize = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|raw| format!("argument is not UTF-8: {raw:?}"))?;
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let target = match flag.as_str() {
            "--id" => &mut options.id,
            "--listen" => &mut options.listen,
            "--authorize" => authorize.get_or_insert_with(String::new),
            "--issuer" => options.issuer.get_or_insert_with(String::new),
            _ => return Err(format!("unknown argument {flag:?}")),
        };
        let value = match inline_value {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .into_string()
                .map_err(|raw| format!("value of {flag} is not UTF-8: {raw:?}"))?,
        };
        *target = value;
    }
    if let Some(list) = authorize {
        let users = list
            .split(',')
            .map(|pair| match pair.split_once('=') {
                Some((token, user)) if !token.is_empty() && !user.is_empty() => {
                    Ok((token.to_string(), user.to_string()))
                }
                _ => Err(format!("--authorize takes TOKEN=USER pairs, not {pair:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        options.authorize = Some(users);
    }
    match (&options.authorize, &options.issuer) {
        (Some(_), Some(_)) => {
            return Err("--authorize and --issuer are two servers: give one".into())
        }
        (_, Some(iss)) if iss.is_empty() => return Err("--issuer needs the tokens' `iss`".into()),
        _ => {}
    }
    if options.id.is_empty() || options.id.chars().any(char::is_control) {
        return Err("--id must be non-empty printable text".to_string());
    }
    if options.listen.to_socket_addrs().is_err() {
        return Err(format!(
            "--listen {:?} is not a HOST:PORT address",
            options.listen
        ));
    }
    Ok(Some(options))
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("echo-upstream: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = match (options.authorize, options.issuer) {
        (Some(users), _) => {
            EchoServer::start_scripted_on(&options.id, &options.listen, bearer_authorizer(users))
        }
        (None, Some(iss)) => {
            EchoServer::start_scripted_on(&options.id, &options.listen, token_issuer(iss))
        }
        (None, None) => EchoServer::start_on(&options.id, &options.listen),
    };
    let server = match started {
        Ok(server) => server,
        Err(error) => {
            eprintln!(
                "echo-upstream: cannot listen on {}: {error}",
                options.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let announced = writeln!(
        stdout,
        "echo-upstream {} listening on {}",
        server.id(),
        server.addr()
    )
    .and_then(|()| stdout.flush());
    if let Err(error) = announced {
        eprintln!("echo-upstream: cannot write to stdout: {error}");
        return ExitCode::FAILURE;
    }
    drop(stdout);
    // The server runs on its own threads; keep it (and the process) alive.
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
