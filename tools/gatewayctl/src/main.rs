//! gatewayctl: `check`, `build` and `publish` an apis.yaml, `sign` a request.

use gatewayctl::envoy::{Artifacts, Host};
use gatewayctl::publish;
use gatewayctl::source::Source;
use gatewayctl::{EXIT_INVALID, EXIT_OUTPUT, EXIT_USAGE};
use std::process::ExitCode;

const USAGE: &str = "usage: gatewayctl COMMAND ...

  check FILE                 read FILE (apis.yaml), expand it and check every
                             generated policy with the filters' own parsers
  build FILE [-o OUT] [--chain | --native] [--istio [--namespace NS]]
             [--dynamic DIR] [--wasm-dir DIR] [--native-module PATH]
                             write the Envoy bootstrap (default: every policy in
                             the gateway module gateway.wasm; --chain: one filter
                             per policy; --native: the native libgateway.so);
                             --istio: an EnvoyFilter for the Istio ingress gateway
                             (the policies and the clusters they call);
                             --dynamic: routes, clusters and policies read from
                             DIR, where `publish` puts them (no restart)
  publish FILE --dir DIR [--stage STAGE] [--author NAME] [-m MESSAGE]
             [--wasm-dir DIR] [--native-module PATH]
                             check FILE and make it the next version in DIR,
                             which the Envoys of `build --dynamic DIR` read at once;
                             --stage: FILE serves that X-Ca-Stage only (RELEASE:
                             the base document), the other stages left as they are
  history --dir DIR          the versions published in DIR, the current one marked
  rollback --dir DIR [VERSION] [--author NAME] [-m MESSAGE]
                             publish VERSION (default: the one before the
                             current) again, as a new version
  export openapi FILE [-o OUT] [--group NAME] [--stage STAGE] [--server URL]...
             [--title TITLE] [--complete]
                             FILE's APIs as OpenAPI 3.1 for callers (YAML, or JSON
                             when OUT ends in .json): operations, parameters and
                             bodies, the gateway as server (default: one per
                             listener), a security scheme per auth mode, the error
                             codes; --stage: the APIs that stage serves, with
                             X-Ca-Stage; --complete: with everything the gateway
                             needs (x-gateway, app secrets included), so `import`
                             gives the same APIs back
  docs FILE -o DIR [--group NAME] [--stage STAGE] [--server URL]... [--title TITLE]
                             a static HTML reference of FILE's APIs for callers
                             (DIR/index.html, no network needed to read it) beside
                             the OpenAPI document (DIR/openapi.yaml)
  import OPENAPI [-o OUT] [--strict]
                             an OpenAPI 3.0/3.1 document (YAML or JSON) as an
                             apis.yaml; what cannot be translated is carried as
                             closely as it safely can or left out, and listed
                             with its JSON Pointer (on top of OUT and on stderr);
                             an operation that cannot be imported is left out
                             (--strict: the import fails instead)
  sign ...                   sign a request for sign-auth (`gatewayctl sign --help`)

Exit codes: 0 success, 1 the input has errors (each printed as
FILE:LINE: PATH: message), 2 a wrong command line, 3 the output cannot be written.";

