"""Go's text/tabwriter, as `oc` uses it: `describe` pads with tabs, tables with spaces.

oc's output is compared byte for byte, so the column rules are Go's, not a look-alike.
"""

from __future__ import annotations

from dataclasses import dataclass


def tabwrite(
    text: str, *, minwidth: int = 0, tabwidth: int = 8, padding: int = 1, padchar: str = "\t"
) -> str:
    """Align tab-separated cells as Go's text/tabwriter does (no flags).

    A column is a run of consecutive lines that all have a tab-terminated cell at that
    index; the last cell of a line is never padded. With padchar "\\t" the padding is made
    of tabs, cell widths rounded up to `tabwidth`, exactly as `oc describe` prints.
    """
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    cfg = _TabConfig(minwidth, tabwidth, padding, padchar)
    _format_block(lines, [], 0, len(lines), cfg, out)
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class _TabConfig:
    minwidth: int
    tabwidth: int
    padding: int
    padchar: str


def _format_block(
    lines: list[list[str]],
    widths: list[int],
    line0: int,
    line1: int,
    cfg: _TabConfig,
    out: list[str],
) -> None:
    column = len(widths)
    this = line0
    while this < line1:
        if column >= len(lines[this]) - 1:
            this += 1
            continue
        _write_lines(lines, widths, line0, this, cfg, out)
        line0 = this
        width = cfg.minwidth
        while this < line1 and column < len(lines[this]) - 1:
            width = max(width, len(lines[this][column]) + cfg.padding)
            this += 1
        _format_block(lines, [*widths, width], line0, this, cfg, out)
        line0 = this
    _write_lines(lines, widths, line0, line1, cfg, out)


def _write_lines(
    lines: list[list[str]],
    widths: list[int],
    line0: int,
    line1: int,
    cfg: _TabConfig,
    out: list[str],
) -> None:
    for cells in lines[line0:line1]:
        text = []
        for j, cell in enumerate(cells):
            text.append(cell)
            if j < len(widths):
                text.append(_padding(len(cell), widths[j], cfg))
        out.append("".join(text))


def _padding(text_width: int, cell_width: int, cfg: _TabConfig) -> str:
    if cfg.padchar == "\t":
        cell_width = -(-cell_width // cfg.tabwidth) * cfg.tabwidth
        return "\t" * -(-(cell_width - text_width) // cfg.tabwidth)
    return cfg.padchar * (cell_width - text_width)
