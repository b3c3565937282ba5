#!/usr/bin/env python3
"""PyTorch reference for `cp2 bench finetune`'s train step: the same DeepLabV3 (R-ASPP,
output stride 16, tools/cp2_reference.py) in PyTorch 1.13 eager mode, cross-entropy
ignoring 255 (mean over all pixels, as mmseg 0.x), torch.optim.SGD (lr 0.003, momentum
0.9); a fixed random batch. Prints images/s as the median of rounds, like cp2's bench.
mmsegmentation itself is not packaged for Debian, so its data pipeline is not timed here.

  /usr/bin/python3 tools/bench_finetune_reference.py --arch 50 --crop 512 --batch 2 --threads 2
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cp2_reference as ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=50)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: the forward and loss under torch.autocast('cpu', bfloat16) (cp2's "
                         "train.precision: bf16 autocasts the network only)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = ref.Segmentor(a.arch, 16, num_classes=21)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.003, momentum=0.9, weight_decay=0)
    x = torch.randn(a.batch, 3, a.crop, a.crop)
    y = torch.randint(0, 21, (a.batch, a.crop, a.crop))
    y[:, :8] = 255

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = ref.mmseg_seg_loss(m, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    rates = []
    for r in range(a.rounds):
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        rates.append(a.steps * a.batch / (time.perf_counter() - t))
        print(f"  round {r + 1}: train step {rates[-1]:.3f} img/s")
    print(f"train step (PyTorch {torch.__version__}, {a.precision}) {statistics.median(rates):.3f} img/s "
          f"(median of {a.rounds} rounds of {a.steps} steps)")


if __name__ == "__main__":
    main()
