//! etcdplan: plan and apply etcd key migrations between clusters.
//!
//! The binary is a thin shell over [`run`]; each concern has its own module:
//! the plan file ([`planfile`]), key encoding ([`keys`]) and the command line
//! ([`cli`]).

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
pub mod snapshot;
pub mod spool;
pub mod status;
pub mod undo;

pub use cli::run;
