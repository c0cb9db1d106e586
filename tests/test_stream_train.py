"""Training through the streaming pipeline, end to end, on real CIFAR-10 images.

The images are re-saved at random 40-160 px sizes (``test_stream.build_varied_folder``),
so the in-memory path cannot hold them and ``--data-pipeline auto`` streams them;
the same images converted to ArrayRecord train too. A run SIGKILLed after a
checkpoint and resumed sees exactly the batches (example ids) of an uninterrupted
run and ends with the same numbers. Bad input exits 2 with one line, before
anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli


NO_RESTART = {"SCALING_RESTART_AFTER_COMPILE": "off"}


def _args(wd: Path, data: Path, *extra: str) -> list[str]:
    return ["--model", "cnn-xs", "--data", str(data), "--image-size", "32", "--steps", "12", "--batch-size", "32",
            "--checkpoint-every", "4", "--log-every", "2", "--workdir", str(wd), "--quiet", *extra]


def _result(wd: Path) -> dict:
    return json.loads((wd / "result.json").read_text())


def _check_record(r: dict, kind: str) -> None:
    assert r["status"] == "done" and r["steps"] == 12 and r["data_pipeline"] == "stream", r
    assert "differ in size" in r["data_pipeline_reason"]
    assert r["train_size"] == 270 and r["image_size"] == 32
    assert r["eval_image_size"] == (40 if kind == "folder" else 32)  # a convnet evaluates at another size
    assert 0 < r["epochs"] < 2  # 384 examples of 270: a fractional epoch count, exact
    for k in ("val_loss", "train_loss", "accelerator_hours", "flops_per_example", "program_fingerprint"):
        assert r[k], k
    assert np.isfinite(r["val_loss"]) and 0 <= r["val_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1


@pytest.mark.parametrize("which", ["folder", "arrayrecord"])
def test_a_ladder_model_trains_on_streamed_images_of_varied_sizes(which, varied, converted, tmp_path):
    data = varied if which == "folder" else converted
    wd = tmp_path / "run"
    extra = ("--eval-image-size", "40") if which == "folder" else ()
    r = run_cli("scaling.train", *_args(wd, data, *extra), env=NO_RESTART)
    assert r.returncode == 0, r.stderr[-3000:]
    result = _result(wd)
    _check_record(result, which)
    lines = [json.loads(ln) for ln in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines if "train_loss" in ln] == list(range(2, 13, 2))
    if which == "arrayrecord":  # the benchmark times this very program, and the loader beside it
        b = run_cli("scaling.bench", "--model", "cnn-xs", "--data", str(data), "--image-size", "32",
                    "--batch-size", "32", "--steps", "2", "--json")
        assert b.returncode == 0, b.stderr[-3000:]
        bench = json.loads(b.stdout)
        assert bench["program_fingerprint"] == result["program_fingerprint"]
        assert bench["data_pipeline"] == "stream" and bench["loader_images_per_second"] > 0
        assert bench["bound_images_per_second"] == min(bench["images_per_second"], bench["loader_images_per_second"])


def test_sigkill_after_a_checkpoint_resumes_the_exact_batch_sequence(converted, tmp_path):
    """Killed at step 7 (checkpoints at 4 and 8 planned): the resumed run restarts from
    step 4 and must see the uninterrupted run's example ids at every step from there."""
    ref_wd, wd = tmp_path / "ref", tmp_path / "run"
    ref_ids, ids = tmp_path / "ref-ids.jsonl", tmp_path / "ids.jsonl"
    ref = run_cli("scaling.train", *_args(ref_wd, converted), env={**NO_RESTART, "SCALING_TRACE_IDS": str(ref_ids)})
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = run_cli("scaling.train", *_args(wd, converted),
                     env={**NO_RESTART, "SCALING_TRACE_IDS": str(ids), "SCALING_FAULT": "step-7:kill"})
    assert killed.returncode == -9 and not (wd / "result.json").exists()
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [4]
    data_state = json.loads(next((wd / "checkpoints" / "4" / "data").glob("*")).read_text())
    assert data_state["step"] == 4 and data_state["pipeline"] == "stream" and data_state["seed"] == 0
    resumed = run_cli("scaling.train", *_args(wd, converted), env={**NO_RESTART, "SCALING_TRACE_IDS": str(ids)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def read(path):
        return [json.loads(ln) for ln in path.read_text().splitlines()]

    want = {r["step"]: r["ids"] for r in read(ref_ids)}
    got = read(ids)
    assert [r["step"] for r in got] == list(range(7)) + list(range(4, 12))  # killed after 7, resumed at 4
    for r in got:
        assert r["ids"] == want[r["step"]], r["step"]
    a, b = _result(ref_wd), _result(wd)
    for k in ("val_loss", "val_accuracy", "test_loss", "test_accuracy", "train_loss", "steps", "train_flops",
              "program_fingerprint"):
        assert a[k] == b[k], k
    assert b["segments"] == 2


def test_forced_pipelines_and_the_memory_cap(cifar10_path, varied, tmp_path, monkeypatch):
    """Native 32 px CIFAR-10: auto keeps it in memory under the cap, streams it above;
    varied sizes cannot be forced into memory."""
    from scaling.config import TrainConfig
    from scaling.data import selection

    monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path / "cache"))
    small = tmp_path / "small"
    for split in ("train", "test"):
        for p in sorted((varied / split).glob("*/*.jpg")):
            from PIL import Image

            out = small / split / p.parent.name / p.name
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.open(p).resize((32, 32)).save(out)
    cfg = TrainConfig(model="cnn-xs", data_source=str(small))
    c = selection.choose(cfg)
    assert c.pipeline == "memory" and "within the memory cap" in c.reason
    c = selection.choose(TrainConfig(model="cnn-xs", data_source=str(small), memory_cap_gb=0.0001))
    assert c.pipeline == "stream" and "above the memory cap" in c.reason
    assert selection.choose(TrainConfig(data_source=str(small), data_pipeline="stream")).pipeline == "stream"
    assert (tmp_path / "cache" / "datasets").is_dir()  # the header scan is cached, keyed by content
    r = run_cli("scaling.train", *_args(tmp_path / "wd", varied, "--data-pipeline", "memory"), env=NO_RESTART)
    assert r.returncode == 2 and "one size" in r.stderr and not (tmp_path / "wd").exists()


