#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU, JAX (CUDA), NumPy, pandas and matplotlib, and
# no TensorFlow and no network. From the repository root:
#
#   bash bench/gpu.sh WHEELS [SCALE]
#
# WHEELS: a folder of wheels for what that machine lacks (Keras and what Keras needs beyond JAX,
# NumPy and pandas; tqdm), made where there is a network, for its Python (3.12 here):
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d WHEELS keras tqdm
# It installs only from WHEELS, into a virtual environment that sees the machine's own packages,
# runs the sample end to end on JAX, then bench/speed.py at the 360K shape (SCALE 1.0, the
# default), and prints one JSON line: the GPU, the sample's hit ratio and the speed figures.
# NCF_GPU_CHECK_CPU=1 runs it without a GPU (the tests do, on a CPU, at a small SCALE).
set -euo pipefail
wheels=${1:?usage: bash bench/gpu.sh WHEELS [SCALE]}
scale=${2:-1.0}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export KERAS_BACKEND=jax

python -m venv --system-site-packages "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --no-index --find-links "$wheels" keras tqdm >&2

gpu=$("$py" -c '
import jax
gpus = [d for d in jax.devices() if d.platform == "gpu"]
print(gpus[0].device_kind if gpus else "")')
if [[ -z "$gpu" && "${NCF_GPU_CHECK_CPU:-0}" != 1 ]]; then
    echo "error: JAX sees no GPU here (jax.devices(): $("$py" -c 'import jax; print(jax.devices())'))" >&2
    exit 1
fi

started=$(date +%s)
"$py" ncf_lastfm.py --dataset=sample --quiet --output_dir="$work/run" >"$work/sample.txt"
sample_seconds=$(( $(date +%s) - started ))
"$py" bench/speed.py --scale="$scale" >"$work/speed.txt"

"$py" - "$work" "$gpu" "$sample_seconds" <<'EOF'
import json, sys
work, gpu, seconds = sys.argv[1], sys.argv[2] or "none (CPU)", int(sys.argv[3])
metrics = json.load(open(f"{work}/run/mlp/metrics.json"))
speed = json.loads(open(f"{work}/speed.txt").read().strip().splitlines()[-1])
print(json.dumps({"gpu": gpu, "sample_hit_ratio": metrics["hit_ratio"],
                  "sample_ndcg": metrics["ndcg"], "sample_seconds": seconds,
                  "goals": {"train_samples_per_s >= 20M": speed["train_samples_per_s"] >= 20e6,
                            "epoch_seconds <= 10": speed["epoch_seconds"] <= 10,
                            "eval_seconds <= 2": speed["eval_seconds"] <= 2},
                  "speed": speed}))
EOF
