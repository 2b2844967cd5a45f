"""The day grid of `status --grid`, text and HTML: pure functions, no servers."""
import datetime as dt
import string
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflows.grid import DONE, FAILED, GAVE_UP, NOTHING, PARTIAL, UNPUBLISHED, Cell, html_grid, text_grid

SYMBOLS = {DONE: "#", PARTIAL: "~", FAILED: "!", GAVE_UP: "X", UNPUBLISHED: "?", NOTHING: "."}
STATES = list(SYMBOLS)
NETWORKS = ["ethereum", "bitcoin", "arbitrum"]
OCTOBER = [dt.date(2024, 10, 1) + dt.timedelta(days=i) for i in range(31)]
ROWS = {"raw_alerts": 1234, "raw_features": 56789, "raw_clusters": 12, "raw_address_labels": 1000000}
GAVE_UP_FAILURE = "LoadTable raw_features, attempt 3 of 3: ClickHouse refused the insert"
LONG_FAILURE = "LoadTable raw_alerts, attempt 1 of 3: " + "the checksum did not match " * 10
SCRIPT_FAILURE = 'DownloadSOT, attempt 2 of 3: <script>alert("x")</script> & more'

# the states of the prepared month, by network, a letter a day:
# D done, P partial, F failed, G gave up, U unpublished, N nothing (absent from the cells)
PLAN = {
    "ethereum": "DDDDDDDDDDPDDDDDGFDDDDDDDDDDUNN",
    "bitcoin": "DDDDPDDDDDDDDDDDFDDDDDDDDDDDUUU",
    "arbitrum": "NNFDDDDDDDDDDDDDDDDDDDDDDDDDPUN",
}
LETTERS = {"D": DONE, "P": PARTIAL, "F": FAILED, "G": GAVE_UP, "U": UNPUBLISHED, "N": NOTHING}
FAILURES = {("ethereum", 17): GAVE_UP_FAILURE, ("ethereum", 18): "LoadTable raw_clusters, attempt 1 of 3: timeout",
            ("bitcoin", 17): LONG_FAILURE, ("arbitrum", 3): SCRIPT_FAILURE}


def month_cells():
    """The prepared month: every state, missing days for NOTHING."""
    cells = {}
    for network, plan in PLAN.items():
        for date, letter in zip(OCTOBER, plan):
            state = LETTERS[letter]
            if state == NOTHING:
                continue
            rows = ROWS if state == DONE else {"raw_alerts": 1234} if state in (PARTIAL, FAILED, GAVE_UP) else {}
            cells[network, date] = Cell(state, dict(rows), FAILURES.get((network, date.day)))
    return cells


def expected_symbols(network):
    return "".join(SYMBOLS[LETTERS[letter]] for letter in PLAN[network])


def row_of(lines, network):
    """The grid row of network in the text's first block, without its name."""
    [line] = [line for line in lines if line.startswith(network + " ") and line[len(network):].startswith("  ")]
    return line


def column_of(lines, day):
    """The column of a day of month, read from the header's tens and units lines."""
    tens, units = lines[1], lines[2]
    found = [i for i, unit in enumerate(units)
             if unit.isdigit() and int((tens[i] if i < len(tens) else " ").replace(" ", "0") + unit) == day]
    assert len(found) == 1, (day, found)
    return found[0]


@pytest.fixture
def month_text():
    return text_grid(NETWORKS, OCTOBER, month_cells())


def test_every_row_holds_each_days_symbol_in_order(month_text):
    lines = month_text.splitlines()
    for network in NETWORKS:
        row = row_of(lines, network)
        assert row == f"{network:<8}  " + expected_symbols(network)


def test_the_column_of_day_17_holds_that_days_symbols(month_text):
    lines = month_text.splitlines()
    column = column_of(lines, 17)
    assert row_of(lines, "ethereum")[column] == "X"
    assert row_of(lines, "bitcoin")[column] == "!"
    assert row_of(lines, "arbitrum")[column] == "#"
    assert row_of(lines, "ethereum")[column_of(lines, 11)] == "~"
    assert row_of(lines, "ethereum")[column_of(lines, 29)] == "?"
    assert row_of(lines, "ethereum")[column_of(lines, 31)] == "."
    assert row_of(lines, "arbitrum")[column_of(lines, 1)] == "."


def test_the_header_names_the_month_over_the_first_day(month_text):
    lines = month_text.splitlines()
    assert lines[0].index("Oct 2024") == column_of(lines, 1)


