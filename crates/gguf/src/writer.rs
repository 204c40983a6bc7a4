//! The GGUF writer: [`GgufWriter`] collects metadata and tensor
//! descriptions and writes a v2 or v3 file.
//!
//! Layout written (the same as llama.cpp's `gguf_write_to_buf`): header,
//! key/value pairs in insertion order, tensor infos in insertion order, zero
//! padding to the alignment, then each tensor's data followed by zero padding
//! to the alignment. Tensor offsets are contiguous: each tensor starts at the
//! previous one's end rounded up to the alignment. The alignment is
//! `general.alignment` if added (it must be a `u32` power of two ≤ 1 MiB),
//! else 32.
//!
//! Tensor data either lives in memory ([`GgufWriter::add_tensor`]) or is
//! streamed at write time by a callback ([`GgufWriter::add_tensor_info`] +
//! [`GgufWriter::write_streaming`]), so large synthetic models never need
//! to be held in memory. [`GgufWriter::write_file`] is atomic: it writes a
//! temporary file in the target's directory, syncs it and renames it over
//! the target.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::TensorInfo;
use crate::error::GgufError;
use crate::reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, align_up, check_alignment,
    check_tensor,
};
use crate::types::GgmlType;
use crate::value::{Array, Value};

/// Callback that writes tensor `index`'s `info.n_bytes` bytes of data.
pub type FillFn<'a> = dyn FnMut(usize, &TensorInfo, &mut dyn Write) -> io::Result<()> + 'a;

#[derive(Debug, Clone)]
struct PendingTensor {
    /// Offset field is filled in at write time (it depends on the alignment).
    info: TensorInfo,
    data: Option<Vec<u8>>,
}

