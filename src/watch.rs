//! Watching files by content: what the TLS reloader and the tunnels file use. A file counts
//! as changed when its bytes differ from the last look (an atomic rename and an in-place edit
//! both count; a touch does not); a trigger (SIGHUP) counts as a change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Files looked at every `interval`, and a trigger.
pub(crate) struct Watch {
    files: Vec<PathBuf>,
    interval: Option<Duration>,
    trigger: Arc<Notify>,
    last: Vec<Option<Vec<u8>>>,
}

impl Watch {
    /// Watches `files` as they are now.
    pub(crate) async fn new(
        files: Vec<PathBuf>,
        interval: Option<Duration>,
        trigger: Arc<Notify>,
    ) -> Self {
        let last = snapshot(files.clone()).await;
        Watch {
            files,
            interval,
            trigger,
            last,
        }
    }

    /// Waits until the trigger fired (`Some(true)`) or a file changed (`Some(false)`);
    /// `None` once `stop` is cancelled.
    pub(crate) async fn changed(&mut self, stop: &CancellationToken) -> Option<bool> {
        loop {
            let requested = tokio::select! {
                _ = stop.cancelled() => return None,
                _ = self.trigger.notified() => true,
                _ = sleep_or_forever(self.interval) => false,
            };
            let now = snapshot(self.files.clone()).await;
            if requested || now != self.last {
                self.last = now;
                return Some(requested);
            }
        }
    }
}

/// The contents of `files` (`None` for one that cannot be read), read on a blocking thread.
async fn snapshot(files: Vec<PathBuf>) -> Vec<Option<Vec<u8>>> {
    tokio::task::spawn_blocking(move || files.iter().map(|f| std::fs::read(f).ok()).collect())
        .await
        .unwrap_or_default()
}

async fn sleep_or_forever(interval: Option<Duration>) {
    match interval {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
