# Ablations of the glocal estimator on the extraction (docs/ablations.md; definitions: studies_common.smk):
# the extraction's exact trajectories of one task refitted with other settings (delay, POD rank, energy, rank rule,
# record stride, prefix length); no hypergradient is recomputed. The HPO ablation: glocal runs of one task with
# one option varied at a time (ablation.hpo; only when ablation.hpo.enabled is true).


rule ablation_extract:
    """glocal ablate extract: the saved trajectories of one task refitted per setting -> results/ablation/extract/{task}/."""
    input:
        config=ancient(LATEST_CONFIG),
        trajectory=f"{EXTRACT_DIR}/trajectory.npz",
        meta=f"{EXTRACT_DIR}/meta.json",
    output:
        csv=f"{ABLATION_EXTRACT_DIR}/ablation.csv",
        meta=f"{ABLATION_EXTRACT_DIR}/meta.json",
    params:
        extract=lambda wildcards, input: os.path.dirname(input.meta),
        out=lambda wildcards, output: os.path.dirname(output.csv),
        config=job_config,
        cfg=ablation_extract_key,
    log:
        f"{LOGS}/ablation_extract/{{task}}.log",
    benchmark:
        f"{BENCH}/ablation_extract/{{task}}.tsv"
    conda:
        CONDA_ENV
    threads: res("analysis", "threads")
    resources:
        mem_mb=res("analysis", "mem_mb"),
        runtime=res("analysis", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal ablate extract --config {params.config:q} --task {wildcards.task} --extract {params.extract:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule ablation_hpo:
    """glocal ablate hpo: the glocal runs of one axis of ablation.hpo (every value and seed) -> results/ablation/hpo/{axis}/."""
    input:
        config=ancient(LATEST_CONFIG),
    output:
        index=f"{ABLATION_HPO_DIR}/index.json",
    wildcard_constraints:
        axis=_regex(ABLATION_HPO_AXES),
    params:
        out=lambda wildcards, output: os.path.dirname(output.index),
        config=job_config,
        cfg=ablation_hpo_key,
    log:
        f"{LOGS}/ablation_hpo/{{axis}}.log",
    benchmark:
        f"{BENCH}/ablation_hpo/{{axis}}.tsv"
    conda:
        CONDA_ENV
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=gpu_request,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "glocal ablate hpo --config {params.config:q} --axis {wildcards.axis} --out {params.out:q} > {log:q} 2>&1"
