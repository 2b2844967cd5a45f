"""The day grid of `python -m workflows status --grid`: networks as rows, days
as columns, one symbol per cell, so that an operator sees weeks of loads at a
glance and finds the days that need a hand. As text for a terminal (within
100 columns, so it survives a narrow terminal, a mail or a ticket) and as one
self-contained HTML page (inline CSS, no external URL: it is opened from
disk or an attachment, often off the network). Pure: the caller gathers the
cells."""
import datetime as dt
from dataclasses import dataclass, field
from html import escape
from itertools import groupby
from typing import NamedTuple

DONE, PARTIAL, FAILED, GAVE_UP, UNPUBLISHED, NOTHING = "done", "partial", "failed", "gave_up", "unpublished", "nothing"

WIDTH = 100  # no line of the text grid is longer
NAME_WIDTH = 30  # longer network names are cut, to leave the days room
GAP = "  "  # between names and days, and between legend entries


class _Style(NamedTuple):
    symbol: str  # the text grid's, plain ASCII
    brief: str  # the text legend's, short enough for its two lines
    meaning: str  # the HTML legend's and tooltips'
    colour: str  # the HTML cell's background


_STYLES = {
    DONE: _Style("#", "all loaded, cleaned up", "all four tables loaded and cleaned up", "#2e9d4a"),
    PARTIAL: _Style("~", "loading or partly loaded", "loading or partly loaded", "#f5c342"),
    FAILED: _Style("!", "luigid will retry", "failed, with attempts left (luigid will retry)", "#f08a24"),
    GAVE_UP: _Style("X", "out of attempts, operator must act",
                    "failed and out of attempts (luigid disabled it; an operator must act)", "#d62828"),
    UNPUBLISHED: _Style("?", "not in SOT yet", "the SOT has not published the snapshot yet", "#b4b4b4"),
    NOTHING: _Style(".", "unknown", "nothing known about that day", "#ffffff"),
}


@dataclass(frozen=True)
class Cell:
    """What is known of one network's day."""
    state: str
    rows: dict[str, int] = field(default_factory=dict)  # table name -> rows loaded that day
    failure: str | None = None  # the day's last failure, one line

    def __post_init__(self) -> None:
        if self.state not in _STYLES:
            raise ValueError(f"unknown day state {self.state!r}, not one of {', '.join(_STYLES)}")


_NOTHING = Cell(NOTHING)


def text_grid(networks: list[str], dates: list[dt.date], cells: dict[tuple[str, dt.date], Cell]) -> str:
    """The grid as text within WIDTH columns: blocks of as many days as fit,
    each under a header of month and day of month, then the legend, then one
    line per failed or given-up day with its last failure, so the operator
    sees why without another command. A (network, date) not in cells is
    NOTHING."""
    width = min(max(map(len, networks), default=1), NAME_WIDTH)
    names = [f"{_cut(network, width):<{width}}{GAP}" for network in networks]
    margin = " " * (width + len(GAP))
    days_per_block = WIDTH - len(margin)
    sections = []
    for start in range(0, len(dates), days_per_block):
        block = dates[start:start + days_per_block]
        header = [(margin + line).rstrip() for line in _day_header(block, days_per_block)]
        rows = [name + "".join(_STYLES[cells.get((network, date), _NOTHING).state].symbol for date in block)
                for name, network in zip(names, networks)]
        sections.append(header + rows)
    entries = [f"{style.symbol} {state}: {style.brief}" for state, style in _STYLES.items()]
    sections.append([GAP.join(entries[:3]), GAP.join(entries[3:])])
    failures = [_cut(f"{network} {date.isoformat()}: {_failure_line(cell)}", WIDTH)
                for network in networks for date in dates
                for cell in [cells.get((network, date), _NOTHING)] if cell.state in (FAILED, GAVE_UP)]
    if failures:
        sections.append(failures)
    return "\n\n".join("\n".join(section) for section in sections)


