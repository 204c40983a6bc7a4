//! WGSL sources, their specialisations and the compute-pipeline cache.
//!
//! Shaders live in the repository's `shaders/` directory and are compiled in
//! with `include_str!`. A [`ShaderVariant`] is a shader, an optional suffix
//! file, an entry point and a list of text substitutions (`deq_TYPE` →
//! `deq_q4_k`, `KV_IS_F16` → `true`); matvec/matmul/embedding shaders are
//! prefixed with `quant.wgsl` (byte access + per-type dequantisation), and
//! matvec takes its entry point from a suffix: `matvec_reduce_wg.wgsl`
//! (shared memory, everywhere) or `matvec_reduce_sg.wgsl` (subgroupAdd, only
//! on devices with the SUBGROUP feature). [`shader_variants`] lists every
//! specialisation the ops can ask for, so the portability test can check
//! each one with naga. Pipelines are created once per
//! (shader, entry point, substitutions) key and cached in the context.

use std::collections::HashMap;
use std::sync::Mutex;

use zeta_gguf::GgmlType;
use zeta_tensor::cpu::kernels::DotOrder;

use crate::context::GpuContext;
use crate::error::{Result, WgpuError};

/// `shaders/quant.wgsl`: byte access and per-type dequantisation.
pub const QUANT: &str = include_str!("../../../shaders/quant.wgsl");
/// `shaders/f16.wgsl`: exact f32 → f16 conversion.
pub const F16: &str = include_str!("../../../shaders/f16.wgsl");
/// `shaders/f16.wgsl` then `shaders/q8.wgsl`: writing 8-bit activations.
pub const F16_Q8: &str = concat!(
    include_str!("../../../shaders/f16.wgsl"),
    "\n",
    include_str!("../../../shaders/q8.wgsl")
);

/// `shaders/f16.wgsl` then `shaders/exact.wgsl`: exact arithmetic
/// (`fma_rn`, float-float sums, correctly rounded sqrt, ggml's expf);
/// variants substitute `FMA_FUSED_V` and `F16_UNPACK_V` (the context's
/// probes, [`ShaderVariant::source_for`]).
pub const F16_EXACT: &str = concat!(
    include_str!("../../../shaders/f16.wgsl"),
    "\n",
    include_str!("../../../shaders/exact.wgsl")
);
/// [`F16_EXACT`] then `shaders/q8.wgsl`.
pub const F16_EXACT_Q8: &str = concat!(
    include_str!("../../../shaders/f16.wgsl"),
    "\n",
    include_str!("../../../shaders/exact.wgsl"),
    "\n",
    include_str!("../../../shaders/q8.wgsl")
);
/// [`QUANT`] then [`F16_EXACT_Q8`]: the exact matmul's prelude.
pub const QUANT_EXACT: &str = concat!(
    include_str!("../../../shaders/quant.wgsl"),
    "\n",
    include_str!("../../../shaders/f16.wgsl"),
    "\n",
    include_str!("../../../shaders/exact.wgsl"),
    "\n",
    include_str!("../../../shaders/q8.wgsl")
);

/// A shader file: name, source, and the shared code prepended to it.
/// Compared and hashed by name alone (names are unique): the pipeline cache
/// is looked up on every dispatch, and hashing the sources cost ~10 us each.
#[derive(Debug, Clone, Copy)]
pub struct ShaderFile {
    /// File stem, e.g. "matvec".
    pub name: &'static str,
    /// The WGSL text (a template if it has substitution tokens).
    pub source: &'static str,
    /// Shared WGSL prepended to the source ([`QUANT`], [`F16`], [`F16_Q8`] or "").
    pub prelude: &'static str,
}

