//! Device setup: adapter choice, device creation, error capture, [`GpuInfo`].
//!
//! [`GpuContext::new`] enumerates every adapter wgpu can see, ranks them
//! (discrete > integrated > virtual > other > software/CPU; native APIs before
//! GL) and picks the best, or the first whose name contains the `ZETA_ADAPTER`
//! environment variable (case-insensitive) / [`GpuOptions::adapter`]. The
//! device is requested with the adapter's own limits and with `SHADER_F16`,
//! `SUBGROUP` and `TIMESTAMP_QUERY` only when the adapter offers them; if that
//! request fails it is retried with default limits and no optional features.
//!
//! Errors never panic: an uncaptured-error handler records asynchronous errors
//! and a device-lost callback records loss; [`GpuContext::check`] turns them
//! into [`WgpuError`]s and every op/read-back calls it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::error::{Result, WgpuError};
use crate::pipeline::PipelineCache;

/// The largest buffer part bound as one storage binding. Kept below 2^31 so
/// that byte offsets computed in the shaders fit a `u32`.
const MAX_PART_BYTES: u64 = (1 << 31) - 4;

/// What kind of adapter this is (wgpu's `DeviceType`, without naming wgpu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuDeviceType {
    /// A discrete GPU.
    Discrete,
    /// A GPU integrated with the CPU.
    Integrated,
    /// A virtualised GPU.
    Virtual,
    /// A software rasteriser running on the CPU (lavapipe, llvmpipe, WARP).
    Cpu,
    /// Anything else.
    Other,
}

impl GpuDeviceType {
    fn from_wgpu(t: wgpu::DeviceType) -> Self {
        match t {
            wgpu::DeviceType::DiscreteGpu => Self::Discrete,
            wgpu::DeviceType::IntegratedGpu => Self::Integrated,
            wgpu::DeviceType::VirtualGpu => Self::Virtual,
            wgpu::DeviceType::Cpu => Self::Cpu,
            wgpu::DeviceType::Other => Self::Other,
        }
    }

    /// Preference rank, higher is better.
    fn rank(self) -> u32 {
        match self {
            Self::Discrete => 4,
            Self::Integrated => 3,
            Self::Virtual => 2,
            Self::Other => 1,
            Self::Cpu => 0,
        }
    }
}

/// Description of an adapter/device for `zeta info --gpu`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInfo {
    /// Adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Graphics API: "vulkan", "metal", "dx12", "gl".
    pub backend: String,
    /// Device type.
    pub device_type: GpuDeviceType,
    /// PCI vendor id (0 if unknown).
    pub vendor: u32,
    /// PCI device id (0 if unknown).
    pub device_id: u32,
    /// Driver name.
    pub driver: String,
    /// Driver version/details.
    pub driver_info: String,
    /// Optional features that are enabled (of "shader-f16", "subgroup", "timestamp-query").
    pub features: Vec<String>,
    /// Largest storage-buffer binding in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer in bytes.
    pub max_buffer_size: u64,
    /// Workgroup (shared) memory per workgroup in bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Storage buffers per shader stage.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Smallest and largest subgroup size the adapter reports.
    pub subgroup_size: (u32, u32),
    /// Cooperative-matrix (tensor core) shapes the adapter reports, as
    /// `MxNxK A-type->C-type`, and whether wgpu offers the (experimental)
    /// feature for them; not used by the kernels yet.
    pub cooperative_matrix: (Vec<String>, bool),
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "adapter:   {} ({:?}, {})",
            self.name, self.device_type, self.backend
        )?;
        writeln!(f, "driver:    {} {}", self.driver, self.driver_info)?;
        writeln!(f, "features:  {}", self.features.join(", "))?;
        writeln!(
            f,
            "limits:    binding {} MiB, buffer {} MiB, shared {} KiB, {} invocations/wg, subgroup {}..{}",
            self.max_storage_buffer_binding_size >> 20,
            self.max_buffer_size >> 20,
            self.max_compute_workgroup_storage_size >> 10,
            self.max_compute_invocations_per_workgroup,
            self.subgroup_size.0,
            self.subgroup_size.1
        )?;
        let (shapes, offered) = &self.cooperative_matrix;
        if !shapes.is_empty() || *offered {
            writeln!(
                f,
                "coop-mat:  {} (wgpu feature {})",
                if shapes.is_empty() {
                    "-".to_string()
                } else {
                    shapes.join(", ")
                },
                if *offered { "offered" } else { "not offered" }
            )?;
        }
        Ok(())
    }
}

