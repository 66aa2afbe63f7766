"""SampleSplit: samples -> train / devel / test, stratified, seeded and persisted."""

from __future__ import annotations

import hashlib
import io as _io
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from brevetti_pipe._util.category import category_label
from brevetti_pipe.config._schema import PURPOSES
from brevetti_pipe.errors import SplitError, StorageError
from brevetti_pipe.storage import IoTools

__all__ = ["SampleSplit", "merge_sample_identification"]

#: brevettiai's split modes: its MurmurHash3 assignment (reproducible from the seed), and its default.
MODE_MURMURHASH3 = "murmurhash3"
MODE_SORTED_PERMUTATION = "sorted_permutation"
_UNASSIGNED = "\x00unassigned"

log = logging.getLogger(__name__)

_FILE_COLUMNS = ("etag", "purpose", "path", "dataset_id", "category")


def _uniform(keys: Sequence[str] | np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per key, from a hash of (seed, key): order independent."""
    prefix = f"{seed}:".encode()
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + k.encode(), digest_size=8).digest(), "big") for k in keys),
        dtype=np.float64,
        count=len(keys),
    ) / 2.0**64


def _targets(n: int, fractions: Mapping[str, float], order: Sequence[str] = PURPOSES) -> dict[str, int]:
    """Split n into integer counts per purpose by the largest-remainder method (ties in ``order``)."""
    raw = {p: n * f for p, f in fractions.items()}
    counts = {p: int(np.floor(v)) for p, v in raw.items()}
    rest = n - sum(counts.values())
    for p in sorted(raw, key=lambda p: (-(raw[p] - counts[p]), list(order).index(p)))[:rest]:
        counts[p] += 1
    return counts


def _looks_like_regex(text: str) -> bool:
    return any(c in text for c in "()[]\\*+?^$|")


def _extract(samples: pd.DataFrame, pattern: str, what: str) -> pd.Series:
    """The first group of ``pattern`` matched in each ``path`` (brevettiai's regex strata/keys); no match -> ""."""
    if "path" not in samples.columns:
        raise SplitError(f"{what} as a regex reads the path column; the samples have {list(samples.columns)}")
    try:
        found = samples["path"].astype(str).str.extract(pattern, expand=True)
    except (re.error, ValueError) as exc:
        raise SplitError(f"{what} regex {pattern!r} is invalid: {exc}") from None
    return found[0].fillna("").astype(str)


class SampleSplit:
    """Assigns every sample a ``purpose`` (train / devel / test) that never changes.

    * Samples sharing ``unique_key`` (the etag: the same image bytes) share a purpose, so
      duplicates never straddle train and test.
    * Counts per purpose follow ``fractions`` within each stratum (``stratify`` columns).
    * The result depends on the seed and the sample keys only, not on listing order.
    * With ``id_path``, earlier assignments are read back and kept; only new samples are
      assigned, filling each stratum towards its target fractions.

    Args:
        fractions: purpose -> fraction, summing to 1.
        stratify: columns whose values define the strata.
        unique_key: the column identifying duplicates.
        seed: the split seed.
        manual_column: optional column whose non-empty values (train / devel / test) force a purpose.
        stratification: brevettiai's spelling of ``stratify``: a list of columns, or a regex whose
            first group, extracted from ``path``, is the stratum.
        uniqueness: brevettiai's spelling of ``unique_key``: a list of columns (joined with "_"), or a
            regex on ``path``.
        split: brevettiai's train fraction (``{"train": split, "devel": 1 - split}``).
        mode: None (ours), ``"murmurhash3"`` (brevettiai's hash assignment, recomputing old split
            decisions from the same seed; needs ``brevetti_pipe[brevettiai]``) or
            ``"sorted_permutation"`` (brevettiai's default, which depended on numpy's global
            random state and cannot be recomputed: refused).
    """

    def __init__(
        self,
        fractions: Mapping[str, float] | None = None,
        stratify: Sequence[str] | str = ("category",),
        unique_key: str | Sequence[str] = "etag",
        seed: int = 0,
        manual_column: str | None = None,
        *,
        stratification: Sequence[str] | str | None = None,
        uniqueness: Sequence[str] | str | None = None,
        split: float | None = None,
        mode: str | None = None,
    ) -> None:
        if split is not None:
            if fractions is not None:
                raise SplitError("Give fractions or brevettiai's split, not both")
            if not 0 <= split <= 1:
                raise SplitError(f"split is the train fraction in [0, 1]; got {split}")
            fractions = {"train": split, "devel": 1 - split}
        if stratification is not None:
            stratify = stratification
        if uniqueness is not None:
            unique_key = uniqueness
        if mode not in (None, MODE_MURMURHASH3):
            raise SplitError(
                f"Unknown split mode. Received: mode={mode!r}. Allowed: null (ours) or {MODE_MURMURHASH3!r} "
                f"(brevettiai's hash assignment); {MODE_SORTED_PERMUTATION!r} drew from an unseeded global random "
                "state in brevettiai and cannot be recomputed"
            )
        if int(seed) < 0:
            raise SplitError(f"The split seed must be >= 0 (brevettiai's -1 drew a random seed; seeds are explicit here); "
                             f"got {seed}")
        self.mode = mode
        if mode == MODE_MURMURHASH3 and set(f for f, v in (fractions or {}).items() if v > 0) - {"train", "devel"}:
            raise SplitError(f"mode=murmurhash3 assigns train and devel (brevettiai's purpose and remainder); got "
                             f"fractions {dict(fractions or {})}")
        self.split_fraction = split
        self.fractions = {p: float(f) for p, f in (fractions or {"train": 0.8, "devel": 0.2}).items() if f > 0}
        unknown = set(self.fractions) - set(PURPOSES)
        if unknown or abs(sum(self.fractions.values()) - 1) > 1e-6:
            raise SplitError(
                f"Invalid split fractions {dict(fractions or {})}: purposes must be {list(PURPOSES)} summing to 1"
            )
        self.stratify: list[str] | str = stratify if isinstance(stratify, str) else list(stratify or [])
        self.unique_key: str | list[str] = unique_key if isinstance(unique_key, str) else list(unique_key)
        self.seed = int(seed)
        self.manual_column = manual_column

    # ------------------------------------------------------------------------------------
    def _columns(self, samples: pd.DataFrame) -> tuple[pd.DataFrame, list[str], str]:
        """Samples with the derived stratum / key columns a regex or several key columns need,
        the stratify columns and the key column."""
        out = samples
        stratify, key = self.stratify, self.unique_key
        if isinstance(stratify, str) and stratify in out.columns:
            stratify = [stratify]
        elif isinstance(stratify, str):
            out = out.assign(_stratification=_extract(out, stratify, "stratification"))
            stratify = ["_stratification"]
        if isinstance(key, str) and key not in out.columns and _looks_like_regex(key):
            out = out.assign(_uniqueness=_extract(out, key, "uniqueness"))
            key = "_uniqueness"
        elif not isinstance(key, str):
            missing = [c for c in key if c not in out.columns]
            if missing:
                raise SplitError(f"uniqueness names unknown column(s) {missing}; columns: {list(out.columns)}")
            out = out.assign(_uniqueness=out[list(key)].astype(str).agg("_".join, axis=1))
            key = "_uniqueness"
        return out, list(stratify), key

    def assign(self, samples: pd.DataFrame, existing: Mapping[str, str] | str | None = None, *,
               purpose: str | None = None, remainder: str | None = None, column: str = "purpose") -> Any:
        """Return the purpose of every sample (a Series aligned with ``samples``).

        brevettiai's form, ``assign(df, purpose="train", remainder=None)`` (or ``assign(df, "train")``),
        returns a copy of ``df`` whose empty ``column`` values get ``purpose`` for the ``split``
        fraction of each stratum (samples already marked count towards it) and ``remainder`` (or stay
        empty) for the rest.

        Args:
            samples: the samples table.
            existing: key -> purpose assignments to keep (from an earlier split).
        """
        if isinstance(existing, str) or purpose is not None:
            return self._assign_purpose(samples, purpose or str(existing), remainder, column)
        return self._assign(samples, existing, self.fractions)

    def _assign_purpose(self, samples: pd.DataFrame, purpose: str, remainder: str | None, column: str) -> pd.DataFrame:
        share = self.split_fraction if self.split_fraction is not None else self.fractions.get(purpose, 0.0)
        out = samples.copy()
        current = out[column] if column in out.columns else pd.Series(pd.NA, index=out.index, dtype=object)
        marked = current.notna() & (current.astype(str) != "")
        if self.mode == MODE_MURMURHASH3:
            result = self._murmurhash3(out.assign(**{column: current.where(marked, None)}), purpose, share, column)
        else:
            table, _, key = self._columns(out)
            existing = dict(zip(table.loc[marked, key].astype(str), current[marked].astype(str)))
            fractions = {p: f for p, f in ((purpose, share), (_UNASSIGNED, 1.0 - share)) if f > 0}
            result = self._assign(out, existing, fractions)
            result = result.where(result != _UNASSIGNED, None)
        out[column] = result.where(result.notna(), remainder) if remainder else result
        return out

    def _murmurhash3(self, samples: pd.DataFrame, purpose: str, share: float, column: str) -> pd.Series:
        """brevettiai's MurmurHash3 assignment, as its ``SampleSplit.assign`` computed it: a
        ``RandomState(seed)`` draws one hash seed per stratum (strata in sorted order, only those
        with unassigned items), and an unassigned unique item (its key columns' values joined with
        "_") gets ``purpose`` when ``mmh3.hash(key, seed, signed=False) < 0xFFFFFFFF * share``. An
        item's rows all take the item's purpose (train before test before the rest)."""
        try:
            import mmh3
        except ImportError:
            raise SplitError("mode=murmurhash3 needs the mmh3 package: install brevetti_pipe[brevettiai]") from None
        table, stratify, key = self._columns(samples)
        result = samples[column].astype(object).where(samples[column].notna(), None)
        if share == 0 or result.notna().all():
            return result
        if share == 1:
            return result.where(result.notna(), purpose)
        rng = np.random.RandomState(self.seed)
        groups = table.groupby(stratify, sort=True, dropna=False) if stratify else [(None, table)]
        priority = {"train": 0, "test": 1}
        for _, g in groups:
            keys = g[key].astype(str)
            rows = pd.DataFrame({"key": keys, "purpose": result[g.index]})
            rows["prio"] = rows["purpose"].map(lambda p: priority.get(p, 2) if p is not None else 3)
            first = rows.sort_values("prio", kind="mergesort").groupby("key", sort=True)["purpose"].first()
            item_purpose = first.where(first.notna(), None)
            unmarked = item_purpose[item_purpose.isna()].index
            if len(unmarked):
                mmh_seed = rng.randint(0x7FFFFFFF)
                hashes = np.array([mmh3.hash(k, seed=mmh_seed, signed=False) for k in unmarked], dtype=np.float64)
                item_purpose[unmarked[hashes < 0xFFFFFFFF * share]] = purpose
            result[g.index] = keys.map(item_purpose).to_numpy(dtype=object)
        return result.where(result.notna(), None)

    def _assign(self, samples: pd.DataFrame, existing: Mapping[str, str] | None, fractions: Mapping[str, float]) -> pd.Series:
        samples, stratify, unique_key = self._columns(samples)
        missing = [c for c in [unique_key, *stratify] if c not in samples.columns]
        if missing:
            raise SplitError(f"Samples have no column(s) {missing} needed by the split; columns: {list(samples.columns)}")
        if samples.empty:
            return pd.Series([], index=samples.index, dtype=object, name="purpose")
        keys = samples[unique_key].astype(str)
        fixed: dict[str, str] = dict(existing or {})
        if self.manual_column and self.manual_column in samples.columns:
            manual = samples[self.manual_column].fillna("").astype(str).str.strip()
            bad = sorted(set(manual[manual != ""]) - set(PURPOSES))
            if bad:
                raise SplitError(f"Column '{self.manual_column}' has purposes {bad}; allowed: {list(PURPOSES)}")
            fixed.update(dict(zip(keys[manual != ""], manual[manual != ""])))
        strata = pd.Series("", index=samples.index)
        for i, column in enumerate(stratify):  # vectorised: a row-wise join is 10x slower
            values = samples[column]
            part = values.astype(str)
            missing = values.isna()
            if missing.any():  # one stratum "", whatever astype(str) makes of None/NaN (pandas 3 keeps NaN)
                part = part.where(~missing, "")
            strata = part if i == 0 else strata + "\x1f" + part
        # one entry per distinct key (its first row's stratum); positional numpy from here on
        codes, uniques = pd.factorize(keys)
        first = np.empty(len(uniques), dtype=np.int64)
        first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
        ukeys = np.asarray(uniques, dtype=object)
        stratum, _ = pd.factorize(strata.to_numpy()[first])
        purpose = pd.Series(ukeys).map(fixed).to_numpy(dtype=object) if fixed else np.full(len(ukeys), None, dtype=object)
        is_new = pd.isna(purpose)
        new = np.flatnonzero(is_new)
        u = _uniform(ukeys[new], self.seed)
        # rank within the stratum by (u, key): order independent; the key only breaks exact ties
        new_stratum = stratum[new]
        order = np.lexsort((u, new_stratum))
        su, ss = u[order], new_stratum[order]
        if np.any((su[1:] == su[:-1]) & (ss[1:] == ss[:-1])):
            key_rank = np.empty(len(new), dtype=np.int64)
            key_rank[np.argsort(ukeys[new], kind="stable")] = np.arange(len(new))
            order = np.lexsort((key_rank, u, new_stratum))
            ss = new_stratum[order]
        purposes = [p for p in PURPOSES if p in fractions] + [p for p in fractions if p not in PURPOSES]
        fallback = max(fractions, key=lambda p: (fractions[p], -purposes.index(p)))
        total = np.bincount(stratum)
        fixed_rows = np.flatnonzero(~is_new)
        have = Counter(zip(stratum[fixed_rows].tolist(), purpose[fixed_rows]))  # (stratum, purpose) -> kept keys
        assigned = np.full(len(new), fallback, dtype=object)  # in sorted order
        starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]]) if len(ss) else np.array([], dtype=np.int64)
        for b0, b1 in zip(starts, [*starts[1:], len(ss)]):
            c = int(ss[b0])
            targets = _targets(int(total[c]), fractions, purposes)
            edge = 0
            for p in purposes:
                if p in targets:
                    deficit = max(targets[p] - have[(c, p)], 0)
                    lo, edge = edge, edge + deficit
                    assigned[b0 + min(lo, b1 - b0): b0 + min(edge, b1 - b0)] = p
        purpose[new[order]] = assigned
        return pd.Series(purpose[codes], index=samples.index, name="purpose")

    # ------------------------------------------------------------------------------------
    def update_unassigned(
        self, samples: pd.DataFrame, id_path: str | None = None, io: IoTools | None = None
    ) -> pd.DataFrame:
        """Return ``samples`` with a ``purpose`` column, reusing and extending the split at ``id_path``.

        The file (``sample_identification.csv``: ``etag,purpose`` plus path, dataset_id and
        category) is read when it exists, its assignments kept, new samples assigned, and the
        union written back atomically; rows of samples no longer listed are kept.
        """
        io = io or IoTools()
        previous = pd.DataFrame(columns=list(_FILE_COLUMNS))
        if id_path:
            log.info("Looking for previous train / development split")
            if io.exists(id_path):
                try:
                    previous = pd.read_csv(_io.BytesIO(io.read_file(id_path)), dtype=str, keep_default_na=False)
                except (StorageError, ValueError, pd.errors.ParserError) as exc:
                    raise SplitError(f"Cannot read the split file {id_path}: {exc}") from None
                if not {"etag", "purpose"} <= set(previous.columns):
                    raise SplitError(
                        f"Split file {id_path} must have columns etag,purpose; found {list(previous.columns)}"
                    )
                bad = sorted(set(previous["purpose"]) - set(PURPOSES) - {""})
                if bad:
                    raise SplitError(f"Split file {id_path} has unknown purposes {bad}; allowed: {list(PURPOSES)}")
                log.info("Using train / development split from run cached in artifacts")
        plain_key = isinstance(self.unique_key, str) and self.unique_key in samples.columns
        key_col = self.unique_key if plain_key and self.unique_key in previous.columns else "etag"
        existing = {k: p for k, p in zip(previous[key_col], previous["purpose"]) if p}
        out = samples.copy()
        if self.mode == MODE_MURMURHASH3 or not plain_key:
            # the file is keyed by etag: carry its purposes over to the samples, then to their split keys
            known = samples[key_col].astype(str).map(existing) if existing and key_col in samples else None
            base = samples.assign(purpose=known if known is not None else None)
            if self.mode == MODE_MURMURHASH3:
                out["purpose"] = self._assign_purpose(base, "train", "devel", "purpose")["purpose"].values
            else:
                table, _, key = self._columns(samples)
                marked = base["purpose"].notna()
                out["purpose"] = self._assign(samples, dict(zip(table.loc[marked, key].astype(str), base.loc[marked, "purpose"])),
                                              self.fractions).values
        else:
            out["purpose"] = self.assign(samples, existing if key_col == self.unique_key else None).values
        if id_path:
            self._write(out, previous, id_path, io)
        return out

    def _write(self, samples: pd.DataFrame, previous: pd.DataFrame, id_path: str, io: IoTools) -> None:
        table = pd.DataFrame({
            "etag": samples["etag"].astype(str) if "etag" in samples or not isinstance(self.unique_key, str)
            else samples[self.unique_key].astype(str),
            "purpose": samples["purpose"],
            "path": samples["path"] if "path" in samples else "",
            "dataset_id": samples["dataset_id"] if "dataset_id" in samples else "",
            "category": samples["category"].map(category_label)
            if "category" in samples else "",
        })
        if isinstance(self.unique_key, str) and self.unique_key not in table.columns and self.unique_key in samples.columns:
            table[self.unique_key] = samples[self.unique_key].astype(str)
        if not previous.empty:
            keep = previous[~previous["etag"].isin(table["etag"])]
            table = pd.concat([keep.reindex(columns=table.columns, fill_value=""), table], ignore_index=True)
        table = table.drop_duplicates().sort_values(["purpose", "path", "etag"], kind="mergesort")
        io.write_file(id_path, table.to_csv(index=False))