impl PartialEq for ShaderFile {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ShaderFile {}

impl std::hash::Hash for ShaderFile {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

macro_rules! shader {
    ($id:ident, $name:literal, $q:expr) => {
        #[doc = concat!("`shaders/", $name, ".wgsl`")]
        pub const $id: ShaderFile = ShaderFile {
            name: $name,
            source: include_str!(concat!("../../../shaders/", $name, ".wgsl")),
            prelude: $q,
        };
    };
}

/// Every shader file.
pub mod files {
    use super::ShaderFile;
    shader!(MATVEC, "matvec", super::QUANT);
    shader!(MATVEC_REDUCE_WG, "matvec_reduce_wg", "");
    shader!(MATVEC_REDUCE_SG, "matvec_reduce_sg", "");
    shader!(MATVEC_Q8, "matvec_q8", super::QUANT);
    shader!(MATVEC_Q8_REDUCE_WG, "matvec_q8_reduce_wg", "");
    shader!(MATVEC_Q8_REDUCE_SG, "matvec_q8_reduce_sg", "");
    shader!(MATMUL_Q8, "matmul_q8", "");
    shader!(MATVEC_Q8_MULTI, "matvec_q8_multi", "");
    shader!(MATMUL, "matmul", super::QUANT);
    shader!(MATMUL_TILED, "matmul_tiled", super::QUANT);
    shader!(MATMUL_REG, "matmul_reg", super::QUANT);
    shader!(MATMUL_COOP, "matmul_coop", super::QUANT);
    shader!(EMBED, "embed", super::QUANT);
    shader!(RMSNORM, "rmsnorm", super::F16_EXACT_Q8);
    shader!(ROPE, "rope", super::F16_EXACT);
    shader!(GLU, "glu", super::F16_EXACT_Q8);
    shader!(ADD, "add", "");
    shader!(SOFTMAX, "softmax", "");
    shader!(ARGMAX, "argmax", "");
    shader!(ATTN_DECODE, "attn_decode", super::F16_Q8);
    shader!(KV_STORE, "kv_store", super::F16);
    shader!(ACT_QUANT, "act_quant", super::F16_Q8);
    shader!(EXACT_EVAL, "exact_eval", super::F16_EXACT);
    shader!(F16_PROBE, "f16_probe", "");
    shader!(MATMUL_EXACT, "matmul_exact", super::QUANT_EXACT);
    shader!(MATMUL_EXACT_SG, "matmul_exact_sg", "");
    shader!(MATMUL_EXACT_TR, "matmul_exact_tr", "");
    shader!(MATMUL_EXACT_COOP, "matmul_exact_coop", "");
    shader!(ATTN_EXACT, "attn_exact", super::F16_EXACT_Q8);
}

/// One specialisation of a shader: the pipeline-cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShaderVariant {
    /// The shader file.
    pub file: ShaderFile,
    /// A file appended after it (matvec's reduction/entry point).
    pub suffix: Option<ShaderFile>,
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
            suffix: None,
            entry,
            defines: Vec::new(),
        }
    }

    /// Whether the variant uses cooperative matrices and f16 (device
    /// features EXPERIMENTAL_COOPERATIVE_MATRIX and SHADER_F16; SPIR-V only).
    pub fn needs_coop(&self) -> bool {
        self.file == files::MATMUL_COOP || self.suffix == Some(files::MATMUL_EXACT_COOP)
    }

    /// The workgroup memory the variant may use (bytes): 16 KiB, half of
    /// what Metal guarantees, for all but the cooperative-matrix matmul
    /// (Vulkan only) and the weight-group kernels that stage their input's
    /// RMSNorm (`*_norm`, a row of up to 8192 8-bit activations next to the
    /// kernel's own term store), which may use Metal's and Vulkan's
    /// guaranteed 32 KiB: contexts take those only where the device allows
    /// [`WORKGROUP_BYTES_LARGE`] (`GpuContext::can_rms_norm_matmul_exact_multi`).
    pub fn workgroup_budget(&self) -> u32 {
        if self.needs_coop() || self.entry.ends_with("_norm") {
            WORKGROUP_BYTES_LARGE
        } else {
            WORKGROUP_BYTES
        }
    }

    /// Whether the variant uses subgroup operations (device feature SUBGROUP).
    pub fn needs_subgroups(&self) -> bool {
        self.suffix == Some(files::MATVEC_REDUCE_SG)
            || self.suffix == Some(files::MATVEC_Q8_REDUCE_SG)
            || self.suffix == Some(files::MATVEC_Q8_MULTI)
            || self.suffix == Some(files::MATMUL_EXACT_SG)
    }

    /// The complete WGSL text of this variant (exact.wgsl's `fma_rn`
    /// emulated in integers, f16 scales converted with integer ops; a
    /// context compiles [`Self::source_for`] with its probes' results).
    pub fn source(&self) -> String {
        self.source_for(false, false)
    }

    /// [`Self::source`] with f16.wgsl's `FMA_FUSED_V` set to `fused_fma`
    /// ([`GpuContext::fused_fma`]) and `F16_UNPACK_V` to `f16_unpack`
    /// ([`GpuContext::f16_unpack`]).
    pub fn source_for(&self, fused_fma: bool, f16_unpack: bool) -> String {
        // `enable ...;` directives must precede every declaration, the
        // prelude's included: they go first (the suffix's too, once).
        let split = |src: &'static str| -> (Vec<&'static str>, Vec<&'static str>) {
            src.lines().partition(|l| l.starts_with("enable "))
        };
        let (mut directives, body) = split(self.file.source);
        let (suffix_directives, suffix_body) = match self.suffix {
            Some(f) => split(f.source),
            None => (Vec::new(), Vec::new()),
        };
        for d in suffix_directives {
            if !directives.contains(&d) {
                directives.push(d);
            }
        }
        let mut s = String::new();
        for d in directives {
            s.push_str(d);
            s.push('\n');
        }
        if !self.file.prelude.is_empty() {
            s.push_str(self.file.prelude);
            s.push('\n');
        }
        for l in body {
            s.push_str(l);
            s.push('\n');
        }
        if self.suffix.is_some() {
            s.push('\n');
            for l in suffix_body {
                s.push_str(l);
                s.push('\n');
            }
        }
        for (token, rep) in &self.defines {
            s = s.replace(token, rep);
        }
        let flag = |b: bool| if b { "true" } else { "false" };
        s.replace("FMA_FUSED_V", flag(fused_fma))
            .replace("F16_UNPACK_V", flag(f16_unpack))
            .replace(
                "F16_HALVES_V",
                if f16_unpack {
                    "unpack2x16float"
                } else {
                    "f16_halves"
                },
            )
    }

    /// A short label, e.g. `matvec:main[deq_TYPE=deq_q4_k]`.
    pub fn label(&self) -> String {
        let d: Vec<String> = self
            .defines
            .iter()
            .map(|(t, r)| format!("{t}={r}"))
            .collect();
        let suffix = self
            .suffix
            .map(|f| format!("+{}", f.name))
            .unwrap_or_default();
        format!("{}{suffix}:{}[{}]", self.file.name, self.entry, d.join(","))
    }
}

