"""The README's Python example runs as written and prints what it says it prints."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    assert len(blocks[0].strip().splitlines()) <= 15
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([200, 800, 17]) torch.Size([200, 800, 6])" in out.stdout
    assert "160000.0" in out.stdout  # cheetah never terminates: every step of 800 x 200 is real
