"""The GRPO loss in one place: the public ops, their arguments, row kernels and maths.

    loss.py          grpo_loss, logprobs, logp_entropy (on logits) and the general objective path
    fused_linear.py  fused_linear_grpo_loss, fused_linear_logprobs, fused_linear_logp_entropy (hidden
                     states + lm_head, never the [N, V] logits) and the chunk engine they share
    rows.py          the row-kernel interface, one object per backend (torch, cpp, triton), and the
                     torch.library custom ops that run it
    args.py          every argument check, once per call (one device sync for the value checks)
    options.py       the objective options: their choice lists and defaults (the one home of each,
                     imported by the config, the TRL mapping and the validators) and their validation
    math.py          the per-token GRPO terms, the aggregation weights, the terms layout, GRPOStats
    objective.py     the GRPO-family objective maths on [B, T] log-probs (validated by options.py)

The kernels live in kernels/grpo_loss.py, kernels/fused_linear.py and csrc/grpo_loss/; the test oracle,
which shares no code with any of this, in r1core/ref/grpo_oracle.py (docs/ops.md).  Nothing is imported
here, so each module loads alone (tests/test_import_cycles.py imports every module alone)."""
