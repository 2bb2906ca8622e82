"""Block-FP8 W8A8 Triton GEMM (vLLM semantics), its reference, search space, timing and tuner.

Plain Python: no Snakemake in here. workflow/scripts/ are thin adapters onto it.
"""
