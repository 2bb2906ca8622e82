"""Tuning engine for the block-FP8 GEMM in kernels/, with no Snakemake in it.

  plan/     from a validated config to the sweep: shapes per TP size, points, result settings
  search/   search space, pruning, compile, the bench (how every time is taken), the staged search
  jobs/     one leaf job: GPU slots, the persistent worker, tuning a point into its TSV
  results/  TSV and JSON files, engine file naming, atomic writes, the per-shape manifest
  verify/   contenders, roofline, the verify table and its report
"""
