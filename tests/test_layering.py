"""The layering SPEC.md asks for: kernels know no graphs, passes know no kernels (only ops and numerics),
and the package works where Triton is not installed (every op then runs its PyTorch reference)."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import mamba_qpass

PACKAGE = Path(mamba_qpass.__file__).parent
# The two modules that bind ops to their implementations; every other module reaches a kernel through an op.
KERNEL_BINDERS = {"ops.py", "cuda_kernels.py"}


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _outside_kernels() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "kernels" not in p.relative_to(PACKAGE).parts]


def test_only_the_op_bindings_import_kernels_or_triton():
    offenders = {}
    for path in _outside_kernels():
        if path.name in KERNEL_BINDERS:
            continue
        bad = {m for m in _imported_modules(path) if m.startswith(("mamba_qpass.kernels", "triton"))}
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not offenders, f"reach kernels through mamba_qpass.ops, int8 rules through mamba_qpass.numerics: {offenders}"
    assert "triton" not in {m.split(".")[0] for m in _imported_modules(PACKAGE / "ops.py")}


def test_kernels_know_no_graphs():
    for path in (PACKAGE / "kernels").rglob("*.py"):
        imported = _imported_modules(path)
        assert not {m for m in imported if m.startswith("mamba_qpass.") and not m.startswith(
            ("mamba_qpass.kernels", "mamba_qpass.numerics"))}, path
        assert "torch.fx" not in imported, path


HIDE_TRITON = """
import sys

class HideTriton:
    # What Python sees where triton is not installed.
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideTriton())
try:
    import triton  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the blocker did not hide triton")
"""

WITHOUT_TRITON = HIDE_TRITON + """
import torch
import mamba_qpass as qpass
from models import random_mamba

assert not [m for m in sys.modules if m.split(".")[0] == "triton"], "something imported triton"
model = random_mamba(num_hidden_layers=1)
g = torch.Generator().manual_seed(0)
batches = [torch.randint(0, 97, (2, 16), generator=g) for _ in range(2)]
qmodel = qpass.apply(model, mode="w8a8", calibration=batches, progress=False)
logits = qmodel(batches[0]).logits
assert logits.shape == (2, 16, 97) and torch.isfinite(logits).all()
print("ran w8a8 without triton")
"""


def test_import_and_run_w8a8_without_triton():
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WITHOUT_TRITON)],
        cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ran w8a8 without triton" in result.stdout
