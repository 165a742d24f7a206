"""The int8 GEMM's tilings on the GPU, how one is chosen and how a tiled kernel is launched: candidate
configs, their pruning by shape, the autotuner's timer, the split-K workspace, and ``TiledKernel``.
Shared by ``int8_linear`` and ``int8_linear_conv_step``, which run the same tile loop.

Every tiling gives the same int32 accumulator and the same per-element epilogue, so the choice changes
speed only, never a bit of the output: autotuning is safe for exactness here (and every tile is tested on
its own)."""

import functools

import torch
import triton
from triton.testing import do_bench_cudagraph

from mamba_qpass.kernels.dependent_launch import dependent_launch
from mamba_qpass.kernels.quant_math import EXACT_FP_LAUNCH


def _config(block_m, block_n, block_k, warps, stages, group_m=8, split_k=1, swap_ab=False) -> triton.Config:
    return triton.Config(
        dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m, SPLIT_K=split_k, SWAP_AB=swap_ab),
        num_warps=warps, num_stages=stages,
    )


# Hopper candidates: the tiles that won at some Mamba shape when timed on an H200. Prefill (11 tilings timed
# at M = 2048 to 32768): 64 x 128 for most projections, 128 x 256 from M = 4096 rows, smaller ones for
# x_proj's few outputs and dt_proj's K = 160. The one-warpgroup 128 x 128 and 128 x 64 tiles (seventh
# session, 26 tilings at the 2.8b projections) fit two programs on an SM, one's wgmmas running while the
# other waits or stores (Triton waits on each int8 wgmma): 2.8b in_proj at M = 2048 took 116.8 us with
# 128 x 128 against 129.1 for the best earlier candidate, x_proj at M = 32768 89.9 against 97.8 with
# 128 x 64; for dt_proj's K = 160 the same tile in 64-deep K steps (eighth session, 40 tilings at the
# 2.8b projections): 18.8 us at M = 2048 against 20.5 for the earlier choice. Fewer candidates keep the
# first call of a new shape short.
PREFILL_CONFIGS = [
    _config(128, 128, 128, 4, 3),
    _config(128, 128, 64, 4, 3),
    _config(128, 64, 128, 4, 3),
    _config(128, 256, 128, 8, 3),
    _config(128, 128, 128, 8, 4),
    _config(64, 128, 128, 4, 4),
    _config(64, 128, 32, 4, 4),
    _config(64, 64, 128, 4, 5),
    _config(32, 64, 128, 4, 5),
]
# Decode (M = 1 to 64 rows): the weights are streamed once from memory, so what counts is keeping every SM
# loading. One-row tiles or 16-row tiles with long K steps; and since a decode projection has few column
# tiles (out_proj of the 2.8b config: 40 tiles of 64 for 132 SMs), split K multiplies the programs.
DECODE_CONFIGS = [
    # one row (B = 1): a GEMV on the CUDA cores with its K loop unrolled (see int8_tile_accumulate), 32 bytes
    # of weight a thread a K step, so all of a program's loads are in flight at once without spilling. H200,
    # from cold L2, against the looped one-row tiles before (their best: in_proj 14.0 us, out_proj 9.1):
    # in_proj 11.1 us with 4 x 512 in 2 warps, out_proj 7.1 with 4 x 1024 in 4 warps
    _config(1, 4, 512, 2, 1),
    _config(1, 8, 512, 4, 1),
    _config(1, 2, 1024, 2, 1),
    _config(1, 4, 1024, 4, 1),
    _config(1, 8, 1024, 8, 1),
    _config(1, 16, 128, 2, 1),  # short K (dt_proj's 160)
    _config(1, 64, 128, 4, 2, split_k=2),
    _config(1, 32, 256, 4, 2, split_k=4),
    _config(1, 16, 256, 2, 2, split_k=8),
    _config(16, 128, 256, 4, 4),
    # weight @ a.T on wgmma (int8_tile_accumulate): in_proj at 16 rows 11.6 us against 12.3 (H200, cold L2);
    # split K for out_proj's 40 column tiles of 64 on 132 SMs (not timed yet)
    _config(16, 64, 256, 4, 4, swap_ab=True),
    _config(16, 64, 256, 4, 4, split_k=2, swap_ab=True),
    _config(16, 64, 256, 4, 4, split_k=4, swap_ab=True),
    _config(16, 64, 512, 4, 4),
    _config(16, 32, 512, 2, 4),
    _config(16, 16, 512, 2, 4),
    _config(16, 32, 128, 2, 4),
    _config(16, 64, 128, 4, 4),
    _config(64, 64, 128, 4, 4),
    _config(64, 32, 256, 4, 4),
    _config(16, 128, 256, 4, 4, split_k=2),
    _config(16, 64, 256, 4, 4, split_k=2),
    _config(16, 64, 256, 4, 4, split_k=4),
    _config(16, 32, 256, 4, 4, split_k=2),
    _config(16, 32, 256, 2, 4, split_k=4),
    _config(16, 16, 256, 2, 4, split_k=4),
    _config(16, 16, 256, 2, 4, split_k=8),
    _config(64, 64, 128, 4, 4, split_k=2),
    _config(64, 32, 256, 4, 4, split_k=2),
]
GPU_CONFIGS = PREFILL_CONFIGS + DECODE_CONFIGS
DECODE_MAX_ROWS = 64  # M up to this many rows picks among DECODE_CONFIGS, above it among PREFILL_CONFIGS
# One-row tiles are candidates for a few rows too where the weight is small (x_proj's and dt_proj's: under
# 1 MB at 2.8b): each row's programs read the weight again, from L2 once the first has brought it in. H200,
# ninth session, 2.8b x_proj from cold L2: 6.1 us for the best 16-row tile at 16 rows, 3.5 us one-row at one.
ONE_ROW_TILES_MAX_ROWS = 16
ONE_ROW_TILES_MAX_WEIGHT_BYTES = 2 * 2**20
# An unrolled one-row tile holds its whole column slice of the weight in registers, BLOCK_N * K bytes over the
# program's threads. sm_90 code of the 1 x 16 x 128 tile in 2 warps (ptxas of CUDA 13.4, the pointers and
# sizes specialised as the JIT does): no spill up to 1024 bytes of K (256 a thread), 8 bytes of stack at 1536
# (384 a thread), 584 at 2560, and at 5120 (1280 a thread) 32 registers and 6.6 KB of stack a thread, 28 s
# of compiling for a tile no shape would pick. The GEMV tiles that win hold at most 320 (1 x 4 x 512 at 5120).
UNROLLED_MAX_WEIGHT_BYTES_A_THREAD = 384


