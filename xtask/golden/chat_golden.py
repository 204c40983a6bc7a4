#!/usr/bin/env python3
"""Golden renderings of the real models' chat templates.

Renders each model's `tokenizer.chat_template` with Jinja2 the way Hugging
Face's `apply_chat_template` does (trim_blocks, lstrip_blocks,
`raise_exception`, `bos_token`/`eos_token`) for a set of conversations, and
writes crates/engine/tests/golden/chat_templates.json. zeta renders the same
templates with minijinja; the engine test compares the strings.

Needs: python3 with `gguf` and `jinja2` (pip install gguf jinja2).
Run:   ZETA_MODELS=~/.cache/zeta/models python3 xtask/golden/chat_golden.py
"""
import json
import os
import pathlib

import gguf
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "  Another one, please.  "},
    ],
    [{"role": "user", "content": "Unicode: héllo wörld — 日本語 🚀\nsecond line"}],
]


def field_str(reader, key):
    f = reader.fields[key]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def field_int(reader, key):
    f = reader.fields[key]
    return int(f.parts[f.data[0]][0])


def token_text(reader, idx):
    f = reader.fields["tokenizer.ggml.tokens"]
    return bytes(f.parts[f.data[idx]]).decode("utf-8")


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


def main():
    models_dir = pathlib.Path(os.environ.get("ZETA_MODELS", os.path.expanduser("~/.cache/zeta/models")))
    out = {"renderer": f"jinja2 {jinja2.__version__} (trim_blocks, lstrip_blocks)", "models": {}}
    for name, file in MODELS.items():
        reader = gguf.GGUFReader(models_dir / file)
        if "tokenizer.chat_template" in reader.fields:
            template, source = field_str(reader, "tokenizer.chat_template"), "gguf"
        else:
            # Same fallback as zeta's engine: the built-in template for the architecture.
            arch = field_str(reader, "general.architecture")
            builtin = "gemma.jinja" if arch == "gemma3" else "chatml.jinja"
            root = pathlib.Path(__file__).resolve().parents[2]
            template = (root / "crates/engine/src/templates" / builtin).read_text()
            source = f"builtin:{builtin}"
        bos = token_text(reader, field_int(reader, "tokenizer.ggml.bos_token_id"))
        eos = token_text(reader, field_int(reader, "tokenizer.ggml.eos_token_id"))
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        tmpl = env.from_string(template)
        cases = []
        for conv in CONVERSATIONS:
            for agp in (True, False):
                try:
                    text = tmpl.render(messages=conv, add_generation_prompt=agp, bos_token=bos, eos_token=eos)
                    cases.append({"messages": conv, "add_generation_prompt": agp, "text": text})
                except jinja2.exceptions.TemplateError as e:
                    cases.append({"messages": conv, "add_generation_prompt": agp, "error": str(e)})
        out["models"][name] = {"file": file, "template_source": source, "bos": bos, "eos": eos, "cases": cases}
    dst = pathlib.Path(__file__).resolve().parents[2] / "crates/engine/tests/golden/chat_templates.json"
    dst.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
