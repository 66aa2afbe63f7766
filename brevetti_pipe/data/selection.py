"""Data layer: a job's datasets -> one samples table: listed, checked by the stages, split and persisted."""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe._util.category import category_label
from brevetti_pipe.config import JobConfig
from brevetti_pipe.data._generator import localize_samples
from brevetti_pipe.data._samples import GENERATORS, Dataset, concat_samples
from brevetti_pipe.data._split import SampleSplit
from brevetti_pipe.data._verdicts import RerunCache, file_stamp, stage_fingerprint
from brevetti_pipe.errors import ConfigError, DatasetError
from brevetti_pipe.platform import layout
from brevetti_pipe.stages import Stage
from brevetti_pipe.storage import IoTools, is_local, local_path

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SampleSelection", "configured_datasets"]

log = logging.getLogger(__name__)


def configured_datasets(config: JobConfig) -> list[Dataset]:
    """The datasets selected in the config, in config order (local paths made absolute)."""
    out = []
    for name, cfg in config.datasets.items():
        url = local_path(cfg.url) if is_local(cfg.url) else cfg.url
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
        #: seconds spent per phase (``listing``, ``sample_check``, ``split``)
        self.timings: dict[str, float] = {}
        #: files hashed for an etag / checked by a stage in this run, and verdicts reused from earlier runs
        self.work = {"hashed": 0, "checked": 0, "reused": 0}
        self.rerun = RerunCache(io, layout.rerun_cache_url(root, config.platform.cache_dir))
        self._classes: list[str] | None = None
        self._check_job_folders_outside()

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
        start = time.perf_counter()
        for ds in self.datasets:
            self.ensure_dataset(ds)
            frames.append(ds.get_image_samples(io=self.io, content_etags=self._etags_of(ds),
                                               folder_links=self._folder_links(ds) if is_local(ds.url) else None))
        checked = time.perf_counter()
        samples = self._drop_bad_samples(concat_samples(frames), checkers)
        split = time.perf_counter()
        self.samples = self._split(samples)
        self.timings.update(listing=checked - start, sample_check=split - checked, split=time.perf_counter() - split)
        log.info("Split: %s", self.samples.groupby("purpose").size().to_dict())
        return self.samples

    def _job_folders(self) -> dict[str, tuple[str, str]]:
        """``{key: (configured value, real path)}`` of the local folders a job writes: ``platform.root``
        (reports, models, galleries), ``platform.cache_dir`` and ``job.temp_dir`` (masks, converted images)."""
        folders = {"platform.root": self.config.platform.root, "platform.cache_dir": self.config.platform.cache_dir,
                   "job.temp_dir": self.config.job.temp_dir}
        return {key: (value, os.path.realpath(local_path(value))) for key, value in folders.items()
                if value and is_local(value)}

    def _refuse_job_folders_in(self, ds: Dataset, real: str, top: str | None, via: str = "") -> None:
        """Refuse a job folder that the listing of ``ds`` would walk: inside ``real`` (the dataset's
        folder, or a folder a link ``via`` in it points at), below its top-level folder ``top`` (that
        link's, None for the dataset's own) when ``datasets.X.folders`` lists only some."""
        for key, (value, inside) in self._job_folders().items():
            if not (inside == real or inside.startswith(real.rstrip(os.sep) + os.sep)):
                continue
            first = top if top is not None else os.path.relpath(inside, real).split(os.sep)[0]
            if ds.config.folders is not None and inside != real and first not in ds.config.folders:
                continue  # a folder the dataset's listing leaves out
            link = f" through the folder link {via}" if via else ""
            raise ConfigError(
                f"{key}={_secrets.redact(value)} is inside dataset '{ds.name}' ({_secrets.redact(ds.url)}){link}: "
                "the images a job writes there would be listed as samples by the next run; "
                f"set {key} to a folder outside the dataset"
            )

    def _check_job_folders_outside(self) -> None:
        """The folders a job writes must not lie inside a local dataset: their images would be listed
        as samples, of a made-up class, by the next run. Checked before anything is written (folder
        links inside the dataset are checked as the listing meets them)."""
        for ds in self.datasets:
            if is_local(ds.url):
                self._refuse_job_folders_in(ds, os.path.realpath(ds.url), None)

    def _folder_links(self, ds: Dataset) -> Callable[[str, str], None]:
        root = ds.url.rstrip(os.sep)

        def check(link: str, real: str) -> None:
            top = os.path.relpath(link, root).split(os.sep)[0]
            self._refuse_job_folders_in(ds, real, top, via=link)

        return check

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

    def _etags_of(self, ds: Dataset) -> Callable[[list[str], list[dict[str, Any]]], list[str]]:
        """Content etags for ``ds``'s files without a store ETag, hashed once per file version."""

        def etags(urls: list[str], infos: list[dict[str, Any]]) -> list[str]:
            values, hashed = self.rerun.content_etags(
                ds.url, urls, [file_stamp(i) for i in infos], lambda u: hashlib.md5(self.io.read_file(u)).hexdigest())
            self.work["hashed"] += hashed
            return values

        return etags

    def _drop_bad_samples(self, samples: pd.DataFrame, checkers: Callable[[], Sequence[Stage]]) -> pd.DataFrame:
        """Run every stage's ``check`` on local copies; fail or skip bad samples per ``data.on_bad_sample``.

        Verdicts of per-sample checks are kept per dataset and file version (see ``data._verdicts``):
        files a run checked already, unchanged since, are not fetched or decoded again; a bad one is
        still reported from its kept verdict.
        """
        if not self.config.data.check_samples or samples.empty:
            return samples
        stages = [st for st in checkers() if type(st).check is not Stage.check]
        if not stages:
            return samples
        samples = samples.reset_index(drop=True)
        urls = {d.name: d.url for d in self.datasets}
        keys = samples["path"].astype(str).tolist()
        versions = [f"{e}|{a}" for e, a in zip(samples["etag"].astype(str), samples["annotation_etag"].astype(str))] \
            if "annotation_etag" in samples.columns else samples["etag"].astype(str).tolist()
        groups = {name: [int(i) for i in pos] for name, pos in samples.groupby("dataset", sort=False).indices.items()}
        plans = []  # (stage, fingerprint, positions to check, reasons found)
        for stage in stages:
            fingerprint = stage_fingerprint(stage)
            todo: list[int] = []
            reasons: dict[int, str] = {}
            for name, positions in groups.items():
                if fingerprint is None or name not in urls:
                    todo.extend(positions)
                    continue
                known = self.rerun.verdicts(urls[name], fingerprint)
                for i in positions:
                    hit = known.get(keys[i])
                    if hit is not None and hit[0] == versions[i]:
                        self.work["reused"] += 1
                        if hit[1]:
                            reasons.setdefault(i, str(hit[1]))
                    else:
                        todo.append(i)
            plans.append((stage, fingerprint, sorted(todo), reasons))
        needed = sorted({i for _, _, todo, _ in plans for i in todo})
        if needed:
            self.local_cache()
            local = localize_samples(samples.iloc[needed].reset_index(drop=True), self.io)
            row_of = {i: r for r, i in enumerate(needed)}
            for stage, fingerprint, todo, reasons in plans:
                if not todo:
                    continue
                found = stage.check(local.iloc[[row_of[i] for i in todo]].reset_index(drop=True))
                found = {r: _as_listed(reason, local.iloc[row_of[todo[r]]], samples.iloc[todo[r]])
                         for r, reason in found.items()}
                self.work["checked"] += len(todo)
                for r, reason in found.items():
                    reasons.setdefault(todo[r], reason)
                if fingerprint is not None:
                    verdicts = {i: [versions[i], found.get(r)] for r, i in enumerate(todo)}
                    for name, positions in groups.items():
                        if name in urls:
                            self.rerun.save_verdicts(urls[name], fingerprint,
                                                     {keys[i]: verdicts[i] for i in positions if i in verdicts})
        log.info("Sample check: %d file check(s) run, %d verdict(s) reused from earlier runs",
                 self.work["checked"], self.work["reused"])
        reasons = {}
        for *_, found_by_stage in plans:  # the first stage's reason names a sample flagged by several
            for i, reason in found_by_stage.items():
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


def _as_listed(reason: str, local: pd.Series, listed: pd.Series) -> str:
    """``reason`` (a stage's check of the local copies) naming the listed files: a remote file's local
    copy (``41494eef62b5-good_0001.bmp.json`` in the cache) becomes its URL, or its name when the
    reason gave only a name."""
    for column in ("path", "annotation_path"):
        copy, url = local.get(column), listed.get(column)
        if not isinstance(copy, str) or not isinstance(url, str) or not copy or copy == url:
            continue
        reason = reason.replace(copy, _secrets.redact(url))
        reason = reason.replace(os.path.basename(copy), posixpath.basename(url.split("?", 1)[0]))
    return reason