/// Options for [`GpuContext::with_options`].
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name to use. `None`: the
    /// best-ranked adapter (or `ZETA_ADAPTER` when [`GpuContext::new`] is used).
    pub adapter: Option<String>,
    /// Do not request the optional features (SHADER_F16, SUBGROUP,
    /// TIMESTAMP_QUERY) even when present.
    pub no_optional_features: bool,
    /// Convert f16 block scales with integer ops even where the device's
    /// `unpack2x16float` passes the probe ([`GpuContext::f16_unpack`];
    /// for tests of that path; `ZETA_GPU_NO_F16_UNPACK=1` does the same).
    pub no_f16_unpack: bool,
}

/// A wgpu device and queue plus everything the kernels need: the pipeline
/// cache, the split size for large weights and the captured-error state.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) pipelines: PipelineCache,
    info: GpuInfo,
    /// Largest buffer part (bytes) a weight is split into.
    pub(crate) max_part_bytes: u64,
    pub(crate) max_workgroups: u32,
    /// Bytes between dispatch-parameter slots in a uniform buffer
    /// (`PARAM_BYTES` rounded up to the device's uniform offset alignment).
    pub(crate) param_stride: u64,
    use_subgroups: bool,
    /// The optional features asked for and enabled.
    features: wgpu::Features,
    /// Whether the prefill matmul uses cooperative matrices (matmul_coop.wgsl).
    use_coop: bool,
    /// Whether WGSL's `fma` is a fused multiply-add on this device (probed
    /// at creation; exact.wgsl emulates it in integers where it is not).
    fused_fma: bool,
    /// Whether `unpack2x16float` gives every f16's exact f32 on this device
    /// (probed at creation; the exact matvecs use it for block scales).
    f16_unpack: bool,
    /// ggml's f16 GELU table (glu.wgsl), uploaded on first use.
    gelu: std::sync::OnceLock<crate::tensor::GpuTensor>,
    /// Bytes written with `queue.write_buffer` since the last flush.
    pub(crate) staged: AtomicU64,
    /// Bytes of the storage buffers this context allocated and still holds.
    pub(crate) mem: Arc<crate::tensor::MemCounter>,
    /// Scratch tensors by purpose and thread (see `GpuContext::scratch`).
    #[allow(clippy::type_complexity)]
    pub(crate) scratch: Mutex<
        std::collections::HashMap<(&'static str, std::thread::ThreadId), crate::tensor::GpuTensor>,
    >,
    /// Uniform buffers of dispatch parameters, reused by every batch: a
    /// batch's k-th block of slots is `param_pool[k]`. Each batch writes its
    /// slots at submit, so the queue orders every batch's writes right
    /// before its own commands.
    pub(crate) param_pool: Mutex<Vec<wgpu::Buffer>>,
    /// The read-back staging buffer (MAP_READ), reused by every read and
    /// grown when too small: a new one per read cost a buffer creation and
    /// destruction on every decode step's logits.
    pub(crate) staging: Mutex<Option<wgpu::Buffer>>,
    /// Held from a batch's parameter writes to its submission.
    pub(crate) submit_lock: Mutex<()>,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("info", &self.info)
            .field("max_part_bytes", &self.max_part_bytes)
            .finish_non_exhaustive()
    }
}

/// Vulkan, Metal and DX12 by default; `WGPU_BACKEND` (wgpu's own variable,
/// e.g. `gl`) overrides.
fn new_instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() || desc.backends.is_empty() {
        desc.backends = wgpu::Backends::PRIMARY;
    }
    wgpu::Instance::new(desc)
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 1,
        _ => 0,
    }
}