/// Weight types with a GPU dequantisation routine (matvec and embedding).
pub const GPU_TYPES: [GgmlType; 15] = [
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
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
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
        GgmlType::Q2_K => "deq_q2_k",
        GgmlType::Q3_K => "deq_q3_k",
        GgmlType::IQ4_NL => "deq_iq4_nl",
        GgmlType::IQ4_XS => "deq_iq4_xs",
        _ => return None,
    })
}

pub(crate) fn quant_variant(file: ShaderFile, ty: GgmlType) -> Result<ShaderVariant> {
    let f = deq_fn(ty).ok_or(WgpuError::UnsupportedType(ty))?;
    Ok(ShaderVariant {
        file,
        suffix: None,
        entry: "main",
        defines: vec![("deq_TYPE", f)],
    })
}

/// matvec.wgsl's fused quarter dot product of `ty`, if it has one (the
/// other types go through `unit_dot8`, which dequantises into `dq`).
fn fused_dot8(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "deq_q4_0_dot8",
        GgmlType::Q4_1 => "deq_q4_1_dot8",
        GgmlType::Q5_0 => "deq_q5_0_dot8",
        GgmlType::Q5_1 => "deq_q5_1_dot8",
        GgmlType::Q8_0 => "deq_q8_0_dot8",
        GgmlType::Q4_K => "deq_q4_k_dot8",
        GgmlType::Q5_K => "deq_q5_k_dot8",
        GgmlType::Q6_K => "deq_q6_k_dot8",
        _ => return None,
    })
}

pub(crate) fn matvec_variant(ty: GgmlType, subgroups: bool) -> Result<ShaderVariant> {
    let mut v = quant_variant(files::MATVEC, ty)?;
    v.defines
        .push(("DOT8", fused_dot8(ty).unwrap_or("unit_dot8")));
    v.suffix = Some(if subgroups {
        files::MATVEC_REDUCE_SG
    } else {
        files::MATVEC_REDUCE_WG
    });
    Ok(v)
}

/// matvec_q8.wgsl's unit dot product of `ty`, if the integer matvec takes it.
fn q8_dot(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "q8dot_q4_0",
        GgmlType::Q4_1 => "q8dot_q4_1",
        GgmlType::Q5_0 => "q8dot_q5_0",
        GgmlType::Q8_0 => "q8dot_q8_0",
        GgmlType::Q4_K => "q8dot_q4_k",
        GgmlType::Q6_K => "q8dot_q6_k",
        _ => return None,
    })
}

/// Whether the integer matvec (matvec_q8.wgsl) takes weights of `ty`.
pub fn has_q8_matvec(ty: GgmlType) -> bool {
    q8_dot(ty).is_some()
}

/// Invocations per row of the integer matvec that the host may choose.
pub const Q8_TPR: [u32; 4] = [8, 16, 32, 64];

pub(crate) fn matvec_q8_variant(ty: GgmlType, tpr: u32, subgroups: bool) -> Result<ShaderVariant> {
    let f = q8_dot(ty).ok_or(WgpuError::UnsupportedType(ty))?;
    let tpr = match tpr {
        8 => "8",
        16 => "16",
        32 => "32",
        64 => "64",
        _ => {
            return Err(WgpuError::Gpu(format!(
                "matvec_q8: no variant for {tpr} invocations per row"
            )));
        }
    };
    Ok(ShaderVariant {
        file: files::MATVEC_Q8,
        suffix: Some(if subgroups {
            files::MATVEC_Q8_REDUCE_SG
        } else {
            files::MATVEC_Q8_REDUCE_WG
        }),
        entry: "main",
        defines: vec![("QDOT", f), ("TPR_V", tpr)],
    })
}

/// matvec_q8.wgsl with matmul_q8.wgsl's entry point: the integer product of
/// several tokens (`tpr` ≥ 8 invocations per row).
pub(crate) fn matmul_q8_variant(ty: GgmlType, tpr: u32) -> Result<ShaderVariant> {
    let mut v = matvec_q8_variant(ty, tpr, false)?;
    if tpr < 8 {
        return Err(WgpuError::Gpu(format!(
            "matmul_q8: no variant for {tpr} invocations per row"
        )));
    }
    v.suffix = Some(files::MATMUL_Q8);
    Ok(v)
}

/// matvec_q8.wgsl with matvec_q8_multi.wgsl's entry point: several
/// matrices of a weight group in one dispatch (needs SUBGROUP).
pub(crate) fn matvec_q8_multi_variant(ty: GgmlType, tpr: u32) -> Result<ShaderVariant> {
    let mut v = matvec_q8_variant(ty, tpr, true)?;
    v.suffix = Some(files::MATVEC_Q8_MULTI);
    Ok(v)
}

pub(crate) fn attn_variant(entry: &'static str, f16: bool) -> ShaderVariant {
    ShaderVariant {
        file: files::ATTN_DECODE,
        suffix: None,
        entry,
        defines: vec![("KV_IS_F16", if f16 { "true" } else { "false" })],
    }
}

/// Weight types of matmul_exact.wgsl (those with a [`DotOrder`]).
pub fn has_exact_matmul(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q8_0
            | GgmlType::Q4_K
            | GgmlType::Q6_K
    )
}

