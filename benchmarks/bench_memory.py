"""Peak memory of experiments over datasets: does it grow with the number of examples?

Each case runs in a fresh process (`ru_maxrss` is a process-lifetime peak) through nnrun's whole
run path (compile, load, chunked execute, sinks streaming to a run directory). Cases:

* `dump`: every layer's residual stream at every position, saved per example (the largest
  per-example output a researcher asks for), over N IOI prompts;
* `patching`: the built-in patching experiment (every layer × position) over N IOI pairs;
* `floor`: compile + load the model only (what the process costs before any example runs).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_memory.py --sizes 250 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def experiment(case: str, data: Path) -> dict:
    from omegaconf import OmegaConf

    if case == "patching":
        raw = OmegaConf.load(REPO / "experiments" / "patching.yaml")
        raw.pop("defaults", None)
        cfg = OmegaConf.to_container(raw, resolve=True)
        cfg["data"] = {"file": str(data)}
        return cfg
    return {"format": 1, "name": "dump", "data": {"file": str(data)},
            "graph": {"scopes": [{"id": "t", "kind": "trace", "input": {"column": "clean"}}],
                      "nodes": [{"id": "resid", "op": "read", "site": "layer_output",
                                 "layer": "all", "position": "all", "scope": "t"},
                                {"id": "out", "op": "save"}],
                      "edges": [{"src": "resid", "dst": "out"}]}}


def child(case: str, data: Path, out: Path) -> None:
    """One measurement, in this (fresh) process."""
    import torch
    import yaml

    from nnrun.models import load_model
    from nnrun.pipeline import compile_program, run

    torch.set_num_threads(1)
    cfg = experiment("dump" if case == "floor" else case, data)
    cfg["model"] = yaml.safe_load((REPO / "configs" / "model" / "demo.yaml").read_text())
    t0 = time.perf_counter()
    if case == "floor":
        compiled = compile_program(cfg)
        load_model(compiled.model)
        examples, batch = compiled.binding.n_examples, compiled.batch_size
    else:
        run(cfg, out)
        manifest = json.loads((out / "manifest.json").read_text())
        examples, batch = manifest["examples"], manifest["batch_size"]
    result = {"case": case, "examples": examples, "batch_size": batch,
              "seconds": round(time.perf_counter() - t0, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if case != "floor":
        result["output_mb"] = round(sum(f.stat().st_size for f in out.rglob("*.safetensors"))
                                    / 2**20, 1)
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 1000])
    ap.add_argument("--cases", nargs="+", default=["floor", "dump", "patching"])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for n in args.sizes:
            data = Path(tmp) / f"ioi_{n}.jsonl"
            subprocess.run([sys.executable, "-m", "nnrun.demo.datasets", "--task", "ioi",
                            "--n", str(n), "--seed", "0", "--templates", "0,1,2,4",
                            "--out", str(data)], check=True, capture_output=True)
            for case in args.cases:
                out = Path(tmp) / f"{case}_{n}"
                proc = subprocess.run([sys.executable, __file__, "--child", case, str(data),
                                       str(out)], capture_output=True, text=True, check=True)
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    print("| case | examples | batch size | peak RSS (MB) | saved tensors (MB) | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['examples']} | {r['batch_size']} | {r['peak_rss_mb']} | "
              f"{r.get('output_mb', '—')} | {r['seconds']} |")


if __name__ == "__main__":
    main()
