#!/usr/bin/env bash
# Every GPU check and benchmark of parapolicy, in one run on a bare GPU machine (< 8 minutes).
#
#   bash scripts/gpu_check.sh fetch      # HERE (with the project's venv active): wheels the GPU image lacks -> .whl/
#   bash scripts/gpu_check.sh            # THERE (device tool: carry .whl): install, pytest -m gpu, cost curves,
#                                        #   latency rows; reports in $OUT (or benchmarks/) named *_<device>.md/.json
#   bash scripts/gpu_check.sh --dry-run  # HERE, on the CPU: the same steps, tiny, into a temp dir (tested)
#
# The GPU image holds Python 3.12 with torch but not the project's pure-Python dependencies and
# reaches no registry, so `fetch` downloads them (the versions installed here) as py3.12 wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-run}"
WHEELS=(diffusers omegaconf hydra-core antlr4-python3-runtime dill gymnasium farama-notifications importlib-metadata)

if [ "$mode" = "fetch" ]; then
  mkdir -p .whl
  for name in "${WHEELS[@]}"; do
    version=$(python -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    [ -n "$version" ] || { echo "gpu_check: $name is not installed here; activate the project's venv" >&2; exit 2; }
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux2014_x86_64 -d .whl "$name==$version" 2>/dev/null \
      || python -m pip wheel -q --no-deps -w .whl "$name==$version"   # sdist-only (antlr4): build the wheel
  done
  du -sh .whl
  exit 0
fi

if [ "$mode" = "--dry-run" ]; then
  device=cpu; out=$(mktemp -d); rows=1,2; repeats=1; chunks=1; networks=shipped_pusht; policies=shipped_pusht
  cost_mode=eager
  echo "gpu_check: dry run on the CPU into $out"
else
  [ "$mode" = "run" ] || { echo "usage: gpu_check.sh [fetch|--dry-run]" >&2; exit 2; }
  device=cuda; out="${OUT:-benchmarks}"; rows=""; repeats=20; chunks=10; cost_mode=cuda_graph
  networks=upstream_size_unet,shipped_pusht,hybrid_image_unet; policies=shipped_pusht,upstream_size_unet
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD:$PWD/envs${PYTHONPATH:+:$PYTHONPATH}"
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/envs${PYTHONPATH:+:$PYTHONPATH}"
tag=$(python3 -c "import torch; n = torch.cuda.get_device_name() if '$device' == 'cuda' else 'cpu'; \
print(n.lower().replace('nvidia ', '').split()[0])")
started=$SECONDS

step() { echo "== $1 ($((SECONDS - started)) s)"; }

step "pytest -m gpu"
if [ "$device" = cuda ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu_tests_$tag.txt" | tail -5
else
  python3 -m pytest -q -m gpu -p no:cacheprovider --collect-only tests/test_gpu.py | tail -1
fi

step "cost curves ($networks)"
python3 scripts/bench_network_call.py --device "$device" --networks "$networks" ${rows:+--rows $rows} \
  --repeats "$repeats" --out "$out/network_call_$tag"

step "time per chunk: exact samplers vs sequential DDIM ($policies)"
python3 scripts/bench_latency.py --table samplers --device "$device" --policies "$policies" --chunks "$chunks" \
  --cost-curve "$out/network_call_$tag.json" --cost-mode "$cost_mode" --out "$out/latency_$tag"

step "done"
ls -la "$out"
