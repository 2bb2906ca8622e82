"""Stand-in engines' launch record (tests only): each launch of a stand-in kernel is counted here and,
when FAKE_ENGINE_LOG names a file, appended to it as one line, so a test can tell that the engine's
function, not the builtin kernel, is the one a tune or a verify job launched."""

import os
from collections import Counter

LOG_ENV = "FAKE_ENGINE_LOG"
LAUNCHES: Counter = Counter()


def record(name: str) -> None:
    LAUNCHES[name] += 1
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{name}\n")


class RecordedKernel:
    """A Triton function behind the interface the tuner uses (`kernel[grid](*args, **config)` and
    `kernel.warmup(*args, grid=..., **config)`), recording every launch under `name`."""

    def __init__(self, kernel, name: str):
        self.kernel, self.name = kernel, name

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            record(self.name)
            return launch(*args, **kwargs)

        return run

    def warmup(self, *args, **kwargs):
        record(self.name)
        return self.kernel.warmup(*args, **kwargs)
