"""Package names imported on first use (PEP 562), so importing a package stays cheap."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, namespace: dict[str, Any], exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each name of ``exports`` from its module on first use.

    Parameters
    ----------
    package : str
        The package's dotted name, for the error message.
    namespace : dict
        The package's ``globals()``: a name, once imported, is kept there.
    exports : dict of str to str
        Name to the dotted module it comes from.

    Returns
    -------
    callable
        ``__getattr__(name)``, raising AttributeError for a name not in ``exports``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
