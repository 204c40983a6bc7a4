// f16_probe.wgsl — `unpack2x16float` on every input word, for the device
// probe behind `GpuContext::f16_unpack` (the exact matvecs convert block
// scales with it only where it gave every f16's exact f32).
//
// x: [n] u32 words, y: [n] f32: the word's low half (even i) or high half
// (odd i) converted. Needs SHADER_FLOAT16_IN_FLOAT32 (wgpu's downlevel
// `SHADER_F16_IN_F32`; Vulkan, Metal and DX12 have it): where a device
// lacks it the pipeline fails and the probe says no.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> X: array<u32>;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= P.n) {
        return;
    }
    let h = unpack2x16float(X[i]);
    Y[i] = select(h.x, h.y, (i & 1u) == 1u);
}
