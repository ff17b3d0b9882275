"""The GRPO loss's production maths, beside the ops that run it (issue 31: out of r1core/ref, which holds
only independent oracles):

    options.py    the objective options: their choice lists and defaults (the one home of each, imported by
                  the config, the TRL mapping and the validators) and their validation
    math.py       the per-token GRPO terms, the aggregation weights, the terms layout, GRPOStats
    objective.py  the GRPO-family objective maths on [B, T] log-probs (validated by options.py)

Nothing is imported here, so each module loads alone (tests/test_layout.py imports every module alone)."""
