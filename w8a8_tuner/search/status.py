"""What happened to one candidate config at one point (a TSV's `status` column)."""

OK = "ok"                              # ran, numbers right, timed
OUT_OF_RESOURCES = "out_of_resources"  # needs more shared memory than the GPU has
COMPILE_ERROR = "compile_error"        # Triton could not build it
WRONG_RESULT = "wrong_result"          # ran, output differs from the float32 reference
LAUNCH_ERROR = "launch_error"          # built, but failed when launched
PRUNED = "pruned"                      # not run: same program order as another config at this M
STATUSES = (OK, OUT_OF_RESOURCES, COMPILE_ERROR, WRONG_RESULT, LAUNCH_ERROR, PRUNED)

# What counts as a wrong result: ||out - ref|| / ||ref|| above this, or any non-finite output.
# bf16 output rounding alone gives ~3e-3; a wrong tile or scale gives O(1).
MAX_RELATIVE_ERROR = 2e-2


def error_note(e: BaseException) -> str:
    """One short line for a TSV note: the exception's type and the first line of its message."""
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def launch_failure(e: BaseException) -> str:
    """Status of a config (or contender) whose launch raised `e`."""
    return OUT_OF_RESOURCES if "OutOfResources" in type(e).__name__ else LAUNCH_ERROR
