#!/usr/bin/env python3
"""Golden data for zeta's sampler chain (crates/sampler), from llama.cpp's own samplers.

How to run (from the repository root):

    PYTHONPATH=/work/ref/llama_cpp_python-0.3.36 LLAMA_CPP_LIB_PATH=/work/ref/build/bin \
        python3 xtask/golden/sampler_golden.py

What it needs: numpy, the llama-cpp-python 0.3.36 sources (only its ctypes bindings) and a libllama.so
built from the llama.cpp commit they vendor (0c1e570). No model is loaded: the samplers work on a
hand-made llama_token_data_array.

For each case it builds llama.cpp's common-sampler chain without the final draw — logit_bias →
penalties → top_k → typical → top_p → min_p → temp_ext(temp, 0, 1) — feeds the `history` tokens through
llama_sampler_accept, applies the chain to the logits and records the surviving candidates (finite
logit) with their softmax probabilities. The token draw itself is not compared: zeta's PRNG is not
llama.cpp's mt19937.

Output (committed): crates/sampler/tests/golden/llama_cpp_chain.json
"""

import ctypes
import json
import math
import os
import sys

import numpy as np

import llama_cpp.llama_cpp as L

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "sampler", "tests", "golden",
                   "llama_cpp_chain.json")

DEFAULT = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0, repeat_penalty=1.0,
               presence_penalty=0.0, frequency_penalty=0.0, penalty_last_n=64, logit_bias=[])


def cfg(**kw):
    c = dict(DEFAULT)
    c.update(kw)
    return c


CONFIGS = [
    ("default", cfg()),
    ("top_k_only", cfg(top_k=7, top_p=1.0, min_p=0.0, temperature=1.0)),
    ("top_p_0.5", cfg(top_k=0, top_p=0.5, min_p=0.0, temperature=1.0)),
    ("top_p_0.9", cfg(top_k=0, top_p=0.9, min_p=0.0, temperature=1.0)),
    ("min_p_0.1", cfg(top_k=0, top_p=1.0, min_p=0.1, temperature=1.0)),
    ("typical_0.5", cfg(top_k=0, top_p=1.0, min_p=0.0, typical_p=0.5, temperature=1.0)),
    ("typical_0.9_chain", cfg(typical_p=0.9)),
    ("temp_0.5", cfg(top_k=0, top_p=1.0, min_p=0.0, temperature=0.5)),
    ("temp_1.7_topk", cfg(top_k=20, top_p=1.0, min_p=0.0, temperature=1.7)),
    ("greedy", cfg(temperature=0.0)),
    ("penalties", cfg(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0, repeat_penalty=1.3,
                      presence_penalty=0.4, frequency_penalty=0.2, penalty_last_n=6)),
    ("penalties_chain", cfg(repeat_penalty=1.5, frequency_penalty=0.5, penalty_last_n=64)),
    ("bias", cfg(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0,
                 logit_bias=[[0, 5.0], [3, -2.5], [5, float("-inf")]])),
    ("bias_chain", cfg(logit_bias=[[1, 4.0], [2, float("-inf")], [9, 1.5]])),
]

VOCABS = [10, 64, 500, 3000]


def run_llama(logits, c, history):
    n = len(logits)
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    if c["logit_bias"]:
        arr = (L.llama_logit_bias * len(c["logit_bias"]))()
        for i, (t, b) in enumerate(c["logit_bias"]):
            arr[i].token = t
            arr[i].bias = b
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(n, len(c["logit_bias"]), arr))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(
        n, c["penalty_last_n"], c["repeat_penalty"], c["frequency_penalty"], c["presence_penalty"]))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(c["top_k"]))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_typical(c["typical_p"], 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(c["top_p"], 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(c["min_p"], 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp_ext(c["temperature"], 0.0, 1.0))
    for t in history:
        L.llama_sampler_accept(chain, t)

    data = (L.llama_token_data * n)()
    for i, x in enumerate(logits):
        data[i].id = i
        data[i].logit = float(x)
        data[i].p = 0.0
    cur = L.llama_token_data_array(data=ctypes.cast(data, ctypes.POINTER(L.llama_token_data)),
                                   size=n, selected=-1, sorted=False)
    L.llama_sampler_apply(chain, ctypes.byref(cur))
    out = [(cur.data[i].id, cur.data[i].logit) for i in range(cur.size)]
    L.llama_sampler_free(chain)

    out = [(t, l) for t, l in out if math.isfinite(l)]
    m = max(l for _, l in out)
    w = [(t, math.exp(l - m)) for t, l in out]
    s = sum(x for _, x in w)
    res = sorted(((t, x / s) for t, x in w), key=lambda r: (-r[1], r[0]))
    return [[t, float(f"{p:.7e}")] for t, p in res]


def main():
    rng = np.random.default_rng(20261123)
    cases = []
    for n in VOCABS:
        for name, c in CONFIGS:
            logits = np.round(rng.normal(0.0, 3.0, n), 3).astype(np.float32)
            history = [int(x) for x in rng.integers(0, min(n, 12), 10)]
            expected = run_llama(logits, c, history)
            cases.append(dict(
                name=f"{name}/n{n}",
                config={k: (v if k != "logit_bias" else [[t, (b if math.isfinite(b) else "-inf")]
                                                           for t, b in v]) for k, v in c.items()},
                history=history,
                logits=[float(x) for x in logits],
                expected=expected,
            ))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(dict(source="llama.cpp 0c1e570 via llama-cpp-python 0.3.36 ctypes; "
                              "xtask/golden/sampler_golden.py", cases=cases), f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