def test_every_line_fits_100_columns(month_text):
    assert max(map(len, month_text.splitlines())) <= 100


def test_the_legend_gives_every_states_symbol_and_name(month_text):
    legend = [line for line in month_text.splitlines() if line.startswith(("# done", "X gave_up"))]
    assert len(legend) == 2
    for state, symbol in SYMBOLS.items():
        assert f"{symbol} {state}: " in "\n".join(legend)
    assert "operator must act" in legend[1]
    assert "retry" in legend[0]


def test_a_line_per_failed_or_given_up_day_with_its_failure(month_text):
    lines = month_text.splitlines()
    failures = [line for line in lines if line[:1].isalpha() and " 2024-10-" in line]
    assert failures == [
        f"ethereum 2024-10-17: {GAVE_UP_FAILURE}",
        "ethereum 2024-10-18: LoadTable raw_clusters, attempt 1 of 3: timeout",
        ("bitcoin 2024-10-17: " + LONG_FAILURE)[:99] + "…",
        f"arbitrum 2024-10-03: {SCRIPT_FAILURE}",
    ]
    assert len(failures[2]) == 100


def test_a_failure_without_text_or_on_many_lines_still_gives_one_line():
    day = OCTOBER[0]
    text = text_grid(["ethereum", "bitcoin"], [day], {("ethereum", day): Cell(FAILED),
                                                      ("bitcoin", day): Cell(GAVE_UP, failure="first\n  second")})
    assert text.splitlines()[-2:] == ["ethereum 2024-10-01: no failure recorded", "bitcoin 2024-10-01: first second"]


def test_90_days_wrap_into_blocks_within_100_columns_each_day_once():
    networks = ["ethereum", "bitcoin", "polygon-zk"]
    dates = [dt.date(2024, 9, 15) + dt.timedelta(days=i) for i in range(90)]
    states = {network: [STATES[(i * 7 + n) % 6] for i in range(90)] for n, network in enumerate(networks)}
    cells = {(network, date): Cell(state) for network in networks for date, state in zip(dates, states[network])}
    text = text_grid(networks, dates, cells)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    blocks = text.split("\n\n")[:-2]  # the legend and the failures follow the blocks
    assert len(blocks) == 2
    units, symbols = "", {network: "" for network in networks}
    for block in blocks:
        block_lines = block.splitlines()
        assert len(block_lines) == 3 + len(networks)
        units += block_lines[2].strip()
        for network in networks:
            symbols[network] += row_of(block_lines, network)[12:]
    assert units == "".join(str(date.day % 10) for date in dates)
    for network in networks:
        assert symbols[network] == "".join(SYMBOLS[state] for state in states[network])
    assert "Sep 2024" in blocks[0] and "Oct 2024" in blocks[0] and "Nov 2024" in blocks[0]
    assert "Dec 2024" in blocks[1]


def test_a_month_of_few_columns_is_named_short_to_leave_room_for_the_next():
    dates = [dt.date(2024, 9, 27) + dt.timedelta(days=i) for i in range(6)]
    lines = text_grid(["ethereum"], dates, {}).splitlines()
    assert lines[:3] == ["          Sep Oct 2024", "          2223", "          789012"]
    dates = [dt.date(2024, 9, 29) + dt.timedelta(days=i) for i in range(3)]
    assert text_grid(["ethereum"], dates, {}).splitlines()[0] == "          S Oct 2024"


def test_a_very_long_network_name_is_cut_to_leave_room_for_days():
    name = "n" * 60
    text = text_grid([name], OCTOBER, {})
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    [row] = [line for line in lines if line.startswith("n")]
    assert row == "n" * 29 + "…" + "  " + "." * 31


def test_an_unknown_state_is_refused():
    with pytest.raises(ValueError, match="unknown day state 'loaded'"):
        Cell("loaded")


class Cells(HTMLParser):
    """The page's grid cells, attributes unescaped, and every URL-bearing attribute."""

    def __init__(self):
        super().__init__()
        self.cells, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[name] for name in ("href", "src", "action", "srcset") if name in attrs]
        if tag == "td" and "cell" in attrs.get("class", "").split():
            self.cells.append(attrs)


def page_cells(page):
    parser = Cells()
    parser.feed(page)
    return parser


@pytest.fixture
def month_page():
    return html_grid(NETWORKS, OCTOBER, month_cells(), title="SOT loads <October> & co")


