"""What happened to one candidate config at one point (a TSV's `status` column)."""

OK = "ok"                              # ran, numbers right, timed
OUT_OF_RESOURCES = "out_of_resources"  # needs more shared memory than the GPU has
COMPILE_ERROR = "compile_error"        # Triton could not build it
WRONG_RESULT = "wrong_result"          # ran, output differs from the float32 reference
LAUNCH_ERROR = "launch_error"          # built, but failed when launched
STATUSES = (OK, OUT_OF_RESOURCES, COMPILE_ERROR, WRONG_RESULT, LAUNCH_ERROR)
PRUNED = "pruned"                      # not run: same program order as another config at this M
STATUSES = (*STATUSES, PRUNED)
