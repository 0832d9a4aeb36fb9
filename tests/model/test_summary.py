"""``astra summary``: the per-module table and its ``total_params`` line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from astra.commands import summary

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _summary(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    parser = argparse.ArgumentParser()
    summary.add_arguments(parser)
    assert summary.run(parser.parse_args(arguments)) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_paper_total_and_rows(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _summary(["--config", str(CONFIGS / "astra_paper.yaml")], capsys)
    assert lines[-1] == "total_params: 168372918"
    rows = {
        line.split()[0]: line.split()[1]
        for line in lines
        if line.split()[1:2] and line.split()[1][0].isdigit()
    }
    assert rows["audio_backbone.embeddings"] == "119,546,368"
    assert rows["encoder"] == "9,457,152"


def test_overrides_and_layered_configs(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _summary(["--config", str(CONFIGS / "astra_paper.yaml"), "model.use_audio=false"], capsys)
    assert lines[-1] == "total_params: 44299574"
    small_m4 = _summary(
        ["--config", str(CONFIGS / "small.yaml"), "--config", str(CONFIGS / "ablations" / "m4.yaml")], capsys
    )
    assert not any(line.startswith("audio_backbone") for line in small_m4)  # M4 is visual only
    assert int(small_m4[-1].split()[-1]) < 1_000_000