/// matmul_exact.wgsl summing weight type `ty` in the CPU's `order`; with
/// `np` > 0, matmul_exact_sg.wgsl's entry points with at most `np` (1, 2
/// or 4) phases per row (needs SUBGROUP).
pub(crate) fn matmul_exact_variant(
    ty: GgmlType,
    order: DotOrder,
    np: u32,
) -> Result<ShaderVariant> {
    // (entry, LANE_TERM, UNIT_STEP, LANE_EXTRA, BLOCK_PART, BLOCK_PACKET, BLOCK_NSUB)
    let lanes = |term, unit, extra| ("lanes", term, unit, extra, "part_q4_0", "packet_q4_0", "1");
    let blocks = |unit, part, packet, nsub| ("blocks", "term_q4_0", unit, "0", part, packet, nsub);
    let (entry, term, unit, extra, part, packet, nsub) = match (ty, order) {
        (GgmlType::Q4_0, DotOrder::Lanes) => lanes("term_q4_0", "1", "0"),
        (GgmlType::Q4_1, DotOrder::Lanes) => lanes("term_q4_1", "1", "1"),
        (GgmlType::Q5_0, DotOrder::Lanes) => lanes("term_q5_0", "1", "0"),
        (GgmlType::Q8_0, DotOrder::Lanes) => lanes("term_q8_0", "1", "0"),
        (GgmlType::Q4_K, DotOrder::Lanes) => lanes("term_q4_k", "8", "2"),
        (GgmlType::Q6_K, DotOrder::Lanes) => lanes("term_q6_k", "8", "0"),
        (GgmlType::Q4_0, DotOrder::Block32) => blocks("1", "part_q4_0", "packet_q4_0", "1"),
        (GgmlType::Q4_K, DotOrder::Q4KGemv) => blocks("8", "part_q4_k", "packet_q4_k", "1"),
        (GgmlType::Q4_K, DotOrder::Q4KGemm) => blocks("8", "part_q4_k", "packet_q4_k", "4"),
        (GgmlType::Q6_K, DotOrder::Q6KTiled) => blocks("8", "part_q6_k", "packet_q6_k", "1"),
        _ => {
            return Err(WgpuError::UnsupportedType(ty));
        }
    };
    let np = match np {
        0 => "",
        1 => "1",
        2 => "2",
        4 => "4",
        _ => {
            return Err(WgpuError::Gpu(format!(
                "matmul_exact: no variant for {np} phases per row"
            )));
        }
    };
    let sg = !np.is_empty();
    Ok(ShaderVariant {
        file: files::MATMUL_EXACT,
        suffix: sg.then_some(files::MATMUL_EXACT_SG),
        entry: match (sg, entry) {
            (true, "lanes") => "lanes_sg",
            (true, _) => "blocks_sg",
            (false, e) => e,
        },
        defines: vec![
            ("LANE_TERM", term),
            ("UNIT_STEP", unit),
            // 32-element blocks: 8 in flight per lane; 256-element ones: 2.
            ("UNROLL_V", if unit == "1" { "8" } else { "2" }),
            // lanes_sg: per phase (np of them per row), 4 or 1 blocks.
            ("UNROLL_SG_V", if unit == "1" { "4" } else { "1" }),
            ("LANE_EXTRA", extra),
            ("BLOCK_PART", part),
            ("BLOCK_PACKET", packet),
            ("BLOCK_NSUB", nsub),
            ("NP_MAX_V", if sg { np } else { "1" }),
            // matmul_exact_sg.wgsl: the activations as Q8 words
            // (`matmul_exact_f32_variant` sets the f32 row).
            ("SG_F32_V", "false"),
            // matmul_exact.wgsl's activation reads: staged in workgroup
            // memory by matmul_exact_sg.wgsl's block orders and its lane
            // order of 256-element blocks.
            (
                "X_SRC",
                if sg && (entry == "blocks" || unit == "8") {
                    "staged"
                } else {
                    "global"
                },
            ),
        ],
    })
}

/// The one-token exact matmul of a 256-element block type that packs its
/// f32 input itself (matmul_exact_sg.wgsl with SG_F32: each chunk's
/// activations packed to Q8_K in workgroup memory): `lanes_sg` for Q4_K and
/// Q6_K in the lane order, `blocks_sg` for Q4_K in the gemv order; `None`
/// otherwise.
pub(crate) fn matmul_exact_f32_variant(ty: GgmlType, order: DotOrder) -> Option<ShaderVariant> {
    match (ty, order) {
        (GgmlType::Q4_K | GgmlType::Q6_K, DotOrder::Lanes)
        | (GgmlType::Q4_K, DotOrder::Q4KGemv) => {}
        _ => return None,
    }
    let mut v = matmul_exact_variant(ty, order, exact_np(order)).ok()?;
    for d in &mut v.defines {
        if d.0 == "SG_F32_V" {
            d.1 = "true";
        }
    }
    Some(v)
}

