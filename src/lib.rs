//! etcdplan: plan and apply etcd key migrations between clusters.
//!
//! The binary is a thin shell over [`run`]; each concern has its own module:
//! the plan file ([`planfile`]), key encoding ([`keys`]) and the command line
//! ([`cli`]).

pub mod cli;
pub mod keys;
pub mod planfile;
pub mod schema;

pub use cli::run;
