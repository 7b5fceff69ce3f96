"""Print the README's set-up and test commands: the first two lines of its first ```bash block."""

from pathlib import Path

text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
block = text.split("```bash\n", 1)[1].split("```", 1)[0]
lines = [line for line in block.splitlines() if line.strip()]
print(lines[0])
print(lines[1])
