//! `cargo xtask models …`: list, fetch and verify the models of models.lock in
//! the store (`$ZETA_MODELS`, default `~/.cache/zeta/models`).

use std::process::ExitCode;

use anyhow::{Result, bail};
use zeta_engine::store::{ModelEntry, ModelStatus, Store};

use crate::progress::StoreBars;

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

/// The models named (all if `names` is empty); unknown names are an error.
fn select<'a>(store: &'a Store, names: &[String]) -> Result<Vec<&'a ModelEntry>> {
    if names.is_empty() {
        return Ok(store.lock().models.iter().collect());
    }
    names
        .iter()
        .map(|n| match store.lock().get(n) {
            Some(m) => Ok(m),
            None => bail!("unknown model '{n}' (known: {})", store.lock().names()),
        })
        .collect()
}

/// `models list`.
pub fn list() -> Result<ExitCode> {
    let store = Store::from_env()?;
    println!("store: {}", store.dir().display());
    println!("{:<28} {:<36} {:>11}  status", "name", "file", "size");
    for m in &store.lock().models {
        let status = match store.status(m)? {
            ModelStatus::Missing => "missing".to_string(),
            ModelStatus::WrongSize { got } => format!("WRONG SIZE ({got} bytes)"),
            ModelStatus::Unverified => "present (not verified)".to_string(),
            ModelStatus::Verified => "verified".to_string(),
        };
        println!(
            "{:<28} {:<36} {:>11}  {status}",
            m.name,
            m.file,
            mib(m.size)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `models fetch [NAME…|--all]`.
pub fn fetch(names: &[String], all: bool) -> Result<ExitCode> {
    if names.is_empty() && !all {
        bail!("name the models to fetch, or pass --all (see `cargo xtask models list`)");
    }
    let store = Store::from_env()?;
    let models = select(&store, names)?;
    let mut failed = 0;
    for m in models {
        let mut bars = StoreBars::default();
        match store.fetch(m, &mut |ev| bars.event(ev)) {
            Ok(p) => eprintln!("{}: ok ({})", m.name, p.display()),
            Err(e) => {
                eprintln!("{}: error: {e}", m.name);
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `models verify [NAME…]`: always re-hashes.
pub fn verify(names: &[String]) -> Result<ExitCode> {
    let store = Store::from_env()?;
    let models = select(&store, names)?;
    let mut failed = 0;
    for m in models {
        if store.status(m)? == ModelStatus::Missing {
            if names.is_empty() {
                eprintln!("{}: missing (skipped)", m.name);
            } else {
                eprintln!(
                    "{}: error: not in the store ({})",
                    m.name,
                    store.path(m).display()
                );
                failed += 1;
            }
            continue;
        }
        let mut bars = StoreBars::default();
        match store.verify(m, &mut |ev| bars.event(ev)) {
            Ok(()) => eprintln!(
                "{}: ok (size {} and sha256 {} match)",
                m.name, m.size, m.sha256
            ),
            Err(e) => {
                eprintln!("{}: error: {e}", m.name);
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
