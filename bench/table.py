"""The report of the benchmarks: one row a figure, Carnet's next to the floor's, and its verdict against
the target (`python -m bench` and each part run alone print the same table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Row:
    benchmark: str
    unit: str
    carnet: float | None
    floor: float | None
    target: str
    ok: Callable[[float], bool]
    higher_is_better: bool = True

    @property
    def missed(self) -> bool:
        return self.carnet is not None and not self.ok(self.carnet)

    @property
    def floor_missed(self) -> bool:
        """The floor itself misses the target: no server doing more than the floor could meet
        it on this machine in this run (a slow phase of a VM, say)."""
        return self.floor is not None and self.target != "-" and not self.ok(self.floor)

    def cells(self) -> list[str]:
        c = "n/a" if self.carnet is None else f"{self.carnet:.2f}"
        f = "n/a" if self.floor is None else f"{self.floor:.2f}"
        if self.carnet is None or not self.floor:
            ratio = "n/a"
        elif self.higher_is_better:
            ratio = f"{self.carnet / self.floor:.2f} of floor"
        else:
            ratio = f"{self.carnet / self.floor:.1f}× floor"
        if self.carnet is None or self.target == "-":
            verdict = "n/a" if self.carnet is None else "-"
        else:
            verdict = "pass" if self.ok(self.carnet) else "MISSED"
        return [self.benchmark, f"{c} {self.unit}", f"{f} {self.unit}", ratio, self.target, verdict]


def print_table(rows: list[Row]) -> None:
    head = ["benchmark", "Carnet", "floor", "ratio", "target", "result"]
    table = [head] + [r.cells() for r in rows]
    widths = [max(len(line[k]) for line in table) for k in range(len(head))]
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_outcome(rows: list[Row], failures: list[str]) -> None:
    """MISSED for each figure that misses its target (saying so when the floor misses it too),
    FAILURE for each failure."""
    for r in rows:
        if r.missed:
            floor = f" (the floor misses it too: {r.floor:.2f} {r.unit})" if r.floor_missed else ""
            print(f"MISSED: {r.benchmark.strip()}{floor}")
    for f in failures:
        print(f"FAILURE: {f}")


def print_report(rows: list[Row], failures: list[str]) -> None:
    """What a part run alone prints: a blank line, the table, then its outcome."""
    print()
    print_table(rows)
    print_outcome(rows, failures)