/// The lane order's decode kernel of matmul_exact_tr.wgsl (`lanes_tr`, or
/// `lanes_tr_multi` for a weight group) for the 32-element block types:
/// each block's eight lane terms from one invocation, handed to the chains
/// through workgroup memory; `None` for the other types and orders.
pub(crate) fn matmul_exact_tr_variant(
    ty: GgmlType,
    order: DotOrder,
    multi: bool,
) -> Option<ShaderVariant> {
    // (TERMS8, bytes per block, words its loads span)
    let (terms, bb, nw) = match (ty, order) {
        (GgmlType::Q4_0, DotOrder::Lanes) => ("terms8_q4_0", "18", "5"),
        (GgmlType::Q4_1, DotOrder::Lanes) => ("terms8_q4_1", "20", "5"),
        (GgmlType::Q5_0, DotOrder::Lanes) => ("terms8_q5_0", "22", "6"),
        (GgmlType::Q8_0, DotOrder::Lanes) => ("terms8_q8_0", "34", "9"),
        _ => return None,
    };
    let mut v = matmul_exact_variant(ty, order, 0).ok()?;
    v.suffix = Some(files::MATMUL_EXACT_TR);
    v.entry = if multi { "lanes_tr_multi" } else { "lanes_tr" };
    // Q8_0's lane sums reach 4 x 128 x 127: a word each; the others' fit
    // 16 bits (a slot of 5 or 7 words).
    let pack = ty != GgmlType::Q8_0;
    v.defines.push(("TERMS8", terms));
    // The activations' workgroup copy (3 vec4s a unit): a chunk's 32 units
    // staged from XQI; the `*_norm` entries hold the whole row instead
    // (`matmul_exact_tr_norm_variant`).
    v.defines.push(("XSH_V", "96"));
    v.defines.push(("XSH_ROW_V", "false"));
    // `stage_norm(tid);` in the `*_norm` entries only.
    v.defines.push(("STAGE_NORM_V", ""));
    v.defines.push(("TR_BB_V", bb));
    v.defines.push(("TR_NW_V", nw));
    v.defines
        .push(("TR_PACK_V", if pack { "true" } else { "false" }));
    Some(v)
}

/// Workgroup memory a variant may use ([`ShaderVariant::workgroup_budget`]).
pub const WORKGROUP_BYTES: u32 = 16 * 1024;
/// The larger budget of some variants: Metal's and Vulkan's guaranteed 32 KiB.
pub const WORKGROUP_BYTES_LARGE: u32 = 32 * 1024;

/// matmul_exact_tr.wgsl's weight-group kernels of `ty` in `order`:
/// `lanes_tr_multi` and the Q/K/V group with RoPE, `lanes_tr_multi_rope`.
fn tr_group_variants(ty: GgmlType, order: DotOrder) -> Option<[ShaderVariant; 2]> {
    let multi = matmul_exact_tr_variant(ty, order, true)?;
    let mut rope = multi.clone();
    rope.entry = "lanes_tr_multi_rope";
    Some([multi, rope])
}

/// The most columns the `*_norm` group entries take (their workgroup copy
/// of the activations: 12 words a 32-column unit, 12 KiB at this size).
pub(crate) const NORM_STAGE_MAX_COLS: u64 = 8192;

/// `v`, a `lanes_tr_multi` or `lanes_tr_multi_rope` variant, as its
/// `*_norm` entry for rows of `n_cols` columns (the RMSNorm and 8-bit pack
/// of the input in every workgroup; its copy sized for 32-column units up
/// to the next power of two, at least 32); `None` for other entries and
/// rows over [`NORM_STAGE_MAX_COLS`].
pub(crate) fn matmul_exact_tr_norm_variant(
    mut v: ShaderVariant,
    n_cols: u64,
) -> Option<ShaderVariant> {
    // 3 vec4s a unit.
    let vec4s = match n_cols.div_ceil(32) {
        0..=32 => "96",
        33..=64 => "192",
        65..=128 => "384",
        129..=256 => "768",
        _ => return None,
    };
    v.entry = match v.entry {
        "lanes_tr_multi" => "lanes_tr_multi_norm",
        "lanes_tr_multi_rope" => "lanes_tr_multi_rope_norm",
        _ => return None,
    };
    for d in &mut v.defines {
        match d.0 {
            "XSH_V" => d.1 = vec4s,
            "XSH_ROW_V" => d.1 = "true",
            "STAGE_NORM_V" => d.1 = "stage_norm(tid);",
            _ => {}
        }
    }
    Some(v)
}

/// [`matmul_exact_variant`] with subgroups for the 2 or 3 matrices of a
/// weight group, one token (matmul_exact_sg.wgsl `*_multi`).
pub(crate) fn matmul_exact_multi_variant(ty: GgmlType, order: DotOrder) -> Result<ShaderVariant> {
    let mut v = matmul_exact_variant(ty, order, EXACT_MULTI_NP)?;
    v.entry = if v.entry == "lanes_sg" {
        "lanes_sg_multi"
    } else {
        "blocks_sg_multi"
    };
    Ok(v)
}

/// [`matmul_exact_variant`] with one invocation per output (`tile_*`, for
/// prompts; no subgroups).
pub(crate) fn matmul_exact_tile_variant(ty: GgmlType, order: DotOrder) -> Result<ShaderVariant> {
    let mut v = matmul_exact_variant(ty, order, 0)?;
    v.entry = if v.entry == "lanes" {
        "tile_lanes"
    } else {
        "tile_blocks"
    };
    Ok(v)
}

