"""The Markdown of our generated tables as a standalone HTML page, for the Snakemake report (which shows
HTML results in place but offers CSV files only as downloads). Only the subset ``glocal tables`` writes is
understood: ``#`` headings, pipe tables, paragraphs, inline ``code`` and **bold**."""

from __future__ import annotations

import html
import re

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 13px; color: #222;
       margin: 16px; line-height: 1.45; }
h1 { font-size: 20px; } h2 { font-size: 17px; margin-top: 22px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 14px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; white-space: nowrap; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
"""
_NUMERIC = re.compile(r"^[-+]?[\d.]+(e[-+]?\d+)?( ± [\d.e+-]+)?( \([\d.e+-]+\))?\*?$|^n/a$|^–$")


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str, title: str) -> str:
    """A standalone HTML page of ``md`` (headings, pipe tables, paragraphs)."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif line.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, rows = _cells(block[0]), [_cells(b) for b in block[1:] if not re.match(r"^\|[\s:|-]+\|?$", b)]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in head) + "</tr></thead><tbody>")
            for r in rows:
                tds = [('<td class="num">' if _NUMERIC.match(c) else "<td>") + _inline(c) + "</td>" for c in r]
                out.append("<tr>" + "".join(tds) + "</tr>")
            out.append("</tbody></table>")
            continue
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
