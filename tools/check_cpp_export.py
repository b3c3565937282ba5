#!/usr/bin/env python3
"""Loads checkpoints written by cp2 (C++) with torch.load and checks that torchvision's
resnet50 and the PyTorch ASPP rebuild reproduce cp2's outputs (max rel error <= 1e-4).
Usage: check_cpp_export.py DIR   (DIR holds r50_torchvision.pt, r50_mmseg.pt, r50_io.pt)"""
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cp2_reference as ref  # noqa: E402

TOL = 1e-4


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def main(d):
    io = torch.load(f"{d}/r50_io.pt")
    sd = torch.load(f"{d}/r50_torchvision.pt")
    m = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True])
    res = m.load_state_dict(sd, strict=False)
    assert sorted(res.missing_keys) == ["fc.bias", "fc.weight"] and not res.unexpected_keys, res
    m.eval()
    seg = ref.Segmentor(50, 16)
    ck = torch.load(f"{d}/r50_mmseg.pt")
    seg.load_state_dict(ck["state_dict"], strict=True)
    seg.eval()
    with torch.no_grad():
        errs = {"torchvision backbone": rel(ref.resnet_features(m, io["input"]), io["backbone"])}
        f = seg.features(io["input"])
        errs["projection"] = rel(seg.decode_head.project(f), io["project"])
        errs["logits"] = rel(seg.decode_head.classify(f), io["logits"])
    ok = True
    for k, e in errs.items():
        print(f"[export parity] {k}: max rel error {e:.2e}")
        ok &= e <= TOL
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