fn info_of(adapter: &wgpu::Adapter, features: wgpu::Features, limits: &wgpu::Limits) -> GpuInfo {
    let a = adapter.get_info();
    let mut names = Vec::new();
    if features.contains(wgpu::Features::SHADER_F16) {
        names.push("shader-f16".to_string());
    }
    if features.contains(wgpu::Features::SUBGROUP) {
        names.push("subgroup".to_string());
    }
    if features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        names.push("timestamp-query".to_string());
    }
    GpuInfo {
        name: a.name,
        backend: a.backend.to_string(),
        device_type: GpuDeviceType::from_wgpu(a.device_type),
        vendor: a.vendor,
        device_id: a.device,
        driver: a.driver,
        driver_info: a.driver_info,
        features: names,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
        subgroup_size: (a.subgroup_min_size, a.subgroup_max_size),
        cooperative_matrix: (
            adapter
                .cooperative_matrix_properties()
                .iter()
                .map(|p| {
                    format!(
                        "{}x{}x{} {:?}->{:?}",
                        p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type
                    )
                })
                .collect(),
            adapter
                .features()
                .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
        ),
    }
}

/// Describes every adapter wgpu can see (with the adapter's own limits and
/// the optional features it offers), best first.
pub fn list_adapters() -> Vec<GpuInfo> {
    let instance = new_instance();
    let adapters = ranked_adapters(&instance);
    adapters
        .iter()
        .map(|a| info_of(a, a.features() & optional_features(), &a.limits()))
        .collect()
}

/// Whether the adapter offers wgpu's cooperative matrices and reports the
/// 16x16x16 f16 -> f32 shape that matmul_coop.wgsl uses.
fn coop_f16_16x16(adapter: &wgpu::Adapter) -> bool {
    use wgpu::CooperativeScalarType as T;
    adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16)
        && adapter.cooperative_matrix_properties().iter().any(|p| {
            (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
                && p.ab_type == T::F16
                && p.cr_type == T::F32
        })
}

fn optional_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY
}

fn ranked_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| {
        let i = a.get_info();
        std::cmp::Reverse((
            GpuDeviceType::from_wgpu(i.device_type).rank(),
            backend_rank(i.backend),
        ))
    });
    adapters
}

impl GpuContext {
    /// Opens the best adapter, or the one named by the `ZETA_ADAPTER`
    /// environment variable (a case-insensitive name substring).
    pub fn new() -> Result<Self> {
        let adapter = std::env::var("ZETA_ADAPTER").ok().filter(|s| !s.is_empty());
        Self::with_options(&GpuOptions {
            adapter,
            ..GpuOptions::default()
        })
    }

