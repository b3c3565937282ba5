#!/bin/bash
# The GPU path's short check (issue 11 §6), for a machine with a CUDA GPU, a C++ compiler,
# CMake and PyTorch (its LibTorch is what cp2 builds against; nothing else is needed):
#   1. builds cp2's LibTorch-only core and cp2_gpu_check (cmake -DCP2_CORE_ONLY=ON);
#   2. writes the CP² step parity fixtures on the CPU (tools/make_parity_fixtures.py);
#   3. cp2_gpu_check: loss parity on CUDA (TF32 off), then the R50-ASPP@224 model step in
#      img/s at batch 32 and 64, fp32 and AMP bf16 with channels-last off and on, and AMP
#      fp16 (dynamic loss scaling) channels-last;
#   4. the same step in PyTorch on the same card (tools/cp2_reference.py's model and loss).
# Budget: about 8 minutes. Usage: bash tools/gpu_check.sh [build dir]  (PYTHON=python3)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-/tmp/cp2_gpu_build}
PY=${PYTHON:-python3}
STEPS=${STEPS:-10}
t0=$(date +%s)
echo "== machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi'); $(nproc) cores"
# A CUDA LibTorch's CMake config enables CMake's CUDA language, which needs nvcc: take it from
# CUDA_HOME or /usr/local/cuda when it is not on PATH.
if ! command -v nvcc > /dev/null; then
  for d in "${CUDA_HOME:-}" /usr/local/cuda; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export PATH="$d/bin:$PATH"; break; fi
  done
fi
NVCC=$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo "not found (CMake's configure step says what is missing)")
echo "== nvcc: $NVCC"
PREFIX=$($PY -c 'import torch;print(torch.utils.cmake_prefix_path)')
$PY -c 'import torch;print("== PyTorch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())'
cmake -S "$ROOT" -B "$B" -DCP2_CORE_ONLY=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" > "$B.cmake.log" 2>&1 \
  || { tail -60 "$B.cmake.log"; exit 1; }
cmake --build "$B" -j"$(nproc)" > "$B.build.log" 2>&1 || { grep -E "error|Error" -A3 "$B.build.log" | head -60; exit 1; }
echo "== built in $(( $(date +%s) - t0 )) s"
$PY "$ROOT/tools/make_parity_fixtures.py" --out "$B/fixtures" --only-cp2-step
rc=0
"$B/cp2_gpu_check" --fixtures "$B/fixtures" --device cuda --steps "$STEPS" || rc=$?
echo "== cp2 done at $(( $(date +%s) - t0 )) s (exit $rc)"
$PY - "$ROOT/tools" "$STEPS" <<'PY'
import sys, time, torch
sys.path.insert(0, sys.argv[1])
import cp2_reference as ref
steps, dev, S, K = int(sys.argv[2]), "cuda", 224, 65536
torch.backends.cudnn.allow_tf32 = True      # PyTorch's defaults for a user's run
torch.backends.cuda.matmul.allow_tf32 = False
print(f"[torch] R50-ASPP@{S}, K {K}, {steps} timed steps after 3 warm-up (img/s), PyTorch {torch.__version__}")
for batch in (32, 64):
    for amp in (None, torch.bfloat16, torch.float16):
        for cl in (False, True):
            if amp == torch.float16 and not cl:
                continue
            q = k = opt = scaler = None  # so that a failure before they exist frees what does
            try:
                q, k = ref.Segmentor(50, 16).to(dev), ref.Segmentor(50, 16).to(dev)
                k.load_state_dict(q.state_dict())
                for p in k.parameters():
                    p.requires_grad = False
                if cl:
                    q, k = q.to(memory_format=torch.channels_last), k.to(memory_format=torch.channels_last)
                q.train(), k.train()
                queue = torch.nn.functional.normalize(torch.randn(128, K, device=dev), dim=0)
                ptr = torch.zeros(1, dtype=torch.long)
                opt = torch.optim.SGD(q.parameters(), lr=0.03 * batch / 256, momentum=0.9, weight_decay=1e-4)
                scaler = torch.cuda.amp.GradScaler(enabled=amp == torch.float16)
                fmt = torch.channels_last if cl else torch.contiguous_format
                mask = torch.zeros(batch, S, S, device=dev)
                mask[:, S // 8:S - S // 8, S // 8:S - S // 8] = 1
                b = {"im_q": torch.randn(batch, 3, S, S, device=dev).contiguous(memory_format=fmt),
                     "im_k": torch.randn(batch, 3, S, S, device=dev).contiguous(memory_format=fmt),
                     "mask_q": mask, "mask_k": mask.flip(1)}

                def step():
                    global queue, ptr
                    with torch.autocast("cuda", dtype=amp or torch.bfloat16, enabled=amp is not None):
                        losses, queue, p = ref.cp2_training_forward(q, k, queue, ptr, b)
                    ptr = torch.tensor([p])
                    opt.zero_grad()
                    scaler.scale(losses["total"]).backward()
                    scaler.step(opt)
                    scaler.update()
                for _ in range(3):
                    step()
                torch.cuda.synchronize()
                t = time.time()
                for _ in range(steps):
                    step()
                torch.cuda.synchronize()
                r = f"{steps * batch / (time.time() - t):9.2f} img/s"
            except RuntimeError as e:
                r = "failed: " + str(e).splitlines()[0]
            label = {None: "fp32", torch.bfloat16: "AMP bf16", torch.float16: "AMP fp16"}[amp]
            print(f"[torch] batch {batch:3d} {label:9s} {'channels-last' if cl else 'NCHW':13s} {r}", flush=True)
            q = k = opt = scaler = None
            torch.cuda.empty_cache()
PY
echo "== all done in $(( $(date +%s) - t0 )) s"
exit $rc
