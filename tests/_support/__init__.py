"""What the tests share: real etcd members and clusters, a TCP proxy that can cut or
delay, a loopback HTTP server that answers as a test says, and torchrun agents.

Tests import these as ``tests._support.<module>``; no test imports another test module.
"""

from pathlib import Path

#: The checkout's top folder.
ROOT = Path(__file__).resolve().parents[2]
#: The package's sources.
PACKAGE = ROOT / "src" / "anyrdzv"
#: The example programs.
EXAMPLES = ROOT / "examples"
#: The README.
README = ROOT / "README.md"
