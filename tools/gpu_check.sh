#!/bin/bash
# The GPU path's short check (issue 11 §6), for a machine with a CUDA GPU, a C++ compiler,
# CMake and PyTorch (its LibTorch is what cp2 builds against; nothing else is needed):
#   1. builds cp2's LibTorch-only core and cp2_gpu_check (cmake -DCP2_CORE_ONLY=ON), while
#      tools/make_parity_fixtures.py writes the CP² step and finetuning fixtures on the CPU;
#   2. cp2_gpu_check: loss parity on CUDA (TF32 off) and the training loop's CUDA-graph steps
#      (train.cuda_graph; fp32, AMP bf16, AMP fp16 with loss scaling) against eager ones step
#      by step, a loader batch pinned from another thread, then the R50-ASPP@224 model step
#      in img/s at batch 32 and 64, fp32 and AMP bf16 with channels-last off and on and AMP
#      fp16 (dynamic loss scaling) channels-last, each eager and as a CUDA graph, with the
#      peak device memory of each; then the ceiling of AMP's gain: the step's heaviest
#      convolutions alone in fp32 (TF32) and in bf16 / fp16 (about 10 s);
#      Finetuning too: two SGD steps of DeepLabV3 R18 in float64 against the finetune
#      fixture (mmseg 0.x's loss), then the DeepLabV3 R50 512² step (seg::train_step) at batch
#      FINETUNE_BATCH (16, the authors' total; 0 skips it) in fp32 NCHW and channels-last and
#      AMP bf16 channels-last (about 1 min);
#   3. the same steps in PyTorch on the same card (tools/cp2_reference.py's models and losses),
#      also when the build failed, so that one run always yields the reference's figures.
# Both sides time as the authors' runs do: cuDNN autotuning on (CP2 main.py sets
# cudnn.benchmark = True), TF32 for convolutions (PyTorch's default), not for matmuls.
# Budget: about 4-6 minutes on an H200 with 16 cores as measured (build 63 s, cp2's side
# 2-4 min, PyTorch's 1-2), before the fp16 graph check and its two timed lines were added
# (expect some 30-60 s more) and the finetuning part (expect some 30-60 s on each side; both
# estimates, not yet run on a GPU). Usage: bash tools/gpu_check.sh [build dir]  (PYTHON=python3,
# STEPS=10, FINETUNE_BATCH=16, TORCH_SIDE=all|authors|none: authors times only PyTorch's fp32
# NCHW steps, the authors' configuration, none skips PyTorch's side, for when it was measured
# before; PARTS=parity,graph,step,ceiling,finetune, or some of them, to rerun parts alone:
# parity (the fixtures' checks), graph (the CUDA-graph steps against eager ones, the pinned
# batch), step (the R50-ASPP@224 step, both sides), ceiling, finetune (the timed finetuning
# step, both sides); logs go to $OUT when it is set, else next to the build dir).
# A dry run before a GPU session: DEVICE=cpu runs the whole script on the CPU at small sizes
# (R18-ASPP@64 batch 4, K 256; finetuning 64² batch 2; one timed step), both sides; CI runs it
# so (GpuCheck.ScriptRunsOnTheCpu) with GPU_CHECK_BIN=<a built cp2_gpu_check> (no build) and
# FIXTURES=<a folder make_parity_fixtures.py wrote> (not written again).
set -uo pipefail
# --help prints the comment above; any other option is a mistake for a folder name.
case ${1:-} in
  -h | --help) sed -n '2,/^set -/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
  -*) echo "usage: bash tools/gpu_check.sh [BUILD_DIR] (--help: what it does)" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-/tmp/cp2_gpu_build}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
# The sizes both sides run, set here only: the issue's R50-ASPP@224 step at batches 32 and 64,
# K 65536, and R50 finetuning at 512²; a dry run's small ones.
if [ "$DEVICE" = cuda ]; then
  NET=50 SIZE=224 BATCHES=32,64 QUEUE=65536 WARMUP=3 CROP=512 CEILING=8
elif [ "$DEVICE" = cpu ]; then
  NET=18 SIZE=64 BATCHES=4 QUEUE=256 WARMUP=1 CROP=64 CEILING=2
  STEPS=${STEPS:-1} FINETUNE_BATCH=${FINETUNE_BATCH:-2}
