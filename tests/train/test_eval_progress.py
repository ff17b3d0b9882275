"""Where a user waits on an evaluation, a bar over the decode steps shows how far it is and the time left."""
import r1core
from r1core.train import build
from r1core.train.evaluate import evaluate_policy
from tinyrl import CharTokenizer, TinyTask, make_tiny_llama


def test_generate_reports_every_decode_step(tmp_path):
    model = r1core.load_model(make_tiny_llama(tmp_path / "m"))
    seen = []
    r1core.generate(model, [[1, 2, 3]], num_samples=2, max_new_tokens=5, eos_token_id=[], seed=0,
                    progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 5) for i in range(1, 6)]


def test_eval_shows_a_bar_with_the_time_left(tmp_path, capsys):
    model = r1core.load_model(make_tiny_llama(tmp_path / "m"))
    deps = build.Deps(load_tokenizer=lambda s: CharTokenizer(), get_task=lambda name, **kw: TinyTask())
    quiet = evaluate_policy(model, CharTokenizer(), TinyTask(), n=4, k=2, max_new_tokens=3, deps=deps)
    assert "eval 4x2" not in capsys.readouterr().err
    shown = evaluate_policy(model, CharTokenizer(), TinyTask(), n=4, k=2, max_new_tokens=3, deps=deps, progress=True)
    err = capsys.readouterr().err
    assert "eval 4x2" in err and "tok" in err and "<" in err          # tqdm's [elapsed<remaining]
    assert shown == quiet                                               # the bar changes nothing measured
