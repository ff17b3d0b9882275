"""r1core inside other trainers.  Each submodule imports its trainer library, so import the one you use:

    r1core.integrations.trl    R1GRPOTrainer: TRL's GRPOTrainer with r1core's fused linear GRPO loss and
                               group-normalised advantage (needs `trl`)
    r1core.integrations.verl   r1core's advantage and policy loss registered in verl's registries
                               (adapters with verl's signatures; registration needs `verl`)
    r1core.integrations.sampler_logprobs  an r1core Rollout's sampler log-probs in TRL's / verl's
                               response layout, and TRL's importance_sampling_ratio from them (torch only)

See docs/integrations.md for the mappings and what is not mapped.
"""
