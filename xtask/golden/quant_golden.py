#!/usr/bin/env python3
"""Golden vectors for zeta-quant (crates/quant/tests/golden/).

How to run (from the repository root):

    python3 xtask/golden/quant_golden.py [--ggml-lib /work/ref/build/bin/libggml-base.so]
                                         [--models ~/.cache/zeta/models] [--out crates/quant/tests/golden]

Needs: Python 3.9+, a C compiler (`cc`), the llama.cpp source tree (--llama-cpp), numpy, the `gguf` PyPI package (numpy reference (de)quantizers and GGUFReader), and
llama.cpp's libggml-base.so (the reference build, see xtask/golden/build_llama_cpp.sh and /work/ref/README.txt).
libggml is the authority: its `dequantize_row_*` / `quantize_row_*_ref` functions (ggml-quants.c, compiled
without -march, i.e. plain SSE2 float arithmetic and no FMA contraction) produce the expected values via ctypes.
Where `gguf.quants` implements the same operation, its result is cross-checked and the agreement is recorded
in manifest.tsv (column `numpy`: `same`, `differs`, or `-` when gguf has no implementation).

Outputs (deterministic, seeded):
  dequant_<type>.bin   random blocks (scale fields forced to finite f16 with |d| in [1e-4, 1]) and the expected
                       f32 values.  Layout: b"ZQG1", u32 ggml type id, u32 n_elements, u32 n_bytes,
                       n_bytes block bytes, n_elements little-endian f32.
  quant_<type>.bin     random f32 rows and ggml's reference quantization.  Layout: b"ZQQ1", u32 type id,
                       u32 n_elements, u32 n_bytes, n_elements little-endian f32, n_bytes block bytes.
  dot_<type>.bin       vec_dot golden: random weight rows (scale fields sane) · activation rows quantized with
                       ggml's quantize_row_<vec_dot_type>_ref, and the f32 result of ggml's generic C kernel
                       `ggml_vec_dot_<w>_<a>_generic` (ggml-cpu/quants.c compiled here by `cc -O2 -ffp-contract=off`
                       without -march flags, i.e. the plain C semantics with no FMA contraction; needs a C compiler).
                       Layout: b"ZQD1", u32 weight type id, u32 n per row, u32 n_rows, u32 weight bytes per row,
                       u32 activation bytes per row, weight rows, activation rows, n_rows little-endian f32.
  real_tensors.tsv     for every tensor of the real models (if present): model, tensor, type, n_elements,
                       sha256 of the little-endian f32 dequantized data (ggml dequantize_row_*).
  manifest.tsv         kind, type, file, n_elements, source, numpy agreement.
"""

import argparse
import ctypes
import hashlib
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

try:
    import gguf
    import gguf.quants
except ImportError:  # pragma: no cover
    gguf = None

# ggml type ids (ggml.h enum ggml_type)
T = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q8_1": 9,
    "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14, "q8_K": 15,
    "iq4_nl": 20, "iq4_xs": 23, "bf16": 30,
}
# (block size, bytes per block)
LAYOUT = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2),
    "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24), "q8_0": (32, 34), "q8_1": (32, 36),
    "q2_K": (256, 84), "q3_K": (256, 110), "q4_K": (256, 144), "q5_K": (256, 176), "q6_K": (256, 210),
    "q8_K": (256, 292), "iq4_nl": (32, 18), "iq4_xs": (256, 136),
}
# byte offsets of the f16 scale fields inside each block
F16_FIELDS = {
    "q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0], "q8_1": [0, 2],
    "q2_K": [80, 82], "q3_K": [108], "q4_K": [0, 2], "q5_K": [0, 2], "q6_K": [208],
    "iq4_nl": [0], "iq4_xs": [0],
}
DEQUANT_TYPES = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1",
                 "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq4_nl", "iq4_xs"]
QUANT_TYPES = ["f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1",
               "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq4_nl", "iq4_xs"]
# weight type -> activation type (ggml's vec_dot_type) for the generic dot kernels
DOT_TYPES = {
    "q4_0": "q8_0", "q4_1": "q8_1", "q5_0": "q8_0", "q5_1": "q8_1", "q8_0": "q8_0", "iq4_nl": "q8_0",
    "q2_K": "q8_K", "q3_K": "q8_K", "q4_K": "q8_K", "q5_K": "q8_K", "q6_K": "q8_K", "iq4_xs": "q8_K",
}
SHIM_C = r"""
#include <stdint.h>
float ggml_table_f32_f16[1 << 16];
float ggml_fp16_to_fp32(uint16_t);
void zq_init(void) { for (int i = 0; i < (1 << 16); i++) ggml_table_f32_f16[i] = ggml_fp16_to_fp32((uint16_t)i); }
"""
MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]


