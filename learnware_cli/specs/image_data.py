"""Reading image data sets for the image specification: ``read_images(path)`` -> float (N, C, H, W) in [0, 1].

Sources:
- ``.npy``: one array; ``.npz``: its only array, or the one named "images",
  "X" or "x". Layouts N x H x W (one channel), N x H x W x C or N x C x H x W
  with C in {1, 3} (channels-first wins when both axes could be channels).
  uint8 (and other integer) pixels are read as 0..255; float pixels in
  [0, 1] are kept, float pixels in [0, 255] are divided by 255.
- a folder of PNG/JPEG files (sorted by name; needs Pillow): all grey ->
  C = 1, else RGB, C = 3 (alpha dropped); all must have one size.

Every defect (missing path, empty, ragged, wrong rank, NaN/Inf, values out of
range, an unreadable file) is a one-line InputError. NumPy only: no JAX here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from learnware_cli.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_NPZ_KEYS = ("images", "X", "x")


def read_images(path) -> np.ndarray:
    """Images at path (.npy, .npz or a folder of PNG/JPEG) -> float64 (N, C, H, W) in [0, 1]."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({_one_line(exc)})") from None
    elif suffix == ".npz":
        array = _read_npz(path)
    else:
        raise InputError(f"{path}: unsupported image source (expected .npy, .npz or a folder of PNG/JPEG files)")
    return images_from_array(array, source=str(path))


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if not names:
                raise InputError(f"{path}: the .npz archive holds no array")
            name = names[0] if len(names) == 1 else next((k for k in _NPZ_KEYS if k in names), None)
            if name is None:
                raise InputError(f"{path}: the .npz archive holds {len(names)} arrays ({', '.join(names[:6])}); name one 'images'")
            return archive[name]
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({_one_line(exc)})") from None


def images_from_array(array, source: str = "images") -> np.ndarray:
    """Validate an image array and bring it to float64 (N, C, H, W) in [0, 1] (layouts as read_images)."""
    try:
        x = np.asarray(array)
    except ValueError as exc:
        raise InputError(f"{source}: images are ragged ({_one_line(exc)})") from None
    if x.dtype == object:
        raise InputError(f"{source}: images are ragged or not numeric (object array)")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == bool):
        raise InputError(f"{source}: pixels must be numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] in (1, 3):
            pass
        elif x.shape[3] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        else:
            raise InputError(f"{source}: cannot tell the channel axis of shape {x.shape} (need 1 or 3 channels, first or last)")
    else:
        raise InputError(f"{source}: images must be N x H x W, N x H x W x C or N x C x H x W, got shape {x.shape}")
    if x.size == 0:
        raise InputError(f"{source}: no images (shape {x.shape})")
    integer = np.issubdtype(x.dtype, np.integer)
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{source}: images contain NaN or Inf pixels")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 255:
        raise InputError(f"{source}: pixel values must lie in [0, 1] or [0, 255], found {low:g} .. {high:g}")
    if integer or high > 1:
        x = x / 255.0
    return x


def _read_folder(folder: Path) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no PNG or JPEG files")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise InputError(f"{folder}: reading PNG/JPEG files needs Pillow: pip install pillow") from None
    pictures = []
    for file in files:
        try:
            with Image.open(file) as img:
                img.load()
                pictures.append((file, img.copy()))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise InputError(f"{file}: not a readable image ({_one_line(exc)})") from None
    sizes = {img.size for _, img in pictures}
    if len(sizes) > 1:
        (f1, i1), other = pictures[0], next((f, i) for f, i in pictures if i.size != pictures[0][1].size)
        raise InputError(
            f"{folder}: images are ragged: {f1.name} is {i1.size[0]}x{i1.size[1]}, {other[0].name} is {other[1].size[0]}x{other[1].size[1]}"
        )
    grey = all(img.mode in ("1", "L", "LA", "I", "I;16", "F") for _, img in pictures)
    mode = "L" if grey else "RGB"
    arrays = [np.asarray(img.convert(mode), dtype=np.uint8) for _, img in pictures]
    x = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    if not grey:
        x = x.transpose(0, 3, 1, 2)
    return images_from_array(x, source=str(folder))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
