"""The README's two commands stay true: CI runs the test command verbatim, the main job module exists."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip().strip("`") for line in lines[:12] if line.strip().startswith("python3 -m venv")]


def test_readme_opens_with_the_two_commands():
    cmds = _commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].endswith("python -m sdekit.demo.digits")
    assert cmds[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    assert _commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_pyproject_keeps_torch_a_range():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=2.4"' in text and "torch==" not in text
