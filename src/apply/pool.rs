//! One bounded pool of write tasks, shared by the write pipeline and move
//! mode's deletes: at most `limit` transactions in flight, each result
//! settled as it lands, the first failure kept.

use std::future::Future;

use tokio::task::JoinSet;

use super::ApplyError;
use crate::etcd::EtcdError;

pub struct Pool<T> {
    tasks: JoinSet<Result<T, EtcdError>>,
    limit: usize,
    first_error: Option<ApplyError>,
}

impl<T: Send + 'static> Pool<T> {
    pub fn new(limit: usize) -> Pool<T> {
        Pool {
            tasks: JoinSet::new(),
            limit: limit.max(1),
            first_error: None,
        }
    }

    /// Whether a task has failed: start no more.
    pub fn failed(&self) -> bool {
        self.first_error.is_some()
    }

    /// Waits until fewer than `limit` tasks run, settling what finished.
    pub async fn make_room(&mut self, settle: &mut impl FnMut(T)) {
        while self.tasks.len() >= self.limit {
            self.settle_next(settle).await;
        }
    }

    pub fn spawn(&mut self, task: impl Future<Output = Result<T, EtcdError>> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Settles every task still running; the first failure, if any.
    pub async fn finish(mut self, settle: &mut impl FnMut(T)) -> Result<(), ApplyError> {
        while !self.tasks.is_empty() {
            self.settle_next(settle).await;
        }
        match self.first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn settle_next(&mut self, settle: &mut impl FnMut(T)) {
        match self.tasks.join_next().await {
            Some(Ok(Ok(done))) => settle(done),
            Some(Ok(Err(e))) => {
                self.first_error.get_or_insert(ApplyError::Etcd(e));
            }
            Some(Err(e)) => {
                self.first_error
                    .get_or_insert(ApplyError::Internal(e.to_string()));
            }
            None => {}
        }
    }
}
