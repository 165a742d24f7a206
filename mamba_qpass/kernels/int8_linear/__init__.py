"""int8 x int8 -> int32 GEMM with a float64 dequantise / bias / requantise epilogue."""
