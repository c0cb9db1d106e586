"""The streaming input pipeline on real CIFAR-10 images re-saved at varied sizes.

A few hundred images (40-160 px per side, random aspect) are built in a
temporary folder from the real archive; they are read as a folder, as a ZIP
and as ArrayRecord shards converted from it. Pure rules (order, sharding,
selection) use synthetic sizes only.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scaling.data import convert, order, preprocess, records, selection
from scaling.data.preprocess import CropConfig
from scaling.data.stream import open_stream
from scaling.errors import UserError

from conftest import run_cli

TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 5  # 300 train, 50 test images


def build_varied_folder(cifar_zip: str, root: Path, seed: int = 0) -> Path:
    """Real CIFAR-10 images, each resized to a random 40-160 x 40-160 px and re-saved as JPEG."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(cifar_zip) as zf:
        names = sorted(n for n in zf.namelist() if n.count("/") == 2 and not n.endswith("/"))
        for split, k in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
            by_class: dict[str, list[str]] = {}
            for n in names:
                s, c, _ = n.split("/")
                if s == split:
                    by_class.setdefault(c, []).append(n)
            for c, files in sorted(by_class.items()):
                (root / split / c).mkdir(parents=True, exist_ok=True)
                for n in files[:k]:
                    im = Image.open(io.BytesIO(zf.read(n))).convert("RGB")
                    w, h = (int(v) for v in rng.integers(40, 161, 2))
                    im.resize((w, h), Image.BICUBIC).save(root / split / c / Path(n).name, quality=90)
    return root


CROP = CropConfig(train_size=48, eval_size=56)


# --- pure rules -------------------------------------------------------------

def test_order_equals_example_stream_across_epochs():
    from scaling.data.pipeline import ExampleStream

    n, b = 37, 16  # batches straddle epoch boundaries; 3.5 epochs
    es, eo = ExampleStream(n, b, seed=5), order.ExampleOrder(n, seed=5)
    for step in range(8):
        np.testing.assert_array_equal(eo.indices(step, b), es.indices(step))
    # each epoch is a permutation, different per epoch
    ids = np.concatenate([eo.indices(s, b) for s in range(8)])[: 3 * n].reshape(3, n)
    assert all(sorted(r) == list(range(n)) for r in ids) and not np.array_equal(ids[0], ids[1])


@pytest.mark.parametrize("count", [1, 2, 4])
def test_process_slices_are_disjoint_and_complete(count):
    n, gb = 50, 24
    eo = order.ExampleOrder(n, seed=1)
    for step in range(6):
        whole = eo.indices(step, gb)
        parts = [eo.indices(step, gb, i, count) for i in range(count)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)  # complete, in slot order
        positions = [set(range(step * gb + order.process_slice(gb, i, count).start,
                               step * gb + order.process_slice(gb, i, count).stop)) for i in range(count)]
        assert sum(len(p) for p in positions) == gb and len(set().union(*positions)) == gb  # disjoint
    with pytest.raises(ValueError):
        order.process_slice(10, 0, 3)


def test_selection_rule():
    cap = 1000
    same = records.Summary(10, 900, (10, 10, 3))
    assert selection.choose_pipeline(same, cap).pipeline == "memory"
    big = records.Summary(10, 1100, (10, 10, 3))
    c = selection.choose_pipeline(big, cap)
    assert c.pipeline == "stream" and "above the memory cap" in c.reason
    mixed = records.Summary(10, 500, None)
    assert selection.choose_pipeline(mixed, cap).pipeline == "stream"
    assert "differ in size" in selection.choose_pipeline(mixed, cap).reason
    assert selection.choose_pipeline(records.Summary(10, None, (10, 10, 3)), cap).pipeline == "stream"
    assert selection.choose_pipeline(same, cap, forced="stream").pipeline == "stream"
    assert selection.choose_pipeline(big, cap, forced="memory").pipeline == "memory"
    with pytest.raises(UserError, match="one size"):
        selection.choose_pipeline(mixed, cap, forced="memory")
    with pytest.raises(UserError, match="data-pipeline"):
        selection.choose_pipeline(same, cap, forced="disk")
    assert selection.default_memory_cap() > 0


