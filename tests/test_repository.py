"""The README's commands are the ones CI runs."""

from conftest import REPO


def test_readme_opens_with_the_commands_ci_runs():
    readme = (REPO / "README.md").read_text().splitlines()
    fence = readme.index("```bash")
    setup_line, test_line = (line.split("#")[0].strip() for line in readme[fence + 1:fence + 3])
    ci = (REPO / ".ci" / "run").read_text()
    assert setup_line.startswith("bash .ci/setup && ")
    assert "bash .ci/setup" in ci
    assert test_line in ci
