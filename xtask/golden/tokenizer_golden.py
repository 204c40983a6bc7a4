#!/usr/bin/env python3
"""Golden data for zeta's tokenizer (crates/model/src/tokenizer), from llama.cpp.

How to run (from the repository root):

    # 1. (re)write the corpus of test strings (deterministic; --random N for a bigger, uncommitted
    #    stress corpus: all 9 configurations matched llama.cpp on 5,000+ random mixtures)
    python3 xtask/golden/tokenizer_golden.py corpus
    # 2. token ids from the llama.cpp reference build, for both real models
    PYTHONPATH=/work/ref/llama_cpp_python-0.3.36 LLAMA_CPP_LIB_PATH=/work/ref/build/bin \
        python3 xtask/golden/tokenizer_golden.py golden
    # 3. (only when changing Unicode versions) regenerate the Unicode category table
    pip install unicodedata2==15.1.0
    python3 xtask/golden/tokenizer_golden.py unicode-table [--check /path/to/llama.cpp/src/unicode-data.cpp]

What it needs:
  * `corpus`: nothing but Python 3.
  * `golden`: the llama-cpp-python 0.3.36 sources (its ctypes bindings) and a libllama.so built from the
    llama.cpp commit they vendor (0c1e570); the two models under $ZETA_MODELS (default ~/.cache/zeta/models):
    SmolLM2-135M-Instruct.Q4_1.gguf and gemma-3-270m-q4_k_m.gguf. Only the vocabulary is loaded.
  * `unicode-table`: the `unicodedata2` package at version 15.1.0 (the Unicode version llama.cpp's
    src/unicode-data.cpp was generated from). With --check it also verifies that every code point gets the
    same category flags as llama.cpp's table.

Outputs (committed):
  crates/model/tests/golden/tokenizer_corpus.json     list of strings
  crates/model/tests/golden/tokenizer_smollm2.json    ids per corpus string, pieces, EOG set, ...
  crates/model/tests/golden/tokenizer_gemma3.json
  crates/model/tests/golden/tokenizer_<variant>.json  the same vocabularies with other pre-tokenizers/flags
                                                      (see VARIANTS; needs the `gguf` Python package)
  crates/model/src/tokenizer/unicode_table.rs         (unicode-table only)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "crates" / "model" / "tests" / "golden"
CORPUS = GOLDEN / "tokenizer_corpus.json"
TABLE = ROOT / "crates" / "model" / "src" / "tokenizer" / "unicode_table.rs"

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}


# ---------------------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------------------


def build_corpus(n_random: int = 260) -> list[str]:
    c: list[str] = []
    # trivial
    c += ["", " ", "  ", "   ", "a", "A", "\n", "\t", "\r\n", "\r", " \n", "\n ", "\n\n", "\n\n\n", " a", "a "]
    # ASCII prose
    c += [
        "Hello world",
        "Hello, world!",
        "hello world",
        "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness...",
        "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
        "I saw a saw saw a saw.",
        "Mr. Smith went to Washington D.C. on Jan. 5th.",
        "e.g. i.e. etc. vs. a.k.a.",
        "Supercalifragilisticexpialidocious",
        "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
        "camelCaseIdentifier snake_case_identifier kebab-case-identifier SCREAMING_SNAKE",
        "HTTPServerError XMLHttpRequest iPhone eBay McDonald",
        "a b c d e f g h i j k l m n o p q r s t u v w x y z",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abababababababababababababababababab",
        "The year 2024 was a leap year; 2025 is not.",
        "What is the capital of France? The capital of France is Paris.",
        "Translate to French: I like cheese.",
        "user: hi\nassistant: hello! how can I help you today?",
    ]
    # numbers
    c += [
        "0", "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678", "123456789", "1234567890",
        "3.14159265358979323846", "-42", "+7", "1e10", "6.022e23", "0x1F", "0b1010", "1,000,000", "1.000.000,50",
        "$100", "100%", "50/50", "24/7", "9:30am", "2024-01-15", "12:34:56.789", "v1.2.3", "192.168.0.1",
        "+1 (555) 123-4567", "3rd 2nd 1st 4th 21st", "abc123def456", "123abc", "1 2 3 4 5", "  42  ",
        "99999999999999999999999999999999999999999999999999", "0000000", "1/2 + 1/3 = 5/6", "x^2 + y^2 = z^2",
        "١٢٣٤٥ ٦٧٨٩٠", "१२३४५", "一二三 123", "①②③ ⅠⅡⅢ ½ ¾ ²³", "٣.١٤", "１２３４５", "𝟏𝟐𝟑",
    ]
    # punctuation
    c += [
        "!", "?", ".", ",", "...", "!!!", "?!", "!?", "--", "---", "—", "–", "…", "''", '""', "``", "'", '"',
        "(parenthesized)", "[bracketed]", "{braced}", "<angled>", "a,b,c", "a;b;c", "a:b:c", "a|b|c", "a/b\\c",
        "#hashtag @mention", "email@example.com", "https://example.com/path?query=1&b=2#frag",
        "C:\\Users\\name\\file.txt", "/usr/local/bin/zeta", "~/.cache/zeta", "!@#$%^&*()_+-=[]{}|;':\",./<>?",
        "«guillemets» „quotes“ “smart” ‘single’", "¿Qué? ¡Sí!", "a -- b", "a - b", "end.", "end. ", ". start",
        "He said, \"Hello.\"", "(((nested)))", "***bold***", "__init__", "...and then?", "x = y + z;",
    ]
    # contractions
    c += [
        "it's", "don't", "you're", "we've", "I'm", "they'll", "he'd", "IT'S", "DON'T", "YOU'RE", "WE'VE", "I'M",
        "THEY'LL", "HE'D", "It'S", "Don'T", "You'Re", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T",
        "'RE", "'Ve", "'LL", "'D", "'x", "rock 'n' roll", "the '90s", "James's car", "the dogs' bones",
        "I'd've", "y'all'd've", "can't won't shouldn't", "o'clock", "'quoted'", "l'homme", "dell'arte",
        "it’s (curly apostrophe)", "'''triple'''", "don 't", "don' t",
    ]
    # whitespace
    c += [
        "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a\r\nb", "a\r\n\r\nb", "a \n b",
        "  leading", "    leading four", "\tleading tab", "\nleading newline", "trailing  ", "trailing\t",
        "trailing\n", "trailing \n", "trailing\n\n", " both ", "  both  ", "\t \t", " \t\n\r\u000b\u000c ",
        "line1\nline2\nline3", "para1\n\npara2\n\n\npara3", "a \t b", "word\u00a0word", "word\u2003word",
        "word\u3000word", "a\u2028b", "a\u0085b", "a\u200bb", "        ", "\n\n\n\n\n\n\n\n\n\n", "\t\t\t\t",
        " \n \n \n", "x" + " " * 40 + "y", "\r\r\r", "\n\r", " \r\n ",
    ]
    # unicode scripts
    c += [
        "café", "naïve", "résumé", "Ångström", "Straße", "Œuvre", "ÀÉÎÕÜ àéîõü", "façade", "jalapeño",
        "Ελληνικά γράμματα", "Καλημέρα κόσμε", "Привет, мир!", "Съешь же ещё этих мягких французских булок",
        "مرحبا بالعالم", "السلام عليكم ورحمة الله", "שלום עולם", "עברית מימין לשמאל", "नमस्ते दुनिया",
        "हिन्दी भाषा", "สวัสดีชาวโลก", "ภาษาไทย", "你好，世界！", "中文字符测试", "我爱北京天安门。",
        "漢字とひらがなとカタカナ", "こんにちは世界", "カタカナ", "ｶﾀｶﾅ", "안녕하세요 세계", "한국어 텍스트",
        "Tiếng Việt có dấu", "Türkçe İstanbul ığüşöç", "Polski: zażółć gęślą jaźń", "Čeština: příliš žluťoučký kůň",
        "Română: ăâîșț", "Magyar: árvíztűrő tükörfúrógép", "Íslenska: þ ð æ", "Georgian: ქართული",
        "Armenian: Հայերեն", "Amharic: አማርኛ", "Tamil: தமிழ்", "Bengali: বাংলা", "Gujarati: ગુજરાતી",
        "Mongolian: Монгол", "Tibetan: བོད་ཡིག", "Khmer: ភាសាខ្មែរ", "Lao: ພາສາລາວ", "Burmese: မြန်မာ",
        "Sinhala: සිංහල", "Cherokee: ᏣᎳᎩ", "Runic: ᚠᚢᚦᚨᚱᚲ", "Gothic: 𐌰𐌱𐌲", "Deseret: 𐐷𐐸𐐹",
        "Math: ∀x∈ℝ, ∃y: x²+y²≥0", "Arrows: ← → ↑ ↓ ⇒ ⇔", "Box: ┌─┐│└┘", "Currency: € £ ¥ ₹ ₽ ₿ ¢",
        "Symbols: © ® ™ § ¶ † ‡ • °", "Greek math: α β γ δ ε π σ ω Σ Ω", "mixed 中文 and English",
        "日本語のテキスト、句読点。", "Ünïcödé wïth dïäcrïtïcs", "ﬁ ﬂ ﬀ ligatures", "ℌ𝔢𝔩𝔩𝔬 𝕎𝕠𝕣𝕝𝕕",
        "Ⓗⓔⓛⓛⓞ", "ｆｕｌｌｗｉｄｔｈ", "\u0130stanbul", "\u017ftraße", "K\u212a", "Ǆ ǅ ǆ",
    ]
    # emoji
    c += [
        "😀", "😀😃😄😁", "I ❤️ you", "👍", "👍🏻👍🏼👍🏽👍🏾👍🏿", "👨‍👩‍👧‍👦", "👩‍💻", "🏳️‍🌈", "🇺🇸🇬🇧🇯🇵",
        "🇫🇷", "🧑🏽‍🚀", "✨🎉🎊", "emoji in text 🚀 launch", "🙂🙃", "⌚⌛", "☀️☁️☂️", "1️⃣2️⃣3️⃣", "#️⃣",
        "🤷‍♂️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🐈‍⬛", "❤️‍🔥", "👁️‍🗨️", "🫠🫡🫢", "🦀 Rust", "🐍 Python",
    ]
    # combining marks and odd code points
    c += [
        "e\u0301", "cafe\u0301", "a\u0300\u0301\u0302\u0303", "Z\u0351\u0352\u0353a\u0354l\u0355g\u0356o",
        "n\u0303", "\u0915\u094d\u0937", "\u200d", "\u200c", "\ufeffBOM", "\ufffd", "\ufffd\ufffd", "\u0000",
        "a\u0000b", "\u0001\u0002\u0003", "\u007f", "\u0080\u0081", "\ue000 private use", "\U000f0000",
        "\U0010fffd", "\u0378 unassigned", "\U000e0001", "\u2060", "\u00ad soft hyphen", "\u034f",
        "x\u20dd", "\u1100\u1161\u11a8",
    ]
    # code
    c += [
        "def foo(x):\n    return x + 1\n",
        "import numpy as np\nprint(np.arange(10).sum())",
        "class Foo:\n    def __init__(self):\n        self.x = 0\n",
        "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)",
        "fn main() {\n    println!(\"Hello, world!\");\n}\n",
        "let v: Vec<u32> = (0..10).map(|x| x * 2).collect();",
        "impl<'a, T: Clone + 'a> Iterator for Foo<'a, T> { type Item = &'a T; }",
        "#[derive(Debug, Clone)]\npub struct Point { x: f32, y: f32 }",
        '{"key": "value", "num": 42, "arr": [1, 2, 3], "nested": {"a": null, "b": true}}',
        '[{"id":1},{"id":2}]',
        "<!DOCTYPE html>\n<html>\n<head><title>Test</title></head>\n<body><p class=\"x\">Hi</p></body>\n</html>",
        "<div id=\"main\"><span>text</span><br/></div>",
        "<table><tr><td>1</td><td>2</td></tr></table>",
        "SELECT * FROM users WHERE id = 1 AND name LIKE '%bob%';",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
        "const f = async (a, b) => { await g(a ?? b); };",
        "x += 1; y -= 2; z *= 3; w /= 4; a != b; a == b; a <= b; a >= b; a && b || c",
        "if (a->b) { c::d(); } // comment\n/* block */",
        "$ cargo build --release && ./target/release/zeta run -m model.gguf",
        "git commit -m 'fix: tokenizer'",
        "    indented code\n        more indented\n",
        "```python\nprint('hi')\n```",
        "| col1 | col2 |\n|------|------|\n| a    | b    |",
        "- item 1\n- item 2\n  - nested\n* star",
        "# Heading\n## Subheading\n**bold** _italic_ `code`",
        "key: value\nlist:\n  - a\n  - b\n",
        "x=1\ny=2\n[section]\nname = \"zeta\"",
        "λx.λy.x", "a<b>c</b>d", "<<<>>>", "=====", "____", "~~~~", "\\n\\t\\r", "0.5f32 as u8",
    ]
    # special tokens written in text
    specials = [
        "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<s>", "</s>",
        "<|endoftext|>", "<pad>", "<unk>", "<mask>", "<unused0>", "<unused98>", "[multimodal]", "<repo_name>",
        "<file_sep>", "<b>", "</b>", "<h1>", "<table>",
    ]
    c += specials
    c += [
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
        "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n",
        "<bos><start_of_turn>user\nWrite a poem.<end_of_turn>\n<start_of_turn>model\nRoses are red<end_of_turn>",
        "<s>[INST] hi [/INST]</s>", "text<|endoftext|>more text", "<|endoftext|><|endoftext|>",
        "<|im_end|><|im_start|>", "<|im_start|><|im_start|>", "a<bos>b<eos>c", " <bos> ", "<bos>",
        "<|im_start", "im_start|>", "<|im_start|", "<<|im_start|>>", "<|IM_START|>", "< |im_start| >",
        "<start_of_turn", "<end_of_turn >", "<s >", "</ s>", "<s><s></s></s>", "<b>bold</b> <i>it</i>",
        "<unused12> <unused123>", "\n<end_of_turn>\n", "  <start_of_turn>  ", "<|endoftext|>\n\n",
        "hello<|im_end|>", "<|im_start|>assistant", "<repo_name>zeta<file_sep>src/main.rs\nfn main(){}",
        "<h1>Title</h1>\n<table><tr><td>x</td></tr></table>",
        "a </s>  b", "x <mask> y", "  <mask>", "\t<mask>\n", "<|im_end|>\n\nnext", "<s> hi </s> ",
        "<|endoftext|>  z", "<unk> \t q", "<repo_name>   x", "<filename> \n y",
    ]
    # mixtures
    c += [
        "Hello 世界! 123 café 😀 <|im_end|> \n\t end",
        "Привет 👋 how are you? 我很好。",
        "The price is €42.50 (≈ $45.99) — cheap!",
        "数学: 1+1=2, α+β=γ",
        "🇺🇸 USA: 331,000,000 people; 🇯🇵 日本: 125,000,000人",
        "mixedCASE123with456NUMBERS",
        "a1b2c3d4e5", "   \n\t  mixed   \n  whitespace\t\t\n",
        "ALL CAPS SENTENCE WITH NUMBERS 1234 AND PUNCTUATION!!!",
        "naïve café résumé — “quoted” ‘text’ … ellipsis",
        "x² + y³ = z⁴", "H₂O CO₂", "10°C = 50°F", "½ cup + ¼ tsp",
        "Ok.\nOk!\nOk?\n", "yes/no", "and/or", "e-mail", "re-enter", "pre-\ntrained",
        "tab\tseparated\tvalues\n1\t2\t3", "comma,separated,values\n1,2,3",
        "user@host:~$ ls -la", "C++ C# F# .NET", "A/B testing", "R&D", "AT&T", "Q&A",
        "don't stop   believing", "It's 3 o'clock, isn't it?", "'Tis the season",
        "\"Quotes\" and 'apostrophes' and `backticks`", "Hello\u200bWorld", "ab\u0301c",
        "Здравствуйте! Как дела? 123", "שלום 123 world", "مرحبا 123 world", "ไทย123abc",
        "한국어와 English 섞기", "日本語とEnglish混在", "αβγ123ΑΒΓ", "Ωmega", "ǅemal",
    ]
    # very long words and repetitive text
    c += [
        "a" * 300,
        "ab" * 200,
        "xyz" * 150,
        "Llanfairpwllgwyngyllgogerychwyndrobwllllantysiliogogogoch",
        "1234567890" * 20,
        "😀" * 50,
        "中" * 100,
        "word " * 60,
        "\n" * 50,
        " " * 100,
        "\t" * 30,
        "abc " * 30 + "\n" * 3 + "def" * 30,
        "-" * 80,
        "=" * 64,
        "." * 50,
        "A" * 100 + "b" * 100,
        "ThisIsAVeryLongCamelCaseIdentifierThatKeepsGoingAndGoingWithoutAnySpacesAtAll" * 3,
        "https://www.example.com/" + "very/long/path/" * 10 + "index.html",
        "é" * 80,
        "Ж" * 80,
        "🇺🇸" * 20,
    ]
    # invalid-looking sequences (all valid UTF-8; escapes written literally)
    c += [
        "\\xff\\xfe", "\\u0000", "%C3%A9", "&amp; &lt; &gt; &#39; &#x1F600;", "<0x0A>", "<0xFF>", "<0x00>",
        "▁", "▁▁", "a▁b", "Ġ", "Ċ", "ĠĠ", "Ġhello", "âĢĻ", "[UNK]", "[CLS] [SEP]", "<unk>text",
        "\ud7ff\ue000", "\U0001f600\U0001f601", "\x7f\x80", "\u00ff\u0100", "\u0100\u0101",
    ]
    # seeded random mixtures of the awkward pieces above (special-token texts and their fragments
    # next to each other, white space runs, marks after spaces, digits after letters, ...)
    rng = random.Random(20261123)
    pool = [
        "the", "The", "HELLO", "word", "x", "Zeta", "a", "I", "12", "7", "2024", "0", "3.5", " ", "  ", "   ", "\n",
        "\n\n", "\t", "\r\n", "\r", "\u000b", ".", ",", "!", "?", "...", "'", "'s", "'T", "'re", "'ll", "\"", "(",
        ")", "[", "]", "{", "}", "<", ">", "/", "\\", "-", "_", "=", "+", "*", "#", "$", "%", "&", "|", "~", "^", "`",
        "@", ":", ";", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<start_of_turn>", "<end_of_turn>", "<bos>",
        "<eos>", "<s>", "</s>", "<b>", "</b>", "<unused5>", "<mask>", "<unk>", "<filename>", "[multimodal]",
        "<repo_name>", "<reponame>", "<pad>",
        "<|im_", "start|>", "<end_of", "_turn>", "<|", "|>", "é", "ß", "中文", "ア", "한국", "عربي", "עב", "ก", "क्ष",
        "\u0301", "\u0308", "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇯🇵", "\u00a0", "\u3000", "\u2028", "\u0085", "١٢",
        "½", "Ⅻ", "²", "€", "©", "→", "∑", "\u0000", "\u007f", "\ufeff", "\u200b", "\ue000", "\u0378", "▁", "Ġ",
        "Ω", "İ", "ǅ", "ſ", "K",
    ]
    def random_cp() -> str:  # any scalar value, biased to the BMP
        while True:
            cp = rng.randint(0x80, 0x2FFFF if rng.random() < 0.9 else 0x10FFFF)
            if not 0xD800 <= cp <= 0xDFFF:
                return chr(cp)

    for _ in range(n_random):
        n = rng.randint(1, 24)
        c.append("".join(random_cp() if rng.random() < 0.1 else rng.choice(pool) for _ in range(n)))
    # dedupe, keep order
    seen = set()
    out = []
    for s in c:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def cmd_corpus(args) -> None:
    corpus = build_corpus(args.random)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    CORPUS.write_text(json.dumps(corpus, ensure_ascii=True, indent=0) + "\n")
    print(f"wrote {len(corpus)} strings to {CORPUS}")


# ---------------------------------------------------------------------------------------------------------
# golden ids from llama.cpp
# ---------------------------------------------------------------------------------------------------------


# Variants: a real model's vocabulary with some metadata replaced (None = key removed), to test the
# other pre-tokenizers and flags against llama.cpp. The Rust test builds the same variant in memory.
VARIANTS = {
    "smollm2_default": ("smollm2", {"tokenizer.ggml.pre": "default"}),
    "smollm2_llama3": ("smollm2", {"tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.add_bos_token": None}),
    "smollm2_qwen2": ("smollm2", {"tokenizer.ggml.pre": "qwen2"}),
    "smollm2_gpt2": ("smollm2", {"tokenizer.ggml.pre": "gpt-2"}),
    "gemma3_prefix": ("gemma3", {"tokenizer.ggml.add_space_prefix": True, "tokenizer.ggml.add_eos_token": True}),
    # "<mask>" gets LSTRIP for jina-v2 pre-tokenizer names (SPM ignores the name otherwise)
    "gemma3_lstrip": ("gemma3", {"tokenizer.ggml.pre": "jina-v2-es"}),
    # Phi-3 names: RSTRIP on special tokens; llama.cpp needs "</s>", "<unk>", "<s>" to exist, so three of
    # SmolLM2's control tokens are renamed ("key#index" = one element of an array of strings)
    "smollm2_phi3": ("smollm2", {
        "general.name": "Phi-3 mini (test)",
        "tokenizer.ggml.tokens#3": "</s>",
        "tokenizer.ggml.tokens#5": "<unk>",
        "tokenizer.ggml.tokens#6": "<s>",
    }),
}


def write_variant(src: Path, dst: Path, overrides: dict) -> None:
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    r = GGUFReader(src)
    w = GGUFWriter(dst, r.fields["general.architecture"].contents())
    elems = {}  # key -> {index: new string}
    for k, v in overrides.items():
        if "#" in k:
            key, idx = k.split("#")
            elems.setdefault(key, {})[int(idx)] = v
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in overrides:
            continue
        t = f.types[0]
        sub = f.types[1] if t == GGUFValueType.ARRAY and len(f.types) > 1 else None
        val = f.contents()
        for idx, v in elems.get(k, {}).items():
            val[idx] = v
        w.add_key_value(k, val, t, sub)
    for k, v in overrides.items():
        if v is None or "#" in k:
            continue
        t = {bool: GGUFValueType.BOOL, str: GGUFValueType.STRING, int: GGUFValueType.UINT32}[type(v)]
        w.add_key_value(k, v, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cmd_golden(args) -> None:
    import tempfile

    import llama_cpp  # noqa: F401  (needs PYTHONPATH / LLAMA_CPP_LIB_PATH, see the docstring)
    from llama_cpp import llama_cpp as L

    @ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    def _quiet(level, text, user_data):  # silence llama.cpp's loader logs
        pass

    L.llama_log_set(_quiet, ctypes.c_void_p())
    L.llama_backend_init()

    corpus = json.loads(CORPUS.read_text())
    models_dir = Path(os.environ.get("ZETA_MODELS", Path.home() / ".cache" / "zeta" / "models"))
    tmp = Path(tempfile.mkdtemp(prefix="zeta_tok_"))

    jobs = [(key, models_dir / fname, None) for key, fname in MODELS.items()]
    jobs += [(key, models_dir / MODELS[base], overrides) for key, (base, overrides) in VARIANTS.items()]
    for key, path, overrides in jobs:
        if args.model and not key.startswith(args.model):
            continue
        if not path.exists():
            print(f"SKIP {key}: {path} missing", file=sys.stderr)
            continue
        if overrides is not None:
            variant = tmp / f"{key}.gguf"
            write_variant(path, variant, overrides)
            path = variant
        params = L.llama_model_default_params()
        params.vocab_only = True
        model = L.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise SystemExit(f"failed to load {path}")
        vocab = L.llama_model_get_vocab(model)
        n_vocab = L.llama_vocab_n_tokens(vocab)

        def tokenize(text: str, add_special: bool, parse_special: bool) -> list[int]:
            b = text.encode("utf-8")
            n_max = len(b) + 16
            buf = (L.llama_token * n_max)()
            n = L.llama_tokenize(vocab, b, len(b), buf, n_max, add_special, parse_special)
            if n < 0:
                n_max = -n
                buf = (L.llama_token * n_max)()
                n = L.llama_tokenize(vocab, b, len(b), buf, n_max, add_special, parse_special)
            assert n >= 0
            return list(buf[:n])

        def piece(tok: int, special: bool) -> bytes:
            buf = ctypes.create_string_buffer(256)
            n = L.llama_token_to_piece(vocab, tok, buf, 256, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(vocab, tok, buf, -n, 0, special)
            return buf.raw[:n]

        def detok(ids: list[int], remove_special: bool, unparse_special: bool) -> bytes:
            arr = (L.llama_token * max(1, len(ids)))(*ids)
            cap = 64 + 64 * len(ids)
            buf = ctypes.create_string_buffer(cap)
            n = L.llama_detokenize(vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
            if n < 0:
                cap = -n
                buf = ctypes.create_string_buffer(cap)
                n = L.llama_detokenize(vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
            return buf.raw[:n]

        cases = []
        for i, text in enumerate(corpus):
            plain = tokenize(text, False, False)
            special = tokenize(text, False, True)
            case = {"i": i, "plain": plain, "special": special}  # "special" omitted below when == plain
            # add_special=True for a deterministic subset (every 7th string, plus the empty one), with
            # llama_detokenize(remove_special=true) of those ids
            if i % 7 == 0 or text == "":
                case["add_special"] = tokenize(text, True, True)
                case["detok_rm"] = detok(case["add_special"], True, True).hex()
            # llama_detokenize (remove_special=false) of the ids above, as hex bytes
            case["detok"] = detok(plain, False, False).hex()
            case["detok_special"] = detok(special, False, True).hex()
            # size: fields equal to their plain counterpart are left out (the test falls back)
            if case["special"] == plain:
                del case["special"]
            if case["detok_special"] == case["detok"]:
                del case["detok_special"]
            cases.append(case)

        out = {
            "model": path.name if overrides is None else MODELS[VARIANTS[key][0]],
            "overrides": overrides,
            "llama_cpp": "0c1e570 (llama-cpp-python 0.3.36)",
            "n_vocab": n_vocab,
            "bos": L.llama_vocab_bos(vocab),
            "eos": L.llama_vocab_eos(vocab),
            "add_bos": bool(L.llama_vocab_get_add_bos(vocab)),
            "add_eos": bool(L.llama_vocab_get_add_eos(vocab)),
            "eog": [t for t in range(n_vocab) if L.llama_vocab_is_eog(vocab, t)],
            "cases": cases,
        }
        if overrides is None:
            # pieces for a sample of ids: all of the first 300, every 997th, the last 10
            ids = set(range(min(300, n_vocab))) | set(range(0, n_vocab, 997)) | set(range(max(0, n_vocab - 10), n_vocab))
            out["pieces"] = {str(t): [piece(t, True).hex(), piece(t, False).hex()] for t in sorted(ids)}
        dst = GOLDEN / f"tokenizer_{key}.json"
        dst.write_text(json.dumps(out, separators=(",", ":")) + "\n")
        print(f"wrote {dst} ({len(cases)} cases, {dst.stat().st_size} bytes)")
        L.llama_model_free(model)


# ---------------------------------------------------------------------------------------------------------
# Unicode category table
# ---------------------------------------------------------------------------------------------------------

# llama.cpp's coarse category flags (src/unicode.h): one bit per general-category class.
FLAG = {
    "Cn": 0x01, "Cc": 0x80, "Cf": 0x80, "Co": 0x80, "Cs": 0x80,
    "Ll": 0x04, "Lm": 0x04, "Lo": 0x04, "Lt": 0x04, "Lu": 0x04,
    "Mc": 0x10, "Me": 0x10, "Mn": 0x10,
    "Nd": 0x02, "Nl": 0x02, "No": 0x02,
    "Pc": 0x20, "Pd": 0x20, "Pe": 0x20, "Pf": 0x20, "Pi": 0x20, "Po": 0x20, "Ps": 0x20,
    "Sc": 0x40, "Sk": 0x40, "Sm": 0x40, "So": 0x40,
    "Zl": 0x08, "Zp": 0x08, "Zs": 0x08,
}
WHITESPACE_BIT = 0x100
# Unicode White_Space property (PropList.txt), unchanged since Unicode 6.
WHITE_SPACE = list(range(0x09, 0x0E)) + [0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B)) + [
    0x2028, 0x2029, 0x202F, 0x205F, 0x3000]


def cmd_unicode_table(args) -> None:
    import unicodedata2 as ud

    if ud.unidata_version != "15.1.0":
        raise SystemExit(f"need unicodedata2 15.1.0 (Unicode 15.1, as llama.cpp), have {ud.unidata_version}")
    flags = [FLAG[ud.category(chr(c))] for c in range(0x110000)]
    for c in WHITE_SPACE:
        flags[c] |= WHITESPACE_BIT

    if args.check:
        import bisect
        import re

        src = Path(args.check).read_text()
        start = src.index("unicode_ranges_flags")
        end = src.index("};", start)
        ranges = [(int(a, 16), int(b, 16)) for a, b in re.findall(r"\{0x([0-9A-F]+), 0x([0-9A-F]+)\}", src[start:end])]
        starts = [r[0] for r in ranges]
        bad = 0
        for c in range(0x110000):
            ref = ranges[bisect.bisect_right(starts, c) - 1][1]
            if ref != flags[c] & 0xFF:
                bad += 1
        if bad:
            raise SystemExit(f"{bad} code points differ from {args.check}")
        print(f"category flags identical to {args.check}")

    runs = [(0, flags[0])]
    for c in range(1, 0x110000):
        if flags[c] != runs[-1][1]:
            runs.append((c, flags[c]))

    lines = [
        "//! Unicode code point classes as llama.cpp's tokenizer sees them (Unicode 15.1).",
        "//!",
        "//! GENERATED by `python3 xtask/golden/tokenizer_golden.py unicode-table` from `unicodedata2` 15.1.0",
        "//! (general category collapsed to one bit per class, plus the White_Space property). Do not edit.",
        "",
        "/// `(first code point, flags)`: the flags hold from `first` up to the next entry's `first - 1`; the",
        "/// last entry holds up to U+10FFFF. Flags: 0x01 unassigned, 0x02 number, 0x04 letter, 0x08 separator,",
        "/// 0x10 mark, 0x20 punctuation, 0x40 symbol, 0x80 control/format/private/surrogate, 0x100 white space.",
        "#[rustfmt::skip]",
        "pub(super) static RANGES: &[(u32, u16)] = &[",
    ]
    row = []
    for c, f in runs:
        row.append(f"(0x{c:06X},0x{f:03X}),")
        if len(row) == 6:
            lines.append("    " + "".join(row))
            row = []
    if row:
        lines.append("    " + "".join(row))
    lines.append("];")
    TABLE.write_text("\n".join(lines) + "\n")
    print(f"wrote {TABLE} ({len(runs)} ranges)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("--random", type=int, default=260, help="number of random mixtures (committed: 260)")
    g = sub.add_parser("golden")
    g.add_argument("--model", choices=sorted(MODELS))
    u = sub.add_parser("unicode-table")
    u.add_argument("--check", help="path to llama.cpp's src/unicode-data.cpp to compare against")
    args = p.parse_args()
    {"corpus": cmd_corpus, "golden": cmd_golden, "unicode-table": cmd_unicode_table}[args.cmd](args)


if __name__ == "__main__":
    main()