class Ggml:
    """ctypes access to libggml-base's reference row functions."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)

    def _fn(self, name):
        f = getattr(self.lib, name)
        f.restype = None
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        return f

    def dequantize(self, ty, data: bytes, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        src = np.frombuffer(data, dtype=np.uint8).copy()
        if ty == "f32":
            return np.frombuffer(data, dtype="<f4").copy()
        if ty == "q8_1":
            raise KeyError("ggml has no dequantize_row_q8_1")
        name = {"f16": "ggml_fp16_to_fp32_row", "bf16": "ggml_bf16_to_fp32_row"}.get(ty, f"dequantize_row_{ty}")
        self._fn(name)(src.ctypes.data, out.ctypes.data, n)
        return out

    def quantize(self, ty, x: np.ndarray) -> bytes:
        bs, ts = LAYOUT[ty]
        n = x.size
        out = np.zeros(n // bs * ts, dtype=np.uint8)
        x = np.ascontiguousarray(x, dtype=np.float32)
        name = {"f16": "ggml_fp32_to_fp16_row", "bf16": "ggml_fp32_to_bf16_row_ref"}.get(ty, f"quantize_row_{ty}_ref")
        self._fn(name)(x.ctypes.data, out.ctypes.data, n)
        return out.tobytes()


class GenericDot:
    """ggml-cpu/quants.c compiled without arch flags and without FP contraction: the generic C dot kernels."""

    def __init__(self, ggml_lib, src_root, workdir):
        libdir = os.path.dirname(os.path.abspath(ggml_lib))
        shim = os.path.join(workdir, "shim.c")
        with open(shim, "w") as f:
            f.write(SHIM_C)
        so = os.path.join(workdir, "libzq_generic.so")
        ggml = os.path.join(src_root, "ggml")
        cmd = ["cc", "-O2", "-ffp-contract=off", "-std=gnu11", "-fPIC", "-shared", "-D_GNU_SOURCE",
               f"-I{ggml}/src", f"-I{ggml}/src/ggml-cpu", f"-I{ggml}/include",
               f"{ggml}/src/ggml-cpu/quants.c", shim, "-o", so,
               f"-L{libdir}", "-lggml-base", "-lm", f"-Wl,-rpath,{libdir}"]
        subprocess.run(cmd, check=True)
        self.lib = ctypes.CDLL(so)
        self.lib.zq_init()

    def dot(self, wt, at, w: bytes, a: bytes, n: int) -> float:
        f = getattr(self.lib, f"ggml_vec_dot_{wt}_{at}_generic")
        f.restype = None
        f.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, ctypes.c_void_p,
                      ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        wb = np.frombuffer(w, dtype=np.uint8).copy()
        ab = np.frombuffer(a, dtype=np.uint8).copy()
        out = ctypes.c_float(0.0)
        f(n, ctypes.byref(out), 0, wb.ctypes.data, 0, ab.ctypes.data, 0, 1)
        return out.value


def numpy_qtype(ty):
    if gguf is None:
        return None
    name = {"q2_K": "Q2_K", "q3_K": "Q3_K", "q4_K": "Q4_K", "q5_K": "Q5_K", "q6_K": "Q6_K", "q8_K": "Q8_K"}.get(ty, ty.upper())
    return getattr(gguf.GGMLQuantizationType, name, None)


def numpy_dequant(ty, data: bytes, n: int):
    qt = numpy_qtype(ty)
    if qt is None:
        return None
    try:
        arr = np.frombuffer(data, dtype=np.uint8)
        return np.asarray(gguf.quants.dequantize(arr, qt), dtype=np.float32).reshape(-1)
    except (NotImplementedError, gguf.quants.QuantError, KeyError, ValueError, TypeError):
        return None


def numpy_quant(ty, x: np.ndarray):
    qt = numpy_qtype(ty)
    if qt is None:
        return None
    try:
        return np.asarray(gguf.quants.quantize(x.astype(np.float32), qt)).tobytes()
    except (NotImplementedError, gguf.quants.QuantError, KeyError, ValueError, TypeError):
        return None


def sane_f16(rng, count):
    mag = np.exp(rng.uniform(np.log(1e-4), 0.0, count))
    sign = np.where(rng.random(count) < 0.5, -1.0, 1.0)
    return (mag * sign).astype(np.float16)


def random_blocks(ty, rng):
    bs, ts = LAYOUT[ty]
    if ty == "f32":
        return rng.standard_normal(1024).astype("<f4").tobytes(), 1024
    if ty == "f16":
        v = (rng.standard_normal(1024) * np.exp(rng.uniform(-8, 8, 1024))).astype(np.float16)
        v[~np.isfinite(v)] = 1.0
        return v.astype("<f2").tobytes(), 1024
    if ty == "bf16":
        bits = rng.integers(0, 1 << 16, 1024, dtype=np.uint32)
        exp = (bits >> 7) & 0xFF
        bits = np.where(exp == 0xFF, bits & ~np.uint32(0x4000), bits)  # keep finite
        return bits.astype("<u2").tobytes(), 1024
    nblocks = 256 if bs == 32 else 64
    raw = rng.integers(0, 256, (nblocks, ts), dtype=np.uint8)
    for off in F16_FIELDS.get(ty, []):
        raw[:, off:off + 2] = sane_f16(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    if ty == "q8_K":
        mag = np.exp(rng.uniform(np.log(1e-4), 0.0, nblocks)) * np.where(rng.random(nblocks) < 0.5, -1, 1)
        raw[:, 0:4] = mag.astype("<f4").view(np.uint8).reshape(nblocks, 4)
    return raw.tobytes(), nblocks * bs


def random_blocks_n(ty, rng, n):
    """Random blocks of `ty` for exactly n elements (scale fields sane)."""
    bs, ts = LAYOUT[ty]
    nblocks = n // bs
    raw = rng.integers(0, 256, (nblocks, ts), dtype=np.uint8)
    for off in F16_FIELDS.get(ty, []):
        raw[:, off:off + 2] = sane_f16(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    return raw.tobytes(), n


def random_rows(ty, rng):
    bs, _ = LAYOUT[ty]
    nblocks = 128 if bs <= 32 else 32
    bs = max(bs, 32)
    x = rng.standard_normal((nblocks, bs)).astype(np.float32)
    scale = np.exp(rng.uniform(-6, 3, (nblocks, 1))).astype(np.float32)
    x *= scale
    kinds = rng.integers(0, 6, nblocks)
    for i, k in enumerate(kinds):
        if k == 1:  # all positive
            x[i] = np.abs(x[i]) + scale[i] * 0.3
        elif k == 2:  # one outlier
            x[i, rng.integers(0, bs)] *= 20
        elif k == 3:  # uniform
            x[i] = rng.uniform(-1, 1, bs).astype(np.float32) * scale[i]
        elif k == 4:  # test-quantize-fns style
            off = rng.integers(0, 1000)
            x[i] = (0.1 + 2 * np.cos(np.arange(bs) + off)).astype(np.float32)
    # An all-zero block, except for iq4_nl: ggml packs stale (uninitialised) levels under a zero scale there.
    x[0] = 0.0 if ty != "iq4_nl" else 1e-3
    x[1] = 0.75  # a constant block
    return x.reshape(-1)


def write_dequant(out, ty, data, expected):
    path = os.path.join(out, f"dequant_{ty}.bin")
    with open(path, "wb") as f:
        f.write(b"ZQG1" + struct.pack("<III", T[ty], expected.size, len(data)))
        f.write(data)
        f.write(expected.astype("<f4").tobytes())
    return path


def write_quant(out, ty, x, data):
    path = os.path.join(out, f"quant_{ty}.bin")
    with open(path, "wb") as f:
        f.write(b"ZQQ1" + struct.pack("<III", T[ty], x.size, len(data)))
        f.write(x.astype("<f4").tobytes())
        f.write(data)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ggml-lib", default="/work/ref/build/bin/libggml-base.so")
    ap.add_argument("--models", default=os.environ.get("ZETA_MODELS", os.path.expanduser("~/.cache/zeta/models")))
    ap.add_argument("--out", default="crates/quant/tests/golden")
    ap.add_argument("--llama-cpp", default="/work/ref/llama.cpp", help="llama.cpp source tree (for ggml-cpu/quants.c)")
    ap.add_argument("--skip-models", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ggml = Ggml(args.ggml_lib)
    manifest = []

    for i, ty in enumerate(DEQUANT_TYPES):
        rng = np.random.default_rng(1000 + i)
        data, n = random_blocks(ty, rng)
        try:
            expected = ggml.dequantize(ty, data, n)
            source = "libggml"
        except KeyError:
            # q8_1: ggml has no dequantizer; the block's meaning is d * q (as for q8_0), one f32 rounding.
            blocks = np.frombuffer(data, dtype=np.uint8).reshape(-1, LAYOUT[ty][1])
            d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
            q = blocks[:, 4:].copy().view(np.int8).astype(np.float32)
            expected = (q * d).reshape(-1).astype(np.float32)
            source = "definition(d*q)"
        assert np.all(np.isfinite(expected)), ty
        ref = numpy_dequant(ty, data, n)
        agree = "-" if ref is None else ("same" if np.array_equal(ref.view(np.uint32), expected.view(np.uint32)) else "differs")
        path = write_dequant(args.out, ty, data, expected)
        manifest.append(("dequant", ty, os.path.basename(path), n, source, agree))
        print(f"dequant {ty:7s} n={n:6d} source={source} numpy={agree}")

    for i, ty in enumerate(QUANT_TYPES):
        rng = np.random.default_rng(2000 + i)
        x = random_rows(ty, rng)
        data = ggml.quantize(ty, x)
        ref = numpy_quant(ty, x)
        agree = "-" if ref is None else ("same" if ref == data else "differs")
        path = write_quant(args.out, ty, x, data)
        manifest.append(("quant", ty, os.path.basename(path), x.size, "libggml", agree))
        print(f"quant   {ty:7s} n={x.size:6d} source=libggml numpy={agree}")

    with tempfile.TemporaryDirectory() as tmp:
        gen = GenericDot(args.ggml_lib, args.llama_cpp, tmp)
        for i, (wt, at) in enumerate(DOT_TYPES.items()):
            rng = np.random.default_rng(3000 + i)
            n, rows = 1024, 32
            ws, as_, res = [], [], []
            for r in range(rows):
                if r % 4 == 3 and wt not in ("iq4_nl", "iq4_xs"):
                    w = ggml.quantize(wt, random_rows(wt, rng)[:n])
                else:
                    w, _ = random_blocks_n(wt, rng, n)
                a = ggml.quantize(at, (rng.standard_normal(n) * np.exp(rng.uniform(-3, 3))).astype(np.float32))
                ws.append(w)
                as_.append(a)
                res.append(gen.dot(wt, at, w, a, n))
            path = os.path.join(args.out, f"dot_{wt}.bin")
            with open(path, "wb") as f:
                f.write(b"ZQD1" + struct.pack("<IIIII", T[wt], n, rows, len(ws[0]), len(as_[0])))
                f.write(b"".join(ws))
                f.write(b"".join(as_))
                f.write(np.array(res, dtype="<f4").tobytes())
            manifest.append(("dot", wt, os.path.basename(path), n * rows, f"ggml_vec_dot_{wt}_{at}_generic", "-"))
            print(f"dot     {wt:7s} x {at} rows={rows} n={n}")

    with open(os.path.join(args.out, "manifest.tsv"), "w") as f:
        f.write("kind\ttype\tfile\tn_elements\tsource\tnumpy\n")
        for row in manifest:
            f.write("\t".join(str(c) for c in row) + "\n")

    if args.skip_models:
        return
    rows = []
    for model in MODELS:
        path = os.path.join(args.models, model)
        if not os.path.exists(path):
            print(f"SKIP: model {path} missing; real_tensors.tsv not written", file=sys.stderr)
            sys.exit(1)
        reader = gguf.GGUFReader(path)
        for t in reader.tensors:
            ty = gguf.GGMLQuantizationType(int(t.tensor_type)).name.lower().replace("_k", "_K")
            n = int(t.n_elements)
            data = np.ascontiguousarray(t.data).view(np.uint8).tobytes()
            vals = ggml.dequantize(ty, data, n)
            sha = hashlib.sha256(vals.astype("<f4").tobytes()).hexdigest()
            rows.append((model, t.name, ty, n, sha))
        print(f"model {model}: {len(reader.tensors)} tensors")
    with open(os.path.join(args.out, "real_tensors.tsv"), "w") as f:
        f.write("model\ttensor\ttype\tn_elements\tsha256_f32le\n")
        for row in rows:
            f.write("\t".join(str(c) for c in row) + "\n")


if __name__ == "__main__":
    main()
