"""The video datasets' loaders (registered in ``selfsup.modalities.video``): clips ``(N, C, T, H, W)``
float32 in [0, 1] with a fixed train/test split.

- :func:`moving_digits`: scikit-learn's 1,797 handwritten digits, each moving across a larger
  dark canvas at a constant speed and bouncing off its edges (a moving-MNIST made offline, one
  digit per clip), deterministic by seed and labelled by digit. A still digit is easy; a moving
  one is not: in raw pixels the same digit lands on different pixels in every clip and frame.
- :func:`video_npz`: your clips in an ``.npz`` (``x`` ``(N, T, H, W)`` or ``(N, C, T, H, W)``).
- :func:`video_folder`: your video files in class subfolders (or none), decoded with PyAV
  (FFmpeg), ``clip_frames`` frames at ``frame_stride`` from each file's start, resized to
  ``frame_size`` squared; streamed (:class:`VideoFiles`) or read into memory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from selfsup import storage
from selfsup.data.files import Folder, folder_parts, open_binary, scan
from selfsup.data.splits import DataError, Split, SplitData, StreamedFiles, read_npz, split_arrays, to_split

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg"}


def bounce(start: np.ndarray, velocity: np.ndarray, steps: np.ndarray, room: int) -> np.ndarray:
    """Positions ``(N, T)`` of points moving from ``start`` ``(N,)`` at ``velocity`` ``(N,)`` per
    step inside ``[0, room]``, reflected at both ends (a perfectly elastic bounce)."""
    free = start[:, None] + velocity[:, None] * steps[None]
    if room == 0:
        return np.zeros_like(free)
    folded = np.mod(free, 2 * room)
    return room - np.abs(folded - room)


def moving_digits(clip_frames: int = 16, frame_size: int = 32, frame_stride: int = 1, test_fraction: float = 0.2,
                  split_seed: int = 0, digit_size: int = 16) -> SplitData:
    """Each of scikit-learn's 1,797 digits (8x8, upsampled to ``digit_size``) on a black
    ``frame_size`` square canvas: a random start and a random velocity of 1-3 pixels per frame on
    each axis (random signs), ``clip_frames`` frames (``frame_stride`` times as far apart), bouncing
    off the edges. Clips ``(1, T, S, S)`` in [0, 1], labels the digit; the same ``split_seed`` gives
    the same clips and split."""
    from sklearn.datasets import load_digits

    if frame_size < digit_size:
        raise DataError(f"moving_digits: data.frame_size {frame_size} is smaller than a digit ({digit_size} pixels)")
    bunch = load_digits()
    rng = np.random.default_rng(split_seed)
    scale = digit_size // 8
    glyphs = np.kron(bunch.images / 16.0, np.ones((scale, scale)))  # (N, s, s) nearest upsampling
    n, size = len(glyphs), glyphs.shape[1]
    room = frame_size - size
    steps = np.arange(clip_frames) * frame_stride
    speed = rng.integers(1, 4, size=(2, n)) * rng.choice([-1, 1], size=(2, n))
    rows = bounce(rng.uniform(0, room, n), speed[0].astype(float), steps, room).round().astype(int)
    cols = bounce(rng.uniform(0, room, n), speed[1].astype(float), steps, room).round().astype(int)
    x = np.zeros((n, 1, clip_frames, frame_size, frame_size), dtype=np.float32)
    for i in range(n):
        for t in range(clip_frames):
            x[i, 0, t, rows[i, t]: rows[i, t] + size, cols[i, t]: cols[i, t] + size] = glyphs[i]
    (xtr, ytr), (xte, yte) = split_arrays(x, bunch.target.astype(np.int64), test_fraction, split_seed)
    return SplitData("moving_digits", to_split(xtr, ytr), to_split(xte, yte))


def video_npz(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> SplitData:
    """Your clips from an ``.npz`` file: ``x`` ``(N, T, H, W)`` or ``(N, C, T, H, W)`` (see ``read_npz``)."""
    return read_npz(path, "video", "T,H,W", test_fraction, split_seed)


def decode(f, clip_frames: int, frame_stride: int, frame_size: int, where=None) -> np.ndarray:
    """One video (a local path or URI, read in ranges as FFmpeg seeks, or a file-like object of its
    bytes) -> ``(3, clip_frames, S, S)`` float32 in [0, 1]: frames ``0, s, 2s, ...`` of its first
    video stream (RGB, resized to ``S`` squared by FFmpeg's scaler); a video shorter than that
    repeats its last frame. A file FFmpeg cannot read is a one-line :class:`DataError` naming
    ``where`` (default: ``f``)."""
    import av

    frames, where = [], where or f
    try:
        with contextlib.ExitStack() as stack:
            if isinstance(f, (str, Path)):  # FFmpeg opens a local file itself; an object is read through pyarrow
                f = str(f) if not storage.is_uri(str(f)) else stack.enter_context(open_binary(str(f)))
            container = stack.enter_context(av.open(f))
            if not container.streams.video:
                raise DataError(f"{where}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i % frame_stride == 0:
                    frames.append(frame.to_ndarray(format="rgb24", width=frame_size, height=frame_size))
                    if len(frames) == clip_frames:
                        break
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"{where}: not a readable video ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise DataError(f"{where}: not a readable video (no frames decoded)")
    frames += [frames[-1]] * (clip_frames - len(frames))
    return np.stack(frames).transpose(3, 0, 1, 2).astype(np.float32) / 255.0


class VideoFiles(StreamedFiles):
    """Video files decoded on access to ``(3, T, S, S)`` (see :class:`StreamedFiles`)."""

    def __init__(self, files, clip_frames: int, frame_stride: int, frame_size: int, on_bad_file: str = "fail"):
        super().__init__(files, (3, clip_frames, frame_size, frame_size), on_bad_file)
        self.clip_frames, self.frame_stride, self.frame_size = clip_frames, frame_stride, frame_size

    def read(self, f) -> np.ndarray:
        return decode(f, self.clip_frames, self.frame_stride, self.frame_size)


def video_folder(path: str, clip_frames: int = 16, frame_stride: int = 1, frame_size: int = 112, test_fraction: float = 0.2,
                 split_seed: int = 0, stream: bool = False, on_bad_file: str = "fail") -> SplitData:
    """Videos in class subfolders (Kinetics/UCF-101 layout) or directly in ``path`` (unlabelled), a
    local folder or a URI (``s3://bucket/prefix``, see :mod:`selfsup.data.files`); ``train/`` with
    ``val/`` or ``test/`` beside it gives the split. With ``stream`` the files stay where they are
    and are decoded on access (a bad one skipped with ``on_bad_file="skip"``)."""
    root = Folder(path)
    parts = folder_parts(root)
    scanned = [scan(p, VIDEO_EXTENSIONS) for p in parts]
    for p, (files, _, _) in zip(parts, scanned):
        if not files:
            raise DataError(f"{p.root}: no videos ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    lists = [(np.asarray(files, dtype=object), y) for files, y, _ in scanned]
    train, test = lists if len(lists) == 2 else split_arrays(*lists[0], test_fraction, split_seed)

    def split(files: np.ndarray, y: np.ndarray | None) -> Split:
        labels = None if y is None else torch.as_tensor(y, dtype=torch.int64)
        clips = VideoFiles(files, clip_frames, frame_stride, frame_size, on_bad_file)
        return Split(clips if stream else torch.from_numpy(np.stack([clips.read(f) for f in files])), labels)

    return SplitData(root.name, split(*train), split(*test))


def write_video(path: str | Path, clip: np.ndarray, fps: int = 10) -> Path:
    """Write ``clip`` ``(T, H, W, 3)`` uint8 as an MPEG-4 file (PyAV): the tests' and the
    benchmark's videos, and a way to make a small folder to try ``video_folder`` on."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = clip.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in clip:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
