//! One bounded pool of write tasks, shared by the write pipeline and move
//! mode's deletes: at most `limit` transactions (and a byte budget) in
//! flight, each result settled as it lands, the first failure kept.

use std::future::Future;

use tokio::task::JoinSet;

use super::ApplyError;
use crate::etcd::EtcdError;

pub struct Pool<T> {
    tasks: JoinSet<(usize, Result<T, EtcdError>)>,
    limit: usize,
    bytes: usize,
    first_error: Option<ApplyError>,
}

impl<T: Send + 'static> Pool<T> {
    pub fn new(limit: usize) -> Pool<T> {
        Pool {
            tasks: JoinSet::new(),
            limit: limit.max(1),
            bytes: 0,
            first_error: None,
        }
    }

    /// Whether a task has failed: start no more.
    pub fn failed(&self) -> bool {
        self.first_error.is_some()
    }

    /// Waits until fewer than `limit` tasks run and they hold less than
    /// `max_bytes`, settling what finished.
    pub async fn make_room(&mut self, limit: usize, max_bytes: usize, settle: &mut impl FnMut(T)) {
        self.limit = limit.max(1);
        while self.tasks.len() >= self.limit || (self.bytes >= max_bytes && !self.tasks.is_empty())
        {
            self.settle_next(settle).await;
        }
    }

    /// Starts a task holding `bytes` of requests.
    pub fn spawn(
        &mut self,
        bytes: usize,
        task: impl Future<Output = Result<T, EtcdError>> + Send + 'static,
    ) {
        self.bytes += bytes;
        self.tasks.spawn(async move { (bytes, task.await) });
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
        let joined = self.tasks.join_next().await;
        if let Some(Ok((bytes, _))) = &joined {
            self.bytes = self.bytes.saturating_sub(*bytes);
        }
        match joined {
            Some(Ok((_, Ok(done)))) => settle(done),
            Some(Ok((_, Err(e)))) => {
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
