//! gatewayctl: `check` and `build` an apis.yaml, `sign` a request.

use gatewayctl::envoy::{Artifacts, Host};
use gatewayctl::source::Source;
use gatewayctl::{EXIT_INVALID, EXIT_OUTPUT, EXIT_USAGE};
use std::process::ExitCode;

const USAGE: &str = "usage: gatewayctl COMMAND ...

  check FILE                 read FILE (apis.yaml), expand it and check every
                             generated policy with the filters' own parsers
  build FILE [-o OUT] [--chain | --native] [--istio [--namespace NS]]
             [--wasm-dir DIR] [--native-module PATH]
                             write the Envoy bootstrap (default: every policy in
                             the gateway module gateway.wasm; --chain: one filter
                             per policy; --native: the native libgateway.so);
                             --istio: an EnvoyFilter for the Istio ingress gateway
                             (the policies and the clusters they call)
  import OPENAPI [-o OUT]     an OpenAPI 3.0/3.1 document (YAML or JSON) as an
                             apis.yaml; what cannot be translated is listed
                             with its JSON Pointer (on top of OUT and on stderr)
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

fn load_for(
    file: &str,
    target: gatewayctl::generate::Target,
) -> Result<gatewayctl::generate::Generated, ExitCode> {
    let source = Source::read(file).map_err(|err| {
        eprintln!("{err}");
        ExitCode::from(EXIT_INVALID)
    })?;
    match gatewayctl::load_for(&source, target) {
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
    let target = if istio {
        gatewayctl::generate::Target::Istio
    } else {
        gatewayctl::generate::Target::Envoy
    };
    let generated = match load_for(&file, target) {
        Ok(generated) => generated,
        Err(code) => return code,
    };
    let text = if istio {
        // Where the gateway pods mount the modules.
        artifacts.wasm_dir = wasm_dir.unwrap_or_else(|| "/var/local/wasm".into());
        gatewayctl::build_istio(&generated, &file, host, &artifacts, &placement)
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

fn import(args: &[String]) -> ExitCode {
    let (file, out) = match args {
        [file] => (file, None),
        [file, flag, out] if flag == "-o" || flag == "--output" => (file, Some(out)),
        _ => return usage_error("import takes OPENAPI [-o OUT]"),
    };
    let source = match Source::read(file) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let imported = match gatewayctl::openapi::import(&source) {
        Ok(imported) => imported,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    for line in &imported.untranslated {
        eprintln!("not translated: {file}: {line}");
    }
    let text = gatewayctl::openapi::to_apis_yaml(&imported, file);
    // The result must itself check; its errors name the imported file.
    let name = out.map_or("the imported document", String::as_str);
    let checked = Source::parse(name, &text)
        .map_err(|err| vec![err])
        .and_then(|source| gatewayctl::load(&source).map(drop));
    let written = match out {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => std::fs::write(path, &text),
    };
    if let Err(err) = written {
        eprintln!("gatewayctl: {name}: cannot be written: {err}");
        return ExitCode::from(EXIT_OUTPUT);
    }
    match checked {
        Ok(()) => ExitCode::SUCCESS,
        Err(errors) => {
            for err in errors {
                eprintln!("{err}");
            }
            ExitCode::from(EXIT_INVALID)
        }
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
