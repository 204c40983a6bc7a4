#!/usr/bin/env bash
# Build the llama.cpp reference (CPU only) that zeta's golden data is generated with.
#
# How to run:   ZETA_REF=/work/ref bash xtask/golden/build_llama_cpp.sh
# Needs:        curl, tar, cmake >= 3.14, make, a C/C++17 compiler (gcc 12 used), OpenMP (libgomp), python3 + pip.
# Produces:     $ZETA_REF/llama_cpp_python-0.3.36/          the llama-cpp-python 0.3.36 sdist (Python bindings)
#               $ZETA_REF/llama.cpp -> .../vendor/llama.cpp   vendored llama.cpp, commit 0c1e570
#               $ZETA_REF/build/bin/                         llama-{tokenize,perplexity,bench,completion,simple}
#                                                            and libllama.so, libggml*.so (all .so land in bin/)
#               $ZETA_REF/README.txt, $ZETA_REF/READY
# Afterwards:   python3 xtask/golden/llama_golden.py all
#
# CPU flags: GGML_NATIVE=OFF with AVX2/FMA/F16C/AVX512 and AMX off — a native build died with SIGILL on the
# Xeons this was made on.  Ninja looped on the sdist's tree, so Unix Makefiles is used; the sdist's files
# carry old/odd mtimes, so they are touched before configuring.
set -euo pipefail

REF="${ZETA_REF:-/work/ref}"
JOBS="${JOBS:-2}"
VERSION=0.3.36
URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-${VERSION}.tar.gz"
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SRC="$REF/llama_cpp_python-$VERSION"

mkdir -p "$REF"
if [ ! -d "$SRC" ]; then
    tarball="$REF/llama_cpp_python-$VERSION.tar.gz"
    echo "downloading $URL"
    curl -fsSL -o "$tarball" "$URL"
    echo "$SHA256  $tarball" | sha256sum -c -
    tar -xzf "$tarball" -C "$REF"
    find "$SRC" -exec touch {} +
fi
ln -sfn "$SRC/vendor/llama.cpp" "$REF/llama.cpp"

# Python bindings' runtime dependencies (the bindings are used from source, not built a second time)
python3 -m pip install --quiet numpy gguf diskcache jinja2 typing-extensions

cmake -S "$REF/llama.cpp" -B "$REF/build" -G "Unix Makefiles" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF 2>&1 | tee "$REF/configure.log"
{ cmake --build "$REF/build" -j"$JOBS" --target llama-tokenize llama-perplexity llama-bench llama-completion llama-simple; echo "exit $?"; } \
    2>&1 | tee "$REF/build.log"
grep -q '^exit 0$' "$REF/build.log"

# smoke test: the bindings load the freshly built library
PYTHONPATH="$SRC" LLAMA_CPP_LIB_PATH="$REF/build/bin" python3 -c "import llama_cpp; print('llama_cpp bindings', llama_cpp.__version__, 'OK')"

if [ ! -f "$REF/README.txt" ]; then
    cat > "$REF/README.txt" <<EOF
llama.cpp reference build for zeta (llama-cpp-python $VERSION sdist, vendored llama.cpp commit 0c1e570), CPU only.
bin + shared libs: $REF/build/bin/  (llama-tokenize, llama-perplexity, llama-bench, llama-completion, llama-simple,
                                     libllama.so, libggml.so, libggml-base.so, libggml-cpu.so)
Python bindings:   PYTHONPATH=$SRC LLAMA_CPP_LIB_PATH=$REF/build/bin python3 -c 'import llama_cpp'
Made by xtask/golden/build_llama_cpp.sh.
EOF
fi
touch "$REF/READY"
echo "reference build ready in $REF"
