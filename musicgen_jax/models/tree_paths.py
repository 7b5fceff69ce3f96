"""Paths into nested parameter dicts: read, test and replace a subtree without mutating the tree."""

from __future__ import annotations


def get_path(tree: dict, path: tuple[str, ...]):
    """The subtree of ``tree`` at ``path``."""
    for part in path:
        tree = tree[part]
    return tree


def has_path(tree: dict, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def set_path(tree: dict, path: tuple[str, ...], value) -> dict:
    """A copy of ``tree`` with ``value`` at ``path``, creating the dicts along it (only the dicts
    along the path are copied)."""
    head, *rest = path
    child = tree.get(head, {})
    return {**tree, head: set_path(child, tuple(rest), value) if rest else value}
