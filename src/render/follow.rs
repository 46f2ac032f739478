//! What following says: lag reports, notices between applies, and how it
//! stopped, in text (stderr), JSON lines and Markdown (stdout).

use crate::engine::FollowNotice;
use crate::escape::{text as esc, to_json_string};
use crate::follow::{FollowEnd, LagReport};
use crate::keys::display_key;

/// `follow: source revision 120, applied 118 (2 behind), 40 events/s, 0.3 s behind`
pub fn lag_text(r: &LagReport) -> String {
    format!(
        "follow: source revision {}, applied {} ({} behind), {:.0} events/s, {:.1} s behind",
        r.source_revision,
        r.applied_revision,
        r.lag_revisions,
        r.events_per_second,
        r.seconds_behind
    )
}

/// One JSON line: `{"follow": {…}}`.
pub fn lag_json(r: &LagReport) -> String {
    to_json_string(&serde_json::json!({ "follow": r }))
}

pub fn notice_text(n: &FollowNotice) -> String {
    match n {
        FollowNotice::Following {
            revision,
            checkpoint_key,
        } => format!(
            "Following the source from revision {} (checkpoint `{}`).",
            revision + 1,
            display_key(checkpoint_key)
        ),
        FollowNotice::Resuming {
            revision,
            checkpoint_key,
        } => format!(
            "Resuming: the checkpoint `{}` says source revision {revision} is applied; following from {}.",
            display_key(checkpoint_key),
            revision + 1
        ),
        FollowNotice::Replanning {
            compact_revision,
            needed,
        } => format!(
            "The source compacted its history up to revision {compact_revision}, past revision {needed} this follow needs: running a fresh plan and apply, then following again."
        ),
    }
}

/// Why following stopped, and the last applied revision.
fn why(end: &FollowEnd) -> (&'static str, i64) {
    match *end {
        FollowEnd::UntilReached { last_applied } => ("reached --until-revision", last_applied),
        FollowEnd::Cutover { last_applied } => {
            ("cutover file found and the lag is zero", last_applied)
        }
        FollowEnd::Interrupted { last_applied } | FollowEnd::Compacted { last_applied, .. } => {
            ("interrupted", last_applied)
        }
    }
}

/// `rerun`: the command that was run, which resumes from the checkpoint.
pub fn stopped_text(end: &FollowEnd, rerun: &str) -> String {
    let (why, last_applied) = why(end);
    format!(
        "Follow stopped ({why}): source revision {last_applied} is applied. Resume with: {}",
        esc(rerun)
    )
}

pub fn stopped_json(end: &FollowEnd) -> String {
    let (why, last_applied) = why(end);
    to_json_string(
        &serde_json::json!({"follow_stopped": {"reason": why, "last_applied_revision": last_applied}}),
    )
}

/// For a job summary: why following stopped, and where it got to.
pub fn stopped_markdown(end: &FollowEnd) -> String {
    let (why, last_applied) = why(end);
    format!("### etcdplan follow: stopped ({why})\n\nSource revision {last_applied} is applied.\n")
}
