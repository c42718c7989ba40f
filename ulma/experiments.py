"""The experiment layer's front door (notebooks: ``from ulma import experiments``).

The experiments are data (`ulma.catalog`), the grid runs and records them (`ulma.grid`, records in
`ulma.store`), `ulma.analysis` holds the analyses that need no training (dataset statistics, gradient
weights), `ulma.report` the tables and figures, `ulma.reproduce` the notebooks. This module re-exports
their public names so that ``experiments.run_grid(...)`` and friends keep working; it holds no logic.
"""
from __future__ import annotations

from ulma.analysis import DATASET_COLUMNS, GRADIENT_METHODS, dataset_stats, gradient_weights, write_gradient_weights
from ulma.catalog import ALL_METHODS, EXPERIMENTS, Experiment, Sweep, Variant, get_experiment, run_profile
from ulma.grid import NOT_APPLICABLE_REASON, dataset_unavailable, not_applicable, run_grid, run_one
from ulma.reproduce import reproduce
from ulma.store import (RECORD_SCHEMA, PeakMemory, as_profile, config_hash, now, package_versions, project_root,
                        resolve_path, resolved_config, result_path, run_folder)

__all__ = ["ALL_METHODS", "DATASET_COLUMNS", "EXPERIMENTS", "Experiment", "GRADIENT_METHODS", "NOT_APPLICABLE_REASON",
           "PeakMemory", "RECORD_SCHEMA", "Sweep", "Variant", "as_profile", "config_hash", "dataset_stats",
           "dataset_unavailable", "get_experiment", "gradient_weights", "not_applicable", "now", "package_versions",
           "project_root", "reproduce", "resolve_path", "resolved_config", "result_path", "run_folder", "run_grid",
           "run_one", "run_profile", "write_gradient_weights"]
