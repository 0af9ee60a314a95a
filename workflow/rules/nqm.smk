# The noisy quadratic model (tasks of kind nqm, docs/nqm.md): its answer key and short-horizon-bias curve,
# once per task (results/nqm/{task}/), and its training runs, which read the answer key and write the run's
# expected final loss against it into summary.json (section nqm).

rule nqm_key:
    """glocal nqm key: the optimum of the expected final loss over a constant learning rate and over a
    schedule (the NQM task's answer key) -> results/nqm/{task}/answer_key.json."""
    input:
        config=ancient(LATEST_CONFIG),
    output:
        key=NQM_KEY,
    wildcard_constraints:
        task=_regex(NQM_TASKS),
    params:
        config=job_config,
        cfg=nqm_key_key,
    log:
        f"{LOGS}/nqm/{{task}}/answer_key.log",
    benchmark:
        f"{BENCH}/nqm/{{task}}/answer_key.tsv"
    conda:
        CONDA_ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal nqm key --config {params.config:q} --task {wildcards.task} --out {output.key:q} > {log:q} 2>&1"


rule nqm_bias:
    """glocal nqm bias: the learning rate that tuning over a horizon tau selects, against the long-horizon
    optimum -> results/nqm/{task}/short_horizon_bias.json and .csv."""
    input:
        config=ancient(LATEST_CONFIG),
    output:
        json=f"{NQM_BIAS}.json",
        csv=f"{NQM_BIAS}.csv",
    wildcard_constraints:
        task=_regex(NQM_TASKS),
    params:
        config=job_config,
        cfg=nqm_bias_key,
    log:
        f"{LOGS}/nqm/{{task}}/short_horizon_bias.log",
    benchmark:
        f"{BENCH}/nqm/{{task}}/short_horizon_bias.tsv"
    conda:
        CONDA_ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal nqm bias --config {params.config:q} --task {wildcards.task} --out {output.json:q} > {log:q} 2>&1"


# A run of an NQM task is the train rule's run plus the task's answer key. The key is an ancient() input: it
# changes only with the task's problem, which reruns the runs through their cfg param anyway.
rule train_nqm:
    """glocal train for a task of kind nqm, with its answer key -> results/runs/{task}/{strategy}/seed{seed}/."""
    input:
        config=ancient(LATEST_CONFIG),
        key=ancient(NQM_KEY),
    output:
        summary=f"{RUN_DIR}/summary.json",
        metrics=f"{RUN_DIR}/metrics.csv",
        hypergrads=f"{RUN_DIR}/hypergrads.jsonl",
        config=f"{RUN_DIR}/config.json",
    wildcard_constraints:
        task=_regex(NQM_TASKS),
    params:
        out=lambda wildcards, output: os.path.dirname(output.summary),
        config=job_config,
        cfg=nqm_train_key,
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
        "--answer-key {input.key:q} > {log:q} 2>&1"


ruleorder: train_nqm > train