def test_the_page_refers_to_nothing_outside_itself(month_page):
    lowered = month_page.lower()
    for reference in ("http", "//", "url(", "@import", "<script", "<link", "src=", "href="):
        assert reference not in lowered
    assert page_cells(month_page).links == []
    assert "<style>" in month_page and ".gave_up { background:" in month_page


def test_the_page_escapes_every_text(month_page):
    assert "<script>" not in month_page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in month_page
    assert "<title>SOT loads &lt;October&gt; &amp; co</title>" in month_page
    page = html_grid(['<b>"net"'], OCTOBER[:1], {}, title="t")
    assert '<b>"net"' not in page
    assert page_cells(page).cells[0]["data-network"] == '<b>"net"'


def test_the_page_has_one_cell_per_network_and_day_with_its_state(month_page):
    cells = page_cells(month_page).cells
    assert len(cells) == len(NETWORKS) * len(OCTOBER)
    by_key = {(cell["data-network"], cell["data-date"]): cell for cell in cells}
    assert len(by_key) == len(cells)
    for network in NETWORKS:
        for date, letter in zip(OCTOBER, PLAN[network]):
            cell = by_key[network, date.isoformat()]
            assert cell["class"] == f"cell {LETTERS[letter]}"
            assert cell["title"].startswith(f"{date.isoformat()}: {LETTERS[letter]}, ")


def test_a_cells_tooltip_gives_rows_per_table_and_the_last_failure(month_page):
    by_key = {(cell["data-network"], cell["data-date"]): cell for cell in page_cells(month_page).cells}
    done = by_key["ethereum", "2024-10-01"]["title"].splitlines()
    assert done == ["2024-10-01: done, all four tables loaded and cleaned up", "raw_alerts: 1,234",
                    "raw_features: 56,789", "raw_clusters: 12", "raw_address_labels: 1,000,000"]
    gave_up = by_key["ethereum", "2024-10-17"]["title"].splitlines()
    assert gave_up[0] == "2024-10-17: gave_up, failed and out of attempts (luigid disabled it; an operator must act)"
    assert gave_up[1:] == ["raw_alerts: 1,234", f"last failure: {GAVE_UP_FAILURE}"]
    assert by_key["arbitrum", "2024-10-03"]["title"].endswith(f"last failure: {SCRIPT_FAILURE}")
    assert by_key["ethereum", "2024-10-31"]["title"] == "2024-10-31: nothing, nothing known about that day"


def test_the_page_shows_dates_and_a_legend_in_the_cells_colours(month_page):
    assert '<th colspan="31">Oct 2024</th>' in month_page
    assert '<th class="day" title="2024-10-17">17</th>' in month_page
    for state in STATES:
        assert f'<span class="swatch {state}">{SYMBOLS[state]}</span>{state}: ' in month_page
        assert f".{state} {{ background: #" in month_page


names = st.lists(st.text(string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=12),
                 min_size=1, max_size=5, unique=True)
failures = st.none() | st.text(string.printable, max_size=150)


@given(networks=names, start=st.dates(dt.date(2000, 1, 1), dt.date(2100, 1, 1)), days=st.integers(1, 120),
       data=st.data())
def test_any_grid_fits_100_columns_with_one_symbol_per_network_and_day(networks, start, days, data):
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    plan = {network: data.draw(st.lists(st.sampled_from(STATES), min_size=days, max_size=days))
            for network in networks}
    cells = {(network, date): Cell(state, failure=data.draw(failures))
             for network in networks for date, state in zip(dates, plan[network]) if state != NOTHING}
    text = text_grid(networks, dates, cells)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    grid = lines[:lines.index(next(line for line in lines if line.startswith("# done")))]
    prefixes = {network: f"{network:<{max(map(len, networks))}}  " for network in networks}
    symbols = {network: "" for network in networks}
    for line in grid:
        for network, prefix in prefixes.items():
            if line.startswith(prefix):
                symbols[network] += line[len(prefix):]
    assert sum(map(len, symbols.values())) == len(networks) * days
    assert all(symbol in SYMBOLS.values() for row in symbols.values() for symbol in row)
    for network in networks:
        assert symbols[network] == "".join(SYMBOLS[state] for state in plan[network])
    failed = sum(state in (FAILED, GAVE_UP) for states in plan.values() for state in states)
    assert len(lines) - len(grid) == 2 + (1 + failed if failed else 0)
