"""One leaf job on one GPU slot: slot locks, the persistent worker, tuning a point into its TSV."""
