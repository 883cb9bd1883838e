"""A report as one self-contained HTML file: sections of text, tables and pictures, nothing fetched.

The page carries its own CSS (a print stylesheet too: no navigation, no table or picture split across
pages) and its pictures as ``data:`` URIs, runs no script and links only to its own sections, so it
reads the same offline, attached to an e-mail or printed to PDF. Every text is HTML-escaped.

What to say is built elsewhere (``volcam validate``: :mod:`volcam.workflows.validation_report`) from
these blocks; this module only lays them out::

    page = html_page("Validation", [Section("data", "Data", (Paragraph("30 cases"), table))])
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Bullets",
    "Facts",
    "Number",
    "Paragraph",
    "Picture",
    "Section",
    "Table",
    "compact_picture",
    "data_uri",
    "html_page",
]


@dataclass(frozen=True)
class Number:
    """A table cell that shows numbers: ``text`` as shown, ``values`` the full-precision numbers behind it
    (``{"value": 0.41, "low": 0.35, "high": 0.47}``), kept in the cell's ``data-*`` attributes so a reader
    (or a test) can check the page against the CSV tables; ``ref`` (``data-ref``) says which row they are."""

    text: str
    values: Mapping[str, float] = field(default_factory=dict)
    ref: str = ""


Cell = str | Number


@dataclass(frozen=True)
class Table:
    """A table: header, rows of cells (text or :class:`Number`), a caption; ``name`` (``data-table``)
    names the CSV table it shows."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""
    name: str = ""


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = ""  # a CSS class: "note", "warning"


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


@dataclass(frozen=True)
class Facts:
    """Term → description pairs (a ``<dl>``): a model card, the run's settings."""

    pairs: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Picture:
    """An image embedded in the page: encoded bytes (``mime``: image/png, image/jpeg) and a caption."""

    data: bytes
    caption: str
    mime: str = "image/jpeg"
    alt: str = ""


Block = Paragraph | Bullets | Facts | Table | Picture


@dataclass(frozen=True)
class Section:
    """A titled section; ``anchor`` is its id (the contents link to it)."""

    anchor: str
    title: str
    blocks: Sequence[Block]


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...``: bytes a page carries inside itself."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def compact_picture(path: str | os.PathLike, *, width: int = 900, quality: int = 82) -> bytes:
    """A PNG (a montage) as a JPEG at most ``width`` pixels wide: a tenth of the bytes in a page."""
    from PIL import Image

    with Image.open(Path(path)) as image:
        rgb = image.convert("RGB")
        if rgb.width > width:
            rgb = rgb.resize((width, round(rgb.height * width / rgb.width)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


_STYLE = """
:root { --ink: #1d2327; --muted: #5b6770; --rule: #d5dbe0; --accent: #1f5f8b; --warn: #8a4b00; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1100px; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.7rem; margin: 0 0 .2rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 2px solid var(--rule); }
.subtitle { color: var(--muted); margin: 0 0 1rem; }
nav { background: #f4f6f8; border: 1px solid var(--rule); border-radius: 6px; padding: .5rem 1rem; }
nav ol { margin: .2rem 0; padding-left: 1.2rem; columns: 2; }
a { color: var(--accent); }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: 13px; width: 100%; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .2rem 0; }
th, td { border-bottom: 1px solid var(--rule); padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f6f8; font-weight: 600; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .6rem 0 1rem; }
dt { font-weight: 600; color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
figure { margin: .8rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: 13px; }
p.note { color: var(--muted); font-size: 13px; }
p.warning { color: var(--warn); }
footer { margin-top: 3rem; color: var(--muted); font-size: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  nav { display: none; }
  a { color: inherit; text-decoration: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table, figure, dl { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  @page { margin: 15mm; }
}
"""


def html_page(title: str, sections: Sequence[Section], *, subtitle: str = "", footer: str = "") -> str:
    """The whole page: a title, the contents (links to the sections), the sections, a footer."""
    contents = "".join(f'<li><a href="#{_e(s.anchor)}">{_e(s.title)}</a></li>' for s in sections)
    body = "\n".join(_section(s) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'  # no favicon request: nothing is fetched
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1>{_subtitle(subtitle)}</header>\n"
        f'<nav aria-label="contents"><strong>Contents</strong><ol>{contents}</ol></nav>\n<main>\n{body}\n</main>\n'
        + (f"<footer>{_e(footer)}</footer>\n" if footer else "")
        + "</body>\n</html>\n"
    )


def _subtitle(text: str) -> str:
    return f'<p class="subtitle">{_e(text)}</p>' if text else ""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _section(section: Section) -> str:
    blocks = "\n".join(_block(b) for b in section.blocks)
    return f'<section id="{_e(section.anchor)}">\n<h2>{_e(section.title)}</h2>\n{blocks}\n</section>'


def _block(block: Block) -> str:
    if isinstance(block, Paragraph):
        kind = f' class="{_e(block.kind)}"' if block.kind else ""
        return f"<p{kind}>{_e(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Facts):
        return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in block.pairs) + "</dl>"
    if isinstance(block, Table):
        return _table(block)
    uri = data_uri(block.data, block.mime)
    alt = _e(block.alt or block.caption)
    return f'<figure><img src="{uri}" alt="{alt}"><figcaption>{_e(block.caption)}</figcaption></figure>'


def _table(table: Table) -> str:
    name = f' data-table="{_e(table.name)}"' if table.name else ""
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
    head = "<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in table.columns) + "</tr></thead>"
    rows = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    return f"<table{name}>{caption}{head}<tbody>{rows}</tbody></table>"


def _cell(cell: Cell) -> str:
    if isinstance(cell, Number):
        data = "".join(f' data-{_e(k)}="{_number(v)}"' for k, v in cell.values.items())
        data += f' data-ref="{_e(cell.ref)}"' if cell.ref else ""
        return f'<td class="number"{data}>{_e(cell.text)}</td>'
    return f"<td>{_e(cell)}</td>"


def _number(value: float) -> str:
    """A number as an attribute: Python's shortest round-trip text (``repr``); ``nan`` for a missing one."""
    value = float(value)
    return "nan" if math.isnan(value) else repr(value)