/// matmul_exact_coop.wgsl for a prompt run in `order`: the one-chain orders
/// whose chunks are exact integer dot products (Q4_0's repacked gemm, Q4_K's
/// repacked gemm, Q6_K's tiled order), `None` for the others. Needs
/// [`GpuContext::use_coop`](crate::GpuContext::use_coop).
pub(crate) fn matmul_exact_coop_variant(ty: GgmlType, order: DotOrder) -> Option<ShaderVariant> {
    // (COOP_WR, COOP_W, COOP_RI, COOP_TI, COOP_STEP, COOP_COLS, columns a chunk)
    let (wr, w, ri, ti, step, cols, ck) = match (ty, order) {
        (GgmlType::Q4_0, DotOrder::Block32) => (
            "cwr_q4_0",
            "cw_q4_0",
            "cri_q4_0",
            "cti_q4_0",
            "cstep_q4_0",
            "cols_q4_0",
            "32",
        ),
        (GgmlType::Q4_K, DotOrder::Q4KGemm) => (
            "cwr_q4_k",
            "cw_q4_k",
            "cri_q4_k",
            "cti_q4_k",
            "cstep_q4_k",
            "coop_cols",
            "32",
        ),
        (GgmlType::Q6_K, DotOrder::Q6KTiled) => (
            "cwr_q6_k",
            "cw_q6_k",
            "cri_q6_k",
            "cti_q6_k",
            "cstep_q6_k",
            "coop_cols",
            "16",
        ),
        _ => return None,
    };
    let mut v = matmul_exact_variant(ty, order, 0).ok()?;
    v.suffix = Some(files::MATMUL_EXACT_COOP);
    v.entry = "coop_blocks";
    v.defines.extend([
        ("COOP_WR", wr),
        ("COOP_W", w),
        ("COOP_RI", ri),
        ("COOP_TI", ti),
        ("COOP_STEP", step),
        ("COOP_COLS", cols),
        ("COOP_CK_V", ck),
    ]);
    Some(v)
}

/// Phases per row of the `*_multi` exact kernels (decode orders only).
pub(crate) const EXACT_MULTI_NP: u32 = 4;

/// Phases per row of matmul_exact_sg.wgsl for `order` (H100, matmul_exact
/// in gpu_bench and tg128): 4 beat 2 and 1 for the lane and one-chain orders
/// (llama-8b Q4_0 decode 84 / 72 / 61 t/s); the Q4_K gemm order, four
/// packets per block, does best with 2 (llama-1b Q4_K_M pp512 1973 t/s;
/// 1457 with 4, 1844 without subgroups).
pub(crate) fn exact_np(order: DotOrder) -> u32 {
    match order {
        DotOrder::Q4KGemm => 2,
        _ => 4,
    }
}

/// Every specialisation the ops use (for the portability test).
pub fn shader_variants() -> Vec<ShaderVariant> {
    let mut v = Vec::new();
    for ty in GPU_TYPES {
        for sg in [false, true] {
            if let Ok(x) = matvec_variant(ty, sg) {
                v.push(x);
            }
        }
        for tpr in Q8_TPR {
            for sg in [false, true] {
                if let Ok(x) = matvec_q8_variant(ty, tpr, sg) {
                    v.push(x);
                }
            }
            if let Ok(x) = matmul_q8_variant(ty, tpr) {
                v.push(x);
            }
            if let Ok(x) = matvec_q8_multi_variant(ty, tpr) {
                v.push(x);
            }
        }
        for file in [
            files::MATMUL,
            files::MATMUL_TILED,
            files::MATMUL_REG,
            files::MATMUL_COOP,
            files::EMBED,
        ] {
            if let Ok(x) = quant_variant(file, ty) {
                v.push(x);
            }
        }
    }
    for (file, entries) in [
        (
            files::RMSNORM,
            &[
                "main",
                "main_scalar",
                "inplace",
                "inplace_add",
                "norm_pack_q8",
                "post_add_norm_pack_q8",
            ][..],
        ),
        (
            files::ROPE,
            &["main", "inplace", "rope_kv", "norm_rope_kv"][..],
        ),
        (
            files::GLU,
            &[
                "swiglu",
                "geglu",
                "swiglu_assign",
                "geglu_assign",
                "swiglu_assign_q8",
                "geglu_assign_q8",
            ][..],
        ),
        (
            files::ADD,
            &[
                "main",
                "mul",
                "scale",
                "add_assign",
                "add_rows",
                "scale_assign",
                "softcap_assign",
            ][..],
        ),
    ] {
        for e in entries {
            v.push(ShaderVariant::plain(file, e));
        }
    }
    v.push(ShaderVariant::plain(files::SOFTMAX, "main"));
    v.push(ShaderVariant::plain(files::ARGMAX, "main"));
    v.push(ShaderVariant::plain(files::ARGMAX, "partial"));
    v.push(ShaderVariant::plain(files::ARGMAX, "finish"));
    v.push(ShaderVariant::plain(files::KV_STORE, "main"));
    v.push(ShaderVariant::plain(files::ACT_QUANT, "main"));
    v.push(ShaderVariant::plain(files::ACT_QUANT, "pack_q8"));
    for f16 in [false, true] {
        for e in ["chunk", "combine", "chunk_pack", "combine_pack"] {
            v.push(attn_variant(e, f16));
        }
    }
    v.push(ShaderVariant::plain(files::EXACT_EVAL, "main"));
    v.push(ShaderVariant::plain(files::F16_PROBE, "main"));
    v.push(ShaderVariant::plain(files::ATTN_EXACT, "scores"));
    v.push(ShaderVariant::plain(files::ATTN_EXACT, "kqv"));
    v.push(ShaderVariant::plain(files::ATTN_EXACT, "kqv_block"));
    v.push(ShaderVariant::plain(files::ATTN_EXACT, "scores_rows"));
    v.push(ShaderVariant::plain(files::ATTN_EXACT, "softmax"));
    v.push(ShaderVariant::plain(files::ATTN_EXACT, "scores_dec"));
    v.push(ShaderVariant::plain(files::ATTN_EXACT, "softmax_kqv"));
    for ty in GPU_TYPES {
        for sg in [false, true] {
            for x in [false, true]
                .into_iter()
                .flat_map(|coop| matmul_exact_variants(ty, sg, coop))
            {
                if !v.contains(&x) {
                    v.push(x);
                }
            }
        }
    }
    v
}

