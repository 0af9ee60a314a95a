# Sensitivity to the starting point (docs/ablations.md; definitions: studies_common.smk): every strategy of
# sensitivity.strategies from each starting value of a task's hyperparameters (one job per task and start).


rule sensitivity:
    """glocal sensitivity: every strategy and seed from one starting point -> results/sensitivity/{task}/{start}/."""
    input:
        config=ancient(LATEST_CONFIG),
    output:
        index=f"{SENSITIVITY_DIR}/index.json",
    wildcard_constraints:
        start=_regex(sorted({s["start"] for s in SENSITIVITY_STARTS})),
    params:
        out=lambda wildcards, output: os.path.dirname(output.index),
        config=job_config,
        cfg=sensitivity_key,
    log:
        f"{LOGS}/sensitivity/{{task}}/{{start}}.log",
    benchmark:
        f"{BENCH}/sensitivity/{{task}}/{{start}}.tsv"
    conda:
        CONDA_ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=gpu_request,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal sensitivity --config {params.config:q} --task {wildcards.task} --start {wildcards.start} "
        "--out {params.out:q} > {log:q} 2>&1"
