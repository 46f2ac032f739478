//! The `etcdplan` binary: hands everything to the library's `run`.

fn main() -> std::process::ExitCode {
    etcdplan::run(std::env::args_os()).into()
}
