"""r1core benches: every op against the PyTorch reference and the best installable peers.

Run all of them with `r1core bench` (or `python -m benches`); see benches/runner.py.  Each
bench_<op>.py exposes `cases(device, quick) -> list[Case]`.
"""
