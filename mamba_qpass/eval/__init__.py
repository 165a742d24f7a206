"""Evaluation of precision modes on lm-eval tasks and Gutenberg perplexity, one calibration for all."""

from mamba_qpass.eval.runner import EvalConfig, evaluate_modes, evaluate_saved, format_table

__all__ = ["EvalConfig", "evaluate_modes", "evaluate_saved", "format_table"]
