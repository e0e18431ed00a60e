"""Shards (``selfsup.data.shards``, ``data.name: shards``, ``selfsup shard``): an image folder or an
``.npz`` written as WebDataset tar or Parquet shards, locally and to an S3-compatible bucket (moto's
server, in this process), reads back as the folder reads; damaged shards fail or skip as
``data.on_bad_file`` says, naming the shard and the key or column."""

import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup import storage
from selfsup.cli import main
from selfsup.config import build_experiment
from selfsup.data.datasets import folder
from selfsup.data.shards import read_shards, write_shards
from selfsup.data.splits import DataError, Skipped
from selfsup.data.tables import user_table
from selfsup.train.launch import preflight
from tests.unit.test_tables import frame


@pytest.fixture
def images(tmp_path) -> Path:
    """24 digits as PNGs in two class folders."""
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path / "images"
    for i in range(24):
        (root / f"c{d.target[i] % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 16).astype(np.uint8)).save(root / f"c{d.target[i] % 2}" / f"{i}.png")
    return root


def as_set(data) -> list[tuple[float, int]]:
    """Every sample's pixel sum with its label, sorted: the same images and labels, whatever the order."""
    x, y = torch.cat([data.train.x[:], data.test.x[:]]), torch.cat([data.train.y, data.test.y])
    return sorted((round(float(a.sum()), 3), int(b)) for a, b in zip(x, y))


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_an_image_folder_round_trips_through_shards(images, tmp_path, fmt):
    paths = write_shards(str(images), str(tmp_path / fmt), fmt, shard_size=10)
    assert [Path(p).name for p in paths] == [f"shard-0000{i}.{'tar' if fmt == 'webdataset' else 'parquet'}" for i in range(3)]
    eager = read_shards(str(tmp_path / fmt), image_size=8)
    assert eager.shape == (3, 8, 8) and as_set(eager) == as_set(folder(str(images), 8))
    streamed = read_shards(str(tmp_path / fmt), image_size=8, stream=True)
    assert torch.equal(streamed.train.x[:], eager.train.x) and torch.equal(streamed.train.y, eager.train.y)


def test_npz_rows_become_npy_samples(tmp_path):
    x = np.random.default_rng(0).normal(size=(12, 2, 5)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(12) % 3)
    write_shards(str(tmp_path / "s.npz"), str(tmp_path / "out"), "webdataset", shard_size=5)
    data = read_shards(str(tmp_path / "out"))
    assert data.shape == (2, 5)
    got = sorted(torch.cat([data.train.x, data.test.x]).flatten(1).tolist())
    assert np.allclose(got, sorted(x.reshape(12, -1).tolist()))


def upload(folder: Path, uri: str) -> None:
    """Every file below ``folder`` into the bucket at ``uri`` (``s3://b/prefix?options``), keeping its path."""
    base, _, query = uri.partition("?")
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        storage.write_bytes(f"{base}/{f.relative_to(folder).as_posix()}?{query}", f.read_bytes())


def test_shards_folders_and_tables_in_an_s3_bucket_read_as_local_ones(images, tmp_path, monkeypatch):
    """Shards written by `selfsup shard` into the bucket, and image folders, video folders, WFDB
    records and tables copied there, read as the local ones do, eagerly and streamed."""
    from selfsup.data.signals import wfdb_folder
    from selfsup.data.videos import video_folder, write_video
    from tests.unit.test_signals import write_records

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="data")
        uri = f"s3://data/digits?endpoint_override={host}:{port}&scheme=http"
        assert main(["shard", str(images), "--out", uri, "--format", "parquet", "--shard-size", "8"]) == 0
        local = write_shards(str(images), str(tmp_path / "local"), "parquet", shard_size=8)
        remote = read_shards(uri, image_size=8, stream=True)
        assert len(local) == 3 and as_set(remote) == as_set(read_shards(str(tmp_path / "local"), image_size=8))
        # a table in the bucket reads as the local file does
        frame().to_parquet(tmp_path / "t.parquet")
        table = f"s3://data/tables/t.parquet?endpoint_override={host}:{port}&scheme=http"
        storage.write_bytes(table, (tmp_path / "t.parquet").read_bytes())
        args = (["age", "bmi"], ["sex", "site"], "outcome")
        assert torch.equal(user_table(table, "parquet", *args).train.x, user_table(str(tmp_path / "t.parquet"), "parquet", *args).train.x)
        with pytest.raises(DataError, match=r"s3://data/tables/nope\.csv\?endpoint_override=\S+: file not found"):
            user_table(table.replace("t.parquet", "nope.csv"), "csv", *args)
        # an image folder in the bucket, streamed (each image one read) and read eagerly
        at = lambda prefix: f"s3://data/{prefix}?endpoint_override={host}:{port}&scheme=http"  # noqa: E731
        upload(images, at("folder"))
        streamed = folder(at("folder"), 8, stream=True)
        assert streamed.train.x.files[0].startswith("s3://data/folder/c0/") and streamed.train.x.files[0].endswith("&scheme=http")
        assert as_set(streamed) == as_set(folder(str(images), 8)) == as_set(folder(at("folder"), 8))
        # a video folder with its own train/ and test/ split
        rng = np.random.default_rng(0)
        for part, n in (("train", 2), ("test", 1)):
            for c in ("a", "b"):
                for i in range(n):
                    (tmp_path / "videos" / part / c).mkdir(parents=True, exist_ok=True)
                    write_video(tmp_path / "videos" / part / c / f"{i}.mp4", rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8))
        upload(tmp_path / "videos", at("videos"))
        local, remote = video_folder(str(tmp_path / "videos"), 4, 1, 16), video_folder(at("videos"), 4, 1, 16, stream=True)
        assert remote.train.x.shape == (4, 3, 4, 16, 16) and torch.equal(remote.train.x[:], local.train.x)
        assert torch.equal(remote.test.y, local.test.y)
        # WFDB records below the prefix, labels from a CSV in the bucket too
        labels = write_records(tmp_path / "db")
        upload(tmp_path / "db", at("db"))
        local = wfdb_folder(str(tmp_path / "db"), labels=str(labels), test_fraction=0.34)
        remote = wfdb_folder(at("db"), labels=at("db/labels.csv"), test_fraction=0.34, stream=True)
        assert torch.equal(remote.train.x[:], local.train.x) and torch.equal(remote.train.y, local.train.y)
        with pytest.raises(DataError, match=r"^s3://data/nothing\?endpoint_override=\S+: not a directory$"):
            folder(at("nothing"), 8)
    finally:
        server.stop()


