"""Bound launches (kernels.block_fp8.bind_block_fp8) pass Triton's compiled launcher exactly what Triton's own
dispatch passes, for the plain kernel, the Hopper kernel and the split-K reduction; on this CPU machine the
kernels are compiled for sm90 and every launch is recorded instead of run."""

import os
import subprocess
import sys

from conftest import REPO

SCRIPT = r'''
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
os.environ["TRITON_CACHE_DIR"] = sys.argv[1]
import torch
from triton.compiler.compiler import CompiledKernel
from w8a8_tuner.search.compile import use_offline_target
use_offline_target(90)
from kernels.block_fp8 import BUILTIN, bind_block_fp8, run_block_fp8
from kernels.reference import random_operands
from w8a8_tuner.search.space import Config

calls = []
def init(self):
    self._run = lambda *args: calls.append(args)
    self.function = f"function of {self.name}"
CompiledKernel._init_handles = init

def same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if a is b:
            return True
        # the split-K buffer is allocated per call: another tensor of the same kind each time
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.shape[0] in (2, 4, 8, 16) and a.dim() == 3)
    return a == b

ops = random_operands(3, 96, 320, (128, 128), input_type="fp8")
C = torch.empty(3, 96, dtype=torch.bfloat16)
B2, Bs2 = ops.B.clone(), ops.Bs.clone()
for config in (Config(16, 32, 64, 1, 4, 2), Config(16, 64, 128, 1, 4, 3, SWAP_AB=True),
               Config(16, 32, 64, 1, 4, 2, SPLIT_K=4), Config(16, 64, 64, 1, 4, 3, SWAP_AB=True, SPLIT_K=2)):
    entry = config.as_dict()
    for B, Bs in ((ops.B, ops.Bs), (B2, Bs2)):
        calls.clear()
        run_block_fp8(BUILTIN, ops.A, B, C, ops.As, Bs, (128, 128), entry)
        dispatched = list(calls)
        calls.clear()
        call = bind_block_fp8(BUILTIN, ops.A, ops.B, C, ops.As, ops.Bs, (128, 128), entry)
        assert call is not None, config
        call(B, Bs, C)
        bound = list(calls)
        assert len(bound) == len(dispatched) == (2 if config.SPLIT_K > 1 else 1), (config, len(bound))
        for d, b in zip(dispatched, bound):
            assert len(d) == len(b), (config, len(d), len(b))
            # grid, stream, function, packed metadata, then every kernel argument: the same
            bad = [i for i, (x, y) in enumerate(zip(d, b)) if i not in (6, 7, 8) and not same(x, y)]
            assert not bad, (config, bad, [(d[i], b[i]) for i in bad])
            # launch metadata and the enter/exit hooks: Triton's hook chains are empty (no call), the bound
            # launch passes none
            assert b[6:9] == (None, None, None) and not d[7].calls and not d[8].calls
        assert any(x is B for x in bound[0]) and any(x is Bs for x in bound[0])
        if config.SPLIT_K > 1:  # the reduction sums the very partials the Hopper kernel wrote, fresh each call
            parts = [[x for x in launch if isinstance(x, torch.Tensor) and x.dim() == 3] for launch in bound]
            assert len(parts[0]) == len(parts[1]) == 1 and parts[0][0] is parts[1][0], config
            calls.clear()
            call(B, Bs, C)
            assert not any(x is parts[0][0] for x in calls[0]), config
    print("ok", config.label())
'''


def test_bound_launches_pass_what_tritons_dispatch_passes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "cache")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("ok ") == 4
