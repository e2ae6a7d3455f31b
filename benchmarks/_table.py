"""The fixed-width text tables the benchmarks print: every column as wide as its widest cell."""
from typing import Iterable, List, Optional, Sequence


def text_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: Optional[str] = None,
               gap: str = "  ") -> str:
    """``header`` and ``rows`` (cells already formatted, or anything ``str`` gives) as lines of aligned
    columns, each as wide as its widest cell, header included, so a long model or condition name widens its
    column instead of pushing the rest of its line out of line.

    Args:
        align: one letter per column, ``"l"`` (names) or ``"r"`` (numbers); default: the first column
            left-aligned, the others right-aligned.
        gap: what separates two columns.

    Raises:
        ValueError: a row's length or ``align``'s is not the header's.
    """
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"text_table: align must be one 'l' or 'r' per column ({len(header)}), got {align!r}")
    lines: List[List[str]] = [[str(c) for c in header]]
    for row in rows:
        lines.append([str(c) for c in row])
        if len(lines[-1]) != len(header):
            raise ValueError(f"text_table: a row of {len(lines[-1])} cells under a header of {len(header)}: "
                             f"{lines[-1]}")
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(gap.join(cell.ljust(w) if a == "l" else cell.rjust(w) for cell, w, a in zip(line, widths, align))
                     .rstrip() for line in lines)
