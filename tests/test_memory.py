"""The UDF's activations on transparent huge pages: set up before torch loads, as a backend runs
the UDF text in a fresh worker, and an admin's own setting wins."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

# A worker as a backend starts it: the UDF text, which imports the engine (s2sr.engine) before
# anything imports torch, then 64 MB tensors made, filled and freed four times (what every layer
# of the net does with its activations); prints the page faults.
WORKER = """
import json, os, resource, sys
from openeo.udf.run_code import load_module_from_string
from s2sr.udf import udf_source
assert "torch" not in sys.modules
load_module_from_string(udf_source())["_engine"]()
assert "torch" not in sys.modules
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.empty(16 * 2**20).fill_(1.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "env": os.environ.get("THP_MEM_ALLOC_ENABLE")}))
"""


def _faults(env_value):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = env_value
    out = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not THP_MODE.is_file() or "[never]" in THP_MODE.read_text(),
                    reason="no transparent huge pages on this kernel")
def test_udf_puts_activations_on_huge_pages():
    udf = _faults(None)
    admin_off = _faults("0")  # an admin's setting is kept: the 4 KB-page baseline
    assert udf["env"] == "1" and admin_off["env"] == "0"
    assert admin_off["faults"] > 4 * 16384 * 0.9  # 4 KB pages: one fault per page of 4 x 64 MB
    assert udf["faults"] < admin_off["faults"] / 4, (udf, admin_off)