    /// Opens an adapter as described by `opts`.
    pub fn with_options(opts: &GpuOptions) -> Result<Self> {
        let instance = new_instance();
        let adapters = ranked_adapters(&instance);
        let adapter = match &opts.adapter {
            Some(want) => {
                let w = want.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&w))
            }
            None => adapters.into_iter().next(),
        };
        let adapter = adapter.ok_or_else(|| WgpuError::NoAdapter {
            wanted: opts.adapter.clone(),
        })?;
        Self::from_adapter(adapter, opts)
    }

    fn from_adapter(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Self> {
        let no_optional = opts.no_optional_features;
        let name = adapter.get_info().name;
        let mut wanted = if no_optional {
            wgpu::Features::empty()
        } else {
            adapter.features() & optional_features()
        };
        let coop = !no_optional && coop_f16_16x16(&adapter);
        if coop {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let full = wgpu::DeviceDescriptor {
            label: Some("zeta"),
            required_features: wanted,
            required_limits: adapter.limits(),
            experimental_features: if coop {
                // SAFETY: wgpu's experimental cooperative-matrix support may
                // misbehave when used incorrectly. Only matmul_coop.wgsl uses
                // it, on adapters that report the exact shape it needs
                // (16x16x16, f16 inputs, f32 accumulators), with every load
                // and store inside workgroup arrays sized for its tiles; its
                // results are checked against the CPU in tests and the
                // `ZETA_GPU_NO_COOP=1` switch turns it off.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            ..Default::default()
        };
        let (device, queue) = match pollster::block_on(adapter.request_device(&full)) {
            Ok(dq) => dq,
            Err(first) => {
                wanted = wgpu::Features::empty();
                // Fallback: default limits (clamped to the adapter), no optional features.
                let fallback = wgpu::DeviceDescriptor {
                    label: Some("zeta"),
                    required_features: wgpu::Features::empty(),
                    required_limits: wgpu::Limits::default()
                        .or_worse_values_from(&adapter.limits()),
                    ..Default::default()
                };
                pollster::block_on(adapter.request_device(&fallback)).map_err(|e| {
                    WgpuError::RequestDevice {
                        adapter: name.clone(),
                        message: format!("{first}; fallback: {e}"),
                    }
                })?
            }
        };
        let errors = Arc::new(Mutex::new(Vec::new()));
        let lost = Arc::new(Mutex::new(None));
        {
            let errors = Arc::clone(&errors);
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                // Keep the first few messages; a flood must not grow memory.
                if let Ok(mut v) = errors.lock()
                    && v.len() < 16
                {
                    v.push(e.to_string());
                }
            }));
            let lost = Arc::clone(&lost);
            device.set_device_lost_callback(move |reason, msg| {
                if let Ok(mut l) = lost.lock() {
                    *l = Some(format!("{reason:?}: {msg}"));
                }
            });
        }
        let limits = device.limits();
        // The features asked for: should a device enable more by itself,
        // they must not override `no_optional_features`.
        let features = device.features() & wanted;
        let info = info_of(&adapter, features, &limits);
        let use_subgroups = features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_size.0 >= 4
            && std::env::var("ZETA_GPU_NO_SUBGROUPS").as_deref() != Ok("1");
        let use_coop = features
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16)
            && info.subgroup_size == (32, 32)
            && std::env::var("ZETA_GPU_NO_COOP").as_deref() != Ok("1");
        let max_part_bytes = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(MAX_PART_BYTES)
            & !3;
        let mut ctx = Self {
            device,
            queue,
            pipelines: PipelineCache::default(),
            info,
            max_part_bytes,
            max_workgroups: limits.max_compute_workgroups_per_dimension.max(1),
            param_stride: crate::ops::PARAM_BYTES
                .next_multiple_of(limits.min_uniform_buffer_offset_alignment.max(1) as u64),
            use_subgroups,
            features,
            use_coop,
            fused_fma: false,
            f16_unpack: false,
            gelu: std::sync::OnceLock::new(),
            staged: AtomicU64::new(0),
            mem: Arc::default(),
            scratch: Mutex::default(),
            param_pool: Mutex::default(),
            staging: Mutex::default(),
            submit_lock: Mutex::default(),
            errors,
            lost,
        };
        // A failed probe leaves the (always exact) integer emulation on.
        ctx.fused_fma = ctx.probe_fused_fma().unwrap_or(false);
        ctx.f16_unpack = !opts.no_f16_unpack
            && std::env::var("ZETA_GPU_NO_F16_UNPACK").as_deref() != Ok("1")
            && ctx.probe_f16_unpack().unwrap_or(false);
        ctx.pipelines.clear();
        // The probes' buffers are not the caller's peak.
        ctx.reset_peak_bytes();
        if ctx.fused_fma {
            ctx.info.features.push("fused-fma".to_string());
        }
        if ctx.f16_unpack {
            ctx.info.features.push("f16-unpack".to_string());
        }
        Ok(ctx)
    }

    /// The CPU backend's f16 GELU table on the device (65536 f32).
    pub(crate) fn gelu_table(&self) -> Result<crate::tensor::GpuTensor> {
        if let Some(t) = self.gelu.get() {
            return Ok(t.clone());
        }
        let t = self.upload_f32(zeta_tensor::cpu::ops_exports::gelu_table())?;
        Ok(self.gelu.get_or_init(|| t).clone())
    }

    /// Whether WGSL's `fma` was found to round once on this device (the
    /// exact kernels then use it; otherwise they emulate it in integers).
    pub fn fused_fma(&self) -> bool {
        self.fused_fma
    }

    /// Whether WGSL's `unpack2x16float` was found to convert every f16 to
    /// its exact f32 (the exact matvecs then use it for block scales;
    /// otherwise integer ops).
    pub fn f16_unpack(&self) -> bool {
        self.f16_unpack
    }

    /// Converts all 65536 f16 bit patterns with `unpack2x16float`
    /// (f16_probe.wgsl), as the low and as the high half of a word, and
    /// compares with the exact conversion: the same bits for every number
    /// (subnormals included: a device that flushes them fails), a NaN for
    /// every NaN (its payload may differ: a NaN scale makes a NaN block
    /// either way). A device without the builtin fails to build the
    /// pipeline: an error, so no.
    fn probe_f16_unpack(&self) -> Result<bool> {
        // Word 2h holds h low, word 2h + 1 high (the other half a NaN's).
        let x: Vec<u32> = (0..=u16::MAX as u32)
            .flat_map(|h| [h | 0x7e00_0000, (h << 16) | 0x7e00])
            .collect();
        let xt = self.upload_u32(&x)?;
        let yt = self.zeros(x.len(), crate::tensor::GpuDType::F32)?;
        let mut b = self.batch();
        b.f16_probe(&xt, &yt, x.len())?;
        b.submit()?;
        let y = self.read_f32(&yt)?;
        Ok(y.iter().enumerate().all(|(i, r)| {
            let want = half::f16::from_bits((i / 2) as u16).to_f32();
            if want.is_nan() {
                r.is_nan()
            } else {
                want.to_bits() == r.to_bits()
            }
        }))
    }

    /// Runs WGSL's `fma` on 512 random triples (spread over magnitudes and
    /// signs) and compares with the correctly rounded result.
    fn probe_fused_fma(&self) -> Result<bool> {
        let mut s = 0x9e37_79b9u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let n = 512;
        let mut x = Vec::with_capacity(4 * n);
        for _ in 0..n {
            let mut v = || {
                let e = (next() % 40) as i32 - 20;
                let m = 1.0 + (next() >> 9) as f32 / (1u32 << 23) as f32;
                let sign = if next() & 1 == 0 { 1.0 } else { -1.0 };
                sign * m * 2f32.powi(e)
            };
            let (a, b) = (v(), v());
            // c near -a·b makes an unfused result differ most of the time.
            let c = -(a * b) * (1.0 + (next() % 7) as f32 * 2f32.powi(-20));
            x.extend_from_slice(&[a, b, c, 0.0]);
        }
        let xt = self.upload_f32(&x)?;
        let yt = self.zeros(n, crate::tensor::GpuDType::F32)?;
        let mut b = self.batch();
        b.exact_eval(0, &xt, &yt, n)?;
        b.submit()?;
        let y = self.read_f32(&yt)?;
        Ok(x.chunks_exact(4)
            .zip(&y)
            .all(|(v, r)| v[0].mul_add(v[1], v[2]).to_bits() == r.to_bits()))
    }

    /// The adapter/device description.
    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// Whether the context asked for `SHADER_F16` and has it.
    pub fn has_shader_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Whether the context asked for `SUBGROUP` and has it.
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// Whether the prefill matmul uses cooperative matrices (tensor cores):
    /// the device has wgpu's experimental cooperative matrices with the
    /// 16x16x16 f16 -> f32 shape, SHADER_F16 and subgroups of exactly 32
    /// (`ZETA_GPU_NO_COOP=1` turns it off).
    pub fn use_coop(&self) -> bool {
        self.use_coop
    }

    /// Whether matvec uses the subgroup reduction: SUBGROUP enabled and a
    /// subgroup size of at least 4 (`ZETA_GPU_NO_SUBGROUPS=1` turns it off).
    pub fn use_subgroups(&self) -> bool {
        self.use_subgroups
    }

    /// Largest part (bytes) one weight buffer is split into (the storage
    /// binding limit, 4-byte aligned, below 2 GiB).
    pub fn max_part_bytes(&self) -> u64 {
        self.max_part_bytes
    }

    /// Returns (and clears) any asynchronous error or device loss recorded
    /// since the last check.
    pub fn check(&self) -> Result<()> {
        if let Ok(l) = self.lost.lock()
            && let Some(msg) = l.as_ref()
        {
            return Err(WgpuError::DeviceLost(msg.clone()));
        }
        if let Ok(mut v) = self.errors.lock()
            && !v.is_empty()
        {
            let msg = v.join("; ");
            v.clear();
            return Err(WgpuError::Gpu(msg));
        }
        Ok(())
    }

    /// Runs `f` inside validation and out-of-memory error scopes; an error
    /// captured there becomes `on_err(message, is_oom)`.
    pub(crate) fn scoped<T>(
        &self,
        f: impl FnOnce() -> T,
        on_err: impl FnOnce(String, bool) -> WgpuError,
    ) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = o {
            return Err(on_err(e.to_string(), true));
        }
        if let Some(e) = v {
            return Err(on_err(e.to_string(), false));
        }
        Ok(out)
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| WgpuError::Gpu(e.to_string()))?;
        self.check()
    }
}
