# Training runs: every enabled task x strategy x seed.


rule train:
    """glocal train: one HPO run (task, strategy, seed) -> results/runs/{task}/{strategy}/seed{seed}/."""
    input:
        config=ancient(LATEST_CONFIG),
    output:
        summary=f"{RUN_DIR}/summary.json",
        metrics=f"{RUN_DIR}/metrics.csv",
        hypergrads=f"{RUN_DIR}/hypergrads.jsonl",
        config=f"{RUN_DIR}/config.json",
    wildcard_constraints:
        task=_regex([t for t in ALL_TASKS if t not in WEIGHT_TASKS]),
    params:
        out=lambda wildcards, output: os.path.dirname(output.summary),
        config=job_config,
        cfg=train_key,
    log:
        f"{LOGS}/train/{{task}}/{{strategy}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{task}}/{{strategy}}/seed{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=gpu_request,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal train --config {params.config:q} --task {wildcards.task} "
        "--strategy {wildcards.strategy} --seed {wildcards.seed} --out {params.out:q} "
        "> {log:q} 2>&1"


use rule train as train_weights with:
    output:
        summary=f"{RUN_DIR}/summary.json",
        metrics=f"{RUN_DIR}/metrics.csv",
        hypergrads=f"{RUN_DIR}/hypergrads.jsonl",
        config=f"{RUN_DIR}/config.json",
        weights=f"{RUN_DIR}/weights.csv",
    wildcard_constraints:
        task=_regex(WEIGHT_TASKS),
