"""The `r1core` command: train, eval, sample, bench, info (docs/spec.md §5).

    r1core train [--config FILE.yaml] [key=value …]     # no arguments: the embedded default recipe
    r1core eval  [--config FILE.yaml] [key=value …]     # pass@1 over k samples, cons@k, format
    r1core sample model=SOURCE prompt="What is 2+3?" [n=4] [key=value …]
    r1core bench [--ops a,b] [--quick]
    r1core info

Options are the keys of r1core.train.config (`r1core train --help` lists them with their defaults);
`--key value`, `--key=value` and `--flag` (a boolean set to true) are accepted too, with dashes or
underscores (`--profile-steps 3:5`).  Subcommands import their machinery lazily so `r1core info` and
`r1core bench` start fast.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _info(_argv: list[str]) -> int:
    import torch

    import r1core
    print(f"r1core {r1core.__version__} | torch {torch.__version__} | CUDA available: {torch.cuda.is_available()}")
    for name, status in r1core.backends().items():
        print(f"  {name:7s} {status}")
    print("optional:")
    for name, status in _optional_status().items():
        print(f"  {name:13s} {status}")
    return 0


# what the default features need beyond the core dependencies: (module, what it gives, how to get it)
OPTIONAL = {
    "matplotlib": ("curves.png of a run (run.plot)", "pip install matplotlib  (the r1core[train] extra)"),
    "tensorboard": ("TensorBoard logs of a run (run.tensorboard)", "pip install tensorboard  (the r1core[train] extra)"),
    "transformers": ("Tokenizer.to_transformers(), the TRL integration", "pip install 'r1core[trl]'"),
    "trl": ("r1core.integrations.trl", "pip install 'r1core[trl]'"),
}


def _version(module: str) -> str | None:
    import importlib.metadata as md
    import importlib.util
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return md.version(module)
    except md.PackageNotFoundError:
        return "installed"


def _optional_status() -> dict[str, str]:
    out = {}
    for module, (what, how) in OPTIONAL.items():
        v = _version(module)
        out[module] = v if v else f"missing: no {what}; {how}"
    from r1core.models import BUILTIN, resolve_source
    for name in BUILTIN:
        try:
            out[name] = str(resolve_source(name))
        except ValueError as e:
            out[name] = f"missing: {e}"
    return out


def missing_for_train(cfg) -> str | None:
    """One line naming the default features of this run that will not be produced here, and how to get
    them (None when everything is installed)."""
    import importlib.util
    gone = [(m, what) for m, what, on in (("matplotlib", "no curves.png", cfg.run.plot),
                                          ("tensorboard", "no TensorBoard logs", cfg.run.tensorboard))
            if on and importlib.util.find_spec(m) is None]
    if not gone:
        return None
    names = " and ".join(m for m, _ in gone)
    offs = " ".join(f"run.{'plot' if m == 'matplotlib' else 'tensorboard'}=false" for m, _ in gone)
    return (f"r1core train: {names} {'is' if len(gone) == 1 else 'are'} not installed, so this run writes "
            f"{' and '.join(w for _, w in gone)}: pip install {' '.join(m for m, _ in gone)} "
            f"(the r1core[train] extra), or set {offs} to silence this")


def _bench(argv: list[str]) -> int:
    from r1core.bench.runner import main as bench_main
    return bench_main(argv)


def split_args(argv: list[str], *, extra: tuple[str, ...] = ()) -> tuple[str | None, list[str], dict, bool]:
    """argv -> (config file, key=value overrides, {extra key: raw value}, help wanted)."""
    config, overrides, extras, want_help = None, [], {}, False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            want_help = True
        elif a in ("-c", "--config") or a.startswith("--config="):
            if "=" in a:
                config = a.split("=", 1)[1]
            elif i + 1 < len(argv):
                config, i = argv[i + 1], i + 1
            else:
                raise ValueError("--config needs a file name")
        elif a.startswith("--"):
            key = a[2:]
            if "=" not in key:
                if i + 1 < len(argv) and not argv[i + 1].startswith("--") and "=" not in argv[i + 1]:
                    key, i = f"{key}={argv[i + 1]}", i + 1
                else:
                    key = f"{key}=true"
            k, v = key.split("=", 1)
            overrides.append(f"{k.replace('-', '_')}={v}")
        elif "=" in a:
            overrides.append(a)
        else:
            raise ValueError(f"unexpected argument {a!r}: options are key=value (see --help)")
        i += 1
    kept = []
    for o in overrides:
        k, v = o.split("=", 1)
        if k in extra:
            extras[k] = v
        else:
            kept.append(o)
    return config, kept, extras, want_help


def _usage(command: str, lead: str, extra_help: str = "") -> str:
    from r1core.train.config import help_text
    return f"usage: r1core {command} {lead}\n{extra_help}\noptions (key=default):{help_text()}\n"


# `r1core train --quick`: a smoke run of the same recipe (a couple of minutes on a CPU)
QUICK = ["run.steps=2", "run.eval_n=8", "run.eval_k=1", "rollout.prompts=2", "rollout.group_size=4",
         "rollout.max_new_tokens=40", "sft.examples=64", "sft.batch=8", "run.save_every=0", "sample.prompts=32",
         "checkpoint.dtype=bfloat16"]


def _out_given(config: str | None, overrides: list[str]) -> bool:
    """Whether the user chose run.out (on the command line or in the config file)."""
    if "run.out" in _user_keys(overrides):
        return True
    if config:
        from r1core.train.config import read_yaml
        data = read_yaml(config)
        return "out" in data or (isinstance(data.get("run"), dict) and "out" in data["run"])
    return False


def default_out(cfg, *, embedded: bool, quick: bool) -> str:
    """runs/<recipe> (runs/default for the embedded recipe), with -quick for a smoke run: a smoke run
    and a real one, or two recipes, never share a folder."""
    from r1core.train.config import EMBEDDED_DEFAULT
    name = "default" if embedded and cfg.pipeline.recipe == EMBEDDED_DEFAULT["pipeline"]["recipe"] \
        else cfg.pipeline.recipe
    return f"runs/{name}{'-quick' if quick else ''}"


def _embedded_diff() -> str:
    from r1core.train.config import Config, embedded_default, options
    plain = {k: v for k, v, _, _ in options(Config())}
    return ", ".join(f"{k}={v}" for k, v, _, _ in options(embedded_default()) if plain[k] != v)


# SmolLM2-135M-Instruct's blocks: the embedded recipe's model.train_layers=8 is the top 8 of these 30
EMBEDDED_MODEL_BLOCKS = 30


def _user_keys(overrides: list[str]) -> set[str]:
    """The dotted keys the user's key=value overrides set (shortcuts resolved)."""
    from r1core.train.config import SHORTCUTS, parse_override
    return {SHORTCUTS.get(k, k) for k, _ in map(parse_override, overrides)}


