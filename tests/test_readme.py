"""The README's code blocks run as written, so the docs cannot drift from the code."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # The eager block trained one step and switched to eval; the core block
    # defined a jitted train step: run it once to check it really works.
    assert namespace["logits"].shape == (16, 10)
    assert namespace["model"].training is False
    import jax.numpy as jnp

    params, loss = namespace["train_step"](
        namespace["params"], jnp.ones((4, 32)), jnp.zeros((4, 10))
    )
    assert jnp.isfinite(loss)
    assert params.is_locked


def test_readme_quick_start_matches_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = re.search(r"^(pip install -e \"\.\[test\]\".*)$", text, flags=re.M).group(1)
    assert test_command in ci
    assert "python examples/digits_cnn.py" in text
