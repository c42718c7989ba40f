"""What a load read, dropped and returned (`LoadReport`), and the malformed-row error built from it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from ulma.data.files import DataError, at

MAX_REPORTED = 10  # bad rows listed in a report (all are counted)


class BadRow(NamedTuple):
    index: int  # source_index: position of the raw example within the split
    file_row: int  # its row in the source file, 0-based (differs from `index` for mini and red-team splits)
    reason: str  # "field 'chosen': ..." or "malformed pair: ..."
    line: int | None = None  # 1-based line in a JSON-lines file
    file: str | None = None  # the file, when a split is read from several (else the report's source)


@dataclass
class LoadReport:
    """What one `load` call read, dropped and returned."""

    name: str
    view: str
    split: str
    source: str  # the file read: relative to the repository when inside it, else as given, or a URL
    on_bad_row: str
    num_examples: int = 0  # raw examples in the split
    num_bad: int = 0  # malformed examples (raised on, or skipped)
    bad: list[BadRow] = field(default_factory=list)  # the first MAX_REPORTED of them
    bad_reasons: dict[str, int] = field(default_factory=dict)  # every malformed example's reason kind -> count
    num_empty_dropped: int = 0  # QA-feedback: empty corrected-predictions (no demonstration), not errors
    num_identical_dropped: int = 0  # QA-feedback pairwise: a preferred prediction equal to the other one
    num_rows: int = 0  # rows of the returned view

    def __str__(self) -> str:
        text = (
            f"{self.name} {self.split} ({self.source}): {self.num_examples} examples, {self.num_bad} malformed"
            f" ({self.on_bad_row}), {self.num_rows} {self.view} rows"
        )
        if self.num_empty_dropped:
            text += f", {self.num_empty_dropped} empty completions dropped"
        if self.num_identical_dropped:
            text += f", {self.num_identical_dropped} comparisons of identical predictions dropped"
        for b in self.bad:
            in_split = f" (split row {b.index})" if b.index != b.file_row else ""
            text += f"\n  {at(b.file or self.source, b.file_row, b.line, b.reason)}{in_split}"
        return text

    def bad_summary(self) -> str:
        """``"4 chosen: the final Assistant turn is empty; 9 chosen: turns do not alternate"``."""
        return "; ".join(f"{n} {kind}" for kind, n in sorted(self.bad_reasons.items(), key=lambda kv: -kv[1]))


class BadRowError(DataError):
    """A malformed raw example: file, 0-based row, field and reason, and how many more there are."""

    def __init__(self, report: LoadReport):
        first = report.bad[0]
        field_name = first.reason.split("'")[1] if first.reason.startswith("field '") else None
        super().__init__(
            f"{at(first.file or report.source, first.file_row, first.line, first.reason)} ({report.name} "
            f"{report.split} example {first.index}). {report.num_bad} of {report.num_examples} examples are "
            f"malformed; pass on_bad_row='skip' to drop them (ulma.data.last_report() lists them)",
            file=first.file or report.source, row=first.file_row, field=field_name,
        )
        self.index, self.reason, self.report = first.index, first.reason, report


_LAST_REPORT: LoadReport | None = None


def last_report() -> LoadReport | None:
    """The report of the most recent `load` call in this process (None before the first)."""
    return _LAST_REPORT


def set_last_report(report: LoadReport) -> None:
    global _LAST_REPORT
    _LAST_REPORT = report


def _reason_kind(reason: str) -> str:
    """The reason without row-specific details (turn numbers, values): what the warning counts."""
    head, _, rest = reason.partition(": ") if reason.startswith("field '") else ("", "", reason)
    kind = re.sub(r" \(turn \d+\)", "", rest if rest.startswith("malformed pair") else rest.split(": ")[0])
    return f"{head}: {kind}" if head else kind
