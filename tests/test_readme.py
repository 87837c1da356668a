"""The README's Python example runs as written."""

import pathlib
import re


def test_readme_python_example_runs(capsys):
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has a python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert "saved" in capsys.readouterr().out
