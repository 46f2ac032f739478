//! Progress on stderr: a spinner or bar on a terminal; on a pipe, a line
//! every few seconds, so a CI log shows a long run moving.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::apply::ApplyProgress;
use crate::plan::Progress;
use crate::render;

/// Keys read per side while planning; on a pipe only with `-v`.
pub fn spawn_progress(progress: Arc<Progress>, verbose: u8) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let read = |p: &Progress| {
            format!(
                "reading: source {} keys, destination {} keys",
                render::thousands(p.source_keys.load(Ordering::Relaxed)),
                render::thousands(p.destination_keys.load(Ordering::Relaxed))
            )
        };
        if terminal {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            let _guard = ClearOnDrop(bar.clone());
            loop {
                bar.set_message(read(&progress));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        } else if verbose > 0 {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                tracing::info!("{}", read(&progress));
            }
        }
    })
}

/// Clears the spinner when the progress task is aborted.
struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Leaves the bar's last frame with the final counts when the task ends,
/// so it never stops short of what the summary below it says.
struct FinalFrame {
    bar: indicatif::ProgressBar,
    progress: Arc<ApplyProgress>,
}

impl Drop for FinalFrame {
    fn drop(&mut self) {
        self.bar
            .set_length(self.progress.total.load(Ordering::Relaxed));
        self.bar
            .set_position(self.progress.done.load(Ordering::Relaxed));
        self.bar.finish();
    }
}

/// A progress bar on a terminal; on a pipe, a line every 5 seconds.
pub fn spawn_apply_progress(progress: Arc<ApplyProgress>) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let start = std::time::Instant::now();
        if terminal {
            let bar = indicatif::ProgressBar::new(progress.total.load(Ordering::Relaxed));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} keys  {msg}  ETA {eta}",
            ) {
                bar.set_style(style);
            }
            let _guard = FinalFrame {
                bar: bar.clone(),
                progress: progress.clone(),
            };
            loop {
                bar.set_length(progress.total.load(Ordering::Relaxed));
                let done = progress.done.load(Ordering::Relaxed);
                bar.set_position(done);
                let secs = start.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "{} keys/s",
                    render::thousands((done as f64 / secs) as u64)
                ));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        } else {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let done = progress.done.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64().max(0.001);
                errln!(
                    "apply: {} of {} keys ({} keys/s)",
                    render::thousands(done),
                    render::thousands(progress.total.load(Ordering::Relaxed)),
                    render::thousands((done as f64 / secs) as u64)
                );
            }
        }
    })
}
