# Cost sweeps for the cost figure (seconds per hyperparameter update and per run against T, tau, q).


rule bench:
    """glocal bench: timings of plain training, the exact engines and one update per strategy -> results/bench/."""
    input:
        config=ancient(LATEST_CONFIG),
    output:
        cost=f"{RESULTS}/bench/cost.csv",
        bench=f"{RESULTS}/bench/bench.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output.cost),
        scale=config["bench"]["scale"],
        device=config["device"],
        cfg=bench_key(),
    log:
        f"{LOGS}/bench.log",
    benchmark:
        f"{BENCH}/bench.tsv"
    conda:
        CONDA_ENV
    threads: res("bench", "threads")
    resources:
        mem_mb=res("bench", "mem_mb"),
        runtime=res("bench", "runtime"),
        gpu=lambda wildcards: 1 if config["device"] == "cuda" else 0,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal bench --scale {params.scale} --device {params.device} --out {params.out:q} > {log:q} 2>&1"
