//! `apply --follow` as one library call: the initial apply (skipped when a
//! checkpoint of this plan exists), then following the source; after a
//! compaction past the checkpoint, a fresh plan-and-apply and following
//! again. One lease book serves all of it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{
    ApplyOutcome, ApplyRequest, Ending, EngineError, Loaded, Observer, apply_loaded, ending, sides,
};
use crate::etcd::Side;
use crate::follow::{self as f, FollowEnd, FollowError, FollowOptions, LagReport};
use crate::leases::{LeaseBook, LeasePolicy};
use crate::plan::PlanError;
use crate::planfile::{self, Plan};
use crate::saved::SavedPlan;

/// What `apply --follow` needs besides the apply itself.
#[derive(Debug, Clone)]
pub struct FollowRequest {
    /// The initial apply (and the fresh ones after a compaction, which are
    /// auto-approved).
    pub apply: ApplyRequest,
    /// The destination key holding the last applied source revision
    /// (`None`: `/etcdplan/checkpoint/<plan name>`).
    pub checkpoint_key: Option<Vec<u8>>,
    pub until_revision: Option<i64>,
    pub cutover_file: Option<PathBuf>,
    pub report_every: std::time::Duration,
}

/// What following tells the operator between applies, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowNotice {
    /// The initial apply is done: following starts after `revision`.
    Following {
        revision: i64,
        checkpoint_key: Vec<u8>,
    },
    /// A checkpoint of this plan says `revision` is applied.
    Resuming {
        revision: i64,
        checkpoint_key: Vec<u8>,
    },
    /// The source compacted past what following needs: plan and apply again.
    Replanning { compact_revision: i64, needed: i64 },
}

/// Hears how following goes, besides the applies.
pub trait FollowObserver: Observer {
    /// An initial (or post-compaction) apply ended. Following goes on only
    /// after one that completed: else it would build on a partial copy.
    fn applied(&self, outcome: &ApplyOutcome);
    fn notice(&self, _notice: &FollowNotice) {}
    /// How far behind the source following is, every `report_every`.
    fn lag(&self, _report: &LagReport) {}
}

/// How following ended.
#[derive(Debug, Clone)]
pub enum FollowOutcome {
    /// Stopped as asked (signal, --until-revision, cutover).
    Stopped(FollowEnd),
    /// An apply did not complete: how it ended.
    ApplyIncomplete(Box<ApplyOutcome>),
}

/// One follow run: the plan, its sides and book, and the options.
struct Session<'a> {
    observer: &'a dyn FollowObserver,
    stop: Arc<AtomicBool>,
    plan: Plan,
    source: Arc<Side>,
    destination: Arc<Side>,
    book: Arc<LeaseBook>,
    options: FollowOptions,
}

/// `apply --follow` (see the module docs).
pub async fn follow(
    request: &FollowRequest,
    observer: &dyn FollowObserver,
    stop: Arc<AtomicBool>,
) -> Result<FollowOutcome, EngineError> {
    let session = Session::open(request, observer, stop).await?;
    let key = &session.options.checkpoint_key;
    // The checkpoint must be writable before anything is written: else the
    // initial apply would land and following fail right after it.
    crate::etcd::info::probe_write_key(&session.destination, key)
        .await
        .map_err(FollowError::from)?;
    let resume = f::read_checkpoint(&session.destination, key)
        .await?
        .filter(|c| {
            c.source_cluster_id == session.options.source_cluster_id
                && c.plan_file_sha256 == session.plan.file_sha256
        });
    let mut applied = match resume {
        Some(c) => {
            observer.notice(&FollowNotice::Resuming {
                revision: c.revision,
                checkpoint_key: key.clone(),
            });
            session
                .book
                .adopt(&c.leases)
                .await
                .map_err(FollowError::from)?;
            c.revision
        }
        None => match session.initial(request.apply.clone()).await? {
            Ok(revision) => revision,
            Err(outcome) => return Ok(FollowOutcome::ApplyIncomplete(outcome)),
        },
    };
    loop {
        match session.follow_from(applied).await? {
            FollowEnd::Compacted {
                last_applied,
                compact_revision,
            } => {
                observer.notice(&FollowNotice::Replanning {
                    compact_revision,
                    needed: last_applied + 1,
                });
                let again = ApplyRequest {
                    auto_approve: true,
                    ..request.apply.clone()
                };
                applied = match session.initial(again).await? {
                    Ok(revision) => revision,
                    Err(outcome) => return Ok(FollowOutcome::ApplyIncomplete(outcome)),
                };
            }
            other => return Ok(FollowOutcome::Stopped(other)),
        }
    }
}