def test_random_resized_box_respects_scale_and_bounds():
    rng = np.random.default_rng(0)
    for w, h in [(40, 160), (160, 40), (100, 100)]:
        for _ in range(200):
            l, t, r, b = preprocess.random_resized_box(w, h, rng, (0.3, 0.6), (3 / 4, 4 / 3))
            assert 0 <= l < r <= w and 0 <= t < b <= h
            frac = (r - l) * (b - t) / (w * h)
            assert 0.2 < frac < 0.75  # rounding and the centre-crop fallback aside


@pytest.mark.parametrize("scale", [(0.0, 1.0), (0.5, 1.5), (0.8, 0.2), (-0.1, 0.5)])
def test_crop_scale_outside_unit_interval_is_a_user_error(scale):
    with pytest.raises(UserError, match="crop scale"):
        CropConfig(64, 64, scale=scale)


# --- real images ------------------------------------------------------------

def test_folder_stream_batches(varied):
    from scaling.data.pipeline import ExampleStream

    data = open_stream("cifar10-varied", str(varied))
    assert (data.train_size, data.val_size, data.test_size) == (270, 30, 50)
    assert data.class_names[0] == "airplane" and data.num_classes == 10
    summary = data.source.summary()
    assert summary.shape is None and summary.num_images == 350  # sizes differ: streaming
    assert selection.choose_pipeline(summary, 1 << 40).pipeline == "stream"
    loader = data.train_loader(batch_size=32, seed=3, crop=CROP, workers=0, num_steps=12)
    batches = list(loader)
    assert len(batches) == 12  # 384 examples: 1.42 epochs
    es = ExampleStream(data.train_size, 32, 3)
    for s, b in enumerate(batches):
        assert b["image"].shape == (32, 48, 48, 3) and b["image"].dtype == np.uint8
        np.testing.assert_array_equal(b["id"], es.indices(s))
        # labels are those of the files' class folders
        names = [data.train[int(i)][2] for i in b["id"]]
        assert [data.class_names[l] for l in b["label"]] == [n.split("/")[1] for n in names]
    # natural images, not blank
    assert 60 < batches[0]["image"].mean() < 200 and batches[0]["image"].std() > 30
    # deterministic: a second loader gives the same pixels; another seed other examples
    again = data.train_loader(batch_size=32, seed=3, crop=CROP, workers=0)
    np.testing.assert_array_equal(again.batch(7)["image"], batches[7]["image"])
    other = data.train_loader(batch_size=32, seed=4, crop=CROP, workers=0)
    assert not np.array_equal(other.example_ids(0), batches[0]["id"])
    # augmentation differs between epochs for the same example
    ids = np.concatenate([b["id"] for b in batches])
    images = np.concatenate([b["image"] for b in batches])
    again_at = 270 + int(np.flatnonzero(ids[270:] == ids[0])[0]) if ids[0] in ids[270:] else None
    later = [p for p in range(270, 384) if ids[p] in ids[:270]][0]
    earlier = int(np.flatnonzero(ids[:270] == ids[later])[0])
    assert again_at is None or not np.array_equal(images[again_at], images[0])
    assert not np.array_equal(images[later], images[earlier])


