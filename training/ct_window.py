"""Choose the CT window that makes real DICOM slices look like the Kaggle chest screenshots.

The Kaggle chest images are 8-bit screenshots whose window is unknown, while the node must map HU
into [0, 1] with a manifest window. Two tissue landmarks fix a linear window: the intensity modes
of aerated lung and of soft tissue in the Kaggle training images (inside the body box, as
``to_model_input`` crops) are matched to textbook HU values, lung parenchyma about -850 HU and
soft tissue (muscle, blood) about +40 HU. Matching whole histograms against a DICOM series was tried
first and rejected: the outcome depended on how much air and which anatomy each crop held.

``python -m training.ct_window`` prints the two modes and the window they imply.
"""

from __future__ import annotations

import numpy as np

from onconode.inference.models import CropBody, Window
from onconode.inference.preprocess import body_box
from training.datasets import data_root, load_unit

LUNG_HU = -850.0
SOFT_TISSUE_HU = 40.0
LUNG_RANGE = (0.02, 0.25)         # where the Kaggle lung mode is searched, [0, 1] scale
SOFT_TISSUE_RANGE = (0.25, 0.75)


def body_histogram(images01: list[np.ndarray], crop: CropBody) -> np.ndarray:
    """256-bin histogram of the pixels inside each image's body box, smoothed over 5 bins."""
    counts = np.zeros(256)
    for image in images01:
        top, bottom, left, right = body_box(image, crop)
        counts += np.bincount((image[top:bottom, left:right] * 255).round().astype(np.int64).ravel(),
                              minlength=256)
    return np.convolve(counts / counts.sum(), np.ones(5) / 5, mode="same")


def mode_in(histogram: np.ndarray, bounds: tuple[float, float]) -> float:
    """Intensity ([0, 1]) of the histogram's highest bin inside ``bounds``."""
    low, high = (round(b * 255) for b in bounds)
    return (low + int(np.argmax(histogram[low:high]))) / 255.0


def landmark_window(lung01: float, soft01: float) -> Window:
    """The linear window that maps LUNG_HU to ``lung01`` and SOFT_TISSUE_HU to ``soft01``."""
    width = (SOFT_TISSUE_HU - LUNG_HU) / (soft01 - lung01)
    low = LUNG_HU - lung01 * width
    return Window(center=low + width / 2, width=width)


def main() -> None:
    paths = sorted((data_root() / "images/chest-ct-kaggle/train").glob("*/*.jpg"))
    histogram = body_histogram([load_unit(p) for p in paths], CropBody())
    lung, soft = mode_in(histogram, LUNG_RANGE), mode_in(histogram, SOFT_TISSUE_RANGE)
    spec = landmark_window(lung, soft)
    print(f"kaggle lung mode={lung:.3f} soft-tissue mode={soft:.3f} -> "
          f"window center={spec.center:.0f} width={spec.width:.0f}")


if __name__ == "__main__":
    main()
