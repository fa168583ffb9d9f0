"""`edgecl bench frontend`: one row per rate, clip length and STFT implementation, with MACs, graph
size, ONNX Runtime timings per thread count and parity; its output shape, not its speed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgecl.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")

TINY = ["bench", "frontend", "--sample-rates", "8000", "--clip-seconds", "0.1",
        "--runs", "2", "--warmup", "0", "--width", "8"]


def test_bench_frontend_prints_one_row_per_impl_with_parity_and_ratios():
    result = CliRunner().invoke(main, TINY + ["--threads", "1,2", "--eager-batch", "2", "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output)
    rows = results["rows"]
    assert [row["impl"] for row in rows] == ["conv", "factored", "torch", "rfft"]
    assert results["threads"] == [1, 2] and results["batch"] == 1
    by_impl = {row["impl"]: row for row in rows}
    for row in rows:
        assert (row["sample_rate"], row["clip_seconds"]) == (8000, 0.1)
        assert row["ms_1t"] > 0 and row["ms_2t"] > 0 and row["eager_ms"] > 0 and row["kib"] > 0
        assert row["1t_vs_conv"] == pytest.approx(row["ms_1t"] / by_impl["conv"]["ms_1t"],
                                                  rel=1e-2, abs=1e-3)
        # every implementation is the same transform: far inside what whole-model parity allows
        assert row["max_abs_diff"] < 1e-3
    assert by_impl["conv"]["1t_vs_conv"] == by_impl["conv"]["2t_vs_conv"] == 1
    assert by_impl["conv"]["eager_vs_conv"] == 1
    # what each graph computes with: the op that names the implementation is there
    assert "STFT" in by_impl["torch"]["onnx_ops"] and "DFT" in by_impl["rfft"]["onnx_ops"]
    assert "STFT" not in by_impl["factored"]["onnx_ops"]
    assert "DFT" not in by_impl["factored"]["onnx_ops"].split(",")
    # counted MACs for the Conv DFTs, an FFT estimate for the ONNX STFT/DFT ops
    assert not by_impl["conv"]["fft_estimated"] and by_impl["torch"]["fft_estimated"]
    assert by_impl["factored"]["mmacs"] < by_impl["conv"]["mmacs"] / 2.5
    assert by_impl["conv"]["mmacs_per_second"] == pytest.approx(
        by_impl["conv"]["mmacs"] / 0.1, rel=1e-2)
    [model] = results["models"]
    assert model["default_impl"] == "factored" and model["backbone_mmacs_per_second"] > 0


def test_bench_frontend_table_and_bad_input():
    table = CliRunner().invoke(main, TINY + ["--threads", "1", "--impls", "conv,factored"])
    assert table.exit_code == 0, table.output
    assert "1t_vs_conv" in table.output and "backbone_mmacs_per_second" in table.output
    assert "eager_ms" not in table.output  # only with --eager-batch
    assert "factored" in table.output and "rfft" not in table.output
    for option, value in (("--impls", "conv,fft"), ("--threads", "0"),
                          ("--clip-seconds", "0.01"), ("--sample-rates", "8k"),
                          ("--eager-batch", "-1")):
        bad = CliRunner().invoke(main, TINY + [option, value])
        assert bad.exit_code == 2 and option in bad.output, bad.output