else
  echo "error: DEVICE: expected cuda or cpu (a dry run), found '$DEVICE'" >&2; exit 2
fi
STEPS=${STEPS:-10}
FINETUNE_BATCH=${FINETUNE_BATCH:-16}
TORCH_SIDE=${TORCH_SIDE:-all}
case $TORCH_SIDE in all | authors | none) ;; *) echo "error: TORCH_SIDE: expected all, authors or none, found '$TORCH_SIDE'" >&2; exit 2 ;; esac
PARTS=${PARTS:-parity,graph,step,ceiling,finetune}
P='(parity|graph|step|ceiling|finetune)'
[[ $PARTS =~ ^$P(,$P)*$ ]] || { echo "error: PARTS: expected some of parity,graph,step,ceiling,finetune, found '$PARTS'" >&2; exit 2; }
runs() { case ,$PARTS, in *,$1,*) return 0 ;; esac; return 1; }
LOG=${OUT:-$B.logs}
mkdir -p "$B" "$LOG"
t0=$(date +%s)
el() { echo "$(( $(date +%s) - t0 )) s"; }
echo "== machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi'); $(nproc) cores; $(g++ --version | head -1); $(cmake --version | head -1)"
# A CUDA LibTorch's CMake config looks for the CUDA toolkit (nvcc): take it from CUDA_HOME
# or /usr/local/cuda when it is not on PATH.
if ! command -v nvcc > /dev/null; then
  for d in "${CUDA_HOME:-}" /usr/local/cuda; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export PATH="$d/bin:$PATH"; break; fi
  done
fi
echo "== nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo "not found (CMake's configure step says what is missing)")"
read -r PREFIX ARCH < <($PY -c 'import torch
c = torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)
print(torch.utils.cmake_prefix_path, "%d.%d" % c)') || { echo "error: $PY cannot import torch"; exit 1; }
$PY -c 'import torch;print("== PyTorch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "available", torch.cuda.is_available())'
# The card's own architecture, so that LibTorch's CMake config need not detect it.
[ "$ARCH" != "0.0" ] && export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$ARCH}

# The fixtures are written on the CPU while the build runs (an independent computation:
# PyTorch on the CPU, cp2 on the GPU).
FIX=${FIXTURES:-$B/fixtures}
if [ -n "${FIXTURES:-}" ]; then
  echo 0 > "$B/fixtures.rc"; echo "given: $FIX" > "$LOG/fixtures.log"; FX=
elif ! runs parity; then
  echo 0 > "$B/fixtures.rc"; echo "not written (PARTS=$PARTS)" > "$LOG/fixtures.log"; FX=
else
  (nice -n 10 $PY "$ROOT/tools/make_parity_fixtures.py" --out "$FIX" --gpu-check-only > "$LOG/fixtures.log" 2>&1
   echo $? > "$B/fixtures.rc") &
  FX=$!
fi
GEN=() KEEP=(-k)
if command -v ninja > /dev/null; then GEN=(-G Ninja); KEEP=(-k 0); fi
built=0
BIN=${GPU_CHECK_BIN:-$B/cp2_gpu_check}
if [ -n "${GPU_CHECK_BIN:-}" ]; then
  [ -x "$BIN" ] && built=1 && echo "== given $BIN (not built)" || echo "== GPU_CHECK_BIN: $BIN is not an executable"
elif cmake -S "$ROOT" -B "$B" "${GEN[@]}" -DCP2_CORE_ONLY=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
     > "$LOG/cmake.log" 2>&1; then
  grep -E "cp2: LibTorch|CUDA detected|Found CUDAToolkit" "$LOG/cmake.log" | sed 's/^/   /'
  if cmake --build "$B" -j"$(nproc)" -- "${KEEP[@]}" > "$LOG/build.log" 2>&1; then
    built=1
    echo "== built in $(el)"
  else
    echo "== BUILD FAILED after $(el); the errors:"
    grep -E "error|Error|undefined reference" -A3 "$LOG/build.log" | head -80
  fi
else
  echo "== CONFIGURE FAILED after $(el):"; tail -60 "$LOG/cmake.log"
