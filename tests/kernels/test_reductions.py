"""Static guard for a GPU-only bug class the interpreter cannot catch.

Triton's GPU reductions (``tl.reduce``) may combine lanes in any order, so their combine function must be
commutative as well as associative; the interpreter reduces in order and hides a non-commutative one. Run E (an
H200) found exactly that: the causal reverse scan carried its state with ``tl.reduce`` over an affine composition,
giving dk/dv errors of 6e-2 with more than 32 segments per head. Ordered combinations belong in
``tl.associative_scan`` (which keeps order). This test lists every ``tl.reduce`` in the kernels and requires its
combine function to be one known to be commutative.
"""
from __future__ import annotations

import ast
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[2] / "lightnet" / "kernels"

# combine functions of tl.reduce known to be commutative (and associative)
COMMUTATIVE = {"_lse_merge", "logaddexp", "maximum", "minimum", "_sum_combine"}


def _reduce_calls():
    for path in sorted(KERNELS.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "reduce"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "tl"):
                yield str(path.relative_to(KERNELS)), node


def _combine_name(call: ast.Call) -> str:
    fn = call.args[2] if len(call.args) > 2 else next((k.value for k in call.keywords if k.arg == "combine_fn"), None)
    if isinstance(fn, ast.Name):
        return fn.id
    if isinstance(fn, ast.Attribute):
        return fn.attr
    return ast.dump(fn) if fn is not None else "<missing>"


def test_every_tl_reduce_uses_a_commutative_combine():
    calls = list(_reduce_calls())
    bad = [(name, call.lineno, _combine_name(call)) for name, call in calls if _combine_name(call) not in COMMUTATIVE]
    assert not bad, f"tl.reduce with a combine not known to be commutative (use tl.associative_scan): {bad}"


def test_the_guard_sees_a_non_commutative_reduce():
    src = "import triton.language as tl\ndef f(a, b):\n    return tl.reduce((a, b), 0, _affine_compose)\n"
    (call,) = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "reduce"]
    assert _combine_name(call) == "_affine_compose" and _combine_name(call) not in COMMUTATIVE


def test_lse_merge_is_commutative():
    """F2's forward-scan merge of two normalised states: swapping the operands gives the same state."""
    import math

    def lse_merge(z1, s1, z2, s2):  # the same formula as causal.scan._lse_merge, in plain Python
        z = max(z1, z2) + math.log(math.exp(z1 - max(z1, z2)) + math.exp(z2 - max(z1, z2)))
        return z, math.exp(z1 - z) * s1 + math.exp(z2 - z) * s2

    a, b = (0.3, 1.7), (-2.0, 0.4)
    za, sa = lse_merge(*a, *b)
    zb, sb = lse_merge(*b, *a)
    assert math.isclose(za, zb, rel_tol=1e-12) and math.isclose(sa, sb, rel_tol=1e-12)
