//! The commands that document etcdplan itself: shell completions, the
//! plan file's JSON Schema, and the man pages.

use std::io::Write as _;
use std::path::Path;

use miette::{IntoDiagnostic, WrapErr};

use super::super::Cli;
use crate::status::ExitStatus;

pub fn completions(shell: clap_complete::Shell) -> miette::Result<ExitStatus> {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "etcdplan", &mut std::io::stdout());
    Ok(ExitStatus::Success)
}

pub fn schema() -> miette::Result<ExitStatus> {
    out!("{}", crate::schema::plan_schema_json());
    Ok(ExitStatus::Success)
}

/// The man page on stdout, or every page into `out_dir`.
pub fn man(out_dir: Option<&Path>) -> miette::Result<ExitStatus> {
    let pages = man_pages().into_diagnostic()?;
    match out_dir {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&pages[0].1).into_diagnostic()?;
        }
        Some(dir) => {
            for (name, page) in &pages {
                let path = dir.join(name);
                std::fs::write(&path, page)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(ExitStatus::Success)
}

/// The man pages, generated from the clap definitions: `etcdplan.1`, then
/// `etcdplan-COMMAND.1` for each command, as (file name, roff).
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut command = <Cli as clap::CommandFactory>::command();
    // Building propagates the global options into every command's page.
    command.build();
    let mut pages = Vec::new();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    pages.push(("etcdplan.1".to_string(), page));
    // clap's own `help` command needs no page of its own.
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("etcdplan-{}", sub.get_name());
        // Each page names its command as the shell sees it, with the version.
        let sub = sub
            .clone()
            .name(name.clone())
            .version(command.get_version().unwrap_or_default().to_string());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut page)?;
        pages.push((format!("{name}.1"), page));
    }
    Ok(pages)
}
