// glu.wgsl — fused gated activations, out = act(gate) * up, elementwise.
//
// gate, up, out: [n] f32. Entry points: `swiglu` (act = silu) and `geglu`
// (act = gelu, tanh approximation, computed in f32 like ggml's GPU backends),
// and in-place `swiglu_assign` / `geglu_assign` (out = act(out) * up).
// 2-D grid: index = gid.x + gid.y * row_len, for n > 65535 * 256.

struct Params {
    n: u32,
    row_len: u32,    // invocations per grid row (grid_x * 256)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> GATE: array<f32>;
@group(0) @binding(1) var<storage, read> UP: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

fn gelu_tanh(x: f32) -> f32 {
    let k = 0.7978845608028654; // sqrt(2/pi)
    let u = clamp(k * x * (1.0 + 0.044715 * x * x), -15.0, 15.0);
    return 0.5 * x * (1.0 + tanh(u));
}

@compute @workgroup_size(256)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = silu(GATE[i]) * UP[i];
    }
}

@compute @workgroup_size(256)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = gelu_tanh(GATE[i]) * UP[i];
    }
}

@compute @workgroup_size(256)
fn swiglu_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = silu(OUT[i]) * UP[i];
    }
}

@compute @workgroup_size(256)
fn geglu_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * P.row_len;
    if (i < P.n) {
        OUT[i] = gelu_tanh(OUT[i]) * UP[i];
    }
}

// ---- in place, one token, fused with the 8-bit pack of the result ----
// `swiglu_assign_q8` / `geglu_assign_q8`: OUT = act(OUT) * UP as above, and
// the result quantised into XQ (q8.wgsl, prepended) for matvec_q8.wgsl, as
// act_quant.wgsl `pack_q8` would; one invocation per 32-element block, n a
// multiple of 32, the grid's row length in blocks.

fn act(gelu: bool, x: f32) -> f32 {
    if (gelu) {
        return gelu_tanh(x);
    }
    return silu(x);
}

fn assign_q8(b: u32, gelu: bool) {
    let nb = P.n / 32u;
    if (b >= nb) {
        return;
    }
    var y: array<vec4<f32>, 8>;
    for (var k = 0u; k < 32u; k++) {
        let v = act(gelu, OUT[32u * b + k]) * UP[32u * b + k];
        OUT[32u * b + k] = v;
        y[k / 4u][k % 4u] = v;
    }
    put_q8(b, nb, q8_block(y));
}

@compute @workgroup_size(64)
fn swiglu_assign_q8(@builtin(global_invocation_id) gid: vec3<u32>) {
    assign_q8(gid.x + gid.y * P.row_len, false);
}

@compute @workgroup_size(64)
fn geglu_assign_q8(@builtin(global_invocation_id) gid: vec3<u32>) {
    assign_q8(gid.x + gid.y * P.row_len, true);
}
