"""Rendering: a report document as one self-contained HTML page and as Markdown.

A report is a list of :class:`Section` holding :class:`Text`, :class:`Table` and
:class:`Image` blocks. The HTML embeds every PNG as a base64 ``data:`` URI and carries its
CSS inline: the file opens anywhere, offline, with no other file beside it. The Markdown
holds the same text and tables and links the images as ``figures/<name>.png``.

Display helpers (:func:`percent`, :func:`mean_std`, :func:`si`, ...) turn the numeric tables
of :mod:`tuner.report.tables` into text; a missing value is always ``n/a``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from trainables import numbers

NA = "n/a"


# ------------------------------------------------------------------------------- document
@dataclass
class Text:
    """A paragraph; ``kind`` ``note`` is shown muted, ``warning`` highlighted."""

    text: str
    kind: str = "p"


@dataclass
class Table:
    """A table of display strings; ``bold`` marks cells (same index, any subset of columns)."""

    frame: pd.DataFrame
    caption: str = ""
    bold: pd.DataFrame | None = None


@dataclass
class Image:
    """A PNG with a caption; ``name`` is its file name (without ``.png``) in Markdown."""

    png: bytes
    caption: str
    name: str


@dataclass
class Section:
    """A titled part of the report; ``level`` 2 or 3, ``anchor`` its HTML id."""

    title: str
    blocks: list[Any] = field(default_factory=list)
    level: int = 2
    anchor: str = ""

    def __post_init__(self) -> None:
        if not self.anchor:
            self.anchor = slug(self.title)

    def add(self, *blocks: Any) -> Section:
        """Append blocks; returns ``self``."""
        self.blocks.extend(blocks)
        return self


def slug(text: str) -> str:
    """An HTML id from a title."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


# -------------------------------------------------------------------------------- display
def missing(value: Any) -> bool:
    """Whether ``value`` is None, NA or NaN."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def percent(value: Any, digits: int = 2) -> str:
    """A fraction as percent without the sign: ``0.9143`` -> ``91.43``."""
    return NA if missing(value) else f"{100 * float(value):.{digits}f}"


def mean_std(mean: Any, std: Any, scale: float = 100, digits: int = 2) -> str:
    """``mean ± std`` (times ``scale``); only the mean where std is missing."""
    if missing(mean):
        return NA
    text = f"{scale * float(mean):.{digits}f}"
    return text if missing(std) else f"{text} ± {scale * float(std):.{digits}f}"


def signed(value: Any, digits: int = 2) -> str:
    """A difference with its sign: ``+2.10``."""
    return NA if missing(value) else f"{float(value):+.{digits}f}"


def si(value: Any) -> str:
    """Paper 2's style: ``2.2508M``, ``2.3818G``, ``98.71k`` (:func:`trainables.numbers.si`)."""
    return numbers.si(value, na=NA)


def seconds(mean: Any, std: Any = None) -> str:
    """Seconds as ``12.3`` or ``12.3 ± 0.4``."""
    if missing(mean):
        return NA
    return f"{float(mean):.1f}" + ("" if missing(std) else f" ± {float(std):.1f}")


def plain(value: Any) -> str:
    """Any cell: ``n/a`` when missing, ints without decimals, floats to 4 significant."""
    return numbers.number(value, na=NA)


