//! `cargo xtask tidy`: repository rules that rustfmt and clippy do not check.
//!
//! - every Rust file under `crates/`, `xtask/`, `benches/` starts with `//!`
//!   docs (tests may start with `#![…]` attributes first);
//! - every `unsafe` block, fn or impl has a `// SAFETY:` comment on one of the
//!   three lines above it (or on the same line);
//! - each crate's committed golden data (`crates/*/tests/golden/`) should
//!   stay under 5 MiB (a warning: the brief says "preferably").
//!
//! Prints one line per violation and fails if there is any.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

/// Golden-data budget per crate.
const GOLDEN_LIMIT: u64 = 5 << 20;

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    for e in entries {
        let e = e?;
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type()?.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// `line` with the contents of string literals removed (`"unsafe {"` in a
/// string is not code).
fn strip_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_str = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
                out.push(c);
            }
        } else {
            if c == '"' {
                in_str = true;
            }
            out.push(c);
        }
    }
    out
}

/// Problems in one Rust source file.
pub fn check_rust(path: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("#!["));
    if !first.is_some_and(|l| l.starts_with("//!")) {
        problems.push(format!("{path}: does not start with `//!` module docs"));
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let stripped = strip_strings(line);
        let code = stripped.split("//").next().unwrap_or("");
        let is_unsafe = code.contains("unsafe {")
            || code.contains("unsafe fn")
            || code.contains("unsafe impl")
            || code.trim_end().ends_with("unsafe");
        if !is_unsafe || code.contains("unsafe_op_in_unsafe_fn") {
            continue;
        }
        // the 3 lines above, or the whole comment block right above
        let lo = i.saturating_sub(3);
        let mut documented = lines[lo..=i].iter().any(|l| l.contains("SAFETY:"));
        let mut j = i;
        while !documented && j > 0 {
            j -= 1;
            let l = lines[j].trim_start();
            if !(l.starts_with("//") || l.starts_with("#[")) {
                break;
            }
            documented = l.contains("SAFETY:");
        }
        if !documented {
            problems.push(format!(
                "{path}:{}: `unsafe` without a `// SAFETY:` comment",
                i + 1
            ));
        }
    }
    problems
}

/// Runs all checks from the repository root `root`.
pub fn tidy(root: &Path) -> Result<ExitCode> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for d in ["crates", "xtask", "benches"] {
        walk(&root.join(d), &mut files)?;
    }
    for f in &files {
        if f.extension().is_some_and(|e| e == "rs") {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
            let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
            problems.extend(check_rust(&rel, &text));
        }
    }
    let mut warnings = Vec::new();
    let crates_dir = root.join("crates");
    if let Ok(entries) = std::fs::read_dir(&crates_dir) {
        for e in entries.flatten() {
            let mut golden = Vec::new();
            walk(&e.path().join("tests/golden"), &mut golden)?;
            let total: u64 = golden
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            if total > GOLDEN_LIMIT {
                warnings.push(format!(
                    "warning: crates/{}/tests/golden: {:.1} MiB of golden data (preferably < {} MiB)",
                    e.file_name().to_string_lossy(),
                    total as f64 / (1024.0 * 1024.0),
                    GOLDEN_LIMIT >> 20
                ));
            }
        }
    }
    for p in problems.iter().chain(&warnings) {
        println!("{p}");
    }
    if problems.is_empty() {
        eprintln!("tidy: {} files checked, no problems", files.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("tidy: {} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::check_rust;

    #[test]
    fn module_docs_and_safety_comments() {
        assert!(check_rust("a.rs", "//! docs\nfn f() {}\n").is_empty());
        assert!(check_rust("a.rs", "#![allow(x)]\n\n//! docs\n").is_empty());
        assert_eq!(check_rust("a.rs", "fn f() {}\n").len(), 1);
        let ok = "//! d\n// SAFETY: fine\nlet x = unsafe { f() };\n";
        assert!(check_rust("a.rs", ok).is_empty());
        let bad = "//! d\n\n\n\n\nlet x = unsafe { f() };\n";
        let p = check_rust("a.rs", bad);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("a.rs:6"), "{p:?}");
        // a multi-line SAFETY comment block
        let ok = "//! d\n// SAFETY: a\n// b\n// c\n// d\nlet x = unsafe { f() };\n";
        assert!(check_rust("a.rs", ok).is_empty());
        // inside a string literal it is not code
        assert!(check_rust("a.rs", "//! d\nlet s = \"unsafe { x }\";\n").is_empty());
        // the lint name is not an unsafe block
        assert!(check_rust("a.rs", "//! d\n#![deny(unsafe_op_in_unsafe_fn)]\n").is_empty());
    }
}
