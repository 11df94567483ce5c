"""torchcam 0.5 `CAM`, the way its README uses it: one image at a time, the top-k maps from one
forward pass, `overlay_mask` over the photo at its own size, saved as JPEG."""

from __future__ import annotations

import torch
from common import JPEG_QUALITY, arguments, build, image_files
from PIL import Image, ImageOps
from torchcam.methods import CAM
from torchcam.utils import overlay_mask
from torchvision.transforms.functional import normalize, to_pil_image, to_tensor


def main() -> None:
    args = arguments(__doc__)
    model, network, target, fc = build(args.model, args.weights, args.device)
    size = model.input_size
    args.out.mkdir(parents=True, exist_ok=True)
    cam = CAM(network, target_layer=target, fc_layer=fc, input_shape=(3, size, size))
    for i, path in enumerate(image_files(args.images)):
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        x = normalize(to_tensor(img.resize((size, size), Image.BILINEAR)), model.mean, model.std)
        with torch.no_grad():
            scores = network(x[None].to(args.device))
        for rank, class_idx in enumerate(scores[0].topk(args.topk).indices.tolist(), 1):
            activation_map = cam(class_idx, scores)[0].squeeze(0).cpu()
            result = overlay_mask(img, to_pil_image(activation_map, mode="F"), alpha=0.5)
            result.save(args.out / f"{i:06d}_top{rank}.jpg", quality=JPEG_QUALITY)


if __name__ == "__main__":
    main()
