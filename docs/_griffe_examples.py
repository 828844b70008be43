"""A griffe extension for the API reference: our ``Example:`` sections are examples.

blox docstrings follow the ancestor's Google style with a singular
``Example:`` heading (STYLE.md). Griffe's Google parser only treats the plural
``Examples:`` as a section of doctests; a singular one becomes a plain-text
admonition, where ``>>>`` lines read as nested block quotes and outputs such as
``['fc.kernel']`` as broken Markdown links. Renaming the heading while the
docs load renders them as code, and leaves the source as it is.
"""

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rewrites ``Example:`` headings to ``Examples:`` in every loaded docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
