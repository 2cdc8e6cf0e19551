//! Group commit: batches written at the same time share one flush to disk.
//!
//! The first thread that needs a flush syncs everything appended so far; the
//! others wait on a `Condvar` for its result. The flush runs on a handle of its
//! own, without the writer's lock, so appends go on meanwhile.
//!
//! A failed flush poisons the file for good: after a failed `fsync` the kernel
//! may already have dropped the pages it could not write and marked them clean,
//! so neither a cut nor a retry makes a later ack true. Every batch not yet on
//! disk, and every one after, gets the error; the server stops, and a restart
//! recovers from what the disk really holds.

use crate::app::locks::{lock, wait_while};
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// What the group commit needs of the file being appended to.
pub(super) trait Appender {
    /// Bytes ever appended, and the file's length, now.
    fn position(&self) -> (u64, u64);
    /// Everything appended through `end` is on disk.
    fn durable_through(&self, end: u64);
}

struct CommitState {
    /// Every batch whose `end` is at most this is resolved: durable or failed.
    resolved: u64,
    /// File length as of the last successful sync.
    durable_len: u64,
    /// A thread is running `fsync` now.
    syncing: bool,
    /// Why a flush failed, once one has: the file is poisoned for good.
    poisoned: Option<String>,
}

/// The flushes of one file.
pub(super) struct GroupCommit {
    state: Mutex<CommitState>,
    /// Set with `CommitState::poisoned`, read without the lock.
    poisoned: AtomicBool,
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
                poisoned: None,
            }),
            committed: Condvar::new(),
            poisoned: AtomicBool::new(false),
            handle,
        }
    }

    /// Whether everything appended through `end` is resolved already.
    pub fn is_resolved(&self, end: u64) -> bool {
        lock(&self.state).resolved >= end
    }

    /// Why a flush failed, once one has.
    pub fn poisoned(&self) -> Option<String> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.state).poisoned.clone()
    }

    /// Waits until what was appended through `end` is on disk, flushing (for
    /// everyone) if no other thread is; returns how far the file is resolved
    /// then (at least `end`). `Err` with the failed flush's error for every
    /// batch not on disk when a flush failed, and every one after.
    pub fn sync(&self, end: u64, file: &impl Appender) -> Result<u64, String> {
        let mut state = lock(&self.state);
        loop {
            if end <= state.resolved {
                return Ok(state.resolved);
            }
            if let Some(reason) = &state.poisoned {
                return Err(reason.clone());
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
                    state.poisoned = Some(e.to_string());
                    self.poisoned.store(true, Ordering::Release);
                }
            }
            state.syncing = false;
            self.committed.notify_all();
        }
    }
}
