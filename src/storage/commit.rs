//! Group commit: batches written at the same time share one flush to disk.
//!
//! The first thread that needs a flush syncs everything appended so far; the
//! others wait on a `Condvar` for its result. A failed flush cuts off
//! everything not yet durable (none of it was acknowledged), and every batch in
//! that range gets the error. The flush runs on a handle of its own, without
//! the writer's lock, so appends go on meanwhile.

use crate::app::locks::{lock, wait_while};
use std::fs::File;
use std::sync::{Condvar, Mutex};

/// What the group commit needs of the file being appended to.
pub(super) trait Appender {
    /// Bytes ever appended, and the file's length, now.
    fn position(&self) -> (u64, u64);
    /// Everything appended through `end` is on disk.
    fn durable_through(&self, end: u64);
    /// A flush failed: cut the file back to `keep` bytes and forget what was
    /// not on disk. Returns the bytes ever appended.
    fn cut_back_to(&self, keep: u64) -> u64;
}

struct CommitState {
    /// Every batch whose `end` is at most this is resolved: durable or failed.
    resolved: u64,
    /// File length as of the last successful sync.
    durable_len: u64,
    /// A thread is running `fsync` now.
    syncing: bool,
    /// Ranges `(after, through]` of appended positions whose batches were cut off.
    failed: Vec<(u64, u64)>,
    /// Why the last failed range failed, for the batches in it.
    last_failure: String,
}

/// The flushes of one file.
pub(super) struct GroupCommit {
    state: Mutex<CommitState>,
    committed: Condvar,
    /// A second handle on the file, so a flush runs without the writer's lock.
    handle: File,
}

impl GroupCommit {
    /// The flushes of `handle`'s file, `durable_len` bytes of which are on disk.
    pub fn new(handle: File, durable_len: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(CommitState {
                resolved: 0,
                durable_len,
                syncing: false,
                failed: Vec::new(),
                last_failure: String::new(),
            }),
            committed: Condvar::new(),
            handle,
        }
    }

    /// Whether everything appended through `end` is resolved already.
    pub fn is_resolved(&self, end: u64) -> bool {
        lock(&self.state).resolved >= end
    }

    /// Waits until what was appended through `end` is on disk, flushing (for
    /// everyone) if no other thread is. `Err` with the flush's error when it
    /// failed and the batch was cut off.
    pub fn sync(&self, end: u64, file: &impl Appender) -> Result<(), String> {
        let mut state = lock(&self.state);
        loop {
            if end <= state.resolved {
                let failed = state
                    .failed
                    .iter()
                    .any(|&(after, through)| after < end && end <= through);
                return if failed {
                    Err(state.last_failure.clone())
                } else {
                    Ok(())
                };
            }
            if state.syncing {
                state = wait_while(&self.committed, state, |s| s.syncing);
                continue;
            }
            state.syncing = true;
            drop(state);
            let (target, target_len) = file.position();
            let result = self.handle.sync_data();
            state = lock(&self.state);
            match result {
                Ok(()) => {
                    state.resolved = state.resolved.max(target);
                    state.durable_len = target_len;
                    file.durable_through(target);
                }
                Err(e) => {
                    let appended = file.cut_back_to(state.durable_len);
                    let resolved = state.resolved;
                    state.failed.push((resolved, appended));
                    state.resolved = appended;
                    state.last_failure = e.to_string();
                }
            }
            state.syncing = false;
            self.committed.notify_all();
        }
    }
}
