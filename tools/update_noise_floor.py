#!/usr/bin/env python3
"""How far rounding-level differences spread through a few CP² training steps: the scale
against which cp2_gpu_check's "[graph]" comparison (CUDA-graph steps against eager ones) is
read. Two identical R18-ASPP@96 models (tools/cp2_reference.py), batch 8, K 256, SGD
(momentum 0.9, weight decay 1e-4) at 0.01 for 3 steps then 0.005 for 4, take the same
batch every step; the second model's gradients get a relative perturbation of --eps
(times a standard normal per element) before each step. Printed: each step's loss
difference, then the weights' 7-step update difference |b - a| / |a - a0| and the momentum
buffers' |b - a| / |a| (L2 over all parameters), as cp2_gpu_check prints them.

  /usr/bin/python3 tools/update_noise_floor.py --eps 1e-7 --threads 2
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cp2_reference as ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eps", type=float, default=1e-7, help="relative gradient perturbation per step")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    def make():
        torch.manual_seed(3)
        q, k = ref.Segmentor(18, 16), ref.Segmentor(18, 16)
        k.load_state_dict(q.state_dict())
        for p in k.parameters():
            p.requires_grad = False
        q.train(), k.train()
        return q, k

    (qa, ka), (qb, kb) = make(), make()
    w0 = {n: p.detach().clone() for n, p in qa.named_parameters()}
    torch.manual_seed(5)
    queue0 = torch.nn.functional.normalize(torch.randn(128, 256), dim=0)
    S, N = 96, 8
    mask = (torch.rand(N, S, S) > 0.4).float()
    batch = {"im_q": torch.randn(N, 3, S, S), "im_k": torch.randn(N, 3, S, S), "mask_q": mask, "mask_k": mask.flip(2)}
    opts = [torch.optim.SGD(q.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4) for q in (qa, qb)]
    state = [[queue0.clone(), torch.zeros(1, dtype=torch.long)] for _ in range(2)]
    gen = torch.Generator().manual_seed(11)
    for step, lr in enumerate([0.01] * 3 + [0.005] * 4):
        losses = []
        for i, (q, k, opt) in enumerate(((qa, ka, opts[0]), (qb, kb, opts[1]))):
            for g in opt.param_groups:
                g["lr"] = lr
            parts, queue, ptr = ref.cp2_training_forward(q, k, state[i][0], state[i][1], batch)
            state[i] = [queue, torch.tensor([ptr])]
            opt.zero_grad()
            parts["total"].backward()
            if i == 1:
                with torch.no_grad():
                    for p in q.parameters():
                        if p.grad is not None:
                            p.grad += p.grad * a.eps * torch.randn(p.grad.shape, generator=gen)
            opt.step()
            losses.append(parts["total"].item())
        print(f"step {step + 1}: loss {losses[0]:.6f}, rel. difference {abs(losses[0] - losses[1]) / abs(losses[0]):.2e}")
    pa, pb = dict(qa.named_parameters()), dict(qb.named_parameters())
    diff = sum(((pa[n] - pb[n]).double() ** 2).sum().item() for n in pa)
    move = sum(((pa[n] - w0[n]).double() ** 2).sum().item() for n in pa)
    used = [n for n in pa if "momentum_buffer" in opts[0].state[pa[n]]]
    bd = sum(((opts[0].state[pa[n]]["momentum_buffer"] - opts[1].state[pb[n]]["momentum_buffer"]).double() ** 2)
             .sum().item() for n in used)
    bn = sum((opts[0].state[pa[n]]["momentum_buffer"].double() ** 2).sum().item() for n in used)
    print(f"eps {a.eps:g}: 7-step update rel {(diff / move) ** 0.5:.2e}, momentum rel {(bd / bn) ** 0.5:.2e}")


if __name__ == "__main__":
    main()
