//! WGSL sources, their specialisations and the compute-pipeline cache.
//!
//! Shaders live in the repository's `shaders/` directory and are compiled in
//! with `include_str!`. A [`ShaderVariant`] is a shader, an entry point and a
//! list of text substitutions (`deq_TYPE` → `deq_q4_k`, `KV_IS_F16` →
//! `true`); matvec/embedding shaders are prefixed with `quant.wgsl` (byte
//! access + per-type dequantisation). [`shader_variants`] lists every
//! specialisation the ops can ask for, so the portability test can check
//! each one with naga. Pipelines are created once per
//! (shader, entry point, substitutions) key and cached in the context.

use std::collections::HashMap;
use std::sync::Mutex;

use zeta_gguf::GgmlType;

use crate::context::GpuContext;
use crate::error::{Result, WgpuError};

const QUANT: &str = include_str!("../../../shaders/quant.wgsl");

/// A shader file: name, source, whether `quant.wgsl` is prepended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShaderFile {
    /// File stem, e.g. "matvec".
    pub name: &'static str,
    /// The WGSL text (a template if it has substitution tokens).
    pub source: &'static str,
    /// Whether `quant.wgsl` is prepended.
    pub with_quant: bool,
}

macro_rules! shader {
    ($id:ident, $name:literal, $q:expr) => {
        #[doc = concat!("`shaders/", $name, ".wgsl`")]
        pub const $id: ShaderFile = ShaderFile {
            name: $name,
            source: include_str!(concat!("../../../shaders/", $name, ".wgsl")),
            with_quant: $q,
        };
    };
}

/// Every shader file.
pub mod files {
    use super::ShaderFile;
    shader!(MATVEC, "matvec", true);
    shader!(EMBED, "embed", true);
    shader!(RMSNORM, "rmsnorm", false);
    shader!(ROPE, "rope", false);
    shader!(GLU, "glu", false);
    shader!(ADD, "add", false);
    shader!(SOFTMAX, "softmax", false);
    shader!(ARGMAX, "argmax", false);
    shader!(ATTN_DECODE, "attn_decode", false);
}

/// One specialisation of a shader: the pipeline-cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShaderVariant {
    /// The shader file.
    pub file: ShaderFile,
    /// Entry point.
    pub entry: &'static str,
    /// Text substitutions `(token, replacement)`, applied in order.
    pub defines: Vec<(&'static str, &'static str)>,
}

impl ShaderVariant {
    /// A variant without substitutions.
    pub fn plain(file: ShaderFile, entry: &'static str) -> Self {
        Self {
            file,
            entry,
            defines: Vec::new(),
        }
    }

    /// The complete WGSL text of this variant.
    pub fn source(&self) -> String {
        let mut s = String::new();
        if self.file.with_quant {
            s.push_str(QUANT);
            s.push('\n');
        }
        s.push_str(self.file.source);
        for (token, rep) in &self.defines {
            s = s.replace(token, rep);
        }
        s
    }

    /// A short label, e.g. `matvec:main[deq_TYPE=deq_q4_k]`.
    pub fn label(&self) -> String {
        let d: Vec<String> = self
            .defines
            .iter()
            .map(|(t, r)| format!("{t}={r}"))
            .collect();
        format!("{}:{}[{}]", self.file.name, self.entry, d.join(","))
    }
}

/// Weight types with a GPU dequantisation routine (matvec and embedding).
pub const GPU_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Name of the WGSL dequantisation function of `ty`, if it has one.
pub fn deq_fn(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => "deq_f32",
        GgmlType::F16 => "deq_f16",
        GgmlType::BF16 => "deq_bf16",
        GgmlType::Q4_0 => "deq_q4_0",
        GgmlType::Q4_1 => "deq_q4_1",
        GgmlType::Q5_0 => "deq_q5_0",
        GgmlType::Q5_1 => "deq_q5_1",
        GgmlType::Q8_0 => "deq_q8_0",
        GgmlType::Q4_K => "deq_q4_k",
        GgmlType::Q5_K => "deq_q5_k",
        GgmlType::Q6_K => "deq_q6_k",
        _ => return None,
    })
}

pub(crate) fn quant_variant(file: ShaderFile, ty: GgmlType) -> Result<ShaderVariant> {
    let f = deq_fn(ty).ok_or(WgpuError::UnsupportedType(ty))?;
    Ok(ShaderVariant {
        file,
        entry: "main",
        defines: vec![("deq_TYPE", f)],
    })
}

pub(crate) fn attn_variant(entry: &'static str, f16: bool) -> ShaderVariant {
    ShaderVariant {
        file: files::ATTN_DECODE,
        entry,
        defines: vec![("KV_IS_F16", if f16 { "true" } else { "false" })],
    }
}

/// Every specialisation the ops use (for the portability test).
pub fn shader_variants() -> Vec<ShaderVariant> {
    let mut v = Vec::new();
    for ty in GPU_TYPES {
        for file in [files::MATVEC, files::EMBED] {
            if let Ok(x) = quant_variant(file, ty) {
                v.push(x);
            }
        }
    }
    v.push(ShaderVariant::plain(files::RMSNORM, "main"));
    v.push(ShaderVariant::plain(files::ROPE, "main"));
    v.push(ShaderVariant::plain(files::GLU, "swiglu"));
    v.push(ShaderVariant::plain(files::GLU, "geglu"));
    v.push(ShaderVariant::plain(files::ADD, "main"));
    v.push(ShaderVariant::plain(files::SOFTMAX, "main"));
    v.push(ShaderVariant::plain(files::ARGMAX, "main"));
    for f16 in [false, true] {
        v.push(attn_variant("chunk", f16));
        v.push(attn_variant("combine", f16));
    }
    v
}

/// Compute pipelines by [`ShaderVariant`].
#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<ShaderVariant, wgpu::ComputePipeline>>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl GpuContext {
    /// The cached pipeline of `variant`, compiling it on first use. Shader
    /// and pipeline validation errors are captured and returned.
    pub(crate) fn pipeline(&self, variant: &ShaderVariant) -> Result<wgpu::ComputePipeline> {
        if let Ok(m) = self.pipelines.map.lock()
            && let Some(p) = m.get(variant)
        {
            return Ok(p.clone());
        }
        let label = variant.label();
        let src = variant.source();
        let err = |message: String, _oom: bool| WgpuError::Shader {
            shader: variant.file.name.to_string(),
            entry: variant.entry.to_string(),
            message,
        };
        let pipeline = self.scoped(
            || {
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&label),
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    });
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&label),
                        layout: None,
                        module: &module,
                        entry_point: Some(variant.entry),
                        compilation_options: wgpu::PipelineCompilationOptions::default(),
                        cache: None,
                    })
            },
            err,
        )?;
        if let Ok(mut m) = self.pipelines.map.lock() {
            m.insert(variant.clone(), pipeline.clone());
        }
        Ok(pipeline)
    }

    /// Number of compiled pipelines in the cache.
    pub fn cached_pipelines(&self) -> usize {
        self.pipelines.len()
    }
}
