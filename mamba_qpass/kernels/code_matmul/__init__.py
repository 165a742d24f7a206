"""The exact product of int8 codes held in floating point: float_sim's GEMM (a float64 reference and a
float16 tensor-core implementation for CUDA)."""
