"""Speed and memory benchmarks of glocal's hypergradient engines and strategies (``glocal bench``).

See :mod:`benchmarks.run` and ``benchmarks/README.md``. The peers (``higher``, ``torchopt``) are
an optional extra: ``pip install -e ".[bench]"``.
"""
