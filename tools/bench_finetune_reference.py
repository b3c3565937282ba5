#!/usr/bin/env python3
"""PyTorch reference for `cp2 bench finetune`'s train step: the same DeepLabV3 (R-ASPP,
output stride 16, tools/cp2_reference.py) in PyTorch 1.13 eager mode, cross-entropy
ignoring 255 (mean over all pixels, as mmseg 0.x), torch.optim.SGD (lr 0.003, momentum
0.9); a fixed random batch. Prints images/s as the median of rounds, like cp2's bench.
mmsegmentation itself is not packaged for Debian, so its data pipeline is not timed here.

With --eval, the counterpart of `cp2 bench evaluate` instead: mmseg 0.x's whole-image
inference of one image of --image-width x --image-height resized keep-ratio to --scale
(4·scale, scale) (500x375 -> 683x512 at 512): forward in eval mode without autograd, logits
resized bilinearly to the input (encode_decode) and to the original size (rescale), softmax,
argmax. The image's decoding and resizing are not timed here (cp2's bench reads its images
ahead on loader threads).

  /usr/bin/python3 tools/bench_finetune_reference.py --arch 50 --crop 512 --batch 2 --threads 2
  /usr/bin/python3 tools/bench_finetune_reference.py --arch 50 --eval --threads 2 --steps 4
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

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
    ap.add_argument("--eval", action="store_true", help="time whole-image inference (cp2 bench evaluate)")
    ap.add_argument("--image-width", type=int, default=500)
    ap.add_argument("--image-height", type=int, default=375)
    ap.add_argument("--scale", type=int, default=512, help="test scale (4*scale, scale), keep ratio")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = ref.Segmentor(a.arch, 16, num_classes=21)
    if a.eval:
        return evaluate(m, a)
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

    rate = timed_rounds(step, a, a.batch, "train step")
    print(f"train step (PyTorch {torch.__version__}, {a.precision}) {rate:.3f} img/s "
          f"(median of {a.rounds} rounds of {a.steps} steps)")


def timed_rounds(fn, a, images_per_call, what):
    """--warmup untimed calls, then the median images/s of --rounds rounds of --steps calls."""
    for _ in range(a.warmup):
        fn()
    rates = []
    for r in range(a.rounds):
        t = time.perf_counter()
        for _ in range(a.steps):
            fn()
        rates.append(a.steps * images_per_call / (time.perf_counter() - t))
        print(f"  round {r + 1}: {what} {rates[-1]:.3f} img/s")
    return statistics.median(rates)


def evaluate(m, a):
    m.eval()
    W, H = a.image_width, a.image_height
    # mmseg's Resize(keep_ratio=True) to (4*scale, scale): the largest factor that fits both.
    f = min(4 * a.scale / max(H, W), a.scale / min(H, W))
    h, w = int(H * f + 0.5), int(W * f + 0.5)
    x = torch.randn(1, 3, h, w)

    def infer():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = m.decode_head.classify(m.features(x))
        logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
        logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        return logits.softmax(1).argmax(1)

    rate = timed_rounds(infer, a, 1, "evaluation")
    print(f"evaluation (PyTorch {torch.__version__}, {a.precision}, whole image {w}x{h} -> {W}x{H}) "
          f"{rate:.3f} img/s (median of {a.rounds} rounds of {a.steps} images)")


if __name__ == "__main__":
    main()
