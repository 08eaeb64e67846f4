//! `ca-sign`: the same as `gatewayctl sign`, under the tool's first name.

fn main() -> std::process::ExitCode {
    gatewayctl::sign::main(std::env::args().skip(1), "ca-sign")
}
