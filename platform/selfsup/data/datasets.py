"""The image datasets' loaders (registered in ``selfsup.modalities.image``), returned as float
tensors with a fixed train/test split.

Images are ``(N, C, H, W)`` float32 tensors (or, for a streamed folder, an :class:`ImageFiles`
that indexes like one, see :class:`StreamedFiles`); labels ``(N,)`` int64 or ``None`` when the data has none.
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import numpy as np
import torch

from selfsup import storage
from selfsup.data.files import Folder, folder_parts, open_binary, scan
from selfsup.data.splits import DataError, Split, SplitData, StreamedFiles, read_npz, split_arrays, to_split

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def digits(test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """scikit-learn's bundled digits: 1,797 8x8 grey images scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    (xtr, ytr), (xte, yte) = split_arrays(x, bunch.target.astype(np.int64), test_fraction, split_seed)
    return SplitData("digits", to_split(xtr, ytr), to_split(xte, yte))


def npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """User images from an ``.npz`` file: ``x`` ``(N, H, W)`` or ``(N, C, H, W)`` (see :func:`read_npz`)."""
    return read_npz(path, "image", "H,W", test_fraction, split_seed)


def decode_image(f, image_size: int, where=None) -> np.ndarray:
    """One image (a local path or URI, or a file-like object of its encoded bytes) -> ``(3, S, S)``
    float32 in [0, 1] (RGB, bilinear resize), or a one-line error naming ``where`` (default: ``f``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(open_binary(str(f))) if isinstance(f, (str, Path)) else f
            with Image.open(source) as im:
                im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where or f}: not a readable image ({exc})") from None
    return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _read_images(files, image_size: int) -> np.ndarray:
    out = np.empty((len(files), 3, image_size, image_size), dtype=np.float32)
    for i, f in enumerate(files):
        out[i] = decode_image(f, image_size)
    return out


class ImageFiles(StreamedFiles):
    """Image files decoded on access to ``(3, S, S)`` (see :class:`StreamedFiles`)."""

    def __init__(self, files, image_size: int, on_bad_file: str = "fail"):
        super().__init__(files, (3, image_size, image_size), on_bad_file)
        self.image_size = image_size

    def read(self, f) -> np.ndarray:
        return decode_image(f, self.image_size)

    def encoded(self, indices) -> list[bytes]:
        """The files' bytes, as stored (for :class:`EncodedImages`)."""
        out = []
        for i in indices:
            try:
                out.append(storage.read_bytes(str(self.files[int(i)])))
            except OSError as exc:
                raise DataError(f"{self.files[int(i)]}: cannot read it ({str(exc).splitlines()[0]})") from None
        return out