/// The exact-matmul specialisations a device uses for weights of `ty`:
/// per `DotOrder`, the one-token kernel — matmul_exact_tr.wgsl's for the
/// 32-element types' lane order, else the subgroup kernel where `sg`
/// ([`GpuContext::exact_sg`]) or the plain one — and, where `sg`, for the
/// one-token orders its weight-group form and the Q/K/V group with RoPE;
/// and the prompt kernel: cooperative matrices where `coop`
/// ([`GpuContext::use_coop`]) and the order has them, else one invocation
/// per output.
pub(crate) fn matmul_exact_variants(ty: GgmlType, sg: bool, coop: bool) -> Vec<ShaderVariant> {
    let mut v = Vec::new();
    for order in [
        DotOrder::Lanes,
        DotOrder::Block32,
        DotOrder::Q4KGemv,
        DotOrder::Q4KGemm,
        DotOrder::Q6KTiled,
    ] {
        if let Some(f) = matmul_exact_f32_variant(ty, order).filter(|_| sg) {
            v.push(f);
        }
        if let Some(tr) = matmul_exact_tr_variant(ty, order, false) {
            v.push(tr);
            if let Some(groups) = tr_group_variants(ty, order).filter(|_| sg) {
                // The weight group, and the Q/K/V group with RoPE; both
                // with the RMSNorm staged (the largest copy).
                for g in &groups {
                    v.extend(matmul_exact_tr_norm_variant(g.clone(), NORM_STAGE_MAX_COLS));
                }
                v.extend(groups);
            }
        } else {
            v.extend(matmul_exact_variant(
                ty,
                order,
                if sg { exact_np(order) } else { 0 },
            ));
            if sg && matches!(order, DotOrder::Lanes | DotOrder::Q4KGemv) {
                // The weight group, and the Q/K/V group with RoPE.
                if let Ok(multi) = matmul_exact_multi_variant(ty, order) {
                    let mut rope = multi.clone();
                    rope.entry = if multi.entry == "lanes_sg_multi" {
                        "lanes_sg_multi_rope"
                    } else {
                        "blocks_sg_multi_rope"
                    };
                    v.push(multi);
                    v.push(rope);
                }
            }
        }
        match matmul_exact_coop_variant(ty, order).filter(|_| coop) {
            Some(c) => v.push(c),
            None => v.extend(matmul_exact_tile_variant(ty, order)),
        }
    }
    v
}

