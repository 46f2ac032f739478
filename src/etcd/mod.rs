//! Talking to etcd: connections with failover (`side`), paged reads at a
//! pinned revision (`scan`), and cluster facts for `check` (`info`).

mod error;
pub mod parallel;
pub mod scan;
pub mod side;
pub mod v2;
pub mod write;

pub use error::EtcdError;
pub use scan::{Entry, KeyRange, PageLimits, Pin};
pub use side::{Op, RetryPolicy, Side};
