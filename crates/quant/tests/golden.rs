//! Bit-exactness against golden vectors produced by llama.cpp's libggml
//! (`xtask/golden/quant_golden.py`): random blocks → `dequantize_row_*`, and
//! random f32 rows → `quantize_row_*_ref`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use zeta_quant::{GgmlType, dequantize, quantize};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A parsed golden file: (type, n elements, block bytes, f32 values).
fn read_golden(path: &Path, magic: &[u8; 4]) -> (GgmlType, usize, Vec<u8>, Vec<f32>) {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&raw[0..4], magic, "{}", path.display());
    let u = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().unwrap());
    let ty = GgmlType::from_id(u(4)).unwrap();
    let n = u(8) as usize;
    let nb = u(12) as usize;
    let body = &raw[16..];
    assert_eq!(body.len(), nb + 4 * n, "{}", path.display());
    let (bytes, floats) = if magic == b"ZQG1" {
        (&body[..nb], &body[nb..])
    } else {
        (&body[4 * n..], &body[..4 * n])
    };
    let vals = floats
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (ty, n, bytes.to_vec(), vals)
}

fn files(prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".bin")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn dequantize_matches_ggml_bit_for_bit() {
    let all = files("dequant_");
    assert_eq!(
        all.len(),
        17,
        "expected one golden file per dequantizable type"
    );
    for path in all {
        let (ty, n, bytes, expected) = read_golden(&path, b"ZQG1");
        // Aligned, then shifted by one byte to exercise unaligned reads.
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        for src in [&bytes[..], &shifted[1..]] {
            let mut out = vec![0f32; n];
            dequantize(ty, src, &mut out).unwrap();
            let bad = out
                .iter()
                .zip(&expected)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            if let Some(i) = bad {
                panic!(
                    "{ty}: element {i} (block {}) = {:e} ({:#010x}), ggml says {:e} ({:#010x})",
                    i / ty.block_size(),
                    out[i],
                    out[i].to_bits(),
                    expected[i],
                    expected[i].to_bits()
                );
            }
        }
    }
}

#[test]
fn quantize_matches_ggml_reference_quantizers() {
    let all = files("quant_");
    assert_eq!(
        all.len(),
        16,
        "expected one golden file per quantizable type"
    );
    for path in all {
        let (ty, n, expected, x) = read_golden(&path, b"ZQQ1");
        assert_eq!(x.len(), n);
        let mut out = vec![0u8; expected.len()];
        quantize(ty, &x, &mut out).unwrap();
        if let Some(i) = out.iter().zip(&expected).position(|(a, b)| a != b) {
            let ts = ty.type_size();
            let blk = i / ts;
            panic!(
                "{ty}: byte {i} (block {blk}, offset {}) = {:#04x}, ggml says {:#04x}\nours: {:?}\nggml: {:?}",
                i % ts,
                out[i],
                expected[i],
                &out[blk * ts..(blk + 1) * ts],
                &expected[blk * ts..(blk + 1) * ts]
            );
        }
        // Unaligned destination.
        let mut shifted = vec![0u8; expected.len() + 1];
        quantize(ty, &x, &mut shifted[1..]).unwrap();
        assert_eq!(&shifted[1..], &expected[..], "{ty} (unaligned dst)");
    }
}

#[test]
fn vec_dot_matches_ggml_generic_kernels_bit_for_bit() {
    let all = files("dot_");
    assert_eq!(
        all.len(),
        12,
        "expected one golden file per quantized weight type"
    );
    for path in all {
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(&raw[0..4], b"ZQD1");
        let u = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().unwrap()) as usize;
        let wt = GgmlType::from_id(u(4) as u32).unwrap();
        let (n, rows, wrow, arow) = (u(8), u(12), u(16), u(20));
        let body = &raw[24..];
        assert_eq!(body.len(), rows * (wrow + arow + 4));
        let (w, rest) = body.split_at(rows * wrow);
        let (a, res) = rest.split_at(rows * arow);
        for r in 0..rows {
            let want = f32::from_le_bytes(res[4 * r..4 * r + 4].try_into().unwrap());
            let got = zeta_quant::vec_dot(
                wt,
                &w[r * wrow..(r + 1) * wrow],
                &a[r * arow..(r + 1) * arow],
                n,
            )
            .unwrap();
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{wt}: row {r}: vec_dot {got:e}, ggml generic {want:e}"
            );
        }
    }
}