/// A multiply-rotate hasher (the `FxHasher` of rustc) for the caches looked
/// up on every dispatch: keys are handles and short names, never untrusted
/// input, and SipHash's cost showed in the host time per dispatch.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let (words, rest) = bytes.as_chunks::<8>();
        for w in words {
            self.write_u64(u64::from_le_bytes(*w));
        }
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(tail) ^ rest.len() as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// A hash map with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Compute pipelines by [`ShaderVariant`].
#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<FastMap<ShaderVariant, wgpu::ComputePipeline>>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Drops every pipeline (after the probes: they were compiled before
    /// `FMA_FUSED_V` and `F16_UNPACK_V` were known).
    pub(crate) fn clear(&self) {
        if let Ok(mut m) = self.map.lock() {
            m.clear();
        }
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
        let src = variant.source_for(self.fused_fma(), self.f16_unpack());
        let err = |message: String, _oom: bool| WgpuError::Shader {
            shader: variant.file.name.to_string(),
            entry: variant.entry.to_string(),
            message,
        };
        let pipeline = self.scoped(
            || {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(&label),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                };
                let module = match self.runtime_checks() {
                    Some(checks) => {
                        // SAFETY: wgpu requires that trusted shaders neither
                        // index out of bounds nor loop forever. Every kernel's
                        // buffer and workgroup-array indices are bounded by its
                        // parameters, which the op checks against the bound
                        // buffers' lengths before recording the dispatch
                        // (`ops`: `want`, `shape`), and every loop's trip count
                        // is bounded by those parameters. On Vulkan the
                        // driver's robust buffer access still bounds buffer
                        // accesses. Measured on the H100: prefill 2.4-2.6x
                        // and decode 1.1x faster than with wgpu's injected
                        // index clamps and loop counters.
                        unsafe { self.device.create_shader_module_trusted(desc, checks) }
                    }
                    None => self.device.create_shader_module(desc),
                };
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&label),
                        layout: None,
                        module: &module,
                        entry_point: Some(variant.entry),
                        // Every kernel writes its workgroup memory before reading it.
                        compilation_options: wgpu::PipelineCompilationOptions {
                            zero_initialize_workgroup_memory: false,
                            ..Default::default()
                        },
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

    /// The runtime checks shaders are compiled with: `None` = wgpu's
    /// defaults (index clamping, loop bounding), with `ZETA_GPU_CHECKED=1`
    /// (for debugging kernels); otherwise none (see the SAFETY note in
    /// [`pipeline`](Self::pipeline)).
    fn runtime_checks(&self) -> Option<wgpu::ShaderRuntimeChecks> {
        match std::env::var("ZETA_GPU_CHECKED").as_deref() {
            Ok("1") => None,
            Ok("bounds") => Some(wgpu::ShaderRuntimeChecks {
                bounds_checks: true,
                ..wgpu::ShaderRuntimeChecks::unchecked()
            }),
            _ => Some(wgpu::ShaderRuntimeChecks::unchecked()),
        }
    }

    /// Whether the exact matmul uses matmul_exact_sg.wgsl here: subgroups
    /// on, of 8 invocations at least (lavapipe: 8, NVIDIA: 32).
    pub fn exact_sg(&self) -> bool {
        self.use_subgroups() && self.info().subgroup_size.0 >= 8
    }

    /// Compiles (and caches) every pipeline the ops can use on this device
    /// for weights of `types` (all [`GPU_TYPES`] when empty), so the first
    /// token does not pay for shader compilation. Returns the number compiled
    /// or found cached.
    pub fn precompile(&self, types: &[GgmlType]) -> Result<usize> {
        let mut n = 0;
        for v in shader_variants() {
            let reduce = v.suffix.is_some_and(|f| {
                [
                    files::MATVEC_REDUCE_WG,
                    files::MATVEC_REDUCE_SG,
                    files::MATVEC_Q8_REDUCE_WG,
                    files::MATVEC_Q8_REDUCE_SG,
                ]
                .contains(&f)
            });
            if reduce && v.needs_subgroups() != self.use_subgroups() {
                continue; // only the matvec reduction this device uses
            }
            if v.needs_subgroups() && !self.use_subgroups() {
                continue;
            }
            if v.needs_coop() && !self.use_coop() {
                continue;
            }
            if v.workgroup_budget() > self.info().max_compute_workgroup_storage_size {
                continue; // a variant this device's kernel choice never takes
            }
            if v.file == files::F16_PROBE && !self.f16_unpack() {
                continue; // the probe's kernel: built only where it passed
            }
            let ty_ok = if v.file == files::MATMUL_EXACT {
                // The exact matmuls of the given types (all when none) that
                // this device's kernel choice uses.
                let all = if types.is_empty() {
                    &GPU_TYPES[..]
                } else {
                    types
                };
                all.iter().any(|&t| {
                    matmul_exact_variants(t, self.exact_sg(), self.use_coop()).contains(&v)
                })
            } else {
                match v
                    .defines
                    .iter()
                    .find(|(t, _)| *t == "deq_TYPE" || *t == "QDOT")
                {
                    Some((_, f)) => {
                        types.is_empty()
                            || types
                                .iter()
                                .any(|&t| deq_fn(t) == Some(*f) || q8_dot(t) == Some(*f))
                    }
                    None => true,
                }
            };
            if ty_ok {
                self.pipeline(&v)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Compiles the staged-norm weight-group kernels (`*_norm`, plain and
    /// with RoPE) of `types` for rows of `cols` columns, where this device
    /// takes them (subgroup exact kernels, 32 KiB of workgroup memory; rows
    /// of at most [`NORM_STAGE_MAX_COLS`]); returns how many.
    pub fn precompile_staged_norm(&self, types: &[GgmlType], cols: &[u64]) -> Result<usize> {
        if !self.exact_sg()
            || self.info().max_compute_workgroup_storage_size < WORKGROUP_BYTES_LARGE
        {
            return Ok(0);
        }
        let mut seen = Vec::new();
        for &ty in types {
            let Some(groups) = tr_group_variants(ty, DotOrder::Lanes) else {
                continue;
            };
            for &c in cols {
                for g in &groups {
                    if let Some(v) = matmul_exact_tr_norm_variant(g.clone(), c)
                        && !seen.contains(&v)
                    {
                        self.pipeline(&v)?;
                        seen.push(v);
                    }
                }
            }
        }
        Ok(seen.len())
    }

    /// Number of compiled pipelines in the cache.
    pub fn cached_pipelines(&self) -> usize {
        self.pipelines.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::context::GpuContext;

    fn ctx() -> Option<GpuContext> {
        match GpuContext::new() {
            Ok(c) => Some(c),
            Err(WgpuError::NoAdapter { .. }) => {
                assert_ne!(
                    std::env::var("ZETA_REQUIRE_GPU").as_deref(),
                    Ok("1"),
                    "no GPU adapter"
                );
                println!("SKIP: no GPU adapter");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn broken_shader_is_a_typed_error_not_a_panic() {
        let Some(ctx) = ctx() else { return };
        let broken = ShaderFile {
            name: "broken",
            source: "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
            prelude: "",
        };
        let err = ctx
            .pipeline(&ShaderVariant::plain(broken, "main"))
            .unwrap_err();
        assert!(
            matches!(err, WgpuError::Shader { ref shader, .. } if shader == "broken"),
            "{err}"
        );
        let missing_entry = ctx.pipeline(&ShaderVariant::plain(files::ADD, "nope"));
        assert!(matches!(missing_entry, Err(WgpuError::Shader { .. })));
        // Nothing leaked into the uncaptured-error handler, the device still works.
        ctx.check().unwrap();
        assert!(
            ctx.pipeline(&ShaderVariant::plain(files::ADD, "main"))
                .is_ok()
        );
        assert_eq!(ctx.cached_pipelines(), 1);
    }

    #[test]
    fn device_loss_is_reported() {
        let Some(ctx) = ctx() else { return };
        ctx.device.destroy();
        let _ = ctx.device.poll(wgpu::PollType::Poll);
        let x = ctx.upload_f32(&[1.0]);
        let r = x.and_then(|x| ctx.read_f32(&x));
        assert!(r.is_err(), "read after destroy succeeded");
        println!("after destroy: {}", r.unwrap_err());
    }
}