def merge_sample_identification(
    samples: pd.DataFrame, id_path: str | pd.DataFrame, on: str = "etag", io: IoTools | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reuse an old split file (brevettiai's ``merge_sample_identification``): the non-empty values of
    its columns (``purpose``, ...) are copied onto the samples with the same ``on`` value.

    Args:
        samples: the samples table.
        id_path: the split file (``sample_identification.csv``, any fsspec URL) or its table.
        on: the column matching file rows to samples.

    Returns:
        ``(samples with the file's columns, the file's rows matching no sample)``.
    """
    if isinstance(id_path, pd.DataFrame):
        ids = id_path.reset_index() if on not in id_path.columns else id_path
    else:
        try:
            ids = pd.read_csv(_io.BytesIO((io or IoTools()).read_file(id_path)), dtype=str, keep_default_na=False)
        except (StorageError, ValueError, pd.errors.ParserError) as exc:
            raise SplitError(f"Cannot read the split file {id_path}: {exc}") from None
    if on not in ids.columns or on not in samples.columns:
        raise SplitError(f"merge_sample_identification matches on {on!r}; the file has {list(ids.columns)}, "
                         f"the samples {list(samples.columns)}")
    ids = ids.replace("", np.nan).drop_duplicates(subset=[on], keep="last").set_index(on)
    extra = ids[~ids.index.isin(samples[on].astype(str))]
    aligned = ids.reindex(samples[on].astype(str).to_numpy())
    out = samples.copy()
    for column in aligned.columns:
        values = aligned[column].to_numpy(dtype=object)
        known = pd.notna(values)
        if column in out.columns:
            out[column] = out[column].astype(object).where(~known, values)
        else:
            out[column] = np.where(known, values, None)
    return out, extra