/// Builds a GGUF file from metadata and tensors. Version 3 by default.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty v3 writer.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Selects the GGUF version (2 or 3; anything else fails at write time
    /// with [`GgufError::UnsupportedVersion`]). v2 and v3 share one layout.
    pub fn with_version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Adds a key/value pair, or replaces the value of an existing key
    /// (keeping its position). Keys are validated at write time (an empty
    /// key fails with [`GgufError::EmptyKey`]); `general.alignment` must be
    /// a valid `u32` alignment and sets the file's alignment.
    pub fn add_kv(&mut self, key: impl Into<String>, v: Value) -> &mut Self {
        let key = key.into();
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = v;
        } else {
            self.metadata.push((key, v));
        }
        self
    }

    /// Adds a tensor whose data is held in memory. `dims` are ggml `ne`
    /// (`dims[0]` is the row length); `data` must be exactly
    /// `ty.row_bytes(dims[0]) * n_rows` bytes.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<(), GgufError> {
        let info = self.check_new_tensor(name.into(), dims, ty)?;
        if data.len() as u64 != info.n_bytes {
            return Err(GgufError::DataSizeMismatch {
                tensor: info.name,
                expected: info.n_bytes,
                got: data.len() as u64,
            });
        }
        self.push(info, Some(data));
        Ok(())
    }

    /// Adds a tensor whose data [`GgufWriter::write_streaming`] will ask for.
    pub fn add_tensor_info(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<(), GgufError> {
        let info = self.check_new_tensor(name.into(), dims, ty)?;
        self.push(info, None);
        Ok(())
    }

    fn check_new_tensor(
        &self,
        name: String,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<TensorInfo, GgufError> {
        if name.is_empty() {
            return Err(GgufError::EmptyTensorName { offset: None });
        }
        let n_bytes = check_tensor(&name, dims, ty)?;
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        Ok(TensorInfo {
            name,
            dims: dims.to_vec(),
            ggml_type: ty,
            offset: 0,
            n_bytes,
        })
    }

    fn push(&mut self, info: TensorInfo, data: Option<Vec<u8>>) {
        self.names.insert(info.name.clone());
        self.tensors.push(PendingTensor { info, data });
    }

    /// The tensor infos as they will be written (offsets relative to the data
    /// section, computed from the current alignment).
    pub fn tensor_infos(&self) -> Result<Vec<TensorInfo>, GgufError> {
        let alignment = self.alignment()?;
        let mut infos = Vec::with_capacity(self.tensors.len());
        let mut running: u64 = 0;
        for t in &self.tensors {
            let mut info = t.info.clone();
            info.offset = running;
            running = running
                .checked_add(info.n_bytes)
                .and_then(|e| align_up(e, alignment))
                .ok_or(GgufError::TooLarge {
                    what: "tensor data section",
                })?;
            infos.push(info);
        }
        Ok(infos)
    }

    fn alignment(&self) -> Result<u64, GgufError> {
        match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            Some((_, v)) => check_alignment(v),
            None => Ok(DEFAULT_ALIGNMENT),
        }
    }

    /// Writes the file; every tensor must have been added with
    /// [`GgufWriter::add_tensor`].
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<(), GgufError> {
        if let Some(t) = self.tensors.iter().find(|t| t.data.is_none()) {
            return Err(GgufError::MissingTensorData {
                tensor: t.info.name.clone(),
            });
        }
        self.write_impl(w, None)
    }

    /// Writes the file, calling `fill(index, info, out)` for each tensor
    /// added with [`GgufWriter::add_tensor_info`] (in order); `fill` must
    /// write exactly `info.n_bytes` bytes to `out`, else
    /// [`GgufError::DataSizeMismatch`]. Tensors added with data are written
    /// from memory.
    pub fn write_streaming<W: Write>(
        &self,
        w: &mut W,
        fill: &mut FillFn<'_>,
    ) -> Result<(), GgufError> {
        self.write_impl(w, Some(fill))
    }

    /// Atomically writes the file to `path` (temporary file in the same
    /// directory, fsync, rename). Every tensor must have data.
    pub fn write_file(&self, path: &Path) -> Result<(), GgufError> {
        if let Some(t) = self.tensors.iter().find(|t| t.data.is_none()) {
            return Err(GgufError::MissingTensorData {
                tensor: t.info.name.clone(),
            });
        }
        self.write_file_impl(path, None)
    }

    /// [`GgufWriter::write_file`] with streamed tensor data, as in
    /// [`GgufWriter::write_streaming`].
    pub fn write_file_streaming(
        &self,
        path: &Path,
        fill: &mut FillFn<'_>,
    ) -> Result<(), GgufError> {
        self.write_file_impl(path, Some(fill))
    }

    fn write_file_impl(&self, path: &Path, fill: Option<&mut FillFn<'_>>) -> Result<(), GgufError> {
        let file_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| GgufError::File { path: p, source }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| GgufError::File {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
            })?
            .to_string_lossy()
            .into_owned();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{file_name}.tmp-{}-{nanos}", std::process::id()));
        let result = (|| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(file_err(&tmp))?;
            let mut bw = io::BufWriter::with_capacity(1 << 20, file);
            self.write_impl(&mut bw, fill)?;
            let file = bw.into_inner().map_err(|e| GgufError::File {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(file_err(&tmp))?;
            drop(file);
            std::fs::rename(&tmp, path).map_err(file_err(path))
        })();
        if result.is_err() {
            // Best effort: the temporary file may not exist.
            let _ = std::fs::remove_file(&tmp);
            return result;
        }
        // Make the rename durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            d.sync_all().map_err(file_err(&dir))?;
        }
        Ok(())
    }

    fn write_impl<W: Write>(
        &self,
        w: &mut W,
        mut fill: Option<&mut FillFn<'_>>,
    ) -> Result<(), GgufError> {
        if self.version != 2 && self.version != 3 {
            return Err(GgufError::UnsupportedVersion {
                version: self.version,
            });
        }
        let alignment = self.alignment()?;
        let infos = self.tensor_infos()?;

        // Header, metadata and tensor infos are built in memory (they are
        // small next to tensor data), then written in one go.
        let mut h = Vec::new();
        h.extend_from_slice(&GGUF_MAGIC);
        h.extend_from_slice(&self.version.to_le_bytes());
        h.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            if key.is_empty() {
                return Err(GgufError::EmptyKey { offset: None });
            }
            put_str(&mut h, key);
            h.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut h, value)?;
        }
        for t in &infos {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            h.extend_from_slice(&t.offset.to_le_bytes());
        }
        let padded =
            align_up(h.len() as u64, alignment).ok_or(GgufError::TooLarge { what: "header" })?;
        h.resize(
            usize::try_from(padded).map_err(|_| GgufError::TooLarge { what: "header" })?,
            0,
        );
        w.write_all(&h)?;
        drop(h);

        let zeros = vec![0u8; alignment as usize];
        let mut pos: u64 = 0; // relative to the data section
        for (i, (t, info)) in self.tensors.iter().zip(&infos).enumerate() {
            debug_assert_eq!(pos, info.offset);
            match (&t.data, fill.as_deref_mut()) {
                (Some(data), _) => w.write_all(data)?,
                (None, Some(f)) => {
                    let mut cw = Limited {
                        inner: &mut *w,
                        written: 0,
                        limit: info.n_bytes,
                        overrun: 0,
                    };
                    let r = f(i, info, &mut cw);
                    let mismatch = GgufError::DataSizeMismatch {
                        tensor: info.name.clone(),
                        expected: info.n_bytes,
                        got: cw.written.saturating_add(cw.overrun),
                    };
                    if cw.overrun > 0 {
                        return Err(mismatch);
                    }
                    r?;
                    if cw.written != info.n_bytes {
                        return Err(mismatch);
                    }
                }
                (None, None) => {
                    return Err(GgufError::MissingTensorData {
                        tensor: info.name.clone(),
                    });
                }
            }
            let end = pos + info.n_bytes;
            let next = align_up(end, alignment).ok_or(GgufError::TooLarge {
                what: "tensor data section",
            })?;
            // next - end < alignment <= zeros.len()
            w.write_all(&zeros[..(next - end) as usize])?;
            pos = next;
        }
        w.flush()?;
        Ok(())
    }
}

/// A writer that passes through at most `limit` bytes and records any excess.
struct Limited<'a, W: Write> {
    inner: &'a mut W,
    written: u64,
    limit: u64,
    overrun: u64,
}

impl<W: Write> Write for Limited<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit - self.written;
        if buf.len() as u64 > room {
            self.overrun = self.overrun.saturating_add(buf.len() as u64 - room);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tensor data longer than the tensor's size",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &Value) -> Result<(), GgufError> {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(u8::from(*x)),
        Value::String(s) => put_str(h, s),
        Value::Array(a) => put_array(h, a, 1)?,
        Value::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
    }
    Ok(())
}

fn put_array(h: &mut Vec<u8>, a: &Array, depth: u32) -> Result<(), GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            offset: h.len() as u64,
            depth,
            limit: MAX_ARRAY_DEPTH,
        });
    }
    h.extend_from_slice(&a.elem_type().id().to_le_bytes());
    h.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                h.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => h.extend_from_slice(v),
        Array::I8(v) => le!(v),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => h.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => {
            for s in v {
                put_str(h, s);
            }
        }
        Array::Array(v) => {
            for inner in v {
                put_array(h, inner, depth + 1)?;
            }
        }
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
    }
    Ok(())
}
