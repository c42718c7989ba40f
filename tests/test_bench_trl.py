"""The side-by-side benchmark's command line: documented, and its GPU modes fail clearly without CUDA.

The benchmark itself takes minutes (it trains SmolLM2 with two trainers); these checks take a second.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_trl.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_help_documents_the_options():
    proc = _run("--help")
    assert proc.returncode == 0
    for option in ("--json", "--steps", "--warmup", "--batch", "--max-length", "--cases", "--device", "--random-init",
                   "--dtype", "--flops", "--peak-tflops", "--profile"):
        assert option in proc.stdout


def test_unknown_case_is_refused():
    proc = _run("--cases", "nonsense")
    assert proc.returncode == 2 and "unknown case" in proc.stderr


@pytest.mark.parametrize("args", [["--flops"], ["--device", "cuda", "--random-init", "--dtype", "bfloat16"]])
def test_gpu_modes_fail_clearly_without_cuda(args):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the mode would run")
    proc = _run(*args)
    assert proc.returncode != 0
    assert "needs a CUDA GPU" in proc.stderr


def test_ratios_and_targets():
    bench = _load()
    runs = {
        "trl_dpo": {"tokens_per_s": 100.0, "peak_memory_mb": 1000.0, "step_s": 10.0},
        "ulma_dpo_adapters": {"tokens_per_s": 130.0, "peak_memory_mb": 950.0, "step_s": 7.7},
    }
    ratios = bench.compute_ratios(runs)
    assert ratios["dpo_throughput_vs_trl"]["value"] == 1.3 and ratios["dpo_throughput_vs_trl"]["met"]
    assert ratios["dpo_peak_memory_vs_trl"]["value"] == 0.95 and not ratios["dpo_peak_memory_vs_trl"]["met"]
    assert "ulma_step_vs_pointwise_dpo" not in ratios  # its runs are absent


def test_llama_1b_parameter_count():
    pytest.importorskip("transformers")
    bench = _load()
    total, matmul = bench.matmul_params(bench.LLAMA_1B_CONFIG)
    assert 1.2e9 < total < 1.3e9 and matmul == total  # tied embeddings: the matrix is counted once, as the head
