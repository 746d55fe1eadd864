"""Shared memory (and registers / stack) of the Triton kernels on an sm_90 GPU, found on a CPU-only host.

    python benchmarks/smem_report.py                          # fp32: D, E in {32, 64, 128}, LRPE off / on
    python benchmarks/smem_report.py --dtype bf16 --jobs 2
    python benchmarks/smem_report.py --dims 128 --lrpe on --evs 64 --verbose      # one case, every kernel listed
    python benchmarks/smem_report.py --fast                   # shared memory only: stop after LLVM IR (no ptxas)
    python benchmarks/smem_report.py --noncausal --dtype bf16 --dims 64 --evs 64 --shape 128,196,6 --verbose
                                                              # the non-causal kernels (one path), every launch listed
    LIGHTNET_TRITON_TUNING=nc_warps=4 python benchmarks/smem_report.py --noncausal ...   # another launch config

Method. The real launch code runs on CPU tensors: ``causal_forward`` / ``causal_backward`` of
:mod:`lightnet.kernels.triton_causal` (lean path, ``TUNING["c_zpass"] = 0``) and of
:mod:`lightnet.kernels.triton_causal_zpass` (default path), with every ``Launcher`` in their ``_LAUNCH`` tables
swapped for a recorder, so each launch's arguments, constexprs and options (chunk size, BLOCK_D / BLOCK_E, warps,
DOT mode, EXACT / SINGLE, BLOCK_G) are exactly the library's own; ``num_sms`` is patched to the target's SM count
(``--sms``, 132 = H100 SXM / H200) so the segment split matches a GPU. Each recorded launch is then specialised as
Triton's JIT does it (``create_function_from_signature`` + ``JITFunction._pack_args``: dtypes, 16-byte alignment,
integers divisible by 16 / equal to 1) and compiled ahead of time with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``. ``metadata.shared`` is the dynamic shared
memory a launch asks for (the number in Triton's "out of resource: shared memory, Required: ..." error); an sm_90
block may use 232,448 B. Registers and stack frame (spills and local arrays) come from ``cuobjdump
--dump-resource-usage`` on the cubin (Triton's bundled tools). Nothing runs on a GPU; TRITON_INTERPRET must be unset
(the interpreter changes the launch heuristics). Compiled kernels land in Triton's on-disk cache, so a rerun is fast.

Checked against an H200 (Triton 3.6, runs E/F): D = 128 with LRPE, fp32, E = 64 on the default path asks 273,408 B
(B3', ``_z_seg_bwd_dkdv_kernel``); E = 128 asks 269,312 B (default, first failing launch) / 235,520 B (lean).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, Iterator, List, Optional, Tuple

SMEM_LIMIT = 232448  # bytes of shared memory one block may use on sm_90 (H100 / H200)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
PATHS = ("zpass", "lean")

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("smem_report.py: unset TRITON_INTERPRET (the interpreter changes the launch heuristics)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

from lightnet.kernels import triton_causal as tc  # noqa: E402
from lightnet.kernels import triton_causal_zpass as tz  # noqa: E402
from lightnet.kernels import triton_noncausal as tn  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# recording the real launches


class _Recorder:
    """Stands in for a ``Launcher``: ``rec[grid](*args, **meta)`` appends ``(kernel name, args, meta)``."""

    def __init__(self, kernel, log: List[tuple]) -> None:
        self.kernel = kernel
        self.log = log

    def __getitem__(self, grid):
        return lambda *args, **meta: self.log.append((self.kernel.__name__, args, meta))


@contextlib.contextmanager
def recording(zpass: bool, sms: int) -> Iterator[List[tuple]]:
    """Swap every causal ``Launcher`` for a recorder, pick the path, and pretend to have ``sms`` SMs."""
    log: List[tuple] = []
    tables = (tc._LAUNCH, tz._LAUNCH)
    saved = [dict(t) for t in tables]
    old_sms, old_zpass = tc.num_sms, tc.TUNING["c_zpass"]
    try:
        for table in tables:
            for name, launcher in table.items():
                table[name] = _Recorder(launcher.kernel, log)
        tc.num_sms = lambda device: sms
        tc.TUNING["c_zpass"] = None if zpass else 0
        yield log
    finally:
        for table, old in zip(tables, saved):
            table.update(old)
        tc.num_sms, tc.TUNING["c_zpass"] = old_sms, old_zpass


@contextlib.contextmanager
def recording_noncausal(sms: int) -> Iterator[List[tuple]]:
    """Swap every non-causal ``Launcher`` for a recorder and pretend to have ``sms`` SMs (range splits)."""
    log: List[tuple] = []
    saved, old_sms = dict(tn._LAUNCH), tn.num_sms
    try:
        for name, launcher in tn._LAUNCH.items():
            tn._LAUNCH[name] = _Recorder(launcher.kernel, log)
        tn.num_sms = lambda device: sms
        yield log
    finally:
        tn._LAUNCH.update(saved)
        tn.num_sms = old_sms


def case_tensors(case: dict) -> tuple:
    """``(q, k, v, theta, mask, initial state)`` CPU tensors of a case's shape and dtype (zeros: nothing is run)."""
    B, N, H, D, E = case["B"], case["N"], case["H"], case["D"], case["E"]
    dt = getattr(torch, DTYPES[case["dtype"]])
    q, k = torch.zeros(B, N, H, D, dtype=dt), torch.zeros(B, N, H, D, dtype=dt)
    v = torch.zeros(B, N, H, E, dtype=dt)
    theta = torch.zeros(N, D) if case["lrpe"] else None
    mask = torch.zeros(B, N, dtype=torch.bool) if case["mask"] else None
    init = (torch.zeros(B, H, (2 if case["lrpe"] else 1) * D, E), torch.zeros(B, H, D)) if case["init"] else None
    return q, k, v, theta, mask, init