def adapt_train_layers(cfg, user_keys: set[str]) -> str | None:
    """The embedded recipe on another model: its model.train_layers (the top 8 of SmolLM2-135M's 30
    blocks) becomes the same share of that model's blocks, unless the user set model.train_layers.
    Returns the line that says what was chosen (None when nothing changed)."""
    from r1core.train import build
    from r1core.train.config import EMBEDDED_DEFAULT
    recipe = EMBEDDED_DEFAULT["model"]
    if "model.train_layers" in user_keys or cfg.model.source == recipe["source"] or cfg.model.train_layers != \
            recipe["train_layers"]:
        return None
    blocks = build.count_blocks(cfg.model.source)   # a bad source raises ValueError: the caller prints it
    if blocks is None:
        return None
    n = build.scaled_train_layers(recipe["train_layers"], EMBEDDED_MODEL_BLOCKS, blocks)
    cfg.model.train_layers = n
    return (f"r1core train: model.train_layers={n}: training the top {n} of the {blocks} blocks of "
            f"{cfg.model.source} (the embedded recipe trains {recipe['train_layers']} of {recipe['source']}'s "
            f"{EMBEDDED_MODEL_BLOCKS}); model.train_layers=N chooses, 0 trains every parameter")


TRAIN_HELP = (
    "Runs the stages of `pipeline.recipe`. Without --config the options start from the\n"
    "embedded default recipe (configs/default.yaml: SmolLM2-135M-Instruct, a cold-start SFT on\n"
    "formatted single-digit sums, then GRPO on two-digit sums), which differs from the\n"
    "defaults below in: {diff}.\n"
    "model=SOURCE with that recipe: it trains the top 8 of SmolLM2-135M's 30 blocks, so on another\n"
    "model it trains the same share of that model's blocks (round(8 * blocks / 30), at least 1: 1 of 2,\n"
    "6 of 24) and prints what it chose, unless you give model.train_layers=N (0: every parameter).\n"
    "Plots (run.plot) need matplotlib and TensorBoard logs (run.tensorboard) need tensorboard:\n"
    "pip install 'r1core[train]'; without them the run says so and goes on.\n"
    "--quick: that recipe shrunk to a smoke run ({quick}), before your overrides; it ends with a line\n"
    "saying whether the install is healthy (a real update happened) and exits 1 if not.\n"
    "Without out=, a run goes to runs/<recipe> (runs/default for the embedded recipe; --quick: runs/<recipe>-quick).\n"
    "A non-empty out is refused unless resume=true (continue it) or overwrite=true (replace it).")


