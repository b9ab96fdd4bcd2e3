"""Examples: the notebook is valid and its code compiles against today's API (it needs a
platform account to run; the offline examples run in test_cli_run.py / test_deploy.py)."""

import ast
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_notebook_is_valid_and_compiles():
    nb = json.loads((EXAMPLES / "openeo_platform.ipynb").read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    names = set()
    for cell in code:
        src = "".join(line for line in cell["source"] if not line.lstrip().startswith("!"))
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s2sr"):
                module = __import__(node.module, fromlist=[a.name for a in node.names])
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name} does not exist"
                    names.add(alias.name)
    assert {"load_s2", "superresolve", "build_udp"} <= names
