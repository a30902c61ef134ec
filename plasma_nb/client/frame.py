"""``live.df``: a live query's rows as a pandas DataFrame, patched rather than rebuilt.

A frame is built from rows once; after that each version of the result is described
by a ``Patch`` (rows removed and inserted by position, values set in place), and the
next frame is made from the previous one with numpy: untouched rows are taken as
whole arrays, and only the rows a commit touched are converted from Python. A change
of values that keeps every row in place copies only the columns it changed.

Frames of DSL queries get their dtypes from the schema, so they do not change with
the data: integers are ``int64`` (``Int64`` when nullable), booleans ``bool``
(``boolean``), reals ``float64``, text the default string dtype of the installed
pandas, timestamps ``datetime64[us, UTC]`` and JSON ``object``. Frames of SQL text
take the dtypes pandas infers and are rebuilt whenever their result changes.

pandas is imported on first use: Pyodide sites may not ship it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import MissingDependency
from ..core.schema import ColumnType

# pandas ships no type information (pandas-stubs is a separate package): frames are Any.
DataFrame = Any

__all__ = ["FrameBuilder", "Patch", "import_pandas"]

Row = dict[str, Any]


def import_pandas() -> Any:
    try:
        import pandas  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise MissingDependency(
            "pandas", "live.df", "in JupyterLite: %pip install pandas; live.rows needs nothing"
        ) from None
    return pandas


@dataclass
class Patch:
    """How one version of a result differs from the one before, by position.

    Applied in this order: delete the rows at ``removed`` (positions in the old
    result, ascending); keep the first ``keep`` of the rest (None: all); insert
    ``inserted`` rows at their positions in the new result (ascending); then set
    the ``columns`` of the row at each position of ``set`` (positions in the new
    result; ``columns`` None means all).
    """

    removed: list[int] = field(default_factory=list)
    keep: int | None = None
    inserted: list[tuple[int, Row]] = field(default_factory=list)
    set: list[tuple[int, Row, frozenset[str] | None]] = field(default_factory=list)

    @property
    def structural(self) -> bool:
        return bool(self.removed or self.inserted) or self.keep is not None

    def __len__(self) -> int:
        return len(self.removed) + len(self.inserted) + len(self.set)


class FrameBuilder:
    """Builds and patches the frames of one live query."""

    def __init__(
        self, columns: Sequence[str], types: Mapping[str, tuple[ColumnType, bool]] | None,
    ) -> None:
        self.columns = list(columns)
        self.types = types  # column -> (type, nullable); None: let pandas infer (SQL text)
        self.builds = 0  # full constructions from rows (tests count them)
        self.patched_rows = 0  # rows converted from Python by patches
        self._pd = import_pandas()
        self._dtypes: dict[str, Any] | None = None
        self._arange: Any = None
        self._arrays: tuple[DataFrame, dict[str, Any]] | None = None

    @property
    def dtypes(self) -> dict[str, Any] | None:
        if self.types is None:
            return None
        if self._dtypes is None:
            pd = self._pd
            text = pd.Series(["a"]).dtype  # "str" in pandas 3, object before
            by_type = {
                (ColumnType.INTEGER, False): "int64",
                (ColumnType.INTEGER, True): "Int64",
                (ColumnType.REAL, False): "float64",
                (ColumnType.REAL, True): "float64",
                (ColumnType.BOOLEAN, False): "bool",
                (ColumnType.BOOLEAN, True): "boolean",
                (ColumnType.JSON, False): "object",
                (ColumnType.JSON, True): "object",
                (ColumnType.TIMESTAMP, False): "datetime64[us, UTC]",
                (ColumnType.TIMESTAMP, True): "datetime64[us, UTC]",
            }
            self._dtypes = {
                name: by_type.get(self.types[name], text) for name in self.columns
            }
        return self._dtypes

    # -- building ----------------------------------------------------------------------

    def build(self, rows: Sequence[Row]) -> DataFrame:
        """A new frame of ``rows`` (every row converted)."""
        self.builds += 1
        pd = self._pd
        dtypes = self.dtypes
        if dtypes is None:
            return pd.DataFrame.from_records(
                [tuple(r.values()) for r in rows], columns=self.columns, nrows=len(rows)
            )
        data = {
            name: self._array([r[name] for r in rows], dtypes[name]) for name in self.columns
        }
        return self._frame(data, len(rows))

    def _frame(self, data: dict[str, Any], n: int) -> DataFrame:
        pd = self._pd
        index = pd.RangeIndex(n)
        # An explicit object dtype where it is one: pandas 3 would turn an object column
        # of strings (JSON texts) into its string dtype.
        columns = {
            name: pd.Series(array, index=index, copy=False, dtype=object)
            if str(array.dtype) == "object" else array
            for name, array in data.items()
        }
        frame = pd.DataFrame(columns, index=index, copy=False)
        self._arrays = (frame, data)
        return frame

    def _columns_of(self, frame: DataFrame) -> dict[str, Any]:
        """The column arrays of ``frame`` (those it was made of, if it is our last one)."""
        last = self._arrays
        if last is not None and last[0] is frame:
            return last[1]
        return {name: frame[name].array for name in self.columns}

    def _array(self, values: list[Any], dtype: Any) -> Any:
        pd = self._pd
        if dtype == "object":
            import numpy as np

            out = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                out[i] = v
            return out
        return pd.array(values, dtype=dtype)

    # -- patching ----------------------------------------------------------------------

    def patch(self, frame: DataFrame, patches: Sequence[Patch]) -> DataFrame:
        """The frame after ``patches`` (consecutive versions), made from ``frame``."""
        if self.dtypes is None:
            raise ValueError("frames of SQL text are rebuilt, not patched")
        import numpy as np

        n = len(frame)
        # Until a patch moves rows, positions are stable: collect values by position.
        inplace: dict[int, tuple[Row, set[str] | None]] = {}
        src: Any = None  # old position of each row, or -(k+1) for fresh[k]
        fresh: list[tuple[Row, set[str] | None]] = []
        owned = False  # src may be a view of the cached arange until written to
        for p in patches:
            if p.structural and src is None:
                src = self._positions(n)
                if inplace:
                    src, owned = src.copy(), True
                for pos, (row, names) in inplace.items():
                    src[pos] = -(len(fresh) + 1)
                    fresh.append((row, names))
                inplace.clear()
            if src is None:
                for pos, row, cols in p.set:
                    _merge(inplace, pos, row, cols)
                continue
            if p.removed:
                src, owned = np.delete(src, p.removed), True
            if p.keep is not None:
                src = src[: p.keep]
            if p.inserted:
                at = [pos - i for i, (pos, _) in enumerate(p.inserted)]
                ids = -(np.arange(len(p.inserted), dtype=np.int64) + len(fresh) + 1)
                fresh.extend((row, None) for _, row in p.inserted)
                src, owned = np.insert(src, at, ids), True
            if p.set and not owned:
                src, owned = src.copy(), True
            for pos, row, cols in p.set:
                old = int(src[pos])
                if old < 0:  # already fresh: the latest values win
                    fresh[-old - 1] = (row, None)
                else:
                    src[pos] = -(len(fresh) + 1)
                    fresh.append((row, None if cols is None else set(cols)))
        if src is None:
            return self._set_in_place(frame, inplace)
        return self._take(frame, src, fresh)

    def _positions(self, n: int) -> Any:
        """``arange(n)``, kept: a fresh one costs page faults at every patch."""
        import numpy as np

        if self._arange is None or len(self._arange) < n:
            self._arange = np.arange(max(n, 1024) * 2, dtype=np.int64)
        return self._arange[:n]

    def _set_in_place(
        self, frame: DataFrame, values: dict[int, tuple[Row, set[str] | None]],
    ) -> DataFrame:
        if not values:
            return frame.copy(deep=False)
        by_column: dict[str, tuple[list[int], list[Any]]] = {}
        for pos, (row, cols) in sorted(values.items()):
            for name in self.columns if cols is None else cols:
                positions, items = by_column.setdefault(name, ([], []))
                positions.append(pos)
                items.append(row[name])
        self.patched_rows += len(values)
        pd = self._pd
        data = dict(self._columns_of(frame))
        # A shallow copy, so that pandas knows the unchanged columns are shared (and
        # copies them before anyone writes to one frame or the other).
        new = frame.copy(deep=False)
        for name, (positions, items) in by_column.items():
            array = data[name].copy()
            self._put(array, positions, items)
            data[name] = array
            new[name] = pd.Series(array, index=frame.index, copy=False,
                                  dtype=object if str(array.dtype) == "object" else None)
        self._arrays = (new, data)
        return new

    def _take(
        self, frame: DataFrame, src: Any, fresh: list[tuple[Row, set[str] | None]],
    ) -> DataFrame:
        import numpy as np

        is_fresh = src < 0
        positions = np.flatnonzero(is_fresh)
        rows = [fresh[-int(s) - 1] for s in src[positions]]
        for i, (row, cols) in enumerate(rows):
            if cols is not None:  # a set-in-place row whose other columns are still old
                rows[i] = (row, None)
        taken = np.where(is_fresh, 0, src) if len(positions) else src
        self.patched_rows += len(rows)
        data = {}
        dtypes = self.dtypes
        assert dtypes is not None
        old = self._columns_of(frame)
        for name in self.columns:
            if not len(frame):  # every row is new
                data[name] = self._array([row[name] for row, _ in rows], dtypes[name])
                continue
            array = old[name].take(taken)
            if len(positions):
                self._put(array, positions.tolist(), [row[name] for row, _ in rows])
            data[name] = array
        return self._frame(data, len(src))

    def _put(self, array: Any, positions: list[int], items: list[Any]) -> None:
        if len(positions) <= 16 or str(array.dtype) == "object":
            # One at a time: a list value must be stored, not broadcast, and pandas
            # validates a list index at length (a millisecond for a few rows).
            for pos, item in zip(positions, items, strict=True):
                if item is None and array.dtype == "float64":
                    item = float("nan")
                array[pos] = item
            return
        array[positions] = self._pd.array(items, dtype=array.dtype)


def _merge(
    inplace: dict[int, tuple[Row, set[str] | None]], pos: int, row: Row,
    cols: frozenset[str] | None,
) -> None:
    previous = inplace.get(pos)
    merged: set[str] | None
    if previous is None:
        merged = None if cols is None else set(cols)
    elif previous[1] is None or cols is None:
        merged = None
    else:
        merged = previous[1] | cols
    inplace[pos] = (row, merged)