def test_eval_batches_centre_crop_and_padding(varied):
    data = open_stream("cifar10-varied", str(varied))
    batches = list(data.eval_batches("test", batch_size=16, crop=CROP, workers=0))
    assert len(batches) == 4 and batches[0]["image"].shape == (16, 56, 56, 3)
    ids = np.concatenate([b["id"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(ids[:50], np.arange(50))
    assert (ids[50:] == -1).all() and mask.sum() == 50
    # two processes: each gets half of each global batch, together the same
    halves = [list(data.eval_batches("test", batch_size=16, crop=CROP, process_index=i, process_count=2,
                                     workers=0)) for i in range(2)]
    for s, whole in enumerate(batches):
        np.testing.assert_array_equal(np.concatenate([halves[0][s]["image"], halves[1][s]["image"]]),
                                      whole["image"])
    mean, std = data.channel_stats(CROP, num=100)
    assert np.all((mean > 80) & (mean < 160)) and np.all((std > 40) & (std < 90))


def test_arrayrecord_equals_folder_and_zip(varied, converted, tmp_path):
    meta = json.loads((converted / "metadata.json").read_text())
    assert meta["splits"]["train"]["count"] == 300 and len(meta["splits"]["train"]["shards"]) == 3
    assert meta["summary"]["shape"] is None and meta["skipped"] == []
    zpath = tmp_path / "images.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(varied.rglob("*.jpg")):
            zf.write(p, str(p.relative_to(varied)))
    loaders = [open_stream("c", str(src)).train_loader(batch_size=24, seed=9, crop=CROP, workers=0)
               for src in (varied, converted, zpath)]
    assert open_stream("c", str(converted)).source.kind == "arrayrecord"
    for step in (0, 11, 12):  # 11/12 straddle the epoch boundary (270 = 11.25 batches)
        ref = loaders[0].batch(step)
        for other in loaders[1:]:
            got = other.batch(step)
            for k in ref:
                np.testing.assert_array_equal(got[k], ref[k])


def test_two_processes_read_their_slices(converted):
    data = open_stream("c", str(converted))
    whole = data.train_loader(batch_size=32, seed=2, crop=CROP, workers=0)
    parts = [data.train_loader(batch_size=32, seed=2, crop=CROP, workers=0, process_index=i, process_count=2)
             for i in range(2)]
    for step in (0, 8, 9):
        a, b, w = parts[0].batch(step), parts[1].batch(step), whole.batch(step)
        if step == 0:  # within one epoch the two halves share no example
            assert not set(a["id"]) & set(b["id"])
        for k in w:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), w[k])
    with pytest.raises(UserError, match="divisible"):
        data.train_loader(batch_size=33, seed=2, crop=CROP, process_count=2)


def test_resume_sees_the_same_batches_with_workers(converted):
    """Stop after 5 steps, save the state as JSON, resume in a new loader: the
    batches equal an uninterrupted run's. The uninterrupted run uses 2 worker
    processes, the interrupted one none: the batches do not depend on that."""
    data = open_stream("c", str(converted))
    with data.train_loader(batch_size=32, seed=7, crop=CROP, workers=2, num_steps=14) as full:
        straight = list(full)
    first = data.train_loader(batch_size=32, seed=7, crop=CROP, workers=0)
    seen = [next(first) for _ in range(5)]
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    assert state["step"] == 5
    resumed = data.train_loader(batch_size=32, seed=7, crop=CROP, workers=0, num_steps=14)
    resumed.set_state(state)
    after = list(resumed)
    assert len(seen) + len(after) == len(straight) == 14
    for got, want in zip(seen + after, straight):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    # the same state from another pipeline (other seed) is refused
    with pytest.raises(UserError, match="differs in seed"):
        data.train_loader(batch_size=32, seed=8, crop=CROP, workers=0).set_state(state)


# --- bad input --------------------------------------------------------------

def test_folder_with_no_images(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images"):
        open_stream("x", str(tmp_path))
    r = run_cli("scaling.data.convert", str(tmp_path), str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.strip().startswith("error: no images") and "\n" not in r.stderr.strip()
    assert not (tmp_path / "out").exists()


def _with_corrupt(varied: Path, tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "corrupt"
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for p in sorted((varied / split / c).glob("*.jpg"))[:4]:
                (root / split / c / p.name).write_bytes(p.read_bytes())
    bad = sorted((root / "train" / "dog").glob("*.jpg"))[1]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    return root, str(bad.relative_to(root))


def test_corrupt_jpeg_is_an_error_naming_the_file(varied, tmp_path):
    root, bad = _with_corrupt(varied, tmp_path)
    dst = tmp_path / "out"
    r = run_cli("scaling.data.convert", str(root), str(dst), "--quiet")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and bad in line and "--skip-corrupt" in line
    assert not dst.exists() and not list(tmp_path.glob(".out.partial-*"))  # nothing half-written
    # --skip-corrupt: skipped, counted and named
    meta = convert.convert(root, dst, skip_corrupt=True, progress=False)
    assert meta["skipped"] == [bad] and meta["splits"]["train"]["count"] == 7
    # streaming the folder directly: the read of that image fails with its name
    data = open_stream("x", str(root), val_size=1)
    loader = data.train_loader(batch_size=6, seed=0, crop=CROP, workers=0)
    with pytest.raises(UserError, match=bad.replace("/", ".")):
        for s in range(3):
            loader.batch(s)


def test_converter_failure_leaves_nothing(varied, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = records.encode_record

    def failing(*a):
        calls["n"] += 1
        if calls["n"] > 50:
            raise OSError("disk full")
        return real(*a)

    monkeypatch.setattr(records, "encode_record", failing)
    with pytest.raises(OSError):
        convert.convert(varied, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_arrayrecord_paths(converted, tmp_path):
    with pytest.raises(UserError, match="data path not found"):
        open_stream("x", str(tmp_path / "nope"))
    copy = tmp_path / "copy"
    copy.mkdir()
    meta = json.loads((converted / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps(meta))
    for f in meta["splits"]["train"]["shards"][:1] + meta["splits"]["test"]["shards"]:
        (copy / f).write_bytes((converted / f).read_bytes())
    with pytest.raises(UserError, match="ArrayRecord shard not found: .*train-00001"):
        open_stream("x", str(copy))
    with pytest.raises(UserError, match="one ArrayRecord shard"):
        open_stream("x", str(converted / meta["splits"]["test"]["shards"][0]))


_TFDS_BUILDER: dict = {}  # TFDS registers a builder class by name once per process


def _prepare_tfds(root: Path, data_dir: Path) -> str:
    """Prepare ``root``'s images as a TFDS data set in ArrayRecord format, from
    local files (no network, no TensorFlow needed); return its name."""
    import tensorflow_datasets as tfds

    if "cls" not in _TFDS_BUILDER:
        class ScalingLocalImages(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")
            images: Path  # set per call: the folder to prepare

            def _info(self):
                class_names = sorted(p.name for p in (self.images / "train").iterdir())
                return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=class_names)}))

            def _split_generators(self, dl_manager):
                return {s: self._generate_examples(s) for s in ("train", "test")}

            def _generate_examples(self, split):
                for p in sorted((self.images / split).glob("*/*.jpg")):
                    yield str(p.relative_to(self.images)), {"image": str(p), "label": p.parent.name}

        _TFDS_BUILDER["cls"] = ScalingLocalImages
    cls = _TFDS_BUILDER["cls"]
    cls.images = root
    cls(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return "scaling_local_images"


def test_tfds_data_source_prepared_locally(varied, tmp_path, monkeypatch):
    import hashlib

    pytest.importorskip("tensorflow_datasets")
    name = _prepare_tfds(varied, tmp_path / "tfds")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    data = open_stream(name, "tfds")
    assert data.source.kind == "tfds" and data.class_names[0] == "airplane"
    assert (data.train_size + data.val_size, data.test_size) == (300, 50)
    # the records are the folder's files, in TFDS's own order
    digest = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    stored = sorted(digest(data.source.splits["train"][i][0]) for i in range(300))
    assert stored == sorted(digest(p.read_bytes()) for p in (varied / "train").glob("*/*.jpg"))
    loader = data.train_loader(batch_size=32, seed=0, crop=CROP, workers=0)
    b = next(loader)
    assert b["image"].shape == (32, 48, 48, 3) and b["image"].dtype == np.uint8
    np.testing.assert_array_equal(b["id"], order.ExampleOrder(data.train_size, 0).indices(0, 32))
    np.testing.assert_array_equal(loader.batch(0)["image"], b["image"])


def test_tfds_not_prepared_offline(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="not available offline"):
        open_stream("mnist", "tfds")


def test_uniform_zip_summary_selection_and_read_splits(cifar10_path, tmp_path, monkeypatch):
    """Native 32 px CIFAR-10 images: one size, so the rule keeps them in memory
    unless the cap is too small; an ArrayRecord copy reads back into memory exactly."""
    from scaling.data import sources

    zpath = tmp_path / "small.zip"
    with zipfile.ZipFile(cifar10_path) as src, zipfile.ZipFile(zpath, "w") as dst:
        names = sorted(n for n in src.namelist() if n.count("/") == 2 and not n.endswith("/"))
        for split, k in (("train", 30), ("test", 10)):
            in_split = [n for n in names if n.startswith(split + "/")]
            for n in in_split[:: len(in_split) // k][:k]:  # spread over all classes
                dst.writestr(n, src.read(n))
    src = records.open_source(str(zpath))
    s = src.summary()
    assert s.shape == (32, 32, 3) and s.decoded_bytes == 40 * 32 * 32 * 3
    assert selection.choose_pipeline(s, 1 << 20).pipeline == "memory"
    early = src.summary(stop_above_bytes=10_000)  # stops reading headers once over the cap
    assert selection.choose_pipeline(early, 10_000).pipeline == "stream"
    convert.convert(zpath, tmp_path / "ar", progress=False)
    splits, names_ = records.read_splits(records.open_source(str(tmp_path / "ar")))
    ref, ref_names = sources.read_image_folder(zpath)
    assert names_ == ref_names
    for split in ("train", "test"):
        np.testing.assert_array_equal(splits[split][0], ref[split][0])
        np.testing.assert_array_equal(splits[split][1], ref[split][1])
    # the streaming split is the in-memory path's: same hold-out, same example ids
    import scaling.data

    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "cache"))
    mem = scaling.data.load("cifar10", str(zpath), val_size=6)
    st = open_stream("cifar10", str(tmp_path / "ar"), val_size=6)
    for part in ("train", "val", "test"):
        recs, images = getattr(st, part), getattr(mem, f"{part}_images")
        assert len(recs) == len(images)
        np.testing.assert_array_equal(np.stack([preprocess.decode_rgb(recs[i][0]) for i in range(len(recs))]), images)


def test_tfds_missing_is_a_user_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(UserError, match="TFDS is not installed"):
        open_stream("cifar10", "tfds")


def test_loader_benchmark(converted, tmp_path):
    from scaling.data import loader_bench

    r = loader_bench.measure(open_stream("c", str(converted)), image_size=32, batch_size=16, steps=3, workers=0)
    assert r["images_per_second"] > 0 and r["rss_end_mib"] > 0 and r["source_kind"] == "arrayrecord"
    bad = run_cli("scaling.data.loader_bench", str(tmp_path / "missing"))
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: data path not found: {tmp_path / 'missing'}"


def test_device_batches_put_each_batch_on_the_data_sharding(converted):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from scaling.data.feed import device_batches

    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    loader = open_stream("c", str(converted)).train_loader(batch_size=16, seed=1, crop=CROP, workers=0,
                                                           num_steps=4)
    host = [loader.batch(s) for s in range(4)]
    got = list(device_batches(loader, sharding, prefetch=2))
    assert len(got) == 4
    for g, h in zip(got, host):
        assert isinstance(g["image"], jax.Array) and g["image"].sharding == sharding
        np.testing.assert_array_equal(np.asarray(g["image"]), h["image"])
        np.testing.assert_array_equal(np.asarray(g["label"]), h["label"])
        np.testing.assert_array_equal(g["id"], h["id"])  # ids stay on the host
