"""Right-hand sides typed as text (`system=equations`, `model.known`): parsed, never executed.

The text is parsed by Python's `ast` in "eval" mode and the tree is walked against a
whitelist: numbers, the declared variables, `t`, the declared parameters, `+ - * / **`,
unary minus and calls of a few math functions by bare name. Anything else (attribute access,
subscripts, imports, lambdas, dunder names, keywords, comparisons) is refused with one line
naming the offending token. The SymPy expression is built node by node from that tree (no
`sympify`, `parse_expr` or `eval` ever sees the text) and turned into a torch function by
walking the SymPy tree into closures, so every solver and gradient mode can use it. The text
length, the tree's size and depth and constant exponents are bounded, so nothing can hang.
"""

from __future__ import annotations

import ast
import keyword
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from odecli.errors import ConfigError

MAX_TEXT = 2000       # characters per right-hand side
MAX_NODES = 500       # syntax-tree nodes per right-hand side
MAX_DEPTH = 100       # nesting of the syntax tree
MAX_EXPONENT = 64     # |p| for a constant exponent in a ** p
MAX_CONSTANT = 1e300  # any constant (sub)expression
MAX_VARIABLES = 64
# Functions a right-hand side may call: name -> number of arguments.
FUNCTIONS = {"sin": 1, "cos": 1, "tan": 1, "exp": 1, "log": 1, "sqrt": 1, "tanh": 1,
             "sinh": 1, "cosh": 1, "asin": 1, "acos": 1, "atan": 1, "abs": 1, "min": 2,
             "max": 2}
CONSTANTS = ("pi", "e")
RESERVED = ("t", *FUNCTIONS, *CONSTANTS)
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_REFUSED_OPS = {ast.BitXor: "'^' (use ** for powers)", ast.FloorDiv: "'//'", ast.Mod: "'%'",
                ast.MatMult: "'@'", ast.LShift: "'<<'", ast.RShift: "'>>'",
                ast.BitAnd: "'&'", ast.BitOr: "'|'"}


def default_variables(n: int) -> list[str]:
    """x, y, z for up to three variables, else x1..xN."""
    return ["x", "y", "z"][:n] if n <= 3 else [f"x{i + 1}" for i in range(n)]


def check_names(names: Sequence[str], what: str) -> None:
    """Variable and parameter names: identifiers, not reserved, not private, not repeated."""
    seen: set[str] = set()
    for name in names:
        if (not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name)
                or name.startswith("_")):
            raise ConfigError(f"{what} name {name!r} must be a plain identifier (letters, "
                              f"digits and '_', not starting with '_' or a digit)")
        if name in RESERVED:
            raise ConfigError(f"{what} name '{name}' is reserved (t, the constants pi and e, "
                              f"and the functions {', '.join(FUNCTIONS)})")
        if name in seen:
            raise ConfigError(f"{what} name '{name}' is given twice")
        seen.add(name)


@dataclass
class Parsed:
    """One right-hand side: its SymPy expression and the names it uses."""

    text: str
    expr: Any  # sympy.Expr
    names: frozenset[str]


