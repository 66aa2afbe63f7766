"""Data layer: a job's datasets -> one samples table: listed, checked by the stages, split and persisted."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe._util.category import category_label
from brevetti_pipe.config import JobConfig
from brevetti_pipe.data._generator import localize_samples
from brevetti_pipe.data._samples import GENERATORS, Dataset, concat_samples
from brevetti_pipe.data._split import SampleSplit
from brevetti_pipe.errors import ConfigError, DatasetError
from brevetti_pipe.platform import layout
from brevetti_pipe.stages import Stage
from brevetti_pipe.storage import IoTools, is_local

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SampleSelection", "configured_datasets"]

log = logging.getLogger(__name__)


def configured_datasets(config: JobConfig) -> list[Dataset]:
    """The datasets selected in the config, in config order (local paths made absolute)."""
    out = []
    for name, cfg in config.datasets.items():
        url = cfg.url
        if is_local(url):
            url = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
        out.append(Dataset(name, url, cfg))
    return out


class SampleSelection:
    """The samples of one job: every image of its datasets, bad ones dropped by policy, with a ``purpose``.

    Args:
        config: the job's config (``datasets``, ``split``, ``data``).
        io: storage access.
        seed: the job seed (the split's, unless ``split.seed`` is set).
        root: ``platform.root`` (splits shared by the runs of a sweep live under it).
        artifact_path: maps a path inside the job's artifacts to its URL.
        on_artifact: told of every artifact written.
        local_cache: sets up the local cache the checks and generators reuse.
    """

    def __init__(
        self, config: JobConfig, io: IoTools, *, seed: int, root: str, artifact_path: Callable[..., str],
        on_artifact: Callable[[str], None], local_cache: Callable[[], object],
    ) -> None:
        self.config = config
        self.io = io
        self.seed = seed
        self.root = root
        self.artifact_path = artifact_path
        self.on_artifact = on_artifact
        self.local_cache = local_cache
        self.samples: pd.DataFrame | None = None
        self.bad_samples = 0
        self._classes: list[str] | None = None

    @property
    def datasets(self) -> list[Dataset]:
        return configured_datasets(self.config)

    def ensure_dataset(self, ds: Dataset) -> None:
        """Generate a dataset with a ``generator`` when its URL holds nothing yet."""
        if not ds.config.generator:
            return
        fs, path = self.io.fs(ds.url)
        try:
            if self.io.call(lambda: fs.exists(path) and bool(fs.find(path, maxdepth=2)), ds.url):
                return
        except PermissionError:
            return  # listing the dataset next says "access denied", naming it; generating would fail too
        generator = GENERATORS.get(ds.config.generator, where=f"datasets.{ds.name}.generator")
        try:
            generator(ds.url, io=self.io, **ds.config.generator_params)
        except TypeError as exc:
            raise ConfigError(f"Invalid datasets.{ds.name}.generator_params: {exc}") from None

    def get(self, checkers: Callable[[], Sequence[Stage]]) -> pd.DataFrame:
        """All images of all datasets with their ``purpose`` (computed once, then cached).

        Args:
            checkers: the stages whose ``check`` runs on every sample before the split.
        """
        if self.samples is not None:
            return self.samples
        if not self.config.datasets:
            raise ConfigError("No datasets configured. Select some with datasets=NAME or datasets.<name>.url=URL")
        frames = []
        for ds in self.datasets:
            self.ensure_dataset(ds)
            frames.append(ds.get_image_samples(io=self.io))
        samples = self._drop_bad_samples(concat_samples(frames), checkers)
        self.samples = self._split(samples)
        log.info("Split: %s", self.samples.groupby("purpose").size().to_dict())
        return self.samples

    def _split(self, samples: pd.DataFrame) -> pd.DataFrame:
        """Read / persist the split at ``artifacts/<split.file>``, shared with runs of the same datasets."""
        cfg = self.config.split
        split = SampleSplit(
            cfg.fractions, cfg.stratify, cfg.unique_key,
            seed=self.seed if cfg.seed is None else cfg.seed, manual_column=cfg.manual_column, mode=cfg.mode,
        )
        own = self.artifact_path(cfg.file)
        shared = layout.shared_split_url(self.root, {
            "datasets": sorted((d.id, d.url) for d in self.datasets),
            "fractions": split.fractions, "stratify": split.stratify, "unique_key": split.unique_key,
            "seed": split.seed, "manual": split.manual_column, **({"mode": split.mode} if split.mode else {}),
        })
        if not self.io.exists(own) and self.io.exists(shared):
            # another run of this sweep (same datasets, split settings and seed) split these already
            self.io.write_file(own, self.io.read_file(shared))
        result = split.update_unassigned(samples, id_path=own, io=self.io)
        content = self.io.read_file(own)
        if not self.io.exists(shared) or self.io.read_file(shared) != content:
            self.io.write_file(shared, content)
        self.on_artifact(own)
        return result

    def _drop_bad_samples(self, samples: pd.DataFrame, checkers: Callable[[], Sequence[Stage]]) -> pd.DataFrame:
        """Run every stage's ``check`` on local copies; fail or skip bad samples per ``data.on_bad_sample``."""
        if not self.config.data.check_samples or samples.empty:
            return samples
        stages = [st for st in checkers() if type(st).check is not Stage.check]
        if not stages:
            return samples
        self.local_cache()
        local = localize_samples(samples.reset_index(drop=True), self.io)
        reasons: dict[int, str] = {}
        for stage in stages:
            for i, reason in stage.check(local).items():
                reasons.setdefault(i, reason)
        if not reasons:
            return samples
        positions = sorted(reasons)
        bad = samples.iloc[positions][["path", "dataset"]].assign(reason=[reasons[i] for i in positions])
        if self.config.data.on_bad_sample == "fail":
            first = bad.iloc[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DatasetError(
                f"Bad sample in dataset '{first['dataset']}': {_secrets.redact(str(first['path']))}: {first['reason']}{more}. "
                "Fix or remove it, or set data.on_bad_sample=skip to train without bad samples."
            )
        url = self.artifact_path("bad_samples.csv")
        self.io.write_file(url, bad.to_csv(index=False))
        self.on_artifact(url)
        self.bad_samples = len(bad)
        log.warning("Skipping %d bad sample(s), listed in %s", len(bad), _secrets.redact(url))
        return samples.drop(index=samples.index[positions]).reset_index(drop=True)

    def classes(self, checkers: Callable[[], Sequence[Stage]]) -> list[str]:
        """Class names in label order: listed in the dataset configs, else the category folders, sorted."""
        if self._classes is None:
            listed = [c for ds in self.config.datasets.values() for c in (ds.classes or [])]
            if listed:
                self._classes = list(dict.fromkeys(listed))
            else:
                self._classes = sorted({category_label(c) for c in self.get(checkers)["category"]})
        return self._classes

    @property
    def known_classes(self) -> list[str] | None:
        """The class names when already known (without listing the data)."""
        return self._classes