fi
[ -n "$FX" ] && wait $FX
echo "== fixtures: exit $(cat "$B/fixtures.rc"), $(tail -1 "$LOG/fixtures.log")"
rc=1
if [ $built = 1 ]; then
  rc=0
  "$BIN" --fixtures "$FIX" --device "$DEVICE" --arch $NET --size $SIZE --batches $BATCHES --queue $QUEUE \
    --warmup $WARMUP --ceiling-shapes $CEILING --steps "$STEPS" --finetune-batch "$FINETUNE_BATCH" --finetune-crop $CROP --parts "$PARTS" 2>&1 |
    tee "$LOG/cp2.log" || rc=$?
  echo "== cp2 done at $(el) (exit $rc)"
fi
PYTHONUNBUFFERED=1 $PY - "$ROOT/tools" "$STEPS" "$TORCH_SIDE" "$FINETUNE_BATCH" "$DEVICE" $NET $SIZE $BATCHES $QUEUE \
  $WARMUP $CROP "$PARTS" <<'PY' 2>&1 | grep -v Warning | tee "$LOG/torch.log"
import sys, time, torch
sys.path.insert(0, sys.argv[1])
import cp2_reference as ref
steps, side, FB, dev = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
cuda = dev == "cuda"
# The sizes cp2_gpu_check was given (the script's NET, SIZE, BATCHES, QUEUE, WARMUP, CROP).
arch, S, batches, K, warmup, C = (int(sys.argv[6]), int(sys.argv[7]), tuple(int(b) for b in sys.argv[8].split(",")),
                                  int(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11]))
parts = sys.argv[12].split(",")  # the script's PARTS: the step and finetune parts have a PyTorch side
run_steps, run_finetune = side != "none" and "step" in parts, side != "none" and "finetune" in parts and FB > 0
timed_steps = f"{steps} timed step" + ("" if steps == 1 else "s")
torch.backends.cudnn.benchmark = True       # the authors' main.py
torch.backends.cudnn.allow_tf32 = True      # PyTorch's defaults for a user's run
torch.backends.cuda.matmul.allow_tf32 = False
if run_steps:
    print(f"[torch] R{arch}-ASPP@{S}, K {K}, {timed_steps} after {warmup} warm-up (img/s), PyTorch {torch.__version__}")


def timed(step, batch):
    """Warm-up steps, then img/s over `steps` and the peak device memory since the last reset."""
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t = time.time()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    rate = f"{steps * batch / (time.time() - t):9.2f} img/s"
    return rate + (f" {torch.cuda.max_memory_allocated() / 2**30:6.1f} GiB peak" if cuda else "")


def reset_memory():
    if cuda:
        torch.cuda.reset_peak_memory_stats()


def free_memory():
    if cuda:
        torch.cuda.empty_cache()