def _day_header(dates: list[dt.date], columns: int) -> list[str]:
    """Three lines over the days' columns, within columns: each month's
    name at its first column (shortened when the next month follows
    closely), then the tens and the units of the day of month."""
    months = [" "] * columns
    firsts = [i for i, date in enumerate(dates) if i == 0 or date.replace(day=1) != dates[i - 1].replace(day=1)]
    for first, after in zip(firsts, firsts[1:] + [columns + 1]):
        room = after - first - 1  # a space before the next month's name
        label = f"{dates[first]:%b %Y}"
        if len(label) > room:
            label = label[:min(3, room)]
        months[first:first + len(label)] = label
    tens = "".join(str(date.day // 10) if date.day >= 10 else " " for date in dates)
    units = "".join(str(date.day % 10) for date in dates)
    return ["".join(months), tens, units]


def _failure_line(cell: Cell) -> str:
    """The cell's failure on one line whatever it holds."""
    return " ".join((cell.failure or "no failure recorded").split())


def _cut(text: str, width: int) -> str:
    """text within width characters, ending in … when cut."""
    return text if len(text) <= width else text[:width - 1] + "…"


_CSS = """
body { font-family: sans-serif; margin: 1em; color: #222; }
table.grid { border-collapse: collapse; }
.grid th, .grid td { border: 1px solid #ccc; padding: 0; text-align: center; font-size: 12px; }
.grid th.network { text-align: left; padding: 0 0.5em; white-space: nowrap; }
.grid th.day { width: 1.8em; font-weight: normal; }
.grid td.cell { width: 1.8em; height: 1.8em; font-family: monospace; }
.legend { list-style: none; padding: 0; }
.legend li { margin: 0.2em 0; }
.legend .swatch { display: inline-block; width: 1.8em; text-align: center; border: 1px solid #ccc;
                  font-family: monospace; margin-right: 0.5em; }
"""


def html_grid(networks: list[str], dates: list[dt.date], cells: dict[tuple[str, dt.date], Cell], title: str) -> str:
    """The grid as one self-contained HTML page (inline CSS, no external URL):
    a cell per network and day coloured by its state, carrying the state as
    its class, data-network and data-date for a browser to find it, and a
    tooltip with the date, the state in words, the rows per table and the
    last failure. A (network, date) not in cells is NOTHING."""
    colours = "\n".join(f".{state} {{ background: {style.colour}; }}" for state, style in _STYLES.items())
    months = "".join(f'<th colspan="{len(list(days))}">{escape(f"{month:%b %Y}")}</th>'
                     for month, days in groupby(dates, key=lambda date: date.replace(day=1)))
    days = "".join(f'<th class="day" title="{escape(date.isoformat())}">{date.day}</th>' for date in dates)
    rows = "\n".join(f'<tr><th class="network" scope="row">{escape(network)}</th>'
                     + "".join(_html_cell(network, date, cells.get((network, date), _NOTHING)) for date in dates)
                     + "</tr>" for network in networks)
    legend = "\n".join(f'<li><span class="swatch {state}">{escape(style.symbol)}</span>'
                       f'{escape(state)}: {escape(style.meaning)}</li>' for state, style in _STYLES.items())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{_CSS}{colours}
</style>
</head>
<body>
<h1>{escape(title)}</h1>
<table class="grid">
<thead>
<tr><th></th>{months}</tr>
<tr><th class="network">network</th>{days}</tr>
</thead>
<tbody>
{rows}
</tbody>
</table>
<ul class="legend">
{legend}
</ul>
</body>
</html>
"""


def _html_cell(network: str, date: dt.date, cell: Cell) -> str:
    """One day's <td>, its tooltip in its title."""
    style = _STYLES[cell.state]
    tooltip = [f"{date.isoformat()}: {cell.state}, {style.meaning}"]
    tooltip += [f"{table}: {rows:,}" for table, rows in cell.rows.items()]
    if cell.failure:
        tooltip.append(f"last failure: {cell.failure}")
    title = "\n".join(tooltip)
    return (f'<td class="cell {cell.state}" data-network="{escape(network)}" data-date="{escape(date.isoformat())}"'
            f' title="{escape(title)}">{escape(style.symbol)}</td>')
