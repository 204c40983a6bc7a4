//! `zeta tensor MODEL NAME --out FILE.npy`: one tensor, dequantized to f32,
//! as a NumPy `.npy` (format 1.0, little-endian `<f4`, C order).
//!
//! The numpy shape is the ggml shape reversed: ggml `ne[0]` (the row length,
//! fastest-varying) becomes the last axis, so `np.load(f)[row]` is one row.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zeta_gguf::{Gguf, TensorInfo};

use crate::output::print;

/// Arguments of `zeta tensor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model: a .gguf path or a models.lock name.
    pub model: String,
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Output .npy file.
    #[arg(long, short = 'o', value_name = "FILE.npy")]
    pub out: PathBuf,
}

/// Runs `zeta tensor`.
pub fn run(args: Args) -> Result<()> {
    let path = crate::model::resolve(&args.model)?;
    let gguf = crate::model::open(&path)?;
    let Some(t) = gguf.tensor(&args.name) else {
        let n = gguf.tensors().len();
        let examples: Vec<&str> = gguf
            .tensors()
            .iter()
            .take(3)
            .map(|t| t.name.as_str())
            .collect();
        bail!(
            "no tensor named '{}' in {} ({n} tensors, e.g. {}; see `zeta info`)",
            args.name,
            path.display(),
            examples.join(", ")
        );
    };
    if !zeta_quant::can_dequantize(t.ggml_type) {
        bail!(
            "tensor '{}' has type {}, which zeta cannot dequantize",
            t.name,
            super::info::type_name(t.ggml_type)
        );
    }
    let shape = numpy_shape(&t.dims);
    let res = write_npy(&gguf, t, &shape, &args.out);
    if res.is_err() {
        let _ = std::fs::remove_file(&args.out);
    }
    res?;
    print(&format!(
        "wrote {}: {} ({}, ggml ne {:?}) as f32, numpy shape {}\n",
        args.out.display(),
        t.name,
        super::info::type_name(t.ggml_type),
        t.dims,
        shape_tuple(&shape)
    ))
}

/// ggml ne (fastest first) → numpy shape (slowest first).
pub fn numpy_shape(dims: &[u64]) -> Vec<u64> {
    dims.iter().rev().copied().collect()
}

/// A Python tuple literal: `(3,)`, `(2, 3)`.
fn shape_tuple(shape: &[u64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        many => format!(
            "({})",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The .npy v1.0 header for a little-endian f32 C-order array of `shape`:
/// magic, version, u16 header length, the dict padded with spaces and a
/// final newline so the data starts at a multiple of 64 bytes.
pub fn npy_header(shape: &[u64]) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}",
        shape_tuple(shape)
    );
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let mut header = dict.into_bytes();
    header.resize(total - 10 - 1, b' ');
    header.push(b'\n');
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY");
    out.extend_from_slice(&[1, 0]);
    // header lengths here are far below u16::MAX (4 dims of ≤ 20 digits)
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out
}

fn write_npy(gguf: &Gguf, t: &TensorInfo, shape: &[u64], out: &Path) -> Result<()> {
    let data = gguf.tensor_data(t);
    let row_len = usize::try_from(t.row_len())?;
    let n_rows = usize::try_from(t.n_rows())?;
    let row_bytes = usize::try_from(
        t.ggml_type
            .row_bytes(t.row_len())
            .context("tensor row size overflows")?,
    )?;
    if row_len == 0 || row_bytes.checked_mul(n_rows) != Some(data.len()) {
        bail!(
            "tensor '{}' has {} bytes of data, expected {} rows of {} bytes",
            t.name,
            data.len(),
            n_rows,
            row_bytes
        );
    }
    let f = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let werr =
        |e: std::io::Error| anyhow::Error::new(e).context(format!("writing {}", out.display()));
    w.write_all(&npy_header(shape)).map_err(werr)?;
    // Dequantize about 1M elements at a time.
    let rows_per_chunk = (1usize << 20).div_ceil(row_len).max(1);
    let mut f32s = vec![0f32; rows_per_chunk * row_len];
    let mut bytes = Vec::with_capacity(f32s.len() * 4);
    for (i, src) in data.chunks(rows_per_chunk * row_bytes).enumerate() {
        let rows = src.len() / row_bytes;
        let dst = &mut f32s[..rows * row_len];
        zeta_quant::dequantize(t.ggml_type, src, dst).with_context(|| {
            format!(
                "dequantizing '{}' rows {}..{}",
                t.name,
                i * rows_per_chunk,
                i * rows_per_chunk + rows
            )
        })?;
        bytes.clear();
        for x in dst.iter() {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        w.write_all(&bytes).map_err(werr)?;
    }
    w.flush().map_err(werr)?;
    Ok(())
}
