"""torchvision side of the augmentation parity tests (tests/data/test_augment.cpp).

Writes aug_input.png (a fixed, structured RGB image) and aug_ref.pt: for each op, the
parameters and torchvision's output on the PIL image (what MoCo v2's pipeline calls),
uint8 C x H x W; for the blur also PIL's own ImageFilter.GaussianBlur (MoCo v2's class);
for a whole view, the normalised float output of the chained torchvision ops.
"""
import math

import torch
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_image(h=97, w=131):
    g = torch.Generator().manual_seed(7)
    y = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    r = 0.5 + 0.5 * torch.sin(6.0 * x + 2.0 * y)
    gr = 0.5 + 0.5 * torch.cos(4.0 * y - 3.0 * x * y)
    b = (x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.08
    img = torch.stack([r, gr, b.float() * 0.8 + 0.1 * x])
    img[:, 10:30, 60:100] = torch.tensor([0.9, 0.2, 0.1]).view(3, 1, 1)  # a saturated block
    img[:, 60:80, 20:40] = 0.5  # grey block (hue undefined)
    img = img + 0.05 * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def to_u8(pil):
    return F.pil_to_tensor(pil).contiguous()


def write(out):
    img = make_image()
    pil = F.to_pil_image(img)
    pil.save(f"{out}/aug_input.png")
    ref = {}

    def case(name, params, result):
        ref[f"{name}.params"] = torch.tensor(params, dtype=torch.float64)
        ref[f"{name}.out"] = result

    case("crop_down", [11, 17, 70, 90, 48], to_u8(F.resized_crop(pil, 11, 17, 70, 90, [48, 48])))
    case("crop_up", [5, 3, 30, 25, 64], to_u8(F.resized_crop(pil, 5, 3, 30, 25, [64, 64])))
    case("crop_full", [0, 0, 97, 131, 56], to_u8(F.resized_crop(pil, 0, 0, 97, 131, [56, 56])))
    for i, f in enumerate((1.3, 0.65)):
        case(f"brightness{i}", [f], to_u8(F.adjust_brightness(pil, f)))
    for i, f in enumerate((1.35, 0.62)):
        case(f"contrast{i}", [f], to_u8(F.adjust_contrast(pil, f)))
    for i, f in enumerate((1.38, 0.6)):
        case(f"saturation{i}", [f], to_u8(F.adjust_saturation(pil, f)))
    for i, f in enumerate((0.08, -0.1, 0.5)):
        case(f"hue{i}", [f], to_u8(F.adjust_hue(pil, f)))
    case("gray", [], to_u8(F.rgb_to_grayscale(pil, num_output_channels=3)))
    for i, s in enumerate((0.6, 1.7)):
        k = 2 * math.ceil(3 * s) + 1
        case(f"blur{i}", [k, s], to_u8(F.gaussian_blur(pil, [k, k], [s, s])))
        case(f"pilblur{i}", [k, s], to_u8(pil.filter(ImageFilter.GaussianBlur(radius=s))))
    case("flip", [], to_u8(F.hflip(pil)))

    # A whole view: crop, jitter in the order (hue, contrast, brightness, saturation),
    # grayscale off, blur, flip, ToTensor, Normalize.
    v = F.resized_crop(pil, 8, 20, 80, 100, [64, 64])
    v = F.adjust_hue(v, -0.07)
    v = F.adjust_contrast(v, 1.2)
    v = F.adjust_brightness(v, 0.8)
    v = F.adjust_saturation(v, 1.3)
    v = F.gaussian_blur(v, [7, 7], [1.1, 1.1])
    v = F.hflip(v)
    t = F.normalize(F.to_tensor(v), MEAN, STD)
    # params: crop(4), size, order(4), b, c, s, h, sigma, kernel
    case("view", [8, 20, 80, 100, 64, 3, 1, 0, 2, 0.8, 1.2, 1.3, -0.07, 1.1, 7], t)
    torch.save(ref, f"{out}/aug_ref.pt")