def record_noncausal(case: dict, sms: int) -> List[tuple]:
    """Every launch of one non-causal forward + backward (the library's own launch heuristics)."""
    q, k, v, theta, mask, init = case_tensors(case)
    with recording_noncausal(sms) as log:
        o, S, z = tn.noncausal_forward(q, k, v, 1.0, mask, theta, init)
        tn.noncausal_backward(torch.zeros_like(o), None, None, q, k, v, S, z, 1.0, mask, theta)
    return log


def record_launches(case: dict, zpass: bool, sms: int) -> List[tuple]:
    """Every launch of one causal forward + backward: ``[(kernel name, args, meta), ...]``."""
    q, k, v, theta, mask, init = case_tensors(case)
    scale = case["D"] ** -0.5
    with recording(zpass, sms) as log:
        o, S, z, saved = tc.causal_forward(q, k, v, scale, mask, theta, init)
        tc.causal_backward(torch.zeros_like(o), None, None, q, k, v, S, saved, scale, mask, theta)
    return log


# ----------------------------------------------------------------------------------------------------------------
# ahead-of-time compilation


def target() -> GPUTarget:
    return GPUTarget("cuda", 90, 32)


def kernel_fn(name: str):
    """The ``@triton.jit`` function of a kernel by name."""
    return getattr(tz, name, None) or getattr(tn, name, None) or getattr(tc, name)


def specialise(name: str, args: tuple, meta: dict) -> tuple:
    """``(name, signature, constexprs, attrs, options)`` exactly as Triton's JIT builds them at launch."""
    fn = kernel_fn(name)
    backend = make_backend(target())
    kwargs = dict(meta, debug=False, instrumentation_mode="")
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, opts = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
    return name, signature, constexprs, attrs, options.__dict__


def job_key(job: tuple) -> str:
    """Hashable identity of a specialised launch (equal keys compile to the same kernel)."""
    name, signature, constexprs, attrs, options = job
    return repr((name, sorted(signature.items()), sorted(constexprs.items()), sorted(attrs.items()),
                 sorted((k, repr(v)) for k, v in options.items())))