# ----------------------------------------------------------------------------------- HTML
CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#1d2430;background:#fff;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7em;margin:.2em 0 .1em}h2{font-size:1.35em;margin-top:2.2em;
border-bottom:2px solid #d8dee8;padding-bottom:.2em}h3{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #d8dee8;padding:4px 9px;text-align:right;vertical-align:top}
th{background:#eef2f7;text-align:center}td:first-child,th:first-child{text-align:left}
td.text{text-align:left}tbody tr:nth-child(even){background:#f8fafc}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0;color:#334}
strong{color:#0b4f9c}figure{margin:1em 0 1.6em}figure img{max-width:100%;
border:1px solid #e3e7ee}figcaption{font-size:.85em;color:#556;margin-top:.3em}
p.note{color:#5a6473;font-size:.9em}p.warning{background:#fff4e0;border-left:4px solid
#f0a020;padding:6px 10px}nav{background:#f5f7fa;padding:8px 14px;border-radius:6px;
font-size:.9em}nav a{margin-right:1em;color:#0b4f9c;text-decoration:none}
.subtitle{color:#556}code{background:#f1f3f6;padding:1px 4px;border-radius:3px}
"""


def _numeric_column(values: pd.Series) -> bool:
    """Whether every cell of a column reads as a number (right-aligned) or is missing."""
    return all(re.match(r"^[+-]?[\d.]", str(v)) or str(v) in (NA, "—", "") for v in values)


def table_html(table: Table) -> str:
    """One ``<table>``; bold cells become ``<strong>``."""
    frame = table.frame
    parts = ["<table>"]
    if table.caption:
        parts.append(f"<caption>{html.escape(table.caption)}</caption>")
    parts.append(
        "<thead><tr>"
        + "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        + "</tr></thead><tbody>"
    )
    text_columns = {c for c in frame.columns if not _numeric_column(frame[c])}
    for idx, row in frame.iterrows():
        cells = []
        for col, value in row.items():
            text = html.escape(str(value))
            bold = (
                table.bold is not None
                and col in table.bold.columns
                and idx in table.bold.index
                and bool(table.bold.at[idx, col])
            )
            if bold:
                text = f"<strong>{text}</strong>"
            cls = ' class="text"' if col in text_columns else ""
            cells.append(f"<td{cls}>{text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _block_html(block: Any) -> str:
    if isinstance(block, Text):
        cls = f' class="{block.kind}"' if block.kind != "p" else ""
        return f"<p{cls}>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        return table_html(block)
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.name)}">'
            f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
        )
    if isinstance(block, Section):
        return _section_html(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _inline(text: str) -> str:
    """Escape text; ``code`` spans in backticks become ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _section_html(section: Section) -> str:
    tag = f"h{section.level}"
    body = "".join(_block_html(b) for b in section.blocks)
    title = html.escape(section.title)
    return f'<section id="{section.anchor}"><{tag}>{title}</{tag}>{body}</section>'


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page: title, a table of contents of the top sections, the sections."""
    nav = "".join(
        f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections if s.level == 2
    )
    body = "".join(_section_html(s) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{html.escape(title)}</h1><p class="subtitle">{_inline(subtitle)}</p>'
        f"<nav>{nav}</nav>{body}</main></body></html>\n"
    )


# ------------------------------------------------------------------------------- Markdown
def _md_cell(value: Any, bold: bool) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if bold and text else text


def table_markdown(table: Table) -> str:
    """A pipe table (bold cells as ``**x**``), preceded by its caption."""
    frame = table.frame
    lines = [f"*{table.caption}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_cell(c, False) for c in frame.columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in frame.columns) + "|")
    for idx, row in frame.iterrows():
        cells = [
            _md_cell(
                v,
                table.bold is not None
                and col in table.bold.columns
                and idx in table.bold.index
                and bool(table.bold.at[idx, col]),
            )
            for col, v in row.items()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _block_markdown(block: Any, figure_dir: str) -> str:
    if isinstance(block, Text):
        return f"> {block.text}" if block.kind in ("note", "warning") else block.text
    if isinstance(block, Table):
        return table_markdown(block)
    if isinstance(block, Image):
        return f"![{block.name}]({figure_dir}/{block.name}.png)\n\n*{block.caption}*"
    if isinstance(block, Section):
        return _section_markdown(block, figure_dir)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _section_markdown(section: Section, figure_dir: str) -> str:
    parts = ["#" * section.level + " " + section.title]
    parts += [_block_markdown(b, figure_dir) for b in section.blocks]
    return "\n\n".join(parts)


def render_markdown(
    title: str, subtitle: str, sections: list[Section], figure_dir: str = "figures"
) -> str:
    """The same report as Markdown; images link to ``<figure_dir>/<name>.png``."""
    parts = [f"# {title}", subtitle]
    parts += [_section_markdown(s, figure_dir) for s in sections]
    return "\n\n".join(parts) + "\n"


def images(sections: list[Section]) -> list[Image]:
    """Every image of the report, in order (to write them for the Markdown)."""
    found: list[Image] = []

    def walk(blocks: list[Any]) -> None:
        for b in blocks:
            if isinstance(b, Image):
                found.append(b)
            elif isinstance(b, Section):
                walk(b.blocks)

    walk(sections)
    return found


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
