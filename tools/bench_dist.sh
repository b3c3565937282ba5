#!/bin/bash
# Data-parallel figures for docs/benchmarks.md: pretraining and finetuning step time at 1
# and 2 processes on this machine (the same global batch), the share of the step waiting
# for the gradient all-reduce, and Gloo's all-reduce bandwidth on loopback for the R18 and
# R50 CP² gradients. Usage: bash tools/bench_dist.sh [build/cp2] [steps]
set -euo pipefail
CP2=$(readlink -f "${1:-build/cp2}")
STEPS=${2:-12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/cp2_bench_dist.XXXXXX)
trap 'rm -rf "$T"' EXIT
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
"$CP2" synth --out "$T/img" --count 512 --width 160 --height 160 > /dev/null
"$CP2" synth --out "$T/seg" --seg voc --train 64 --val 8 --width 128 --height 96 > /dev/null

rate() {  # img/s between the first and the last logged step (the first step's warm-up excluded)
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
r = [x for x in r if 'loss' in x]
a, b = r[0], r[-1]
unit, batch = sys.argv[2], int(sys.argv[3])
steps = b[unit] - a[unit]
print(f"{steps * batch / (b['elapsed_s'] - a['elapsed_s']):.2f} img/s, "
      f"grad all-reduce wait {100 * (b['grad_allreduce_wait_s'] - a['grad_allreduce_wait_s']) / (b['elapsed_s'] - a['elapsed_s']):.1f} % of the step")
PY
}

P="pretrain --config $ROOT/configs/cpu_r18_96.yaml --data $T/img --max-steps $STEPS --workers 1 --quiet --set train.log_every=1"
"$CP2" $P --out "$T/p1" > /dev/null
echo "pretrain R18-ASPP@96 b32 K4096, 1 process x $(nproc) threads: $(rate "$T/p1/log.jsonl" step 32)"
"$CP2" launch --nproc 2 -- $P --out "$T/p2" > /dev/null 2>&1
echo "pretrain R18-ASPP@96 b32 K4096, 2 processes x $(( $(nproc) / 2 )) threads: $(rate "$T/p2/log.jsonl" step 32)"

F="finetune --config $ROOT/configs/cpu_seg_tiny.yaml --data $T/seg --batch 8 --iters $STEPS --eval-every 0 --workers 1 --quiet --set train.log_every=1"
"$CP2" $F --out "$T/f1" > /dev/null
echo "finetune R18 DeepLabV3 64 px b8, 1 process x $(nproc) threads: $(rate "$T/f1/log.jsonl" iteration 8)"
"$CP2" launch --nproc 2 -- $F --out "$T/f2" > /dev/null 2>&1
echo "finetune R18 DeepLabV3 64 px b8 (SyncBN), 2 processes x $(( $(nproc) / 2 )) threads: $(rate "$T/f2/log.jsonl" iteration 8)"

for a in 18 50; do "$CP2" launch --nproc 2 -- bench allreduce --arch $a --rounds 20 2>&1 | grep "all-reduce of" | sed 's/^\[rank 0\] //'; done
