"""The ``calculate_output`` formula of a ``multi`` grader, evaluated safely (never with ``eval``).

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.

OpenAI's graders guide lists what a formula may contain: numbers, the keys of the multi
grader's ``graders`` as variables, the operators ``+ - * /`` and ``^`` (power), and the functions
``min max abs floor ceil exp sqrt log``. Python's ``**`` is accepted as a synonym for ``^``, and
parentheses group. Anything else -- attribute access, subscripts, strings, lambdas,
comprehensions, comparisons, other names or functions -- is refused with an error that names the
expression.

The expression is parsed by Python's own parser (``ast``) after ``^`` is rewritten to ``**``,
so the usual precedence holds (``2 * x ^ 2`` is ``2 * (x ** 2)``); then a small walker
evaluates only the whitelisted node types. All arithmetic is in floats, so a huge power
overflows at once (an error) instead of building a huge integer.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping

__all__ = ["FUNCTIONS", "Formula", "FormulaError"]

#: Longest formula accepted: ample for weighted sums of many graders, small enough that parsing
#: and the recursive walk stay far from Python's recursion limit.
MAX_LENGTH = 1000


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


# name -> (function, fewest arguments, most arguments or None for any number)
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {
    "min": (min, 1, None),
    "max": (max, 1, None),
    "abs": (abs, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log": (_log, 1, 2),
}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    # math.pow, not **: a negative base with a fractional exponent is a domain error instead of
    # a complex number, and overflow raises instead of returning inf
    ast.Pow: math.pow,
}
_UNARY = {ast.UAdd: lambda a: +a, ast.USub: lambda a: -a}

_WHAT = {
    ast.Attribute: "attribute access", ast.Subscript: "subscripts", ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.Compare: "comparisons", ast.BoolOp: "and/or",
    ast.IfExp: "conditional expressions", ast.NamedExpr: "assignments", ast.Starred: "*args",
    ast.List: "lists", ast.Tuple: "tuples", ast.Dict: "dicts", ast.Set: "sets",
    ast.JoinedStr: "strings", ast.Await: "await",
}
_ALLOWED = "numbers, the grader names, + - * / ^ ( ) and the functions " + " ".join(FUNCTIONS)


class FormulaError(ValueError):
    """A formula that cannot be parsed, uses something not allowed, or fails to evaluate."""


class Formula:
    """A checked ``calculate_output`` expression over the given variable names.

    ``Formula("0.5 * name + 0.5 * email", ["name", "email"]).evaluate({"name": 1, "email": 0})``
    gives 0.5. Raises :class:`FormulaError` on construction for anything outside the allowed
    language and on evaluation for math errors (division by zero, ``log(0)``, overflow).
    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """

    def __init__(self, expression: str, variables: Iterable[str]) -> None:
        self.expression = expression
        self.variables = frozenset(variables)
        if not isinstance(expression, str) or not expression.strip():
            raise FormulaError("calculate_output must be a non-empty formula")
        if len(expression) > MAX_LENGTH:
            raise FormulaError(f"calculate_output is {len(expression)} characters long; the limit is {MAX_LENGTH}")
        try:
            self._tree = ast.parse(expression.replace("^", "**").strip(), mode="eval")
        except SyntaxError as exc:
            raise FormulaError(f"calculate_output {expression!r} is not a valid formula: {exc.msg}") from None
        except (RecursionError, MemoryError, ValueError):
            raise FormulaError(f"calculate_output {expression!r} is too deeply nested") from None
        try:
            self._check(self._tree.body)
        except RecursionError:
            raise FormulaError(f"calculate_output {expression!r} is too deeply nested") from None
        self.names = frozenset(n.id for n in ast.walk(self._tree) if isinstance(n, ast.Name)) - FUNCTIONS.keys()

    def _refuse(self, what: str) -> FormulaError:
        return FormulaError(f"calculate_output {self.expression!r}: {what} not allowed; a formula may use {_ALLOWED}")

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise self._refuse(f"the operator {type(node.op).__name__} is")
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise self._refuse(f"the operator {type(node.op).__name__} is")
            self._check(node.operand)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise self._refuse(f"the constant {node.value!r} is")
        elif isinstance(node, ast.Name):
            if node.id not in self.variables:
                known = ", ".join(sorted(self.variables)) or "none"
                raise FormulaError(f"calculate_output {self.expression!r} uses {node.id!r}, which is not one of "
                                   f"the graders (known: {known})")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise self._refuse(f"calling {called!r} is")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise self._refuse("keyword or * arguments are")
            _, fewest, most = FUNCTIONS[node.func.id]
            if len(node.args) < fewest or (most is not None and len(node.args) > most):
                wanted = f"{fewest}" if fewest == most else f"{fewest} or more" if most is None else f"{fewest} to {most}"
                raise FormulaError(f"calculate_output {self.expression!r}: {node.func.id}() takes {wanted} "
                                   f"argument(s), got {len(node.args)}")
            for arg in node.args:
                self._check(arg)
        else:
            raise self._refuse(_WHAT.get(type(node), f"'{type(node).__name__}'") + " are")

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The formula's value for the given variable values (each a number)."""
        try:
            result = self._eval(self._tree.body, values)
        except ZeroDivisionError:
            raise FormulaError(f"calculate_output {self.expression!r}: division by zero") from None
        except OverflowError:
            raise FormulaError(f"calculate_output {self.expression!r}: the result is too large") from None
        except ValueError as exc:
            raise FormulaError(f"calculate_output {self.expression!r}: {exc}") from None
        if not math.isfinite(result):
            raise FormulaError(f"calculate_output {self.expression!r} is not a finite number ({result})")
        return result

    def _eval(self, node: ast.AST, values: Mapping[str, float]) -> float:
        if isinstance(node, ast.BinOp):
            return float(_BINARY[type(node.op)](self._eval(node.left, values), self._eval(node.right, values)))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, values))
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise FormulaError(f"calculate_output {self.expression!r}: no value for {node.id!r}")
            return float(values[node.id])
        assert isinstance(node, ast.Call)  # _check allowed nothing else
        function = FUNCTIONS[node.func.id][0]
        return float(function(*(self._eval(a, values) for a in node.args)))
