// rope.wgsl — rotary position embedding (out of place).
//
// x, y: [n_tokens, n_heads, head_dim] f32, pos: [n_tokens] u32 (positions).
// One invocation per (pair i in 0..head_dim/2, head, token):
//  - normal order (mode 0, llama): rotates (2i, 2i+1) for 2i < n_rot;
//  - NeoX order (mode 2, gemma/qwen): rotates (i, i + n_rot/2) for i < n_rot/2.
// theta = pos * freq_scale * freq_base^(-2i / n_rot). Dims >= n_rot are copied.

struct Params {
    head_dim: u32,
    n_heads: u32,
    n_tokens: u32,
    n_rot: u32,
    mode: u32,       // 0 = normal, 2 = NeoX
    freq_base: f32,
    freq_scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> POS: array<u32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let h = gid.y;
    let t = gid.z;
    let half_dim = P.head_dim / 2u;
    if (i >= half_dim || h >= P.n_heads || t >= P.n_tokens) {
        return;
    }
    let base = (t * P.n_heads + h) * P.head_dim;
    let half_rot = P.n_rot / 2u;
    var a = 0u;
    var b = 0u;
    var rotate = i < half_rot;
    if (P.mode == 2u) {
        if (rotate) {
            a = i;
            b = i + half_rot;
        } else {
            a = P.n_rot + 2u * (i - half_rot);
            b = a + 1u;
        }
    } else {
        a = 2u * i;
        b = a + 1u;
    }
    let x0 = X[base + a];
    let x1 = X[base + b];
    if (rotate) {
        let inv_freq = exp2(-f32(2u * i) / f32(P.n_rot) * log2(P.freq_base));
        let theta = f32(POS[t]) * P.freq_scale * inv_freq;
        let c = cos(theta);
        let s = sin(theta);
        Y[base + a] = x0 * c - x1 * s;
        Y[base + b] = x0 * s + x1 * c;
    } else {
        Y[base + a] = x0;
        Y[base + b] = x1;
    }
}
