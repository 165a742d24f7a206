"""Train a small transformers `MambaForCausalLM` from scratch on Project Gutenberg.

This is the recipe of the project's embedded default checkpoint (checkpoints/gutenberg-mamba-25m).
On a CUDA device it trains through mamba-ssm's and causal-conv1d's CUDA kernels (transformers uses
them when both packages are importable; in training mode through `mamba_inner_fn`) and refuses to
run on transformers' per-time-step torch fallback, which is far too slow to train with. On the CPU
the fallback is used, which is only good for smoke tests of the script.

    python examples/train_tokenizer.py --data-dir ../shared/data --out runs/tokenizer
    python examples/train_small_mamba.py --data-dir ../shared/data --tokenizer runs/tokenizer \
        --out runs/gutenberg-mamba --max-minutes 13

What it does:
- tokenizes the cleaned books of gutenberg/train-*.jsonl.xz and gutenberg/val.jsonl.xz (cached as
  .npy under --cache-dir), each book followed by <|endoftext|>, all books in one token stream;
- cuts the stream into sequences of --seq-len + 1 tokens (stride --seq-len) and visits them in a
  seeded random order, a fresh permutation per epoch (np.random.default_rng([seed, epoch]));
- bf16 autocast, fused AdamW (no weight decay on norms, biases, A_log, D), gradient clipping, linear
  warmup then cosine decay to --min-lr-ratio * --lr over the run;
- with --max-minutes, measures the step rate from step 10 to --calib-steps (the end of warmup, so
  no learning rate depends on the clock) and sizes the cosine schedule so that the run ends inside
  the budget (and stops at the budget in any case);
- validates every --val-every steps on a fixed subset of the validation split;
- writes run.jsonl (step, loss, lr, tokens/s, tokens seen, val loss/ppl), a tqdm progress bar,
  and fp16 safetensors checkpoints (shards <= --max-shard-size) with the tokenizer: <out>/mid at half
  the run, <out>/final at the end, plus <out>/summary.json.

The data folder comes from --data-dir or the environment variable MAMBA_QPASS_DATA.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_tokenizer import EOT, encode_books, gutenberg_files, resolve_data_dir  # noqa: E402


# ----------------------------------------------------------------------------------------- data
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_tokens(split: str, data_dir: str, tokenizer_dir: str, cache_dir: str, max_books: int | None) -> dict:
    """The token stream of a split, cached under cache_dir keyed by files, tokenizer and max_books."""
    files = gutenberg_files(data_dir, split)
    tok_json = os.path.join(tokenizer_dir, "tokenizer.json")
    key = json.dumps(
        {"files": [(os.path.basename(f), os.path.getsize(f)) for f in files],
         "tokenizer": _sha256(tok_json), "max_books": max_books},
        sort_keys=True,
    )
    tag = hashlib.sha256(key.encode()).hexdigest()[:16]
    npy, meta_path = (os.path.join(cache_dir, f"{split}-{tag}{ext}") for ext in (".npy", ".json"))
    if os.path.exists(npy) and os.path.exists(meta_path):
        meta = json.load(open(meta_path))
        meta["tokens"] = np.load(npy)
        print(f"[data] {split}: {len(meta['tokens']):,} tokens from cache {npy}", flush=True)
        return meta
    t0 = time.time()
    tokens, n_books, n_chars = encode_books(files, tok_json, max_books)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(npy + ".tmp.npy", tokens)
    os.replace(npy + ".tmp.npy", npy)
    meta = {"split": split, "files": [os.path.basename(f) for f in files], "n_books": n_books,
            "n_chars": n_chars, "n_tokens": int(len(tokens))}
    json.dump(meta, open(meta_path, "w"))
    print(f"[data] {split}: {n_books} books, {n_chars:,} chars -> {len(tokens):,} tokens "
          f"({n_chars / len(tokens):.2f} chars/token) in {time.time() - t0:.0f} s", flush=True)
    meta["tokens"] = tokens
    return meta


class SequenceSampler:
    """Batches of (seq_len + 1)-token windows, stride seq_len, in a seeded order that is fixed per epoch."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, batch_size: int, seed: int):
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.n_seq = (len(tokens) - 1) // seq_len
        if self.n_seq < 1:
            raise SystemExit(f"too few tokens ({len(tokens)}) for one sequence of {seq_len + 1}")
        self._epoch, self._perm = -1, None
        self._offsets = torch.arange(seq_len + 1, device=tokens.device)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n_seq)
        return self._perm

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = []
        for g in range(step * self.batch_size, (step + 1) * self.batch_size):
            idx.append(self._order(g // self.n_seq)[g % self.n_seq])
        starts = torch.as_tensor(np.asarray(idx, dtype=np.int64) * self.seq_len, device=self.tokens.device)
        window = self.tokens[starts[:, None] + self._offsets].long()
        return window[:, :-1], window[:, 1:]


# ---------------------------------------------------------------------------------------- model
def build_model(args, vocab_size: int):
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(
        vocab_size=vocab_size,
        hidden_size=args.d_model,
        num_hidden_layers=args.n_layer,
        state_size=args.d_state,
        conv_kernel=args.d_conv,
        expand=args.expand,
        hidden_act="silu",
        use_bias=False,
        use_conv_bias=True,
        residual_in_fp32=True,
        initializer_range=0.02,
        rescale_prenorm_residual=True,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(args.seed)
    model = MambaForCausalLM(config)
    init_weights(model, config, args.seed)
    return model


@torch.no_grad()
def init_weights(model, config, seed: int) -> None:
    """Mamba's reference initialisation, done explicitly so that it does not hang on library defaults.

    Embedding N(0, 0.02) (tied with the LM head); in_proj / x_proj / conv1d: PyTorch's default
    (Kaiming-uniform); out_proj: Kaiming-uniform scaled by 1/sqrt(n_layer); dt_proj weight
    U(-r^-0.5, r^-0.5) with r the dt rank, its bias the inverse softplus of dt ~ log-uniform in
    [time_step_min, time_step_max]; A_log = log(1..d_state); D = 1; RMSNorm weights 1.
    """
    gen = torch.Generator().manual_seed(seed)

    def kaiming_uniform(w, scale=1.0):
        fan_in = w[0].numel()
        bound = scale / math.sqrt(fan_in)  # = gain(a=sqrt 5) * sqrt(3 / fan_in)
        w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * bound)

    model.backbone.embeddings.weight.copy_(torch.randn(model.backbone.embeddings.weight.shape, generator=gen) * 0.02)
    for layer in model.backbone.layers:
        m = layer.mixer
        kaiming_uniform(m.in_proj.weight)
        kaiming_uniform(m.x_proj.weight)
        kaiming_uniform(m.conv1d.weight)
        if m.conv1d.bias is not None:
            fan_in = m.conv1d.weight[0].numel()
            m.conv1d.bias.copy_((torch.rand(m.conv1d.bias.shape, generator=gen) * 2 - 1) / math.sqrt(fan_in))
        kaiming_uniform(m.out_proj.weight, scale=1.0 / math.sqrt(config.num_hidden_layers))
        r = m.dt_proj.weight.shape[1]
        std = r**-0.5 * config.time_step_scale
        m.dt_proj.weight.copy_((torch.rand(m.dt_proj.weight.shape, generator=gen) * 2 - 1) * std)
        lo, hi = math.log(config.time_step_min), math.log(config.time_step_max)
        dt = torch.exp(torch.rand(m.dt_proj.bias.shape, generator=gen) * (hi - lo) + lo)
        dt = dt.clamp(min=config.time_step_floor)
        m.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        a = torch.arange(1, config.state_size + 1, dtype=torch.float32)
        m.A_log.copy_(torch.log(a).expand_as(m.A_log))
        m.D.fill_(1.0)
        layer.norm.weight.fill_(1.0)
    model.backbone.norm_f.weight.fill_(1.0)
    assert model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr(), "embeddings not tied"


def check_fast_path(model) -> str:
    """On CUDA, prove that transformers' Mamba training path runs mamba-ssm's fused kernel."""
    import transformers.models.mamba.modeling_mamba as mm

    mixer = model.backbone.layers[0].mixer
    h = torch.randn(2, 64, model.config.hidden_size, device=mixer.in_proj.weight.device)
    with torch.no_grad():
        xz = mixer.in_proj(h).transpose(1, 2)
        out = mm.mamba_inner_fn(
            xz, mixer.conv1d.weight, mixer.conv1d.bias, mixer.x_proj.weight, mixer.dt_proj.weight,
            mixer.out_proj.weight, None, -torch.exp(mixer.A_log.float()), None, None, mixer.D.float(),
            delta_bias=mixer.dt_proj.bias.float(), delta_softplus=True,
        )
    have = [m for m in ("mamba_ssm", "causal_conv1d") if m in sys.modules]
    if out is None:
        return f"fallback (mamba_inner_fn returned None; imported: {have})"
    return f"fused mamba_inner_fn (imported: {have})"


def add_residual_dropout(model, p: float) -> list:
    """Dropout on the embedding output and on every mixer output (before its residual add), in training only.

    The run repeats a small corpus for several epochs, so the model starts to memorise it; dropout is the
    regulariser. Forward hooks keep it out of the model: the saved checkpoint is a plain MambaForCausalLM.
    """
    def hook(module, inputs, output):
        return F.dropout(output, p, module.training)

    modules = [model.backbone.embeddings] + [layer.mixer for layer in model.backbone.layers]
    return [m.register_forward_hook(hook) for m in modules]


def param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.endswith("A_log") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int | None, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if total is None:  # schedule not sized yet (a time budget and no calibration yet)
        return args.lr
    progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    floor = args.lr * args.min_lr_ratio
    return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model, tokens: torch.Tensor, starts: np.ndarray, seq_len: int, batch_size: int, autocast) -> float:
    """Mean next-token NLL over the windows that start at `starts`."""
    was_training = model.training
    model.eval()
    offsets = torch.arange(seq_len + 1, device=tokens.device)
    total, count = 0.0, 0
    for i in range(0, len(starts), batch_size):
        s = torch.as_tensor(starts[i : i + batch_size], device=tokens.device)
        w = tokens[s[:, None] + offsets].long()
        with autocast():
            logits = model(input_ids=w[:, :-1], use_cache=False).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum")
        total += nll.item()
        count += w[:, 1:].numel()
    model.train(was_training)
    return total / count


def save_fp16(model, tokenizer_dir: str, out_dir: str, max_shard_size: str) -> list[str]:
    """fp16 safetensors shards + config, and the tokenizer files exactly as train_tokenizer.py wrote them."""
    m16 = copy.deepcopy(model).to(device="cpu", dtype=torch.float16)
    m16.config.use_cache = True
    m16.save_pretrained(out_dir, max_shard_size=max_shard_size, safe_serialization=True)
    for name in os.listdir(tokenizer_dir):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
    del m16
    return sorted(os.listdir(out_dir))


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder holding gutenberg/ (default: $MAMBA_QPASS_DATA)")
    ap.add_argument("--tokenizer", required=True, help="folder of the tokenizer (train_tokenizer.py --out)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache-dir", default=None, help="token cache (default: <out>/cache)")
    ap.add_argument("--max-books", type=int, default=None, help="only the first N books of each split (smoke tests)")
    # model
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--d-conv", type=int, default=4)
    ap.add_argument("--expand", type=int, default=2)
    # optimisation
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.02)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--dropout", type=float, default=0.1,
                    help="dropout on the embedding and on every mixer output, training only (0 = off)")
    ap.add_argument("--seed", type=int, default=0)
    # length of the run
    ap.add_argument("--max-steps", type=int, default=None, help="fixed number of steps (sizes the schedule)")
    ap.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of the training loop")
    ap.add_argument("--calib-steps", type=int, default=300,
                    help="the schedule is sized to the budget from the step rate measured up to this step (<= warmup)")
    ap.add_argument("--reserve-s", type=float, default=20.0, help="seconds kept free for checkpoint saving")
    # logging / eval / saving
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--val-seqs", type=int, default=128, help="validation windows per periodic evaluation")
    ap.add_argument("--max-shard-size", default="15MB")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--allow-slow-fallback", action="store_true",
                    help="train on CUDA even without mamba-ssm's kernels (never for a real run)")
    args = ap.parse_args(argv)
    if not 0.0 <= args.dropout < 1.0:
        ap.error(f"--dropout must lie in [0, 1), got {args.dropout}")
    if args.max_steps is None and args.max_minutes is None:
        ap.error("give --max-steps or --max-minutes (or both)")
    if args.max_steps is None and not 10 < args.calib_steps <= args.warmup:
        ap.error("--calib-steps must lie in (10, --warmup] when the schedule is sized by time")

    from tqdm import tqdm
    from transformers import AutoTokenizer

    data_dir = resolve_data_dir(args.data_dir)
    os.makedirs(args.out, exist_ok=True)
    cache_dir = args.cache_dir or os.path.join(args.out, "cache")
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    assert tokenizer.convert_tokens_to_ids(EOT) == 0

    train = load_tokens("train", data_dir, args.tokenizer, cache_dir, args.max_books)
    val = load_tokens("val", data_dir, args.tokenizer, cache_dir, args.max_books)
    train_tokens = torch.from_numpy(train["tokens"].astype(np.int32)).to(device)
    val_tokens = torch.from_numpy(val["tokens"].astype(np.int32)).to(device)

    model = build_model(args, vocab_size=len(tokenizer)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    fast = check_fast_path(model) if device.type == "cuda" else "cpu (torch fallback; smoke tests only)"
    print(f"[model] {n_params:,} parameters; Mamba path: {fast}", flush=True)
    if device.type == "cuda" and fast.startswith("fallback") and not args.allow_slow_fallback:
        raise SystemExit("mamba-ssm / causal-conv1d kernels are not in use: refusing to train on the fallback")
    if args.dropout:
        add_residual_dropout(model, args.dropout)

    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_cuda)

    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr,
                            betas=(args.beta1, args.beta2), eps=1e-8, fused=use_cuda)
    sampler = SequenceSampler(train_tokens, args.seq_len, args.batch_size, args.seed)
    n_val_seq = (len(val_tokens) - 1) // args.seq_len
    val_starts = np.unique(np.linspace(0, n_val_seq - 1, min(args.val_seqs, n_val_seq)).astype(np.int64)) * args.seq_len
    tokens_per_step = args.batch_size * args.seq_len
    print(f"[data] train {len(train_tokens):,} tokens = {sampler.n_seq:,} windows; val {len(val_tokens):,} tokens; "
          f"{tokens_per_step:,} tokens/step", flush=True)

    log = open(os.path.join(args.out, "run.jsonl"), "w")

    def write(rec):
        log.write(json.dumps(rec) + "\n")
        log.flush()

    def sync():
        if use_cuda:
            torch.cuda.synchronize()

    write({"event": "start", "args": vars(args), "n_params": n_params, "mamba_path": fast,
           "device": torch.cuda.get_device_name(device) if use_cuda else "cpu",
           "train_tokens": len(train_tokens), "val_tokens": len(val_tokens)})

    total = args.max_steps
    t_val0 = time.time()
    val_loss = evaluate(model, val_tokens, val_starts, args.seq_len, args.batch_size, autocast)
    val_time = time.time() - t_val0
    write({"step": 0, "val_loss": val_loss, "val_ppl": math.exp(val_loss), "val_s": val_time})
    print(f"[val] step 0: loss {val_loss:.3f} ({val_time:.1f} s)", flush=True)

    model.train()
    t_start = time.time()
    budget = args.max_minutes * 60 if args.max_minutes is not None else float("inf")
    pbar = tqdm(total=total, unit="step", mininterval=20, dynamic_ncols=False, ncols=100, file=sys.stderr)
    loss_acc, n_acc, t_log, step_log = torch.zeros((), device=device), 0, time.time(), 0
    t_calib0 = None
    step, stop_reason, mid_saved = 0, "steps", False
    while True:
        if total is not None and step >= total:
            break
        if time.time() - t_start > budget - args.reserve_s:
            stop_reason = "time"
            break
        lr = lr_at(step, total, args)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = sampler.batch(step)
        with autocast():
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_acc += loss.detach()
        n_acc += 1
        step += 1
        pbar.update(1)

        # size the cosine schedule to the time budget from the measured step rate
        if args.max_minutes is not None and step == 10:
            sync()
            t_calib0 = time.time()
        if args.max_minutes is not None and step == args.calib_steps and t_calib0 is not None:
            sync()
            step_s = (time.time() - t_calib0) / (args.calib_steps - 10)
            left = budget - args.reserve_s - (time.time() - t_start)
            by_time = step + int(left / (step_s + val_time / args.val_every) * 0.97)
            total = by_time if total is None else min(total, by_time)
            pbar.total = total
            pbar.refresh()
            write({"event": "schedule", "step": step, "step_s": step_s, "total_steps": total,
                   "tokens_per_s": tokens_per_step / step_s, "planned_tokens": total * tokens_per_step})
            print(f"\n[schedule] {step_s * 1e3:.1f} ms/step = {tokens_per_step / step_s:,.0f} tokens/s -> "
                  f"{total} steps, {total * tokens_per_step / 1e6:.0f} M tokens", flush=True)

        if step % args.log_every == 0:
            mean_loss = (loss_acc / n_acc).item()  # syncs
            now = time.time()
            tps = (step - step_log) * tokens_per_step / (now - t_log)
            rec = {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": float(grad_norm),
                   "tokens_per_s": tps, "tokens": step * tokens_per_step, "elapsed_s": now - t_start}
            write(rec)
            pbar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tps / 1e3:.0f}k", refresh=False)
            if not math.isfinite(mean_loss):
                raise SystemExit(f"loss is {mean_loss} at step {step}")
            loss_acc.zero_()
            n_acc, t_log, step_log = 0, now, step
        if step % args.val_every == 0:
            t0 = time.time()
            val_loss = evaluate(model, val_tokens, val_starts, args.seq_len, args.batch_size, autocast)
            write({"step": step, "val_loss": val_loss, "val_ppl": math.exp(val_loss), "val_s": time.time() - t0,
                   "elapsed_s": time.time() - t_start})
            print(f"\n[val] step {step}: loss {val_loss:.3f} ppl {math.exp(val_loss):.1f}", flush=True)
            t_log += time.time() - t0
        if total is not None and not mid_saved and step >= total // 2:
            t0 = time.time()
            files = save_fp16(model, args.tokenizer, os.path.join(args.out, "mid"), args.max_shard_size)
            write({"event": "saved", "dir": "mid", "step": step, "files": files})
            mid_saved = True
            t_log += time.time() - t0
    pbar.close()
    sync()
    train_s = time.time() - t_start

    val_loss = evaluate(model, val_tokens, val_starts, args.seq_len, args.batch_size, autocast)
    final_dir = os.path.join(args.out, "final")
    files = save_fp16(model, args.tokenizer, final_dir, args.max_shard_size)
    summary = {
        "n_params": n_params,
        "steps": step,
        "planned_steps": total,
        "stop_reason": stop_reason,
        "tokens_seen": step * tokens_per_step,
        "train_seconds": train_s,
        "tokens_per_s": step * tokens_per_step / train_s,
        "device": torch.cuda.get_device_name(device) if use_cuda else "cpu",
        "torch": torch.__version__,
        "mamba_path": fast,
        "val_subset_loss": val_loss,
        "val_subset_ppl": math.exp(val_loss),
        "val_subset_tokens": int(len(val_starts) * args.seq_len),
        "train_data": {k: v for k, v in train.items() if k != "tokens"},
        "val_data": {k: v for k, v in val.items() if k != "tokens"},
        "epochs": step * args.batch_size / sampler.n_seq,
        "args": vars(args),
        "files": files,
    }
    import transformers

    summary["transformers"] = transformers.__version__
    write({"event": "end", **{k: v for k, v in summary.items() if k not in ("args", "train_data", "val_data")}})
    json.dump(summary, open(os.path.join(args.out, "summary.json"), "w"), indent=2)
    print(f"[done] {step} steps ({stop_reason}), {summary['tokens_seen'] / 1e6:.1f} M tokens in {train_s / 60:.1f} min "
          f"= {summary['tokens_per_s']:,.0f} tokens/s; val subset ppl {math.exp(val_loss):.2f}; saved {final_dir}",
          flush=True)


if __name__ == "__main__":
    main()
