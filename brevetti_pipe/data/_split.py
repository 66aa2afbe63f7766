"""SampleSplit: samples -> train / devel / test, stratified, seeded and persisted."""

from __future__ import annotations

import hashlib
import io as _io
import logging
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from brevetti_pipe._util.category import category_label
from brevetti_pipe.config._schema import PURPOSES
from brevetti_pipe.errors import SplitError, StorageError
from brevetti_pipe.storage import IoTools

__all__ = ["SampleSplit"]

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


def _targets(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Split n into integer counts per purpose by the largest-remainder method."""
    raw = {p: n * f for p, f in fractions.items()}
    counts = {p: int(np.floor(v)) for p, v in raw.items()}
    rest = n - sum(counts.values())
    for p in sorted(raw, key=lambda p: (-(raw[p] - counts[p]), PURPOSES.index(p)))[:rest]:
        counts[p] += 1
    return counts


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
    """

    def __init__(
        self,
        fractions: Mapping[str, float] | None = None,
        stratify: Sequence[str] = ("category",),
        unique_key: str = "etag",
        seed: int = 0,
        manual_column: str | None = None,
    ) -> None:
        self.fractions = {p: float(f) for p, f in (fractions or {"train": 0.8, "devel": 0.2}).items() if f > 0}
        unknown = set(self.fractions) - set(PURPOSES)
        if unknown or abs(sum(self.fractions.values()) - 1) > 1e-6:
            raise SplitError(
                f"Invalid split fractions {dict(fractions or {})}: purposes must be {list(PURPOSES)} summing to 1"
            )
        self.stratify = list(stratify)
        self.unique_key = unique_key
        self.seed = int(seed)
        self.manual_column = manual_column

    # ------------------------------------------------------------------------------------
    def assign(self, samples: pd.DataFrame, existing: Mapping[str, str] | None = None) -> pd.Series:
        """Return the purpose of every sample (a Series aligned with ``samples``).

        Args:
            samples: the samples table.
            existing: key -> purpose assignments to keep (from an earlier split).
        """
        missing = [c for c in [self.unique_key, *self.stratify] if c not in samples.columns]
        if missing:
            raise SplitError(f"Samples have no column(s) {missing} needed by the split; columns: {list(samples.columns)}")
        if samples.empty:
            return pd.Series([], index=samples.index, dtype=object, name="purpose")
        keys = samples[self.unique_key].astype(str)
        fixed: dict[str, str] = dict(existing or {})
        if self.manual_column and self.manual_column in samples.columns:
            manual = samples[self.manual_column].fillna("").astype(str).str.strip()
            bad = sorted(set(manual[manual != ""]) - set(PURPOSES))
            if bad:
                raise SplitError(f"Column '{self.manual_column}' has purposes {bad}; allowed: {list(PURPOSES)}")
            fixed.update(dict(zip(keys[manual != ""], manual[manual != ""])))
        strata = pd.Series("", index=samples.index)
        for i, column in enumerate(self.stratify):  # vectorised: a row-wise join is 10x slower
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
        fallback = max(self.fractions, key=lambda p: (self.fractions[p], -PURPOSES.index(p)))
        total = np.bincount(stratum)
        fixed_rows = np.flatnonzero(~is_new)
        have = Counter(zip(stratum[fixed_rows].tolist(), purpose[fixed_rows]))  # (stratum, purpose) -> kept keys
        assigned = np.full(len(new), fallback, dtype=object)  # in sorted order
        starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]]) if len(ss) else np.array([], dtype=np.int64)
        for b0, b1 in zip(starts, [*starts[1:], len(ss)]):
            c = int(ss[b0])
            targets = _targets(int(total[c]), self.fractions)
            edge = 0
            for p in PURPOSES:
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
        key_col = self.unique_key if self.unique_key in previous.columns else "etag"
        existing = {k: p for k, p in zip(previous[key_col], previous["purpose"]) if p}
        out = samples.copy()
        out["purpose"] = self.assign(samples, existing if key_col == self.unique_key else None).values
        if id_path:
            self._write(out, previous, id_path, io)
        return out

    def _write(self, samples: pd.DataFrame, previous: pd.DataFrame, id_path: str, io: IoTools) -> None:
        table = pd.DataFrame({
            "etag": samples["etag"].astype(str) if "etag" in samples else samples[self.unique_key].astype(str),
            "purpose": samples["purpose"],
            "path": samples["path"] if "path" in samples else "",
            "dataset_id": samples["dataset_id"] if "dataset_id" in samples else "",
            "category": samples["category"].map(category_label)
            if "category" in samples else "",
        })
        if self.unique_key not in table.columns and self.unique_key in samples.columns:
            table[self.unique_key] = samples[self.unique_key].astype(str)
        if not previous.empty:
            keep = previous[~previous["etag"].isin(table["etag"])]
            table = pd.concat([keep.reindex(columns=table.columns, fill_value=""), table], ignore_index=True)
        table = table.drop_duplicates().sort_values(["purpose", "path", "etag"], kind="mergesort")
        io.write_file(id_path, table.to_csv(index=False))
