"""Independent PyTorch references for cp2's parity tests (tests only; cp2 never needs Python).

- ResNet-50: torchvision's own model (replace_stride_with_dilation for OS 16/8).
- ResNet-18 dilated: torchvision refuses to dilate BasicBlock, so the reference patches a
  torchvision resnet18 with mmsegmentation's rule: in a dilated stage the first block uses
  half the dilation (contract_dilation) and only conv1 of each block is dilated.
- ASPP head: a rebuild of mmsegmentation's ASPPHead plus CP²'s contrast_conv projection.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def resnet(depth, output_stride):
    if depth == 50:
        dil = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}[output_stride]
        return torchvision.models.resnet50(replace_stride_with_dilation=dil)
    assert depth == 18
    m = torchvision.models.resnet18()
    dilations = {32: (1, 1, 1, 1), 16: (1, 1, 1, 2), 8: (1, 1, 2, 4)}[output_stride]
    for stage, d in enumerate(dilations):
        if d == 1:
            continue
        layer = getattr(m, f"layer{stage + 1}")
        for b, block in enumerate(layer):
            bd = d // 2 if b == 0 else d
            if b == 0:
                block.conv1.stride = (1, 1)
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1)
            block.conv1.dilation = (bd, bd)
            block.conv1.padding = (bd, bd)
    return m


def resnet_features(m, x):
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


class ConvModule(nn.Module):
    def __init__(self, cin, cout, k, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class ASPPHead(nn.Module):
    def __init__(self, cin=2048, ch=512, dilations=(1, 6, 12, 18), proj=128, num_classes=21):
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(cin, ch, 1))
        self.aspp_modules = nn.ModuleList(
            [ConvModule(cin, ch, 1) if d == 1 else ConvModule(cin, ch, 3, padding=d, dilation=d) for d in dilations])
        self.bottleneck = ConvModule((len(dilations) + 1) * ch, ch, 3, padding=1)
        self.contrast_conv = nn.Sequential(nn.Conv2d(ch, ch, 1), nn.ReLU(), nn.Conv2d(ch, proj, 1))
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(ch, num_classes, 1)

    def features(self, x):
        pool = F.interpolate(self.image_pool(x), size=x.shape[2:], mode="bilinear", align_corners=False)
        return self.bottleneck(torch.cat([pool] + [m(x) for m in self.aspp_modules], 1))

    def project(self, f):
        return self.contrast_conv(f)

    def classify(self, f):
        return self.conv_seg(self.dropout(f))


class Segmentor(nn.Module):
    def __init__(self, depth, output_stride, num_classes=21):
        super().__init__()
        self.backbone = resnet(depth, output_stride)
        del self.backbone.fc
        self.decode_head = ASPPHead(2048 if depth >= 50 else 512, num_classes=num_classes)

    def features(self, x):
        return self.decode_head.features(resnet_features(self.backbone, x))


def mmseg_seg_loss(s, x, y):
    """mmseg 0.x's decode-head loss for a Segmentor with a classifier: logits resized
    (bilinear) to the label, cross-entropy ignoring 255, averaged over all pixels."""
    logits = s.decode_head.classify(s.features(x))
    up = F.interpolate(logits, size=y.shape[1:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, y, ignore_index=255, reduction="none").mean()


def randomize_bn(model, gen):
    """Zero-initialised last BNs hide errors inside residual branches (SPEC §2)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def cp2_training_forward(enc_q, enc_k, queue, queue_ptr, batch, m=0.999, T=0.2, dense_weight=0.2, stride=16):
    """One CP² training step's forward, written from the authors' formulas (SPEC §2-3):
    momentum update, normalised dense features, masked pooling, instance + dense losses,
    accuracies, then the circular enqueue. Returns (loss dict, new queue, new ptr)."""
    with torch.no_grad():
        for pq, pk in zip(enc_q.parameters(), enc_k.parameters()):
            pk.mul_(m).add_(pq.detach(), alpha=1 - m)
    q = F.normalize(enc_q.decode_head.project(enc_q.features(batch["im_q"])), dim=1)
    with torch.no_grad():
        k = F.normalize(enc_k.decode_head.project(enc_k.features(batch["im_k"])), dim=1)
    s = stride
    mq = batch["mask_q"][:, s // 2::s, s // 2::s].flatten(1).float()
    mk = batch["mask_k"][:, s // 2::s, s // 2::s].flatten(1).float()
    qf, kf = q.flatten(2), k.flatten(2)
    q_ins = F.normalize(torch.einsum("ncp,np->nc", qf, mq), dim=1)
    k_ins = F.normalize(torch.einsum("ncp,np->nc", kf, mk), dim=1)
    l_pos = torch.einsum("nc,nc->n", q_ins, k_ins).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", q_ins, queue)
    logits = torch.cat([l_pos, l_neg], 1) / T
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss_ins = F.cross_entropy(logits, labels)
    dense = torch.einsum("ncx,ncy->nxy", qf, kf)
    logp = F.log_softmax(dense, dim=1)
    pos = mq[:, :, None] * mk[:, None, :]
    loss_dense = ((-logp * pos).sum((1, 2)) / pos.sum((1, 2))).mean()
    total = loss_ins + dense_weight * loss_dense
    with torch.no_grad():
        top = logits.topk(5, 1).indices
        acc1 = (top[:, 0] == 0).float().mean() * 100
        acc5 = (top == 0).any(1).float().mean() * 100
        best = dense.flatten(1).argmax(1)
        acc_dense = (pos.flatten(1).gather(1, best[:, None]) > 0).float().mean() * 100
        n, K = k_ins.shape[0], queue.shape[1]
        ptr = int(queue_ptr)
        new_queue = queue.clone()
        for i in range(n):
            new_queue[:, (ptr + i) % K] = k_ins[i]
        new_ptr = (ptr + n) % K
    return ({"loss_ins": loss_ins, "loss_dense": loss_dense, "total": total, "acc1": acc1, "acc5": acc5,
             "acc_dense": acc_dense}, new_queue, new_ptr)
