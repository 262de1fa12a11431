"""Layer 5: the ``anyrdzv`` command line, a thin layer over the library."""

from ._main import main as main
