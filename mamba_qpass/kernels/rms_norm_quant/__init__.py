"""RMSNorm fused with int8 quantisation of its output, computed in float64."""