def resource_usage(cubin: bytes) -> Dict[str, int]:
    """``{'regs', 'stack'}`` of a cubin's kernel from the bundled ``cuobjdump --dump-resource-usage``."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.remove(f.name)
    found = {key: re.search(rf"\b{tag}:(\d+)", out) for key, tag in (("regs", "REG"), ("stack", "STACK"))}
    return {key: int(m.group(1)) if m else -1 for key, m in found.items()}


def shared_from_llir(job: tuple) -> int:
    """Shared memory of a launch, running Triton's stages only up to LLVM IR (where ``shared`` is fixed)."""
    from triton._C.libtriton import ir

    name, signature, constexprs, attrs, options = job
    backend = make_backend(target())
    opts = backend.parse_options(options)
    src = ASTSource(kernel_fn(name), signature, constexprs, attrs)
    stages: dict = {}
    backend.add_stages(stages, opts, src.language)
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    module = src.make_ir(target(), opts, backend.get_codegen_implementation(opts), backend.get_module_map(), context)
    metadata = {"hash": "smem_report", "target": target(), **opts.__dict__}
    for ext, stage in stages.items():
        module = stage(module, metadata)
        if ext == "llir":
            break
    return int(metadata["shared"])


def compile_job(job: tuple, fast: bool) -> Dict[str, int]:
    """``{'shared', 'regs', 'stack', 'warps', 'stages'}`` of one specialised launch (regs / stack -1 with ``fast``)."""
    name, signature, constexprs, attrs, options = job
    if fast:
        return {"shared": shared_from_llir(job), "regs": -1, "stack": -1,
                "warps": options["num_warps"], "stages": options["num_stages"]}
    src = ASTSource(kernel_fn(name), signature, constexprs, attrs)
    compiled = triton.compile(src, target=target(), options=options)
    md = compiled.metadata
    return {"shared": md.shared, **resource_usage(compiled.asm["cubin"]), "warps": md.num_warps,
            "stages": md.num_stages}


# ----------------------------------------------------------------------------------------------------------------
# cases and report


def launch_label(name: str, meta: dict) -> str:
    """``_z_seg_out_kernel[EXACT]`` style label of a launch."""
    flags = [k for k in ("EXACT", "SINGLE", "FUSED", "MERGE", "SUM_PARTIALS") if meta.get(k)]
    return name + (f"[{','.join(flags)}]" if flags else "")


def build_cases(args) -> List[dict]:
    """Every (D, LRPE, E) case of the command line, as dicts of launch shape and options."""
    B, N, H = (int(x) for x in args.shape.split(","))
    lrpes = {"off": (False,), "on": (True,), "both": (False, True)}[args.lrpe]
    return [dict(dtype=args.dtype, B=B, N=N, H=H, D=D, E=E, lrpe=lrpe, mask=not args.no_mask, init=args.init)
            for D in args.dims for lrpe in lrpes for E in args.evs]


def plan(cases: List[dict], sms: int, paths: Tuple[str, ...] = PATHS) -> Tuple[Dict[str, tuple], List[tuple]]:
    """``(jobs by key, [(case index, path, label, key), ...])`` over every case and path (``'zpass'`` / ``'lean'``:
    the causal kernels; ``'noncausal'``: the non-causal ones)."""
    jobs: Dict[str, tuple] = {}
    uses: List[tuple] = []
    for i, case in enumerate(cases):
        for path in paths:
            launches = (record_noncausal(case, sms) if path == "noncausal"
                        else record_launches(case, path == "zpass", sms))
            for name, args, meta in launches:
                job = specialise(name, args, meta)
                key = job_key(job)
                jobs.setdefault(key, job)
                uses.append((i, path, launch_label(name, meta), key))
    return jobs, uses


