"""Streaming decode speed of ``video_folder``: clips/s of one loader process decoding video files
with PyAV (``selfsup.data.videos.VideoFiles``, what each DataLoader process runs on a streamed video
folder), against reading the same clips already decoded as ``.npy`` files (the baseline), timed in
the same command.

The videos are written first (MPEG-4, ``--size`` pixels wide at 4:3, 30 fps, ``--frames`` frames: a
Kinetics-like 340x256 clip by default, a moving gradient with noise) into a temporary folder; each
setting decodes every file once, ``--clip-frames`` frames at ``--stride`` resized to ``--frame-size``.

    python benchmarks/video_decode.py [--videos 24] [--clip-frames 16] [--stride 2] [--frame-size 112]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from selfsup.data.videos import VideoFiles, write_video  # noqa: E402


def synthetic_video(rng, frames: int, width: int) -> np.ndarray:
    """``(frames, H, W, 3)`` uint8: a gradient moving one pixel a frame, with noise (something to encode)."""
    height = width * 3 // 4
    x = np.arange(width)[None, None, :] + np.arange(frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    base = ((x + y) % 256).astype(np.float32)
    clip = np.stack([base, np.roll(base, 40, axis=2), np.roll(base, 80, axis=1)], axis=-1)
    return np.clip(clip + rng.normal(0, 8, clip.shape), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=64, help="frames per video file")
    parser.add_argument("--size", type=int, default=340, help="width of the video files (height 3/4 of it)")
    parser.add_argument("--clip-frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--frame-size", type=int, default=112)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="videos") as tmp:
        root = Path(tmp)
        files = [write_video(root / f"{i}.mp4", synthetic_video(rng, args.frames, args.size), fps=30) for i in range(args.videos)]
        clips = VideoFiles(files, args.clip_frames, args.stride, args.frame_size)
        t0 = time.perf_counter()
        decoded = [clips.read(f) for f in files]
        decode_s = time.perf_counter() - t0
        arrays = []
        for i, clip in enumerate(decoded):
            np.save(root / f"{i}.npy", clip)
            arrays.append(root / f"{i}.npy")
        t0 = time.perf_counter()
        for f in arrays:
            np.load(f)
        load_s = time.perf_counter() - t0
    mb = sum(c.nbytes for c in decoded) / 1e6
    print(f"{args.videos} videos of {args.frames} frames at {args.size}x{args.size * 3 // 4}, MPEG-4; clips of "
          f"{args.clip_frames} frames at stride {args.stride}, {args.frame_size}x{args.frame_size} ({mb / args.videos:.1f} MB each decoded)")
    print(f"{'setting':28s} {'clips/s':>9s} {'ms/clip':>8s}")
    print(f"{'PyAV decode (one process)':28s} {args.videos / decode_s:9.1f} {1000 * decode_s / args.videos:8.1f}")
    print(f"{'.npy of decoded clips':28s} {args.videos / load_s:9.1f} {1000 * load_s / args.videos:8.1f}")
    print(f"decode: {args.videos / decode_s:.1f} clips/s per loader process ({load_s / decode_s:.3f} of reading decoded clips)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