class _Walker:
    """Builds a SymPy expression from a whitelisted `ast` tree; refuses everything else."""

    def __init__(self, text: str, allowed: frozenset[str], where: str) -> None:
        import sympy

        self.sp, self.text, self.allowed, self.where = sympy, text, allowed, where
        self.nodes = 0
        self.names: set[str] = set()
        self.symbols = {n: sympy.Symbol(n, real=True) for n in allowed}

    def refuse(self, node: ast.AST, why: str) -> ConfigError:
        token = ast.get_source_segment(self.text, node) or type(node).__name__
        return ConfigError(f"{self.where}: {why}: {_short(token)!r} in {_short(self.text)!r}")

    def build(self, node: ast.AST, depth: int = 0) -> tuple[Any, float | None]:
        """(SymPy expression, its float value when the subtree is constant, else None)."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConfigError(f"{self.where} is too long: more than {MAX_NODES} terms")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{self.where} is nested more than {MAX_DEPTH} levels deep")
        sp = self.sp
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.refuse(node, "only numbers are allowed as constants")
            if not math.isfinite(float(v)) or abs(v) > MAX_CONSTANT:
                raise self.refuse(node, "number out of range")
            return (sp.Integer(v) if isinstance(v, int) else sp.Float(v)), float(v)
        if isinstance(node, ast.Name):
            if node.id in self.allowed:
                self.names.add(node.id)
                return self.symbols[node.id], None
            if node.id in CONSTANTS:
                return (sp.pi, math.pi) if node.id == "pi" else (sp.E, math.e)
            if node.id in FUNCTIONS:
                raise self.refuse(node, f"'{node.id}' is a function: call it, {node.id}(...)")
            raise self.refuse(node, "unknown name (not a variable, parameter, t, pi or e)")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            e, v = self.build(node.operand, depth + 1)
            neg = isinstance(node.op, ast.USub)
            return (-e if neg else e), (None if v is None else (-v if neg else v))
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise self.refuse(node, f"operator {_REFUSED_OPS.get(type(node.op), '')} is "
                                        f"not allowed (only + - * / **)")
            a, va = self.build(node.left, depth + 1)
            b, vb = self.build(node.right, depth + 1)
            return self._binary(node, type(node.op), a, va, b, vb)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        what = {ast.Attribute: "attribute access is not allowed",
                ast.Subscript: "indexing is not allowed", ast.Lambda: "lambdas are not allowed",
                ast.Compare: "comparisons are not allowed",
                ast.BoolOp: "boolean operators are not allowed",
                ast.IfExp: "conditionals are not allowed"}.get(type(node), "not allowed")
        raise self.refuse(node, what)

    def _binary(self, node: ast.AST, op: type, a: Any, va: float | None, b: Any,
                vb: float | None) -> tuple[Any, float | None]:
        sp = self.sp
        if op is ast.Pow:
            if vb is not None and abs(vb) > MAX_EXPONENT:
                raise self.refuse(node, f"constant exponent above {MAX_EXPONENT}")
            if va is not None and vb is not None and va == 0 and vb < 0:
                raise self.refuse(node, "zero to a negative power")
            expr = sp.Pow(a, b)
        elif op is ast.Div:
            if vb == 0:
                raise self.refuse(node, "division by zero")
            expr = a / b
        elif op is ast.Add:
            expr = a + b
        elif op is ast.Sub:
            expr = a - b
        else:
            expr = a * b
        value = None
        if va is not None and vb is not None:
            try:
                value = {ast.Add: va + vb, ast.Sub: va - vb, ast.Mult: va * vb,
                         ast.Div: va / vb if vb else math.inf,
                         ast.Pow: _float_pow(va, vb)}[op]
            except (OverflowError, ZeroDivisionError, ValueError):
                value = math.inf
            if not (isinstance(value, float) and math.isfinite(value)) or (
                    abs(value) > MAX_CONSTANT):
                raise self.refuse(node, "constant out of range")
        return expr, value

    def _call(self, node: ast.Call, depth: int) -> tuple[Any, float | None]:
        func = node.func
        if not isinstance(func, ast.Name):
            raise self.refuse(func, "only functions called by bare name are allowed")
        if func.id not in FUNCTIONS:
            raise self.refuse(func, "function not allowed (allowed: "
                                    f"{', '.join(FUNCTIONS)})")
        if node.keywords:
            raise self.refuse(node.keywords[0], "keyword arguments are not allowed")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse(node, "starred arguments are not allowed")
        if len(node.args) != FUNCTIONS[func.id]:
            raise self.refuse(node, f"{func.id} takes {FUNCTIONS[func.id]} argument(s)")
        args = [self.build(a, depth + 1)[0] for a in node.args]
        sp = self.sp
        table = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "exp": sp.exp, "log": sp.log,
                 "sqrt": sp.sqrt, "tanh": sp.tanh, "sinh": sp.sinh, "cosh": sp.cosh,
                 "asin": sp.asin, "acos": sp.acos, "atan": sp.atan, "abs": sp.Abs,
                 "min": sp.Min, "max": sp.Max}
        # Constant arguments stay symbolic (exp(3) is not evaluated): the torch side computes it.
        return table[func.id](*args), None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _float_pow(a: float, b: float) -> float:
    value = a**b
    if isinstance(value, complex):
        raise ValueError("complex")
    return float(value)


def parse(text: Any, allowed: Sequence[str], where: str) -> Parsed:
    """One right-hand side as a SymPy expression of the allowed names; one line if refused."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(text)
    if not isinstance(text, str):
        raise ConfigError(f"{where} must be an equation as text, got {text!r}")
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{where} is longer than {MAX_TEXT} characters")
    if not text.strip():
        raise ConfigError(f"{where} is empty; write 0 for a variable that does not change")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{where}: cannot read {_short(text)!r}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ConfigError(f"{where} is nested too deeply to read") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:  # iterative: counted before any recursion
        raise ConfigError(f"{where} is too long: more than {MAX_NODES} terms")
    walker = _Walker(text.strip(), frozenset(allowed), where)
    expr, _ = walker.build(tree.body)
    return Parsed(text=text, expr=expr, names=frozenset(walker.names))


def parse_system(rhs: Sequence[Any], variables: Sequence[str], params: Mapping[str, float],
                 where: str) -> list[Parsed]:
    """Every right-hand side of a system (`where`: the config key, e.g. "system.rhs")."""
    if len(variables) > MAX_VARIABLES:
        raise ConfigError(f"at most {MAX_VARIABLES} variables are supported")
    check_names(variables, "variable")
    check_names(list(params), "parameter")
    clash = set(variables) & set(params)
    if clash:
        raise ConfigError(f"'{sorted(clash)[0]}' is both a variable and a parameter")
    allowed = [*variables, *params, "t"]
    return [parse(text, allowed, f"{where}[{i}]") for i, text in enumerate(rhs)]


# ---------------------------------------------------------------------------- to torch

Env = Mapping[str, Any]


