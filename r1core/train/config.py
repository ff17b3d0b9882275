"""Run configuration: small keyword-only dataclasses, YAML in and out, `key=value` overrides.

A run is one `Config` with a section per concern (model, task, rollout, optim, grpo, sft, sample,
run, pipeline).  Options are addressed by dotted keys (`optim.lr=3e-6`); docs/spec.md §5's top-level keys
(`model`, `task`, `steps`, `seed`, `out`, `save_every`, `resume`, …) are shortcuts for the dotted
ones (see SHORTCUTS).  Values are parsed as YAML scalars (`true`, `1e-5`, `[0.9, 0.99]`) and
type-checked against the field, so a typo or a wrong type fails before any work starts.

    cfg = load_config("configs/default.yaml", ["steps=20", "grpo.beta=0.04"])
    save_config(cfg, "run/config.yaml")
"""
from __future__ import annotations

import math

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# the objective options' choice lists have one home, shared with the loss ops and the TRL mapping
from r1core.ops.grpo.options import DEFAULTS as OBJECTIVE_DEFAULTS
from r1core.ops.grpo.options import IS_LEVELS, OBJECTIVE_AGGS, POLICIES, ROLLOUT_IS_MODES


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None, *, key: str | None = None):
    """A field with a default, its help text and (for string options) the allowed values.  `key` names
    the option where its field cannot (rollout.async: `async` is a Python keyword, the field is async_)."""
    meta = {"help": help, "choices": choices}
    if key:
        meta["key"] = key
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


