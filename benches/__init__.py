"""r1core's bench cases: bench_<op>.py per op (each exposes `cases(device, quick) -> list[Case]`) and
results/<machine>/.  Not installed; the runner is r1core.bench (`r1core bench`, or `python -m benches`)."""
