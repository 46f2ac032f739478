//! etcdplan: plan and apply etcd key migrations between clusters.
//!
//! The binary is a thin shell over [`run`]; each concern has its own module:
//! the plan file ([`planfile`]), key encoding ([`keys`]) and the command line
//! ([`cli`]).

// The print macros of the command layer: a closed stdout or stderr (`| head
// -1`, a CI log that went away) must never panic and turn a finished
// migration into exit 101. Text that was not written is simply lost.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        let _ = write!(stdout, $($t)*);
        let _ = stdout.flush();
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub mod apply;
pub mod check;
pub mod cli;
pub mod diff;
pub mod engine;
pub mod escape;
pub mod etcd;
pub mod files;
pub mod follow;
pub mod keys;
pub mod leases;
pub mod plan;
pub mod planfile;
pub mod render;
pub mod saved;
pub mod schema;
pub mod spool;
pub mod undo;

pub use cli::run;
