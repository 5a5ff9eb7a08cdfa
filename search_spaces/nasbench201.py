"""NAS-Bench-201 (Dong & Yang, ICLR 2020) as a search space whose evaluator is a table.

The cell has 4 nodes and 6 edges, each edge one of 5 ops. Decisions ``edge0``..``edge5``
follow the order of NAS-Bench-201's cell string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``:

    edge0: node1 <- node0
    edge1: node2 <- node0      edge2: node2 <- node1
    edge3: node3 <- node0      edge4: node3 <- node1      edge5: node3 <- node2

Every one of the 5**6 = 15,625 cells is its own entry in the benchmark (it does not merge
isomorphic cells), so every decision is always active and canonical form is the sample.
The space builds no network (``build``/``ops`` are not implemented): results come from
:class:`NasBench201Table` (``../shared/benchmarks/nasbench201/``; see its README).
No torch here, so benchmarks of search strategies stay light.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from .architecture import Architecture, ArchitectureError
from .base import SearchSpace
from .registry import register_space

#: The five ops, in the order of the benchmark's README (the first is each decision's default).
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (target node, source node) of edge0..edge5, in cell-string order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
DECISIONS = tuple(f"edge{i}" for i in range(len(EDGES)))
#: The columns a table must have.
COLUMNS = ("index", "cell", "cifar10_val", "cifar10_test")
METRIC_COLUMNS = ("cifar10_val", "cifar10_test")

DEFAULT_TABLE = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "nasbench201" / "nasbench201_cifar10.csv"


def cell_string(ops: tuple[str, ...] | list[str]) -> str:
    """``["a", "b", ...]`` (edge0..edge5) -> ``|a~0|+|b~0|c~1|+|d~0|e~1|f~2|``."""
    if len(ops) != len(EDGES):
        raise ArchitectureError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)} ops")
    nodes: list[list[str]] = [[] for _ in range(4)]
    for op, (dst, src) in zip(ops, EDGES):
        nodes[dst].append(f"{op}~{src}")
    return "+".join("|" + "|".join(node) + "|" for node in nodes[1:])


def parse_cell_string(cell: str) -> tuple[str, ...]:
    """Inverse of :func:`cell_string`; raises :class:`ArchitectureError` naming the problem."""
    nodes = cell.split("+")
    if len(nodes) != 3:
        raise ArchitectureError(f"cell {cell!r}: expected 3 '+'-separated nodes, got {len(nodes)}")
    ops: list[str] = []
    for dst, node in enumerate(nodes, start=1):
        items = node.strip("|").split("|")
        if len(items) != dst:
            raise ArchitectureError(f"cell {cell!r}: node {dst} needs {dst} inputs, got {len(items)}")
        for src, item in enumerate(items):
            op, _, tail = item.partition("~")
            if op not in OPS or tail != str(src):
                raise ArchitectureError(f"cell {cell!r}: bad edge {item!r} (expected 'op~{src}' with op in {list(OPS)})")
            ops.append(op)
    return tuple(ops)


class NasBench201Table:
    """The benchmark's accuracies by cell string. Load with :meth:`load`."""

    def __init__(self, path: Path, rows: dict[str, dict[str, float]], indices: dict[str, int]) -> None:
        self.path = path
        self._rows = rows
        self._indices = indices

    @classmethod
    def load(cls, path: str | Path) -> "NasBench201Table":
        """Read the CSV; errors name the file, and the line and column at fault."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"NAS-Bench-201 table not found at {path} (expected the CSV described in "
                f"shared/benchmarks/README.md, columns {list(COLUMNS)})")
        rows: dict[str, dict[str, float]] = {}
        indices: dict[str, int] = {}
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column {missing[0]!r} (header is {reader.fieldnames}; "
                                 f"needs {list(COLUMNS)})")
            for line, row in enumerate(reader, start=2):
                cell = row["cell"]
                try:
                    parse_cell_string(cell)
                except ArchitectureError as exc:
                    raise ValueError(f"{path}, line {line}, column 'cell': {exc}") from None
                if cell in rows:
                    raise ValueError(f"{path}, line {line}, column 'cell': duplicate cell {cell!r}")
                values = {}
                for column in METRIC_COLUMNS:
                    try:
                        values[column] = float(row[column])
                    except (TypeError, ValueError):
                        raise ValueError(f"{path}, line {line}, column {column!r}: not a number: {row[column]!r}") from None
                    if not math.isfinite(values[column]):
                        raise ValueError(f"{path}, line {line}, column {column!r}: not finite: {row[column]!r}")
                try:
                    indices[cell] = int(row["index"])
                except (TypeError, ValueError):
                    raise ValueError(f"{path}, line {line}, column 'index': not an integer: {row['index']!r}") from None
                rows[cell] = values
        if not rows:
            raise ValueError(f"{path}: no rows")
        return cls(path, rows, indices)

    def __len__(self) -> int:
        return len(self._rows)

    def cells(self) -> list[str]:
        return list(self._rows)

    def lookup_cell(self, cell: str) -> dict[str, float]:
        try:
            return dict(self._rows[cell])
        except KeyError:
            raise KeyError(f"cell {cell!r} is not in the NAS-Bench-201 table {self.path}") from None

    def lookup(self, arch: Architecture) -> dict[str, float]:
        """``{"cifar10_val": ..., "cifar10_test": ...}`` (accuracy in %) of ``arch``."""
        return self.lookup_cell(cell_string([arch.sample[d] for d in DECISIONS]))

    def index(self, arch: Architecture) -> int:
        """The architecture's index in NAS-Bench-201."""
        return self._indices[cell_string([arch.sample[d] for d in DECISIONS])]

    def best(self, column: str) -> float:
        if column not in METRIC_COLUMNS:
            raise ValueError(f"unknown column {column!r}; known: {list(METRIC_COLUMNS)}")
        return max(r[column] for r in self._rows.values())


_TABLES: dict[Path, NasBench201Table] = {}


@register_space("nasbench201")
class NasBench201Space(SearchSpace):
    """The NAS-Bench-201 cell space. Setting ``table``: path of the CSV (read lazily, on
    the first :meth:`lookup`; default ``<repo>/../shared/benchmarks/nasbench201/
    nasbench201_cifar10.csv``)."""

    def __init__(self, table: str | Path | None = None) -> None:
        self.table_path = Path(table) if table is not None else DEFAULT_TABLE

    def decisions(self) -> dict[str, list[Any]]:
        return {name: list(OPS) for name in DECISIONS}

    def settings(self) -> dict[str, Any]:
        return {"table": str(self.table_path)}

    def cell(self, arch: Architecture) -> str:
        self.validate(arch)
        return cell_string([arch.sample[d] for d in DECISIONS])

    def from_cell(self, cell: str) -> Architecture:
        return Architecture(self.name, dict(zip(DECISIONS, parse_cell_string(cell))))

    @property
    def table(self) -> NasBench201Table:
        """The loaded table, shared between spaces that name the same file."""
        key = self.table_path.resolve()
        if key not in _TABLES:
            _TABLES[key] = NasBench201Table.load(key)
        return _TABLES[key]

    def lookup(self, arch: Architecture) -> dict[str, float]:
        """``{"cifar10_val": ..., "cifar10_test": ...}`` of ``arch`` from the table."""
        self.validate(arch)
        return self.table.lookup(arch)
