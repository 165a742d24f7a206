"""Generation: prefill every prompt at its own length, then one batched decode step per new token.

Prompts of different lengths. A Mamba layer has no attention to mask: a padding token inside a sequence
would enter its conv and SSM state. So each prompt is prefilled over its real tokens only (those where
``attention_mask`` is 1, which must be contiguous: left or right padding), prompts of equal length
together, and their final states (and last logits) are stacked into one batch for decoding. The cost
is one prefill per distinct prompt length.

Decoding stops for a row when it emits an end-of-sequence token or a stopping criterion says so; its
later positions get ``pad_token_id``. The whole batch stops when every row has stopped or after
``max_new_tokens``. As in transformers, the result is the input (padding included) followed by the new
tokens.
"""

from collections.abc import Callable, Sequence

import torch
import torch.fx as fx

from mamba_qpass.runtime.sampling import Sampling, next_tokens


def prompt_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Each row's real tokens: all of it without a mask, else the positions where the mask is 1."""
    if attention_mask is None:
        return list(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids {tuple(input_ids.shape)}: "
            "pass the mask the tokenizer returned with these ids"
        )
    rows = []
    for i, row_mask in enumerate(attention_mask.bool().cpu()):
        (real,) = torch.nonzero(row_mask, as_tuple=True)
        if real.numel() == 0:
            raise ValueError(f"prompt {i} has no tokens (its attention_mask row is all zeros): give every prompt a token")
        start, stop = int(real[0]), int(real[-1]) + 1
        if stop - start != real.numel():
            raise ValueError(
                f"prompt {i}'s attention_mask has zeros between its tokens: pad prompts on one side only "
                "(left or right), with the real tokens contiguous"
            )
        rows.append(input_ids[i, start:stop])
    return rows


@torch.no_grad()
def prefill(step_graph: fx.GraphModule, prompts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(last logits (batch, vocab), states) of ``prompts``, each prefilled over its own tokens; prompts of
    one length run as one batch."""
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(prompt.shape[0], []).append(i)
    logits = states = None
    for rows in by_length.values():
        group_logits, group_states = step_graph(torch.stack([prompts[i] for i in rows]))
        index = torch.tensor(rows, device=group_logits.device)
        if logits is None:
            logits = group_logits.new_empty((len(prompts), group_logits.shape[-1]))
            states = tuple(s.new_empty((len(prompts), *s.shape[1:])) for s in group_states)
        logits[index] = group_logits[:, -1]
        for full, part in zip(states, group_states):
            full[index] = part
    return logits, states


def _stopped(stopping_criteria, sequences: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """transformers' StoppingCriteria(List) answers one bool or one per row."""
    done = stopping_criteria(sequences, logits)
    return torch.as_tensor(done, device=sequences.device).expand(sequences.shape[0])


@torch.no_grad()
def generate(
    step_graph: fx.GraphModule,
    decode_step: Callable[[tuple[torch.Tensor, ...]], Callable[[torch.Tensor], torch.Tensor]],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    max_new_tokens: int,
    sampling: Sampling,
    eos_token_ids: Sequence[int],
    pad_token_id: int | None,
    generator: torch.Generator | None = None,
    streamer=None,
    stopping_criteria=None,
) -> torch.Tensor:
    """(batch, prompt + new) token ids. ``decode_step(states)`` returns the step to run from those states (an
    ``EagerDecodeStep`` or a ``CudaGraphDecodeStep``, started)."""
    batch = input_ids.shape[0]
    if streamer is not None and batch != 1:
        raise ValueError(f"a streamer takes one sequence, as in transformers, got a batch of {batch}: generate one prompt")
    if streamer is not None:
        streamer.put(input_ids.cpu())
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=input_ids.device)
    pad = torch.tensor(pad_token_id if pad_token_id is not None else 0, device=input_ids.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    can_stop = eos.numel() > 0 or stopping_criteria is not None

    logits, states = prefill(step_graph, prompt_tokens(input_ids, attention_mask))
    step = decode_step(states) if max_new_tokens > 1 else None
    new_tokens: list[torch.Tensor] = []
    for position in range(max_new_tokens):
        tokens = torch.where(finished, pad, next_tokens(logits, sampling, generator))
        new_tokens.append(tokens)
        if streamer is not None:
            streamer.put(tokens.cpu())
        if can_stop:
            finished |= torch.isin(tokens, eos)
            if stopping_criteria is not None:
                finished |= _stopped(stopping_criteria, torch.cat([input_ids, torch.stack(new_tokens, 1)], 1), logits)
            if bool(finished.all()):
                break
        if position + 1 < max_new_tokens:
            logits = step(tokens[:, None])
    if streamer is not None:
        streamer.end()
    return torch.cat([input_ids, torch.stack(new_tokens, 1).to(input_ids.dtype)], dim=1)
