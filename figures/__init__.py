"""Figures and tables of the reproduction, drawn from result files (``glocal figures``, ``glocal tables``).

One module per figure; each exposes a pure function ``plot_*(inputs..., out_stem) -> dict`` that reads
nothing but its arguments, writes ``out_stem``.png (300 dpi) and .pdf and returns the plotted data
(read back from the figure's lines before saving). ``figures.catalog`` lists every figure and table with
a one-line reading guide (the single source of ``docs/figures.md`` and ``results/README.md``).
"""
