# Figures and tables from every result (runs, extraction, analysis, theory).


rule figures:
    """glocal figures: every expected figure as PNG and PDF -> results/figures/."""
    input:
        config=ancient(RESOLVED_CONFIG),
        runs=all_run_files(),
        extract=all_extract_files(),
        analysis=analysis_files(),
        theory=theory_files(),
        bench=bench_files(),
    output:
        png=figure_outputs("png"),
        pdf=figure_outputs("pdf"),
    params:
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.png[0])),
        out=lambda wildcards, output: os.path.dirname(output.png[0]),
        cfg=figures_key(),
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCH}/figures.tsv"
    conda:
        CONDA_ENV
    threads: res("figures", "threads")
    resources:
        mem_mb=res("figures", "mem_mb"),
        runtime=res("figures", "runtime"),
    shell:
        "glocal figures --config {input.config:q} --results {params.results:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule tables:
    """glocal tables: summary tables of all runs and of the theory checks -> results/tables/,
    plus results/README.md describing every result."""
    input:
        config=ancient(RESOLVED_CONFIG),
        runs=all_run_files(),
        analysis=analysis_files(),
        theory=theory_files(),
    output:
        summary_csv=report(
            f"{RESULTS}/tables/summary.csv",
            caption=caption("table_summary"),
            category="Tables",
            labels={"table": "summary"},
        ),
        summary_md=f"{RESULTS}/tables/summary.md",
        theory_md=f"{RESULTS}/tables/theory.md",
        theory_csv=f"{RESULTS}/tables/theory.csv",
        error_md=f"{RESULTS}/tables/error_vs_tau.md",
        budget_md=f"{RESULTS}/tables/budget.md",
        budget_csv=f"{RESULTS}/tables/budget.csv",
        readme=RESULTS_README,
    params:
        results=lambda wildcards, output: os.path.dirname(output.readme),
        out=lambda wildcards, output: os.path.dirname(output.summary_md),
        cfg=figures_key(),
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    conda:
        CONDA_ENV
    threads: res("figures", "threads")
    resources:
        mem_mb=res("figures", "mem_mb"),
        runtime=res("figures", "runtime"),
    shell:
        "glocal tables --config {input.config:q} --results {params.results:q} "
        "--out {params.out:q} > {log:q} 2>&1"
