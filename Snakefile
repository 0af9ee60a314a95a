# glocal: Glocal Hypergradient Estimation with Koopman Operator -- reproduction pipeline.
#
#   snakemake --cores all                                  # default experiment (config.yaml)
#   snakemake --cores 2 --configfile configs/smoke.yaml    # tiny end-to-end run
#   snakemake --profile profiles/slurm                     # on a SLURM cluster
#   snakemake --report results/report.html                 # HTML report with every figure
#
# The rules call the `glocal` command line; see docs/workflow.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


# Fails before any job starts, naming the offending key; fills in the schema's defaults.
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/figures_common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/nqm.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
