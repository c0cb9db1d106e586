"""The data interface and the on-device pipeline, on real CIFAR-10 where it matters."""

from __future__ import annotations

import dataclasses

import zipfile

import jax
import numpy as np
import pytest
from PIL import Image

import scaling.data as data
from scaling.data import sources
from scaling.data.pipeline import ExampleStream, random_crop_flip
from scaling.errors import UserError


def test_cifar10_splits_and_classes(cifar10_path):
    ds = data.load("cifar10", cifar10_path)
    assert ds.class_names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert (ds.train_size, ds.val_size, ds.test_size) == (45000, 5000, 10000)
    assert ds.train_images.shape == (45000, 32, 32, 3) and ds.train_images.dtype == np.uint8
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    # train + val together are the 50,000 training images, 5,000 per class
    assert (np.bincount(ds.train_labels) + np.bincount(ds.val_labels)).tolist() == [5000] * 10
    # the hold-out is fixed: a second load gives the same validation images
    again = data.load("cifar10", cifar10_path)
    np.testing.assert_array_equal(again.val_images, ds.val_images)
    # natural images, not noise: per-channel means in the usual CIFAR-10 range
    mean, std = ds.channel_stats()
    assert np.all((mean > 100) & (mean < 140)) and np.all((std > 50) & (std < 75))
    # the histogram shortcut equals the direct float64 computation
    sample = ds.train_images[:2000].reshape(-1, 3).astype(np.float64)
    small = dataclasses.replace(ds, train_images=ds.train_images[:2000])
    np.testing.assert_allclose(small.channel_stats()[0], sample.mean(0), rtol=1e-6)
    np.testing.assert_allclose(small.channel_stats()[1], sample.std(0), rtol=1e-6)


def test_cache_is_used_on_second_load(cifar10_path, monkeypatch):
    data.load("cifar10", cifar10_path)  # fills the cache if needed

    def boom(*a, **k):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(sources, "read_image_folder", boom)
    assert data.load("cifar10", cifar10_path).train_size == 45000


def _write_tree(root, n_per_class=6, size=8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog", "emu"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n_per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_folder_and_zip_sources_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "cache"))
    _write_tree(tmp_path / "tree")
    with zipfile.ZipFile(tmp_path / "tree.zip", "w") as zf:
        for p in sorted((tmp_path / "tree").rglob("*.png")):
            zf.write(p, p.relative_to(tmp_path / "tree"))
    a = data.load("toy", str(tmp_path / "tree"), val_size=3)
    b = data.load("toy", str(tmp_path / "tree.zip"), val_size=3)
    assert a.class_names == ("cat", "dog", "emu") and a.image_size == 8
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert a.train_size == 15 and a.val_size == 3 and a.test_size == 18


def test_bad_sources_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        data.load("cifar10", str(tmp_path / "nope.zip"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="train/<class>"):
        data.load("cifar10", str(tmp_path / "empty"))


def test_example_stream_is_a_permutation_per_epoch_and_resumable():
    s = ExampleStream(num_examples=10, batch_size=4, seed=3)
    first = np.concatenate([s.indices(i) for i in range(5)])  # 20 examples = 2 epochs
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:]) == list(range(10))
    assert not np.array_equal(first[:10], first[10:])  # reshuffled each epoch
    fresh = ExampleStream(10, 4, 3)  # a resumed run computes the same batch from the step alone
    np.testing.assert_array_equal(fresh.indices(3), s.indices(3))
    assert not np.array_equal(ExampleStream(10, 4, 4).indices(0), s.indices(0))


def test_random_crop_flip_shifts_and_mirrors():
    img = np.arange(2 * 8 * 8 * 1, dtype=np.float32).reshape(2, 8, 8, 1) + 1
    out = np.asarray(random_crop_flip(img, jax.random.key(0), pad=2))
    assert out.shape == img.shape
    for o, x in zip(out, img):
        # every output is a (possibly mirrored) zero-padded shift of its input
        found = False
        for flip in (False, True):
            src = x[:, ::-1] if flip else x
            padded = np.pad(src, ((2, 2), (2, 2), (0, 0)))
            for dy in range(5):
                for dx in range(5):
                    found |= np.array_equal(padded[dy : dy + 8, dx : dx + 8], o)
        assert found