def run_jobs(jobs: Dict[str, tuple], fast: bool, workers: int) -> Dict[str, dict]:
    """Compile every distinct launch (``workers`` processes); a failed compile reports ``{'error': ...}``."""
    results: Dict[str, dict] = {}
    with cf.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(compile_job, job, fast): key for key, job in jobs.items()}
        for n, fut in enumerate(cf.as_completed(futures), 1):
            key = futures[fut]
            try:
                results[key] = fut.result()
            except Exception as e:  # noqa: BLE001 - report and go on
                results[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            print(f"  compiled {n}/{len(futures)}", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return results


def worst(rows: List[tuple]) -> Tuple[int, str, int, int]:
    """``(max shared, its kernel, max regs, max stack)`` over one case and path's launches."""
    ok = [(r["shared"], label, r) for label, r in rows if "shared" in r]
    if not ok:
        return -1, "compile failed", -1, -1
    shared, label, _ = max(ok, key=lambda t: t[0])
    return shared, label, max(r["regs"] for _, _, r in ok), max(r["stack"] for _, _, r in ok)


def case_name(case: dict) -> str:
    width = (2 if case["lrpe"] else 1) * case["D"]
    return f"D={case['D']:<3d} LRPE={'on ' if case['lrpe'] else 'off'} D'={width:<3d} E={case['E']:<3d}"


def report(cases: List[dict], uses: List[tuple], results: Dict[str, dict], verbose: bool,
           paths: Tuple[str, ...] = PATHS) -> List[dict]:
    """Print one line per case (max shared memory of each path, and whether it fits); return the rows."""
    rows = []
    print(f"# {cases[0]['dtype']}, sm_90 limit {SMEM_LIMIT:,} B per block; B,N,H = {cases[0]['B']},{cases[0]['N']},"
          f"{cases[0]['H']}, mask {cases[0]['mask']}, init {cases[0]['init']}; "
          "max shared B (its kernel), max regs / stack B")
    for i, case in enumerate(cases):
        line, row = [case_name(case)], dict(case)
        for path in paths:
            launches = [(label, results[key]) for j, p, label, key in uses if j == i and p == path]
            shared, label, regs, stack = worst(launches)
            fits = "ok " if 0 <= shared <= SMEM_LIMIT else "BIG"
            usage = f" regs {regs} / stack {stack}" if regs >= 0 else ""
            line.append(f"{path}: {shared:>7,} {fits} ({label}){usage}")
            row[path] = dict(shared=shared, kernel=label, regs=regs, stack=stack, launches=launches)
            if verbose:
                for lab, r in launches:
                    print(f"    {case_name(case)} {path:5s} {lab:38s} {r}")
        print(" | ".join(line))
        rows.append(row)
    return rows


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--dims", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128],
                   help="head dims D of q, k (comma-separated)")
    p.add_argument("--evs", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128],
                   help="head dims E of v (comma-separated)")
    p.add_argument("--lrpe", choices=("off", "on", "both"), default="both", help="MD-LRPE (doubles D' = 2D)")
    p.add_argument("--shape", default="1,700,2", help="B,N,H of the recorded launches (sets segments, SINGLE)")
    p.add_argument("--no-mask", action="store_true", help="launch without a key padding mask")
    p.add_argument("--init", action="store_true", help="launch with an initial state")
    p.add_argument("--sms", type=int, default=132, help="SM count of the target (132: H100 SXM / H200)")
    p.add_argument("--fast", action="store_true", help="shared memory only (stop at LLVM IR; no regs / stack)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    p.add_argument("--verbose", action="store_true", help="list every launch of every case")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--noncausal", action="store_true", help="the non-causal kernels instead of the causal ones")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cases = build_cases(args)
    paths = ("noncausal",) if args.noncausal else PATHS
    jobs, uses = plan(cases, args.sms, paths)
    print(f"{len(uses)} launches, {len(jobs)} distinct kernels to compile (triton {triton.__version__})",
          file=sys.stderr)
    results = run_jobs(jobs, args.fast, args.jobs)
    rows = report(cases, uses, results, args.verbose, paths)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
    main()
