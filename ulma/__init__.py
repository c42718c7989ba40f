"""ULMA: point-wise DPO, ULMA and the baselines on transformers / peft (docs/DESIGN.md).

``from ulma import ULMAConfig, ULMATrainer`` is the TRL-shaped API (`ulma.loss_config`, `ulma.loss_trainer`).
It is imported on first use (PEP 562), so that ``import ulma`` alone loads neither torch nor transformers.
"""
import importlib

__all__ = ["ULMAConfig", "ULMATrainer"]
_MODULES = {"ULMAConfig": "ulma.loss_config", "ULMATrainer": "ulma.loss_trainer"}


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'ulma' has no attribute {name!r}")
