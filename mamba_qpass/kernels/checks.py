"""Input checks shared by the Triton launchers: a wrong dtype, shape or device fails in Python with a
message that names the argument, instead of as a wrong answer or a crash inside a kernel."""

import torch

# The kernels compute element offsets (sum of index * stride) in 32-bit integers.
MAX_INT32_OFFSET = 2**31 - 1


def check_int32_extent(name: str, shape: tuple[int, ...], strides: tuple[int, ...]) -> None:
    """A tensor of ``shape`` and ``strides`` (elements) whose every element a kernel can reach with a 32-bit
    offset: beyond that the offsets would wrap and the kernel would read or write the wrong memory."""
    furthest = sum((size - 1) * abs(stride) for size, stride in zip(shape, strides) if size > 0)
    if furthest > MAX_INT32_OFFSET:
        raise ValueError(
            f"{name} spans {furthest + 1} elements (shape {tuple(shape)}, strides {tuple(strides)}), more than "
            f"the 2**31 that the Triton kernels index with 32-bit offsets: run the batch in parts (fewer rows "
            f"or shorter sequences per call)"
        )


def check_tensor(
    name: str,
    t: object,
    dtypes: tuple[torch.dtype, ...],
    ndims: tuple[int, ...],
    device: torch.device | None = None,
) -> None:
    """``t`` is a tensor with one of ``dtypes``, one of ``ndims`` dimensions, on ``device`` (if given)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise ValueError(f"{name} must have dtype in ({allowed}), got {t.dtype}")
    if t.dim() not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dims, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}")
    check_int32_extent(name, tuple(t.shape), t.stride())


def check_unit_last_stride(name: str, t: torch.Tensor) -> None:
    """Kernels address rows by a stride but read each row contiguously."""
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must have a contiguous last dim (stride 1), got strides {t.stride()}")


def check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_f64_vector(name: str, t: object, length: int, device: torch.device) -> None:
    """A per-channel float64 scale or bias of ``length`` contiguous entries."""
    check_tensor(name, t, (torch.float64,), (1,), device)
    check_shape(name, t, (length,))
    check_unit_last_stride(name, t)


def check_f64_scalar(name: str, t: object, device: torch.device) -> None:
    """A per-tensor float64 scale: shape () or (1,). Never a Python float, which Triton would make fp32."""
    check_tensor(name, t, (torch.float64,), (0, 1), device)
    if t.numel() != 1:
        raise ValueError(f"{name} must hold one value (shape () or (1,)), got shape {tuple(t.shape)}")


def rows_view(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` as (rows, last dim) for a kernel that reads contiguous rows by a row stride: a view whenever
    the leading dims can be merged."""
    check_unit_last_stride(name, t)
    return t.reshape(-1, t.shape[-1])
