//! zeta-wgpu: the GPU backend over wgpu/WGSL (Metal, Vulkan, DX12).
//!
//! **Not implemented yet.** This crate is a skeleton so that the workspace
//! has its final shape; it will implement `zeta_tensor`'s backend trait with
//! fused WGSL kernels from `shaders/`. It is the only crate allowed to name
//! `wgpu` or `naga`. Until it lands, `--backend gpu` is reported as
//! unavailable by the engine.
