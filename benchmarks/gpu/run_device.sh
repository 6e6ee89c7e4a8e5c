#!/usr/bin/env bash
# On the GPU machine, from the repo root: MLX CUDA (once per machine), the carried wheels
# (once), then the benchmark with the given arguments. See benchmarks/gpu/README.md.
#   bash benchmarks/gpu/run_device.sh --shape llama8b
set -uo pipefail
OUT=${OUT:-/tmp/out}
if ! python3 -c "import mlx.core as mx; assert mx.default_device() == mx.gpu" 2>/dev/null; then
    bash .gpu2/install_on_device.sh || exit 1
fi
if [ ! -d /tmp/site ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 - <<'PY' || exit 1
import importlib.metadata as m
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return getattr(__import__(name.replace("-", "_")), "__version__", "?")
names = ["mlx", "mlx-lm", "pydantic", "openai", "aiohttp", "llguidance", "platformdirs", "transformers"]
print(", ".join(f"{n} {version(n)}" for n in names))
import app.server.app, app.engine.engine  # noqa: F401  the app imports on this machine
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
SHAPE=$(echo "$@" | sed -n 's/.*--shape[ =]\([a-z0-9-]*\).*/\1/p')
timeout "${BENCH_TIMEOUT:-540}" python3 benchmarks/gpu/bench_gpu.py --out "$OUT" "$@" 2>&1 \
    | tee "$OUT/log_${SHAPE:-bench}.txt"
