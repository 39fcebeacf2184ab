"""HTML pieces of the report: one self-contained page (inline CSS, images as base64 data: URIs,
no script, no external URL), so it can be mailed or opened offline."""
from __future__ import annotations

import base64
import html
import re

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1280px;
       padding: 0 16px; color: #1b1f23; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 4px; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 36px; }
h3 { font-size: 1.05em; margin: 18px 0 6px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; white-space: normal; vertical-align: bottom; } td:first-child, th:first-child { text-align: left; }
tr.picked td { background: #e6f4ea; font-weight: 600; } tr.tied td { background: #f3f9f4; }
tr.ensemble td:first-child { font-style: italic; }
table.meta td, table.meta th { text-align: left; white-space: normal; }
table.meta td:first-child { white-space: nowrap; }
.scroll { overflow-x: auto; } .note { color: #57606a; font-size: 13px; } .small { font-size: 12px; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; } figure { margin: 0; }
.cm img { width: 400px; }
figcaption { font-size: 12px; color: #57606a; max-width: 760px; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
nav a { margin-right: 12px; } code { background: #f6f8fa; padding: 1px 4px; border-radius: 3px; }
"""


class Html(str):
    """A table cell that is already HTML (e.g. a link built by `link`): put in as is, not escaped."""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def cell(value) -> str:
    return value if isinstance(value, Html) else esc(value)


def link(href: str, text: str) -> Html:
    """A link to a relative path (a run's card or folder beside the page): no scheme, nothing fetched."""
    return Html(f'<a href="{esc(href)}">{esc(" ".join(str(text).split()))}</a>')  # a name with a line break: one line


def png_img(data: bytes, alt: str, cls: str = "") -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    attr = f' class="{esc(cls)}"' if cls else ""
    return f'<img{attr} alt="{esc(alt)}" src="{uri}">'


def figure(data: bytes, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{png_img(data, alt)}{cap}</figure>"


def download_link(data: bytes, filename: str, mime: str, text: str) -> str:
    uri = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    return f'<a download="{esc(filename)}" href="{uri}">{esc(text)}</a>'


def table(header: list[str] | None, rows: list[list], row_classes: list[str] | None = None, cls: str = "") -> str:
    """A table of escaped cells, Html ones as they are (header None: no header row; row_classes: a CSS
    class per row)."""
    head = "" if header is None else "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>"
    body = []
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes and row_classes[i] else ""
        cells = "".join(f"<td>{cell(c)}</td>" for c in row)
        attr = f' class="{esc(rc)}"' if rc else ""
        body.append(f"<tr{attr}>{cells}</tr>")
    attr = f' class="{esc(cls)}"' if cls else ""
    return (f'<div class="scroll"><table{attr}>{head}'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def parse_markdown_table(md: str) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, the text after the table) of a pipe table as `leaderboard_markdown` writes it."""
    lines = md.splitlines()
    pipe = [i for i, line in enumerate(lines) if line.startswith("|")]
    if not pipe:
        return [], [], md.strip()

    def cells(line: str) -> list[str]:  # a `|` inside a cell is escaped as `\|` (compare.markdown_cell)
        inner = line.strip().removeprefix("|").removesuffix("|")
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]

    header = cells(lines[pipe[0]])
    rows = [cells(lines[i]) for i in pipe[2:]]  # pipe[1] is the |---| separator
    rest = "\n".join(lines[pipe[-1] + 1:]).strip()
    return header, rows, rest


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
