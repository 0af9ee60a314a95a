"""Copy the pipeline's tables into a Markdown document, so that its numbers are the regenerated ones.

A block in the document

    <!-- table: results/tables/summary.md -->
    ... (replaced) ...
    <!-- /table -->

is replaced by the named file's content, its headings demoted by ``--demote`` levels (default 2: a
table's "# Title" becomes "### Title"). The prose around the blocks is the author's: rerun this
after ``snakemake``, then reread the sentences that quote numbers.

    python scripts/splice_tables.py docs/results.md            # rewrite in place
    python scripts/splice_tables.py docs/results.md --check    # exit 1 if a block is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- table: (?P<path>[^ ]+?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def splice(text: str, root: Path, demote: int = 2) -> str:
    """``text`` with every table block refilled from its file (relative to ``root``)."""

    def fill(m: re.Match) -> str:
        path = root / m["path"]
        if not path.is_file():
            raise FileNotFoundError(f"{m['path']}: no such table (run snakemake first)")
        body = path.read_text()
        body = re.sub(r"^(#+) ", lambda h: "#" * min(6, len(h[1]) + demote) + " ", body, flags=re.M)
        return m[1] + body.rstrip("\n") + "\n" + m[4]

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("document", type=Path, help="Markdown file with table blocks")
    p.add_argument("--root", type=Path, default=Path("."), help="directory the table paths are relative to")
    p.add_argument("--demote", type=int, default=2, help="heading levels added to the tables' headings")
    p.add_argument("--check", action="store_true", help="only report whether a block is out of date")
    a = p.parse_args(argv)
    old = a.document.read_text()
    try:
        new = splice(old, a.root, a.demote)
    except FileNotFoundError as e:
        print(f"{a.document}: {e}", file=sys.stderr)
        return 2
    if a.check:
        print(f"{a.document}: " + ("up to date" if new == old else "tables out of date"))
        return int(new != old)
    if new != old:
        tmp = a.document.with_suffix(a.document.suffix + ".tmp")
        tmp.write_text(new)
        tmp.replace(a.document)
    print(f"{a.document}: {len(BLOCK.findall(new))} table block(s) " + ("updated" if new != old else "unchanged"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
