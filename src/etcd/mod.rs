//! Talking to etcd: connections with failover (`side`), paged reads at a
//! pinned revision (`scan`), and cluster facts for `check` (`info`).

mod classify;
mod error;
pub mod grant;
pub mod info;
pub mod parallel;
mod pieces;
mod retry;
pub mod scan;
pub mod side;
mod space;
pub mod types;
pub mod v2;
pub mod watch;
pub mod window;
pub mod write;

pub use error::EtcdError;
pub use retry::{DEFAULT_REQUEST_TIMEOUT, DEFAULT_STALL_TIMEOUT};
pub use side::{Op, RetryPolicy, Side};
pub use types::{Entry, KeyRange, PageLimits, Pin};