def _train(argv: list[str]) -> int:
    from r1core.train.config import embedded_default, load_config
    try:
        config, overrides, extras, want_help = split_args(argv, extra=("quick",))
        if want_help:
            print(_usage("train", "[--config FILE.yaml] [key=value …] [--quick]",
                         TRAIN_HELP.format(diff=_embedded_diff(), quick=" ".join(QUICK))))
            return 0
        quick = extras.get("quick", "false").lower() in ("1", "true", "yes")
        base = None if config else embedded_default()       # no --config: the embedded default recipe
        cfg = load_config(config, (QUICK if quick else []) + overrides, base=base)
        if not _out_given(config, overrides):
            cfg.run.out = default_out(cfg, embedded=base is not None, quick=quick)
            # a smoke run in its own default folder replaces the previous smoke run
            cfg.run.overwrite = cfg.run.overwrite or (quick and not cfg.run.resume)
        from r1core.train.preflight import check_sources
        check_sources(cfg)
        notes = [missing_for_train(cfg)]
        if base is not None:
            notes.append(adapt_train_layers(cfg, _user_keys(overrides)))
    except ValueError as e:
        print(f"r1core train: {e}", file=sys.stderr)
        return 2
    for line in filter(None, notes):
        print(line, file=sys.stderr, flush=True)
    from r1core.train.pipeline import run_pipeline
    try:
        run_pipeline(cfg)
    except ValueError as e:       # a bad model/task/data source, caught before or while building a stage
        print(f"r1core train: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_line(cfg, argv), file=sys.stderr, flush=True)
        return 130
    if quick:
        # the verdict is about the install only on the embedded recipe's model (a random or other model
        # may rightly never earn a reward in two steps): then a failed check exits 1
        from r1core.train.config import EMBEDDED_DEFAULT
        from r1core.train.smoke import health_line
        judge = base is not None and cfg.model.source == EMBEDDED_DEFAULT["model"]["source"]
        ok, line = health_line(cfg.run.out, judge=judge)
        print(line, flush=True)
        return 0 if ok or not judge else 1
    return 0


def interrupted_line(cfg, argv: list[str]) -> str:
    """Ctrl-C: one line with what was saved and the command that resumes it."""
    import shlex
    from r1core.train.rundir import saved_note
    again = [a for a in argv if not a.startswith(("resume=", "run.resume=", "overwrite=", "run.overwrite="))]
    if not any(a.startswith(("out=", "run.out=", "--out")) for a in again):
        again.append(f"out={cfg.run.out}")
    return (f"r1core train: interrupted; {saved_note(cfg.run.out)}; to continue: "
            f"r1core train {' '.join(shlex.quote(a) for a in again)} resume=true")


def _eval(argv: list[str]) -> int:
    from r1core.train.config import embedded_default, load_config
    try:
        config, overrides, extras, want_help = split_args(argv, extra=("json",))
        if want_help:
            print(_usage("eval", "[--config FILE.yaml] [key=value …] [json=true]",
                         "Evaluates model.source on task.name's held-out split: pass@1 averaged over run.eval_k\n"
                         "samples (at run.eval_temperature), cons@k and the mean format reward; an answer without a\n"
                         "marker counts by its last number or math span (accuracy's unmarked=\"last\"). Without --config\n"
                         "the options start from the embedded default run's (its task, template, sampling)."))
            return 0
        cfg = load_config(config, overrides, base=None if config else embedded_default())
        if cfg.run.eval_n == 0:
            raise ValueError("run.eval_n=0 evaluates no question: give run.eval_n=N (held-out questions; "
                             "the default run evaluates 64)")
        _model_of_run(cfg, "eval")
    except ValueError as e:
        print(f"r1core eval: {e}", file=sys.stderr)
        return 2
    try:
        return _run_eval(cfg, extras)
    except ValueError as e:
        print(f"r1core eval: {e}", file=sys.stderr)
        return 2


def _model_of_run(cfg, command: str) -> None:
    """model=<run folder> means the model that run produced (its newest checkpoint); then the sources
    and the task are checked before a model is loaded."""
    from r1core.train.preflight import check_config
    from r1core.train.rundir import model_of_run
    found = model_of_run(cfg.model.source)
    if found is not None:
        print(f"r1core {command}: {cfg.model.source} is a run folder: using its newest checkpoint {found}",
              file=sys.stderr, flush=True)
        cfg.model.source = str(found)
    elif (Path(cfg.model.source) / "run.yaml").exists():
        raise ValueError(f"model={cfg.model.source} is a run folder without a checkpoint yet")
    check_config(cfg)


def _run_eval(cfg, extras: dict) -> int:
    from r1core.train import build, distributed as D
    from r1core.train.evaluate import evaluate_policy
    info = D.init(cfg.model.device)
    build.set_threads(cfg)
    deps = build.Deps()
    tok = deps.load_tokenizer(build.tokenizer_source(cfg))
    task = build.load_task(cfg, tok, deps)
    cfg.model.train_layers = 0      # nothing is trained here: the recipe's frozen blocks do not matter
    model = build.load_policy(cfg.model.source, cfg, info.device, deps).eval()
    result = evaluate_policy(model, tok, task, n=cfg.run.eval_n, k=cfg.run.eval_k, temperature=cfg.run.eval_temperature,
                             top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_new_tokens, seed=cfg.run.seed,
                             gen_batch=cfg.rollout.gen_batch, info=info, deps=deps, progress=cfg.run.progress,
                             unmarked="last")
    if info.main:
        if extras.get("json", "false").lower() in ("1", "true", "yes"):
            print(json.dumps(result))
        else:
            print(f"{cfg.model.source} on {cfg.task.name} (held-out, {int(result['questions'])} questions, "
                  f"k={cfg.run.eval_k}, T={cfg.run.eval_temperature})")
            for k, v in result.items():
                if k not in ("questions", "samples"):
                    print(f"  {k:16s} {v:.4f}")
    D.shutdown(info)
    return 0


def _sample(argv: list[str]) -> int:
    from r1core.train.config import embedded_default, load_config
    try:
        config, overrides, extras, want_help = split_args(argv, extra=("prompt", "n"))
        if want_help:
            print(_usage("sample", "prompt=TEXT [n=1] [model=SOURCE] [key=value …]",
                         "Prints n completions of TEXT (rendered with task.template: chat, r1zero or plain),\n"
                         "sampled with rollout.temperature/top_p/top_k and rollout.max_new_tokens."))
            return 0
        if "prompt" not in extras:
            raise ValueError("give the prompt: r1core sample prompt=\"What is 17 * 23?\"")
        n = int(extras.get("n", "1"))
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        cfg = load_config(config, overrides, base=None if config else embedded_default())
        _model_of_run(cfg, "sample")
    except ValueError as e:
        print(f"r1core sample: {e}", file=sys.stderr)
        return 2
    try:
        return _run_sample(cfg, extras, n)
    except ValueError as e:
        print(f"r1core sample: {e}", file=sys.stderr)
        return 2


def _run_sample(cfg, extras: dict, n: int) -> int:
    from r1core.tasks.prompts import R1ZERO_SYSTEM, build_prompt
    from r1core.train import build
    from r1core.train.distributed import init
    from r1core.train.sampling import sample
    info = init(cfg.model.device)
    build.set_threads(cfg)
    deps = build.Deps()
    tok = deps.load_tokenizer(build.tokenizer_source(cfg))
    cfg.model.train_layers = 0      # nothing is trained here (see _run_eval)
    model = build.load_policy(cfg.model.source, cfg, info.device, deps).eval()
    system = {"r1zero": R1ZERO_SYSTEM, "": None}.get(cfg.task.system, cfg.task.system)
    text = build_prompt(extras["prompt"], template=cfg.task.template, tokenizer=tok, system=system)
    s = sample(model, tok, [text], num_samples=n, max_new_tokens=cfg.rollout.max_new_tokens,
               temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
               seed=cfg.run.seed, deps=deps)
    for i, c in enumerate(s.completions):
        # summed log-probs: under the sampling distribution, and under the untruncated policy (they differ
        # when top_k / top_p truncate; docs/train.md, "Sampler log-probs")
        lp = "" if s.logp_NT is None else f", logp {float(s.logp_NT[i].sum()):.2f}"
        pol = "" if s.logp_policy_NT is None else f", policy logp {float(s.logp_policy_NT[i].sum()):.2f}"
        print(f"--- sample {i} ({int(s.mask_NT[i].sum())} tokens{lp}{pol})\n{c}")
    return 0


COMMANDS = {
    "train": (_train, "GRPO / SFT / R1 pipeline training (`r1core train --help` lists every option)"),
    "eval": (_eval, "held-out pass@1 over k samples, cons@k and format reward of a model on a task"),
    "sample": (_sample, "sample completions of a prompt from a model"),
    "bench": (_bench, "time every op against the PyTorch reference and peers (see `r1core bench --help`)"),
    "info": (_info, "show the version and which backends are available"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: r1core <command> [options]\n\ncommands:")
        for name, (_, helptext) in COMMANDS.items():
            print(f"  {name:8s} {helptext}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nr1core: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    fn, _ = COMMANDS[argv[0]]
    from r1core._deps import MissingDependency  # noqa: PLC0415
    try:
        return fn(argv[1:])
    except MissingDependency as e:   # a broken or partial environment: one line, never a deep traceback
        print(f"r1core: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
