#!/usr/bin/env python3
"""Writes the PyTorch side of cp2's parity and checkpoint tests into --out.

Files (each weights file in both containers: NAME.pt = zip, NAME_legacy.pt = legacy):
  resnet{18,50}_os{16,8}.pt      torchvision-named state dict (BN randomised)
  resnet{18,50}_os{16,8}_io.pt   input, eval output, train output, bn1 running_mean after it
  seg_r{18,50}_os16.pt           backbone.* + decode_head.* (ASPP + contrast_conv + conv_seg)
  seg_r{18,50}_os16_io.pt        input, projection/logits (eval), projection (train),
                                 head_input / head_* for the ASPP head alone
  moco_r18_legacy.pt             MoCo v2 training-checkpoint layout (legacy container)
  cp2_authors_r18.pt             CP² authors' layout (module.encoder_q.backbone.* ...)
  dtypes.pt, dtypes_legacy.pt    every supported dtype, shared storages, strided views
  dtypes_deflated.pt             dtypes.pt re-zipped with deflate
  long_pickle_legacy.pt          legacy container whose pickles outgrow the reader's first 1 MiB
  complex.pt                     a complex64 tensor (unsupported dtype)
  cp2_step_r{18_96,50_224}.pt    CP² pretraining state (authors' keys: module.encoder_q/k.*, queue,
                                 queue_ptr near K so the enqueue wraps), key encoder != query encoder
  cp2_step_*_batch.pt            im_q, im_k, mask_q, mask_k (the `cp2 loss --batch` format)
  moco_r18_io.pt                 input and MoCo v2 embedding (eval) of moco_r18's encoder_q
  optim_ref.pt                   torch.optim SGD / AdamW after three steps
  aug_input.png, aug_ref.pt     torchvision augmentation outputs (tools/aug_fixtures.py)
  cp2_step_*_ref.pt              reference losses, accuracies, queue after enqueue; for R18 also
                                 every query-encoder gradient (grad.<name>)
"""
import copy
import argparse
import os
import sys
import zipfile
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aug_fixtures  # noqa: E402
import cp2_reference as ref  # noqa: E402

H, W = 72, 88  # deliberately not square and not a multiple of 32


def save_both(obj, path):
    torch.save(obj, path + ".pt")
    torch.save(obj, path + "_legacy.pt", _use_new_zipfile_serialization=False)


def resnet_fixture(out, depth, os_, gen):
    m = ref.resnet(depth, os_)
    ref.randomize_bn(m, gen)
    sd = m.state_dict()
    save_both(sd, f"{out}/resnet{depth}_os{os_}")
    x = torch.randn(2, 3, H, W, generator=gen)
    with torch.no_grad():
        m.eval()
        y_eval = ref.resnet_features(m, x)
        m.train()
        y_train = ref.resnet_features(m, x)
    torch.save({"input": x, "out_eval": y_eval, "out_train": y_train,
                "bn1_running_mean_after_train": m.bn1.running_mean.clone()}, f"{out}/resnet{depth}_os{os_}_io.pt")


def segmentor_fixture(out, depth, gen):
    s = ref.Segmentor(depth, 16)
    ref.randomize_bn(s, gen)
    with torch.no_grad():  # make conv_seg's scale visible (it is not initialised to 0.01 here)
        for p in s.decode_head.contrast_conv.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    save_both(s.state_dict(), f"{out}/seg_r{depth}_os16")
    x = torch.randn(2, 3, H, W, generator=gen)
    hin = torch.randn(2, s.decode_head.image_pool[1].conv.in_channels, 5, 6, generator=gen)
    d = {"input": x, "head_input": hin}
    with torch.no_grad():
        s.eval()
        f = s.features(x)
        d["project_eval"] = s.decode_head.project(f)
        d["logits_eval"] = s.decode_head.classify(f)
        hf = s.decode_head.features(hin)
        d["head_features_eval"] = hf
        d["head_project_eval"] = s.decode_head.project(hf)
        d["head_logits_eval"] = s.decode_head.classify(hf)
        s.train()
        d["project_train"] = s.decode_head.project(s.features(x))
        d["head_project_train"] = s.decode_head.project(s.decode_head.features(hin))
    torch.save(d, f"{out}/seg_r{depth}_os16_io.pt")


