//! Progress reporting for long store operations (download, extract, hash).
//!
//! The store never prints; it calls a `&mut dyn FnMut(Progress<'_>)` sink
//! (`&mut |_| {}` ignores everything).

/// What the store is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Downloading a file or wheel.
    Download,
    /// Extracting a member from a wheel.
    Extract,
    /// Hashing a file to check its sha256.
    Verify,
}

impl Stage {
    /// Lowercase verb for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Stage::Download => "downloading",
            Stage::Extract => "extracting",
            Stage::Verify => "verifying",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A stage starts on `label`; `total` bytes are expected if known.
    Begin {
        /// What is being done.
        stage: Stage,
        /// What it is done to (a file or package name).
        label: &'a str,
        /// Expected number of bytes, if known.
        total: Option<u64>,
    },
    /// `done` bytes of the current stage are finished (monotonic within a stage).
    Advance {
        /// Bytes done so far in this stage.
        done: u64,
    },
    /// The current stage ended (successfully or not).
    End,
    /// Something worth telling the user (e.g. a source failed, trying the next).
    Note(&'a str),
}