# --- bad input: one line, exit 2, nothing written -----------------------------

def _refused(tmp_path: Path, data, *extra: str, env=None, match: str) -> None:
    wd = tmp_path / "wd"
    r = run_cli("scaling.train", *_args(wd, data, *extra), env={**NO_RESTART, **(env or {})})
    line = r.stderr.strip()
    assert r.returncode == 2, r.stderr[-2000:]
    assert "\n" not in line and line.startswith("error: ") and match in line, line
    assert not wd.exists()


def test_a_folder_with_no_images(tmp_path):
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "cat" / "notes.txt").write_text("x")
    _refused(tmp_path, tmp_path / "empty", match="no images")


def test_an_unreadable_image_is_named_before_anything_is_written(varied, tmp_path):
    root = tmp_path / "bad"
    for split in ("train", "test"):
        for p in sorted((varied / split).glob("*/*.jpg"))[::3]:
            (root / split / p.parent.name).mkdir(parents=True, exist_ok=True)
            (root / split / p.parent.name / p.name).write_bytes(p.read_bytes())
    bad = sorted((root / "train" / "dog").glob("*.jpg"))[0]
    bad.write_bytes(b"not a jpeg at all")
    _refused(tmp_path, root, match=str(bad.relative_to(root)))


def test_a_missing_arrayrecord_folder_or_shard(converted, tmp_path):
    _refused(tmp_path, tmp_path / "no-such-shards", match="data path not found")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "metadata.json").write_text((converted / "metadata.json").read_text())
    _refused(tmp_path, copy, match="ArrayRecord shard not found")


@pytest.mark.parametrize("scale", ["0,1", "0.5,1.5", "0.9,0.2", "x"])
def test_a_crop_scale_outside_the_unit_interval(varied, tmp_path, scale):
    _refused(tmp_path, varied, "--crop-scale", scale, match="crop")


def test_a_crop_scale_in_a_config_file_is_checked_too(varied, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"crop_scale": [0.0, 1.0]}))
    _refused(tmp_path, varied, "--config", str(cfg), match="--crop-scale must be")


def test_a_tfds_name_not_prepared_offline(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    _refused(tmp_path, "tfds", "--dataset", "mnist", "--data-pipeline", "stream",
             env={"TFDS_DATA_DIR": str(tmp_path / "tfds")}, match="not available offline")
    _refused(tmp_path, "tfds", "--dataset", "no_such_data_set", env={"TFDS_DATA_DIR": str(tmp_path / "tfds")},
             match="no_such_data_set")


def test_training_streams_a_tfds_data_set_prepared_from_local_files(varied, tmp_path, monkeypatch):
    """``--data tfds``: a TFDS data set (ArrayRecord, prepared here from the image files; no
    network, no TensorFlow) streams through ``tfds.data_source`` into the trainer."""
    pytest.importorskip("tensorflow_datasets")
    from test_stream import _prepare_tfds

    from scaling import train
    from scaling.config import TrainConfig

    name = _prepare_tfds(varied, tmp_path / "tfds")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    cfg = TrainConfig(model="cnn-xs", dataset=name, data_source="tfds", image_size=32, steps=6, batch_size=32,
                      checkpoint_every=3, log_every=3)
    r = train.run(cfg, tmp_path / "run", progress=False)
    assert r["status"] == "done" and r["data_pipeline"] == "stream" and r["train_size"] == 270
    assert np.isfinite(r["val_loss"]) and r["dataset"] == name


def test_pipelines_are_the_modules_of_the_batch_sources_package():
    """Adding a pipeline is one module in ``scaling.data.batch_sources`` (found by name)."""
    from scaling.config import TrainConfig
    from scaling.data import batch_sources
    from scaling.data.selection import Choice
    from scaling.errors import UserError

    assert batch_sources.names() == ("memory", "stream")
    with pytest.raises(UserError, match="unknown data pipeline 'disk'"):
        batch_sources.open_source(TrainConfig(), Choice("disk", "a test"))
