"""ULMA: point-wise DPO, ULMA and the baselines on transformers / peft (docs/DESIGN.md).

``from ulma import ULMAConfig, ULMATrainer`` is the TRL-shaped API (`ulma.loss_trainer`); it is imported on
first use, so that ``import ulma`` (and ``python -m ulma --help``) does not load torch.
"""

__all__ = ["ULMAConfig", "ULMATrainer"]


def __getattr__(name: str):
    if name in __all__:
        from ulma import loss_trainer

        return getattr(loss_trainer, name)
    raise AttributeError(f"module 'ulma' has no attribute {name!r}")
