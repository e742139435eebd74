"""YAML for untrusted files (job specs, run configs): safe tags only, and bounded expansion.

``yaml.safe_load`` refuses code-running tags, but an alias bomb — anchors nesting anchors, a
few hundred bytes that stand for billions of values — still reaches the code that walks the result
(validation, error messages, ``json.dumps``) and exhausts time or memory there. This loader counts
the nodes each document stands for, aliases expanded, and refuses one beyond :data:`MAX_NODES`
before anything walks it.
"""

from __future__ import annotations

from typing import Any

import yaml

from .exceptions import BadInputError

#: Most nodes (scalars, sequences, mappings) a YAML document may expand to, aliases counted at
#: every use. The largest shipped job spec has a few hundred.
MAX_NODES = 20_000
#: Largest YAML text accepted (a job spec or a run config is a few kB).
MAX_BYTES = 4 * 2**20


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a document whose alias expansion exceeds :data:`MAX_NODES`."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        _expanded_size(node, MAX_NODES)
        return node


def _expanded_size(root: Any, limit: int) -> int:
    """Nodes of ``root`` with every alias expanded (memoised per node; cycles count once)."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:  # a recursive structure: refused by the limit through its parent
            return 1
        visiting.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        visiting.discard(key)
        sizes[key] = total
        if total > limit:
            raise AliasExpansionError(total)
        return total

    return size(root)


class AliasExpansionError(yaml.YAMLError):
    def __init__(self, nodes: int):
        super().__init__(f"expands to more than {MAX_NODES} values")
        self.problem = f"it expands to more than {MAX_NODES} values (nested anchors/aliases)"
        self.problem_mark = None
        self.nodes = nodes


def parse(text: str | bytes) -> Any:
    """Parse one YAML document safely; raises ``yaml.YAMLError`` (an over-large expansion
    included) or ``RecursionError``."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_untrusted(text: str | bytes, *, what: str) -> Any:
    """Parse one YAML document safely.

    Args:
        text: the YAML text.
        what: names the source in errors (``job spec jobs/x.yaml``).

    Raises:
        BadInputError: too large, syntax error, an unsafe tag, or an alias expansion beyond
            :data:`MAX_NODES` (one line, with the position where known).
    """
    if len(text) > MAX_BYTES:
        raise BadInputError(f"{what} is {len(text)} bytes, more than the {MAX_BYTES} allowed")
    try:
        return parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise BadInputError(f"{what} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise BadInputError(f"{what} is not valid YAML: it nests too deeply") from None
