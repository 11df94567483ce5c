"""pytorch-grad-cam `GradCAM`, its documented use: one image at a time, one call per class
(`ClassifierOutputTarget`) for each of the top-k classes, `show_cam_on_image` over the photo at its
own size, saved as JPEG."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from common import JPEG_QUALITY, arguments, build, image_files
from PIL import Image, ImageOps
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchvision.transforms.functional import normalize, to_tensor


def main() -> None:
    args = arguments(__doc__)
    model, network, target, _ = build(args.model, args.weights, args.device)
    size = model.input_size
    args.out.mkdir(parents=True, exist_ok=True)
    layer = network.get_submodule(target)
    with GradCAM(model=network, target_layers=[layer]) as cam:
        for i, path in enumerate(image_files(args.images)):
            img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
            x = normalize(to_tensor(img.resize((size, size), Image.BILINEAR)), model.mean, model.std)[None].to(
                args.device
            )
            with torch.no_grad():
                top = network(x)[0].topk(args.topk).indices.tolist()
            photo = np.asarray(img, dtype=np.float32) / 255
            for rank, class_idx in enumerate(top, 1):
                grayscale_cam = cam(input_tensor=x, targets=[ClassifierOutputTarget(class_idx)])[0]
                grayscale_cam = cv2.resize(grayscale_cam, img.size)
                visualization = show_cam_on_image(photo, grayscale_cam, use_rgb=True)
                Image.fromarray(visualization).save(args.out / f"{i:06d}_top{rank}.jpg", quality=JPEG_QUALITY)


if __name__ == "__main__":
    main()
