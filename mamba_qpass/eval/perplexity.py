"""Perplexity of a causal LM on a token stream, with a fixed context length and stride.

Windows of ``context_len`` tokens start every ``stride`` tokens; each window scores only the tokens
no earlier window scored (all but the first token in the first), so every token after the first is
predicted exactly once, from at least ``context_len - stride`` tokens of context (stride < context_len).
"""

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def _windows(num_tokens: int, context_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position within the window) per window."""
    windows, scored_until = [], 1  # token 0 has no context and is never scored
    for start in range(0, max(num_tokens - 1, 1), stride):
        end = min(start + context_len, num_tokens)
        if end <= scored_until:
            break
        windows.append((start, end, scored_until - start))
        scored_until = end
        if end == num_tokens:
            break
    return windows


@torch.no_grad()
def perplexity(
    model, tokens: torch.Tensor, context_len: int = 512, stride: int = 256, batch_size: int = 8, progress: bool = True,
    desc: str = "perplexity",
) -> dict:
    """``{"perplexity", "nll", "tokens"}`` of ``model`` (``model(ids).logits``) on a 1-D token stream."""
    if not 0 < stride < context_len:
        raise ValueError(
            f"stride must be in 1..{context_len - 1} (less than context_len, so each window's first "
            f"scored token has context), got {stride}"
        )
    if tokens.dim() != 1 or tokens.numel() < 2:
        raise ValueError(f"tokens must be a 1-D stream of at least 2 tokens, got shape {tuple(tokens.shape)}")
    windows = _windows(tokens.numel(), context_len, stride)
    total_nll, total_tokens = 0.0, 0
    device = model.device
    for i in tqdm(range(0, len(windows), batch_size), desc=desc, disable=not progress):
        group = windows[i : i + batch_size]
        # windows in a group share a length except maybe the last: score them one length at a time
        for length in sorted({end - start for start, end, _ in group}):
            same = [w for w in group if w[1] - w[0] == length]
            ids = torch.stack([tokens[s:e] for s, e, _ in same]).to(device)
            logprobs = F.log_softmax(model(ids).logits.float(), dim=-1)
            for row, (_, _, first) in enumerate(same):
                targets = ids[row, first:]
                picked = logprobs[row, first - 1 : -1].gather(-1, targets[:, None])
                total_nll -= picked.sum().item()
                total_tokens += targets.numel()
    nll = total_nll / total_tokens
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": total_tokens}