DTYPES = ("float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class ModelConfig:
    source: str = opt("smollm2-135m-instruct", "policy: a HF folder, a .gguf file, a checkpoint folder or a built-in name")
    dtype: str = opt("float32", "parameter dtype of the policy (AdamW states follow it)", DTYPES)
    tokenizer: str = opt("", "tokenizer source (empty: model.source); set it when model.source is a checkpoint without one")
    ref: str = opt("", "frozen reference model for the KL term (empty: the initial policy)")
    device: str = opt("auto", "auto (cuda if available), cpu or cuda", ("auto", "cpu", "cuda"))
    autocast: str = opt("", "mixed precision of the training and log-prob forwards (torch.autocast; parameters and AdamW "
                            "stay in model.dtype): bfloat16, float16 or empty (off)", ("", "bfloat16", "float16"))
    gradient_checkpointing: bool = opt(False, "recompute activations in backward (if the model supports it)")
    checkpoint_every: int = opt(1, "with gradient_checkpointing: recompute every k-th block (1: all; r1core models only)")
    train_layers: int = opt(0, "train only the top N transformer blocks and the final norm, everything else (embeddings "
                               "and lm_head included) frozen; 0: train every parameter")


@dataclass(kw_only=True)
class TaskConfig:
    name: str = opt("arithmetic", "built-in task (r1core.tasks.get_task) or a .jsonl file")
    args: dict = opt({}, "keyword arguments of the task constructor, e.g. task.args.digits=2")
    template: str = opt("chat", "prompt format: chat (the tokenizer's chat template) or r1zero (the paper's text template)",
                        ("chat", "r1zero", "plain"))
    system: str = opt("r1zero", "system prompt of chat prompts: r1zero (the R1-Zero instructions), empty (none) or the text")
    rewards: dict = opt({}, "reward weights {name: weight}; empty: the task's own weights")
    mixture: dict = opt({}, "a weighted mixture of tasks {name: weight or {weight, args}}, e.g. "
                            "task.mixture.reasoning_gym:leg_counting=1 (non-empty: used instead of task.name)")
    lang: str = opt("en", "target language of the language-consistency reward")


@dataclass(kw_only=True)
class RolloutConfig:
    prompts: int = opt(8, "P: prompts per step (global, over all ranks)")
    group_size: int = opt(8, "G: completions sampled per prompt")
    max_new_tokens: int = opt(64, "completion length limit")
    temperature: float = opt(1.0, "sampling temperature (0: greedy)")
    top_p: float = opt(1.0, "nucleus sampling threshold")
    top_k: int = opt(0, "top-k sampling (0: off)")
    gen_batch: int = opt(0, "prompts per generate() call (0: all of a rank's prompts in one call)")
    async_: bool = opt(False, "one-step off-policy GRPO: generate the next step's rollout from the current weights "
                              "in a worker thread while this step's update runs (grpo stages; docs/train.md)",
                       key="async")
    max_staleness: int = opt(1, "with rollout.async: how many optimizer updates the rollout's weights may lag the "
                                "trained ones (0: none, the synchronous trainer; 1: one-step off-policy)")


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = opt(1e-5, "peak learning rate (AdamW)")
    betas: list = opt([0.9, 0.99], "AdamW betas")
    weight_decay: float = opt(0.0, "AdamW decoupled weight decay")
    eps: float = opt(1e-8, "AdamW epsilon")
    warmup: int = opt(0, "linear warm-up, in training steps")
    schedule: str = opt("constant", "learning-rate schedule after warm-up", ("constant", "cosine"))
    min_lr_ratio: float = opt(0.1, "cosine floor as a fraction of lr")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this (0: off)")
    micro_batch: int = opt(8, "sequences per forward/backward on each rank (memory only: results do not change)")
    mini_batches: int = opt(1, "optimizer steps per pass: the step's prompt groups are dealt round-robin into this "
                               "many mini-batches, each accumulating the gradients of its micro-batches")


@dataclass(kw_only=True)
class GRPOConfig:
    beta: float = opt(0.0, "k3 KL weight to the frozen reference (0: no reference model at all)")
    eps_low: float = opt(0.2, "clip ratio below at 1 - eps_low")
    eps_high: float = opt(0.2, "clip ratio above at 1 + eps_high (DAPO: 0.28)")
    loss_agg: str = opt("token_mean", "loss aggregation (docs/spec.md §2; seq_mean_token_sum: LUSPO's, docs/objectives.md)",
                        OBJECTIVE_AGGS)
    # the GRPO-family objective options (docs/objectives.md; any non-default runs the loss's general path)
    policy: str = opt("clip", "policy term: clip (PPO/GRPO), cispo (MiniMax-M1; eps_high is then the raw upper "
                              "bound on the ratio, e.g. 5), sapo (soft gate), vespo", POLICIES)
    importance_sampling_level: str = opt("token", "importance ratio per token, or one per sequence (GSPO)",
                                         IS_LEVELS)
    delta: float = opt(0.0, "INTELLECT-2's cap on the unclipped ratio of the clip policy (0: off; else > 1)")
    use_bias_correction_kl: bool = opt(False, "KL term times the importance ratio (DeepSeek-V3.2)")
    off_policy_mask_threshold: float = opt(0.0, "DeepSeek-V3.2's off-policy sequence mask threshold (0: off)")
    rollout_is: str = opt("auto", "rollout importance-sampling correction, with the sampler's untruncated log-probs "
                                  "(Rollout.logp_policy) as the behaviour policy: auto (sequence_mask when "
                                  "rollout.async lags the weights, else off), off, or a mode",
                          ("auto", "off", *ROLLOUT_IS_MODES))
    rollout_is_min: float = opt(0.0, "rollout_is lower bound C_min (0: none)")
    rollout_is_max: float = opt(3.0, "rollout_is upper bound C_max (TRL's default 3)")
    entropy_coef: float = opt(0.0, "entropy bonus weight: loss -= entropy_coef · mean token entropy")
    top_entropy_quantile: float = opt(1.0, "train only the top quantile of tokens by entropy (1: all)")
    log_entropy: bool = opt(True, "log entropy_mean (the loss pass's per-token entropy: one more running sum)")
    sapo_temperature_pos: float = opt(1.0, "SAPO gate temperature for A > 0")
    sapo_temperature_neg: float = opt(1.05, "SAPO gate temperature for A <= 0")
    scale: str = opt("group", "advantage scale (docs/spec.md §1)", ("group", "batch", "none"))
    baseline: str = opt("mean", "advantage baseline (docs/spec.md §1)", ("mean", "rloo"))
    mu: int = opt(1, "optimisation passes over each step's batch")
    drop_zero_variance: bool = opt(False, "drop groups whose rewards are all equal before the update")
    chunk_size: int = opt(0, "fused linear loss chunk in tokens (0: the op's default)")
    routing_replay: bool = opt(True, "MoE policies: train through the experts the rollout used (Rollout.expert_ids)")
    share_prefix: bool = opt(True, "compute each prompt once per group in the log-prob and update forwards "
                                   "(shared-prefix packing, r1core.train.packing)")
    backend: str = opt("", "backend of the advantage / log-prob / loss ops (empty: docs/spec.md §6 default; torch: the eager "
                           "references, the bench baseline)", ("", "torch", "cpp", "triton", "cuda"))


@dataclass(kw_only=True)
class SFTConfig:
    data: str = opt("builtin:arithmetic", "JSONL of {prompt, completion} records, or builtin:arithmetic (a generated "
                                          "cold-start set, r1core.train.coldstart)")
    examples: int = opt(256, "size of a builtin: cold-start set")
    epochs: float = opt(1.0, "passes over the data")
    lr: float = opt(1e-5, "peak learning rate of SFT stages")
    batch: int = opt(8, "sequences per optimizer step")
    max_len: int = opt(512, "truncate prompt+completion to this many tokens")


@dataclass(kw_only=True)
class SampleConfig:
    """Rejection sampling / distillation data generation."""
    teacher: str = opt("", "model that writes the samples (empty: the stage's model)")
    prompts: int = opt(64, "train prompts to sample (0: all)")
    k: int = opt(4, "samples per prompt")
    keep_per_prompt: int = opt(1, "at most this many kept samples per prompt")
    min_language: float = opt(0.0, "drop samples whose language reward is below this")
    require_format: bool = opt(True, "keep only samples whose format reward is 1")
    temperature: float = opt(0.7, "sampling temperature")
    max_new_tokens: int = opt(256, "completion length limit")


@dataclass(kw_only=True)
class RunConfig:
    steps: int = opt(20, "RL steps (each: P·G rollouts, then mu passes of updates)")
    seed: int = opt(0, "seed of data order, sampling and initialisation")
    out: str = opt("runs/default", "the run folder (`r1core train` without out=: runs/<recipe>, runs/<recipe>-quick)")
    save_every: int = opt(1, "checkpoint every N steps (0: only at the end)")
    keep_last: int = opt(2, "keep the newest N checkpoints")
    resume: bool = opt(False, "continue from the newest checkpoint in `out`")
    overwrite: bool = opt(False, "start afresh in a non-empty `out` (the previous run's files are removed)")
    resume_changed: bool = opt(False, "with resume=true: continue although the config differs from the saved run's")
    eval_every: int = opt(0, "held-out evaluation every N steps (0: only before and after)")
    eval_n: int = opt(32, "held-out questions per evaluation (0: skip evaluation)")
    eval_k: int = opt(1, "samples per held-out question (pass@1 averaged over k, cons@k)")
    eval_temperature: float = opt(0.0, "evaluation sampling temperature (0: greedy)")
    profile_steps: str = opt("", "a:b: bracket steps a..b-1 with cudaProfilerStart/Stop for nsys")
    tensorboard: bool = opt(True, "write TensorBoard logs when tensorboard is installed")
    progress: bool = opt(True, "show a progress bar")
    plot: bool = opt(True, "write curves.png at the end (needs matplotlib)")
    dist: str = opt("fsdp", "data parallelism under torchrun: fsdp (FSDP2 fully_shard) or ddp", ("fsdp", "ddp"))
    threads: int = opt(0, "torch CPU threads (0: torch's default)")


@dataclass(kw_only=True)
class CheckpointConfig:
    """What a checkpoint holds (size: SmolLM2-135M in float32 is 540 MB of weights)."""
    dtype: str = opt("", "dtype of the saved weights (empty: model.dtype); bfloat16 halves a float32 checkpoint, "
                         "and a resume from it continues from the rounded weights", ("",) + DTYPES)
    final_optimizer: bool = opt(False, "keep the AdamW state in a stage's final checkpoint too (needed only to train "
                                       "that stage further; intermediate checkpoints always hold it)")


@dataclass(kw_only=True)
class PipelineConfig:
    recipe: str = opt("grpo", "stages to run: grpo (one RL stage), cold_start_rl (SFT on sft.data, then RL), r1zero, "
                              "r1, distill, study (r1 + distill + r1zero, the paper's comparisons) or custom",
                      ("grpo", "cold_start_rl", "r1zero", "r1", "distill", "study", "custom"))
    stages: list = opt([], "custom stages: [{name, kind: grpo|sft|sample, init: base|prev|PATH, set: {key: value}}]")
    final_steps: int = opt(0, "GRPO steps of the r1 recipe's final RL stage (0: a third of run.steps, at least 1)")


@dataclass(kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


# `r1core train` without --config runs this recipe (configs/default.yaml spells out the same run):
# SmolLM2-135M-Instruct, a cold-start SFT on formatted single-digit sums, then GRPO on two-digit sums;
# chosen by experiment to finish within ~15 minutes on a 2-core CPU (docs/train.md).
EMBEDDED_DEFAULT = {
    "model": {"source": "smollm2-135m-instruct", "train_layers": 8},
    "task": {"name": "arithmetic", "args": {"digits": 2, "ops": "+"}, "template": "plain",
             "rewards": {"accuracy": 1.0, "format": 0.5}},
    "rollout": {"prompts": 8, "group_size": 8, "max_new_tokens": 40, "temperature": 0.7},
    "optim": {"lr": 3.0e-5, "micro_batch": 16},
    "grpo": {"eps_high": 0.28},
    "sft": {"data": "builtin:arithmetic", "examples": 128, "batch": 16, "lr": 1.0e-4},
    # the r1 / distill / study recipes' sample stages (the default run has none): two-digit sums need ~30
    # tokens, so samples stop where the RL rollouts do; 256 prompts x 4 give the SFT stage ~150 samples
    "sample": {"prompts": 256, "k": 4, "keep_per_prompt": 4, "max_new_tokens": 40},
    "run": {"steps": 30, "out": "runs/default", "save_every": 5, "keep_last": 1, "eval_n": 64, "eval_k": 4,
            "eval_temperature": 0.6},
    "pipeline": {"recipe": "cold_start_rl"},
}


def embedded_default() -> Config:
    cfg = Config()
    apply_dict(cfg, EMBEDDED_DEFAULT)
    return cfg


# docs/spec.md §5 top-level keys (and a few everyday ones) -> dotted keys
SHORTCUTS = {
    "model": "model.source", "task": "task.name", "steps": "run.steps", "seed": "run.seed",
    "out": "run.out", "save_every": "run.save_every", "keep_last": "run.keep_last",
    "resume": "run.resume", "overwrite": "run.overwrite", "profile_steps": "run.profile_steps", "lr": "optim.lr",
    "beta": "grpo.beta", "recipe": "pipeline.recipe",
}


# ---------------------------------------------------------------------------------------------
# walking the tree of dataclasses
# ---------------------------------------------------------------------------------------------
def sections(cfg: Config | None = None):
    cfg = cfg or Config()
    return [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]


def options(cfg: Config | None = None):
    """Yield (dotted key, value, field) for every leaf option."""
    for sec_name, sec in sections(cfg):
        hints = typing.get_type_hints(type(sec))
        for f in dataclasses.fields(sec):
            yield f"{sec_name}.{_key(f)}", getattr(sec, f.name), f, hints[f.name]


def _key(f: dataclasses.Field) -> str:
    """The option's name in keys, YAML and --help (the field's, unless opt(key=) renames it)."""
    return f.metadata.get("key") or f.name


def _check_type(key: str, value: Any, hint: Any, choices) -> Any:
    """Return value coerced to the field's type, or raise a ValueError naming the key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        if isinstance(value, str):           # YAML 1.1 reads 1e-5 (no dot) and nan as text
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)           # `out=123`, `profile_steps=3` (YAML reads them as numbers)
        ok = isinstance(value, str)
    elif hint is list:
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    elif hint is dict:
        ok = isinstance(value, dict)
    if not ok:
        name = getattr(hint, "__name__", str(hint))
        raise ValueError(f"config key {key!r} wants a {name}, got {value!r} ({type(value).__name__})")
    if choices and value not in choices:
        raise ValueError(f"config key {key!r} must be one of {list(choices)}, got {value!r}")
    return value


def _unknown(key: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `r1core train --help` lists them all"
    return ValueError(f"unknown config key {key!r}{hint}")


def set_option(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted option (or a SHORTCUTS key) with type checking. `task.args.x=1` and
    `task.rewards.accuracy=1` set entries of the dict-valued options."""
    key = SHORTCUTS.get(key, key)
    parts = key.split(".")
    leaves = {k: (f, h) for k, _, f, h in options(cfg)}
    head = ".".join(parts[:2])
    if head not in leaves:
        raise _unknown(key, sorted([*leaves, *SHORTCUTS]))
    f, hint = leaves[head]
    sec = getattr(cfg, parts[0])
    if len(parts) > 2:                      # an entry inside a dict option
        if hint is not dict:
            raise _unknown(key, sorted(leaves))
        d = dict(getattr(sec, parts[1]))
        cur = d
        for p in parts[2:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
        setattr(sec, parts[1], d)
        return
    setattr(sec, f.name, _check_type(key, value, hint, f.metadata.get("choices")))


def apply_dict(cfg: Config, data: dict, *, prefix: str = "") -> None:
    """Merge a nested dict (as read from YAML) into cfg; a top-level shortcut may hold a scalar."""
    if not isinstance(data, dict):
        raise ValueError(f"config {prefix or 'file'} must be a mapping, got {type(data).__name__}")
    section_names = {name for name, _ in sections(cfg)}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if not prefix and k in section_names and isinstance(v, dict):
            for kk, vv in v.items():
                set_option(cfg, f"{k}.{kk}", vv)
        else:
            set_option(cfg, key, v)


def parse_override(text: str) -> tuple[str, str]:
    """'key=value' -> (key, raw value text)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value (e.g. steps=10, grpo.beta=0.04)")
    key, raw = text.split("=", 1)
    return key.strip().removeprefix("--").replace("-", "_"), raw


def set_override(cfg: Config, key: str, raw: str) -> None:
    """Set an option from command-line text: string options take the text as is (so `out=007` and
    `profile_steps=3:5` stay strings), the others parse it as a YAML value."""
    full = SHORTCUTS.get(key, key)
    hints = {k: h for k, _, _, h in options(cfg)}
    if hints.get(full) is str:
        value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else raw
    else:
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"override {key}={raw}: cannot parse the value: {e}") from None
    set_option(cfg, key, value)


def load_config(path: str | Path | None = None, overrides: list[str] = (), *, base: Config | None = None) -> Config:
    """Defaults <- YAML file (optional) <- `key=value` overrides, each type-checked, then the whole
    config validated (ranges, choices, cross-field rules) before anything is built."""
    cfg = base if base is not None else Config()
    if path:
        data = read_yaml(path)
        reset_task_if_renamed(cfg, _task_name_in(data))
        try:
            apply_dict(cfg, data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    parsed = [parse_override(text) for text in overrides]
    renamed = [raw for key, raw in parsed if SHORTCUTS.get(key, key) == "task.name"]
    if renamed:
        reset_task_if_renamed(cfg, renamed[-1].strip().strip("'\""))
    for key, raw in parsed:
        set_override(cfg, key, raw)
    validate(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict; a syntax error names the file, line and column."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise ValueError(f"{p}: {where}: not valid YAML: {what}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid YAML: {e}") from None
    data = data if data is not None else {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a config file must be a mapping of sections (model:, run:, …), "
                         f"got a {type(data).__name__}")
    return data


def _task_name_in(data: dict) -> str | None:
    task = data.get("task")
    if isinstance(task, dict):
        return task.get("name")
    return task if isinstance(task, str) else None


def reset_task_if_renamed(cfg: Config, name: str | None) -> None:
    """Choosing another task drops the previous task's arguments and reward weights: the new task
    starts from its own constructor defaults and its own rewards (`task=countdown` on the embedded
    recipe must not pass arithmetic's digits= to countdown).  Arguments and rewards given with the
    new name (task.args.x=…, a file's task: section) are applied after this."""
    if name is not None and str(name) != cfg.task.name:
        cfg.task.args, cfg.task.rewards = {}, {}


def validate(cfg: Config) -> None:
    """The whole config, before any work starts: every number against its range (r1core.train.limits,
    non-finite floats refused), then cross-field checks that single-field typing cannot express."""
    from r1core.train.limits import check_value
    for key, value, f, hint in options(cfg):
        if hint is list and key == "optim.betas":
            continue                                 # checked below, as a pair
        check_value(key, value)
    r, o, g, run = cfg.rollout, cfg.optim, cfg.grpo, cfg.run
    if o.mini_batches > r.prompts:
        raise ValueError(f"config key 'optim.mini_batches' ({o.mini_batches}) cannot exceed rollout.prompts ({r.prompts})")
    if len(o.betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                    for b in o.betas):
        raise ValueError(f"config key 'optim.betas' must be two numbers in [0, 1), got {o.betas}")
    if run.profile_steps:
        parse_profile_steps(run.profile_steps)
    for name, w in cfg.task.rewards.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise ValueError(f"config key 'task.rewards.{name}' must be a finite number, got {w!r}")
    if cfg.task.mixture:     # names and weights refused here, before a model is loaded
        from r1core.tasks.mixture import parse_mixture
        parse_mixture(cfg.task.mixture)
    elif cfg.task.name.startswith("reasoning_gym:"):   # the generator's name and options, likewise
        from r1core.tasks.rgym import check_options
        check_options(cfg.task.name.partition(":")[2], dict(cfg.task.args))
    if g.delta != 0 and not g.delta > 1:
        raise ValueError(f"config key 'grpo.delta' must be 0 (off) or > 1, got {g.delta}")
    if g.delta != 0 and g.policy != "clip":
        raise ValueError(f"config key 'grpo.delta' caps the clip policy's ratio; grpo.policy is {g.policy!r}")
    if run.resume and run.overwrite:
        raise ValueError("config keys 'run.resume' and 'run.overwrite' are both true: resume continues the run in "
                         "run.out, overwrite starts it afresh; choose one")
    if g.backend:
        _check_backend(g.backend)
    if r.max_staleness > 1:
        raise ValueError(f"config key 'rollout.max_staleness' = {r.max_staleness}: 0 or 1 for now (one rollout in "
                         "flight; docs/train.md, 'One-step off-policy GRPO')")
    if g.rollout_is_min and g.rollout_is_min >= g.rollout_is_max:
        raise ValueError(f"config key 'grpo.rollout_is_min' ({g.rollout_is_min}) must be below grpo.rollout_is_max "
                         f"({g.rollout_is_max})")


def objective_options(g: "GRPOConfig") -> dict:
    """grpo.* -> the objective keywords of the loss ops (only the non-default ones, so the plain clip
    objective keeps the single-pass loss)."""
    kw = {}
    if g.policy != OBJECTIVE_DEFAULTS["policy"]:
        kw["policy"] = g.policy
    if g.importance_sampling_level != OBJECTIVE_DEFAULTS["importance_sampling_level"]:
        kw["importance_sampling_level"] = g.importance_sampling_level
    if g.delta:
        kw["delta"] = g.delta
    if g.use_bias_correction_kl and g.beta > 0:
        kw["use_bias_correction_kl"] = True
    if g.off_policy_mask_threshold:
        kw["off_policy_mask_threshold"] = g.off_policy_mask_threshold
    if g.entropy_coef:
        kw["entropy_coef"] = g.entropy_coef
    if g.top_entropy_quantile < 1:
        kw["top_entropy_quantile"] = g.top_entropy_quantile
    if g.policy == "sapo":
        kw.update(sapo_temperature_pos=g.sapo_temperature_pos, sapo_temperature_neg=g.sapo_temperature_neg)
    return kw


def rollout_is_options(cfg: Config) -> dict:
    """grpo.rollout_is* -> the loss ops' rollout_is keywords ({} when the correction is off).  auto turns it on
    (sequence_mask, TRL's default) exactly when the rollout may lag the trained weights: rollout.async with
    rollout.max_staleness > 0."""
    g = cfg.grpo
    mode = g.rollout_is
    if mode == "auto":
        mode = "sequence_mask" if cfg.rollout.async_ and cfg.rollout.max_staleness > 0 else "off"
    if mode == "off":
        return {}
    return {"rollout_is": mode, "rollout_is_min": g.rollout_is_min or None, "rollout_is_max": g.rollout_is_max}


# the ops a GRPO / SFT step runs with backend=grpo.backend (r1core/train/grpo.py, sft.py)
TRAINER_OPS = ("grpo_advantages", "fused_linear_logprobs", "fused_linear_grpo_loss")


def _check_backend(backend: str) -> None:
    """grpo.backend must be a backend every trainer op implements: caught here, not after a rollout."""
    from r1core._backend import OPS
    from r1core.ops import advantage  # noqa: F401, PLC0415 (declare their dispatch tables)
    from r1core.ops.grpo import fused_linear  # noqa: F401, PLC0415
    lacking = [name for name in TRAINER_OPS if backend not in OPS[name].backends]
    if lacking:
        raise ValueError(f"config key 'grpo.backend' = {backend!r} is not implemented by " + ", ".join(
            f"{n} (it has {', '.join(OPS[n].backends)})" for n in lacking))


def parse_profile_steps(text: str) -> tuple[int, int]:
    """'a:b' -> (a, b), the half-open range of steps to capture."""
    try:
        a, b = (int(x) for x in str(text).split(":"))
    except ValueError:
        raise ValueError(f"config key 'run.profile_steps' must be 'a:b' with integers a < b, got {text!r}") from None
    if not 0 <= a < b:
        raise ValueError(f"config key 'run.profile_steps' must be 'a:b' with 0 <= a < b, got {text!r}")
    return a, b


def to_dict(cfg: Config) -> dict:
    d = dataclasses.asdict(cfg)
    for sec_name, sec in sections(cfg):           # fields renamed by opt(key=) under their key
        d[sec_name] = {_key(f): d[sec_name][f.name] for f in dataclasses.fields(sec)}
    return d


def from_dict(data: dict) -> Config:
    cfg = Config()
    apply_dict(cfg, data)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def help_text() -> str:
    """Every option with its default and help, grouped by section (the body of `--help`)."""
    rev = {v: k for k, v in SHORTCUTS.items()}
    lines = []
    for sec_name, sec in sections():
        lines.append(f"\n{sec_name}:" + (f"  ({type(sec).__doc__.strip()})" if type(sec).__doc__ and
                                            not type(sec).__doc__.startswith(type(sec).__name__) else ""))
        for f in dataclasses.fields(sec):
            key = f"{sec_name}.{_key(f)}"
            default = getattr(sec, f.name)
            shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            choices = f.metadata.get("choices")
            extra = f" [{'|'.join(choices)}]" if choices else ""
            alias = f" (also `{rev[key]}=`)" if key in rev else ""
            lines.append(f"  {key}={shown}{extra}\n      {f.metadata.get('help', '')}{alias}")
    return "\n".join(lines)
