"""display: the module tree with its parameters (rewritten by the display task)."""


def display(graphs, params=None):
    """Shows the module tree."""
    raise NotImplementedError