Scaler = torch.amp.GradScaler if hasattr(torch.amp, "GradScaler") else None
for batch in batches if run_steps else ():
    for amp in (None, torch.bfloat16, torch.float16):
        for cl in (False, True):
            if (amp == torch.float16 and not (cl and cuda)) or (side == "authors" and (amp or cl)):
                continue
            q = k = opt = scaler = None  # so that a failure before they exist frees what does
            try:
                reset_memory()
                q, k = ref.Segmentor(arch, 16).to(dev), ref.Segmentor(arch, 16).to(dev)
                k.load_state_dict(q.state_dict())
                for p in k.parameters():
                    p.requires_grad = False
                if cl:
                    q, k = q.to(memory_format=torch.channels_last), k.to(memory_format=torch.channels_last)
                q.train(), k.train()
                queue = torch.nn.functional.normalize(torch.randn(128, K, device=dev), dim=0)
                ptr = torch.zeros(1, dtype=torch.long)
                opt = torch.optim.SGD(q.parameters(), lr=0.03 * batch / 256, momentum=0.9, weight_decay=1e-4)
                fp16 = amp == torch.float16
                scaler = Scaler(dev, enabled=fp16) if Scaler else torch.cuda.amp.GradScaler(enabled=fp16)
                fmt = torch.channels_last if cl else torch.contiguous_format
                mask = torch.zeros(batch, S, S, device=dev)
                mask[:, S // 8:S - S // 8, S // 8:S - S // 8] = 1
                b = {"im_q": torch.randn(batch, 3, S, S, device=dev).contiguous(memory_format=fmt),
                     "im_k": torch.randn(batch, 3, S, S, device=dev).contiguous(memory_format=fmt),
                     "mask_q": mask, "mask_k": mask.flip(1)}

                def step():
                    global queue, ptr
                    with torch.autocast(dev, dtype=amp or torch.bfloat16, enabled=amp is not None):
                        losses, queue, p = ref.cp2_training_forward(q, k, queue, ptr, b)
                    ptr = torch.tensor([p])
                    opt.zero_grad()
                    scaler.scale(losses["total"]).backward()
                    scaler.step(opt)
                    scaler.update()
                r = timed(step, batch)
            except Exception as e:  # out of memory, or an API this PyTorch lacks
                r = "failed: " + str(e).splitlines()[0]
            label = {None: "fp32", torch.bfloat16: "AMP bf16", torch.float16: "AMP fp16"}[amp]
            print(f"[torch] batch {batch:3d} {label:9s} {'channels-last' if cl else 'NCHW':13s} {r}", flush=True)
            q = k = opt = scaler = None
            free_memory()

# The finetuning step as mmseg 0.x's loop runs it (cp2_gpu_check part 4b): DeepLabV3 R50 at
# 512² (DEVICE=cpu: R18 at 64²), forward, the decode head's loss (cross-entropy ignoring 255, mean over all pixels) and
# its pixel accuracy, backward, SGD (lr 0.003, momentum 0.9, no weight decay), both logged
# numbers read each step (mmseg's log_vars).
if run_finetune:
    print(f"[torch-ft] DeepLabV3 R{arch} at {C}², {timed_steps} after {warmup} warm-up (img/s)")
    for amp, cl in ((None, False), (None, True), (torch.bfloat16, True)):
        if side == "authors" and (amp or cl):
            continue
        m = opt = None
        try:
            reset_memory()
            torch.manual_seed(0)
            m = ref.Segmentor(arch, 16, num_classes=21).to(dev)
            fmt = torch.channels_last if cl else torch.contiguous_format
            if cl:
                m = m.to(memory_format=torch.channels_last)
            m.train()
            opt = torch.optim.SGD(m.parameters(), lr=0.003, momentum=0.9, weight_decay=0)
            x = torch.randn(FB, 3, C, C, device=dev).contiguous(memory_format=fmt)
            y = torch.randint(0, 21, (FB, C, C), device=dev)
            y[:, :8] = 255

            def ft_step():
                with torch.autocast(dev, dtype=amp or torch.bfloat16, enabled=amp is not None):
                    logits = m.decode_head.classify(m.features(x))
                # The loss in fp32, as mmseg's force_fp32 on the head's losses and cp2's autocast
                # around the network only.
                up = torch.nn.functional.interpolate(logits.float(), size=(C, C), mode="bilinear", align_corners=False)
                loss = torch.nn.functional.cross_entropy(up, y, ignore_index=255, reduction="none").mean()
                with torch.no_grad():
                    valid = y != 255
                    acc = ((up.argmax(1) == y) & valid).sum() * 100.0 / valid.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                return torch.stack([loss.detach().float(), acc.float()]).tolist()
            r = timed(ft_step, FB)
        except Exception as e:
            r = "failed: " + str(e).splitlines()[0]
        label = "fp32" if amp is None else "AMP bf16"
        print(f"[torch-ft] batch {FB:3d} {label:9s} {'channels-last' if cl else 'NCHW':13s} {r}", flush=True)
        m = opt = None
        free_memory()
PY
echo "== all done in $(el)"
echo "== summary"
grep -h "^\[parity\]\|^\[graph\]\|^\[pin\]" "$LOG/cp2.log" 2>/dev/null
if [ "$TORCH_SIDE" = all ]; then
  paste -d'\n' <(grep -h "^\[step\] batch" "$LOG/cp2.log" 2>/dev/null | grep -v " graph ") <(grep -h "^\[torch\] batch" "$LOG/torch.log")
else
  grep -h "^\[step\] batch" "$LOG/cp2.log" 2>/dev/null | grep -v " graph "; grep -h "^\[torch\] batch" "$LOG/torch.log"
fi
grep -h "^\[step\] batch.* graph " "$LOG/cp2.log" 2>/dev/null
grep -h "^\[ceiling\]" "$LOG/cp2.log" 2>/dev/null
grep -h "^\[finetune\] batch" "$LOG/cp2.log" 2>/dev/null; grep -h "^\[torch-ft\] batch" "$LOG/torch.log"
exit $rc
