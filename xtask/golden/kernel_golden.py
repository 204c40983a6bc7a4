#!/usr/bin/env python3
"""Reference outputs of ggml's x86 CPU dot-product kernels, for zeta-tensor's kernel tests.

How to run:

    LLAMA_CPU_LIB=/work/ref/build/bin/libggml-cpu.so python3 xtask/golden/kernel_golden.py

What it needs: numpy, and the llama.cpp reference build (xtask/golden/build_llama_cpp.sh; the
library is built with AVX2/FMA/F16C/AVX512, so the kernels called here are the ones llama.cpp's CPU
backend uses on this class of machine). It calls the exported `ggml_vec_dot_<w>_<a>` functions and
`quantize_row_q8_{0,1,K}` on pseudo-random weight blocks and activations, and writes
crates/tensor/tests/golden/vec_dot.json: per case the weight bytes (hex), the f32 activations (hex of
little-endian bytes), llama.cpp's quantized activations (hex) and the f32 result (hex bits), so the
Rust test can demand bit-exact agreement.
"""

import ctypes
import json
import os
from pathlib import Path

import numpy as np

LIB = os.environ.get("LLAMA_CPU_LIB", "/work/ref/build/bin/libggml-cpu.so")
OUT = Path(__file__).resolve().parents[2] / "crates/tensor/tests/golden/vec_dot.json"

# weight type: (block elements, block bytes, activation type, activation block bytes, f16 offsets of scales)
TYPES = {
    "q4_0": (32, 18, "q8_0", [0]),
    "q4_1": (32, 20, "q8_1", [0, 2]),
    "q5_0": (32, 22, "q8_0", [0]),
    "q5_1": (32, 24, "q8_1", [0, 2]),
    "q8_0": (32, 34, "q8_0", [0]),
    "q4_K": (256, 144, "q8_K", [0, 2]),
    "q5_K": (256, 176, "q8_K", [0, 2]),
    "q6_K": (256, 210, "q8_K", [208]),
}
ACT_BYTES = {"q8_0": 34, "q8_1": 36, "q8_K": 292}
ACT_BLOCK = {"q8_0": 32, "q8_1": 32, "q8_K": 256}


def main() -> None:
    lib = ctypes.CDLL(LIB)
    lib.ggml_cpu_init()  # fills the f16 conversion tables the kernels read
    rng = np.random.default_rng(1234)
    cases = []
    for name, (bs, bb, act, f16_offs) in TYPES.items():
        dot = getattr(lib, f"ggml_vec_dot_{name}_{act.replace('q8_K', 'q8_K')}")
        dot.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        quant = getattr(lib, f"quantize_row_{act}")
        quant.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        for n in (bs * 2, 1024 if bs == 32 else 2048):
            for rep in range(3):
                nb = n // bs
                w = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
                for off in f16_offs:  # sane f16 scales
                    d = (rng.standard_normal(nb) * 0.02).astype(np.float16)
                    w[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
                if name == "q6_K":  # int8 scales are arbitrary bytes; fine
                    pass
                x = (rng.standard_normal(n) * (1 + 3 * rep)).astype(np.float32)
                if rep == 2:
                    x[rng.integers(0, n)] = 200.0  # an outlier, like LLM "massive activations"
                a = np.zeros(n // ACT_BLOCK[act] * ACT_BYTES[act], dtype=np.uint8)
                quant(x.ctypes.data, a.ctypes.data, n)
                s = np.zeros(1, dtype=np.float32)
                wb = np.ascontiguousarray(w)
                dot(n, s.ctypes.data, 0, wb.ctypes.data, 0, a.ctypes.data, 0, 1)
                cases.append({
                    "type": name, "n": n,
                    "w": wb.tobytes().hex(), "x": x.tobytes().hex(), "a": a.tobytes().hex(),
                    "result_bits": int(s.view(np.uint32)[0]),
                })
    # activation quantization alone, on many blocks (x86 paths differ from the _ref quantizers
    # in rare rounding cases, so use enough data to hit some)
    quant_cases = []
    for act in ("q8_0", "q8_1", "q8_K"):
        quant = getattr(lib, f"quantize_row_{act}")
        quant.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        n = 256 * 64
        x = (rng.standard_normal(n) * np.exp(rng.standard_normal(n))).astype(np.float32)
        x[:: 97] = np.round(x[:: 97])  # exact integers / ties
        a = np.zeros(n // ACT_BLOCK[act] * ACT_BYTES[act], dtype=np.uint8)
        quant(x.ctypes.data, a.ctypes.data, n)
        quant_cases.append({"type": act, "x": x.tobytes().hex(), "a": a.tobytes().hex()})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"source": "ggml x86 CPU kernels, llama.cpp 0c1e570", "cases": cases,
                               "quant": quant_cases}))
    print(f"wrote {len(cases)} cases to {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