class EncodedImages(torch.utils.data.Dataset):
    """A streamed image dataset's samples as their encoded bytes, ``(L,)`` uint8 each, with the
    file (or shard and key) each came from: ``data.decode_on: device`` decodes them in the training
    worker (:func:`decode_batch`). ``images`` has ``files`` and ``encoded(indices)``
    (:class:`ImageFiles`, ``selfsup.data.shards.ShardSamples``, which reads a batch per shard)."""

    def __init__(self, images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.items([i])[0]

    def items(self, indices) -> list:
        data = self.images.encoded(indices)
        return [(torch.frombuffer(bytearray(b), dtype=torch.uint8), str(self.images.files[int(i)])) for b, i in zip(data, indices)]


def decode_batch(encoded: list[torch.Tensor], names: list[str], size: int, device) -> torch.Tensor:
    """Encoded images -> ``(B, 3, S, S)`` float32 in [0, 1] on ``device``: the JPEGs decoded there
    together by ``torchvision.io.decode_jpeg`` (nvJPEG on a GPU), any other format (PNG, WebP) on the
    CPU; RGB, each resized to ``S x S`` (bilinear, antialiased: close to PIL's, not bitwise). A
    file that does not decode fails naming it (``names``)."""
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_image as tv_decode, decode_jpeg

    jpeg = [i for i, b in enumerate(encoded) if len(b) > 2 and int(b[0]) == 0xFF and int(b[1]) == 0xD8]
    out: list = [None] * len(encoded)
    try:
        if jpeg:
            for i, img in zip(jpeg, decode_jpeg([encoded[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)):
                out[i] = img
        for i in (i for i in range(len(encoded)) if out[i] is None):
            out[i] = tv_decode(encoded[i], mode=ImageReadMode.RGB).to(device)
    except RuntimeError:
        for i, (b, name) in enumerate(zip(encoded, names)):
            try:
                tv_decode(b, mode=ImageReadMode.RGB)
            except RuntimeError as exc:
                raise DataError(f"{name}: not a readable image ({str(exc).splitlines()[0]})") from None
        raise
    resized = [F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False) for img in out]
    return (torch.cat(resized) / 255.0).clamp_(0.0, 1.0)


def folder(
    path: str, image_size: int, test_fraction: float = 0.2, split_seed: int = 0, stream: bool = False, on_bad_file: str = "fail"
) -> SplitData:
    """Images in class subfolders (ImageNet layout), decoded with PIL, RGB, resized to
    ``image_size`` squared, from a local folder or a URI (``s3://bucket/prefix``, see
    :mod:`selfsup.data.files`). ``train/`` with ``val/`` or ``test/`` beside it gives the split.
    With ``stream`` the images stay where they are and are read and decoded on access
    (:class:`ImageFiles`, which skips unreadable files with ``on_bad_file="skip"``)."""
    root = Folder(path)
    parts = folder_parts(root)
    scanned = [scan(p, IMAGE_EXTENSIONS) for p in parts]
    for p, (files, _, _) in zip(parts, scanned):
        if not files:
            raise DataError(f"{p.root}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if len(parts) == 2 and scanned[0][2] != scanned[1][2]:
        raise DataError(f"{parts[1].root}: class folders differ from {parts[0].root}")
    lists = [(np.asarray(files, dtype=object), y) for files, y, _ in scanned]
    train, test = lists if len(lists) == 2 else split_arrays(*lists[0], test_fraction, split_seed)

    def split(files: np.ndarray, y: np.ndarray | None) -> Split:
        labels = None if y is None else torch.as_tensor(y, dtype=torch.int64)
        if stream:
            return Split(ImageFiles(files, image_size, on_bad_file), labels)
        return Split(torch.from_numpy(_read_images(files, image_size)), labels)

    return SplitData(root.name, split(*train), split(*test))


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays and nothing else: a CIFAR batch
    needs no more, and a file that names any other callable (a way to run code) is refused."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")} | {
        ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}; only arrays and plain containers are read")


def _unpickle(f: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not f.is_file():
        raise DataError(f"{f}: file not found (expected the CIFAR python pickles)")
    try:
        with open(f, "rb") as fh:
            batch = _ArraysOnly(fh, encoding="bytes").load()
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{f}: not a CIFAR pickle with b'data' and {label_key!r} ({type(exc).__name__}: {exc})") from None
    return x.astype(np.float32) / 255.0, y


def cifar(path: str, classes: int) -> SplitData:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``) from the
    python-pickle files at ``path``: 32x32 RGB in [0, 1], the official train/test split."""
    root = Path(path)
    if classes == 10:
        names, test_name, key = [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"
    else:
        names, test_name, key = ["train"], "test", b"fine_labels"
    parts = [_unpickle(root / n, key) for n in names]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return SplitData(f"cifar{classes}", to_split(*train), to_split(*_unpickle(root / test_name, key)))


def resized(data: SplitData, size: int) -> SplitData:
    """``data`` with every image resized to ``size`` squared (bilinear, antialiased when shrinking)."""
    import torch.nn.functional as F

    if data.shape[1:] == (size, size):
        return data
    scale = lambda s: Split(F.interpolate(s.x, size=(size, size), mode="bilinear", antialias=True, align_corners=False), s.y)  # noqa: E731
    return SplitData(data.name, scale(data.train), scale(data.test))
