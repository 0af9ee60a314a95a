# HTML report: `snakemake --report results/report.html` (after the workflow has run).
# Figures appear with the captions in workflow/report/<figure>.rst, grouped by category;
# the main page text is workflow/report/workflow.rst.


report: "../report/workflow.rst"