def moco_fixture(out, gen):
    """MoCo v2's training checkpoint: {'epoch','arch','state_dict','optimizer'}, encoder_q with
    a 2-layer MLP fc, encoder_k, queue; saved by torch < 1.6, i.e. the legacy container."""
    q = ref.resnet(18, 32)
    ref.randomize_bn(q, gen)
    q.fc = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128))
    sd = OrderedDict()
    for k, v in q.state_dict().items():
        sd["module.encoder_q." + k] = v
    for k, v in q.state_dict().items():
        sd["module.encoder_k." + k] = v + 0.5 if v.is_floating_point() else v
    sd["module.queue"] = torch.randn(128, 16, generator=gen)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    opt = torch.optim.SGD(q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    q(torch.randn(2, 3, 32, 32, generator=gen)).mean().backward()  # a small step: weights stay sane
    opt.step()
    ck = {"epoch": 800, "arch": "resnet18", "state_dict": sd, "optimizer": opt.state_dict()}
    torch.save(ck, f"{out}/moco_r18_legacy.pt", _use_new_zipfile_serialization=False)
    # cp2's moco mode must compute MoCo v2's embedding: torchvision ResNet + MLP fc.
    x = torch.randn(2, 3, 40, 48, generator=gen)
    q.eval()
    with torch.no_grad():
        torch.save({"input": x, "embed_eval": q(x)}, f"{out}/moco_r18_io.pt")


def optim_fixture(out, gen):
    """Three torch.optim steps (SGD with momentum + weight decay; AdamW) with a new lr each
    step, on fixed parameters and gradients."""
    p0 = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    grads = [[torch.randn(p.shape, generator=gen) for p in p0] for _ in range(3)]
    lrs = [0.05, 0.03, 0.01]
    res = {f"p0.{i}": p for i, p in enumerate(p0)}
    for s in range(3):
        for i, g in enumerate(grads[s]):
            res[f"grad.{s}.{i}"] = g
    res["lr"] = torch.tensor(lrs, dtype=torch.float64)
    makers = {"sgd": lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9, weight_decay=1e-4),
              "adamw": lambda ps: torch.optim.AdamW(ps, lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)}
    for name, make in makers.items():
        ps = [p.clone().requires_grad_() for p in p0]
        opt = make(ps)
        for s in range(3):
            for p, g in zip(ps, grads[s]):
                p.grad = g.clone()
            for group in opt.param_groups:
                group["lr"] = lrs[s]
            opt.step()
        for i, p in enumerate(ps):
            res[f"{name}.{i}"] = p.detach().clone()
    torch.save(res, f"{out}/optim_ref.pt")


def cp2_authors_fixture(out, gen):
    s = ref.Segmentor(18, 16)
    ref.randomize_bn(s, gen)
    del s.decode_head.conv_seg
    sd = OrderedDict()
    for k, v in s.state_dict().items():
        sd["module.encoder_q." + k] = v
        sd["module.encoder_k." + k] = v.clone()
    sd["module.queue"] = torch.randn(128, 16, generator=gen)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 20, "arch": "resnet18", "state_dict": sd}, f"{out}/cp2_authors_r18.pt")


