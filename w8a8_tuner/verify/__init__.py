"""Verification of tuned configs: contenders, roofline, the verify table and its report."""
