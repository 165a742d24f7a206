"""Log-likelihood of continuations given contexts, computed the way lm-eval's HFLM computes them.

Written from lm-eval 0.4's documented behaviour so that, on the same model, every per-document number
equals lm-eval's bit for bit without lm-eval installed (tests/test_eval.py compares the two):

- tokenisation: trailing spaces of the context move to the continuation; the continuation's tokens are
  tokens(context + continuation) after the first len(tokens(context)); the tokenizer adds its special
  tokens as it does by default; an empty context becomes the BOS (else EOS) token;
- batches: requests with the same model input are scored once; unique inputs are sorted longest first
  (ties by token ids), cut into batches of ``batch_size`` and right-padded with token 0, so each
  document meets the same batch shapes as under lm-eval (float kernels may round differently per shape);
- arithmetic: float log_softmax over the padded batch's logits; per request the continuation's
  log-probs are summed in that dtype, and is_greedy = every continuation token is the argmax.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

# lm-eval's fallbacks when neither the config nor the tokenizer states a context length
DEFAULT_MAX_LENGTH = 2048
TOKENIZER_UNSET_LENGTH = 1000000000000000019884624838656  # transformers' "no limit" model_max_length


@dataclass(frozen=True)
class Request:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


def _prefix_token_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _encode(tokenizer, text: str) -> list[int]:
    # the tokenizer adds its special tokens, unless the text already starts with the prefix token
    starts_with_prefix = text.startswith(tokenizer.decode(_prefix_token_id(tokenizer)))
    return tokenizer.encode(text, add_special_tokens=not starts_with_prefix)


def encode_request(tokenizer, context: str, continuation: str) -> Request:
    if not context:
        tokens = tokenizer.encode(continuation, add_special_tokens=False)
        prefix = _prefix_token_id(tokenizer)
        if tokens[0] == prefix:
            return Request(tuple(tokens[:1]), tuple(tokens[1:]))
        return Request((prefix,), tuple(tokens))
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = _encode(tokenizer, context + continuation)
    context_ids = _encode(tokenizer, context)
    return Request(tuple(context_ids), tuple(whole[len(context_ids) :]))


def max_length(config, tokenizer) -> int:
    """The longest model input: the config's context length, else the tokenizer's, else 2048."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None) is not None:
            return int(getattr(config, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit != TOKENIZER_UNSET_LENGTH:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def _batches(requests: list[Request], batch_size: int) -> list[list[tuple[tuple[int, ...], list[int]]]]:
    """Batches of (model input key, indices of the requests it scores)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.context + r.continuation[:-1], []).append(i)

    def order(key: tuple[int, ...]):
        # the group's representative is its first request with the longest continuation
        members = groups[key]
        rep = requests[max(members, key=lambda i: len(requests[i].continuation))]
        tokens = rep.context + rep.continuation
        return -len(tokens), tokens

    keys = sorted(groups, key=order)
    return [[(k, groups[k]) for k in keys[i : i + batch_size]] for i in range(0, len(keys), batch_size)]


@torch.no_grad()
def score_requests(
    model, requests: list[Request], batch_size: int, max_len: int, progress: bool = True, desc: str = "loglikelihood"
) -> list[tuple[float, bool]]:
    """(sum of the continuation's log-probs, is_greedy) per request, in request order.

    ``model(ids).logits`` must be causal: right padding then leaves every real position unchanged."""
    for i, r in enumerate(requests):
        if not r.context or not r.continuation:
            raise ValueError(f"request {i} has an empty context or continuation")
        if len(r.continuation) > max_len:
            raise ValueError(f"request {i}'s continuation is longer than the model's {max_len} tokens")
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    with tqdm(total=len(requests), desc=desc, disable=not progress) as bar:
        for batch in _batches(requests, batch_size):
            # inputs: the key's tokens plus the continuation's last token, left-truncated, minus that last
            inputs = []
            for _, members in batch:
                r = requests[members[0]]
                inputs.append(list((r.context + r.continuation)[-(max_len + 1) :][:-1]))
            width = max(map(len, inputs))
            ids = torch.zeros(len(inputs), width, dtype=torch.long)
            for row, tokens in enumerate(inputs):
                ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            logprobs = F.log_softmax(model(ids.to(model.device)).logits, dim=-1)
            for row, (_, members) in enumerate(batch):
                length = len(inputs[row])
                for i in members:
                    # shapes (1, n, vocab) and (1, n) as in lm-eval, so the float sum runs the same reduction
                    cont = torch.tensor([requests[i].continuation], dtype=torch.long, device=logprobs.device)
                    picked = logprobs[row, length - cont.shape[1] : length][None]
                    is_greedy = bool((picked.argmax(dim=-1) == cont).all())
                    results[i] = (float(picked.gather(2, cont[..., None]).squeeze(-1).sum()), is_greedy)
                    bar.update(1)
    return results
