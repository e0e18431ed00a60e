"""The supervised baseline beside every pretraining result: the platform's own probes on the raw
features (flattened pixels, samples or table rows) of each bundled dataset's fixed split.

The linear probe is ``selfsup.metrics.probes.linear_probe`` (standardised features, logistic
regression) and the kNN probe ``knn_probe`` (cosine, k = 20), the same functions that score a
pretrained backbone's embeddings, so a run's ``probe/*`` metrics compare with these directly.

    python benchmarks/raw_baselines.py
"""

from __future__ import annotations

from selfsup.modalities import load_dataset
from selfsup.metrics.probes import knn_probe, linear_probe

DATASETS = [
    ("digits", None, {}),
    ("mnist1d", None, {}),
    ("ucr", "BasicMotions", {}),
    ("ucr", "GunPoint", {}),
    ("table", "breast_cancer", {}),
    ("table", "wine", {}),
    ("table", "iris", {}),
    ("moving_digits", None, {"clip_frames": 8, "frame_size": 24}),  # as examples/moving_digits_*.yaml
]


def main() -> None:
    print(f"{'dataset':16s} {'train':>6s} {'test':>6s} {'features':>8s} {'linear':>7s} {'knn':>7s}")
    for name, path, keys in DATASETS:
        d = load_dataset(name, path, **keys)
        xtr, xte = d.train.x.flatten(1).numpy(), d.test.x.flatten(1).numpy()
        ytr, yte = d.train.y.numpy(), d.test.y.numpy()
        print(f"{path or name:16s} {len(xtr):6d} {len(xte):6d} {xtr.shape[1]:8d} {linear_probe(xtr, ytr, xte, yte):7.4f} {knn_probe(xtr, ytr, xte, yte):7.4f}")


if __name__ == "__main__":
    main()
