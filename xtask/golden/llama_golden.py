#!/usr/bin/env python3
"""Generate llama.cpp reference ("golden") data for zeta's correctness tests.

How to run (from anywhere):

    ZETA_REF=/work/ref ZETA_MODELS=~/.cache/zeta/models python3 xtask/golden/llama_golden.py all
    python3 xtask/golden/llama_golden.py texts|logits|greedy|perplexity|longctx|synth [--models smollm2,gemma3]

What it needs:
  * the llama.cpp reference build made by xtask/golden/build_llama_cpp.sh:
      $ZETA_REF/build/bin/{libllama.so,libggml*.so,llama-perplexity}   (ZETA_REF default /work/ref)
      $ZETA_REF/llama_cpp_python-0.3.36/llama_cpp   (llama-cpp-python 0.3.36 bindings, used from source)
  * pip packages: numpy, gguf, diskcache, jinja2, typing-extensions (the last three only because the
    bindings' package __init__ imports them)
  * the models in $ZETA_MODELS (default ~/.cache/zeta/models):
      SmolLM2-135M-Instruct.Q4_1.gguf ("smollm2"), gemma-3-270m-q4_k_m.gguf ("gemma3")

Output goes to crates/model/tests/golden/ of this repository (override with ZETA_GOLDEN_OUT).
Every llama.cpp evaluation runs on the CPU with $ZETA_GOLDEN_THREADS threads (default 2), KV cache f16/f16, flash attention DISABLED
(the Python bindings' default; llama.cpp's own default "auto" would enable it on CPU), n_batch = n_ubatch = 512.
llama.cpp commit: 0c1e570 (vendored in the llama-cpp-python 0.3.36 sdist).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import inspect
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
REF = Path(os.environ.get("ZETA_REF", "/work/ref"))
MODELS_DIR = Path(os.path.expanduser(os.environ.get("ZETA_MODELS", "~/.cache/zeta/models")))
OUT = Path(os.environ.get("ZETA_GOLDEN_OUT", str(REPO / "crates/model/tests/golden")))
BIN = REF / "build" / "bin"
LLAMA_CPP_COMMIT = "0c1e570"
LLAMA_CPP_COMMIT_FULL = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
# Thread count: ggml's CPU results do not depend on it (checked: identical top-32 log-probs with 1 and 2
# threads); 1 avoids ggml's spin barriers crawling when the machine is oversubscribed.
N_THREADS = int(os.environ.get("ZETA_GOLDEN_THREADS", "2"))
TOP_K = 32

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}

SHORT_TEXTS = [
    "short1_prose.txt",
    "short2_science.txt",
    "short3_code.txt",
    "short4_recipe.txt",
    "short5_dialogue.txt",
]

LONGCTX_POSITIONS = [0, 1, 2, 255, 256, 511, 512, 513, 1023, 2047, 4095, 6000, 8190, 8191]

# ---------------------------------------------------------------------------------------------
# llama.cpp through the llama-cpp-python 0.3.36 low-level ctypes bindings
# ---------------------------------------------------------------------------------------------

os.environ.setdefault("LLAMA_CPP_LIB_PATH", str(BIN))
sys.path.insert(0, str(REF / "llama_cpp_python-0.3.36"))
import llama_cpp.llama_cpp as L  # noqa: E402  (needs LLAMA_CPP_LIB_PATH set first)

_LOG_LEVEL_ERROR = 4


@L.llama_log_callback
def _quiet_log(level, text, _user):  # pragma: no cover - C callback
    if level == _LOG_LEVEL_ERROR and text:
        sys.stderr.write(text.decode("utf-8", "replace"))


L.llama_log_set(_quiet_log, ctypes.c_void_p(0))
L.llama_backend_init()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def r6(x: float) -> float:
    """Round to 6 significant digits (JSON size)."""
    return float(f"{x:.6g}")


class Llama:
    """A llama.cpp model + context with explicit settings (CPU, f16 KV, no flash attention)."""

    def __init__(self, path: Path, n_ctx: int, n_batch: int = 512, n_ubatch: int = 512):
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp failed to load {path}")
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_ubatch
        cparams.n_seq_max = 1
        cparams.n_threads = N_THREADS
        cparams.n_threads_batch = N_THREADS
        cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp failed to create a context")
        self.n_ctx = L.llama_n_ctx(self.ctx)
        self.n_batch = n_batch
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.settings = {
            "n_ctx": self.n_ctx,
            "n_batch": n_batch,
            "n_ubatch": n_ubatch,
            "n_threads": N_THREADS,
            "type_k": "f16",
            "type_v": "f16",
            "flash_attn": False,
            "backend": "CPU",
        }

    def free(self) -> None:
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = L.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """llama_tokenize(add_special=True => BOS if the vocab says so, parse_special=False)."""
        data = text.encode("utf-8")
        cap = len(data) + 16
        arr = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), arr, cap, add_special, False)
        if n < 0:
            cap = -n
            arr = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), arr, cap, add_special, False)
        return list(arr[:n])

    def clear(self) -> None:
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def decode(self, tokens: list[int], pos0: int, want) -> dict[int, np.ndarray]:
        """Decode tokens at positions pos0.. in batches of n_batch; return logits (f32) for the
        positions p where want(p) is true."""
        out: dict[int, np.ndarray] = {}
        for b0 in range(0, len(tokens), self.n_batch):
            chunk = tokens[b0 : b0 + self.n_batch]
            batch = L.llama_batch_init(len(chunk), 0, 1)
            try:
                rows = []
                for k, tok in enumerate(chunk):
                    p = pos0 + b0 + k
                    batch.token[k] = tok
                    batch.pos[k] = p
                    batch.n_seq_id[k] = 1
                    batch.seq_id[k][0] = 0
                    w = bool(want(p))
                    batch.logits[k] = w
                    if w:
                        rows.append((k, p))
                batch.n_tokens = len(chunk)
                rc = L.llama_decode(self.ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode failed: {rc}")
                for k, p in rows:
                    ptr = L.llama_get_logits_ith(self.ctx, k)
                    out[p] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
            finally:
                L.llama_batch_free(batch)
        return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


def topk_entry(logits: np.ndarray, k: int = TOP_K) -> dict:
    lp = log_softmax(logits)
    # sort by descending logit, ties by ascending id (stable sort of -lp)
    order = np.argsort(-lp, kind="stable")[:k]
    return {
        "top_ids": [int(i) for i in order],
        "top_logprobs": [r6(float(lp[i])) for i in order],
    }


def model_path(name: str) -> Path:
    p = MODELS_DIR / MODELS[name]
    if not p.exists():
        raise SystemExit(f"model {name} not found at {p} (set ZETA_MODELS)")
    return p


def header(name: str, path: Path, llm: Llama, **extra) -> dict:
    return {
        "model": MODELS.get(name, path.name),
        "sha256_of_model_file": sha256_file(path),
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "llama_cpp_commit_full": LLAMA_CPP_COMMIT_FULL,
        "n_vocab": llm.n_vocab,
        "add_bos": llm.add_bos,
        "settings": llm.settings,
        **extra,
    }


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    tmp.replace(path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


# ---------------------------------------------------------------------------------------------
# texts
# ---------------------------------------------------------------------------------------------

LONG_MODULES = [
    "textwrap", "string", "json", "re", "argparse", "collections", "functools", "subprocess", "logging",
    "statistics",
]


def cmd_texts(_args) -> None:
    """Write texts/long.txt: module, class and function docstrings of Python standard library modules
    (PSF licence), in a fixed order.  The short texts are hand-written and committed as is."""
    import importlib

    parts: list[str] = []
    for modname in LONG_MODULES:
        mod = importlib.import_module(modname)
        doc = inspect.getdoc(mod)
        if doc:
            parts.append(f"Module {modname}\n\n{doc}\n")
        names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
        for n in sorted(set(names)):
            obj = getattr(mod, n, None)
            if obj is None or getattr(obj, "__module__", modname) != modname:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            d = inspect.getdoc(obj)
            if d and len(d) > 80:
                parts.append(f"{modname}.{n}\n\n{d}\n")
    text = "\n".join(parts)
    text = re.sub(r"[ \t]+\n", "\n", text)
    path = OUT / "texts" / "long.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(text)} chars, python {sys.version.split()[0]})")


def read_text(name: str) -> str:
    return (OUT / "texts" / name).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# teacher-forced logits
# ---------------------------------------------------------------------------------------------


def cmd_logits(args) -> None:
    for name in args.models:
        path = model_path(name)
        t0 = time.time()
        llm = Llama(path, n_ctx=1024)
        texts = []
        for tname in SHORT_TEXTS:
            toks = llm.tokenize(read_text(tname))
            assert len(toks) <= 1024
            llm.clear()
            lg = llm.decode(toks, 0, lambda p: True)
            texts.append({
                "name": tname,
                "tokens": toks,
                "positions": [topk_entry(lg[p]) for p in range(len(toks))],
            })
            print(f"  {name} {tname}: {len(toks)} tokens")
        obj = header(name, path, llm, top_k=TOP_K, texts=texts)
        llm.free()
        write_json(OUT / f"logits_{name}.json", obj)
        print(f"  {name}: {time.time() - t0:.1f}s")


# ---------------------------------------------------------------------------------------------
# greedy generation
# ---------------------------------------------------------------------------------------------

PROMPTS = [
    "The capital of France is",
    "Question: What is the boiling point of water at sea level in degrees Celsius?\nAnswer:",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Here is a list of five fruits:\n1. Apple\n2.",
    "Once upon a time, in a small village by the sea,",
    "Translate to French: 'Good morning, how are you?'\nFrench:",
    "Der schnellste Weg von Berlin nach München ist",
    "El sol es una estrella que",
    "東京は日本の首都です。",
    "import numpy as np\n\n# create a 3x3 identity matrix\nm =",
    "The three primary colors are",
    "Q: If a train travels 60 km in 1 hour, how far does it travel in 3 hours?\nA:",
    "SELECT name, age FROM users WHERE",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "What is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nName three planets in the solar system.<end_of_turn>\n<start_of_turn>model\n",
    "Write a haiku about autumn leaves:\n",
    "Steps to make a cup of tea:\n-",
    "The quick brown fox",
    "In 1969, Neil Armstrong",
    "<html>\n<head>\n  <title>My Page</title>\n</head>\n<body>\n",
    "Привет! Как дела?",
    "fn main() {\n    let v = vec![1, 2, 3];\n",
    "A, B, C, D, E, F,",
    "Water is made of hydrogen and",
]


def cmd_greedy(args) -> None:
    n_gen = 32
    for name in args.models:
        path = model_path(name)
        t0 = time.time()
        llm = Llama(path, n_ctx=512)
        sparams = L.llama_sampler_chain_default_params()
        smpl = L.llama_sampler_chain_init(sparams)
        L.llama_sampler_chain_add(smpl, L.llama_sampler_init_greedy())
        items = []
        for prompt in PROMPTS:
            toks = llm.tokenize(prompt)
            llm.clear()
            L.llama_sampler_reset(smpl)
            last = len(toks) - 1
            llm.decode(toks, 0, lambda p, last=last: p == last)
            gen: list[int] = []
            pos = len(toks)
            stopped_eog = False
            for _ in range(n_gen):
                tok = L.llama_sampler_sample(smpl, llm.ctx, -1)
                gen.append(int(tok))
                if L.llama_vocab_is_eog(llm.vocab, tok):
                    stopped_eog = True
                    break
                llm.decode([tok], pos, lambda p: True)
                pos += 1
            items.append({
                "prompt": prompt,
                "prompt_tokens": toks,
                "generated": gen,
                "stopped_at_eog": stopped_eog,
            })
        L.llama_sampler_free(smpl)
        obj = header(name, path, llm, n_generate=n_gen, sampler="llama_sampler_init_greedy", prompts=items)
        llm.free()
        write_json(OUT / f"greedy_{name}.json", obj)
        print(f"  {name}: {time.time() - t0:.1f}s")


# ---------------------------------------------------------------------------------------------
# perplexity
# ---------------------------------------------------------------------------------------------

PPL_CTX = 256
PPL_CHUNKS = 8


def ppl_python(llm: Llama, text: str, n_ctx: int, n_chunks: int) -> dict:
    """Reimplementation of llama-perplexity's perplexity() (n_seq = 1, ppl_stride = 0)."""
    tokens = llm.tokenize(text)  # common_tokenize(ctx, text, add_special=true, parse_special=false)
    bos = L.llama_vocab_bos(llm.vocab)
    n_chunk = min(n_chunks, len(tokens) // n_ctx)
    first = n_ctx // 2
    nll = 0.0
    count = 0
    chunks = []
    for i in range(n_chunk):
        chunk = tokens[i * n_ctx : (i + 1) * n_ctx]
        inp = list(chunk)
        if llm.add_bos:
            inp[0] = bos
        llm.clear()
        lg = llm.decode(inp, 0, lambda p: p >= first)
        c_nll = 0.0
        for j in range(first, n_ctx - 1):
            lp = log_softmax(lg[j])
            c_nll += -float(lp[chunk[j + 1]])
        nll += c_nll
        count += n_ctx - 1 - first
        chunks.append({
            "chunk": i + 1,
            "nll_sum": c_nll,
            "n_scored": n_ctx - 1 - first,
            "chunk_ppl": math.exp(c_nll / (n_ctx - 1 - first)),
            "cumulative_ppl": math.exp(nll / count),
        })
    return {"n_tokens_text": len(tokens), "n_chunk": n_chunk, "ppl": math.exp(nll / count), "chunks": chunks}


def cmd_perplexity(args) -> None:
    text_path = OUT / "texts" / "long.txt"
    text = text_path.read_text(encoding="utf-8")
    results = {}
    for name in args.models:
        path = model_path(name)
        runs = []
        for fa in ("off", "on"):
            cmd = [
                str(BIN / "llama-perplexity"), "-m", str(path), "-f", str(text_path),
                "-c", str(PPL_CTX), "-b", str(PPL_CTX), "--chunks", str(PPL_CHUNKS),
                "-t", str(N_THREADS), "-fa", fa,
            ]
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            dt = time.time() - t0
            outerr = proc.stdout + proc.stderr
            if proc.returncode != 0:
                raise SystemExit(f"llama-perplexity failed:\n{outerr[-3000:]}")
            cum = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", outerr)]
            m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", outerr)
            runs.append({
                "command": "llama-perplexity -m " + MODELS[name] + " -f texts/long.txt"
                + f" -c {PPL_CTX} -b {PPL_CTX} --chunks {PPL_CHUNKS} -t {N_THREADS} -fa {fa}",
                "flash_attn": fa,
                "final_ppl": float(m.group(1)) if m else None,
                "final_ppl_stderr": float(m.group(2)) if m else None,
                "cumulative_ppl_per_chunk": cum,
                "seconds": round(dt, 2),
            })
            print(f"  {name} -fa {fa}: PPL {runs[-1]['final_ppl']} {cum}")
        llm = Llama(path, n_ctx=PPL_CTX, n_batch=PPL_CTX, n_ubatch=PPL_CTX)
        py = ppl_python(llm, text, PPL_CTX, PPL_CHUNKS)
        print(f"  {name} python (fa off): PPL {py['ppl']:.6f}")
        results[name] = {
            "model": MODELS[name],
            "sha256_of_model_file": sha256_file(path),
            "add_bos": llm.add_bos,
            "llama_perplexity": runs,
            "python_reimplementation": {"settings": llm.settings, **py},
        }
        llm.free()
    obj = {
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "text": "texts/long.txt",
        "n_ctx": PPL_CTX,
        "n_chunks": PPL_CHUNKS,
        "models": results,
    }
    write_json(OUT / "perplexity.json", obj)


# ---------------------------------------------------------------------------------------------
# long context
# ---------------------------------------------------------------------------------------------

LONG_N = 8192


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cmd_longctx(args) -> None:
    text = read_text("long.txt")
    for name in args.models:
        path = model_path(name)
        t0 = time.time()
        llm = Llama(path, n_ctx=LONG_N)
        toks = llm.tokenize(text)
        if len(toks) < LONG_N:
            raise SystemExit(f"long.txt has only {len(toks)} tokens for {name}")
        toks = toks[:LONG_N]
        want = set(LONGCTX_POSITIONS)
        llm.clear()
        lg = llm.decode(toks, 0, lambda p: p in want)
        dt = time.time() - t0
        positions = [{"pos": p, **topk_entry(lg[p])} for p in LONGCTX_POSITIONS]
        obj = header(
            name, path, llm, top_k=TOP_K, n_ctx_train=L.llama_model_n_ctx_train(llm.model),
            seconds=round(dt, 1), peak_rss_mib_of_generator_process=round(rss_mib()),
            tokens=toks, positions=positions,
        )
        llm.free()
        write_json(OUT / f"longctx_{name}.json", obj)
        print(f"  {name}: {dt:.1f}s, peak RSS {rss_mib():.0f} MiB")


# ---------------------------------------------------------------------------------------------
# synthetic tiny models
# ---------------------------------------------------------------------------------------------

SYNTH_TOKENS = [1, 17, 300, 42, 99, 256, 7, 511, 128, 64, 3, 450, 200, 33, 77, 410, 5, 260, 301, 12, 88, 499, 150, 2]


def cmd_synth(args) -> None:
    synth_dir = OUT / "synth"
    here = Path(__file__).resolve().parent
    subprocess.run([sys.executable, str(here / "synth_tiny.py"), str(synth_dir)], check=True)
    for gguf_path in sorted(synth_dir.glob("*.gguf")):
        stem = gguf_path.stem  # e.g. qwen2-tiny
        llm = Llama(gguf_path, n_ctx=64)
        llm.clear()
        lg = llm.decode(SYNTH_TOKENS, 0, lambda p: True)
        arch = llm.meta("general.architecture")
        obj = {
            "model": f"synth/{gguf_path.name}",
            "sha256_of_model_file": sha256_file(gguf_path),
            "llama_cpp_commit": LLAMA_CPP_COMMIT,
            "architecture": arch,
            "n_vocab": llm.n_vocab,
            "settings": llm.settings,
            "tokens": SYNTH_TOKENS,
            "text_tokens": llm.tokenize("Hello world, this is zeta."),
            "logits": [[r6(float(v)) for v in lg[p]] for p in range(len(SYNTH_TOKENS))],
        }
        llm.free()
        write_json(synth_dir / f"logits_{stem.replace('-tiny', '')}.json", obj)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["texts", "logits", "greedy", "perplexity", "longctx", "synth", "all"])
    ap.add_argument("--models", default="smollm2,gemma3", help="comma-separated: smollm2,gemma3")
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    cmds = {
        "texts": cmd_texts, "logits": cmd_logits, "greedy": cmd_greedy, "perplexity": cmd_perplexity,
        "longctx": cmd_longctx, "synth": cmd_synth,
    }
    order = ["logits", "greedy", "perplexity", "longctx", "synth"] if args.what == "all" else [args.what]
    for c in order:
        print(f"== {c}")
        cmds[c](args)


if __name__ == "__main__":
    main()
