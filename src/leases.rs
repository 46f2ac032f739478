//! Destination leases for leased source keys (`leases: preserve`): one
//! destination lease per source lease, granted with the source lease's
//! remaining TTL as the first key on it is written, shared by every key on
//! the same source lease. While following, the book also tends them: a
//! destination lease is renewed while its source lease lives, and revoked
//! (deleting its keys) as soon as the source lease expires or is revoked.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::etcd::write::{grant_lease, renew_lease, revoke_lease};
use crate::etcd::{EtcdError, Side, info::lease_ttl};
use crate::planfile::{Api, LeaseMode};

/// How the writer attaches leases to puts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePolicy {
    /// Written without a lease (`leases: drop`, or none in the plan).
    None,
    /// `leases: preserve`: one destination lease per source lease, granted
    /// with the source lease's remaining TTL read right before first use.
    Grant,
    /// An undo on one cluster: back on the very same lease, while it lives.
    Same,
}

impl LeasePolicy {
    /// How a plan's `leases:` mode writes the plan's leased keys.
    pub fn of_mode(mode: LeaseMode) -> LeasePolicy {
        match mode {
            LeaseMode::Preserve => LeasePolicy::Grant,
            LeaseMode::Drop | LeaseMode::Skip => LeasePolicy::None,
        }
    }
}

/// A destination lease standing in for a source lease.
#[derive(Debug, Clone, Copy)]
struct Granted {
    id: i64,
    /// The TTL it was granted with: renewing resets it to this.
    ttl: i64,
    /// When `tend` looks at it next.
    due: Instant,
}

/// The leases of one run, granted as the writes first need them. A key
/// whose source lease has expired is not written: it is not resurrected.
pub struct LeaseBook {
    policy: LeasePolicy,
    source: Arc<Side>,
    destination: Arc<Side>,
    /// Source lease to destination lease; `None`: expired or revoked.
    map: tokio::sync::Mutex<HashMap<i64, Option<Granted>>>,
    warned_v2: AtomicBool,
}

/// A source lease's destination lease, as a follow checkpoint keeps it.
pub type Pair = (i64, i64);

impl LeaseBook {
    pub fn new(policy: LeasePolicy, source: Arc<Side>, destination: Arc<Side>) -> LeaseBook {
        LeaseBook {
            policy,
            source,
            destination,
            map: tokio::sync::Mutex::new(HashMap::new()),
            warned_v2: AtomicBool::new(false),
        }
    }

    /// The lease to put a key of source lease `id` with (0: none), or
    /// `None` when the source lease is gone and the key is not to be written.
    pub async fn lease_for(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        if id == 0 || self.policy == LeasePolicy::None {
            return Ok(Some(0));
        }
        if self.destination.config.api == Api::V2 {
            if !self.warned_v2.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the destination speaks v2, which has no leases: leased keys are written without one"
                );
            }
            return Ok(Some(0));
        }
        // Held across the grant so that keys sharing a lease share one grant.
        let mut map = self.map.lock().await;
        if let Some(known) = map.get(&id) {
            return Ok(known.map(|g| g.id));
        }
        let granted = match self.policy {
            LeasePolicy::Same => {
                let ttl = lease_ttl(&self.destination, id).await?;
                (ttl > 0).then(|| Granted {
                    id,
                    ttl,
                    due: next_check(ttl),
                })
            }
            _ => {
                let ttl = lease_ttl(&self.source, id).await?;
                if ttl > 0 {
                    let granted = grant_lease(&self.destination, ttl).await?;
                    Some(Granted {
                        id: granted,
                        ttl,
                        due: next_check(ttl),
                    })
                } else {
                    None
                }
            }
        };
        map.insert(id, granted);
        Ok(granted.map(|g| g.id))
    }

    /// Whether source lease `id` is known to be gone (its keys are not on
    /// the destination, whatever the source's event history says).
    pub async fn is_gone(&self, id: i64) -> bool {
        id != 0 && matches!(self.map.lock().await.get(&id), Some(None))
    }

    /// The live pairs, for a follow checkpoint.
    pub async fn pairs(&self) -> Vec<Pair> {
        let mut pairs: Vec<Pair> = self
            .map
            .lock()
            .await
            .iter()
            .filter_map(|(s, g)| g.map(|g| (*s, g.id)))
            .collect();
        pairs.sort_unstable();
        pairs
    }

    /// Takes over the pairs a follow checkpoint recorded, so that a resumed
    /// follow keeps putting keys on the destination leases it granted.
    pub async fn adopt(&self, pairs: &[Pair]) -> Result<(), EtcdError> {
        for &(source, destination) in pairs {
            let ttl = lease_ttl(&self.destination, destination).await?;
            let granted = (ttl >= 0).then(|| Granted {
                id: destination,
                ttl,
                due: Instant::now(),
            });
            self.map.lock().await.insert(source, granted);
        }
        Ok(())
    }

    /// Renews the destination leases whose source leases live, revokes those
    /// whose source leases are gone. Cheap when nothing is due: each lease is
    /// looked at every third of its TTL.
    pub async fn tend(&self) -> Result<(), EtcdError> {
        if self.policy != LeasePolicy::Grant {
            return Ok(());
        }
        let now = Instant::now();
        let due: Vec<(i64, Granted)> = self
            .map
            .lock()
            .await
            .iter()
            .filter_map(|(s, g)| g.filter(|g| g.due <= now).map(|g| (*s, g)))
            .collect();
        for (source, granted) in due {
            let left = lease_ttl(&self.source, source).await?;
            let next = if left <= 0 {
                // Expired or revoked on the source: its keys go here too.
                revoke_lease(&self.destination, granted.id).await?;
                None
            } else {
                let here = lease_ttl(&self.destination, granted.id).await?;
                tracing::debug!(
                    source_lease = source,
                    left,
                    destination_lease = granted.id,
                    here,
                    "tending a lease"
                );
                // -1: gone. (0 is a lease in its last second: TTLs are whole.)
                if here < 0 {
                    tracing::warn!(
                        source_lease = source,
                        "a destination lease expired before its source lease; the next put on it is granted a new one"
                    );
                    self.map.lock().await.remove(&source);
                    continue;
                }
                if left >= here {
                    renew_lease(&self.destination, granted.id).await?;
                }
                Some(Granted {
                    due: next_check(granted.ttl),
                    ..granted
                })
            };
            self.map.lock().await.insert(source, next);
        }
        Ok(())
    }
}

/// A third of a TTL from now, between one and ten seconds: a lease is
/// renewed well before it can run out.
fn next_check(ttl: i64) -> Instant {
    let third = Duration::from_millis((ttl.max(0) as u64).saturating_mul(1000) / 3);
    Instant::now() + third.clamp(Duration::from_secs(1), Duration::from_secs(10))
}
