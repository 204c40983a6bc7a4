#!/usr/bin/env python3
"""Write tiny random-weight GGUF models (seeded, deterministic) for zeta's fast architecture tests.

How to run:
    python3 xtask/golden/synth_tiny.py [OUT_DIR]     (default: crates/model/tests/golden/synth)
Needs: numpy, gguf (pip; tested with gguf 0.19.0).  Normally run through
`xtask/golden/llama_golden.py synth`, which then stores llama.cpp's logits for each file.

Files written (all < 1 MB):
    qwen2-tiny.gguf        qwen2 arch, F16 matrices, q/k/v biases, separate output.weight
    qwen3-tiny.gguf        qwen3 arch, F32 matrices, q_norm/k_norm, tied output (no output.weight)
    qwen3-tiny-q8_0.gguf   same weights as qwen3-tiny, matrices quantized to Q8_0 (gguf-py's quantizer)
    llama-tiny.gguf        llama arch, F16 matrices, add_bos_token = true, rope NORM (not NEOX)
    gemma3-tiny.gguf       gemma3 arch, F32 matrices, q/k norm, post-attn/post-ffn norms, sliding window 8
                           with sliding_window_pattern 3 (layers 0,1 SWA, layer 2 global), freq_base_swa 10000

Shared shape: vocab 512 (256 GPT-2 byte tokens + 253 BPE merges learnt from a fixed English paragraph + 3
control tokens), n_embd 64, n_head 4, n_head_kv 2, head_dim 16, n_ff 128, 3 layers (qwen2: 2),
context_length 256.  Tokenizer: tokenizer.ggml.model "gpt2" (pre "qwen2"; llama-tiny uses "smollm").
Weights: normal(0, 0.08) matrices, normal(0, 0.5) token embeddings, norms 1 + normal(0, 0.1), biases normal(0, 0.05).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import gguf
import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "crates/model/tests/golden/synth"

N_VOCAB = 512
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 16
N_FF = 128
CTX = 256

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Hello world, this is zeta, a small inference engine "
    "written in Rust. It reads GGUF files, builds the transformer graph, and runs the model on the CPU. "
    "The model predicts the next token from the previous tokens; the tokenizer turns text into tokens and "
    "tokens back into text. In the beginning there was the word, and the word was a token. Numbers like "
    "1, 2, 3, 42 and 2024 are split into digits. def main(): print('hello') return 0 "
    "Attention is all you need: queries, keys and values, heads and layers, norms and feed forward networks. "
    "the the the and and of of to to in in is is that that it it with with for for on on as as at at by by"
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_vocab() -> tuple[list[str], list[int], list[str]]:
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    n_merges = N_VOCAB - 256 - len(SPECIALS)
    words = Counter()
    for w in re.findall(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", CORPUS):
        words[tuple(b2u[b] for b in w.encode("utf-8"))] += 1
    merges: list[str] = []
    vocab = set(tokens)
    while len(merges) < n_merges:
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        # most frequent pair; ties broken by the pair's text (deterministic)
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merged = a + b
        merges.append(f"{a} {b}")
        if merged not in vocab:
            vocab.add(merged)
            tokens.append(merged)
        new_words = Counter()
        for w, c in words.items():
            out = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += c
        words = new_words
    # pad with rare two-byte tokens if the corpus ran out of pairs (keeps the vocab size fixed)
    k = 0
    while len(tokens) < N_VOCAB - len(SPECIALS):
        a, b = tokens[65 + k % 26], tokens[65 + (k // 26) % 26]
        if a + b not in vocab:
            merges.append(f"{a} {b}")
            vocab.add(a + b)
            tokens.append(a + b)
        k += 1
    types = [1] * len(tokens)
    tokens += SPECIALS
    types += [3] * len(SPECIALS)
    assert len(tokens) == N_VOCAB and len(set(tokens)) == N_VOCAB
    return tokens, types, merges


def write_model(path: Path, arch: str, seed: int, n_layer: int, mat_type: str, *, biases=False, qk_norm=False,
                tied=False, gemma=False, pre="qwen2", add_bos=False, rope_base=10000.0) -> None:
    rng = np.random.default_rng(seed)
    tokens, types, merges = build_vocab()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"{arch}-tiny (random weights, zeta test)")
    w.add_context_length(CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(rope_base)
    if arch == "llama":
        w.add_rope_dimension_count(HEAD_DIM)
        w.add_vocab_size(N_VOCAB)
    if gemma:
        w.add_sliding_window(8)
        w.add_uint32(f"{arch}.attention.sliding_window_pattern", 3)
        w.add_rope_freq_base_swa(10000.0)
    ftype = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
             "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[mat_type]
    w.add_file_type(ftype)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(N_VOCAB - 3)
    w.add_eos_token_id(N_VOCAB - 1 if not add_bos else N_VOCAB - 3)
    w.add_add_bos_token(add_bos)

    def mat(name: str, rows: int, cols: int, std: float = 0.08) -> None:
        # numpy shape (rows, cols) == ggml ne [cols, rows]: `rows` outputs of length `cols`
        x = rng.normal(0.0, std, size=(rows, cols)).astype(np.float32)
        if mat_type == "F32":
            w.add_tensor(name, x)
        elif mat_type == "F16":
            w.add_tensor(name, x.astype(np.float16))
        else:
            q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def vec(name: str, n: int, mean: float, std: float) -> None:
        w.add_tensor(name, (mean + rng.normal(0.0, std, size=(n,))).astype(np.float32))

    n_q = N_HEAD * HEAD_DIM
    n_kv = N_HEAD_KV * HEAD_DIM
    mat("token_embd.weight", N_VOCAB, N_EMBD, 0.5)
    vec("output_norm.weight", N_EMBD, 1.0, 0.1)
    if not tied:
        mat("output.weight", N_VOCAB, N_EMBD, 0.08)
    for i in range(n_layer):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", N_EMBD, 1.0, 0.1)
        mat(p + "attn_q.weight", n_q, N_EMBD)
        mat(p + "attn_k.weight", n_kv, N_EMBD)
        mat(p + "attn_v.weight", n_kv, N_EMBD)
        if biases:
            vec(p + "attn_q.bias", n_q, 0.0, 0.05)
            vec(p + "attn_k.bias", n_kv, 0.0, 0.05)
            vec(p + "attn_v.bias", n_kv, 0.0, 0.05)
        if qk_norm:
            vec(p + "attn_q_norm.weight", HEAD_DIM, 1.0, 0.1)
            vec(p + "attn_k_norm.weight", HEAD_DIM, 1.0, 0.1)
        mat(p + "attn_output.weight", N_EMBD, n_q)
        if gemma:
            vec(p + "post_attention_norm.weight", N_EMBD, 1.0, 0.1)
        vec(p + "ffn_norm.weight", N_EMBD, 1.0, 0.1)
        mat(p + "ffn_gate.weight", N_FF, N_EMBD)
        mat(p + "ffn_up.weight", N_FF, N_EMBD)
        mat(p + "ffn_down.weight", N_EMBD, N_FF)
        if gemma:
            vec(p + "post_ffw_norm.weight", N_EMBD, 1.0, 0.1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write_model(OUT / "qwen2-tiny.gguf", "qwen2", seed=2, n_layer=2, mat_type="F16", biases=True,
                rope_base=1000000.0)
    write_model(OUT / "qwen3-tiny.gguf", "qwen3", seed=3, n_layer=3, mat_type="F32", qk_norm=True, tied=True,
                rope_base=1000000.0)
    write_model(OUT / "qwen3-tiny-q8_0.gguf", "qwen3", seed=3, n_layer=3, mat_type="Q8_0", qk_norm=True,
                tied=True, rope_base=1000000.0)
    write_model(OUT / "llama-tiny.gguf", "llama", seed=4, n_layer=3, mat_type="F16", pre="smollm", add_bos=True)
    write_model(OUT / "gemma3-tiny.gguf", "gemma3", seed=5, n_layer=3, mat_type="F32", qk_norm=True, tied=True,
                gemma=True, add_bos=True, rope_base=1000000.0)


if __name__ == "__main__":
    main()
