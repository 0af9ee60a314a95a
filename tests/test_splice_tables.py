"""scripts/splice_tables.py: docs quote the pipeline's tables, refilled from the files."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("splice_tables", ROOT / "scripts" / "splice_tables.py")
splice_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(splice_tables)


def test_blocks_are_refilled_with_demoted_headings_and_the_prose_kept(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.md").write_text("# Title\n\n## task `lr`\n\n| x |\n|---|\n| 1 |\n")
    (tmp_path / "t" / "b.md").write_text("| y |\n|---|\n| 2 |\n")
    doc = tmp_path / "doc.md"
    doc.write_text("intro 0.5\n<!-- table: t/a.md -->\nold numbers\n<!-- /table -->\nmiddle\n"
                   "<!-- table: t/b.md -->\n<!-- /table -->\nend\n")
    assert splice_tables.main([str(doc), "--root", str(tmp_path), "--check"]) == 1
    assert splice_tables.main([str(doc), "--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert text == ("intro 0.5\n<!-- table: t/a.md -->\n### Title\n\n#### task `lr`\n\n| x |\n|---|\n| 1 |\n"
                    "<!-- /table -->\nmiddle\n<!-- table: t/b.md -->\n| y |\n|---|\n| 2 |\n<!-- /table -->\nend\n")
    assert splice_tables.main([str(doc), "--root", str(tmp_path), "--check"]) == 0
    (tmp_path / "t" / "b.md").write_text("| y |\n|---|\n| 3 |\n")  # a rerun changed a number
    assert splice_tables.main([str(doc), "--root", str(tmp_path), "--check"]) == 1


def test_a_missing_table_is_named(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- table: results/tables/nope.md -->\n<!-- /table -->\n")
    assert splice_tables.main([str(doc), "--root", str(tmp_path)]) == 2
    assert "results/tables/nope.md" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="nope.md"):
        splice_tables.splice(doc.read_text(), tmp_path)
