"""`vitserve bench`: argument errors are one clean line (the benchmarks themselves: tests/benchmarks)."""

from __future__ import annotations

import pytest

from vitserve.admin.main import build_parser, main


def test_precision_check_needs_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--only", "precision"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "vitserve bench: error: --only precision needs --model REF"


def test_precision_check_names_an_unknown_model(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--only", "precision", "--model", "nope", "--store", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitserve bench: error:") and "'nope' not found" in err and "\n" not in err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["bench", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "vitserve bench --quick" in text and "--full" in text and "examples:" in text