def holds_its_weights(config: triton.Config, k: int) -> bool:
    """Whether the tile's weights fit its registers: true but for unrolled one-row tiles past
    ``UNROLLED_MAX_WEIGHT_BYTES_A_THREAD``."""
    unrolled = one_row_k_steps(dict(K=k, **config.kwargs)) > 0
    return not unrolled or config.kwargs["BLOCK_N"] * k <= UNROLLED_MAX_WEIGHT_BYTES_A_THREAD * 32 * config.num_warps


def fitting_configs(configs, named_args, **_):
    """The autotuner's pruning: the decode or prefill candidates by M, less tiles far larger than the
    problem (a 256-wide tile for x_proj's 192 outputs), one-row tiles for more than one row (but for a few
    rows of a small weight, ONE_ROW_TILES_MAX_ROWS), unrolled one-row tiles whose weights would not fit
    their registers (``holds_its_weights``), and splits that would leave a program fewer than two K steps,
    so a new shape times fewer candidates; keeps the smallest tensor-core tile when none fits."""
    m, n, k = named_args["M_BUCKET"], named_args["N"], named_args["K"]
    one_row_tiles = m == 1 or (m <= ONE_ROW_TILES_MAX_ROWS and n * k <= ONE_ROW_TILES_MAX_WEIGHT_BYTES)
    fitting = [
        c for c in (DECODE_CONFIGS if m <= DECODE_MAX_ROWS else PREFILL_CONFIGS)
        if c.kwargs["BLOCK_M"] <= max(16, m) and (c.kwargs["BLOCK_M"] > 1 or one_row_tiles)
        and holds_its_weights(c, k)
        and c.kwargs["BLOCK_N"] <= max(64, triton.next_power_of_2(n))
        and c.kwargs["BLOCK_K"] <= max(32, triton.next_power_of_2(k))
        and triton.cdiv(k, c.kwargs["BLOCK_K"]) >= 2 * c.kwargs["SPLIT_K"] - (c.kwargs["SPLIT_K"] == 1)
    ]
    return fitting or [min((c for c in configs if c.kwargs["BLOCK_M"] > 1),
                           key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def _l2_flush_buffer() -> torch.Tensor:
    """Twice the L2 cache of the current device: one write of it leaves none of what was read before in L2.
    Made per timing, not kept: a first call's tuning must not leave 100 MB allocated."""
    size = 2 * torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    return torch.empty(size, dtype=torch.int8, device="cuda")


@functools.cache
def _l2_flush_ms(device_index: int) -> float:
    """The time of one write of ``_l2_flush_buffer`` in a CUDA graph (ms)."""
    return do_bench_cudagraph(_l2_flush_buffer().zero_, rep=10, return_mode="median")


def time_from_cold_l2(kernel_call, quantiles=None):
    """The autotuners' timer: one call as a decode step runs it, from weights that are not in L2.

    In a model every layer's weights are read once per token, from memory; timed alone, a few-MB weight
    stays in L2 and the race would go to the tile that reads L2 best. So each call is timed after a write
    of twice the L2 (whose own time, measured once, is taken off), inside a CUDA graph so the host's launch
    cost, larger than a decode GEMM, does not decide the race either. The timer runs on a stream of its own,
    so the work queued before must finish first: the output tensor may reuse memory that queued kernels
    still read (the allocator orders reuse by stream), and the inputs may not be written yet. The write
    leaves dirty lines that the call's reads then write back, which a step does not pay: on an H200 the
    2.8b decode GEMVs timed 15 to 25 % slower this way than after a read-only flush, with the same fastest tile
    at every shape tried (``benchmarks/RESULTS.md``, twenty-third session). Returns the median in ms, or
    the ``quantiles`` (the autotuner asks for those)."""
    torch.cuda.synchronize()
    flush_ms = _l2_flush_ms(torch.cuda.current_device())
    flush = _l2_flush_buffer()

    def flushed_call():
        flush.zero_()
        kernel_call()

    times = do_bench_cudagraph(flushed_call, rep=10, quantiles=quantiles, return_mode="median")
    return max(times - flush_ms, 0.0) if quantiles is None else [max(t - flush_ms, 0.0) for t in times]


@functools.cache
def _split_k_workspace(device: torch.device, rows: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    tiles = rows * triton.cdiv(n, 16)  # the most tiles any config makes (one-row tiles, 16 columns)
    return (torch.zeros(rows, n, dtype=torch.int32, device=device),
            torch.zeros(tiles, dtype=torch.int32, device=device))


def split_k_workspace(device: torch.device, m: int, n: int, config: triton.Config | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The split-K tiles' int32 sums (rows, N) and per-tile arrival counters, zero, kept for the process per
    shape, where a split-K tile may run: on CUDA at decode sizes, or with a split-K ``config``; elsewhere a
    one-element stand-in (a prefill's M x N would be large). A captured CUDA graph holds their addresses, so
    they are never freed; each call leaves them at zero again, so a graph can replay a call that uses them.
    They are made before any capture, since the first call of a shape autotunes outside one. Calls on
    concurrent streams would share them, which a decode step never does."""
    split = config.kwargs["SPLIT_K"] > 1 if config is not None else device.type == "cuda" and m <= DECODE_MAX_ROWS
    return _split_k_workspace(device, *((triton.next_power_of_2(m), n) if split else (1, 1)))


def _pow2_tile(n: int, smallest: int, largest: int) -> int:
    return min(largest, max(smallest, triton.next_power_of_2(n)))


def _interpreter_tile(m: int, n: int, k: int) -> dict:
    """On CPU (the interpreter) every tl op costs the same whatever its size, so the fewest, largest
    programs win. An int8 ``tl.dot`` needs K tiles of at least 32 and M, N tiles of at least 16."""
    return dict(
        BLOCK_M=_pow2_tile(m, 16, 64), BLOCK_N=_pow2_tile(n, 16, 64), BLOCK_K=_pow2_tile(k, 32, 128), GROUP_M=1,
        SPLIT_K=1, SWAP_AB=False,
    )


def one_row_k_steps(args: dict) -> int:
    """The K steps a one-row tile without split K unrolls (``int8_tile_accumulate``); 0, a loop, otherwise."""
    if args["BLOCK_M"] == 1 and args["SPLIT_K"] == 1:
        return triton.cdiv(args["K"], args["BLOCK_K"])
    return 0


class TiledKernel:
    """A kernel built on ``int8_tile_accumulate``'s tiles (taking M, N, K and M_BUCKET, and the BLOCK_M,
    BLOCK_N, BLOCK_K, GROUP_M, SPLIT_K, SWAP_AB, EVEN_K, K_STEPS and USE_GDC (``dependent_launch``) meta-parameters), launched one program per (output tile,
    K split): with a given config (one of GPU_CONFIGS), autotuned on CUDA over the candidates that fit the
    shape, keyed on ``key`` (the arguments that change the best tile; ``restore_value``: those the kernel
    writes in place, put back after each timed call), or in the interpreter with one fixed tile."""

    def __init__(self, kernel, key: list[str], restore_value: list[str] | None = None):
        self.fixed = triton.heuristics({
            "EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0,
            "K_STEPS": one_row_k_steps,
        })(kernel)
        self.tuned = triton.autotune(
            GPU_CONFIGS, key=key, prune_configs_by={"early_config_prune": fitting_configs},
            do_bench=time_from_cold_l2, restore_value=restore_value,
        )(self.fixed)

    def launch(self, m: int, n: int, k: int, config: triton.Config | None, device: torch.device, *args, **flags) -> None:
        def grid(meta):
            return triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"]

        if config is not None:
            launch = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
            self.fixed[grid](*args, **flags, **launch, **EXACT_FP_LAUNCH, **dependent_launch(device, m))
        elif device.type == "cuda":
            self.tuned[grid](*args, **flags, **EXACT_FP_LAUNCH, **dependent_launch(device, m))
        else:
            self.fixed[grid](*args, **flags, **_interpreter_tile(m, n, k), **EXACT_FP_LAUNCH)
