"""The README's library example runs and shows what it claims: glocal closer to the global hypergradient than local."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_is_the_quickstart_script() -> None:
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n")[1].split("```")[0]
    assert code.strip() in (ROOT / "examples" / "quickstart.py").read_text()


def test_quickstart_runs_and_glocal_beats_local() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True,
                         check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}).stdout
    m = re.search(r"local ([0-9.]+)\s+glocal ([0-9.]+)\s+fallback=(\w+)", out)
    assert m, out
    local, glocal_err, fallback = float(m.group(1)), float(m.group(2)), m.group(3)
    assert fallback == "False"
    assert glocal_err < 0.6 * local
    readme = (ROOT / "README.md").read_text()
    assert f"local {local:.3f}  glocal {glocal_err:.3f}" in readme, "README quotes numbers the script no longer prints"