impl<'a> Session<'a> {
    /// Loads and checks the plan file, connects, and settles the options.
    async fn open(
        request: &'a FollowRequest,
        observer: &'a dyn FollowObserver,
        stop: Arc<AtomicBool>,
    ) -> Result<Session<'a>, EngineError> {
        if SavedPlan::is_saved_plan(&request.apply.target) {
            return Err(FollowError::NeedsPlanFile.into());
        }
        let plan = planfile::load(&request.apply.target)?;
        if plan.source.api == planfile::Api::V2 || plan.destination.api == planfile::Api::V2 {
            return Err(FollowError::V2.into());
        }
        if plan.delete_source {
            return Err(FollowError::MoveMode.into());
        }
        if plan.source.snapshot.is_some() {
            return Err(FollowError::Snapshot.into());
        }
        let (source, destination) = sides(&plan, &request.apply.policy);
        let (src_id, dst_id) = tokio::try_join!(
            crate::plan::cluster_id(&source),
            crate::plan::cluster_id(&destination)
        )
        .map_err(PlanError::from)?;
        let key = request
            .checkpoint_key
            .clone()
            .unwrap_or_else(|| f::default_checkpoint_key(&plan));
        f::check_checkpoint_key(&plan, &key, src_id == dst_id)?;
        let options = FollowOptions {
            until_revision: request.until_revision,
            cutover_file: request.cutover_file.clone(),
            checkpoint_key: key,
            source_cluster_id: format!("{src_id:016x}"),
            max_txn_ops: request.apply.options.max_txn_ops,
            max_txn_bytes: request.apply.options.max_txn_bytes,
            report_every: request.report_every,
        };
        // One lease book for the initial apply and the follow after it, so
        // keys sharing a source lease share one destination lease throughout.
        let policy = LeasePolicy::of_mode(plan.leases);
        let book = Arc::new(LeaseBook::new(policy, source.clone(), destination.clone()));
        Ok(Session {
            observer,
            stop,
            plan,
            source,
            destination,
            book,
            options,
        })
    }

    /// The apply that starts (or restarts) following; on success the
    /// checkpoint is written at its pinned source revision. `Err`: it did
    /// not complete, and how it ended.
    async fn initial(
        &self,
        apply: ApplyRequest,
    ) -> Result<Result<i64, Box<ApplyOutcome>>, EngineError> {
        let loaded = Loaded {
            plan: self.plan.clone(),
            source: self.source.clone(),
            destination: self.destination.clone(),
            saved: None,
            leases: Some(self.book.clone()),
        };
        let outcome = apply_loaded(&apply, loaded, self.observer, self.stop.clone()).await?;
        self.observer.applied(&outcome);
        if !matches!(ending(&outcome), Ending::Complete | Ending::NoChanges) {
            return Ok(Err(Box::new(outcome)));
        }
        let revision = outcome.source_revision();
        let checkpoint = f::Checkpoint {
            source_cluster_id: self.options.source_cluster_id.clone(),
            revision,
            plan_file_sha256: self.plan.file_sha256.clone(),
            leases: self.book.pairs().await,
        };
        f::write_checkpoint(&self.destination, &self.options.checkpoint_key, &checkpoint)
            .await
            .map_err(FollowError::from)?;
        self.observer.notice(&FollowNotice::Following {
            revision,
            checkpoint_key: self.options.checkpoint_key.clone(),
        });
        Ok(Ok(revision))
    }

    async fn follow_from(&self, applied: i64) -> Result<FollowEnd, EngineError> {
        let on_lag = |report: &LagReport| self.observer.lag(report);
        let follower = f::Follower {
            plan: &self.plan,
            source: self.source.clone(),
            destination: self.destination.clone(),
            book: &self.book,
            options: &self.options,
            stop: self.stop.clone(),
            on_lag: &on_lag,
        };
        Ok(follower.run(applied).await?)
    }
}
