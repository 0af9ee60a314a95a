# Figures and tables from every result (runs, extraction, analysis, theory, cost benchmark).
# They read the runs listed in the per-task run indexes, i.e. exactly the runs this config asks
# for (never a run left under results/runs by another config); the indexes also keep the
# input lists of these jobs, and so the Snakemake log, short.


rule runs_index:
    """The runs of one task that the config asks for (strategies x seeds) -> results/runs/{task}/index.json."""
    input:
        lambda wildcards: [f"{RESULTS}/runs/{wildcards.task}/{r}/summary.json" for r in indexed_runs(wildcards).split()],
    output:
        RUN_INDEX,
    params:
        runs=indexed_runs,
    message:
        "rule runs_index: the {wildcards.task} runs of this config -> {output}"
    log:
        f"{LOGS}/runs_index/{{task}}.log",
    localrule: True
    run:
        write_run_index(output[0], wildcards.task, params.runs, log[0])


rule figures:
    """glocal figures: every expected figure as PNG and PDF -> results/figures/."""
    input:
        config=ancient(RESOLVED_CONFIG),
        runs=run_index_files(),
        extract=all_extract_files(),
        analysis=analysis_files(),
        theory=theory_files(),
        bench=bench_files(),
        ablation=ablation_files(),
        ablation_hpo=ablation_hpo_files(),
        sensitivity=sensitivity_files(),
        nqm=nqm_figure_files(),
    output:
        png=figure_outputs("png"),
        pdf=figure_outputs("pdf"),
    params:
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.png[0])),
        out=lambda wildcards, output: os.path.dirname(output.png[0]),
        **report_params(),
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
        "glocal figures --config {input.config:q} --results {params.results:q} --runs {input.runs:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule tables:
    """glocal tables: summary tables of the runs, the theory checks, the extraction and the equal-budget
    comparison -> results/tables/, plus results/README.md describing every result."""
    input:
        config=ancient(RESOLVED_CONFIG),
        runs=run_index_files(),
        analysis=analysis_files(),
        theory=theory_files(),
        ablation=ablation_files(),
        ablation_hpo=ablation_hpo_files(),
        sensitivity=sensitivity_files(),
    output:
        **table_outputs(),
        readme=RESULTS_README,
    params:
        results=lambda wildcards, output: os.path.dirname(output.readme),
        out=lambda wildcards, output: os.path.dirname(output.summary_md),
        **report_params(),
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
        "glocal tables --config {input.config:q} --results {params.results:q} --runs {input.runs:q} "
        "--out {params.out:q} > {log:q} 2>&1"