def finetune_fixture(out, gen):
    """DeepLabV3 finetuning as mmsegmentation 0.x computes it, written out independently:
    two SGD steps (momentum 0.9, poly lr) on cross-entropy of logits bilinearly resized to
    the label, 255 ignored, averaged over all pixels; then, in eval mode, mmseg's
    slide_inference window grid and flip-averaged softmax of whole-image inference.
    Dropout is off (its random masks cannot match across frameworks). Training runs in
    float64: in float32 the two frameworks' convolutions differ in the 6th digit, enough to
    flip the odd ReLU input that sits at zero and move a gradient by percents."""
    torch.manual_seed(7)
    s = ref.Segmentor(18, 16, num_classes=5)
    ref.randomize_bn(s, gen)
    del s.decode_head.contrast_conv
    s.decode_head.dropout = torch.nn.Identity()
    s = s.double()
    before = OrderedDict((k, v.clone()) for k, v in s.state_dict().items())
    x = torch.randn(2, 3, 64, 80, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 64, 80), generator=gen)
    y[:, :5, :] = 255
    opt = torch.optim.SGD(s.parameters(), lr=0.01, momentum=0.9, weight_decay=0)
    losses, lrs = [], []
    s.train()
    for t in range(2):
        lr = (0.01 - 1e-4) * (1 - t / 10) ** 0.9 + 1e-4  # mmcv poly, 10 iterations
        for g in opt.param_groups:
            g["lr"] = lr
        loss = ref.mmseg_seg_loss(s, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        lrs.append(lr)
    after = OrderedDict((k, v.clone()) for k, v in s.state_dict().items())
    s = s.float()
    s.eval()
    img = torch.randint(0, 256, (45, 70, 3), generator=gen, dtype=torch.uint8)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    xi = ((img.permute(2, 0, 1).float() - mean) / std).unsqueeze(0)

    def encode_decode(t):
        lo = s.decode_head.classify(s.features(t))
        return F.interpolate(lo, size=t.shape[2:], mode="bilinear", align_corners=False)

    with torch.no_grad():
        hc = wc = 32
        hs, ws = 20, 24
        _, _, H, W = xi.shape
        hg = max(H - hc + hs - 1, 0) // hs + 1
        wg = max(W - wc + ws - 1, 0) // ws + 1
        preds = torch.zeros(1, 5, H, W)
        count = torch.zeros(1, 1, H, W)
        for i in range(hg):
            for j in range(wg):
                y1, x1 = i * hs, j * ws
                y2, x2 = min(y1 + hc, H), min(x1 + wc, W)
                y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
                preds += F.pad(encode_decode(xi[:, :, y1:y2, x1:x2]), (x1, W - x2, y1, H - y2))
                count[:, :, y1:y2, x1:x2] += 1
        slide = preds / count
        p = F.softmax(encode_decode(xi), 1) + F.softmax(encode_decode(xi.flip(3)), 1).flip(3)
        flip_probs = (p / 2)[0]
    torch.save({"state_dict": before, "after": after, "input": x, "label": y,
                "losses": torch.tensor(losses, dtype=torch.float64), "lrs": torch.tensor(lrs, dtype=torch.float64),
                "image": img, "slide_logits": slide, "flip_probs": flip_probs}, f"{out}/finetune_r18.pt")


def dtypes_fixture(out):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4
    shared = torch.arange(20, dtype=torch.float32)
    obj = OrderedDict([
        ("f32", base), ("f16", base.half()), ("bf16", base.bfloat16()), ("f64", base.double()),
        ("i64", torch.arange(-5, 5)), ("i32", torch.arange(-5, 5, dtype=torch.int32)),
        ("i16", torch.arange(-5, 5, dtype=torch.int16)), ("i8", torch.arange(-5, 5, dtype=torch.int8)),
        ("u8", torch.arange(0, 250, 25, dtype=torch.uint8)), ("bool", torch.arange(6) % 2 == 0),
        ("shared", shared), ("view", shared[3:9]), ("strided", shared.view(4, 5).t()),
        ("scalar", torch.tensor(2.5)), ("empty", torch.zeros(0, 3)),
        ("nested", {"a": {"b": torch.ones(2)}, "epoch": 7, "lr": 0.5, "name": "resnet50", "flag": True,
                    "none": None, "list": [1, 2, 3], "big": 2 ** 40, "neg": -3, 3: "int key"}),
    ])
    save_both(obj, f"{out}/dtypes")
    # The same zip with every entry deflated (a checkpoint re-zipped by a tool): the
    # reader's inflate path and its CRC-32 check against Python's zipfile.
    with zipfile.ZipFile(f"{out}/dtypes.pt") as src, \
            zipfile.ZipFile(f"{out}/dtypes_deflated.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    torch.save({"z": torch.zeros(2, dtype=torch.complex64)}, f"{out}/complex.pt")
    # 30,000 small storages: the pickles are ~3.4 MiB, past the 1 MiB that cp2 first
    # reads of a legacy file; then one 12 MiB storage, read straight into its tensor.
    many = OrderedDict((f"t{i}", torch.full((3,), float(i))) for i in range(30000))
    many["big"] = torch.arange(3 << 20, dtype=torch.float32)
    torch.save(many, f"{out}/long_pickle_legacy.pt", _use_new_zipfile_serialization=False)


def random_masks(n, size, gen):
    """Foreground rectangles covering 50-80 % of the image, as the copy-paste composer makes."""
    masks = torch.zeros(n, size, size)
    for i in range(n):
        area = size * size * (0.5 + 0.3 * torch.rand(1, generator=gen).item())
        h = min(size, int(round(area ** 0.5)))
        w = min(size, int(round(area / h)))
        y = int(torch.randint(0, size - h + 1, (1,), generator=gen))
        x = int(torch.randint(0, size - w + 1, (1,), generator=gen))
        masks[i, y:y + h, x:x + w] = 1
    return masks


def cp2_step_fixture(out, depth, size, n, K, gen, grads):
    q = ref.Segmentor(depth, 16)
    del q.decode_head.conv_seg
    ref.randomize_bn(q, gen)
    k = copy.deepcopy(q)
    ref.randomize_bn(k, gen)
    with torch.no_grad():
        for p in k.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    queue = torch.nn.functional.normalize(torch.randn(128, K, generator=gen), dim=0)
    ptr = torch.tensor([K - 1])
    sd = OrderedDict()
    for name, enc in (("encoder_q", q), ("encoder_k", k)):
        for key, v in enc.state_dict().items():
            sd[f"module.{name}.{key}"] = v
    sd["module.queue"], sd["module.queue_ptr"] = queue, ptr
    tag = f"cp2_step_r{depth}_{size}"
    torch.save({"state_dict": sd, "epoch": 0}, f"{out}/{tag}.pt")
    batch = {"im_q": torch.randn(n, 3, size, size, generator=gen), "im_k": torch.randn(n, 3, size, size, generator=gen),
             "mask_q": random_masks(n, size, gen), "mask_k": random_masks(n, size, gen)}
    torch.save(batch, f"{out}/{tag}_batch.pt")
    q.train()
    k.train()
    losses, new_queue, new_ptr = ref.cp2_training_forward(q, k, queue, ptr, batch)
    res = {kk: v.detach() for kk, v in losses.items()}
    res["queue_after"], res["queue_ptr_after"] = new_queue, torch.tensor([new_ptr])
    if grads:
        losses["total"].backward()
        for name, p in q.named_parameters():
            res["grad." + name] = p.grad.clone()
    torch.save(res, f"{out}/{tag}_ref.pt")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--gpu-check-only", action="store_true",
                    help="only the fixtures cp2_gpu_check reads: the CP² step and finetuning ones "
                         "(tools/gpu_check.sh; other random draws than the full set)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    if args.gpu_check_only:
        cp2_step_fixture(args.out, 18, 96, 4, 256, gen, grads=True)
        cp2_step_fixture(args.out, 50, 224, 2, 256, gen, grads=False)
        finetune_fixture(args.out, gen)
        print(f"CP² step and finetuning fixtures written to {args.out} with torch {torch.__version__}")
        return
    for depth in (18, 50):
        for os_ in (16, 8):
            resnet_fixture(args.out, depth, os_, gen)
        segmentor_fixture(args.out, depth, gen)
    moco_fixture(args.out, gen)
    cp2_authors_fixture(args.out, gen)
    dtypes_fixture(args.out)
    cp2_step_fixture(args.out, 18, 96, 4, 256, gen, grads=True)
    cp2_step_fixture(args.out, 50, 224, 2, 256, gen, grads=False)
    aug_fixtures.write(args.out)
    optim_fixture(args.out, gen)
    finetune_fixture(args.out, gen)
    print(f"parity fixtures written to {args.out} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
