"""The bench machinery (`r1core bench`): what a case is, how it is timed, and the runner.

The cases themselves live outside the package, one file per op in benches/bench_<op>.py of the
source tree, each exposing `cases(device, quick) -> list[Case]`; r1core never imports them as a
package (tests/test_layout.py holds that), the runner loads them by path.
"""
from r1core.bench.case import DTYPES, Case
from r1core.bench.timing import peak_extra_bytes, quantiles, sync, time_fn

__all__ = ["Case", "DTYPES", "peak_extra_bytes", "quantiles", "sync", "time_fn"]
