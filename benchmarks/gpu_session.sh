#!/usr/bin/env bash
# Everything a short GPU lease should measure, in one command that ends before a deadline:
#   1. the `gpu` tests of the core (CUDA sequences, NCCL DDP steps);
#   2. benchmarks/gpu_check.py: the reference protocol in fp32 and bf16, DDP steps, with it/s and memory;
#      then benchmarks/torch_compile.py: eager against torch.compile'd models, 2 rounds;
#   3. permuted MNIST: ER, then the conv WGAN-GP as configs/permuted_mnist_conv_wgan.yaml sets it up
#      (16 channels, lr 1e-3, 500 generator steps per task, soft targets);
#   4. split MNIST class-IL with the conv WGAN-GP (lr 1e-3, `WGAN_CHANNELS` base channels) at each budget
#      of `WGAN_STEPS` generator steps per task in turn, until the deadline.
# A run is kept once it finishes; one cut off by the deadline is not.
# A step that fails does not stop the session (every later figure still counts): the last line names
# the failed steps and the exit status is 1. Steps stopped or skipped at the deadline are not failures.
# It needs only python3 with torch (plus pytest, numpy and scipy for step 1), not Ray or MLflow, and the
# MNIST IDX files under `data/MNIST/raw` (copy them from ../shared/data: `data/` is not tracked). Without
# torch in $PYTHON, or without the data, it stops at once with exit status 2.
#
#   bash benchmarks/gpu_session.sh OUT_DIR
#   PYTHON=.venv/bin/python GPU_DEVICE=cpu CHECK_ITERATIONS=20 COMPILE_ITERATIONS=20 PERMUTED_STEPS=2 WGAN_STEPS=2 SOLVER_ITERATIONS=20 bash benchmarks/gpu_session.sh /tmp/gs   # smoke test
#
# Knobs (environment): GPU_DEVICE (cuda), DEADLINE_S (540: seconds from start after which nothing new
# starts and the running step is stopped), CHECK_ITERATIONS (2000), COMPILE_ITERATIONS (400), PERMUTED_STEPS (500), WGAN_STEPS
# ("1000 2000"), WGAN_CHANNELS (32), SOLVER_ITERATIONS (unset: the reference protocol's 2000), PYTHON
# (python3).
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: bash benchmarks/gpu_session.sh OUT_DIR}
py=${PYTHON:-python3}
device=${GPU_DEVICE:-cuda}
deadline=$((SECONDS + ${DEADLINE_S:-540}))
channels=${WGAN_CHANNELS:-32}
grid=(--data-root data --set "run.device=$device")  # every harness run: the data and the device
[[ -n "${SOLVER_ITERATIONS:-}" ]] && grid+=(--set "solver.iterations=${SOLVER_ITERATIONS}")
export PYTHONUNBUFFERED=1

if ! "$py" -c "import torch" 2> /dev/null; then
    echo "$py cannot import torch: set PYTHON to an interpreter that has it (PYTHON=.venv/bin/python on a dev machine)" >&2
    exit 2
fi
if ! compgen -G "data/MNIST/raw/train-images-idx3-ubyte*" > /dev/null; then
    echo "data/MNIST/raw: MNIST IDX files not found; copy them first: mkdir -p data/MNIST && cp -r ../shared/data/MNIST/raw data/MNIST/" >&2
    exit 2
fi
mkdir -p "$out"
log="$out/session.log"
: > "$log"

failed=()  # names of the steps that exited non-zero before the deadline

# Run step NAME's command with what is left of the deadline; its output goes to the terminal and the log.
step() {
    local name=$1
    shift
    local left=$((deadline - SECONDS))
    if ((left < 10)); then
        echo "== skipped (deadline): $name: $*" | tee -a "$log"
        return 0
    fi
    echo "== $(date -u +%H:%M:%S) (${left} s left): $name: $*" | tee -a "$log"
    timeout "$left" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    ((rc == 124)) && echo "== stopped at the deadline: $name" | tee -a "$log"
    if ((rc != 0 && rc != 124)); then
        echo "== exit $rc: $name" | tee -a "$log"
        failed+=("$name")
    fi
    return 0
}

{ if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi; "$py" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt" >> "$log"

step gpu-tests "$py" -m pytest -q -p no:cacheprovider -m gpu tests/dgr
step gpu-check "$py" benchmarks/gpu_check.py --device "$device" --data-root data \
    --iterations "${CHECK_ITERATIONS:-2000}" --json "$out/gpu_check.json"
step torch-compile "$py" benchmarks/torch_compile.py --device "$device" --data-root data \
    --iterations "${COMPILE_ITERATIONS:-400}" --rounds 2
step permuted-er "$py" benchmarks/permuted_wgan.py "${grid[@]}" --arms er --json "$out/permuted_er.json"
# configs/permuted_mnist_conv_wgan.yaml's settings, to set beside the CPU's 97.01 % (seed 1)
step permuted-conv-wgan "$py" benchmarks/permuted_wgan.py "${grid[@]}" --arms gr-conv-wgan \
    --steps "${PERMUTED_STEPS:-500}" --channels 16 --set generator.lr=1e-3 --set replay.targets=soft \
    --json "$out/permuted_conv_soft.json"
for steps in ${WGAN_STEPS:-1000 2000}; do
    step "split-conv-wgan-$steps" "$py" benchmarks/wgan_split_mnist.py "${grid[@]}" --kinds conv-wgan-gp \
        --steps "$steps" --channels "$channels" --set generator.lr=1e-3 --json "$out/split_conv_${steps}.json"
done
if ((${#failed[@]})); then
    echo "== failed at $(date -u +%H:%M:%S): ${#failed[@]} step(s): ${failed[*]}" | tee -a "$log"
    exit 1
fi
echo "== done at $(date -u +%H:%M:%S)" | tee -a "$log"
