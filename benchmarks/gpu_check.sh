#!/usr/bin/env bash
# GPU check: a few thousand generated photos through cambatch on a CUDA device, with
#   1. resnet50 --weights none at fp16, and 2. the default model (EfficientNet-Lite0) at fp16;
# each prints bench.py's table (L, each stage's cost and P, steady state from whole processes,
# start-up, whole process vs torchcam on the N photos). Needs only the repository and its installed
# dependencies (torchcam / grad-cam rows are skipped when those are missing); no network.
#
#   bash benchmarks/gpu_check.sh                 # about 4-5 minutes on an H100 machine
#   GPU_CHECK_IMAGES=32 GPU_CHECK_ALLOW_CPU=1 bash benchmarks/gpu_check.sh   # its logic, on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
IMAGES=${GPU_CHECK_IMAGES:-1000}   # N: bench.py generates 2N (the steady state runs on 2N and N)
WORK=${GPU_CHECK_WORK:-/tmp/cambatch-gpu-check}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # works without `pip install -e .` too
export PYTHONUNBUFFERED=1

line() { printf '\n==== %s ====\n' "$*"; }

line "machine"
"$PY" - <<'PY'
import os, platform, torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, {len(os.sched_getaffinity(0))} cores")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"cuda: {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
else:
    print("cuda: not available")
PY
DEVICE=cuda
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
        DEVICE=cpu
        echo "no CUDA device: running on the CPU (GPU_CHECK_ALLOW_CPU=1), a test of this script only"
    else
        echo "no CUDA device here: this check is for a GPU machine (GPU_CHECK_ALLOW_CPU=1 runs it on a CPU anyway)" >&2
        exit 2
    fi
fi
PRECISION=fp16
[ "$DEVICE" = cpu ] && PRECISION=fp32   # fp16 needs a GPU

PEERS=()
if ! "$PY" -c "import torchcam, pytorch_grad_cam" 2>/dev/null; then
    echo "torchcam / pytorch-grad-cam not installed (pip install -e '.[bench]'): peer rows skipped"
    PEERS=(--skip-peers)
fi
SECONDS_PER_CONFIG=1
[ "$DEVICE" = cpu ] && SECONDS_PER_CONFIG=0.3

line "nvJPEG decode path"
"$PY" - "$DEVICE" <<'PY'
import sys, torch
from cambatch.data.gpu_decode import cuda_jpeg_available
print("torchvision decode_jpeg(device='cuda') works:", cuda_jpeg_available(torch.device(sys.argv[1])))
PY

line "photos: $IMAGES generated under $WORK"
"$PY" - "$WORK/photos$IMAGES" "$IMAGES" <<'PY'
import sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
import photos
start = time.perf_counter()
photos.generate(Path(sys.argv[1]), int(sys.argv[2]))
print(f"{sys.argv[2]} photos ready in {time.perf_counter() - start:.1f} s")
PY

COMMON=(--images "$IMAGES" --work "$WORK" --device "$DEVICE" --precision "$PRECISION"
        --skip-rss --p-images 256 --seconds "$SECONDS_PER_CONFIG" "${PEERS[@]}")

line "1/2 resnet50 --weights none, $PRECISION"
start=$(date +%s)
"$PY" benchmarks/bench.py --model resnet50 --weights none "${COMMON[@]}" --json "$WORK/resnet50.json"
echo "(resnet50 section: $(( $(date +%s) - start )) s)"

line "2/2 efficientnet_lite0 (default model), $PRECISION"
start=$(date +%s)
"$PY" benchmarks/bench.py "${COMMON[@]}" --json "$WORK/lite0.json"
echo "(lite0 section: $(( $(date +%s) - start )) s)"

line "gpu decode vs cpu decode: resnet50 $PRECISION, --no-overlays, in-process"
"$PY" - "$WORK/photos$IMAGES" "$DEVICE" "$PRECISION" <<'PY'
import shutil, sys, tempfile, time
from pathlib import Path
from cambatch.config import RunConfig
from cambatch.runner.pipeline import run
folder, device, precision = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for mode in ("off", "auto"):
    out = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    result = run(RunConfig.create(inputs=[folder], out=out, model="resnet50", weights="none", device=device, precision=precision,
                           gpu_decode=mode, overlays=False))
    wall = time.perf_counter() - start
    print(f"--gpu-decode {mode}: {result.ok} ok, {result.errors} errors, {result.ok / wall:.1f} img/s (whole run in-process, model load included)")
    shutil.rmtree(out)
PY
line "done in ${SECONDS} s"
