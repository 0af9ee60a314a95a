# Hypergradient extraction at fixed phi (per task) and its analysis across tasks.


rule extract:
    """glocal extract: exact h_{s->t} trajectories and glocal/local estimates -> results/extract/{task}/."""
    input:
        config=ancient(LATEST_CONFIG),
    output:
        trajectory=f"{EXTRACT_DIR}/trajectory.npz",
        estimates=f"{EXTRACT_DIR}/estimates.csv",
        spectra=f"{EXTRACT_DIR}/spectra.csv",
        meta=f"{EXTRACT_DIR}/meta.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output.meta),
        config=job_config,
        cfg=extract_key,
    log:
        f"{LOGS}/extract/{{task}}.log",
    benchmark:
        f"{BENCH}/extract/{{task}}.tsv"
    conda:
        CONDA_ENV
    threads: res("extract", "threads")
    resources:
        mem_mb=res("extract", "mem_mb"),
        runtime=res("extract", "runtime"),
        gpu=gpu_request,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal extract --config {params.config:q} --task {wildcards.task} --out {params.out:q} "
        "> {log:q} 2>&1"


rule analysis:
    """glocal analyze: error and cosine similarity vs tau over all extractions -> results/analysis/."""
    input:
        config=ancient(LATEST_CONFIG),
        extract=all_extract_files(),
    output:
        error_vs_tau=f"{RESULTS}/analysis/error_vs_tau.csv",
        summary=f"{RESULTS}/analysis/summary.md",
    params:
        dirs=[EXTRACT_DIR.format(task=t) for t in EXTRACT_TASKS],
        out=lambda wildcards, output: os.path.dirname(output.summary),
        config=job_config,
        cfg=analysis_key(),
    log:
        f"{LOGS}/analysis.log",
    benchmark:
        f"{BENCH}/analysis.tsv"
    conda:
        CONDA_ENV
    threads: res("analysis", "threads")
    resources:
        mem_mb=res("analysis", "mem_mb"),
        runtime=res("analysis", "runtime"),
    shell:
        "glocal analyze --config {params.config:q} --extract {params.dirs:q} --out {params.out:q} "
        "> {log:q} 2>&1"
