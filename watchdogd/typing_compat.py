"""Typing names newer than Python 3.7 (Kylin V10's and openEuler 20.03's), for the type checker only.

`Protocol` and `Literal` came in 3.8. Type checkers read the real ones; on 3.7 a protocol is
a plain base class and a literal alias is never evaluated (every module annotates lazily),
so neither a new dependency nor a second spelling is needed.
"""

import sys
from typing import TYPE_CHECKING

if sys.version_info >= (3, 8) or TYPE_CHECKING:
    from typing import Literal, Protocol  # novm (3.8+, asked for above)
else:  # pragma: no cover (3.7)

    class Protocol:
        """3.7: structural types are the checker's business; at run time a protocol is an ordinary base."""

    class _LiteralForm:
        def __getitem__(self, values: object) -> object:
            return str  # aliases such as Literal["a", "b"] are strings at run time

    Literal = _LiteralForm()

__all__ = ["Literal", "Protocol"]
