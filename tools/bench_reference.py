#!/usr/bin/env python3
"""The PyTorch reference for `cp2 bench pretrain`: the authors' pipeline on this machine.

PIL + torchvision MoCo v2 augmentations (PIL GaussianBlur as MoCo's), RandomErasing on
the normalised backgrounds, copy-paste; torch DataLoader workers; the same R-ASPP model
and losses (tools/cp2_reference.py) with SGD. Prints images/s of (a) the data pipeline,
(b) the model step on a fixed batch, (c) end to end, like cp2's bench. Debian torch only.

  /usr/bin/python3 tools/bench_reference.py --data DIR --arch 18 --size 96 --batch 32 \
      --queue 65536 --threads 2 --workers 2
"""
import argparse
import os
import random
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cp2_reference as ref  # noqa: E402


class Blur:  # MoCo v2's GaussianBlur
    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def view_transform(size):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([Blur()], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


class CopyPaste(torch.utils.data.Dataset):
    def __init__(self, root, size):
        self.files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                            if f.lower().endswith((".jpg", ".jpeg", ".png")))
        self.view = view_transform(size)
        self.erase = T.RandomErasing(p=1.0, scale=(0.5, 0.8), ratio=(0.8, 1.25), value=0)

    def __len__(self):
        return len(self.files)

    def load(self, i):
        return Image.open(self.files[i]).convert("RGB")

    def __getitem__(self, i):
        fg = self.load(i)
        q, k = self.view(fg), self.view(fg)
        out = []
        for v in (q, k):
            bg = self.erase(self.view(self.load(random.randrange(len(self.files)))))
            mask = (bg[0] == 0).float()  # the authors' test
            out += [v * mask + bg, mask]
        return out[0], out[2], out[1], out[3]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--arch", type=int, default=50)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--queue", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: the whole forward, losses included, under torch.autocast('cpu', bfloat16) (cp2's "
                         "train.precision: bf16 autocasts the encoders only; the authors' pipeline is fp32)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = CopyPaste(a.data, a.size)

    def loader():
        return torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                           drop_last=True, persistent_workers=a.workers > 0)

    nb = 4 * a.steps
    it, got, t = iter(loader()), 0, None
    next(it)
    t = time.time()
    while got < nb:
        try:
            next(it)
            got += 1
        except StopIteration:
            it = iter(loader())
    print(f"data pipeline  {got * a.batch / (time.time() - t):8.2f} img/s")

    q, k = ref.Segmentor(a.arch, 16), ref.Segmentor(a.arch, 16)
    k.load_state_dict(q.state_dict())
    for p in k.parameters():
        p.requires_grad = False
    q.train(), k.train()
    queue = torch.nn.functional.normalize(torch.randn(128, a.queue), dim=0)
    ptr = torch.zeros(1, dtype=torch.long)
    opt = torch.optim.SGD(q.parameters(), lr=0.015 * a.batch / 256, momentum=0.9, weight_decay=1e-4)

    def step(b):
        nonlocal queue, ptr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            losses, queue, p = ref.cp2_training_forward(q, k, queue, ptr, b)
        ptr = torch.tensor([p])
        opt.zero_grad()
        losses["total"].backward()
        opt.step()

    def as_batch(x):
        return {"im_q": x[0], "im_k": x[1], "mask_q": x[2], "mask_k": x[3]}

    it = iter(loader())
    fixed = as_batch(next(it))
    for _ in range(a.warmup):
        step(fixed)
    t = time.time()
    for _ in range(a.steps):
        step(fixed)
    print(f"model step     {a.steps * a.batch / (time.time() - t):8.2f} img/s")
    for _ in range(a.warmup):
        step(as_batch(next(it)))
    t = time.time()
    for _ in range(a.steps):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader())
            b = next(it)
        step(as_batch(b))
    print(f"end to end     {a.steps * a.batch / (time.time() - t):8.2f} img/s")


if __name__ == "__main__":
    main()