def test_a_config_trains_on_shards(images, tmp_path):
    write_shards(str(images), str(tmp_path / "s"), "webdataset", shard_size=10)
    cfg = build_experiment({"data": {"name": "shards", "path": str(tmp_path / "s"), "image_size": 8, "stream": True},
                            "model": {"backbone": "cnn", "embed_dim": 16, "width": 8, "depth": 2},
                            "method": {"name": "vicreg", "projector": [32, 32]}, "train": {"batch_size": 8}}, "s.yaml")
    assert preflight(cfg, "s.yaml").shape == (3, 8, 8)


def tar_of(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_damaged_shards_fail_or_skip_naming_shard_and_key(tmp_path):
    good = {"a.png": png(), "a.cls": b"0", "b.png": png(), "b.cls": b"1", "c.png": png(), "c.cls": b"1"}
    tar_of(tmp_path / "ok.tar", good)
    raw = (tmp_path / "ok.tar").read_bytes()
    cut = tmp_path / "cut" / "s.tar"
    cut.parent.mkdir()
    cut.write_bytes(raw[: 512 * 9 + 10])  # inside c.png's bytes (a header and a padded block per member): a, b whole
    with pytest.raises(DataError, match=r"cut/s.tar: not a readable tar shard"):
        read_shards(str(cut))
    kept = read_shards(str(cut), stream=True, on_bad_file="skip", test_fraction=0.3)
    assert sorted([*kept.train.y.tolist(), *kept.test.y.tolist()]) == [0, 1]  # a and b; c, cut off, is left out

    corrupt = tmp_path / "corrupt" / "s.tar"
    corrupt.parent.mkdir()
    tar_of(corrupt, {**good, "b.png": b"not a png at all"})
    with pytest.raises(DataError, match=r"corrupt/s.tar: b: not a readable image"):
        read_shards(str(corrupt))
    streamed = read_shards(str(corrupt), stream=True, on_bad_file="skip", test_fraction=0.3)
    items = [streamed.train.x[i] for i in range(len(streamed.train.x))] + [streamed.test.x[i] for i in range(len(streamed.test.x))]
    assert [str(s.file) for s in items if isinstance(s, Skipped)] == [f"{corrupt}: b"]

    unlabelled = tmp_path / "unlabelled" / "s.tar"
    unlabelled.parent.mkdir()
    tar_of(unlabelled, {k: v for k, v in good.items() if k != "c.cls"})
    with pytest.raises(DataError, match=r"unlabelled/s.tar: c: no label"):
        read_shards(str(unlabelled))
    assert len(read_shards(str(unlabelled), stream=True, on_bad_file="skip", test_fraction=0.5).train.x) == 1

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "typed").mkdir()
    pq.write_table(pa.table({"image": ["a", "b"], "label": [0, 1]}), tmp_path / "typed" / "s.parquet")
    with pytest.raises(DataError, match=r"typed/s.parquet: column 'image' is string, not binary"):
        read_shards(str(tmp_path / "typed"))
    with pytest.raises(DataError, match=r"nothing: no such shard, folder or prefix"):
        read_shards(str(tmp_path / "nothing"))


