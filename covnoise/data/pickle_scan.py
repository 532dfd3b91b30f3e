"""A bounded pre-scan of a pickle's opcodes, run before anything is unpickled.

Unpickling itself is cheap, but a pickle can share one container many times through its memo
(``BINGET``): a 4 KB file can describe a list whose elements, counted with sharing expanded,
number 10^9. Whatever walks the result afterwards (``np.asarray``, ``==``, hashing a tuple
key) then does exponential work. This scan replays the pickle's stack machine on light
stand-ins that carry only sizes, so it costs time and memory linear in the file, and refuses:

* more opcodes than :attr:`PickleLimits.max_opcodes`;
* an object whose size, with shared references expanded, exceeds
  :attr:`PickleLimits.max_objects` objects or :attr:`PickleLimits.max_expanded_bytes` bytes;
* changing a container after it was shared (which is also how a self-referencing list is made);
* every opcode a pickle of plain data and numpy arrays does not need (``INST``, ``OBJ``,
  ``NEWOBJ``, extension codes, out-of-band buffers, persistent ids);
* ``BUILD`` on anything but an array or a dtype, and dtype states with fields or flags.

Globals are passed to a callback, which refuses all but the few numpy needs.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PickleLimits:
    """Bounds on the work and memory a pickle may ask for.

    The defaults fit CIFAR-10's python batches (a 31 MB file, about 50 000 opcodes and 20 000
    objects each) with a wide margin, and keep a hostile file to seconds and a few hundred MB.
    """

    max_file_bytes: int = 256 * 2**20
    max_opcodes: int = 2_000_000
    max_objects: int = 2_000_000
    max_expanded_bytes: int = 512 * 2**20


class RestrictedUnpicklingError(pickle.UnpicklingError):
    """A pickle asked for something other than plain data or a numpy array."""

    def __init__(self, message: str, *, module: str = "", name: str = "") -> None:
        super().__init__(message)
        self.module = module
        self.name = name


class PickleLimitError(pickle.UnpicklingError):
    """A pickle is too large, shares containers too much, or uses a refused opcode."""


class _Node:
    """Stand-in for one object: its expanded size, and a value for small scalars."""

    __slots__ = ("kind", "objects", "nbytes", "shared", "value", "items")

    def __init__(self, kind: str, nbytes: int = 0, value: Any = None) -> None:
        self.kind = kind
        self.objects = 1
        self.nbytes = nbytes
        self.shared = False
        self.value = value
        self.items: list[_Node] = []


_MARK = _Node("mark")
_SCALAR_KINDS = {bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes"}
_EMPTY = {"EMPTY_LIST": "list", "EMPTY_DICT": "dict", "EMPTY_TUPLE": "tuple", "EMPTY_SET": "set"}
_FROM_MARK = {"LIST": "list", "TUPLE": "tuple", "DICT": "dict", "FROZENSET": "set"}
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_INTO = {"APPEND": "list", "APPENDS": "list", "SETITEM": "dict", "SETITEMS": "dict"}
_INTO["ADDITEMS"] = "set"
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET = {"GET", "BINGET", "LONG_BINGET"}
_NOOP = {"PROTO", "FRAME", "STOP"}
_SCALAR_OPS = {
    *("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"),
    *("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE"),
    *("BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"),
    *("NONE", "NEWTRUE", "NEWFALSE"),
}
#: What a call of each allowed global returns, by the global's name.
_RESULT_KIND = {"_reconstruct": "array", "_frombuffer": "array", "dtype": "dtype"}
_RESULT_KIND.update(encode="bytes", bytes="bytes")


class _Scanner:
    """The pickle stack machine replayed on :class:`_Node` stand-ins."""

    def __init__(self, limits: PickleLimits, check_global: Callable[[str, str], None]) -> None:
        self.limits = limits
        self.check_global = check_global
        self.stack: list[_Node] = []
        self.memo: dict[int, _Node] = {}

    def pop_to_mark(self) -> list[_Node]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise pickle.UnpicklingError("MARK expected but not found")

    def pop(self) -> _Node:
        node = self.stack.pop()
        if node is _MARK:
            raise pickle.UnpicklingError("unexpected MARK")
        return node

    def top(self, name: str) -> _Node:
        """The object on top of the stack, which must not be a mark."""
        if not self.stack or self.stack[-1] is _MARK:
            raise pickle.UnpicklingError(f"{name} needs an object on the stack, not a mark")
        return self.stack[-1]

    def grow(self, target: _Node, items: list[_Node]) -> _Node:
        """Count ``items`` into ``target`` and check the bounds."""
        for item in items:
            target.objects += item.objects
            target.nbytes += item.nbytes
        lim = self.limits
        if target.objects > lim.max_objects or target.nbytes > lim.max_expanded_bytes:
            raise PickleLimitError(
                f"a {target.kind} holds more than {lim.max_objects} objects or "
                f"{lim.max_expanded_bytes} bytes when its shared references are counted each "
                "time they are used; plain data without such sharing is allowed"
            )
        return target

    def mutate(self, name: str, items: list[_Node]) -> None:
        target = self.stack[-1] if self.stack else _MARK
        wanted = _INTO.get(name, "array or dtype")
        if target.kind not in wanted.split(" or "):
            raise PickleLimitError(f"{name} applied to a {target.kind}; allowed on a {wanted}")
        if target.shared:
            raise PickleLimitError(
                f"{name} changes a {target.kind} after it was shared; shared containers must "
                "be complete when first referenced again"
            )
        self.grow(target, items)

    def global_(self, module: str, name: str) -> None:
        self.check_global(module, name)
        self.stack.append(_Node("global", value=(module, name)))

    def step(self, name: str, arg: Any) -> None:
        """Apply one opcode to the stand-in stack."""
        if name in _NOOP:
            return
        if name in ("MARK", "POP", "POP_MARK", "DUP", "MEMOIZE") or name in _PUT or name in _GET:
            self.stack_op(name, arg)
        elif name in _EMPTY:
            self.stack.append(_Node(_EMPTY[name]))
        elif name in _FROM_MARK or name in _TUPLE_N:
            self.build_container(name)
        elif name in _INTO:
            items = self.pop_to_mark() if name.endswith("S") else [self.pop()]
            if name == "SETITEM":
                items.append(self.pop())
            self.mutate(name, items)
        elif name in ("GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD"):
            self.call_op(name, arg)
        elif name in ("PERSID", "BINPERSID"):
            raise RestrictedUnpicklingError("refused a persistent id: only plain data is allowed")
        else:
            self.scalar(name, arg)

    def stack_op(self, name: str, arg: Any) -> None:
        if name == "MARK":
            self.stack.append(_MARK)
        elif name == "POP":
            self.stack.pop()
        elif name == "POP_MARK":
            self.pop_to_mark()
        elif name in _PUT or name == "MEMOIZE":
            self.memo[len(self.memo) if arg is None else arg] = self.top(name)
        else:  # GET or DUP: the same object is now referenced twice
            node = self.top(name) if name == "DUP" else self.memo[arg]
            node.shared = True
            self.stack.append(node)

    def build_container(self, name: str) -> None:
        if name in _TUPLE_N:
            n = _TUPLE_N[name]
            items = [self.pop() for _ in range(n)][::-1]
        else:
            items = self.pop_to_mark()
        kind = "tuple" if name in _TUPLE_N else _FROM_MARK[name]
        if kind == "dict" and len(items) % 2:
            raise pickle.UnpicklingError("odd number of items for DICT")
        node = self.grow(_Node(kind), items)
        if kind == "tuple":
            node.items = items
        self.stack.append(node)

    def call_op(self, name: str, arg: Any) -> None:
        if name == "GLOBAL":
            module, _, gname = str(arg).partition(" ")
            self.global_(module, gname)
        elif name == "STACK_GLOBAL":
            gname, module = self.pop(), self.pop()
            if module.kind != "str" or gname.kind != "str" or None in (module.value, gname.value):
                raise PickleLimitError("STACK_GLOBAL needs two short strings")
            self.global_(module.value, gname.value)
        elif name == "REDUCE":
            args, func = self.pop(), self.pop()
            if func.kind != "global" or args.kind != "tuple" or func.value[1] not in _RESULT_KIND:
                what = ".".join(func.value) if func.kind == "global" else f"a {func.kind}"
                raise PickleLimitError(
                    f"REDUCE calls {what}; only numpy's array and dtype rebuilders are called"
                )
            self.stack.append(self.grow(_Node(_RESULT_KIND.get(func.value[1], "?")), [args]))
        else:
            state = self.pop()
            if self.stack and self.stack[-1].kind == "dtype":
                _check_dtype_state(state)
            elif state.kind != "tuple" or len(state.items) != 5:
                raise PickleLimitError("an array's state must be a 5-tuple")
            self.mutate("BUILD", [state])

    def scalar(self, name: str, arg: Any) -> None:
        if name not in _SCALAR_OPS:
            raise PickleLimitError(
                f"opcode {name} is not allowed: only plain data (dict, list, tuple, str, bytes, "
                "int, float, bool, None) and numpy arrays"
            )
        if arg is None:  # NONE, NEWTRUE, NEWFALSE
            self.stack.append(_Node("none" if name == "NONE" else "bool", 8, name == "NEWTRUE"))
            return
        kind = "bytes" if isinstance(arg, bytearray) else _SCALAR_KINDS[type(arg)]
        sized = isinstance(arg, (str, bytes, bytearray))
        size = len(arg) if sized else max(8, arg.bit_length() // 8) if kind == "int" else 8
        self.stack.append(_Node(kind, size, None if sized and len(arg) > 64 else arg))


def _check_dtype_state(state: _Node) -> None:
    """A dtype's state must be the plain one numpy writes for a number or bytes dtype:
    no subarray, names or fields, and zero flags (no object references)."""
    items = state.items
    ok = state.kind == "tuple" and len(items) == 8
    ok = ok and all(items[i].kind == "none" for i in (2, 3, 4))
    if not ok or items[7].kind != "int" or items[7].value != 0:
        raise PickleLimitError(
            "a dtype's state must be (version, byteorder, None, None, None, size, align, 0): "
            "structured and object dtypes are not allowed"
        )


def scan(data: bytes, limits: PickleLimits, check_global: Callable[[str, str], None]) -> None:
    """Replay ``data``'s opcodes on stand-ins and raise if it breaks a bound or a rule.

    Raises :class:`PickleLimitError` or :class:`RestrictedUnpicklingError` (from
    ``check_global``) with a one-line reason, or :class:`pickle.UnpicklingError` for a
    malformed pickle. Time and memory are linear in ``len(data)``.
    """
    if len(data) > limits.max_file_bytes:
        raise PickleLimitError(
            f"{len(data)} bytes is over the limit of {limits.max_file_bytes} bytes for a pickle"
        )
    scanner = _Scanner(limits, check_global)
    stream = io.BytesIO(data)
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(stream)):
            if count >= limits.max_opcodes:
                raise PickleLimitError(f"more than {limits.max_opcodes} opcodes")
            scanner.step(op.name, arg)
    except (PickleLimitError, RestrictedUnpicklingError):
        raise
    except (ValueError, IndexError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise pickle.UnpicklingError(f"malformed pickle near byte {stream.tell()}: {exc}") from None
