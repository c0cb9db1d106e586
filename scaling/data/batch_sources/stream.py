"""The streaming pipeline: Grain reads, decodes and crops on the host, the step gets uint8 batches.

For data sets that do not fit the memory cap or whose images differ in size
(``scaling.data.stream`` has the loader, ``preprocess`` the crops). Process
``i`` of ``n`` reads its slice of every global batch; ``feed`` assembles the
global array on the data-parallel sharding, a few batches ahead. Only
standardisation and the dtype cast run on the device.
"""

from __future__ import annotations

import numpy as np

from scaling.data.pipeline import preprocess
from scaling.data.preprocess import CropConfig

DEFAULT_CROP_SCALE = (0.08, 1.0)  # Inception-style random-resized crop (the reference)
PREFETCH = 2  # host batches decoded ahead and device transfers in flight


def crop_config(cfg, train_size: int) -> CropConfig:
    """The crops of a resolved config: train at ``train_size``, eval at ``eval_image_size`` (default the same)."""
    scale = tuple(cfg.crop_scale) if cfg.crop_scale else DEFAULT_CROP_SCALE
    return CropConfig(train_size=train_size, eval_size=cfg.eval_image_size or train_size, scale=scale,
                      augment=cfg.augment)


class StreamSource:
    pipeline = "stream"

    def __init__(self, data, cfg, choice, train_size: int):
        import jax

        self.data, self.cfg, self.choice = data, cfg, choice
        self.crop = crop_config(cfg, train_size)
        self.num_classes, self.content_hash = data.num_classes, data.content_hash
        self.train_size, self.val_size, self.test_size = data.train_size, data.val_size, data.test_size
        self.image_size, self.eval_image_size = self.crop.train_size, self.crop.eval_size
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self._loader = None
        self._stats = None

    def channel_stats(self):
        """Mean/std of 1,000 training images' eval views (memoised: the trainer reads them
        before it claims the workdir, so an undecodable image among them is named first)."""
        if self._stats is None:
            self._stats = self.data.channel_stats(self.crop)
        return self._stats

    def loader(self, start_step: int = 0, num_steps: int | None = None, **kw):
        """This process's ``stream.TrainLoader`` from ``start_step``."""
        return self.data.train_loader(batch_size=self.cfg.batch_size, seed=self.cfg.seed, crop=self.crop,
                                      process_index=self.process_index, process_count=self.process_count,
                                      start_step=start_step, num_steps=num_steps, prefetch=PREFETCH, **kw)

    def train_spec(self, batch_size: int, sharding) -> tuple:
        import jax

        s = self.image_size
        return (jax.ShapeDtypeStruct((batch_size, s, s, 3), np.uint8, sharding=sharding),
                jax.ShapeDtypeStruct((batch_size,), np.int32, sharding=sharding))

    def batch_fn(self, mean, std, image_size: int, augment: bool, dtype):
        # crops and flips were drawn on the host; ``image_size`` is the crop size already
        return lambda batch, key: (preprocess(batch[0], mean, std, image_size, dtype), batch[1])

    def eval_fn(self, mean, std, image_size: int, dtype):
        size = self.eval_image_size  # evaluated at its own resolution (a convnet's may exceed the train one)
        return lambda images_u8: preprocess(images_u8, mean, std, size, dtype)

    def eval_shape(self, split: str):
        n = {"val": self.val_size, "test": self.test_size}[split]
        return n, (self.eval_image_size, self.eval_image_size, 3), np.dtype(np.uint8)

    def eval_batches(self, split: str, batch_size: int):
        yield from self.data.eval_batches(split, batch_size=batch_size, crop=self.crop,
                                          process_index=self.process_index, process_count=self.process_count)

    def train_batches(self, start: int, stop: int, sharding):
        from scaling.data.feed import device_batches

        self.close()
        self._loader = self.loader(start, stop)
        for b in device_batches(self._loader, sharding, prefetch=PREFETCH):
            yield (b["image"], b["label"]), b["id"]

    def example_ids(self, step: int) -> np.ndarray:
        return self.loader().example_ids(step)

    def loader_state(self, step: int) -> dict:
        return {**self.loader(step).get_state(), "pipeline": self.pipeline}

    def check_state(self, state: dict) -> None:
        """A restored state must come from this pipeline (data, seed, batch, crops)."""
        from scaling.data.batch_sources.memory import _check_same

        _check_same({**self.loader(int(state.get("step", 0))).get_state(), "pipeline": self.pipeline}, state)

    def describe(self) -> dict:
        return {**self.data.describe(), "image_size": self.image_size, "eval_image_size": self.eval_image_size,
                "crop_scale": list(self.crop.scale)}

    def close(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader.close()


def open(cfg, choice) -> StreamSource:
    from scaling.data.stream import open_stream
    from scaling.models import registry

    spec = registry.get(cfg.model)
    data = open_stream(cfg.dataset, cfg.data_source or _default(cfg.dataset), cfg.val_size)
    source = StreamSource(data, cfg, choice, cfg.image_size or spec.default_image_size)
    if source.eval_image_size != source.image_size:
        check_eval_resolution(spec, cfg, source.image_size, source.eval_image_size, source.num_classes)
    return source


def check_eval_resolution(spec, cfg, train_size: int, eval_size: int, num_classes: int) -> None:
    """A model built for ``train_size`` must run at ``eval_size`` (a convnet does; a ViT with
    fixed position embeddings does not): traced with shapes only, a one-line error if not."""
    import jax
    import jax.numpy as jnp

    from scaling.errors import UserError

    module = spec.build(num_classes=num_classes, image_size=train_size, **cfg.model_kwargs)

    def init_then_eval(key):
        params = module.init({"params": key, "dropout": key}, jnp.zeros((1, train_size, train_size, 3)), train=False)
        return module.apply(params, jnp.zeros((1, eval_size, eval_size, 3)), train=False)

    try:
        jax.eval_shape(init_then_eval, jax.random.key(0))
    except Exception as e:  # noqa: BLE001 - any failure to trace means it cannot evaluate there
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{spec.name} trained at {train_size} px cannot evaluate at --eval-image-size {eval_size} "
                        f"({msg}); use the train size") from None


def _default(name: str) -> str:
    from scaling.data import default_source

    return default_source(name)
