#!/usr/bin/env bash
# Set up .venv with ambient-jupyter, the embedded model and the test tools.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
# A portable CPU build of llama.cpp. The default "native" build uses every
# instruction the CPU advertises; some virtual machines advertise AMX but fault on
# it (SIGSEGV in ggml_backend_amx_mul_mat), so AMX stays off.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
# pip's own wheel cache ignores CMAKE_ARGS, so our build is kept in a cache of its own.
WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/ambient-jupyter/wheels-noamx"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
# The JupyterLab extension (labextension/) is built by the pip install below, through
# hatch-jupyter-builder and jlpm (yarn 3); it needs Node.js, and no progress bars in logs.
export YARN_ENABLE_PROGRESS_BARS=false
if ! command -v node >/dev/null 2>&1; then
  echo "bootstrap: Node.js is needed to build the JupyterLab extension (apt-get install nodejs)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi

if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "==> building llama-cpp-python $LLAMA_VERSION (once per machine; about 7 minutes on 2 cores)"
  mkdir -p "$WHEELS"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" .venv/bin/pip wheel -q --no-cache-dir --no-deps \
    "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS"
fi

echo "==> installing ambient-jupyter[embedded,test]"
# pip must not write the editable wheel's copy of the labextension through the link
# made below (into the build output itself): unlink first, link again after.
EXT_LINK=.venv/share/jupyter/labextensions/ambient-jupyter
if [ -L "$EXT_LINK" ]; then rm "$EXT_LINK"; fi
.venv/bin/pip install -q --find-links "$WHEELS" "llama-cpp-python[server]==$LLAMA_VERSION"
.venv/bin/pip install -q --find-links "$WHEELS" -e ".[embedded,test]"

# An editable install copies the labextension into the venv; a link to the build
# output instead makes every `jlpm build` in labextension/ visible on reload.
.venv/bin/jupyter-builder develop --overwrite . >/dev/null
echo "==> ready: .venv/bin/ambient-jupyter"