def test_images_decoded_on_the_device_match_the_loaders_decode(images, tmp_path):
    """``data.decode_on: device``: the loader hands over each image's bytes (a folder's files, a
    shard's members, read per shard) and ``decode_batch`` decodes JPEGs with torchvision's
    ``decode_jpeg`` on the device (here the CPU) and PNGs on the CPU, resized there: close to PIL's
    decode and resize, not bitwise; an image that does not decode fails naming it."""
    from selfsup.data.datasets import EncodedImages, decode_batch
    from selfsup.data.views import EncodedCollate, SeededBatch, SeededSamples

    for f in list(images.rglob("*.png"))[::2]:  # half of them as JPEGs
        Image.open(f).convert("RGB").save(f.with_suffix(".jpg"), quality=95)
        f.unlink()
    write_shards(str(images), str(tmp_path / "s"), "webdataset", shard_size=10)
    for streamed in (folder(str(images), 16, stream=True), read_shards(str(tmp_path / "s"), image_size=16, stream=True)):
        batch = EncodedCollate()(SeededSamples(EncodedImages(streamed.train.x)).__getitems__(SeededBatch(range(8))))
        assert sorted(batch) == ["encoded", "names"] and all(b.dtype == torch.uint8 and b.ndim == 1 for b in batch["encoded"])
        x = decode_batch(batch["encoded"], batch["names"], 16, "cpu")
        assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
        assert (x - streamed.train.x[:8]).abs().mean() < 0.03
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image"):
        decode_batch([torch.tensor([0xFF, 0xD8, 0xFF, 0, 1, 2], dtype=torch.uint8)], ["broken.jpg"], 16, "cpu")
    cfg = {"data": {"name": "folder", "path": str(images), "stream": True, "decode_on": "device"}}
    with pytest.raises(ValueError, match="decode_on: device decodes images streamed from folder or shards"):
        build_experiment(cfg, "d.yaml")
    assert build_experiment({"data": {**cfg["data"], "augment_on": "device"}}, "d.yaml").data.decode_on == "device"
