"""Calculator speed: structure build, one allocation solve, and a page re-render for a new ratio.

    make bench          # or: .venv/bin/python bench/bench_calculator.py

Targets (issues #2, #12): LLaVA-1.5-7B structure from its preset < 1 s after imports; one solve < 10 ms (mixed
rounding included); the page
re-renders a new ratio without rebuilding the model. Figures go to bench/RESULTS.md by hand, with the machine.
"""

import platform
import statistics
import time
from pathlib import Path

t0 = time.perf_counter()
import torch  # noqa: E402  (timed: the imports are part of the figure)
import transformers  # noqa: E402
import transformers.models.llava.modeling_llava  # noqa: E402,F401  (what transformers imports lazily on first use)

from toolkit import AllocationSpec, Budget, Ratio, allocate, load_structure  # noqa: E402
from toolkit.calculator.structure import presets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

IMPORT_S = time.perf_counter() - t0


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def main():
    print(f"python {platform.python_version()} · torch {torch.__version__} · transformers {transformers.__version__} "
          f"· {platform.processor() or platform.machine()} · {len(__import__('os').sched_getaffinity(0))} cores")
    print(f"imports (torch, transformers + its llava modeling module, toolkit): {IMPORT_S:.2f} s")
    _, cold = timed(lambda: load_structure("llava-1.5-7b"), 1)
    print(f"llava-1.5-7b structure, first call after imports: {cold[0]:.3f} s")
    s, warm = timed(lambda: load_structure("llava-1.5-7b"), 10)
    print(f"llava-1.5-7b structure, warm: median {statistics.median(warm) * 1000:.0f} ms, max {max(warm) * 1000:.0f} ms")
    for name in presets():
        load_structure(name)  # warm the module import
        _, t = timed(lambda n=name: load_structure(n), 3)
        print(f"  {name:<24} {statistics.median(t) * 1000:6.0f} ms")
    for rounding in ("mixed", "uniform"):
        for mode in ("rank", "share"):
            spec = AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8), mode=mode, rounding=rounding)
            a, t = timed(lambda spec=spec: allocate(s, spec), 200)
            print(f"solve 1:4:1 @ rank-8 budget, {mode} mode, {rounding} rounding: median "
                  f"{statistics.median(t) * 1000:.2f} ms, p99 {sorted(t)[197] * 1000:.2f} ms -> mean ranks "
                  f"{a.ranks_label()} error {a.budget_error:+.2f}%")
    a = allocate(s, AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8)))
    _, t = timed(lambda: a.lora_config_dict(), 50)
    print(f"LoraConfig export (with pattern self-check): median {statistics.median(t) * 1000:.2f} ms")

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    _, t = timed(at.run, 1)
    print(f"page first render (builds llava-1.5-7b, canonical grid, charts): {t[0]:.2f} s")
    renders = []
    for text in ("2:4:1", "1:2:1", "1:4:1"):
        _, t = timed(lambda text=text: at.text_input(key="ratio_text").set_value(text).run(), 1)
        renders.append(t[0])
    print(f"page re-render for a new ratio (structure cached): median {statistics.median(renders):.2f} s "
          f"-> {[m.value for m in at.metric]}")


if __name__ == "__main__":
    main()
