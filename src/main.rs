//! The `etcdplan` binary: installs the fancy diagnostic renderer, then hands
//! everything to the library's `run`.

fn main() -> std::process::ExitCode {
    miette::set_hook(Box::new(|_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(etcdplan::cli::color_enabled())
                // A help line may hold a command to paste (a grant): never
                // break it across lines; the terminal folds long lines itself.
                .wrap_lines(false)
                .build(),
        )
    }))
    .ok();
    let code = etcdplan::run(std::env::args_os());
    std::process::ExitCode::from(code)
}
