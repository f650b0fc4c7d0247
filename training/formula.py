"""The `calculate_output` formula of a multi grader: arithmetic over its graders' scores.

The formula is parsed with `ast` and evaluated by walking the tree, never with `eval`: only
numbers, the graders' names, `+ - * / **`, unary `-`, parentheses and the functions in
`FUNCTIONS` pass the check, so a formula can compute and nothing else."""

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

# name -> (function, how many arguments; None: one or more)
FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    # Over their arguments (`max(a)` is a; Python's own would iterate over a number).
    "min": (lambda *xs: min(xs), None), "max": (lambda *xs: max(xs), None),
    "abs": (abs, 1), "floor": (math.floor, 1),
    "ceil": (math.ceil, 1), "exp": (math.exp, 1), "sqrt": (math.sqrt, 1), "log": (math.log, 1),
}
_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow,
}
MAX_CHARS = 1000
# The check and the evaluation walk the tree recursively: a deeper one ("-" * 900 + "a" is
# short enough) is refused before either runs.
MAX_DEPTH = 100
_ALLOWED = ("numbers, the graders' names, + - * / **, unary -, parentheses and "
            + ", ".join(FUNCTIONS))


class FormulaError(ValueError):
    """The formula is not one this evaluator accepts."""


@dataclass(frozen=True)
class Formula:
    tree: ast.expr

    def __call__(self, scores: Mapping[str, float]) -> float:
        """The formula's value; ArithmeticError or ValueError where it has none (a division
        by zero, the log of a negative score, an overflow)."""
        value = _evaluate(self.tree, scores)
        if not math.isfinite(value):
            raise ArithmeticError("the formula's value is not a finite number")
        return value


def parse_formula(text: str, names: Collection[str]) -> Formula:
    if len(text) > MAX_CHARS:
        raise FormulaError(f"the formula is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise FormulaError("the formula is not a valid expression") from None
    if _depth(tree) > MAX_DEPTH:
        raise FormulaError(f"the formula nests deeper than {MAX_DEPTH} levels")
    _check(tree, names)
    return Formula(tree)


def _depth(tree: ast.expr) -> int:
    """The tree's depth, walked without recursion."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _check(node: ast.expr, names: Collection[str]) -> None:
    match node:
        case ast.Constant(value=int() | float()) if not isinstance(node.value, bool):
            return
        case ast.Name(id=name):
            if name not in names:
                known = ", ".join(sorted(names))
                raise FormulaError(f"'{name}' is not one of the graders ({known})")
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            _check(operand, names)
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _OPERATORS:
            _check(left, names)
            _check(right, names)
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in FUNCTIONS:
            arity = FUNCTIONS[name][1]
            if not args or (arity is not None and len(args) != arity):
                wanted = f"{arity} argument" if arity else "one or more arguments"
                raise FormulaError(f"{name}() takes {wanted}")
            for arg in args:
                _check(arg, names)
        case _:
            raise FormulaError(f"'{ast.unparse(node)}' is not allowed; a formula may use "
                               f"only {_ALLOWED}")


def _evaluate(node: ast.expr, scores: Mapping[str, float]) -> float:
    # Only the shapes `_check` let through reach here.
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)
        return float(node.value)
    if isinstance(node, ast.Name):
        return scores[node.id]
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, scores)
    if isinstance(node, ast.BinOp):
        value = _OPERATORS[type(node.op)](_evaluate(node.left, scores),
                                         _evaluate(node.right, scores))
        if isinstance(value, complex):  # a negative number to a fractional power
            raise ArithmeticError("the formula's value is not a real number")
        return value
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    function = FUNCTIONS[node.func.id][0]
    return float(function(*(_evaluate(arg, scores) for arg in node.args)))