def _compile(expr: Any) -> Callable[[Env], Any]:
    """A closure computing `expr` from tensors and floats by name (walks the SymPy tree once)."""
    import sympy as sp

    if expr.is_Symbol:
        name = expr.name
        return lambda env: env[name]
    if expr.is_Number or expr in (sp.pi, sp.E):
        value = float(expr)
        return lambda env: value
    args = [_compile(a) for a in expr.args]
    if expr.is_Add:
        def add(env: Env) -> Any:
            out = args[0](env)
            for f in args[1:]:
                out = out + f(env)
            return out
        return add
    if expr.is_Mul:
        # numbers first in Python floats, then the rest in SymPy's order: a*x*y as (a*x)*y
        numbers = math.prod(float(a) for a in expr.args if a.is_Number)
        rest = [f for a, f in zip(expr.args, args, strict=True) if not a.is_Number]

        def mul(env: Env) -> Any:
            out = rest[0](env)
            for f in rest[1:]:
                out = out * f(env)
            return numbers * out if numbers != 1.0 else out
        return mul
    if expr.is_Pow:
        base, exponent = args
        p = expr.args[1]
        if p == sp.Rational(1, 2):
            return lambda env: torch.sqrt(torch.as_tensor(base(env)))
        if p == -1:
            return lambda env: 1.0 / base(env)
        return lambda env: base(env) ** exponent(env)
    unary = {sp.sin: torch.sin, sp.cos: torch.cos, sp.tan: torch.tan, sp.exp: torch.exp,
             sp.log: torch.log, sp.tanh: torch.tanh, sp.sinh: torch.sinh, sp.cosh: torch.cosh,
             sp.asin: torch.asin, sp.acos: torch.acos, sp.atan: torch.atan, sp.Abs: torch.abs}
    if expr.func in unary:
        fn, (arg,) = unary[expr.func], args
        return lambda env: fn(torch.as_tensor(arg(env)))
    if expr.func in (sp.Min, sp.Max):
        fn = torch.minimum if expr.func is sp.Min else torch.maximum

        def extreme(env: Env) -> Any:
            vals = [torch.as_tensor(f(env)) for f in args]
            out = vals[0]
            for v in vals[1:]:
                out = fn(out, v)
            return out
        return extreme
    raise ConfigError(f"cannot evaluate {expr} (an unsupported SymPy form)")


class EquationField(nn.Module):
    """dy/dt from parsed right-hand sides; parameters fixed (floats) or trained (Parameters).

    `forward(t, y)` takes y of shape (..., dim) and returns (..., dim); variables are the
    columns of y in order. `time_dependent` is whether any right-hand side uses t.
    """

    def __init__(self, parsed: Sequence[Parsed], variables: Sequence[str],
                 params: Mapping[str, float], trainable: bool = False) -> None:
        super().__init__()
        self.parsed = list(parsed)
        self.variables = list(variables)
        self.exprs = [p.expr for p in self.parsed]
        self.time_dependent = any("t" in p.names for p in self.parsed)
        self._fns = [_compile(e) for e in self.exprs]
        self.trainable = trainable
        used = set().union(*(p.names for p in self.parsed)) if self.parsed else set()
        self.param_names = [k for k in params if k in used]
        self.fixed = {k: float(v) for k, v in params.items() if k in used}
        self.weights = nn.ParameterDict()
        if trainable:
            self.weights.update({k: nn.Parameter(torch.tensor(float(v), dtype=torch.float64))
                                 for k, v in self.fixed.items()})
        # Per-window start times for time-dependent right-hand sides on relative grids.
        self.t_offset: torch.Tensor | None = None

    def values(self) -> dict[str, float]:
        """The parameters as they stand (trained ones included)."""
        if self.trainable:
            return {k: float(v.detach()) for k, v in self.weights.items()}
        return dict(self.fixed)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = dict(self.weights.items()) if self.trainable else dict(self.fixed)
        for i, name in enumerate(self.variables):
            env[name] = y[..., i]
        if self.time_dependent:
            env["t"] = t if self.t_offset is None else t + self.t_offset.squeeze(-1)
        shape = y.shape[:-1]
        out = []
        for f in self._fns:
            v = torch.as_tensor(f(env), dtype=y.dtype, device=y.device)
            out.append(v if v.shape == shape else torch.broadcast_to(v, shape))
        return torch.stack(out, dim=-1)

    def describe(self) -> list[str]:
        """`d<var>/dt = <expression>` for each variable, as SymPy prints it."""
        return [f"d{v}/dt = {e}" for v, e in zip(self.variables, self.exprs, strict=True)]


def build_field(rhs: Sequence[Any], variables: Sequence[str] | None,
                params: Mapping[str, float], where: str, trainable: bool = False
                ) -> EquationField:
    """Parse a system's right-hand sides and build its torch field (variables default to
    x, y, z or x1..xN)."""
    rhs = list(rhs)
    names = list(variables) if variables else default_variables(len(rhs))
    if len(names) != len(rhs):
        raise ConfigError(f"{where} has {len(rhs)} right-hand sides for {len(names)} "
                          f"variables ({', '.join(names)}); give one per variable")
    return EquationField(parse_system(rhs, names, params, where), names, params, trainable)
