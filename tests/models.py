"""Small random Mamba models the tests build (no hub, no downloads)."""

import torch
from transformers import MambaConfig, MambaForCausalLM

TINY = dict(vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=4)
# state-spaces/mamba-130m-hf's config: d_model 768, 24 layers, d_state 16, dt_rank 48, vocab 50280.
# Random weights at a trained model's scale (std 0.02): with transformers' default of 0.1 for every
# linear the residual stream grows to ~700 and transformers' own fp32 forward differs from its fp64
# forward by 1.6e-4 of the logits' max, more than the 1e-4 the equivalence tests demand.
MAMBA_130M = dict(
    vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24, expand=2, conv_kernel=4,
    time_step_rank=48, initializer_range=0.02,
)


def random_mamba(seed: int = 0, **overrides) -> MambaForCausalLM:
    """A randomly initialised MambaForCausalLM in eval mode; ``overrides`` replace TINY's values."""
    torch.manual_seed(seed)
    config = MambaConfig(**{**TINY, **overrides})
    return MambaForCausalLM(config).eval()


def hf_logits(model: MambaForCausalLM, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids, use_cache=False).logits
