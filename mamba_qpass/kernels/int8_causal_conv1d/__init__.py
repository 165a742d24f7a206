"""Depthwise causal conv1d on int8 codes: int32 accumulation, float64 bias / SiLU / requantisation."""
