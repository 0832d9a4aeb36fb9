"""The numpy side stays numpy: decoding, scoring, prediction folders, ensembles and the window search
import neither torch nor Ray (a subprocess, so that no other test's imports count)."""

from __future__ import annotations

import subprocess
import sys

import pytest

NUMPY_SIDE = [
    "astra.postprocess",
    "astra.evaluation",
    "astra.per_position",
    "astra.prediction",
    "astra.processes",
    "astra.submission",
    "astra.search.windows",
    "astra.search.space",
    "astra.data.dataset",
    "astra.ensemble.selection",
    "astra.ensemble.outputs",
    "astra.ensemble.build",
    "astra.ensemble.report",
    "astra.protocols.statistics",
    "astra.protocols.report",
]


@pytest.mark.parametrize("module", NUMPY_SIDE)
def test_importing_the_numpy_side_imports_neither_torch_nor_ray(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in ('torch', 'ray') if m in sys.modules); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"importing {module} imports {result.stdout.strip()}: {result.stderr[-500:]}"
    )


def test_the_command_line_help_imports_neither_torch_nor_ray() -> None:
    code = (
        "import sys; from astra.cli import build_parser; build_parser(); "
        "bad = sorted(m for m in ('torch', 'ray', 'numpy') if m in sys.modules); print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "", f"astra --help imports {result.stdout.strip()}"
