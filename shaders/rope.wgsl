// rope.wgsl — rotary position embedding.
//
// x, y: [n_tokens, n_heads, head_dim] f32. One invocation per
// (pair i in 0..head_dim/2, head, token):
//  - normal order (mode 0, llama): rotates (2i, 2i+1) for 2i < n_rot;
//  - NeoX order (mode 2, gemma/qwen): rotates (i, i + n_rot/2) for i < n_rot/2.
// theta = pos * freq_scale * freq_base^(-2i / n_rot) / ff[i] (ff: llama3
// `rope_freqs`, only when has_ff). Dims >= n_rot are copied.
// Entries: `main` (out of place, positions from POS [n_tokens] u32) and
// `inplace` (XY rewritten, token t at position pos0 + t; each invocation owns
// its pair, so in place is safe).

struct Params {
    head_dim: u32,
    n_heads: u32,
    n_tokens: u32,
    n_rot: u32,
    mode: u32,       // 0 = normal, 2 = NeoX
    freq_base: f32,
    freq_scale: f32,
    pos0: u32,
    has_ff: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> POS: array<u32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;
@group(0) @binding(4) var<storage, read_write> XY: array<f32>;
@group(0) @binding(5) var<storage, read> FF: array<f32>;

// Element indices (a, b) of pair i and whether it is rotated.
fn pair(i: u32) -> vec3<u32> {
    let half_rot = P.n_rot / 2u;
    let rotate = i < half_rot;
    if (P.mode == 2u) {
        if (rotate) {
            return vec3<u32>(i, i + half_rot, 1u);
        }
        let a = P.n_rot + 2u * (i - half_rot);
        return vec3<u32>(a, a + 1u, 0u);
    }
    return vec3<u32>(2u * i, 2u * i + 1u, select(0u, 1u, rotate));
}

fn rotate(x0: f32, x1: f32, i: u32, pos: u32) -> vec2<f32> {
    var inv_freq = exp2(-f32(2u * i) / f32(P.n_rot) * log2(P.freq_base));
    if (P.has_ff != 0u) {
        inv_freq = inv_freq / FF[i];
    }
    let theta = f32(pos) * P.freq_scale * inv_freq;
    let c = cos(theta);
    let s = sin(theta);
    return vec2<f32>(x0 * c - x1 * s, x0 * s + x1 * c);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let h = gid.y;
    let t = gid.z;
    if (i >= P.head_dim / 2u || h >= P.n_heads || t >= P.n_tokens) {
        return;
    }
    let base = (t * P.n_heads + h) * P.head_dim;
    let ab = pair(i);
    var r = vec2<f32>(X[base + ab.x], X[base + ab.y]);
    if (ab.z == 1u) {
        r = rotate(r.x, r.y, i, POS[t]);
    }
    Y[base + ab.x] = r.x;
    Y[base + ab.y] = r.y;
}

@compute @workgroup_size(64)
fn inplace(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let h = gid.y;
    let t = gid.z;
    if (i >= P.head_dim / 2u || h >= P.n_heads || t >= P.n_tokens) {
        return;
    }
    let base = (t * P.n_heads + h) * P.head_dim;
    let ab = pair(i);
    if (ab.z == 1u) {
        let r = rotate(XY[base + ab.x], XY[base + ab.y], i, P.pos0 + t);
        XY[base + ab.x] = r.x;
        XY[base + ab.y] = r.y;
    }
}
