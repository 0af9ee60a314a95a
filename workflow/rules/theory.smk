# Theory checks on synthetic systems (bounds, spectra, complexity slopes).


rule theory:
    """glocal theory: numerical checks of the section-2 claims -> results/theory/checks.csv (+ data CSVs)."""
    input:
        config=ancient(LATEST_CONFIG),
    output:
        checks=f"{RESULTS}/theory/checks.csv",
    params:
        out=lambda wildcards, output: os.path.dirname(output.checks),
        config=job_config,
        cfg=theory_key(),
    log:
        f"{LOGS}/theory.log",
    benchmark:
        f"{BENCH}/theory.tsv"
    conda:
        CONDA_ENV
    threads: res("theory", "threads")
    resources:
        mem_mb=res("theory", "mem_mb"),
        runtime=res("theory", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal theory --config {params.config:q} --out {params.out:q} > {log:q} 2>&1"