fn usage_error(message: &str) -> ExitCode {
    eprintln!("gatewayctl: {message}\n\n{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

/// Loads and checks FILE; prints warnings, and errors when it fails.
fn load(file: &str) -> Result<gatewayctl::generate::Generated, ExitCode> {
    load_for(file, gatewayctl::generate::Target::Envoy)
}

/// Reads `text` (the document `file` holds) and checks it; prints
/// warnings, and errors when it fails.
fn checked(file: &str, text: &str) -> Result<(Source, gatewayctl::generate::Generated), ExitCode> {
    let source = Source::parse(file, text).map_err(|err| {
        eprintln!("{err}");
        ExitCode::from(EXIT_INVALID)
    })?;
    let generated = checked_source(&source, gatewayctl::generate::Target::Envoy)?;
    Ok((source, generated))
}

fn load_for(
    file: &str,
    target: gatewayctl::generate::Target,
) -> Result<gatewayctl::generate::Generated, ExitCode> {
    read_checked(file, target).map(|(_, generated)| generated)
}

/// Reads FILE and checks it; prints warnings, and errors when it fails.
fn read_checked(
    file: &str,
    target: gatewayctl::generate::Target,
) -> Result<(Source, gatewayctl::generate::Generated), ExitCode> {
    let source = Source::read(file).map_err(|err| {
        eprintln!("{err}");
        ExitCode::from(EXIT_INVALID)
    })?;
    let generated = checked_source(&source, target)?;
    Ok((source, generated))
}

fn checked_source(
    source: &Source,
    target: gatewayctl::generate::Target,
) -> Result<gatewayctl::generate::Generated, ExitCode> {
    match gatewayctl::load_for(source, target) {
        Ok(generated) => {
            for warning in &generated.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(generated)
        }
        Err(errors) => {
            for err in &errors {
                eprintln!("{err}");
            }
            Err(ExitCode::from(EXIT_INVALID))
        }
    }
}

fn check(args: &[String]) -> ExitCode {
    let [file] = args else {
        return usage_error("check takes one FILE");
    };
    match load(file) {
        Ok(generated) => {
            let sections: Vec<&str> = generated.sections.iter().map(|(s, _)| s.key()).collect();
            println!(
                "{file}: {} APIs, {} routes; policies: {}",
                generated.document.apis.len(),
                generated.routes.len(),
                if sections.is_empty() {
                    "none".to_string()
                } else {
                    sections.join(", ")
                }
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn build(args: &[String]) -> ExitCode {
    let mut file = None;
    let mut out = None;
    let mut host = Host::Module;
    let mut artifacts = Artifacts::default();
    let mut wasm_dir = None;
    let mut istio = false;
    let mut dynamic = None;
    let mut placement = gatewayctl::istio::Placement::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().cloned().ok_or(format!("{name} needs a value"));
        let parsed = match arg.as_str() {
            "-o" | "--output" => value("-o").map(|v| out = Some(v)),
            "--chain" => {
                host = Host::Chain;
                Ok(())
            }
            "--native" => {
                host = Host::Native;
                Ok(())
            }
            "--wasm-dir" => value("--wasm-dir").map(|v| wasm_dir = Some(v)),
            "--istio" => {
                istio = true;
                Ok(())
            }
            "--namespace" => value("--namespace").map(|v| placement.namespace = v),
            "--dynamic" => value("--dynamic").map(|v| dynamic = Some(v)),
            "--native-module" => value("--native-module").map(|v| artifacts.native_module = v),
            other if !other.starts_with('-') && file.is_none() => {
                file = Some(other.to_string());
                Ok(())
            }
            other => Err(format!("unexpected argument `{other}`")),
        };
        if let Err(message) = parsed {
            return usage_error(&message);
        }
    }
    let Some(file) = file else {
        return usage_error("build needs a FILE");
    };
    if istio && dynamic.is_some() {
        return usage_error("--istio and --dynamic do not go together (istiod pushes Istio's)");
    }
    let names_modules =
        wasm_dir.is_some() || artifacts.native_module != Artifacts::default().native_module;
    if dynamic.is_some() && names_modules {
        return usage_error(
            "with --dynamic the modules are named by `publish` (--wasm-dir, --native-module there)",
        );
    }
    let target = if istio {
        gatewayctl::generate::Target::Istio
    } else {
        gatewayctl::generate::Target::Envoy
    };
    let generated = match load_for(&file, target) {
        Ok(generated) => generated,
        Err(code) => return code,
    };
    if istio || host != Host::Native {
        if let Some((setting, instead)) = gatewayctl::native_only_setting(&generated) {
            eprintln!(
                "{file}: {setting}: the native module's own connection; build with --native, or {instead}"
            );
            return ExitCode::from(EXIT_INVALID);
        }
    }
    let text = if istio {
        // Where the gateway pods mount the modules.
        artifacts.wasm_dir = wasm_dir.unwrap_or_else(|| "/var/local/wasm".into());
        gatewayctl::build_istio(&generated, &file, host, &artifacts, &placement)
    } else if let Some(dir) = dynamic {
        gatewayctl::build_dynamic(&generated, &file, host, &dir)
    } else {
        if let Some(dir) = wasm_dir {
            artifacts.wasm_dir = dir;
        }
        gatewayctl::build_envoy(&generated, &file, host, &artifacts)
    };
    match out {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(&path, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("gatewayctl: {path}: cannot be written: {err}");
                ExitCode::from(EXIT_OUTPUT)
            }
        },
    }
}

/// The options `publish`, `history` and `rollback` share.
#[derive(Default)]
struct PublishArgs {
    dir: Option<String>,
    positional: Option<String>,
    signature: publish::Signature,
    artifacts: Artifacts,
    stage: Option<String>,
}

fn publish_args(command: &str, args: &[String]) -> Result<PublishArgs, String> {
    let mut parsed = PublishArgs::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--dir" => parsed.dir = Some(value("--dir")?),
            "--author" if command != "history" => {
                parsed.signature.author = Some(value("--author")?)
            }
            "-m" | "--message" if command != "history" => {
                parsed.signature.message = Some(value("-m")?)
            }
            "--wasm-dir" if command == "publish" => {
                parsed.artifacts.wasm_dir = value("--wasm-dir")?
            }
            "--native-module" if command == "publish" => {
                parsed.artifacts.native_module = value("--native-module")?
            }
            "--stage" if command == "publish" => {
                let stage = value("--stage")?;
                gatewayctl::stages::check_stage(&stage)?;
                parsed.stage = Some(stage);
            }
            other if !other.starts_with('-') && parsed.positional.is_none() => {
                parsed.positional = Some(other.to_string())
            }
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if parsed.dir.is_none() {
        return Err(format!("{command} needs --dir DIR"));
    }
    Ok(parsed)
}

/// Prints what a publish or rollback did; the exit code.
fn report_published(result: Result<publish::Published, publish::PublishError>) -> ExitCode {
    match result {
        Ok(published) => {
            let version = &published.version;
            println!("version {}: {}", version.version, version.changes);
            for warning in &published.warnings {
                eprintln!("warning: {warning}");
            }
            if published.needs_restart {
                eprintln!(
                    "warning: gateway: listeners, admin, timeouts, the buffer limit or whether CORS \
                     is on changed; those are the bootstrap's: they take effect when each Envoy \
                     restarts with a bootstrap from `gatewayctl build --dynamic`"
                );
            }
            ExitCode::SUCCESS
        }
        Err(err @ publish::PublishError::NoVersion(_)) => {
            eprintln!("gatewayctl: {err}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(publish::PublishError::Invalid(errors)) => {
            for error in errors {
                eprintln!("{error}");
            }
            ExitCode::from(EXIT_INVALID)
        }
        Err(err) => {
            eprintln!("gatewayctl: {err}");
            ExitCode::from(EXIT_OUTPUT)
        }
    }
}

fn publish_command(args: &[String]) -> ExitCode {
    let args = match publish_args("publish", args) {
        Ok(args) => args,
        Err(message) => return usage_error(&message),
    };
    let (Some(file), Some(dir)) = (args.positional, args.dir) else {
        return usage_error("publish needs a FILE");
    };
    // Read once: the document kept with the version is the one published.
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("{file}: cannot be read: {err}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let (source, generated) = match checked(&file, &text) {
        Ok(checked) => checked,
        Err(code) => return code,
    };
    let publication = publish::Publication {
        generated: &generated,
        source: &source,
        text: &text,
        artifacts: &args.artifacts,
        stage: args.stage.as_deref(),
    };
    report_published(publish::publish(
        std::path::Path::new(&dir),
        &publication,
        args.signature,
    ))
}

fn rollback_command(args: &[String]) -> ExitCode {
    let args = match publish_args("rollback", args) {
        Ok(args) => args,
        Err(message) => return usage_error(&message),
    };
    let to = match args.positional.as_deref().map(str::parse::<u32>) {
        None => None,
        Some(Ok(version)) => Some(version),
        Some(Err(_)) => return usage_error("VERSION is a number (see `gatewayctl history`)"),
    };
    let dir = args.dir.unwrap_or_default();
    report_published(publish::rollback(
        std::path::Path::new(&dir),
        to,
        args.signature,
    ))
}

fn history_command(args: &[String]) -> ExitCode {
    let args = match publish_args("history", args) {
        Ok(args) if args.positional.is_none() => args,
        Ok(_) => return usage_error("history takes only --dir DIR"),
        Err(message) => return usage_error(&message),
    };
    let dir = args.dir.unwrap_or_default();
    match publish::history(std::path::Path::new(&dir)) {
        Ok((versions, current)) => {
            println!("  VERSION  PUBLISHED             AUTHOR      CHANGES");
            for version in versions {
                let mark = if Some(version.version) == current {
                    '*'
                } else {
                    ' '
                };
                let mut changes = version.changes.clone();
                if let Some(to) = version.rollback_of {
                    changes = format!("rollback to {to}: {changes}");
                }
                if let Some(message) = &version.message {
                    changes = format!("{changes} ({message})");
                }
                println!(
                    "{mark} {:>7}  {:<20}  {:<10}  {changes}",
                    version.version,
                    version.published,
                    version.author.as_deref().unwrap_or("-"),
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("gatewayctl: {err}");
            ExitCode::from(EXIT_OUTPUT)
        }
    }
}

/// The options `export openapi` and `docs` share.
#[derive(Default)]
struct ReferenceArgs {
    file: Option<String>,
    out: Option<String>,
    options: gatewayctl::export::Options,
}

fn reference_args(command: &str, args: &[String]) -> Result<ReferenceArgs, String> {
    let mut parsed = ReferenceArgs::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-o" | "--output" => parsed.out = Some(value("-o")?),
            "--group" => parsed.options.group = Some(value("--group")?),
            "--stage" => parsed.options.stage = Some(value("--stage")?),
            "--server" => parsed.options.servers.push(value("--server")?),
            "--title" => parsed.options.title = Some(value("--title")?),
            "--complete" if command == "export" => parsed.options.complete = true,
            other if !other.starts_with('-') && parsed.file.is_none() => {
                parsed.file = Some(other.to_string())
            }
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if parsed.file.is_none() {
        return Err(format!("{command} needs a FILE"));
    }
    Ok(parsed)
}

/// Writes `text` to `out` (stdout when none).
fn write_output(out: Option<&str>, text: &str) -> ExitCode {
    match out {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("gatewayctl: {path}: cannot be written: {err}");
                ExitCode::from(EXIT_OUTPUT)
            }
        },
    }
}

/// Reads and checks FILE of `export` or `docs`, and exports its APIs.
fn exported(args: &ReferenceArgs) -> Result<(Source, gatewayctl::export::Exported), ExitCode> {
    let file = args.file.clone().unwrap_or_default();
    let (source, generated) = read_checked(&file, gatewayctl::generate::Target::Envoy)?;
    let exported =
        gatewayctl::export::openapi(&source, &generated, &args.options).map_err(|message| {
            eprintln!("gatewayctl: {message}");
            ExitCode::from(EXIT_INVALID)
        })?;
    for warning in &exported.warnings {
        eprintln!("warning: {warning}");
    }
    Ok((source, exported))
}

fn export(args: &[String]) -> ExitCode {
    let Some(("openapi", rest)) = args.split_first().map(|(kind, rest)| (kind.as_str(), rest))
    else {
        return usage_error("export takes `openapi FILE`");
    };
    let args = match reference_args("export", rest) {
        Ok(args) => args,
        Err(message) => return usage_error(&message),
    };
    let (source, exported) = match exported(&args) {
        Ok(done) => done,
        Err(code) => return code,
    };
    let text = if args.out.as_deref().is_some_and(|o| o.ends_with(".json")) {
        let mut text = serde_json::to_string_pretty(&exported.document).unwrap_or_default();
        text.push('\n');
        text
    } else {
        gatewayctl::export::to_yaml(&source.file, &exported)
    };
    write_output(args.out.as_deref(), &text)
}

fn docs(args: &[String]) -> ExitCode {
    let args = match reference_args("docs", args) {
        Ok(args) if args.out.is_some() => args,
        Ok(_) => return usage_error("docs needs -o DIR"),
        Err(message) => return usage_error(&message),
    };
    let file = args.file.clone().unwrap_or_default();
    let (source, generated) = match read_checked(&file, gatewayctl::generate::Target::Envoy) {
        Ok(checked) => checked,
        Err(code) => return code,
    };
    let dir = std::path::PathBuf::from(args.out.unwrap_or_default());
    match gatewayctl::html::write(&dir, &source, &generated, &args.options) {
        Ok(warnings) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}", dir.join(gatewayctl::html::PAGE).display());
            ExitCode::SUCCESS
        }
        Err(gatewayctl::html::DocsError::Selection(message)) => {
            eprintln!("gatewayctl: {message}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(err) => {
            eprintln!("gatewayctl: {err}");
            ExitCode::from(EXIT_OUTPUT)
        }
    }
}

fn import(args: &[String]) -> ExitCode {
    let mut file = None;
    let mut out = None;
    let mut strict = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-o" | "--output" => match args.next() {
                Some(path) => out = Some(path.clone()),
                None => return usage_error("-o needs a value"),
            },
            "--strict" => strict = true,
            other if !other.starts_with('-') && file.is_none() => file = Some(other.to_string()),
            _ => return usage_error("import takes OPENAPI [-o OUT] [--strict]"),
        }
    }
    let Some(file) = file else {
        return usage_error("import takes OPENAPI [-o OUT] [--strict]");
    };
    let source = match Source::read(&file) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // The result must itself check; its errors name the imported file.
    let name = out.as_deref().unwrap_or("the imported document");
    let checked = match gatewayctl::openapi::import_checked(&source, name, strict) {
        Ok(checked) => checked,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    for line in &checked.imported.untranslated {
        eprintln!("not translated: {file}: {line}");
    }
    let written = match &out {
        None => {
            print!("{}", checked.text);
            Ok(())
        }
        Some(path) => std::fs::write(path, &checked.text),
    };
    if let Err(err) = written {
        eprintln!("gatewayctl: {name}: cannot be written: {err}");
        return ExitCode::from(EXIT_OUTPUT);
    }
    if checked.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        for err in checked.errors {
            eprintln!("{err}");
        }
        ExitCode::from(EXIT_INVALID)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        return usage_error("a COMMAND is needed");
    };
    match command.as_str() {
        "check" => check(rest),
        "build" => build(rest),
        "import" => import(rest),
        "export" => export(rest),
        "docs" => docs(rest),
        "publish" => publish_command(rest),
        "history" => history_command(rest),
        "rollback" => rollback_command(rest),
        "sign" => gatewayctl::sign::main(rest.iter().cloned(), "gatewayctl sign"),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        "--version" | "version" => {
            println!("gatewayctl {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        other => usage_error(&format!("unknown command `{other}`")),
    }
}
