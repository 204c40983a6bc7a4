// glu.wgsl — fused gated activations, out = act(gate) * up, elementwise.
//
// gate, up, out: [n] f32. Entry points: `swiglu` (act = silu) and `geglu`
// (act = gelu, tanh approximation, rounded through f16 like ggml's CPU backend),
// and in-place `swiglu_assign` / `geglu_assign` (out = act(out) * up).
// 2-D grid: index = gid.x + gid.y * row_len, for n > 65535 * 256.

struct Params {
    n: u32,
    row_len: u32,    // invocations per grid row (grid_x * 256)
    mode: u32,       // *_assign_q8: q8.wgsl's rounding mode
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> GATE: array<f32>;
@group(0) @binding(1) var<storage, read> UP: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// GELU (tanh approximation) as ggml's CPU backend computes it
// (GGML_GELU_FP16): inputs in (-10, 10) rounded to f16, the result of the
// f32 formula rounded to f16 (its table); f16.wgsl (prepended) rounds.
fn gelu_tanh(x: f32) -> f32 {
    if (x <= -10.0) {
        return 0.0;
    }
    if (x >= 10.0) {
        return x;
    }
    let h = round_f16(x);
    let k = 0.7978845608028654; // sqrt(2/pi)
    let u = clamp(k * h * (1.0 + 0.044715 * h * h), -15.0, 15.0);
    return round_f16(0.5 * h * (1.0 + tanh(u)));
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
// act_quant.wgsl `pack_q8` would; four elements per invocation (q8.wgsl
// `q8_coop`), n a multiple of 32 (of 256 for Q8_K), the grid's row length in
// invocations.

fn act(gelu: bool, x: f32) -> f32 {
    if (gelu) {
        return gelu_tanh(x);
    }
    return silu(x);
}

// Invocation g takes elements 4g .. 4g + 4 (8 invocations per 32-element
// block, q8.wgsl `q8_coop`).
fn assign_q8(g: u32, lid: u32, gelu: bool) {
    let nb = P.n / 32u;
    let live = g < P.n / 4u;
    var y = vec4<f32>(0.0);
    if (live) {
        for (var c = 0u; c < 4u; c++) {
            y[c] = act(gelu, OUT[4u * g + c]) * UP[4u * g + c];
            OUT[4u * g + c] = y[c];
        }
    }
    q8_coop(lid, y, P.mode, live, 0u, g / 8u, nb);
}

@compute @workgroup_size(64)
fn swiglu_assign_q8(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    assign_q8(gid.x + gid.y * P.row_len, lid, false);
}

@compute @workgroup_size(64)
fn geglu_assign_q8(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    assign_q8(gid.x + gid.y * P.row_len, lid, true);
}
