"""A reward worker process (started by pool.py as `python _worker.py`; not imported by r1core).

It loads this folder as a private package (so it needs neither torch nor r1core), imports sympy,
says "ready", then serves length-prefixed pickle frames on stdin/stdout:
    ("equiv", a, b)            -> ("ok", bool)      (sympy; "math_verify" and "verify" likewise)
    ("score", names, items)    -> ("item", [float per name]) per item, then ("done",)
    ("rg_score", name, options, answer, entry) -> ("ok", float)  (reasoning-gym's verifier, rgym.py)
    ("rg_generate", name, options, seeds) -> ("ok", [entry or None per seed])
    ("sleep", seconds)         -> ("ok", True) after sleeping (tests of the kill path; so does
                                  the reward "_sleep", registered only here, inside "score")
The parent kills it when a request passes its time limit; it also exits when its parent dies, and
keeps its address space under R1CORE_REWARD_WORKER_MEM_GB (default 4).  Modules named in
R1CORE_REWARD_PRELOAD (comma-separated; rgym.preload() adds reasoning_gym) are imported before "ready".
"""
import importlib.util
import os
import pickle
import struct
import sys
from pathlib import Path

HEADER = struct.Struct("<I")


def _die_with_parent() -> None:
    """Exit when the parent goes away, even in the middle of a long sympy call.  (Not
    PR_SET_PDEATHSIG: that fires when the parent *thread* that started us exits, and workers are
    started from whichever thread needed one.)"""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _limit_memory() -> None:
    try:
        import resource
        gb = float(os.environ.get("R1CORE_REWARD_WORKER_MEM_GB", "4"))
        limit = int(gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass


def _load_rewards():
    here = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location("_r1core_rewards", here / "__init__.py",
                                                  submodule_search_locations=[str(here)])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["_r1core_rewards"] = pkg
    spec.loader.exec_module(pkg)
    sys.modules["_r1core_rewards.symbolic"].INLINE = True
    sys.modules["_r1core_rewards.rgym"].INLINE = True
    return pkg


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def main() -> None:
    _die_with_parent()
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the frames
    _limit_memory()
    rewards = _load_rewards()
    import sympy  # noqa: F401  (paid once, before "ready")
    if os.environ.get("R1CORE_REWARD_MATH_VERIFY", "1") != "0" and importlib.util.find_spec("math_verify"):
        import logging
        import math_verify  # noqa: F401  (~1-4 s: before "ready", so it never counts in a call's limit)
        logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" warning: ours is the kill
        try:  # its first parse builds the LaTeX grammar (~0.4 s): also before "ready"
            sys.modules["_r1core_rewards.symbolic"].math_verify_equal("x^2+1", "1+x^2")
        except Exception:  # noqa: BLE001
            pass

    for module in filter(None, os.environ.get("R1CORE_REWARD_PRELOAD", "").split(",")):
        try:  # reasoning_gym: ~2 s, before "ready", so never inside a request's time limit
            importlib.import_module(module)
        except Exception:  # noqa: BLE001  (its requests then fail, scoring 0)
            pass

    def send(obj) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(HEADER.pack(len(data)) + data)
        out.flush()

    def _sleep(completion: str) -> float:  # tests: an item that overruns (exists only in workers)
        import time
        time.sleep(float(completion))
        return 1.0

    rewards.register("_sleep", _sleep)
    send(("ready",))
    symbolic = sys.modules["_r1core_rewards.symbolic"]
    while True:
        try:
            (n,) = HEADER.unpack(_read_exact(inp, 4))
            request = pickle.loads(_read_exact(inp, n))
        except EOFError:
            return
        kind = request[0]
        if kind == "equiv":
            try:
                send(("ok", bool(symbolic.sympy_equal(request[1], request[2]))))
            except Exception as e:  # noqa: BLE001 (any failure is "not equivalent")
                send(("error", repr(e)[:200]))
        elif kind in ("math_verify", "verify"):
            check = symbolic.math_verify_equal if kind == "math_verify" else symbolic.verified_equal
            try:
                send(("ok", bool(check(request[1], request[2]))))
            except Exception as e:  # noqa: BLE001
                send(("error", repr(e)[:200]))
        elif kind in ("rg_score", "rg_generate"):
            rgym = sys.modules["_r1core_rewards.rgym"]
            try:
                fn = rgym.score_inline if kind == "rg_score" else rgym.generate_inline
                send(("ok", fn(*request[1:])))
            except Exception as e:  # noqa: BLE001  (a raising verifier: no result, the reward is 0)
                send(("error", repr(e)[:200]))
        elif kind == "score":
            _, names, items = request
            fns = [rewards.get(name) for name in names]
            for completion, columns in items:
                send(("item", [fn(completion, **columns.get(name, {})) for fn, name in zip(fns, names)]))
            send(("done",))
        elif kind == "sleep":  # tests: a request that overruns its limit on purpose
            import time
            time.sleep(request[1])
            send(("ok", True))
        else:
            send(("error", f"unknown request {kind!r}"))


if __name__ == "__main__":
    main()
